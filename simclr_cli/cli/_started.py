"""When the command started: what ``--time-budget`` counts from.

The console script marks its process's start (Python's start-up and the imports included) before
the command runs; a command invoked in an already running program (tests, a notebook) counts from
the moment it is invoked.
"""

from __future__ import annotations

import time

from ..core._runtime import process_started_at

_process_started_at: float | None = None


def mark_process_start() -> None:
    """Record that this process is the command: its start is the command's start."""
    global _process_started_at
    _process_started_at = process_started_at()


def command_started_at() -> float:
    """The command's start as ``time.time()``: the process's start once marked, else now."""
    return time.time() if _process_started_at is None else _process_started_at
