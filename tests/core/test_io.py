"""The shared file helpers: atomic writes, PNG, TOML and the one duration grammar."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from PIL import Image

from simclr_cli.core import _io
from simclr_cli.core._io import (
    CheckpointInterval,
    atomic_write,
    check_png_path,
    format_duration,
    parse_duration,
    parse_interval,
    parse_size,
    write_png,
)
from simclr_cli.core.errors import ConfigError, DataError, DiskFullError


def test_atomic_write__replaces_the_file_with_the_umask_mode(tmp_path: Path):
    path = tmp_path / "sub" / "table.txt"
    umask = os.umask(0o027)
    try:
        atomic_write(path, lambda temporary: Path(temporary).write_text("new"))
    finally:
        os.umask(umask)
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["table.txt"]


def test_atomic_write__full_disk_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "table.txt"
    path.write_text("old")

    def full_disk(temporary: str) -> None:
        Path(temporary).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"previous table\.txt is intact"):
        atomic_write(path, full_disk)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.txt"]


def test_write_png__pixels_and_umask_mode(tmp_path: Path):
    image = Image.new("RGB", (4, 3), (10, 200, 30))
    path = tmp_path / "picture.png"
    umask = os.umask(0o022)
    try:
        write_png(image, path)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size == (4, 3)
        assert written.convert("RGB").getpixel((3, 2)) == (10, 200, 30)


def test_write_png__unwritable_place_is_a_data_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write"):
        write_png(Image.new("RGB", (2, 2)), blocker / "picture.png")


def test_check_png_path__names_the_flag():
    assert check_png_path(Path("map.PNG"), flag="--map") == Path("map.PNG")
    with pytest.raises(DataError, match=r"--save grid\.jpg: give a file name ending in \.png"):
        check_png_path(Path("grid.jpg"), flag="--save")


def test_dumps__round_trips_through_loads():
    tables = {
        "pretrain": {"batch_size": 8, "lr": 0.5, "force": True, "name": 'a "b"', "sizes": [1, 2]},
        "plan": {"steps": 4, "skipped": None},
    }
    text = _io.dumps(tables)
    assert _io.loads(text) == {
        "pretrain": {"batch_size": 8, "lr": 0.5, "force": True, "name": 'a "b"', "sizes": [1, 2]},
        "plan": {"steps": 4},
    }


def test_loads__bad_text_is_a_value_error():
    with pytest.raises(ValueError):
        _io.loads("key = ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("265s", 265),
        ("90s", 90),
        ("10m", 600),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1d", 86400),
        ("90", 90),
        ("1.5m", 90),
        (45, 45),
    ],
)
def test_parse_duration__units(text: str | int, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "0s", "5m-3s", "1h30", "-3"])
def test_parse_duration__bad_text_names_the_flag(text: str):
    with pytest.raises(ConfigError, match="--time-budget"):
        parse_duration(text)


def test_parse_duration__error_names_the_flag_given():
    with pytest.raises(ConfigError, match="--budget 'soon' is not a duration"):
        parse_duration("soon", flag="--budget")


def test_format_duration__minutes_and_hours_read_back():
    assert format_duration(265) == "4m25s" and format_duration(7260) == "2h01m00s"
    assert parse_duration(format_duration(7260)) == 7260


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        ("500", CheckpointInterval(steps=500)),
        (500, CheckpointInterval(steps=500)),
        ("90s", CheckpointInterval(seconds=90.0)),
        ("10m", CheckpointInterval(seconds=600.0)),
        ("2h", CheckpointInterval(seconds=7200.0)),
        ("1.5h", CheckpointInterval(seconds=5400.0)),
        ("1h30m", CheckpointInterval(seconds=5400.0)),
    ],
)
def test_parse_interval__steps_and_durations(text: str | int, interval: CheckpointInterval):
    assert parse_interval(text) == interval


@pytest.mark.parametrize("text", ["0", "ten", "-3", "2.5", "0s", "1h30", "10x", ""])
def test_parse_interval__bad_text_names_the_flag(text: str):
    with pytest.raises(ConfigError, match="--checkpoint-every"):
        parse_interval(text)


@pytest.mark.parametrize("text", ["1h30m", "90s", "10m", "2h"])
def test_parse_interval__reads_durations_as_parse_duration_does(text: str):
    assert parse_interval(text).seconds == parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GB", 10**9), ("500MB", 5 * 10**8), ("2GiB", 2 * 1024**3), ("2e9", 2 * 10**9), (4096, 4096)],
)
def test_parse_size__units(text: str | int, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["big", "1XB", "0", "-1GB", ""])
def test_parse_size__bad_text_says_how_to_write_it(text: str):
    with pytest.raises(ConfigError, match="--shard-size"):
        parse_size(text)
