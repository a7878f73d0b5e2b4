"""The run folder: its files, refusing and replacing them, resume, trimming, and the lock."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simclr_cli.core.distributed.ranks import RankContext
from simclr_cli.core.errors import RunFolderError
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train import run_folder, run_lock
from simclr_cli.core.train.checkpoints import TrainingPosition, save_checkpoint
from simclr_cli.core.train.loop import pretrain
from simclr_cli.core.train.optimizers import create_optimizer
from simclr_cli.core.train.run_folder import RUN_FILES, find_resumable_checkpoint, open_run_folder
from simclr_cli.core.train.run_lock import LOCK_FILE, RunLock
from tests.conftest import tiny_config
from tests.core.train.test_loggers import read_csv, read_tensorboard

REPO = Path(__file__).resolve().parents[3]
SETTINGS = {"batch_size": 8, "seed": 0, "backbone": "test_resnet"}
TABLES = {"pretrain": {"seed": 0}}

#: Holds the lock of the folder in argv[1] until killed; says "locked" once it holds it.
HOLD_THE_LOCK = """
import sys, time
from simclr_cli.core.train.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _save_checkpoint(folder: Path, *, step: int) -> None:
    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", image_size=32, head="v1")
    optimizer = create_optimizer("sgd", [model.backbone, model.head], learning_rate=0.1)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        folder / run_folder.CHECKPOINT_FILE,
        model=model,
        optimizer=optimizer,
        position=TrainingPosition(step=step),
        settings=SETTINGS,
    )


def _write_metrics(folder: Path, steps: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    logger = run_folder.create_logger(["csv"], run_dir=folder)
    for step in steps:
        logger.log({"step": step, "loss": 1.0 / step})
    logger.close()


def _logged_steps(folder: Path) -> tuple[list[int], list[int]]:
    lines = (folder / run_folder.METRICS_JSONL_FILE).read_text().splitlines()
    rows = read_csv(folder / run_folder.METRICS_CSV_FILE)[1]
    return [json.loads(line)["step"] for line in lines], [int(row["step"]) for row in rows]


@pytest.fixture
def lock_holder(tmp_path: Path):
    """A process holding the lock of ``tmp_path / "run"``: (its pid, the folder)."""
    folder = tmp_path / "run"
    folder.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(folder)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    yield process, folder
    process.kill()
    process.wait()


def test_run_files__every_file_a_run_writes_is_named_once():
    assert len(set(RUN_FILES)) == len(RUN_FILES) and LOCK_FILE not in RUN_FILES
    assert set(RUN_FILES) == {
        "model.safetensors",
        "metrics.jsonl",
        "metrics.csv",
        "tensorboard",
        "config.toml",
        "checkpoint.safetensors",
        "skipped.txt",
    }


def test_open_run_folder__refuses_a_full_folder_and_force_removes_only_the_run_files(
    tmp_path: Path,
):
    out = tmp_path / "run"
    _write_metrics(out, range(1, 4))
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events").write_text("old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"run folder .* is not empty.*--force"):
        open_run_folder(out, force=False, resume=False, settings=SETTINGS, config_tables=TABLES)
    assert (out / "metrics.csv").exists() and not (out / LOCK_FILE).exists()
    with open_run_folder(
        out, force=True, resume=False, settings=SETTINGS, config_tables=TABLES
    ) as run:
        assert run.checkpoint is None and (out / LOCK_FILE).exists()
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, "config.toml", "notes.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "notes.txt"]


def test_open_run_folder__a_file_is_refused(tmp_path: Path):
    out = tmp_path / "run"
    out.write_text("not a folder")
    with pytest.raises(RunFolderError, match="is a file"):
        open_run_folder(out, force=True, resume=False, settings=SETTINGS, config_tables=TABLES)


def test_open_run_folder__resume_trims_jsonl_and_csv_to_the_checkpoint(tmp_path: Path):
    out = tmp_path / "run"
    _save_checkpoint(out, step=4)
    _write_metrics(out, range(1, 7))
    with open_run_folder(
        out, force=False, resume=True, settings=SETTINGS, config_tables=TABLES
    ) as run:
        assert run.checkpoint is not None and run.checkpoint.position.step == 4
        assert _logged_steps(out) == ([1, 2, 3, 4], [1, 2, 3, 4])
        logger = run.create_logger(["csv"])
        logger.log({"step": 5, "loss": 0.2})
        logger.close()
    assert _logged_steps(out) == ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])


