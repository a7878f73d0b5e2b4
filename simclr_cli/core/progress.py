"""Progress reporting from the core to whoever draws it.

The core never prints. Long operations call a ``ProgressCallback`` with ``ProgressEvent``
objects; the command line turns them into rich progress bars, and Python users may pass their
own callable or nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["start", "advance", "message", "end"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        kind: ``start`` opens a task of ``total`` units, ``advance`` reports ``completed`` units
            and the latest ``metrics``, ``message`` carries a line of text, ``end`` closes the task.
        task: Short name of the task, such as ``"pretrain"`` or ``"embed"``.
        total: Number of units of the task, when known.
        completed: Units done so far.
        metrics: Latest values to show beside the bar (loss, learning rate, images per second).
        text: The line of a ``message`` event.
    """

    kind: EventKind
    task: str
    total: int | None = None
    completed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    text: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


def null_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores every event."""
