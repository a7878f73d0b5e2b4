"""`--config FILE` and `SIMCLR_<FLAG>` on every command: precedence, round trip, bad files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from safetensors.torch import load_file
from typer.testing import CliRunner

import simclr_cli
from simclr_cli.cli import embed as embed_module
from simclr_cli.cli import pretrain as pretrain_module
from simclr_cli.cli._config import RESERVED_VARIABLES
from simclr_cli.cli.app import app
from simclr_cli.core import _env, _io
from simclr_cli.core.choices import LoggerName, Stem
from simclr_cli.core.errors import ConfigError

runner = CliRunner()

TINY = ["--backbone", "test_resnet", "--image-size", "32", "--batch-size", "8", "--workers", "0"]


class Captured(Exception):
    """Raised by the fake core calls below, once the command has built its config."""


def capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Replace ``module.name`` (a core call) by one that records its config and stops."""
    configs: list[Any] = []

    def fake(*, config: Any, **_: Any) -> None:
        configs.append(config)
        raise Captured

    monkeypatch.setattr(module, name, fake)
    return configs


def write_config(path: Path, values: dict[str, Any], tables: dict[str, dict[str, Any]]) -> Path:
    """Write ``values`` (top level) and ``tables`` as TOML or YAML, by the suffix of ``path``."""
    if path.suffix == ".toml":
        lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        for name, table in tables.items():
            lines += [f"[{name}]", *(f"{key} = {json.dumps(v)}" for key, v in table.items())]
    else:
        lines = [f"{key}: {json.dumps(value)}" for key, value in values.items()]
        for name, table in tables.items():
            lines += [f"{name}:", *(f"  {key}: {json.dumps(v)}" for key, v in table.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def no_simclr_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A SIMCLR_* variable of the machine running the tests must not leak into them.
    for name in ("SIMCLR_BATCH_SIZE", "SIMCLR_IMAGE_SIZE", "SIMCLR_CONFIG", "SIMCLR_SEED"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".yml"])
def test_pretrain__file_then_environment_then_flag(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    configs = capture(monkeypatch, pretrain_module, "pretrain")
    path = write_config(
        tmp_path / f"settings{suffix}",
        {"batch_size": 4, "seed": 3},
        {"pretrain": {"data": "images", "image_size": 40, "stem": "cifar", "learning_rate": 0.5}},
    )
    base = ["pretrain", "--config", str(path)]
    runner.invoke(app, base)
    monkeypatch.setenv("SIMCLR_BATCH_SIZE", "6")
    monkeypatch.setenv("SIMCLR_IMAGE_SIZE", "48")
    runner.invoke(app, base)
    runner.invoke(app, [*base, "--batch-size", "8", "other-images"])
    first, second, third = configs
    assert (first.batch_size, first.image_size, first.data) == (4, 40, Path("images"))
    assert (first.seed, first.stem, first.learning_rate) == (3, Stem.cifar, 0.5)
    assert (second.batch_size, second.image_size, second.data) == (6, 48, Path("images"))
    assert (third.batch_size, third.image_size, third.data) == (8, 48, Path("other-images"))
    assert third.seed == 3  # Still from the file: nothing else set it.


def test_embed__file_then_environment_then_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    configs = capture(monkeypatch, embed_module, "embed")
    # Top-level keys are shared; a command's own table wins over them. `image_size` belongs to
    # other commands, so embed ignores it instead of calling it unknown.
    path = write_config(
        tmp_path / "settings.yaml",
        {"batch_size": 4, "image_size": 32, "projection": False},
        {"embed": {"projection": True}, "pretrain": {"epochs": 5}},
    )
    base = ["embed", "model.safetensors", "a.jpg", "--config", str(path)]
    runner.invoke(app, base)
    monkeypatch.setenv("SIMCLR_BATCH_SIZE", "6")
    runner.invoke(app, base)
    runner.invoke(app, [*base, "--batch-size", "8"])
    assert [config.batch_size for config in configs] == [4, 6, 8]
    assert all(config.projection for config in configs)


def test_config__from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    configs = capture(monkeypatch, pretrain_module, "pretrain")
    path = write_config(tmp_path / "settings.toml", {"data": "images", "batch_size": 4}, {})
    monkeypatch.setenv("SIMCLR_CONFIG", str(path))
    runner.invoke(app, ["pretrain"])
    assert configs[0].batch_size == 4 and configs[0].data == Path("images")


def test_config__every_command_takes_it():
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        names = {parameter.name for parameter in command.params}
        assert "config" in names, name
        result = runner.invoke(app, [name, "--help"])
        assert "--config" in result.output, name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pretrain]\nbach_size = 4\n", "unknown key [pretrain] bach_size for simclr pretrain "),
        ("bach_size = 4\n", "unknown key bach_size for simclr pretrain (did you mean batch_size?)"),
        # Values are checked by the flag's own conversion: what the command line refuses.
        ('batch_size = "four"\n', "batch_size = 'four' does not suit --batch-size: "),
        ('compile = "maybe"\n', "compile = 'maybe' does not suit --compile: "),
        ('cache = "disk"\n', "cache = 'disk' does not suit --cache: "),
        ('logger = ["csv", "nope"]\n', "logger = ['csv', 'nope'] does not suit --logger: "),
        ("batch_size = [1, 2]\n", "batch_size = [1, 2] does not suit --batch-size: "),
        ("[pretrian]\nepochs = 4\n", "unknown table [pretrian]"),
        ("batch_size = \n", "does not parse"),
    ],
)
def test_config__bad_toml_is_one_line_exit_2(text: str, message: str, tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = runner.invoke(app, ["pretrain", "images", "--config", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], result.output


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "batch_size: [1, 2\n", "does not parse"),
        ("bad.yml", "- 1\n- 2\n", "must hold keys and values"),
        ("bad.yaml", "embed:\n  batch_size: four\n", "[embed] batch_size = 'four' does not suit"),
        ("missing.yaml", None, "does not exist"),
        ("settings.json", "{}", "use .toml, .yaml or .yml"),
    ],
)
def test_config__bad_or_missing_file_is_one_line_exit_2(
    name: str, text: str | None, message: str, tmp_path: Path
):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    result = runner.invoke(app, ["embed", "m.safetensors", "a.jpg", "--config", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0], result.output


def test_pretrain__config_toml_of_a_run_repeats_it(shapes_dir: Path, tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    flags = [*TINY, "--max-steps", "3", "--log-every", "1", "--lr", "0.5", "--no-sync-bn"]
    flags += ["--head", "v1", "--temperature", "0.3", "--seed", "5", "--logger", "csv", "-q"]
    result = runner.invoke(app, ["pretrain", str(shapes_dir), "--out", str(first), *flags])
    assert result.exit_code == 0, result.output

    config_path = first / "config.toml"
    again = runner.invoke(app, ["pretrain", "--config", str(config_path), "--out", str(second)])
    assert again.exit_code == 0, again.output

    written = _io.loads(config_path.read_text())
    repeated = _io.loads((second / "config.toml").read_text())
    assert repeated["pretrain"] == {**written["pretrain"], "out": str(second)}
    assert repeated["plan"] == written["plan"] and written["plan"]["total_steps"] == 3
    assert written["pretrain"]["learning_rate"] == 0.5 and not written["pretrain"]["compile"]
    original, copy = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert original.keys() == copy.keys()
    for key, tensor in original.items():
        assert tensor.equal(copy[key]), key
    losses = [
        [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (first, second)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    assert (second / "metrics.csv").is_file()


def test_pretrain__config_toml_without_out_refuses_the_full_folder(
    shapes_dir: Path, tmp_path: Path
):
    first = tmp_path / "first"
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(first), *TINY, "--max-steps", "1", "-q"]
    )
    assert result.exit_code == 0, result.output
    again = runner.invoke(app, ["pretrain", "--config", str(first / "config.toml")])
    assert again.exit_code == 1 and "not empty" in again.output


def test_config__core_error_names_the_file_key_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = write_config(tmp_path / "small.yaml", {}, {"pretrain": {"image_size": 4}})
    from_file = runner.invoke(app, ["pretrain", "images", "--config", str(path)])
    assert from_file.exit_code == 2
    assert f"(set by [pretrain] image_size in config file {path})" in from_file.output
    monkeypatch.setenv("SIMCLR_IMAGE_SIZE", "3")
    from_environment = runner.invoke(app, ["pretrain", "images", "--config", str(path)])
    assert "--image-size 3 is too small" in from_environment.output
    assert "(set by the environment variable SIMCLR_IMAGE_SIZE)" in from_environment.output
    from_flag = runner.invoke(app, ["pretrain", "images", "--image-size", "2"])
    assert "--image-size 2 is too small" in from_flag.output and "set by" not in from_flag.output


def test_environment__switches_of_the_package_are_not_flag_variables(
    monkeypatch: pytest.MonkeyPatch,
):
    configs = capture(monkeypatch, pretrain_module, "pretrain")
    monkeypatch.setenv("SIMCLR_SYNC_BN", "reference")  # The implementation switch, not --sync-bn.
    monkeypatch.setenv("SIMCLR_SEED", "7")
    result = runner.invoke(app, ["pretrain", "images"])
    assert configs, result.output
    assert configs[0].seed == 7 and configs[0].sync_batch_norm is True
    group = typer.main.get_command(app)
    variables = {p.envvar for c in group.commands.values() for p in c.params}
    assert not variables & RESERVED_VARIABLES


def test_reserved_variables__are_the_switches_of_the_core():
    assert RESERVED_VARIABLES == _env.NAMES


def test_environment__every_simclr_variable_named_exists():
    # README and the package's own text (help, messages, docstrings) name only switches of
    # core/_env.py or the variables of flags.
    group = typer.main.get_command(app)
    flag_variables = {p.envvar for c in group.commands.values() for p in c.params if p.envvar}
    package = Path(simclr_cli.__file__).parent
    texts = [package.parent / "README.md", *package.rglob("*.py")]
    named = {
        name: str(text.name)
        for text in texts
        for name in re.findall(r"\bSIMCLR_[A-Z][A-Z_]*[A-Z]\b", text.read_text(encoding="utf-8"))
    }
    unknown = {name: where for name, where in named.items() if name not in _env.NAMES}
    assert {name: where for name, where in unknown.items() if name not in flag_variables} == {}
    assert "SIMCLR_BATCH_SIZE" in flag_variables and "SIMCLR_CONFIG" in flag_variables


def test_config__one_value_for_a_repeatable_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    configs = capture(monkeypatch, pretrain_module, "pretrain")
    path = write_config(tmp_path / "settings.toml", {"data": "images", "logger": "csv"}, {})
    runner.invoke(app, ["pretrain", "--config", str(path)])
    assert configs[0].loggers == [LoggerName.csv]


def test_config__source_follows_the_flag_of_the_error_not_its_text(
    monkeypatch: pytest.MonkeyPatch,
):
    errors = [
        ConfigError("this value cannot work", flag="--batch-size"),
        ConfigError("--batch-size is named here but the error is about no flag"),
    ]

    def fake(*, config: Any, **_: Any) -> None:
        raise errors.pop(0)

    monkeypatch.setattr(pretrain_module, "pretrain", fake)
    monkeypatch.setenv("SIMCLR_BATCH_SIZE", "4")
    with_flag = runner.invoke(app, ["pretrain", "images"])
    without_flag = runner.invoke(app, ["pretrain", "images"])
    assert with_flag.exit_code == without_flag.exit_code == 2
    assert with_flag.output.strip() == (
        "error: this value cannot work (set by the environment variable SIMCLR_BATCH_SIZE)"
    )
    assert "set by" not in without_flag.output


def test_pretrain__config_file_with_several_inputs_and_a_file_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    configs = capture(monkeypatch, pretrain_module, "pretrain")
    path = write_config(
        tmp_path / "settings.toml",
        {},
        {"pretrain": {"data": ["a", "b", "c.jpg"], "file_list": "more.txt"}},
    )
    runner.invoke(app, ["pretrain", "--config", str(path)])
    runner.invoke(app, ["pretrain", "--config", str(path), "other"])
    first, second = configs
    assert (first.data, first.extra_data) == (Path("a"), [Path("b"), Path("c.jpg")])
    assert first.file_list == Path("more.txt")
    assert (second.data, second.extra_data) == (Path("other"), [])
