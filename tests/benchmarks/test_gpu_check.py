"""benchmarks/gpu_check.sh: its one line without CUDA, and the helpers it runs on a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import TINY_BACKBONE

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module (benchmarks/ is a folder of scripts)."""
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Registered by name, so that its functions pickle for the pool of make_images.
    sys.modules["gpu_check"] = module
    yield module
    del sys.modules["gpu_check"]


def test_gpu_check__without_cuda_says_so_in_one_line_and_exits_0(tmp_path: Path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this checks the machine without CUDA everywhere.
    out = tmp_path / "figures.md"
    completed = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], completed.stdout
    assert completed.stderr == ""
    assert out.read_text().splitlines() == lines


def test_gpu_check__without_outfile_prints_usage_and_exits_2():
    completed = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh")], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "usage: benchmarks/gpu_check.sh OUTFILE" in completed.stderr


def test_make_images__writes_jpeg_photos_of_256_px_and_above(gpu_check, tmp_path: Path):
    gpu_check.make_images(tmp_path / "images", count=5, seed=0)
    paths = sorted((tmp_path / "images").glob("*.jpg"))
    assert len(paths) == 5
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert min(image.size) >= 256 and max(image.size) <= 512


def test_run_pretrain__prints_speed_data_wait_and_memory(
    gpu_check, shapes_dir: Path, tmp_path: Path, capsys
):
    arguments = [str(shapes_dir), "--out", str(tmp_path / "run"), "--backbone", TINY_BACKBONE]
    arguments += ["--image-size", "32", "--batch-size", "8", "--max-steps", "3", "--workers", "0"]
    status = gpu_check.run_pretrain("tiny", [*arguments, "--log-every", "1", "--precision", "fp32"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "tiny: 3 steps, 24 images" in printed
    assert "after the first log window" in printed  # windows 2 and 3 of metrics.jsonl
    assert "data wait:" in printed and "peak GPU memory:" in printed
    result = json.loads(printed.split("result: ", 1)[1])
    assert result["steps"] == 3 and Path(result["model_path"]).exists()


def test_run_pretrain__failure_prints_the_commands_error_line(
    gpu_check, shapes_dir, tmp_path, capsys
):
    arguments = [str(shapes_dir), "--out", str(tmp_path / "run"), "--batch-size", "0"]
    status = gpu_check.run_pretrain("broken", arguments)
    printed = capsys.readouterr().out.splitlines()
    assert status == 2
    assert printed[-1].startswith("broken: FAILED (exit 2): ")
    assert "--batch-size" in printed[-1]
