"""Resume after SIGKILL and SIGTERM gives bitwise the same model; signals; non-finite steps."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors.torch import load_file

from simclr_cli.core._amp import parameters_are_finite
from simclr_cli.core.errors import DiskFullError, RunInterrupted, TrainingDivergedError
from simclr_cli.core.model import files as model_files
from simclr_cli.core.progress import ProgressEvent
from simclr_cli.core.train import loop as train_module
from simclr_cli.core.train import safeguards
from simclr_cli.core.train.checkpoints import read_checkpoint
from simclr_cli.core.train.loop import pretrain
from simclr_cli.core.train.safeguards import MAX_NONFINITE_IN_ROW
from simclr_cli.core.train.signals import StopSignals
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[3]
#: 24 images in batches of 8: 3 steps per epoch, so step 4 is in the middle of the second epoch.
RESUME_SETTINGS = {"max_steps": 7, "seed": 3, "checkpoint_every": "2", "log_every": 1}

KILL_AT_CHECKPOINT = """
import os, signal, sys
from simclr_cli.core.train import safeguards
from simclr_cli.core.train.loop import pretrain
from tests.conftest import tiny_config

real_save = safeguards.save_checkpoint
saves = 0

def save_then_die(*args, **kwargs):
    global saves
    real_save(*args, **kwargs)
    saves += 1
    if saves == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

safeguards.save_checkpoint = save_then_die
settings = {"max_steps": 7, "seed": 3, "checkpoint_every": "2", "log_every": 1}
pretrain(config=tiny_config(sys.argv[1], sys.argv[2], **settings))
"""


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_bitwise_equal(path: Path, reference: Path) -> None:
    actual, expected = _tensors(path), _tensors(reference)
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"


@pytest.fixture(scope="module")
def reference_model(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model of the uninterrupted run that the resumed runs must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return pretrain(config=tiny_config(shapes_dir, out, **RESUME_SETTINGS)).model_path


@pytest.mark.slow
def test_pretrain__resume_after_sigkill_is_bitwise_identical(
    shapes_dir: Path, reference_model: Path, tmp_path: Path
):
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_CHECKPOINT, str(shapes_dir), str(out), "2"],
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not (out / "model.safetensors").exists()
    position = read_checkpoint(out / "checkpoint.safetensors").position
    assert (position.step, position.epoch, position.batches_in_epoch) == (4, 1, 1)
    result = pretrain(config=tiny_config(shapes_dir, out, resume=True, **RESUME_SETTINGS))
    assert result.resumed_from == 4 and result.steps == 7
    _assert_bitwise_equal(result.model_path, reference_model)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.slow
def test_pretrain__sigterm_checkpoints_and_resume_is_bitwise_identical(
    shapes_dir: Path, reference_model: Path, tmp_path: Path
):
    out = tmp_path / "run"

    def terminate_at_step_5(event: ProgressEvent) -> None:
        if event.kind == "advance" and event.completed == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    config = tiny_config(shapes_dir, out, **RESUME_SETTINGS)
    with pytest.raises(RunInterrupted, match="SIGTERM after step 5") as stop:
        pretrain(config=config, progress=terminate_at_step_5)
    assert stop.value.exit_code == 143 and "--resume" in str(stop.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert read_checkpoint(out / "checkpoint.safetensors").position.step == 5
    result = pretrain(config=tiny_config(shapes_dir, out, resume=True, **RESUME_SETTINGS))
    _assert_bitwise_equal(result.model_path, reference_model)


#: Two gloo ranks, 24 images in global batches of 8 (4 a rank): 3 steps per epoch, a checkpoint
#: at step 4, in the middle of the second epoch.
TWO_RANK_SETTINGS = {
    "max_steps": 8,
    "seed": 0,
    "checkpoint_every": "4",
    "log_every": 1,
    "cpu_processes": 2,
}

#: ``python SCRIPT DATA OUT new|resume``, RUN_SETTINGS in JSON: a 2-rank run whose rank 0 dies
#: by SIGKILL after step KILL_AFTER_STEP, and whose ranks write the augmentation parameters of
#: their first batch to PARAMS_DIR/rank<R>.safetensors. Spawned ranks import this script as
#: their main module, so the patches reach them.
TWO_RANK_SCRIPT = """
import json, os, signal, sys
from pathlib import Path
from safetensors.torch import save_file
from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.train import safeguards

KILL_AFTER_STEP = int(os.environ.get("KILL_AFTER_STEP", "0"))
PARAMS_DIR = os.environ.get("PARAMS_DIR")
real_after_step = safeguards.RunGuard.after_step
real_sample = BatchAugmenter.sample

