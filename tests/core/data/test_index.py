"""The file index: flat arrays of paths, the parallel header scan, and the cache between runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from simclr_cli.core.data import index as index_module
from simclr_cli.core.data.index import (
    FileIndex,
    index_cache_folder,
    index_training_images,
    scan_index,
    walk_images,
)
from simclr_cli.core.errors import ConfigError, DataError
from simclr_cli.core.progress import ProgressEvent

#: The smallest JPEG start the header scan accepts (it reads the first bytes only).
JPEG_START = b"\xff\xd8\xff\xe0" + bytes(12)


def _touch(path: Path, data: bytes = JPEG_START) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _settle(root: Path) -> None:
    """Date every folder an hour back, as if the folder had not changed for a while."""
    past = os.stat(root).st_mtime_ns - 3600 * 10**9
    for folder, _, _ in os.walk(root):
        os.utime(folder, ns=(past, past))


def _old_find_images(root: Path) -> list[Path]:
    """What find_images returned before the index: os.walk, then sorted() over the paths."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in index_module.IMAGE_SUFFIXES:
                found.append(path)
    return sorted(found)


def _nested_folder(root: Path) -> Path:
    names = [
        "b/2.jpg",
        "b/10.jpg",
        "a.jpg",
        "a/x.png",
        "a/b/c.JPEG",
        "a-b/y.webp",
        "A/z.jpg",
        "é/ü.jpg",
        "deep/er/and/deeper/f.tif",
        "z.bmp",
        "notes.txt",
        ".hidden/h.jpg",
        ".h.jpg",
        "jpg",
        "c/d.jpg.txt",
    ]
    for name in names:
        _touch(root / name)
    (root / "link").symlink_to(root / "a", target_is_directory=True)
    return root


def test_walk_images__order_equals_sorted_order_of_the_old_find_images(tmp_path: Path):
    root = _nested_folder(tmp_path / "data")
    index, stamps = walk_images(root)
    assert list(index) == _old_find_images(root)
    assert [p.relative_to(root).as_posix() for p in index][:3] == [
        "A/z.jpg",
        "a/b/c.JPEG",
        "a/x.png",
    ]
    # Every folder the walk read is stamped, the root first, the link to a folder not entered.
    folders = [os.fsdecode(stamps.folders.name(i)) for i in range(len(stamps.folders))]
    assert folders[0] == "" and "link" not in folders and "deep/er/and/deeper" in folders
    assert len(stamps.mtimes) == len(folders)


def test_file_index__round_trip_through_npy_files(tmp_path: Path):
    names = ["a/1.jpg", "b/é.png", "c/\udcff.jpg", "d.jpg"]  # The third is not UTF-8 on disk.
    index = FileIndex.from_names(tmp_path, names)
    index.save(tmp_path, "paths")
    loaded = FileIndex.load(tmp_path, "paths", root=tmp_path)
    assert list(loaded) == [tmp_path / name for name in names]
    assert loaded[-1] == tmp_path / "d.jpg" and loaded[2] == tmp_path / "c/\udcff.jpg"
    assert list(loaded[1:3]) == [tmp_path / "b/é.png", tmp_path / "c/\udcff.jpg"]
    assert list(loaded.select(np.array([3, 0]))) == [tmp_path / "d.jpg", tmp_path / "a/1.jpg"]
    with pytest.raises(IndexError):
        loaded[4]
    # A worker started by spawn receives the arrays, not a list of paths.
    assert list(pickle.loads(pickle.dumps(loaded))) == list(loaded)


def test_file_index__refuses_offsets_outside_the_buffer():
    with pytest.raises(ValueError, match="offsets"):
        FileIndex(Path(), np.zeros(3, dtype=np.uint8), np.array([0, 5], dtype=np.int64))


def test_file_index__from_paths_keeps_whole_paths(tmp_path: Path):
    paths = [tmp_path / "x.jpg", Path("relative/y.png")]
    assert list(FileIndex.from_paths(paths)) == paths
    index = FileIndex.from_paths(paths)
    assert FileIndex.from_paths(index) is index


