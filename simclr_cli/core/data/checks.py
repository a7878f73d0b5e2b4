"""Bad images: a fast header scan before training, and the list of skipped files of a run.

Files that are not images at all (empty, text, a dangling or looping link, unreadable) are found
before the first step by reading their first bytes; files that only fail when decoded (truncated
data, a decompression bomb) are reported by the data loader when they are met. Both end in
``RUN/skipped.txt``, one ``path<TAB>reason`` line per file, under the ``--on-bad-image`` policy:
``skip`` (the default) counts and lists them, ``fail`` stops the run at the first one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from ..errors import DataError, ImageDecodeError

#: Leading bytes of the formats Pillow decodes that image folders hold.
_SIGNATURES = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)


class BadImage(NamedTuple):
    """A file that could not be used, and why (one short phrase)."""

    path: str
    reason: str


def display_path(path: object) -> str:
    """A path as printable text: bytes that are not UTF-8 appear as ``\\xNN`` escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def check_image_header(path: str | os.PathLike[str]) -> str | None:
    """Why a file cannot be an image, from its first bytes, or None when it may be one.

    Reads 16 bytes, so it is fast enough for every file of a large folder; a file whose start
    matches no common format is identified by Pillow (which reads the header only).
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except PermissionError:
        return "permission denied"
    except FileNotFoundError:
        return "file not found (a dangling link?)"
    except IsADirectoryError:
        return "a folder, not a file"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        return error.strerror or type(error).__name__
    if not head:
        return "empty file"
    if looks_like_image(head):
        return None
    try:
        with Image.open(path):
            return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "not an image file"
    except Image.DecompressionBombError:
        return None  # The decoder refuses it with the pixel count, when it is met.


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a common image format (16 bytes suffice)."""
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def scan_images(paths: Sequence[Path]) -> tuple[list[Path], list[BadImage]]:
    """Split image paths into those that look like images and those that cannot be images.

    Args:
        paths: Candidate files, as ``find_images`` lists them.

    Returns:
        The usable paths (order kept) and the bad ones with their reasons.
    """
    good: list[Path] = []
    bad: list[BadImage] = []
    for path in paths:
        reason = check_image_header(path)
        if reason is None:
            good.append(path)
        else:
            bad.append(BadImage(str(path), reason))
    return good, bad


def describe_bad_images(bad: Sequence[BadImage], *, limit: int = 3) -> str:
    """The first few bad files and their reasons, on one line."""
    shown = "; ".join(f"{display_path(b.path)}: {b.reason}" for b in bad[:limit])
    more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
    return shown + more


class SkippedImages:
    """The bad images of a run: counted, listed in ``RUN/skipped.txt``, or fatal with ``fail``.

    Args:
        path: The list file; lines already in it (from before a resume) are kept.
        fail: Raise at the first bad image instead of skipping it.
        write: Append to the list file; off on the ranks of a job other than rank 0.
    """

    def __init__(self, path: Path, *, fail: bool = False, write: bool = True):
        self.path = Path(path)
        self.fail = fail
        self.write = write
        self.listed: set[str] = set()
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
            self.listed = {line.split("\t", 1)[0] for line in text.splitlines() if line}

    def record(self, bad: Iterable[BadImage]) -> int:
        """Count, list (once per file) or refuse bad images; return how many there were.

        Raises:
            ImageDecodeError: For the first one, with ``fail``.
        """
        bad = list(bad)
        if bad and self.fail:
            raise ImageDecodeError(
                display_path(bad[0].path),
                f"{bad[0].reason} (--on-bad-image fail; use skip to leave such files out)",
            )
        new = [item for item in bad if item.path not in self.listed]
        if new and self.write:
            # The file names are written as they are on disk, even when they are not UTF-8.
            with open(self.path, "a", encoding="utf-8", errors="surrogateescape") as stream:
                stream.writelines(f"{item.path}\t{item.reason}\n" for item in new)
            self.listed.update(item.path for item in new)
        return len(bad)


def refuse_bad_images(bad: Sequence[BadImage], data: Path) -> None:
    """The ``fail`` policy before training: refuse the run when the scan found bad files.

    Raises:
        DataError: Listing the first bad files.
    """
    if bad:
        raise DataError(
            f"{len(bad)} files in {display_path(data)} are not readable images "
            f"({describe_bad_images(bad)}); remove them, or use --on-bad-image skip",
            flag="--on-bad-image",
        )
