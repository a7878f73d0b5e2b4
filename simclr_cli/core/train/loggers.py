"""Loggers of training metrics: metrics.jsonl always, a CSV table and TensorBoard event files.

Every logger receives the same records as metrics.jsonl, so the names agree everywhere:
the columns of the CSV table are the keys of metrics.jsonl (``step``, ``epoch``, ``loss``,
``lr``, ``images_per_second``, ``data_wait``, ``knn_top1`` ...), and the TensorBoard tags are
the same keys, plotted over ``step``. The run folder (``run_folder.py``) names their files,
opens them and trims them back to the checkpoint when a run resumes.

TensorBoard is an optional extra (``pip install 'simclr-cli[tensorboard]'``), imported only when
asked for; ``check_loggers`` says so before a run starts rather than after its first steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .._io import atomic_write
from ..choices import LoggerName
from ..errors import ConfigError

#: What to install when TensorBoard is missing.
TENSORBOARD_HINT = "pip install 'simclr-cli[tensorboard]'"


class MetricsLogger(Protocol):
    """Receives each metrics record of a run (a flat dict with an integer ``step``)."""

    def log(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class JSONLinesLogger:
    """One JSON object per line, appended (a resumed run continues the file).

    Lines are flushed as they are written, so a crash loses at most the line being written, and
    readers skip a torn last line.
    """

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def log(self, record: Mapping[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


class CSVLogger:
    """Rows of a CSV table, one per record; a key seen for the first time adds a column.

    Training and kNN evaluation records have different keys, so cells a record lacks stay empty.
    The file is small (one row per ``log_every`` steps), and a new column rewrites it whole. A
    table already in the file is continued (a resumed run; a new run starts without the file).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.columns, self.rows = _read_csv(self.path)
        self._rewrite()

    def _rewrite(self) -> None:
        with self.path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self.columns)
            if self.columns:
                writer.writeheader()
            writer.writerows(self.rows)

    def log(self, record: Mapping[str, Any]) -> None:
        self.rows.append(dict(record))
        new = [key for key in record if key not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        with self.path.open("a", newline="", encoding="utf-8") as file:
            csv.DictWriter(file, fieldnames=self.columns).writerow(record)

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars in a folder of event files, one tag per key of the record, over its ``step``.

    Args:
        folder: The event files' folder.
        purge_step: For a resumed run, the first step logged again: TensorBoard hides the
            earlier run's events from this step on, so no step is plotted twice.
    """

    def __init__(self, folder: Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def log(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MultiLogger:
    """Hands each record to several loggers; with none it does nothing."""

    def __init__(self, loggers: Iterable[MetricsLogger]) -> None:
        self.loggers = list(loggers)

    def log(self, record: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def check_loggers(names: Iterable[LoggerName | str]) -> None:
    """Refuse a logger whose package is missing, before anything is written.

    Raises:
        ConfigError: When ``tensorboard`` is asked for but not installed.
    """
    wanted = {LoggerName(getattr(name, "value", name)) for name in names}
    if LoggerName.tensorboard in wanted and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            f"--logger tensorboard needs TensorBoard: {TENSORBOARD_HINT}", flag="--logger"
        )


# Trimming back to a checkpoint's step (a resumed run logs the steps after it again).


def trim_jsonl(path: Path, *, last_step: int) -> None:
    """Drop the lines of a metrics.jsonl file past ``last_step``, and a line cut short."""
    if not Path(path).exists():
        return
    kept = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) > last_step:
                continue
        except (json.JSONDecodeError, AttributeError):
            continue  # A line cut short by the crash.
        kept.append(line + "\n")
    atomic_write(
        path, lambda temporary: Path(temporary).write_text("".join(kept), encoding="utf-8")
    )


def trim_csv(path: Path, *, last_step: int) -> None:
    """Drop the rows of a CSV table past ``last_step``, and a row cut short; keep the columns."""
    if not Path(path).exists():
        return
    columns, rows = _read_csv(Path(path))
    kept = [row for row in rows if _complete_up_to(row, last_step)]

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            if columns:
                writer.writeheader()
            writer.writerows(kept)

    atomic_write(path, write)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def _complete_up_to(row: Mapping[str, Any], last_step: int) -> bool:
    """Whether a CSV row is whole and of a step up to ``last_step``."""
    # A row cut short by a crash has too few cells (None values) or a step that is not a number.
    if None in row.values() or None in row:
        return False
    try:
        return int(row["step"]) <= last_step
    except (KeyError, TypeError, ValueError):
        return False
