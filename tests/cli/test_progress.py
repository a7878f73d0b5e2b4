"""The rich drawing of the core's progress events: the listing and header-scan bars."""

from __future__ import annotations

from simclr_cli.cli._progress import TASK_LABELS, RichProgress, format_metrics
from simclr_cli.core.progress import ProgressEvent


def test_format_metrics__files_per_second():
    assert format_metrics({"files_per_second": 12345.6}) == "12,346 files/s"


def test_rich_progress__scan_and_list_tasks_are_drawn_and_closed():
    assert TASK_LABELS["scan"] == "Checking files" and TASK_LABELS["list"] == "Listing files"
    with RichProgress() as progress:
        progress(ProgressEvent("start", "list", total=None, completed=10))
        progress(ProgressEvent("end", "list", total=20, completed=20))
        progress(ProgressEvent("start", "scan", total=20, completed=0))
        progress(
            ProgressEvent(
                "advance", "scan", total=20, completed=5, metrics={"files_per_second": 5.0}
            )
        )
        task = progress._tasks["scan"]
        assert progress._progress.tasks[task].fields["info"] == "5 files/s"
        progress(ProgressEvent("end", "scan", total=20, completed=20))
        assert progress._tasks == {}
