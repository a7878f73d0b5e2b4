"""Starting ranks with the elastic launcher: failures stop the job with one clear error."""

from __future__ import annotations

import ast
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from simclr_cli.core.config import PretrainConfig
from simclr_cli.core.distributed import launcher
from simclr_cli.core.distributed.launcher import (
    describe_failure,
    launch_pretrain,
    launch_workers,
    run_rank,
)
from simclr_cli.core.errors import ConfigError, DataError, DistributedError
from simclr_cli.core.progress import ProgressEvent


def _kill_rank_one(survived: str) -> str:
    """Rank 1 dies by SIGKILL after one collective; rank 0 keeps talking to it for two minutes.

    Rank 0 writes ``survived`` if it gets to the end: the launcher did not stop it.
    """
    dist.init_process_group("gloo")
    value = torch.ones(1)
    dist.all_reduce(value)
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        dist.all_reduce(value)
        time.sleep(0.01)
    Path(survived).write_text("rank 0 ran to its end")
    return "survived"


@pytest.mark.slow
def test_launch_workers__killed_rank_stops_the_job_with_a_clear_error(tmp_path: Path):
    survived = tmp_path / "survived"
    with pytest.raises(DistributedError) as caught:
        launch_workers(_kill_rank_one, str(survived), processes=2)
    assert "rank 1 of 2 was killed by SIGKILL" in str(caught.value)
    assert "\n" not in str(caught.value)
    # The launcher stopped the surviving rank instead of waiting for it.
    assert not survived.exists()


def _rank_zero_rejects_its_data() -> None:
    """Rank 0 fails with a user error while rank 1 waits for it in a collective."""
    dist.init_process_group("gloo")
    value = torch.ones(1)
    dist.all_reduce(value)
    if dist.get_rank() == 0:
        raise DataError("folder x holds no images; check the path")
    for _ in range(1000):
        dist.all_reduce(value)
        time.sleep(0.01)


@pytest.mark.slow
def test_launch_workers__user_error_of_a_rank_wins_over_the_peer_it_stranded():
    with pytest.raises(DistributedError) as caught:
        launch_workers(_rank_zero_rejects_its_data, processes=2)
    assert str(caught.value) == "folder x holds no images; check the path"
    assert caught.value.exit_code == 1


@dataclass
class FakeFailure:
    """The fields of the launcher's ``ProcessFailure`` that ``describe_failure`` reads."""

    message: object
    exitcode: int
    timestamp: int
    signal: str = ""

    def signal_name(self) -> str:
        return self.signal


def _rank_error_text(error: Exception) -> str:
    try:
        run_rank(_raise, error)
    except Exception as raised:
        return f"{type(raised).__name__}: {raised}"
    raise AssertionError("run_rank did not raise")


def _raise(error: Exception) -> None:
    raise error


def test_describe_failure__simclr_error_keeps_message_and_exit_code():
    text = _rank_error_text(DataError("folder x holds no images"))
    failures = {
        0: FakeFailure("Signal 15 (SIGTERM) received", -15, 5, "SIGTERM"),
        1: FakeFailure({"message": text, "extraInfo": {}}, 1, 9),
    }
    error = describe_failure(failures, world_size=2)
    assert str(error) == "folder x holds no images" and error.exit_code == 1
    usage = _rank_error_text(ConfigError("bad flag"))
    assert describe_failure({0: FakeFailure(usage, 1, 1)}, world_size=2).exit_code == 2


def test_describe_failure__other_errors_name_the_rank_in_one_line():
    failures = {
        0: FakeFailure("RuntimeError: Connection closed by peer\n  at gloo", 1, 7),
        1: FakeFailure("ValueError: nan in loss\nmore", 1, 3),
    }
    error = describe_failure(failures, world_size=2)
    assert str(error).startswith("rank 1 of 2 failed: ValueError: nan in loss;")
    assert "\n" not in str(error) and error.exit_code == 1


def _report_rank(*, config: PretrainConfig, progress) -> str:
    """An entry point: each rank reports its rank through ``progress`` and returns it."""
    rank = os.environ["RANK"]
    progress(ProgressEvent("message", "pretrain", text=f"rank {rank} of {config.batch_size}"))
    return f"result of rank {rank}"


def test_launch_pretrain__runs_the_entry_point_and_returns_rank_zeros_result():
    events: list[ProgressEvent] = []
    config = PretrainConfig(data=Path("images"), batch_size=2)
    result = launch_pretrain(_report_rank, config=config, progress=events.append, processes=2)
    assert result == "result of rank 0"
    # Only rank 0's events reach the caller.
    assert [event.text for event in events] == ["rank 0 of 2"]


def test_launcher__does_not_import_training():
    # The launcher sits below train/: it is handed the entry point instead of importing it.
    tree = ast.parse(Path(launcher.__file__).read_text())
    imported = [
        f"{node.module or ''}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    imported += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert imported and not [name for name in imported if "train" in name.split(".")]


def test_lost_peer_error__a_failed_collective_becomes_one_line_with_the_way_on():
    error = dist.DistBackendError("[pair.cc:534] Connection closed by peer [127.0.0.1]:33307")
    lost = launcher.lost_peer_error(error)
    assert isinstance(lost, DistributedError) and "\n" not in str(lost)
    assert "lost contact with another process of the job" in str(lost)
    assert "--resume on every machine" in str(lost)
    assert launcher.lost_peer_error(ValueError("a bad value")) is None
