"""The online kNN monitor and the time budget inside a real (tiny) pretraining run."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from simclr_cli.core.model.files import load_model
from simclr_cli.core.train import loop
from simclr_cli.core.train.budget import TimeBudget
from simclr_cli.core.train.loop import pretrain
from simclr_cli.core.train.monitor import KnnMonitor
from tests.conftest import tiny_config


def test_knn_monitor__leave_one_out_accuracy_is_a_fraction(trained_model, shapes_val_dir):
    model = load_model(trained_model)
    monitor = KnnMonitor(
        shapes_val_dir, metadata=model.metadata, every=5, device=torch.device("cpu")
    )
    assert monitor.images.shape == (12, 3, 32, 32)
    assert not monitor.due(3)
    model.backbone.train()
    record = monitor.evaluate(model.backbone, step=5, autocast_context=torch.no_grad())
    assert 0.0 <= record["knn_top1"] <= record["knn_top5"] == 1.0
    assert model.backbone.training  # the training mode is restored
    assert monitor.latest["knn_top1"] == record["knn_top1"]


def test_knn_monitor__skips_evaluations_beyond_its_time_share(trained_model, shapes_val_dir):
    model = load_model(trained_model)
    monitor = KnnMonitor(
        shapes_val_dir, metadata=model.metadata, every=1, device=torch.device("cpu")
    )
    # Pretend evaluation has already used more than 10% of the time.
    monitor.eval_seconds = 1e6
    assert not monitor.due(1)


def test_pretrain__val_monitor_writes_knn_to_metrics(shapes_dir, shapes_val_dir, tmp_path):
    config = tiny_config(
        shapes_dir, tmp_path / "run", max_steps=4, val=shapes_val_dir, eval_every=2
    )
    result = pretrain(config=config)
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [x for x in lines if "eval_seconds" in x]
    assert [x["step"] for x in evaluations][-1] == 4
    assert all(0.0 <= x["knn_top1"] <= 1.0 for x in evaluations)
    assert any("knn_top1" in x and "loss" in x for x in lines)


class SteppingClock:
    """A clock that moves 0.5 s each time it is read: the budget reads it once a step."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def test_pretrain__time_budget_ends_within_budget(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The budget runs on a fake clock, so the planned steps do not depend on the machine.
    clock = SteppingClock()
    monkeypatch.setattr(loop, "TimeBudget", functools.partial(TimeBudget, clock=clock))
    config = tiny_config(shapes_dir, tmp_path / "run", max_steps=None, epochs=1000, time_budget=8.0)
    result = pretrain(config=config)
    # 8 s at 0.5 s a step, less the reserve: a handful of steps, far from 1000 epochs.
    assert 1 <= result.steps < 16
    assert result.total_seconds <= 8.0
    assert load_model(result.model_path).metadata.steps == result.steps