def test_open_run_folder__other_ranks_wait_for_rank_zero_and_touch_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "run"
    _save_checkpoint(out, step=4)
    _write_metrics(out, range(1, 7))
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    waited = []
    monkeypatch.setattr(run_folder, "wait_for_rank_zero", waited.append)
    rank_one = RankContext(rank=1, world_size=2, local_rank=1, local_world_size=2)
    run = open_run_folder(
        out, force=False, resume=True, settings=SETTINGS, config_tables=TABLES, context=rank_one
    )
    assert waited == [rank_one] and run.checkpoint is not None and not run.writes
    run.create_logger(["csv"]).log({"step": 5, "loss": 0.2})
    run.close()
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_find_resumable_checkpoint__refuses_other_settings_and_lone_models(tmp_path: Path):
    _save_checkpoint(tmp_path, step=3)
    assert find_resumable_checkpoint(tmp_path, resume=False, settings=SETTINGS) is None
    found = find_resumable_checkpoint(tmp_path, resume=True, settings=SETTINGS)
    assert found is not None and found.position.step == 3
    with pytest.raises(RunFolderError, match=r"batch_size 8 -> 16; seed 0 -> 1"):
        find_resumable_checkpoint(
            tmp_path, resume=True, settings={**SETTINGS, "batch_size": 16, "seed": 1}
        )
    lone = tmp_path / "finished"
    lone.mkdir()
    (lone / "model.safetensors").write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"no checkpoint\.safetensors"):
        find_resumable_checkpoint(lone, resume=True, settings=SETTINGS)
    assert find_resumable_checkpoint(tmp_path / "new", resume=True, settings=SETTINGS) is None


def test_run_lock__second_process_is_refused_naming_the_first(lock_holder):
    process, folder = lock_holder
    with pytest.raises(RunFolderError) as refused:
        RunLock(folder).acquire()
    message = str(refused.value)
    assert "\n" not in message and f"pid {process.pid} on {socket.gethostname()} since" in message
    assert f"run folder {folder} is being written by" in message
    assert run_lock.lock_holder(folder) is not None
    with pytest.raises(RunFolderError, match=f"pid {process.pid}"):
        run_folder.refuse_early(folder, force=False, resume=True)


def test_run_lock__a_killed_holder_leaves_no_stale_lock(lock_holder):
    process, folder = lock_holder
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (folder / LOCK_FILE).exists() and run_lock.lock_holder(folder) is None
    lock = RunLock(folder)
    lock.acquire()
    record = json.loads((folder / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid()
    lock.release()
    assert not (folder / LOCK_FILE).exists()


def test_pretrain__folder_being_written_is_refused(lock_holder, shapes_dir: Path):
    process, folder = lock_holder
    with pytest.raises(RunFolderError, match=f"pid {process.pid}"):
        pretrain(config=tiny_config(shapes_dir, folder, force=True))
    assert [path.name for path in folder.iterdir()] == [LOCK_FILE]


class StopAtStep5(Exception):
    pass


def test_pretrain__resume_trims_every_logger_back_to_the_checkpoint(
    shapes_dir: Path, tmp_path: Path
):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    settings = {"max_steps": 7, "checkpoint_every": "2", "loggers": ["csv", "tensorboard"]}

    def fail_after_step_5(event) -> None:
        if event.kind == "advance" and event.completed == 5:
            raise StopAtStep5

    # Step 5 is logged by every logger, then the run dies with its checkpoint at step 4.
    with pytest.raises(StopAtStep5):
        pretrain(config=tiny_config(shapes_dir, out, **settings), progress=fail_after_step_5)
    assert _logged_steps(out) == ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    # The same process continues: the failed run let go of the folder's lock.
    result = pretrain(config=tiny_config(shapes_dir, out, resume=True, **settings))
    assert result.resumed_from == 4 and result.steps == 7
    assert _logged_steps(out) == (list(range(1, 8)), list(range(1, 8)))
    assert [step for step, _ in read_tensorboard(out / "tensorboard")["loss"]] == list(range(1, 8))
    with (out / "metrics.csv").open(newline="") as file:
        assert next(csv.reader(file))[0] == "step"
