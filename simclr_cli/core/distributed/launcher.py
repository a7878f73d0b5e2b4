"""Starting the ranks of a run on this machine with PyTorch's elastic launcher.

``--gpus N`` and ``--cpu-processes N`` start N processes through ``elastic_launch``, the machinery
behind ``torchrun``: it runs the rendezvous, sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR for each
process, watches them, and stops them all as soon as one fails. This module adds what a command
line needs around it: rank 0's progress events travel to the caller's progress callback, the
launcher's own log lines stay out of the terminal, and a failed rank becomes one ``SimCLRError``
carrying that rank's message (and, for a ``SimCLRError`` raised in the rank, its exit code).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from .. import _env
from ..config import PretrainConfig
from ..errors import DistributedError, SimCLRError
from ..progress import ProgressCallback, ProgressEvent, null_progress

#: Loggers of the launcher whose warnings and tracebacks would bury the one line that matters.
LAUNCHER_LOGGERS = (
    "torch.distributed.elastic",
    "torch.distributed.launcher",
    "torch.multiprocessing",
)

#: Prefix of the message a rank leaves when a ``SimCLRError`` stopped it.
_RANK_ERROR = "RankError: "

#: How long a rank that lost contact with another waits before failing itself: the launcher
#: reports the first rank to fail, and the one that lost its peer is rarely the cause. Within
#: this time the launcher sees the rank that failed first and stops this one.
PEER_FAILURE_GRACE_SECONDS = 3.0


class RankError(Exception):
    """Raised in a rank for a ``SimCLRError``; its message is JSON with the exit code and text."""


class QueueProgress:
    """A progress callback that sends events to another process (picklable for ``spawn``)."""

    def __init__(self, events: Any):
        self.events = events

    def __call__(self, event: ProgressEvent) -> None:
        self.events.put(event)


def run_rank(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` in a rank, turning a ``SimCLRError`` into a ``RankError``.

    The launcher records the message of the exception that ends a rank; this keeps the exit code
    and the user's message of a ``SimCLRError`` in it. ``SIMCLR_DEBUG=1`` prints the traceback.
    """
    try:
        return function(*args)
    except SimCLRError as error:
        if _env.debug():
            traceback.print_exc()
        record = {"exit_code": error.exit_code, "message": str(error)}
        raise RankError(json.dumps(record)) from None
    except BaseException as error:
        if _env.debug():
            traceback.print_exc()
        if _lost_a_peer(error):
            time.sleep(PEER_FAILURE_GRACE_SECONDS)
        raise


def _lost_a_peer(error: BaseException) -> bool:
    """Whether a collective failed because another rank went away."""
    collective_error = getattr(dist, "DistError", RuntimeError)
    text = str(error).lower()
    return isinstance(error, collective_error) or any(
        words in text for words in ("connection closed by peer", "connection reset", "broken pipe")
    )


def lost_peer_error(error: BaseException) -> DistributedError | None:
    """The one-line error of a rank whose collective failed because another rank went away.

    For a rank of a job that an outside launcher started (``torchrun`` on several machines),
    where no launcher of ours reports which rank failed first: the surviving ranks stop with
    this line instead of the collective's traceback.

    Returns:
        The error to report, or None when ``error`` is not a lost peer.
    """
    if not _lost_a_peer(error):
        return None
    return DistributedError(
        "lost contact with another process of the job (it, or its machine, stopped, or it "
        f"did not answer within SIMCLR_COLLECTIVE_TIMEOUT, {_env.collective_timeout_seconds():g}"
        " s); this process stopped too; to continue from the last checkpoint, run the same "
        "command with --resume on every machine"
    )


