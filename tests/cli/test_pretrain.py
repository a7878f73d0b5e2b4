"""`simclr pretrain` through Typer's CliRunner."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from simclr_cli.cli import pretrain as pretrain_module
from simclr_cli.cli.app import app
from simclr_cli.core import _io
from simclr_cli.core.data.synthetic import generate_shapes_dataset
from simclr_cli.core.errors import RunInterrupted
from simclr_cli.core.model.files import read_metadata
from simclr_cli.core.train.checkpoints import read_checkpoint

if sys.version_info >= (3, 11):
    pass
else:  # Python 3.10: the backport, a dependency there.
    pass

runner = CliRunner()

TINY = [
    "--backbone",
    "test_resnet",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--max-steps",
    "2",
    "--workers",
    "0",
]


def test_pretrain__saves_model_and_prints_next_step(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "pretrain",
            str(shapes_dir),
            "--out",
            str(out),
            *TINY,
            "--head",
            "v1",
            "--optimizer",
            "sgd",
            "--temperature",
            "0.3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Saved" in result.output and "simclr embed" in result.output
    metadata = read_metadata(out / "model.safetensors")
    assert metadata.head_layers == 2 and metadata.temperature == 0.3 and metadata.steps == 2


def test_pretrain__quiet_prints_one_line(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY, "--quiet"]
    )
    assert result.exit_code == 0
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_pretrain__json_prints_the_result(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["steps"] == 2 and data["model_path"] == str(out / "model.safetensors")
    assert data["images_seen"] > 0 and data["final_loss"] > 0


def test_pretrain__shows_the_plan_table_before_training(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    # One short table on stderr, before the progress and the summary.
    assert result.stderr.count("Plan") == 1 and "Plan" not in result.stdout
    assert "memory format" in result.stderr and "Saved" in result.stdout
    stem_row = next(line for line in result.stderr.splitlines() if line.startswith("stem"))
    assert stem_row.split()[1:] == ["cifar", "auto"]
    assert result.stderr.index("Plan") < result.stderr.index("Pretraining")


def test_pretrain__quiet_and_json_hide_the_plan_table(shapes_dir: Path, tmp_path: Path):
    args = ["pretrain", str(shapes_dir), *TINY]
    quiet = runner.invoke(app, [*args, "--out", str(tmp_path / "quiet"), "--quiet"])
    as_json = runner.invoke(app, [*args, "--out", str(tmp_path / "json"), "--json"])
    assert quiet.exit_code == 0 and as_json.exit_code == 0, as_json.output
    assert "memory format" not in quiet.output and "memory format" not in as_json.output
    assert json.loads(as_json.stdout)["steps"] == 2


def test_pretrain__failing_run_prints_its_error_without_the_plan(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY])
    assert result.exit_code == 1 and "--force" in result.output
    assert "memory format" not in result.output


def test_pretrain__existing_run_needs_force(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_pretrain__plan_table_shows_peak_rate_and_warmup(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--lr", "0.075"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stderr.splitlines() if line}
    # --lr 0.075 with sqrt scaling is the paper's: 0.075 x sqrt(8) at batch 8.
    assert rows["learning"][1:3] == ["0.2121", "peak"], result.stderr
    assert rows["warm-up"][:2] == ["0", "steps"]


def test_pretrain__warmup_epochs_and_fraction_together_exit_2(shapes_dir: Path, tmp_path: Path):
    args = ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY]
    result = runner.invoke(app, [*args, "--warmup-epochs", "10", "--warmup-fraction", "0.1"])
    assert result.exit_code == 2 and "give one" in result.output
    assert "--warmup-epochs" in result.output


def test_pretrain__help_states_the_warmup_rule():
    result = runner.invoke(app, ["pretrain", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if "│ --warmup-epochs " in line)
    assert "When given it decides" in line and "else --warmup-fraction" in line


def test_pretrain__help_shows_examples():
    result = runner.invoke(app, ["pretrain", "--help"])
    assert result.exit_code == 0 and "simclr pretrain ./images --out runs/first" in result.output


def test_pretrain__resume_continues_and_refuses_other_settings(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY]
    assert runner.invoke(app, [*args, "--quiet", "--checkpoint-every", "1"]).exit_code == 0
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "resumed from step 2" in again.output
    other = runner.invoke(app, [*args, "--resume", "--seed", "7", "--temperature", "0.3"])
    assert other.exit_code == 1
    assert "seed 0 -> 7" in other.output and "temperature 0.1 -> 0.3" in other.output


def test_pretrain__resume_and_force_together_are_a_usage_error(shapes_dir: Path, tmp_path: Path):
    args = ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY]
    result = runner.invoke(app, [*args, "--resume", "--force"])
    assert result.exit_code == 2 and "give one" in result.output
    result = runner.invoke(app, [*args, "--checkpoint-every", "soon"])
    assert result.exit_code == 2 and "--checkpoint-every" in result.output


@pytest.mark.slow
def test_pretrain__bad_images_are_counted_in_the_summary(tmp_path: Path, shapes_dir: Path):
    data = tmp_path / "data"
    data.mkdir()
    for path in sorted(shapes_dir.rglob("*.png"))[:8]:
        (data / path.name).write_bytes(path.read_bytes())
    (data / "empty.jpg").write_bytes(b"")
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", str(data), "--out", str(out), *TINY, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 unreadable images skipped" in result.output and "skipped.txt" in result.output
    failed = runner.invoke(
        app, ["pretrain", str(data), "--out", str(tmp_path / "r2"), *TINY, "--on-bad-image", "fail"]
    )
    assert failed.exit_code == 1 and "empty.jpg: empty file" in failed.output


def test_pretrain__interrupted_run_exits_with_signal_code_and_resume_hint(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def stopped(**_: object) -> None:
        raise RunInterrupted(
            "stopped by SIGINT after step 3 of 9; run the same command with --resume",
            signal_number=signal.SIGINT,
            step=3,
            checkpoint=tmp_path / "checkpoint.safetensors",
        )

    monkeypatch.setattr(pretrain_module, "pretrain", stopped)
    result = runner.invoke(app, ["pretrain", str(shapes_dir), "--out", str(tmp_path / "r")])
    assert result.exit_code == 130 and "--resume" in result.output


@pytest.mark.slow
def test_pretrain__sigterm_to_the_process_group_checkpoints_and_exits_143(
    shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "simclr_cli", "pretrain", str(shapes_dir), "--out", str(out)]
    command += [*TINY[:-4], "--max-steps", "100000", "--workers", "1", "--log-every", "1"]
    process = subprocess.Popen(
        command,
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Its own process group, as a scheduler's job would have.
    )
    deadline = time.monotonic() + 240
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    # The data worker gets the signal too; it ignores it and the main process checkpoints.
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 143, stderr.decode()[-2000:]
    assert "--resume" in stderr.decode()
    assert read_checkpoint(out / "checkpoint.safetensors").position.step >= 2


def test_pretrain__accumulate_not_dividing_batch_is_a_usage_error(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app,
        ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY, "--accumulate", "3"],
    )
    assert result.exit_code == 2
    assert "not divisible by --accumulate 3" in result.stderr


@pytest.mark.slow
def test_pretrain__cpu_processes_train_and_save_one_model(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "pretrain",
            str(shapes_dir),
            "--out",
            str(out),
            *TINY,
            "--cpu-processes",
            "2",
            "--log-every",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Saved" in result.output
    # One set of files, written by rank 0 alone.
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoint.safetensors",
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
    ]
    metadata = read_metadata(out / "model.safetensors")
    # --batch-size is global: 2 steps of 8 images, 4 on each of the 2 ranks.
    assert metadata.steps == 2 and metadata.images_seen == 16
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["loss"] > 0 for line in lines)
    assert _io.loads((out / "config.toml").read_text())["pretrain"]["world_size"] == 2


@pytest.mark.slow
def test_pretrain__cpu_processes_with_accumulate(shapes_dir: Path, tmp_path: Path):
    # Gradient caching on 2 ranks: 2 micro-batches of 2 images on each, one model written.
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--cpu-processes", "2"]
    result = runner.invoke(app, [*args, "--accumulate", "2", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    metadata = read_metadata(out / "model.safetensors")
    assert metadata.steps == 2 and metadata.images_seen == 16
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["loss"] > 0 for line in lines)
    assert _io.loads((out / "config.toml").read_text())["pretrain"]["accumulate"] == 2


@pytest.mark.slow
def test_pretrain__error_in_the_ranks_reaches_the_user(shapes_dir: Path, tmp_path: Path):
    # The backbone is built in each rank, so its error travels back from there (with --stem
    # imagenet the plan needs no look at the model's class, which would find it earlier).
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--cpu-processes", "2"]
    result = runner.invoke(app, [*args, "--backbone", "not_a_model", "--stem", "imagenet"])
    assert result.exit_code == 1
    assert "unknown backbone 'not_a_model'" in result.output
    assert "Traceback" not in result.output and "rank" not in result.output


def test_pretrain__full_run_folder_is_refused_before_processes_start(
    shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--cpu-processes", "2"]
    )
    assert result.exit_code == 1 and "--force" in result.output
    assert [path.name for path in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "2", "--cpu-processes", "2"], "cannot be used together"),
        (["--cpu-processes", "3"], "does not split evenly over 3 processes"),
        (["--gpus", "two"], "must be a number or all"),
    ],
)
def test_pretrain__bad_process_flags_exit_2_before_starting(
    shapes_dir: Path, tmp_path: Path, flags: list[str], message: str
):
    out = tmp_path / "run"
    result = runner.invoke(app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY, *flags])
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_pretrain__gpus_without_cuda_exit_2(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY, "--gpus", "2"]
    )
    assert result.exit_code == 2 and "needs CUDA GPUs" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_pretrain__two_gpus_train_and_save_one_model(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--gpus", "2", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    metadata = read_metadata(out / "model.safetensors")
    assert metadata.steps == 2 and metadata.images_seen == 16
    assert _io.loads((out / "config.toml").read_text())["pretrain"]["device"] == "cuda"


def test_pretrain__cache_and_compile_flags_reach_the_run(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--cache", "off", "--no-compile"],
    )
    assert result.exit_code == 0, result.output
    assert "data wait" in result.stdout
    config = (out / "config.toml").read_text()
    assert 'cache = "off"' in config and "compile = false" in config


def test_pretrain__unknown_cache_mode_is_a_usage_error(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(tmp_path), "--cache", "disk"]
    )
    assert result.exit_code == 2


def test_pretrain__second_command_on_the_same_out_is_refused_naming_the_first(
    shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "simclr_cli", "pretrain", str(shapes_dir), "--out", str(out)]
    first = subprocess.Popen(
        [*command, *TINY[:-4], "--max-steps", "100000", "--workers", "0", "--quiet"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        lock = out / ".lock"
        while time.monotonic() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read().decode()[-2000:] if first.stderr else ""
        for processes in ([], ["--cpu-processes", "2"]):
            second = runner.invoke(
                app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--resume", *processes]
            )
            assert second.exit_code == 1, second.output
            lines = second.output.strip().splitlines()
            assert len(lines) == 1 and f"being written by pid {first.pid} on " in lines[0]
            assert "since" in lines[0]
    finally:
        first.kill()
        first.wait()
    # A killed run leaves no lock behind: the folder continues at once.
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--force", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert not (out / ".lock").exists()


#: The pretrain command line in argv, whose rank 0 dies by SIGKILL after step 6 (checkpoint at
#: 4). Spawned ranks import this script as their main module, so the patch reaches them.
KILL_RANK_0_AFTER_STEP_6 = """
import os, signal, sys
from simclr_cli.core.train import safeguards