def after_step_then_die(self, *, step, **kwargs):
    real_after_step(self, step=step, **kwargs)
    if self.is_main and step == KILL_AFTER_STEP:
        os.kill(os.getpid(), signal.SIGKILL)

def sample_and_record(self, sizes):
    params = real_sample(self, sizes)
    if PARAMS_DIR:
        path = Path(PARAMS_DIR) / f"rank{os.environ.get('RANK', '0')}.safetensors"
        if not path.exists():
            save_file({k: v.contiguous() for k, v in vars(params).items()}, str(path))
    return params

safeguards.RunGuard.after_step = after_step_then_die
BatchAugmenter.sample = sample_and_record

if __name__ == "__main__":
    from simclr_cli.core.train.loop import pretrain
    from tests.conftest import tiny_config
    settings = json.loads(os.environ["RUN_SETTINGS"])
    resume = sys.argv[3] == "resume"
    pretrain(config=tiny_config(sys.argv[1], sys.argv[2], resume=resume, **settings))
"""


@pytest.fixture(scope="module")
def two_rank_runs(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted 2-rank run, and one killed after its checkpoint at step 4 and resumed.

    Returns:
        ``reference`` and ``resumed``: their model files; ``params``: the folder of each rank's
        augmentation parameters of the first batch after the resume.
    """
    root = tmp_path_factory.mktemp("two_ranks")
    reference = pretrain(config=tiny_config(shapes_dir, root / "reference", **TWO_RANK_SETTINGS))
    script = root / "two_ranks.py"
    script.write_text(TWO_RANK_SCRIPT)
    out, params = root / "run", root / "params"
    params.mkdir()

    def run(mode: str, **variables: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(script), str(shapes_dir), str(out), mode],
            cwd=REPO,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "RUN_SETTINGS": json.dumps(TWO_RANK_SETTINGS),
                **variables,
            },
            capture_output=True,
            timeout=300,
        )

    killed = run("new", KILL_AFTER_STEP="6")
    assert killed.returncode != 0, killed.stderr.decode()[-2000:]
    assert "rank 0 of 2 was killed by SIGKILL" in killed.stderr.decode()
    assert not (out / "model.safetensors").exists()
    checkpoint = read_checkpoint(out / "checkpoint.safetensors")
    assert (checkpoint.position.step, checkpoint.rng_world_size) == (4, 2)
    resumed = run("resume", PARAMS_DIR=str(params))
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    resumed_model = out / "model.safetensors"
    return {"reference": reference.model_path, "resumed": resumed_model, "params": params}


@pytest.mark.slow
def test_pretrain__two_ranks_resume_after_sigkill_is_bitwise_identical(
    two_rank_runs: dict[str, Path],
):
    assert model_files.read_metadata(two_rank_runs["resumed"]).steps == 8
    _assert_bitwise_equal(two_rank_runs["resumed"], two_rank_runs["reference"])


@pytest.mark.slow
def test_pretrain__two_ranks_augment_differently_after_resume(two_rank_runs: dict[str, Path]):
    # The images are all 32 px, so with the same generator state both ranks would draw the same
    # crops, flips and colours for the first batch after the resume.
    rank_0, rank_1 = (_tensors(two_rank_runs["params"] / f"rank{r}.safetensors") for r in (0, 1))
    assert torch.equal(rank_0["source_sizes"], rank_1["source_sizes"])
    assert not torch.equal(rank_0["crops"], rank_1["crops"])
    assert not torch.equal(rank_0["factors"], rank_1["factors"])


def test_stop_signals__second_sigint_interrupts_at_once():
    # The handler in place before (Python's default, or SIG_IGN in a background job) comes back.
    before = signal.getsignal(signal.SIGINT)
    signals = StopSignals()
    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert signals.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signals.uninstall()
    assert signal.getsignal(signal.SIGINT) == before


def test_parameters_are_finite__checks_loss_and_gradients():
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.tensor([0.0, 1.0, 2.0])
    assert parameters_are_finite(torch.tensor(1.0), [weight])
    assert not parameters_are_finite(torch.tensor(float("nan")), [weight])
    weight.grad[1] = float("inf")
    assert not parameters_are_finite(torch.tensor(1.0), [weight])


def _poison_steps(
    monkeypatch: pytest.MonkeyPatch, bad_calls: set[int] | None, factor: float = float("nan")
) -> None:
    """Multiply the loss by ``factor`` (NaN) at the given calls of the contrastive step (every
    call if None)."""
    real = train_module.contrastive_step
    calls = {"count": 0}

    def poisoned(*args, **kwargs):
        calls["count"] += 1
        loss = real(*args, **kwargs)
        if bad_calls is None or calls["count"] in bad_calls:
            return loss * factor
        return loss

    monkeypatch.setattr(train_module, "contrastive_step", poisoned)


