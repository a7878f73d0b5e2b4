"""Reading a run folder back: summary values, curves, torn lines and the PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_cli.core.errors import DataError, RunFolderError
from simclr_cli.core.train.loop import pretrain
from simclr_cli.core.viz.report import (
    CURVE_COLORS,
    read_metrics,
    read_run,
    report_charts,
    save_report_png,
)
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def run_dir(shapes_dir: Path, shapes_val_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished 4-step run with the online kNN monitor every 2 steps."""
    out = tmp_path_factory.mktemp("report") / "run"
    pretrain(config=tiny_config(shapes_dir, out, max_steps=4, val=shapes_val_dir, eval_every=2))
    return out


def write_lines(path: Path, records: list[dict], tail: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (path / "metrics.jsonl").write_text(text, encoding="utf-8")
    return path


def colour_pixels(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(colour)).max(axis=2) <= tolerance).sum())


def test_read_run__summary_matches_metrics(run_dir: Path):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_records = [r for r in records if "loss" in r]
    evaluations = [r for r in records if "eval_seconds" in r]
    report = read_run(run_dir)
    summary = report.summary
    assert summary["status"] == "finished"
    assert summary["backbone"] == "test_resnet" and summary["image_size"] == 32
    assert summary["steps"] == 4 == summary["planned_steps"]
    assert summary["final_loss"] == pytest.approx(step_records[-1]["loss"])
    assert summary["min_loss"] == pytest.approx(min(r["loss"] for r in step_records))
    assert summary["final_lr"] == pytest.approx(step_records[-1]["lr"])
    assert summary["best_knn_top1"] == max(r["knn_top1"] for r in evaluations)
    assert summary["final_knn_top5"] == evaluations[-1]["knn_top5"]
    assert summary["skipped_images"] == 0 and summary["torn_lines"] == 0
    # Each window of 1 step covers one batch of 8 images at its measured speed.
    expected = sum(8 / r["images_per_second"] for r in step_records)
    assert summary["wall_seconds"] == pytest.approx(expected, rel=1e-3, abs=0.005)  # 2 decimals
    assert summary["images_seen"] == 32
    assert report.curves["loss"][0] == [1, 2, 3, 4]
    assert report.curves["knn_top1"][0] == [r["step"] for r in evaluations]
    assert report.notes == []


def test_read_run__time_weighted_averages(tmp_path: Path):
    run = write_lines(
        tmp_path / "run",
        [
            {"step": 10, "loss": 5.0, "lr": 0.1, "images_per_second": 100.0, "data_wait": 0.5},
            {"step": 20, "loss": 4.0, "lr": 0.2, "images_per_second": 25.0, "data_wait": 0.0},
        ],
    )
    (run / "config.toml").write_text("[pretrain]\nbatch_size = 10\n\n[plan]\ntotal_steps = 30\n")
    summary = read_run(run).summary
    # 100 images in 1 s, then 100 images in 4 s.
    assert summary["wall_seconds"] == pytest.approx(5.0)
    assert summary["images_per_second"] == pytest.approx(40.0)
    assert summary["data_wait"] == pytest.approx(0.1)
    assert summary["status"] == "not finished" and summary["planned_steps"] == 30


def test_read_metrics__torn_last_line_is_skipped(tmp_path: Path):
    run = write_lines(
        tmp_path / "run",
        [{"step": 1, "loss": 4.0, "lr": 0.1}, {"step": 2, "loss": 3.5, "lr": 0.1}],
        tail='{"step": 3, "loss": 3.',
    )
    records, torn = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2] and torn == 1
    report = read_run(run)
    assert report.summary["final_loss"] == 3.5 and report.summary["torn_lines"] == 1
    assert any("skipped 1" in note for note in report.notes)


def test_read_run__empty_metrics_is_an_empty_report(tmp_path: Path):
    run = write_lines(tmp_path / "run", [])
    report = read_run(run)
    assert report.summary["steps"] == 0 and report.curves == {}
    assert any("no step logged yet" in note for note in report.notes)
    with pytest.raises(DataError, match="no curve"):
        save_report_png(report, tmp_path / "curves.png")


def test_read_run__folder_without_metrics_is_refused(tmp_path: Path):
    with pytest.raises(RunFolderError, match=r"no metrics\.jsonl"):
        read_run(tmp_path)
    with pytest.raises(RunFolderError, match="does not exist"):
        read_run(tmp_path / "missing")


def test_read_run__nan_loss_breaks_the_curve_not_the_summary(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 4.0}\n{"step": 2, "loss": NaN}\n{"step": 3, "loss": 3.0}\n'
    )
    report = read_run(run)
    assert report.summary["final_loss"] == 3.0 and report.summary["min_loss"] == 3.0
    assert len(report_charts(report)) == 1


def test_report_charts__only_the_logged_curves(tmp_path: Path):
    run = write_lines(tmp_path / "run", [{"step": 1, "loss": 4.0, "lr": 0.1}])
    titles = [chart.title for chart in report_charts(read_run(run))]
    assert titles == ["NT-Xent loss", "learning rate"]


def test_save_report_png__size_and_curve_colours(run_dir: Path, tmp_path: Path):
    report = read_run(run_dir)
    path = save_report_png(report, tmp_path / "curves.png") and tmp_path / "curves.png"
    with Image.open(path) as image:
        image.load()
    charts = report_charts(report)
    assert len(charts) == 5  # loss, lr, data wait, throughput, kNN
    assert image.format == "PNG" and image.size == (2 * 560, 3 * 340 + 36)
    for name in ("loss", "lr", "data_wait", "knn_top1"):
        assert colour_pixels(image, CURVE_COLORS[name]) > 20, name
    # Tick labels and titles are drawn: plenty of dark text pixels.
    assert colour_pixels(image, (30, 30, 30), tolerance=40) > 500


def test_save_report_png__wrong_suffix_is_refused(run_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"\.png"):
        save_report_png(read_run(run_dir), tmp_path / "curves.jpg")
    assert not (tmp_path / "curves.jpg").exists()
