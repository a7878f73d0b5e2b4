"""SIGINT and SIGTERM during training: finish the step, checkpoint, stop; a second one is at once.

A pre-empted job (SIGTERM from a scheduler) or a Ctrl-C (SIGINT) should not lose the work since
the last checkpoint: the first signal only sets a flag, which the training loop reads after each
step. A second signal means the user will not wait: SIGINT raises ``KeyboardInterrupt`` and
SIGTERM ends the process by the signal's default action.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

#: The signals that ask a run to stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Catches SIGINT and SIGTERM while installed and remembers the first one.

    Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread)
    ``install`` does nothing and signals keep their usual effect.

    Attributes:
        received: The first signal received, or None.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Start catching the stop signals."""
        if threading.current_thread() is not threading.main_thread():
            return
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def uninstall(self) -> None:
        """Give the signals back to the handlers they had before ``install``."""
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = number
            return
        # The second signal: stop now, without the checkpoint.
        self.uninstall()
        if number == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)


def name_of(number: int) -> str:
    """``SIGINT``, ``SIGTERM``, ... for a signal number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
