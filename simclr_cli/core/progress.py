"""Progress reporting from the core to whoever draws it.

The core never prints. Long operations call a ``ProgressCallback`` with ``ProgressEvent``
objects; the command line turns them into rich progress bars, and Python users may pass their
own callable or nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal["start", "advance", "message", "plan", "end"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report.

    Attributes:
        kind: ``start`` opens a task of ``total`` units, ``advance`` reports ``completed`` units
            and the latest ``metrics``, ``message`` carries a line of text, ``plan`` the choices
            of a run before it starts (in ``rows``), ``end`` closes the task.
        task: Short name of the task, such as ``"pretrain"`` or ``"embed"``.
        total: Number of units of the task, when known.
        completed: Units done so far.
        metrics: Latest values to show beside the bar (loss, learning rate, images per second).
        text: The line of a ``message`` event.
        rows: The table of a ``plan`` event: ``(setting, value, how it was chosen)`` rows.
    """

    kind: EventKind
    task: str
    total: int | None = None
    completed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    rows: tuple[tuple[str, str, str], ...] = ()


ProgressCallback = Callable[[ProgressEvent], None]


def null_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores every event."""
