"""What --time-budget counts from: the process's start once the console script marks it."""

from __future__ import annotations

import subprocess
import sys
import time

from simclr_cli.cli import _started


def test_command_started_at__now_in_a_running_program(monkeypatch):
    # Invoked from tests or a notebook (no console script): the budget starts at the call.
    monkeypatch.setattr(_started, "_process_started_at", None)
    before = time.time()
    assert before <= _started.command_started_at() <= time.time()


def test_mark_process_start__counts_the_start_up_before_the_command():
    # A process that spends a second before marking: its command started a second earlier.
    script = (
        "import time; time.sleep(1.0)\n"
        "from simclr_cli.cli import _started\n"
        "_started.mark_process_start()\n"
        "print(time.time() - _started.command_started_at())\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert float(completed.stdout.strip()) >= 1.0
