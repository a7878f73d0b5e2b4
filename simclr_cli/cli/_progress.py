"""A rich implementation of the core's progress callback."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..core.progress import ProgressEvent, null_progress
from . import _console

TASK_LABELS = {
    "pretrain": "Pretraining",
    "embed": "Embedding",
    "features": "Features",
    "finetune": "Fine-tuning",
    "predict": "Classifying",
    "export": "Exporting",
    "shard": "Writing shards",
    "shards": "Reading shards",
    "list": "Listing files",
    "scan": "Checking files",
}


def format_metrics(metrics: dict) -> str:
    """One short line of the latest training metrics."""
    parts = []
    if "epoch" in metrics:
        parts.append(f"epoch {metrics['epoch']:.2f}")
    if "loss" in metrics:
        parts.append(f"loss {metrics['loss']:.4f}")
    if "lr" in metrics:
        parts.append(f"lr {metrics['lr']:.3g}")
    if "images_per_second" in metrics:
        parts.append(f"{metrics['images_per_second']:.0f} img/s")
    if "knn_top1" in metrics:
        parts.append(f"kNN {metrics['knn_top1']:.1%}")
    if "val_top1" in metrics:
        parts.append(f"val top-1 {metrics['val_top1']:.1%} · top-5 {metrics['val_top5']:.1%}")
    if "data_wait" in metrics:
        parts.append(f"data wait {metrics['data_wait']:.0%}")
    if "files_per_second" in metrics:
        parts.append(f"{metrics['files_per_second']:,.0f} files/s")
    return " · ".join(parts)


class RichProgress:
    """Draws core progress events as rich progress bars on stderr.

    Use as a context manager and pass the instance as the ``progress`` callback.
    """

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=_console.stderr,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        # The display starts with the first task, so that a command failing on its input before
        # any work leaves only its error line (a stopped display ends with an empty line).
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress.live.is_started:
            # A command that fails leaves only its error line: the bars of the failed work go.
            self._progress.live.transient = kind is not None and self._progress.console.is_terminal
            self._progress.stop()

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "plan":
            return  # A command that shows its plan draws the table itself (see pretrain.py).
        if event.kind == "message":
            self._progress.console.print(escape(event.text), highlight=False)
            return
        if event.kind == "start":
            if not self._progress.live.is_started:
                self._progress.start()
            label = TASK_LABELS.get(event.task, event.task.capitalize())
            self._tasks[event.task] = self._progress.add_task(
                label, total=event.total, completed=event.completed, info=""
            )
            return
        task = self._tasks.get(event.task)
        if task is None:
            return
        fields: dict[str, Any] = {"info": format_metrics(event.metrics)} if event.metrics else {}
        self._progress.update(task, completed=event.completed, total=event.total, **fields)
        if event.kind == "end":
            self._progress.stop_task(task)
            del self._tasks[event.task]


class NullProgress:
    """The ``--quiet`` stand-in for ``RichProgress``: draws nothing."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __call__(self, event: ProgressEvent) -> None:
        null_progress(event)


def create_progress(*, quiet: bool) -> RichProgress | NullProgress:
    """A progress drawer, or a silent one with ``quiet``."""
    return NullProgress() if quiet else RichProgress()