def test_file_index__memory_under_100_bytes_a_file():
    # A photo collection's names: year/month folders and camera file names.
    names = [
        f"{2000 + i // 120000}/{i // 10000 % 12 + 1:02d}/IMG_{i:07d}.JPG" for i in range(50_000)
    ]
    index = FileIndex.from_names(Path("/data/photos"), names)
    assert index.nbytes / len(index) < 100
    assert index.nbytes == sum(map(len, names)) + 8 * (len(names) + 1)


def test_scan_index__finds_bad_files_in_order_and_reports_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for number in range(40):
        _touch(tmp_path / f"{number:03d}.jpg", b"" if number % 13 == 0 else JPEG_START)
    index, _ = walk_images(tmp_path)
    monkeypatch.setattr(index_module, "PROGRESS_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(index_module, "SCAN_CHUNK", 4)
    events: list[ProgressEvent] = []
    bad = scan_index(index, progress=events.append, threads=3)
    assert bad == [(0, "empty file"), (13, "empty file"), (26, "empty file"), (39, "empty file")]
    kinds = [event.kind for event in events if event.task == "scan"]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert events[-1].completed == 40 and events[-1].metrics["files_per_second"] > 0


def test_scan_index__quick_scan_shows_no_progress(tmp_path: Path):
    _touch(tmp_path / "one.jpg")
    events: list[ProgressEvent] = []
    scan_index(walk_images(tmp_path)[0], progress=events.append)
    assert events == []


def _spy_on_headers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    check = index_module.check_image_header

    def spy(path: str) -> str | None:
        read.append(path)
        return check(path)

    monkeypatch.setattr(index_module, "check_image_header", spy)
    return read


def test_index_training_images__second_run_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for number in range(6):
        _touch(root / f"class{number % 2}" / f"{number}.jpg")
    _touch(root / "class0" / "empty.jpg", b"")
    _settle(root)
    read = _spy_on_headers(monkeypatch)
    first = index_training_images(root)
    assert not first.cached and len(read) == 7
    assert [bad.reason for bad in first.bad] == ["empty file"]
    second = index_training_images(root)
    assert second.cached and len(read) == 7  # No header was read again.
    assert list(second.images) == list(first.images) and second.bad == first.bad
    assert (index_cache_folder(root) / "paths.npy").is_file()


@pytest.mark.parametrize("change", ["add", "remove", "add_folder"])
def test_index_training_images__an_added_or_removed_file_is_noticed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
):
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for number in range(4):
        _touch(root / "deep" / "folder" / f"{number}.jpg")
    _settle(root)
    before = list(index_training_images(root).images)
    if change == "add":
        _touch(root / "deep" / "folder" / "new.jpg")
    elif change == "remove":
        (root / "deep" / "folder" / "2.jpg").unlink()
    else:
        _touch(root / "deep" / "another" / "new.jpg")
    after = index_training_images(root)
    assert not after.cached
    assert list(after.images) == _old_find_images(root) != before


def test_index_training_images__recent_changes_are_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A folder modified within the file system's clock tick of the listing could change again
    # unseen: it is listed again next time.
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    _touch(tmp_path / "data" / "fresh.jpg")
    index_training_images(tmp_path / "data")
    assert not index_training_images(tmp_path / "data").cached


def test_index_training_images__damaged_cache_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    _touch(root / "a.jpg")
    _touch(root / "b.jpg")
    _settle(root)
    index_training_images(root)
    (index_cache_folder(root) / "paths_offsets.npy").write_bytes(b"not an array")
    again = index_training_images(root)
    assert not again.cached and [p.name for p in again.images] == ["a.jpg", "b.jpg"]
    assert index_training_images(root).cached  # Rewritten by the rebuild.


def test_index_training_images__cache_off_and_bad_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    _touch(tmp_path / "data" / "a.jpg")
    _settle(tmp_path / "data")
    monkeypatch.setenv("SIMCLR_CACHE_DIR", "off")
    assert index_cache_folder(tmp_path / "data") is None
    assert not index_training_images(tmp_path / "data").cached
    assert not index_training_images(tmp_path / "data").cached
    monkeypatch.setenv("SIMCLR_CACHE_DIR", "relative")
    with pytest.raises(ConfigError, match="SIMCLR_CACHE_DIR"):
        index_training_images(tmp_path / "data")


def test_index_training_images__empty_and_missing_folders(tmp_path: Path):
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(DataError, match="holds no images"):
        index_training_images(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        index_training_images(tmp_path / "nope")
