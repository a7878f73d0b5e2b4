"""The ``SIMCLR_*`` switches: one table, typed accessors, and no other module reading them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import simclr_cli
from simclr_cli.core import _env
from simclr_cli.core.errors import ConfigError

PACKAGE = Path(simclr_cli.__file__).parent


@pytest.fixture(autouse=True)
def no_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    # A switch set on the machine running the tests must not change what they see.
    for name in _env.NAMES:
        monkeypatch.delenv(name, raising=False)


def test_switches__one_entry_per_name_each_described():
    names = [switch.name for switch in _env.SWITCHES]
    assert names == sorted(set(names)) and set(names) == _env.NAMES
    assert all(name.startswith("SIMCLR_") for name in names)
    for switch in _env.SWITCHES:
        assert switch.meaning and switch.default and switch.allowed


def test_accessors__unset_means_the_default():
    assert _env.cache_budget_bytes() is None
    assert _env.cache_dir() is not None and _env.cache_dir().name == "simclr"
    assert _env.channels_last() is None
    assert _env.collective_timeout_seconds() == 600.0
    assert _env.debug() is False
    assert _env.max_image_pixels() is None
    assert _env.nt_xent_implementation() == "auto"
    assert _env.sync_batch_norm_reference() is False
    assert _env.threads() is None


def test_accessors__empty_means_the_default(monkeypatch: pytest.MonkeyPatch):
    for name in _env.NAMES:
        monkeypatch.setenv(name, " ")
    test_accessors__unset_means_the_default()


@pytest.mark.parametrize(
    ("name", "value", "read", "expected"),
    [
        ("SIMCLR_CACHE_BUDGET", "2e9", _env.cache_budget_bytes, 2_000_000_000),
        ("SIMCLR_CACHE_BUDGET", "0", _env.cache_budget_bytes, 0),
        ("SIMCLR_CACHE_DIR", "/tmp/simclr-cache", _env.cache_dir, Path("/tmp/simclr-cache")),
        ("SIMCLR_CACHE_DIR", "OFF", _env.cache_dir, None),
        ("SIMCLR_CHANNELS_LAST", "1", _env.channels_last, True),
        ("SIMCLR_CHANNELS_LAST", "0", _env.channels_last, False),
        ("SIMCLR_CHANNELS_LAST", "auto", _env.channels_last, None),
        ("SIMCLR_COLLECTIVE_TIMEOUT", "30", _env.collective_timeout_seconds, 30.0),
        ("SIMCLR_DEBUG", "1", _env.debug, True),
        ("SIMCLR_DEBUG", "Yes", _env.debug, True),
        ("SIMCLR_DEBUG", "false", _env.debug, False),
        ("SIMCLR_MAX_IMAGE_PIXELS", "1000", _env.max_image_pixels, 1000),
        ("SIMCLR_MAX_IMAGE_PIXELS", "0", _env.max_image_pixels, 0),
        ("SIMCLR_NT_XENT", "Reference", _env.nt_xent_implementation, "reference"),
        ("SIMCLR_SYNC_BN", "reference", _env.sync_batch_norm_reference, True),
        ("SIMCLR_SYNC_BN", "auto", _env.sync_batch_norm_reference, False),
        ("SIMCLR_THREADS", "auto", _env.threads, "auto"),
        ("SIMCLR_THREADS", "3", _env.threads, 3),
        ("SIMCLR_THREADS", "0", _env.threads, 1),
    ],
)
def test_accessors__read_their_values(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, read, expected
):
    monkeypatch.setenv(name, value)
    assert read() == expected


@pytest.mark.parametrize(
    ("switch", "value", "read"),
    [
        (_env.CACHE_BUDGET, "lots", _env.cache_budget_bytes),
        (_env.CACHE_BUDGET, "-1", _env.cache_budget_bytes),
        (_env.CACHE_BUDGET, "inf", _env.cache_budget_bytes),
        (_env.CACHE_DIR, "relative/cache", _env.cache_dir),
        (_env.CHANNELS_LAST, "true", _env.channels_last),
        (_env.COLLECTIVE_TIMEOUT, "0", _env.collective_timeout_seconds),
        (_env.COLLECTIVE_TIMEOUT, "10m", _env.collective_timeout_seconds),
        (_env.DEBUG, "maybe", _env.debug),
        (_env.MAX_IMAGE_PIXELS, "1e6", _env.max_image_pixels),
        (_env.NT_XENT, "fast", _env.nt_xent_implementation),
        (_env.SYNC_BN, "fused", _env.sync_batch_norm_reference),
        (_env.THREADS, "two", _env.threads),
    ],
)
def test_accessors__bad_value_names_the_variable_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, switch: _env.Switch, value: str, read
):
    monkeypatch.setenv(switch.name, value)
    with pytest.raises(ConfigError) as caught:
        read()
    message = str(caught.value)
    assert message.startswith(f"{switch.name}=")
    assert switch.allowed in message and "unset it" in message


def _string_constants(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_env__no_other_module_names_a_switch():
    # Reading a variable takes its name as a string; only _env.py holds the names as strings
    # (messages and docstrings mention them inside longer text).
    env_module = PACKAGE / "core" / "_env.py"
    offenders = {
        str(source.relative_to(PACKAGE)): sorted(_string_constants(source) & _env.NAMES)
        for source in PACKAGE.rglob("*.py")
        if source != env_module and _string_constants(source) & _env.NAMES
    }
    assert offenders == {}


def test_env__no_other_module_reads_a_simclr_variable():
    # Any environment read whose key starts with SIMCLR_ is one too many, switch or not.
    env_module = PACKAGE / "core" / "_env.py"
    reads = []
    for source in PACKAGE.rglob("*.py"):
        if source == env_module:
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            key = None
            if isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
                key = node.slice
            elif isinstance(node, ast.Call) and any(
                word in ast.unparse(node.func) for word in ("environ.get", "getenv")
            ):
                key = node.args[0] if node.args else None
            if key is not None and "SIMCLR_" in ast.unparse(key):
                reads.append(f"{source.relative_to(PACKAGE)}:{node.lineno}")
    assert reads == []


@pytest.mark.parametrize("switch", _env.SWITCHES, ids=lambda switch: switch.name)
def test_check_all__reads_every_switch(monkeypatch: pytest.MonkeyPatch, switch: _env.Switch):
    _env.check_all()
    monkeypatch.setenv(switch.name, "bogus")
    with pytest.raises(ConfigError, match=f"^{switch.name}='bogus'"):
        _env.check_all()
