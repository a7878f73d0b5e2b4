"""`simclr pretrain` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib
import torch
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.serialization import read_metadata

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
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Saved" in result.output and "simclr embed" in result.output
    metadata = read_metadata(out / "model.safetensors")
    assert metadata.head_layers == 2 and metadata.temperature == 0.2 and metadata.steps == 2


def test_pretrain__quiet_prints_one_line(shapes_dir: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["pretrain", str(shapes_dir), "--out", str(tmp_path / "run"), *TINY, "--quiet"]
    )
    assert result.exit_code == 0
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_pretrain__existing_run_needs_force(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_pretrain__help_shows_examples():
    result = runner.invoke(app, ["pretrain", "--help"])
    assert result.exit_code == 0 and "simclr pretrain ./images --out runs/first" in result.output


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
    assert sorted(path.name for path in out.iterdir()) == [
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
    ]
    metadata = read_metadata(out / "model.safetensors")
    # --batch-size is global: 2 steps of 8 images, 4 on each of the 2 ranks.
    assert metadata.steps == 2 and metadata.images_seen == 16
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["loss"] > 0 for line in lines)
    assert tomllib.loads((out / "config.toml").read_text())["pretrain"]["world_size"] == 2


def test_pretrain__error_in_the_ranks_reaches_the_user(shapes_dir: Path, tmp_path: Path):
    # The backbone is built in each rank, so its error travels back from there.
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *TINY, "--cpu-processes", "2"]
    result = runner.invoke(app, [*args, "--backbone", "not_a_model"])
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
    assert tomllib.loads((out / "config.toml").read_text())["pretrain"]["device"] == "cuda"