real_after_step = safeguards.RunGuard.after_step

def after_step_then_die(self, *, step, **kwargs):
    real_after_step(self, step=step, **kwargs)
    if self.is_main and step == 6:
        os.kill(os.getpid(), signal.SIGKILL)

safeguards.RunGuard.after_step = after_step_then_die

if __name__ == "__main__":
    from simclr_cli.cli.app import app
    app(sys.argv[1:], prog_name="simclr")
"""


def _logged_steps(out: Path) -> tuple[list[int], list[int]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    with (out / "metrics.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    return [json.loads(line)["step"] for line in lines], [int(row["step"]) for row in rows]


@pytest.mark.slow
def test_pretrain__cpu_processes_resume_after_sigkill(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    script = tmp_path / "kill_rank_0.py"
    script.write_text(KILL_RANK_0_AFTER_STEP_6)
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY[:-4], "--max-steps", "8"]
    args += ["--workers", "0", "--checkpoint-every", "4", "--log-every", "1", "--logger", "csv"]
    args += ["--cpu-processes", "2"]
    killed = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == 1, killed.stderr.decode()[-2000:]
    assert "rank 0 of 2 was killed by SIGKILL" in killed.stderr.decode()
    assert read_checkpoint(out / "checkpoint.safetensors").position.step == 4
    assert _logged_steps(out) == ([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    # The same command with --resume continues from step 4; each step is logged once.
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from step 4" in resumed.output
    assert read_metadata(out / "model.safetensors").steps == 8
    assert _logged_steps(out) == (list(range(1, 9)), list(range(1, 9)))
    assert not (out / ".lock").exists()


def test_pretrain__precision_fp16_runs_on_the_cpu_with_a_loss_scaler(
    shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--precision", "fp16", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["steps"] == 2 and report["nonfinite_steps"] == 0
    assert "scaler_skipped_steps" in report
    checkpoint = read_checkpoint(out / "checkpoint.safetensors")
    assert checkpoint.settings["precision"] == "fp16" and checkpoint.scaler_state["scale"] > 0
    assert all(torch.isfinite(v.float()).all() for v in checkpoint.tensors.values())


def test_pretrain__several_inputs_and_a_file_list_from_standard_input(
    shapes_dir: Path, tmp_path: Path
):
    squares = sorted((shapes_dir / "square").iterdir())[:3]
    out = tmp_path / "run"
    listed = "\n".join([*(str(p) for p in squares), str(tmp_path / "gone.png")]) + "\n"
    arguments = [str(shapes_dir / "circle"), str(shapes_dir / "stripes"), "--file-list", "-"]
    result = runner.invoke(
        app,
        ["pretrain", *arguments, "--out", str(out), *TINY, "--max-steps", "1", "-q"],
        input=listed,
    )
    assert result.exit_code == 0, result.output
    skipped = (out / "skipped.txt").read_text()
    assert "gone.png\tfile not found" in skipped
    document = _io.loads((out / "config.toml").read_text())["pretrain"]
    assert len(document["data"]) == 2 and "file_list" not in document


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 tiny images of 32 px (6 shape classes of 100)."""
    root = tmp_path_factory.mktemp("many") / "images"
    return generate_shapes_dataset(root, images_per_class=100, size=32, seed=0)


@pytest.mark.slow
def test_pretrain__cpu_processes_cache_the_images_once_per_machine(
    many_images: Path, tmp_path: Path
):
    # RSS is dominated by each process's own torch (hundreds of MB against a 2 MB cache), so
    # the memory compared is the cache's: the decoded images all ranks hold, from metrics.jsonl.
    # 16 px views of images stored at 24 px, batches of 200: an epoch is 3 steps, and step 10
    # logs the cache after 3 epochs (when caches per rank that need every image would hold
    # about 90% of the images each).
    args = ["--backbone", "test_resnet", "--image-size", "16", "--batch-size", "200"]
    args += ["--max-steps", "10", "--log-every", "10", "--workers", "1"]
    cached = {}
    for processes in ([], ["--cpu-processes", "2"]):
        out = tmp_path / f"run{len(processes)}"
        result = runner.invoke(
            app, ["pretrain", str(many_images), "--out", str(out), *args, *processes]
        )
        assert result.exit_code == 0, result.output
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
        cached[len(processes)] = record["cache_bytes"]
    assert cached[0] == 600 * 3 * 24 * 24
    assert cached[2] <= 1.3 * cached[0]
