"""Reading a pretraining run folder back: its summary and its curves (``simclr report``).

A run folder holds ``metrics.jsonl`` (one JSON object per logged step, plus one per evaluation
of the online kNN monitor), ``config.toml`` (the resolved settings and the step plan) and, once
the run has finished, ``model.safetensors``. Everything here reads those files and never
changes them; a run that is still going, or that crashed, can be reported as it stands. A line
cut short by a crash (the last one, typically) is skipped and counted.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomli is a dependency on Python 3.10.
    import tomli as tomllib

from ..errors import DataError, ModelFileError, RunFolderError
from ..model.files import atomic_write, read_metadata
from .plots import Chart, Series, TextChart, render_charts, render_text_chart

__all__ = [
    "Chart",
    "RunReport",
    "TextChart",
    "read_metrics",
    "read_run",
    "render_report_png",
    "render_text_chart",
    "report_charts",
    "save_report_png",
]

#: Colours of the curves, the same in the terminal and in the PNG.
CURVE_COLORS = {
    "loss": (31, 119, 180),
    "lr": (255, 127, 14),
    "data_wait": (214, 39, 40),
    "knn_top1": (44, 160, 44),
    "knn_top5": (152, 223, 138),
    "images_per_second": (148, 103, 189),
}


@dataclass
class RunReport:
    """What a run folder says about its run.

    Attributes:
        run_dir: The run folder.
        summary: Flat, JSON-ready facts about the run (see ``read_run``); None where unknown.
        curves: Metric name -> (steps, values), for the metrics the run logged: ``loss``,
            ``lr``, ``data_wait``, ``images_per_second``, ``knn_top1``, ``knn_top5``.
        notes: Things the reader should know (lines skipped, run not finished).
    """

    run_dir: Path
    summary: dict[str, Any]
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Read a ``metrics.jsonl`` file, skipping lines that are not JSON objects.

    Args:
        path: The file.

    Returns:
        The records in file order, and the number of lines skipped (a line torn by a crash).

    Raises:
        RunFolderError: When the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise RunFolderError(f"cannot read {path}: {error.strerror or error}") from None
    records, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _read_config(path: Path) -> dict[str, Any]:
    """The tables of ``config.toml``, or {} when it is missing or unreadable."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _by_step(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key``, sorted by step; a step logged twice keeps its last value."""
    values: dict[int, float] = {}
    for record in records:
        if key in record and isinstance(record[key], (int, float)):
            values[int(record["step"])] = float(record[key])
    steps = sorted(values)
    return steps, [values[s] for s in steps]


