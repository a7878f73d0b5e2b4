"""Every flag's default is the default of the config field it fills: one place for defaults."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import pytest
import typer.main

from simclr_cli.cli._options import default_of
from simclr_cli.cli.app import app
from simclr_cli.core.config import (
    DemoConfig,
    DuplicatesConfig,
    EmbedConfig,
    ExportConfig,
    FinetuneConfig,
    IndexConfig,
    PredictConfig,
    PretrainConfig,
    ProbeConfig,
    SearchConfig,
    ShardConfig,
    VisualizeConfig,
)

#: The config dataclass each command fills (report and info fill none).
CONFIGS: dict[str, type | None] = {
    "pretrain": PretrainConfig,
    "embed": EmbedConfig,
    "index": IndexConfig,
    "search": SearchConfig,
    "duplicates": DuplicatesConfig,
    "demo": DemoConfig,
    "probe": ProbeConfig,
    "finetune": FinetuneConfig,
    "predict": PredictConfig,
    "visualize-aug": VisualizeConfig,
    "export": ExportConfig,
    "shard": ShardConfig,
    "report": None,
    "info": None,
}
#: Flags that shape the output rather than the computation, so no config field holds them.
NO_FIELD = {"--json", "--quiet", "--config"}
NO_FIELD_OF = {
    "embed": {"--output", "--map", "--map-method"},
    "predict": {"--output"},
    "search": {"--save", "--protocol"},
    "duplicates": {"--output", "--save"},
    "report": {"--save", "--height"},
}
#: Parameters named other than their field.
FIELD_NAMES = {
    ("pretrain", "lr"): "learning_rate",
    ("pretrain", "sync_bn"): "sync_batch_norm",
    ("pretrain", "compile_model"): "compile",
    ("finetune", "lr"): "learning_rate",
    ("demo", "steps"): "max_steps",
}
#: Flags whose command-line default means something the dataclass leaves to its caller.
OWN_DEFAULTS = {
    # No --workers is half the CPU cores, which the command resolves; ProbeConfig's 0 is the
    # default of Python callers.
    ("probe", "workers"): None,
    # No --time-budget is the config's 90 s, or none when --steps alone is given: the command
    # decides, because DemoConfig cannot tell a given budget from its default.
    ("demo", "time_budget"): None,
}


def _commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)


def _long_flag(parameter: Any) -> str:
    flags = [name for name in parameter.opts if name.startswith("--")]
    return max(flags, key=len) if flags else parameter.name


def test_options__every_command_is_listed():
    assert set(_commands()) == set(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_options__every_default_is_its_config_field(name: str):
    command = _commands()[name]
    config_class = CONFIGS[name]
    fields = set() if config_class is None else {f.name for f in dataclasses.fields(config_class)}
    checked = []
    for parameter in command.params:
        flag = _long_flag(parameter)
        if parameter.required or flag in NO_FIELD | NO_FIELD_OF.get(name, set()):
            continue  # Required: no default, the user gives it.
        field = FIELD_NAMES.get((name, parameter.name), parameter.name)
        assert field in fields, f"simclr {name} {flag} fills no field of {config_class}"
        expected = OWN_DEFAULTS.get((name, parameter.name), default_of(config_class, field))
        default = parameter.default
        assert default == expected, f"simclr {name} {flag}: {default!r} != {expected!r}"
        # The same kind of value too: an enum member, not its word; a Path, not a string.
        assert type(default) is type(expected) or default is None, (name, flag)
        checked.append(flag)
    assert config_class is None or checked, name


def test_options__every_choice_is_an_enum():
    for name, command in _commands().items():
        for parameter in command.params:
            default = parameter.default
            if isinstance(default, str) and not isinstance(default, Enum):
                # Free text (a backbone name, a duration); a choice would be an Enum member.
                free_text = {"--backbone", "--checkpoint-every", "--shard-size"}
                assert _long_flag(parameter) in free_text, name


def test_default_of__gives_defaults_and_fresh_factories():
    assert default_of(PretrainConfig, "epochs") == 100
    first, second = default_of(PretrainConfig, "loggers"), default_of(PretrainConfig, "loggers")
    assert first == [] and first is not second
    with pytest.raises(KeyError, match="no field 'batchsize'"):
        default_of(PretrainConfig, "batchsize")
    with pytest.raises(KeyError, match="has no default"):
        default_of(EmbedConfig, "model")