def launch_workers(entrypoint: Callable[..., Any], *args: Any, processes: int) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` in ``processes`` processes on this machine and wait for them.

    Each process finds its rank in RANK/LOCAL_RANK/WORLD_SIZE and can join the process group with
    ``torch.distributed.init_process_group()``. The processes are started with ``spawn``, so the
    entrypoint and its arguments must be picklable (a module-level function).

    Args:
        entrypoint: The function each process runs.
        *args: Its arguments.
        processes: How many processes.

    Returns:
        Every rank's return value, by rank.

    Raises:
        SimCLRError: When a rank fails: the ``SimCLRError`` it raised (with its exit code) or a
            ``DistributedError`` naming the rank and what stopped it. The other ranks are
            stopped at once.
        KeyboardInterrupt: When the run is interrupted.
    """
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"simclr-{uuid.uuid4().hex[:12]}",
        # The launcher's own store on a free local port, as `torchrun --standalone` does.
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        # How often the launcher looks at its processes: a dead rank stops the job this fast.
        monitor_interval=0.1,
        start_method="spawn",
    )
    # The launcher installs its own SIGINT/SIGTERM handlers and leaves them behind; restore the
    # caller's so that a Python program (or a test session) keeps its own signal behaviour.
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with _quiet_launcher():
        try:
            return elastic_launch(config, run_rank)(entrypoint, *args)
        except ChildFailedError as error:
            raise describe_failure(error.failures, world_size=processes) from None
        except SignalException as error:
            if error.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise DistributedError(f"stopped by {error.sigval.name}") from None
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)


def describe_failure(failures: dict[int, Any], *, world_size: int) -> SimCLRError:
    """Turn the launcher's failures into one error that says what went wrong, in one line.

    A ``SimCLRError`` raised by a rank comes first (it says how to fix the input), then a rank
    killed from outside (out of memory, for instance), then the earliest other error.

    Args:
        failures: ``ChildFailedError.failures``: by rank, objects with ``message``,
            ``exitcode``, ``timestamp`` and ``signal_name()``.
        world_size: Processes in the run.

    Returns:
        The error to raise.
    """
    by_rank = sorted(failures.items())
    for _, failure in by_rank:
        text = _failure_text(failure)
        if text.startswith(_RANK_ERROR):
            try:
                record = json.loads(text[len(_RANK_ERROR) :])
                return DistributedError(record["message"], exit_code=int(record["exit_code"]))
            except (ValueError, KeyError, TypeError):
                break
    for rank, failure in by_rank:
        if failure.exitcode < 0 and failure.signal_name() not in ("SIGTERM", "SIGINT"):
            hint = " (it may have run out of memory)" if failure.signal_name() == "SIGKILL" else ""
            return DistributedError(
                f"rank {rank} of {world_size} was killed by {failure.signal_name()}{hint}; "
                "the other ranks were stopped"
            )
    rank, failure = min(by_rank, key=lambda item: (item[1].timestamp, item[0]))
    text = _failure_text(failure)
    if failure.exitcode < 0:
        reason = f"was stopped by {failure.signal_name()}"
    elif text and not text.startswith("To enable traceback"):
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        reason = f"failed: {lines[0] if lines else text}"
    else:
        reason = f"exited with code {failure.exitcode}"
    return DistributedError(
        f"rank {rank} of {world_size} {reason}; the other ranks were stopped "
        "(SIMCLR_DEBUG=1 prints the rank's traceback)"
    )


def _failure_text(failure: Any) -> str:
    # The launcher keeps the message as text, or as the error file's record of it.
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message or "")


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """Silence the launcher's logs (they repeat the failure as tracebacks) unless debugging."""
    if _env.debug():
        yield
        return
    loggers = [logging.getLogger(name) for name in LAUNCHER_LOGGERS]
    loggers += [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(LAUNCHER_LOGGERS)
    ]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in levels:
            logger.setLevel(level)


# --------------------------------------------------------------------------------------------
# Pretraining over several processes.


def _run_entrypoint(entrypoint: Callable[..., Any], config: PretrainConfig, events: Any) -> Any:
    """What each started process runs: the entry point joining the job; rank 0 returns."""
    rank = int(os.environ.get("RANK", "0"))
    progress = QueueProgress(events) if rank == 0 else null_progress
    result = entrypoint(config=config, progress=progress)
    return result if rank == 0 else None


def launch_pretrain(
    entrypoint: Callable[..., Any],
    *,
    config: PretrainConfig,
    progress: ProgressCallback,
    processes: int,
) -> Any:
    """Pretrain in ``processes`` processes on this machine and return rank 0's result.

    Each process calls ``entrypoint(config=config, progress=...)``; rank 0's progress events are
    passed on to ``progress`` in this process as they come. The entry point is the training
    function itself (``train.loop.pretrain``), handed in so that this module knows nothing of
    training; it must be a module-level function, which ``spawn`` can pickle.

    Args:
        entrypoint: The function each process runs; it finds its rank in the environment.
        config: The run's settings.
        progress: The caller's progress callback.
        processes: How many processes to start.

    Returns:
        What the entry point returned in rank 0.

    Raises:
        SimCLRError: When a rank fails (see ``launch_workers``).
    """
    events = multiprocessing.get_context("spawn").Queue()
    finished = threading.Event()

    def forward_events() -> None:
        while not (finished.is_set() and events.empty()):
            try:
                event = events.get(timeout=0.1)
            except queue.Empty:
                continue
            except (EOFError, OSError, ValueError):  # A rank died while sending.
                return
            progress(event)

    forwarder = threading.Thread(target=forward_events, name="simclr-progress", daemon=True)
    forwarder.start()
    try:
        results = launch_workers(_run_entrypoint, entrypoint, config, events, processes=processes)
    finally:
        finished.set()
        forwarder.join(timeout=5)
        events.close()
        sys.stderr.flush()
    return results[0]
