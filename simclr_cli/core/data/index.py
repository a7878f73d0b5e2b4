"""The file index of an image folder: flat arrays of paths, scanned in parallel, cached.

A Python list of a million ``Path`` objects takes a few hundred bytes a file, and every data
loader worker that reads it writes the objects' reference counts, so the pages it shares with the
main process after the fork are copied one by one (the copy-on-read growth of big lists in
PyTorch workers). ``FileIndex`` keeps the paths, relative to their folder, as one uint8 buffer of
their bytes and an int64 array of offsets: the length of the relative path plus 8 bytes a file,
in two objects however many files there are, which workers read without writing.

``walk_images`` lists a folder with ``os.scandir``, sorting each folder's entries by name, which
gives the order of ``sorted()`` over the paths (``Path`` objects compare part by part) without a
global sort. ``scan_index`` reads every file's first bytes on a pool of threads (the reads release
the GIL) and reports progress when it takes more than a second. ``index_training_images`` does
both and keeps the result in ``SIMCLR_CACHE_DIR/index/KEY/``, KEY naming the resolved folder,
beside the modification time of every folder listed: a later run over the same folder stats the
folders (not the files) and, if none changed, loads the index and the bad files from there. Adding,
removing or renaming a file changes its folder's modification time; rewriting a file in place
does not, so such a file is found bad only when it is decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np

from .. import _env
from ..errors import DataError
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .checks import BadImage, check_image_header

#: File suffixes read as images, compared case-insensitively.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
#: Version of the cache's layout; a cache of another version is rebuilt.
CACHE_FORMAT = 1
#: A folder modified this close to its listing may change again within the same tick of the file
#: system's clock, unseen by its modification time: such an index is not cached.
SETTLE_NANOSECONDS = 2_000_000_000
#: Seconds of work after which the listing and the header scan report progress.
PROGRESS_AFTER_SECONDS = 1.0
#: Files per task of the header scan's threads.
SCAN_CHUNK = 256


class FileIndex(Sequence[Path]):
    """Paths under one folder, as a byte buffer and offsets: ``index[i]`` is ``root / name_i``.

    Args:
        root: The folder the names are relative to (``Path()`` for paths kept whole).
        buffer: uint8 (total bytes,), the names' file-system bytes, one after the other.
        offsets: int64 (count + 1,), where each name starts in ``buffer``; the last is its size.

    Raises:
        ValueError: When the arrays do not describe names in the buffer.
    """

    def __init__(self, root: Path, buffer: np.ndarray, offsets: np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise ValueError("the buffer of a FileIndex is a 1-d uint8 array")
        if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) == 0:
            raise ValueError("the offsets of a FileIndex are a non-empty 1-d int64 array")
        if offsets[0] != 0 or offsets[-1] != len(buffer) or np.any(np.diff(offsets) < 0):
            raise ValueError("the offsets of a FileIndex rise from 0 to the buffer's size")
        self.root = Path(root)
        self.buffer = buffer
        self.offsets = offsets

    @classmethod
    def from_names(cls, root: Path, names: Iterable[bytes | str]) -> FileIndex:
        """An index of names relative to ``root`` (str names are encoded as the OS does)."""
        encoded = [os.fsencode(name) for name in names]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(
            np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:]
        )
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return cls(root, buffer, offsets)

    @classmethod
    def from_paths(cls, paths: Sequence[Path] | FileIndex) -> FileIndex:
        """The paths as an index (itself when it is one already); each path is kept whole."""
        if isinstance(paths, FileIndex):
            return paths
        return cls.from_names(Path(), (os.fspath(path) for path in paths))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> Path: ...

    @overload
    def __getitem__(self, index: slice) -> FileIndex: ...

    def __getitem__(self, index: int | slice) -> Path | FileIndex:
        if isinstance(index, slice):
            return self.select(np.arange(len(self))[index])
        return self.root / os.fsdecode(self.name(index))

    def name(self, index: int) -> bytes:
        """The ``index``-th name, relative to ``root``, as bytes.

        Raises:
            IndexError: When there is no such name.
        """
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"index {index} of a FileIndex of {count} paths")
        index %= count
        return self.buffer[self.offsets[index] : self.offsets[index + 1]].tobytes()

    def __iter__(self) -> Iterator[Path]:
        data = self.buffer.tobytes()
        bounds = self.offsets.tolist()
        for start, end in itertools.pairwise(bounds):
            yield self.root / os.fsdecode(data[start:end])

    def __repr__(self) -> str:
        return f"FileIndex({str(self.root)!r}, {len(self)} paths, {self.nbytes} bytes)"

    @property
    def nbytes(self) -> int:
        """Bytes the index's arrays take."""
        return int(self.buffer.nbytes + self.offsets.nbytes)

    def select(self, positions: np.ndarray) -> FileIndex:
        """A new index of the names at these positions (int array), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        starts = self.offsets[:-1][positions]
        lengths = self.offsets[1:][positions] - starts
        offsets = np.zeros(len(positions) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Byte j of the new buffer comes from its name's start plus its place within the name.
        source = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return FileIndex(self.root, self.buffer[source], offsets)

    def save(self, folder: Path, stem: str) -> None:
        """Write the arrays as ``STEM.npy`` (the buffer) and ``STEM_offsets.npy``."""
        np.save(folder / f"{stem}.npy", self.buffer, allow_pickle=False)
        np.save(folder / f"{stem}_offsets.npy", self.offsets, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, stem: str, *, root: Path) -> FileIndex:
        """Read what ``save`` wrote (never a pickle).

        Raises:
            OSError, ValueError: When the files are missing or damaged.
        """
        buffer = np.load(folder / f"{stem}.npy", allow_pickle=False)
        offsets = np.load(folder / f"{stem}_offsets.npy", allow_pickle=False)
        return cls(root, buffer, offsets)


@dataclass(frozen=True)
class FolderStamps:
    """The folders a listing read and their modification times (nanoseconds; -1 unreadable).

    Attributes:
        folders: The folders, relative to the listed root (the root itself is the empty name).
        mtimes: int64 (folders,).
        listed_at: When the listing started, in nanoseconds since the epoch.
    """

    folders: FileIndex
    mtimes: np.ndarray
    listed_at: int

    def unchanged(self) -> bool:
        """Whether every folder still has the modification time it had when listed."""
        root = os.fsencode(self.folders.root)
        for position, mtime in enumerate(self.mtimes.tolist()):
            name = self.folders.name(position)
            if _mtime(os.path.join(root, name) if name else root) != mtime:
                return False
        return True

    def settled(self) -> bool:
        """Whether no folder was modified close enough to the listing to hide a change."""
        return bool(np.all(self.mtimes < self.listed_at - SETTLE_NANOSECONDS))


def _mtime(path: bytes | str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def has_image_suffix(name: str) -> bool:
    """Whether a file name ends in one of the image suffixes, in any case (as ``Path.suffix``)."""
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_SUFFIXES


def check_image_folder(root: Path) -> None:
    """Refuse a folder to list images in that is missing or is a file.

    Raises:
        DataError: Saying which.
    """
    if not root.exists():
        raise DataError(f"folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; give the folder that holds the images")


def no_images_error(root: Path) -> DataError:
    """The error for a folder that holds no image."""
    suffixes = ", ".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
    return DataError(f"folder {root} holds no images (looked for {suffixes}, in any case)")


def walk_images(
    root: Path, *, progress: ProgressCallback = null_progress
) -> tuple[FileIndex, FolderStamps]:
    """List the images under a folder, recursively, in the order of ``sorted()`` over paths.

    Hidden files and folders (names starting with a dot) are left out, and links to folders are
    not followed (a link loop cannot trap the walk); folders that cannot be read are skipped.

    Args:
        root: The folder.
        progress: Receives a ``list`` task (files found so far) when listing takes over a second.

    Returns:
        The images (relative to ``root``) and the folders read, with their modification times.
    """
    root = Path(root)
    listed_at = time.time_ns()
    names: list[str] = []
    folders: list[str] = []
    mtimes: list[int] = []
    reporter = _Reporter(progress, "list", total=None)

    def entries(relative: str) -> Iterator[tuple[str, bool]]:
        path = os.path.join(root, relative) if relative else os.fspath(root)
        # The time is taken before the listing, so a file added while listing changes it.
        folders.append(relative)
        mtimes.append(_mtime(path))
        found: list[tuple[str, bool]] = []
        try:
            with os.scandir(path) as scanned:
                for entry in scanned:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        is_folder = entry.is_dir()
                    except OSError:
                        is_folder = False
                    if is_folder:
                        if not entry.is_symlink():
                            found.append((name, True))
                    elif has_image_suffix(name):
                        found.append((name, False))
        except OSError:
            pass  # As os.walk: a folder that cannot be read holds nothing.
        found.sort()
        return iter(found)

    # Depth first, each folder's entries in name order: a sub-folder's files come at its name.
    stack: list[tuple[str, Iterator[tuple[str, bool]]]] = [("", entries(""))]
    while stack:
        prefix, pending = stack[-1]
        for name, is_folder in pending:
            if is_folder:
                relative = prefix + name
                stack.append((relative + os.sep, entries(relative)))
                break
            names.append(prefix + name)
        else:
            stack.pop()
        reporter.update(len(names))
    reporter.finish(len(names))
    stamps = FolderStamps(
        FileIndex.from_names(root, folders), np.asarray(mtimes, dtype=np.int64), listed_at
    )
    return FileIndex.from_names(root, names), stamps


def scan_index(
    index: FileIndex, *, progress: ProgressCallback = null_progress, threads: int | None = None
) -> list[tuple[int, str]]:
    """Read the first bytes of every file of an index, on a pool of threads.

    Args:
        index: The files.
        progress: Receives a ``scan`` task (files checked, files per second) when the scan takes
            over a second.
        threads: Threads reading; by default four per core, at most 16 (the reads wait on the
            disk, or on the network for a shared file system, with the GIL released).

    Returns:
        ``(position, reason)`` of each file that cannot be an image, in index order.
    """
    count = len(index)
    if threads is None:
        threads = min(16, 4 * (os.cpu_count() or 1))
    root = os.fsencode(index.root)
    names, bounds = index.buffer.tobytes(), index.offsets.tolist()
    reporter = _Reporter(progress, "scan", total=count)

    def check(start: int) -> list[tuple[int, str]]:
        bad = []
        for position in range(start, min(start + SCAN_CHUNK, count)):
            name = names[bounds[position] : bounds[position + 1]]
            reason = check_image_header(os.fsdecode(os.path.join(root, name)))
            if reason is not None:
                bad.append((position, reason))
        return bad

    found: list[tuple[int, str]] = []
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="scan") as pool:
        for bad in pool.map(check, range(0, count, SCAN_CHUNK)):
            found.extend(bad)
            done = min(count, done + SCAN_CHUNK)
            reporter.update(done)
    reporter.finish(count)
    return found


@dataclass(frozen=True)
class ScannedImages:
    """The images of a folder after the header scan.

    Attributes:
        images: The files that may be images, in sorted order.
        bad: The files that cannot be, with the reason.
        cached: Whether the listing and the scan came from the cache.
    """

    images: FileIndex
    bad: tuple[BadImage, ...]
    cached: bool


def index_training_images(
    root: Path, *, progress: ProgressCallback = null_progress, use_cache: bool = True
) -> ScannedImages:
    """List and scan a training folder, or load both from the cache when no folder changed.

    Args:
        root: The folder (searched recursively).
        progress: Receives the ``list`` and ``scan`` tasks of a listing and scan over a second.
        use_cache: Read and write ``SIMCLR_CACHE_DIR`` (nothing is cached when it is ``off``).

    Returns:
        The usable images and the bad files.

    Raises:
        DataError: When the folder is missing, is a file, or holds no image.
        ConfigError: When ``SIMCLR_CACHE_DIR`` is neither ``off`` nor an absolute path.
    """
    root = Path(root)
    check_image_folder(root)
    folder = index_cache_folder(root) if use_cache else None
    loaded = _load_cache(folder, root) if folder is not None else None
    if loaded is not None:
        index, bad_positions, reasons = loaded
        cached = True
    else:
        index, stamps = walk_images(root, progress=progress)
        if len(index) == 0:
            raise no_images_error(root)  # Not cached: the next run looks again.
        found = scan_index(index, progress=progress)
        bad_positions = np.asarray([position for position, _ in found], dtype=np.int64)
        reasons = [reason for _, reason in found]
        if folder is not None and stamps.settled():
            _save_cache(folder, root, index, stamps, bad_positions, reasons)
        cached = False
    keep = np.ones(len(index), dtype=bool)
    keep[bad_positions] = False
    bad = tuple(
        BadImage(str(index[position]), reason)
        for position, reason in zip(bad_positions.tolist(), reasons, strict=True)
    )
    images = index if keep.all() else index.select(np.flatnonzero(keep))
    return ScannedImages(images=images, bad=bad, cached=cached)


def index_cache_folder(root: Path) -> Path | None:
    """Where the index of a folder is cached: ``SIMCLR_CACHE_DIR/index/KEY``; None when off.

    KEY is the SHA-256 of the folder's resolved path; the folders' modification times are kept
    inside and compared on every load.

    Raises:
        ConfigError: When ``SIMCLR_CACHE_DIR`` is neither ``off`` nor an absolute path.
    """
    base = _env.cache_dir()
    if base is None:
        return None
    key = hashlib.sha256(os.fsencode(Path(root).resolve())).hexdigest()[:32]
    return base / "index" / key


def _metadata(root: Path, count: int) -> dict[str, object]:
    return {
        "format": CACHE_FORMAT,
        "root": os.fspath(Path(root).resolve()),
        "suffixes": sorted(IMAGE_SUFFIXES),
        "count": count,
    }


def _load_cache(folder: Path, root: Path) -> tuple[FileIndex, np.ndarray, list[str]] | None:
    """The cached index, bad positions and reasons, or None when absent, stale or damaged."""
    try:
        with open(folder / "meta.json", encoding="utf-8") as stream:
            meta = json.load(stream)
        if {key: meta.get(key) for key in ("format", "root", "suffixes")} != {
            key: value for key, value in _metadata(root, 0).items() if key != "count"
        }:
            return None
        stamps = FolderStamps(
            FileIndex.load(folder, "folders", root=root),
            np.load(folder / "folder_mtimes.npy", allow_pickle=False),
            int(meta["listed_at"]),
        )
        if stamps.mtimes.dtype != np.int64 or len(stamps.mtimes) != len(stamps.folders):
            return None
        if not stamps.unchanged():
            return None
        index = FileIndex.load(folder, "paths", root=root)
        bad_positions = np.load(folder / "bad_positions.npy", allow_pickle=False)
        reasons = meta["bad_reasons"]
        if (
            len(index) != meta["count"]
            or bad_positions.dtype != np.int64
            or len(bad_positions) != len(reasons)
            or np.any((bad_positions < 0) | (bad_positions >= len(index)))
        ):
            return None
        return index, bad_positions, [str(reason) for reason in reasons]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # No cache yet, or a damaged one: list and scan again.


def _save_cache(
    folder: Path,
    root: Path,
    index: FileIndex,
    stamps: FolderStamps,
    bad_positions: np.ndarray,
    reasons: list[str],
) -> None:
    """Write the cache into a new folder, then swap it in; a failure leaves no cache, silently."""
    staging = folder.with_name(f"{folder.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        staging.mkdir(parents=True)
        index.save(staging, "paths")
        stamps.folders.save(staging, "folders")
        np.save(staging / "folder_mtimes.npy", stamps.mtimes, allow_pickle=False)
        np.save(staging / "bad_positions.npy", bad_positions, allow_pickle=False)
        meta = {**_metadata(root, len(index)), "listed_at": stamps.listed_at}
        meta["bad_reasons"] = reasons
        # JSON escapes the surrogates of file names that are not UTF-8: the text is ASCII.
        with open(staging / "meta.json", "w", encoding="utf-8") as out:
            json.dump(meta, out, ensure_ascii=True)
        # Another process (a rank of the same job) may swap in its own copy at the same time:
        # whichever lands, it describes the same folder.
        old = folder.with_name(f"{folder.name}.{uuid.uuid4().hex[:12]}.old")
        with contextlib.suppress(FileNotFoundError):
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass  # A cache that cannot be written (read-only, full) only costs the next run time.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Reporter:
    """Progress of one task, shown only once it has taken more than a second.

    Args:
        progress: The callback.
        task: The task's name.
        total: Its units, when known.
    """

    def __init__(self, progress: ProgressCallback, task: str, *, total: int | None):
        self.progress = progress
        self.task = task
        self.total = total
        self.started = time.perf_counter()
        self.shown = False
        self.last = 0.0

    def update(self, completed: int) -> None:
        """Report ``completed`` units, at most ten times a second and only after a second."""
        if self.progress is null_progress:
            return
        now = time.perf_counter()
        if now - self.last < 0.1:
            return
        self.last = now
        elapsed = now - self.started
        if not self.shown:
            if elapsed < PROGRESS_AFTER_SECONDS:
                return
            self.shown = True
            self.progress(ProgressEvent("start", self.task, total=self.total, completed=completed))
        metrics = {"files_per_second": completed / elapsed}
        self.progress(
            ProgressEvent(
                "advance", self.task, total=self.total, completed=completed, metrics=metrics
            )
        )

    def finish(self, completed: int) -> None:
        """Close the task, if it was shown."""
        if self.shown:
            elapsed = max(1e-9, time.perf_counter() - self.started)
            metrics = {"files_per_second": completed / elapsed}
            self.progress(
                ProgressEvent(
                    "end",
                    self.task,
                    total=completed if self.total is None else self.total,
                    completed=completed,
                    metrics=metrics,
                )
            )
