"""`simclr visualize-aug` through Typer's CliRunner, and its key loop through a pseudo terminal."""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.model.files import read_header
from simclr_cli.core.viz.preview_terminal import minimum_columns

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[2]


def _invoke(*arguments: str, columns: int = 120):
    return runner.invoke(app, ["visualize-aug", *arguments], env={"COLUMNS": str(columns)})


def _error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_visualize_aug__save_writes_png_and_says_so(shapes_dir: Path, tmp_path: Path):
    grid = tmp_path / "grid.png"
    result = _invoke(str(shapes_dir), "--pairs", "2", "--image-size", "32", "--save", str(grid))
    assert result.exit_code == 0, result.output
    assert "saved 2 pairs to" in result.output and "512x" in result.output
    with Image.open(grid) as image:
        assert image.width == 512


def test_visualize_aug__quiet_with_save_writes_only_the_file(shapes_dir: Path, tmp_path: Path):
    grid = tmp_path / "grid.png"
    result = _invoke(str(shapes_dir), "-n", "2", "--image-size", "32", "--save", str(grid), "-q")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "" and grid.is_file()


def test_visualize_aug__json_lists_the_parameters_of_every_view(shapes_dir: Path):
    result = _invoke(str(shapes_dir), "-n", "3", "--image-size", "32", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["image_size"] == 32 and data["preset"] == "cifar" and len(data["pairs"]) == 3
    views = [view for pair in data["pairs"] for view in pair["views"]]
    assert len(views) == 6 and all(len(view["crop"]) == 4 for view in views)
    # Two views of one image are drawn independently.
    assert data["pairs"][0]["views"][0] != data["pairs"][0]["views"][1]


def test_visualize_aug__not_a_terminal_prints_a_plain_message(shapes_dir: Path):
    result = _invoke(str(shapes_dir), "--image-size", "32")
    assert result.exit_code == 0
    assert "not a terminal" in result.output and "--save" in result.output
    assert "\x1b" not in result.output


def test_visualize_aug__forced_protocols_draw_to_any_output(shapes_dir: Path):
    truecolor = _invoke(str(shapes_dir), "-n", "1", "--image-size", "32", "--protocol", "truecolor")
    assert truecolor.exit_code == 0, truecolor.output
    assert "▀" in truecolor.output and "\x1b[38;2;" in truecolor.output
    assert "view A" in truecolor.output and "preset cifar" in truecolor.output
    palette = _invoke(str(shapes_dir), "-n", "1", "--image-size", "32", "--protocol", "256")
    assert "\x1b[38;5;" in palette.output and "\x1b[38;2;" not in palette.output.split("\n", 1)[1]
    kitty = _invoke(str(shapes_dir), "-n", "1", "--image-size", "32", "--protocol", "kitty")
    assert kitty.output.count("\x1b_Ga=T,f=100") == 1


def test_visualize_aug__model_settings_are_used(shapes_dir: Path, trained_model: Path):
    result = _invoke(str(shapes_dir), "-n", "1", "--model", str(trained_model), "--protocol", "256")
    assert result.exit_code == 0, result.output
    assert "preset cifar, colour strength 0.5, 32 px views (from model.safetensors)" in (
        result.output
    )


@pytest.mark.parametrize("case", ["missing", "empty", "not_image", "bare_model"])
def test_visualize_aug__bad_input_is_one_line_and_exit_1(
    case: str, shapes_dir: Path, trained_model: Path, tmp_path: Path
):
    arguments = [str(shapes_dir), "--save", str(tmp_path / "g.png")]
    expected = ""
    if case == "missing":
        arguments[0], expected = str(tmp_path / "nowhere.jpg"), "does not exist"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        arguments[0], expected = str(tmp_path / "empty"), "holds no images"
    elif case == "not_image":
        (tmp_path / "notes.jpg").write_text("hello")
        arguments[0], expected = str(tmp_path / "notes.jpg"), "not an image"
    else:
        raw = read_header(trained_model)["__metadata__"]
        stripped = {k: v for k, v in raw.items() if k not in ("preset", "color_strength")}
        model = tmp_path / "bare.safetensors"
        save_file({"backbone.x": torch.zeros(1)}, str(model), metadata=stripped)
        arguments += ["--model", str(model)]
        expected = "records no augmentation settings"
    result = _invoke(*arguments)
    assert result.exit_code == 1
    assert expected in _error_line(result)
    assert not (tmp_path / "g.png").exists()


def test_visualize_aug__narrow_terminal_says_how_wide_it_must_be(shapes_dir: Path):
    needed = minimum_columns()
    result = _invoke(str(shapes_dir), "--protocol", "truecolor", columns=needed - 10)
    assert result.exit_code == 1
    assert f"at least {needed}" in _error_line(result)


def test_visualize_aug__interactive_needs_a_terminal(shapes_dir: Path):
    result = _invoke(str(shapes_dir), "--interactive")
    assert result.exit_code == 2
    assert "needs a terminal" in _error_line(result)


def _read_until(descriptor: int, needle: str, *, since: int, buffer: bytearray) -> str:
    """Read from the terminal until ``needle`` appears after offset ``since``; return the text."""
    deadline = time.monotonic() + 180
    while needle.encode() not in buffer[since:]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            tail = buffer[-2000:].decode("utf-8", "replace")
            raise AssertionError(f"{needle!r} never appeared; output ended with {tail!r}")
        ready, _, _ = select.select([descriptor], [], [], min(remaining, 1.0))
        if ready:
            try:
                chunk = os.read(descriptor, 65536)
            except OSError:  # The child closed the terminal.
                chunk = b""
            if not chunk:
                raise AssertionError(f"{needle!r} never appeared before the end of output")
            buffer.extend(chunk)
    return buffer[since:].decode("utf-8", "replace")


@pytest.mark.slow
def test_visualize_aug__interactive_keys_through_a_pseudo_terminal(
    shapes_dir: Path, tmp_path: Path
):
    fcntl = pytest.importorskip("fcntl")
    termios = pytest.importorskip("termios")
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 120, 0, 0))
    drop = ("COLUMNS", "LINES", "TMUX", "KITTY_WINDOW_ID", "TERM_PROGRAM", "LC_TERMINAL")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"TERM": "xterm-256color", "COLORTERM": "truecolor", "PYTHONPATH": str(REPO_ROOT)})
    saved = tmp_path / "keys.png"
    command = [sys.executable, "-m", "simclr_cli", "visualize-aug", str(shapes_dir)]
    command += ["--pairs", "2", "--image-size", "32", "--interactive", "--save", str(saved)]
    process = subprocess.Popen(
        command, stdin=child, stdout=child, stderr=child, cwd=REPO_ROOT, env=env
    )
    os.close(child)
    buffer = bytearray()
    try:
        frame = _read_until(main, "q quit", since=0, buffer=buffer)
        assert "\x1b[?1049h" in frame and "\x1b[38;2;" in frame and "▀" in frame
        assert "colour strength 0.5" in frame and "view A" in frame

        def press(key: str, status: str) -> str:
            # A frame ends with the help line, after the status line: wait for both, so the
            # next key's output is not confused with the rest of this frame.
            start = len(buffer)
            os.write(main, key.encode())
            text = _read_until(main, f"{status}\r\nspace new views", since=start, buffer=buffer)
            return text + _read_until(main, "q quit", since=len(buffer) - 10, buffer=buffer)

        assert "\x1b[H\x1b[2J" in press("+", "colour strength 0.6")
        press("-", "colour strength 0.5")
        assert "preset imagenet" in press("p", "preset imagenet")
        press(" ", "new views (draw 2)")
        assert "saved " in press("s", "px)")
        assert saved.exists()
        start = len(buffer)
        os.write(main, b"q")
        assert process.wait(timeout=60) == 0
        # Some systems drop unread output when the child's side closes; the exit code and the
        # saved file already show that the loop ended cleanly.
        with contextlib.suppress(AssertionError):
            _read_until(main, "\x1b[?1049l", since=start, buffer=buffer)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
