"""The command tree: help, version and how errors reach the user."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from simclr_cli import __version__
from simclr_cli.cli._errors import ReportingCommand
from simclr_cli.cli.app import app

runner = CliRunner()


def test_app__help_lists_every_command_with_an_example():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for command in ("pretrain", "embed", "demo", "probe", "finetune", "predict", "visualize-aug"):
        assert command in result.output
        assert f"simclr {command}" in result.output


def test_app__every_command_reports_its_errors():
    commands = typer.main.get_command(app).commands
    assert commands and all(isinstance(c, ReportingCommand) for c in commands.values())


def test_app__version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_app__core_error_is_one_red_line_and_exit_1(tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "does not exist" in lines[0]
    assert "Traceback" not in result.output


def test_app__usage_error_exits_2(tmp_path: Path):
    result = runner.invoke(app, ["pretrain", str(tmp_path), "--stem", "weird"])
    assert result.exit_code == 2


def test_app__impossible_value_exits_2(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--temperature", "0", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2 and "--temperature" in result.output


def test_app__debug_shows_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIMCLR_DEBUG", "1")
    result = runner.invoke(app, ["pretrain", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.exception is not None and "does not exist" in str(result.exception)


def test_app__unreadable_debug_switch_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIMCLR_DEBUG", "maybe")
    result = runner.invoke(app, ["pretrain", str(tmp_path / "missing")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert "SIMCLR_DEBUG='maybe' is not one of: 0, 1" in lines[0]


@pytest.mark.parametrize("command", ["probe", "export", "info"])
def test_error__bad_model_file_gives_exactly_one_line(command: str, tmp_path: Path):
    missing = str(tmp_path / "missing.safetensors")
    extra = {
        "probe": ["--train", str(tmp_path)],
        "export": ["--format", "timm", "--out", str(tmp_path / "o")],
    }
    result = CliRunner().invoke(app, [command, missing, *extra.get(command, [])])
    assert result.exit_code == 1
    # No empty line from a progress display that never drew anything.
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ")


def test_app__unreadable_core_switch_ends_the_command_before_any_work(
    trained_model: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SIMCLR_THREADS", "two")
    result = runner.invoke(app, ["info", str(trained_model)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert "SIMCLR_THREADS='two' is not one of: auto or a whole number" in lines[0]
