"""The run folder of ``simclr pretrain``: the names of its files, and its life cycle.

Every file a run writes is named here (the lock in run_lock.py) and nowhere else:

==========================  ===================================================================
``model.safetensors``       the trained encoder, written at the end
``metrics.jsonl``           one JSON object per logged step and per kNN evaluation
``metrics.csv``             the same records as a table (``--logger csv``)
``tensorboard/``            the same records as event files (``--logger tensorboard``)
``config.toml``             the resolved configuration and the step plan
``checkpoint.safetensors``  what ``--resume`` continues from
``skipped.txt``             the images left out as unreadable
``.lock``                   locked while a process writes the folder (run_lock.py)
==========================  ===================================================================

The life cycle is run by rank 0 alone (the other ranks of a job wait for it, then read the
checkpoint it kept):

1. **Lock.** An exclusive ``flock`` on ``.lock``: a second run on the same folder is refused with
   one line naming the first (pid, host, since when). The kernel drops the lock of a process that
   dies, however it dies, so a killed run never leaves a stale lock.
2. **Resume or start.** With ``--resume`` and a checkpoint of the same configuration, every logger
   is trimmed back to the checkpoint's step (the steps after it are logged again):
   ``metrics.jsonl`` and ``metrics.csv`` here, TensorBoard by ``SummaryWriter``'s
   ``purge_step`` when the logger opens. Otherwise a folder holding anything is refused without
   ``--force`` (or ``--resume``), and both remove exactly the run's files, nothing else.
3. **config.toml**, written atomically.
4. **A barrier**: no rank reads the checkpoint or opens a logger before rank 0 is done, so no
   file is replaced while another process has it open.

The lock is held until the ``RunFolder`` is closed, at the end of the run however it ends.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .. import _io
from .._io import atomic_write
from ..choices import LoggerName
from ..distributed.ranks import SINGLE_PROCESS, RankContext
from ..errors import ModelFileError, RunFolderError
from ..model.files import read_header
from .checkpoints import Checkpoint, read_checkpoint, settings_differences
from .loggers import (
    CSVLogger,
    JSONLinesLogger,
    MetricsLogger,
    MultiLogger,
    TensorBoardLogger,
    check_loggers,
    trim_csv,
    trim_jsonl,
)
from .run_lock import LOCK_FILE, RunLock, busy_message, lock_holder

#: The trained encoder (backbone, head and metadata), written when the run ends.
MODEL_FILE = "model.safetensors"
#: One JSON object per logged step and per kNN evaluation; always written.
METRICS_JSONL_FILE = "metrics.jsonl"
#: The same records as a CSV table, with ``--logger csv``.
METRICS_CSV_FILE = "metrics.csv"
#: The folder of TensorBoard event files, with ``--logger tensorboard``.
TENSORBOARD_FOLDER = "tensorboard"
#: The resolved configuration (``[pretrain]``) and what the run derived from it (``[plan]``).
CONFIG_FILE = "config.toml"
#: Everything ``--resume`` needs to continue the run exactly.
CHECKPOINT_FILE = "checkpoint.safetensors"
#: The images left out as unreadable, one ``path<TAB>reason`` line each.
SKIPPED_FILE = "skipped.txt"

#: The files of a run: what ``--force`` removes before starting again, and nothing else.
RUN_FILES = (
    MODEL_FILE,
    METRICS_JSONL_FILE,
    METRICS_CSV_FILE,
    TENSORBOARD_FOLDER,
    CONFIG_FILE,
    CHECKPOINT_FILE,
    SKIPPED_FILE,
)


class RunFolder:
    """An open run folder: where the run writes, the checkpoint it continues, and its lock.

    Use it as a context manager, or call ``close``: that releases the lock.

    Attributes:
        path: The run folder.
        checkpoint: The checkpoint the run continues, or None for a run from step 0.
        writes: Whether this process writes the folder (rank 0, or a single process).
    """

    def __init__(
        self,
        path: Path,
        *,
        checkpoint: Checkpoint | None,
        writes: bool,
        lock: RunLock | None = None,
    ) -> None:
        self.path = Path(path)
        self.checkpoint = checkpoint
        self.writes = writes
        self.lock = lock

    @property
    def model_path(self) -> Path:
        """Where the trained model goes."""
        return self.path / MODEL_FILE

    def create_logger(self, names: Iterable[LoggerName | str]) -> MultiLogger:
        """``metrics.jsonl`` and the loggers named, continuing a resumed run's (see module doc)."""
        return create_logger(
            names,
            run_dir=self.path,
            resume_step=self.checkpoint.position.step if self.checkpoint else None,
            enabled=self.writes,
        )

    def close(self) -> None:
        """Release the lock."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_run_folder(
    out: Path,
    *,
    force: bool,
    resume: bool,
    settings: dict[str, Any],
    config_tables: Mapping[str, Mapping[str, Any]],
    context: RankContext = SINGLE_PROCESS,
) -> RunFolder:
    """Lock, check and prepare the run folder, and find the checkpoint to continue.

    Every rank of a job calls it: rank 0 does the work (see the module docstring), the others
    wait for it at a barrier and then read the checkpoint it kept.

    Args:
        out: The run folder (``--out``).
        force: Start again, removing the run's files (``--force``).
        resume: Continue from the checkpoint when there is one (``--resume``); without one the
            run starts, as with ``force``.
        settings: The resolved configuration, compared with the checkpoint's.
        config_tables: The tables of ``config.toml``.
        context: This process's place in the job.

    Returns:
        The open folder; closing it releases the lock.

    Raises:
        RunFolderError: When ``out`` is a file, is being written by another process, holds
            earlier output without ``force`` or ``resume``, holds a model but no checkpoint to
            resume, or has a checkpoint of another configuration.
        CheckpointError: When the checkpoint cannot be read.
    """
    out = Path(out)
    if not context.is_main:
        wait_for_rank_zero(context)
        checkpoint = find_resumable_checkpoint(out, resume=resume, settings=settings)
        return RunFolder(out, checkpoint=checkpoint, writes=False)
    _io.prepare_output(out, force=True, name="run folder")  # A file is refused; created here.
    lock = RunLock(out)
    lock.acquire()
    try:
        checkpoint = find_resumable_checkpoint(out, resume=resume, settings=settings)
        if checkpoint is None:
            _io.prepare_output(
                out, force=force or resume, create=False, ignore=(LOCK_FILE,), name="run folder"
            )
            remove_run_files(out)
        else:
            trim_logs(out, last_step=checkpoint.position.step)
        text = _io.dumps(config_tables)
        atomic_write(out / CONFIG_FILE, lambda temporary: Path(temporary).write_text(text))
    except BaseException:
        lock.release()
        raise
    wait_for_rank_zero(context)
    return RunFolder(out, checkpoint=checkpoint, writes=True, lock=lock)


def refuse_early(out: Path, *, force: bool, resume: bool) -> None:
    """Refuse now a folder that ``open_run_folder`` would refuse, before processes start.

    Nothing is created or removed: the checks of rank 0 still run (and decide) later.

    Raises:
        RunFolderError: When ``out`` is a file, holds earlier output without ``force`` or
            ``resume``, or is being written by another process.
    """
    _io.prepare_output(
        out, force=force or resume, create=False, ignore=(LOCK_FILE,), name="run folder"
    )
    holder = lock_holder(out)
    if holder is not None:
        raise RunFolderError(busy_message(Path(out), holder))


def find_resumable_checkpoint(
    out: Path, *, resume: bool, settings: dict[str, Any]
) -> Checkpoint | None:
    """The checkpoint to continue from, or None to start a new run.

    Args:
        out: The run folder.
        resume: Whether ``--resume`` was given; without it nothing is resumed.
        settings: The resolved configuration of the run about to start.

    Returns:
        The checkpoint when ``resume`` is set and ``out`` holds one of the same configuration;
        None when there is nothing to resume (the caller starts the run, replacing the files
        of a run that died before its first checkpoint).

    Raises:
        RunFolderError: When the checkpoint's configuration differs (the differences are
            listed), or when ``out`` holds a finished model but no checkpoint.
        CheckpointError: When the checkpoint cannot be read.
    """
    out = Path(out)
    if not resume or not out.is_dir():
        return None
    path = out / CHECKPOINT_FILE
    if not path.exists():
        if (out / MODEL_FILE).exists():
            raise RunFolderError(
                f"{out} holds a model but no {CHECKPOINT_FILE} to resume from; add --force to "
                "replace it or choose another --out"
            )
        return None
    checkpoint = read_checkpoint(path)
    differences = settings_differences(checkpoint.settings, settings)
    if differences:
        raise RunFolderError(
            f"cannot resume {out}: its checkpoint has a different configuration ("
            + "; ".join(differences)
            + "); run with the same settings, add --force to start again, or choose another --out"
        )
    return checkpoint


def saved_settings(out: Path) -> dict[str, Any] | None:
    """The resolved settings a run folder's checkpoint was written with, tensors left unread.

    Returns:
        The settings; None when there is no readable checkpoint (``find_resumable_checkpoint``
        says why, when it matters).
    """
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        raw = read_header(path).get("__metadata__", {}).get("settings")
        settings = json.loads(raw) if raw else None
    except (ModelFileError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def remove_run_files(out: Path) -> None:
    """Remove the files of a run (``RUN_FILES``) from ``out``, leaving anything else there."""
    for name in RUN_FILES:
        path = Path(out) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def trim_logs(out: Path, *, last_step: int) -> None:
    """Drop the records past ``last_step`` from ``metrics.jsonl`` and ``metrics.csv``.

    A resumed run logs the steps after its checkpoint again; TensorBoard's are dropped by
    ``purge_step`` when its logger opens (``create_logger``).
    """
    trim_jsonl(Path(out) / METRICS_JSONL_FILE, last_step=last_step)
    trim_csv(Path(out) / METRICS_CSV_FILE, last_step=last_step)


def create_logger(
    names: Iterable[LoggerName | str],
    *,
    run_dir: Path,
    resume_step: int | None = None,
    enabled: bool = True,
) -> MultiLogger:
    """``RUN/metrics.jsonl`` and the loggers named, writing into ``run_dir``.

    Args:
        names: ``csv`` and/or ``tensorboard``; metrics.jsonl is always written.
        run_dir: The run folder.
        resume_step: The checkpoint's step when the run resumes: the CSV table and the event
            files are continued, TensorBoard hiding its events after that step.
        enabled: False on every process but the first of a multi-process run: nothing is written.

    Returns:
        A logger with ``log(record)`` and ``close()``.
    """
    wanted = list(dict.fromkeys(LoggerName(getattr(name, "value", name)) for name in names))
    if not enabled:
        return MultiLogger([])
    check_loggers(wanted)
    run_dir = Path(run_dir)
    loggers: list[MetricsLogger] = [JSONLinesLogger(run_dir / METRICS_JSONL_FILE)]
    for name in wanted:
        if name is LoggerName.csv:
            loggers.append(CSVLogger(run_dir / METRICS_CSV_FILE))
        else:
            purge_step = None if resume_step is None else resume_step + 1
            loggers.append(TensorBoardLogger(run_dir / TENSORBOARD_FOLDER, purge_step=purge_step))
    return MultiLogger(loggers)


def wait_for_rank_zero(context: RankContext) -> None:
    """A barrier of every rank of the job (nothing on a single process)."""
    if context.distributed:
        dist.barrier()