def test_pretrain__isolated_nonfinite_steps_are_skipped_and_counted(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _poison_steps(monkeypatch, {2, 3})
    messages: list[str] = []
    result = pretrain(
        config=tiny_config(shapes_dir, tmp_path / "run", max_steps=4),
        progress=lambda event: messages.append(event.text),
    )
    assert result.steps == 4 and result.nonfinite_steps == 2
    assert any("not finite" in text for text in messages)
    assert all(torch.isfinite(v.float()).all() for v in _tensors(result.model_path).values())


def test_pretrain__fp16_scaler_skips_are_counted_apart_from_nonfinite_steps(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A finite loss of about 1e30: its gradients overflow fp16 once scaled (the scaler skips), and
    # more steps in a row than the divergence stop allows do not stop the run.
    skipped = set(range(2, 3 + MAX_NONFINITE_IN_ROW))
    _poison_steps(monkeypatch, skipped, factor=1e30)
    steps = 3 + MAX_NONFINITE_IN_ROW
    result = pretrain(
        config=tiny_config(shapes_dir, tmp_path / "run", max_steps=steps, precision="fp16")
    )
    assert result.steps == steps and result.nonfinite_steps == 0
    # The first steps may be skipped too, while the scale (65536 to start) settles.
    assert result.scaler_skipped_steps >= len(skipped)
    checkpoint = read_checkpoint(result.run_dir / "checkpoint.safetensors")
    assert checkpoint.position.scaler_skipped_steps == result.scaler_skipped_steps
    # Every skip halved the scale, which the checkpoint keeps for a resumed run.
    assert checkpoint.scaler_state["scale"] <= 2.0**16 / 2 ** len(skipped)
    assert all(torch.isfinite(v.float()).all() for v in _tensors(result.model_path).values())


def test_pretrain__fp16_nonfinite_loss_is_still_a_nonfinite_step(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _poison_steps(monkeypatch, {2})
    result = pretrain(
        config=tiny_config(shapes_dir, tmp_path / "run", max_steps=3, precision="fp16")
    )
    assert result.nonfinite_steps == 1


@pytest.mark.slow
def test_pretrain__diverged_run_stops_with_checkpoint_from_before(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _poison_steps(monkeypatch, set(range(2, 100)))
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="--precision fp32") as error:
        pretrain(config=tiny_config(shapes_dir, out, max_steps=8))
    assert "--lr" in str(error.value) and "--resume" in str(error.value)
    checkpoint = read_checkpoint(out / "checkpoint.safetensors")
    assert checkpoint.position.step == 1 + MAX_NONFINITE_IN_ROW
    assert checkpoint.position.nonfinite_steps == MAX_NONFINITE_IN_ROW
    assert all(torch.isfinite(v.float()).all() for v in checkpoint.tensors.values())
    # The remedy: continue from the checkpoint in fp32 (now with finite losses).
    monkeypatch.undo()
    result = pretrain(
        config=tiny_config(shapes_dir, out, max_steps=8, resume=True, precision="fp32")
    )
    assert result.steps == 8 and result.resumed_from == 1 + MAX_NONFINITE_IN_ROW


def test_pretrain__full_disk_keeps_checkpoint_and_says_how_to_continue(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    real_save = safetensors.torch.save_file

    def no_space_for_model(tensors, filename, metadata=None):
        if ".model.safetensors." in Path(filename).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(model_files, "save_file", no_space_for_model)
    out = tmp_path / "run"
    with pytest.raises(DiskFullError, match=r"from step 2 is intact.*--resume"):
        pretrain(config=tiny_config(shapes_dir, out, max_steps=2))
    assert not (out / "model.safetensors").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    result = pretrain(config=tiny_config(shapes_dir, out, max_steps=2, resume=True))
    assert result.model_path.exists() and result.resumed_from == 2


def test_pretrain__time_interval_checkpoints_when_the_period_has_passed(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    clock = {"now": 0.0}

    def eleven_minutes_per_call() -> float:
        clock["now"] += 660.0
        return clock["now"]

    monkeypatch.setattr(safeguards.time, "monotonic", eleven_minutes_per_call)
    messages: list[str] = []
    pretrain(
        config=tiny_config(shapes_dir, tmp_path / "run", max_steps=3, checkpoint_every="10m"),
        progress=lambda event: messages.append(event.text),
    )
    saved = [text for text in messages if text.startswith("checkpoint saved")]
    assert saved == [f"checkpoint saved at step {step}" for step in (1, 2, 3)]
