"""Loggers of training metrics: RUN/metrics.jsonl always, a CSV table and TensorBoard event files.

Every logger receives the same records as metrics.jsonl, so the names agree everywhere:
the columns of RUN/metrics.csv are the keys of metrics.jsonl (``step``, ``epoch``, ``loss``,
``lr``, ``images_per_second``, ``data_wait``, ``knn_top1`` ...), and the TensorBoard tags in
RUN/tensorboard/ are the same keys, plotted over ``step``.

TensorBoard is an optional extra (``pip install 'simclr-cli[tensorboard]'``), imported only when
asked for; ``check_loggers`` says so before a run starts rather than after its first steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..config import LoggerName
from ..errors import ConfigError

#: The JSON-lines file every run writes.
JSONL_FILE = "metrics.jsonl"
#: The CSV table a run writes with ``--logger csv``.
CSV_FILE = "metrics.csv"
#: The folder of TensorBoard event files a run writes with ``--logger tensorboard``.
TENSORBOARD_FOLDER = "tensorboard"
#: What to install when TensorBoard is missing.
TENSORBOARD_HINT = "pip install 'simclr-cli[tensorboard]'"


class MetricsLogger(Protocol):
    """Receives each metrics record of a run (a flat dict with an integer ``step``)."""

    def log(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class JSONLinesLogger:
    """One JSON object per line in RUN/metrics.jsonl, appended (a resumed run continues it).

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
    """Rows of RUN/metrics.csv, one per record; a key seen for the first time adds a column.

    Training and kNN evaluation records have different keys, so cells a record lacks stay empty.
    The file is small (one row per ``log_every`` steps), and a new column rewrites it whole.
    """

    def __init__(self, path: Path, *, fresh: bool) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []
        if not fresh and self.path.is_file():
            # A resumed run continues the table of the run it resumes.
            with self.path.open(newline="", encoding="utf-8") as file:
                reader = csv.DictReader(file)
                self.columns = list(reader.fieldnames or [])
                self.rows = list(reader)
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
    """Scalars in RUN/tensorboard/, one tag per key of the record, over its ``step``."""

    def __init__(self, folder: Path, *, fresh: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(folder)
        if fresh and folder.is_dir():
            # A run started again (--force) must not show the old run's curves under the new.
            shutil.rmtree(folder)
        self.writer = SummaryWriter(log_dir=str(folder))

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


def create_logger(
    names: Iterable[LoggerName | str], *, run_dir: Path, fresh: bool = True, enabled: bool = True
) -> MultiLogger:
    """RUN/metrics.jsonl and the loggers named, writing into ``run_dir``.

    Args:
        names: ``csv`` and/or ``tensorboard``; metrics.jsonl is always written.
        run_dir: The run folder.
        fresh: False when the run resumes: the CSV table and event files are continued.
        enabled: False on every process but the first of a multi-process run: nothing is written.

    Returns:
        A logger with ``log(record)`` and ``close()``.
    """
    wanted = list(dict.fromkeys(LoggerName(getattr(name, "value", name)) for name in names))
    if not enabled:
        return MultiLogger([])
    check_loggers(wanted)
    loggers: list[MetricsLogger] = [JSONLinesLogger(Path(run_dir) / JSONL_FILE)]
    for name in wanted:
        if name is LoggerName.csv:
            loggers.append(CSVLogger(Path(run_dir) / CSV_FILE, fresh=fresh))
        else:
            loggers.append(TensorBoardLogger(Path(run_dir) / TENSORBOARD_FOLDER, fresh=fresh))
    return MultiLogger(loggers)
