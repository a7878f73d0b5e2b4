"""`simclr demo` through Typer's CliRunner, on a tiny configuration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclr_cli.cli import demo as demo_command
from simclr_cli.cli.app import app
from simclr_cli.core.demo import run_demo
from tests.core.test_demo import tiny_demo_config

runner = CliRunner()


def test_demo__prints_table_of_both_encoders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def tiny_run(*, config, progress):
        tiny = dataclasses.replace(tiny_demo_config(config.out), max_steps=config.max_steps)
        return run_demo(config=tiny, progress=progress)

    monkeypatch.setattr(demo_command, "run_demo", tiny_run)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert "random init" in result.output and "SimCLR pretrained" in result.output
    assert "simclr embed" in result.output


def test_demo__json_gives_both_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def tiny_run(*, config, progress):
        tiny = dataclasses.replace(tiny_demo_config(config.out), max_steps=config.max_steps)
        return run_demo(config=tiny, progress=progress)

    monkeypatch.setattr(demo_command, "run_demo", tiny_run)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) >= {"pretrained", "random_init", "num_train", "num_val", "classes"}
    assert 0.0 <= data["pretrained"]["top1"] <= 1.0 and data["pretrain"]["steps"] == 2


@pytest.mark.parametrize(
    ("flags", "budget", "steps"),
    [([], 90.0, None), (["--steps", "7"], None, 7), (["--time-budget", "30s"], 30.0, None)],
)
def test_demo__time_budget_by_default_steps_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], budget, steps
):
    seen = {}

    def record(*, config, progress):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(demo_command, "run_demo", record)
    runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), *flags])
    assert seen["config"].time_budget == budget and seen["config"].max_steps == steps
