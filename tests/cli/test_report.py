"""`simclr report` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.train.loop import pretrain
from tests.conftest import tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(shapes_dir: Path, shapes_val_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished 3-step run with the online kNN monitor."""
    out = tmp_path_factory.mktemp("cli_report") / "run"
    pretrain(config=tiny_config(shapes_dir, out, max_steps=3, val=shapes_val_dir, eval_every=2))
    return out


def test_report__summary_and_curves(run_dir: Path):
    result = runner.invoke(app, ["report", str(run_dir)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    for text in ("test_resnet", "3 of 3", "best kNN top-1", "NT-Xent loss", "learning rate"):
        assert text in result.output, text
    assert any(0x2800 < ord(ch) <= 0x28FF for ch in result.output)  # braille curves


def test_report__json_matches_metrics(run_dir: Path):
    result = runner.invoke(app, ["report", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = [json.loads(line) for line in lines if "loss" in json.loads(line)][-1]
    assert summary["steps"] == 3 and summary["final_loss"] == pytest.approx(last["loss"])
    assert summary["status"] == "finished" and summary["notes"] == []


def test_report__save_writes_png(run_dir: Path, tmp_path: Path):
    out = tmp_path / "curves.png"
    result = runner.invoke(app, ["report", str(run_dir), "--save", str(out)])
    assert result.exit_code == 0, result.output
    assert "Wrote the curves" in result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width == 1120


def test_report__torn_last_line_is_reported_not_fatal(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 4.0, "lr": 0.1}\n{"step": 2, "lo')
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable line" in result.output


def test_report__not_a_run_folder_is_one_line_error(tmp_path: Path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "no metrics.jsonl" in result.output and "Traceback" not in result.output
