"""`simclr pretrain` through Typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.serialization import read_metadata

runner = CliRunner()

TINY = [
    "--backbone",
    "test_resnet",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--max-steps",
    "2",
    "--workers",
    "0",
]


def test_pretrain__saves_model_and_prints_next_step(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "pretrain",
            str(shapes_dir),
            "--out",
            str(out),
            *TINY,
            "--head",
            "v1",
            "--optimizer",
            "sgd",
            "--temperature",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Saved" in result.output and "simclr embed" in result.output
    metadata = read_metadata(out / "model.safetensors")
    assert metadata.head_layers == 2 and metadata.temperature == 0.2 and metadata.steps == 2


def test_pretrain__quiet_prints_one_line(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY, "--quiet"]
    )
    assert result.exit_code == 0
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_pretrain__existing_run_needs_force(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_pretrain__help_shows_examples():
    result = runner.invoke(app, ["pretrain", "--help"])
    assert result.exit_code == 0 and "simclr pretrain ./images --out runs/first" in result.output


def test_pretrain__cache_and_compile_flags_reach_the_run(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--cache", "off", "--no-compile"],
    )
    assert result.exit_code == 0, result.output
    assert "data wait" in result.stdout
    config = (out / "config.toml").read_text()
    assert 'cache = "off"' in config and "compile = false" in config


def test_pretrain__unknown_cache_mode_is_a_usage_error(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(tmp_path), "--cache", "disk"]
    )
    assert result.exit_code == 2