def read_run(run_dir: Path) -> RunReport:
    """Summarise a pretraining run folder.

    The wall time is that of the training loop, summed over the logging windows (each window
    covers its steps' images at its measured images/s); images/s and the data-wait share are
    averages over the run weighted by time.

    Args:
        run_dir: A folder written by ``simclr pretrain --out``.

    Returns:
        The summary, the curves and notes.

    Raises:
        RunFolderError: When the folder does not exist or holds no ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise RunFolderError(
            f"run folder {run_dir} {what}; give the --out folder of a pretrain run"
        )
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise RunFolderError(
            f"{run_dir} has no metrics.jsonl, so it is not a pretrain run folder; give the "
            "--out folder of `simclr pretrain`"
        )
    records, torn = read_metrics(metrics_path)
    tables = _read_config(run_dir / "config.toml")
    settings, plan = tables.get("pretrain", {}), tables.get("plan", {})
    metadata = None
    model_path = run_dir / "model.safetensors"
    if model_path.is_file():
        try:
            metadata = read_metadata(model_path)
        except (ModelFileError, DataError, OSError):
            metadata = None

    # Step records carry the loss; evaluation records of the kNN monitor carry eval_seconds.
    steps = [r for r in records if "loss" in r]
    evaluations = [r for r in records if "eval_seconds" in r and "loss" not in r]
    last = steps[-1] if steps else {}
    batch_size = settings.get("batch_size")

    # Time of each logging window from its images and its measured throughput.
    seconds, images, wait_seconds = 0.0, 0, 0.0
    previous_step = 0
    for record in sorted(steps, key=lambda r: r["step"]):
        step = int(record["step"])
        speed = _finite(record.get("images_per_second"))
        if batch_size and speed and step > previous_step:
            window_images = (step - previous_step) * int(batch_size)
            window_seconds = window_images / speed
            seconds += window_seconds
            images += window_images
            wait_seconds += (_finite(record.get("data_wait")) or 0.0) * window_seconds
        previous_step = max(previous_step, step)

    knn_steps, knn_top1 = _by_step(evaluations, "knn_top1")
    if not knn_steps:  # Older or other loggers: the latest accuracy rides on the step records.
        knn_steps, knn_top1 = _by_step(steps, "knn_top1")
    top5_steps, knn_top5 = _by_step(evaluations or steps, "knn_top5")
    best_index = max(range(len(knn_top1)), key=knn_top1.__getitem__) if knn_top1 else None
    losses = [v for v in (_finite(r.get("loss")) for r in steps) if v is not None]
    status = "finished"
    if metadata is None:
        status = "not finished"
        if (run_dir / "checkpoint.safetensors").is_file():
            status = "not finished (resume with --resume)"

    summary: dict[str, Any] = {
        "run": str(run_dir),
        "status": status,
        "backbone": metadata.backbone if metadata else settings.get("backbone"),
        "stem": metadata.stem if metadata else settings.get("stem"),
        "image_size": metadata.image_size if metadata else settings.get("image_size"),
        "batch_size": batch_size,
        "preset": settings.get("preset"),
        "optimizer": settings.get("optimizer"),
        "data": settings.get("data"),
        "device": settings.get("device"),
        "steps": int(last["step"]) if last else 0,
        "planned_steps": plan.get("total_steps"),
        "epochs": _finite(last.get("epoch")),
        "images_seen": metadata.images_seen if metadata else (images or None),
        "wall_seconds": round(seconds, 2) if seconds else None,
        "images_per_second": round(images / seconds, 2) if seconds else None,
        "final_loss": _finite(last.get("loss")),
        "min_loss": min(losses) if losses else None,
        "final_lr": _finite(last.get("lr")),
        "best_knn_top1": knn_top1[best_index] if best_index is not None else None,
        "best_knn_step": knn_steps[best_index] if best_index is not None else None,
        "final_knn_top1": knn_top1[-1] if knn_top1 else None,
        "final_knn_top5": knn_top5[-1] if knn_top5 else None,
        "eval_seconds": round(sum(_finite(r.get("eval_seconds")) or 0.0 for r in evaluations), 3)
        if evaluations
        else None,
        "data_wait": round(wait_seconds / seconds, 4) if seconds else None,
        "skipped_images": last.get("skipped_images"),
        "torn_lines": torn,
    }

    curves = {
        name: _by_step(steps, name)
        for name in ("loss", "lr", "data_wait", "images_per_second")
        if any(name in r for r in steps)
    }
    if knn_steps:
        curves["knn_top1"] = (knn_steps, knn_top1)
        if top5_steps:
            curves["knn_top5"] = (top5_steps, knn_top5)

    notes = []
    if not steps:
        notes.append("no step logged yet: the run has just started or stopped before step 1")
    if torn:
        notes.append(f"skipped {torn} unreadable line(s) of metrics.jsonl (cut short by a crash?)")
    if status != "finished" and steps:
        planned = f" of {plan['total_steps']}" if plan.get("total_steps") else ""
        notes.append(
            f"no model.safetensors yet: the run is going on or stopped at step "
            f"{summary['steps']}{planned}"
        )
    return RunReport(run_dir, summary, curves, notes)


def report_charts(report: RunReport) -> list[Chart]:
    """The run's curves as charts: loss, learning rate, data wait, images/s, kNN accuracy.

    Only the curves that the run logged are returned; kNN top-1 and top-5 share a chart.
    """

    def series(name: str, label: str) -> Series:
        steps, values = report.curves[name]
        return Series(label, steps, values, CURVE_COLORS[name])

    last_step = max((max(steps) for steps, _ in report.curves.values() if steps), default=1)
    x_range = (0.0, float(last_step))
    charts = []
    for name, title, percent in (
        ("loss", "NT-Xent loss", False),
        ("lr", "learning rate", False),
        ("data_wait", "data wait (share of time)", True),
        ("images_per_second", "throughput (images/s)", False),
    ):
        if name in report.curves:
            charts.append(Chart(title, [series(name, title)], percent=percent, x_range=x_range))
    if "knn_top1" in report.curves:
        knn = [series("knn_top1", "top-1")]
        if "knn_top5" in report.curves:
            knn.append(series("knn_top5", "top-5"))
        charts.append(Chart("kNN accuracy on --val", knn, percent=True, x_range=x_range))
    return charts


def render_report_png(report: RunReport, *, columns: int = 2) -> Image.Image:
    """The run's charts in one RGB image, with the run folder as heading.

    Args:
        report: A run read by ``read_run``.
        columns: Charts per row.

    Returns:
        The picture, RGB.

    Raises:
        DataError: When the run has no curve to draw (no step logged yet).
    """
    charts = report_charts(report)
    if not charts:
        raise DataError(f"{report.run_dir} has no logged step yet, so there is no curve to save")
    backbone = report.summary.get("backbone") or "run"
    title = f"{report.run_dir.name} · {backbone} · {report.summary['steps']} steps"
    return render_charts(charts, columns=columns, title=title)


def save_report_png(report: RunReport, path: Path) -> Image.Image:
    """Write the run's charts as a PNG, atomically; returns the image written.

    Args:
        report: A run read by ``read_run``.
        path: The ``.png`` file to write.

    Returns:
        The picture written.

    Raises:
        DataError: When ``path`` does not end in .png, the run has no curve, or it cannot be
            written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"--save {path}: give a file name ending in .png")
    image = render_report_png(report)
    _write_png(image, path)
    return image


def _write_png(image: Image.Image, path: Path) -> None:
    try:
        atomic_write(path, lambda temporary: image.save(temporary, format="PNG", optimize=True))
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None
