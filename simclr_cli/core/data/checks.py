"""Bad images: a fast header scan before training, and the list of skipped files of a run.

Files that are not images at all (empty, text, a dangling or looping link, unreadable) are found
before the first step by reading their first bytes; files that only fail when decoded (truncated
data, a decompression bomb) are reported by the data loader when they are met. Both end in
``RUN/skipped.txt``, one ``path<TAB>reason`` line per file, under the ``--on-bad-image`` policy:
``skip`` (the default) counts and lists them, ``fail`` stops the run at the first one.

``classify_decode_failure`` is the one place that turns a decoder's exception into our words: a
kind (truncated, not an image, too many pixels, unsupported data...), a short reason and the fix
for that kind of file.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from .. import _env
from .._io import atomic_write
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
    """A file that could not be used, why (one short phrase) and, when known, how to fix it."""

    path: str
    reason: str
    fix: str = ""


class DecodeFailure(NamedTuple):
    """Why a file could not be decoded, in our words.

    Attributes:
        kind: One of ``FAILURE_KINDS``: ``missing``, ``permission``, ``folder``, ``empty``,
            ``not_image``, ``truncated``, ``too_many_pixels``, ``unsupported`` or ``damaged``.
        reason: A short phrase ("truncated: the file ends before its image data").
        fix: What to do about that kind of file.
    """

    kind: str
    reason: str
    fix: str


#: The fix for each kind of decode failure (``too_many_pixels`` names the limit's switch).
FAILURE_FIXES = {
    "missing": "check the path, or leave the file out",
    "permission": "make it readable (chmod a+r), or leave it out",
    "folder": "give the folder as an input of its own, or leave it out",
    "empty": "copy it again from its source, or delete it",
    "not_image": "leave it out: only image files (JPEG, PNG, WebP, BMP, TIFF) can be read",
    "truncated": "copy it again from its source (an interrupted copy or download?), or delete it",
    "too_many_pixels": (
        f"if it is a real photo, shrink it or raise {_env.MAX_IMAGE_PIXELS.name} "
        "(0 turns the limit off); otherwise delete it"
    ),
    "unsupported": "convert it to an 8-bit RGB JPEG or PNG",
    "damaged": "check it in an image viewer, then save it again as JPEG or PNG, or delete it",
}
FAILURE_KINDS = tuple(FAILURE_FIXES)

# Pillow's decompression-bomb messages carry the pixel count: "Image size (N pixels) exceeds".
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")
_TRUNCATED_WORDS = ("truncated", "broken data stream", "premature end", "unexpected end")
_UNSUPPORTED_WORDS = ("mode", "unsupported", "not supported", "decoder", "encoder", "unknown")


def _megapixels(pixels: int) -> str:
    if pixels >= 10**7:
        return f"{pixels / 1e6:.0f} megapixels"
    if pixels >= 10**5:
        return f"{pixels / 1e6:.1f} megapixels"
    return f"{pixels:,} pixels"


def pillow_claimed_pixels(error: BaseException) -> int | None:
    """The pixel count in Pillow's decompression-bomb message, when it gives one."""
    found = _PILLOW_PIXELS.search(str(error))
    return int(found.group(1)) if found else None


def too_many_pixels(
    *, limit: int, pixels: int | None = None, size: tuple[int, int] | None = None
) -> DecodeFailure:
    """The failure of an image over the pixel limit (a possible decompression bomb).

    Args:
        limit: The limit, in pixels (``max_image_pixels()``).
        pixels: The image's pixel count, when the size is not known.
        size: The image's (width, height), from its header.
    """
    if size is not None:
        pixels = size[0] * size[1]
        claimed = f"{size[0]} x {size[1]} pixels"
        if pixels >= 10**5:
            claimed += f" ({_megapixels(pixels)})"
    elif pixels is not None:
        claimed = f"{_megapixels(pixels)}"
    else:
        claimed = "the image's size"
    return DecodeFailure(
        "too_many_pixels",
        f"{claimed} is over the limit of {_megapixels(limit)}, a guard against decompression bombs",
        FAILURE_FIXES["too_many_pixels"],
    )


def classify_decode_failure(
    error: BaseException, *, path: Path | None = None, limit: int | None = None
) -> DecodeFailure:
    """Turn what a decoder raised into our kind, reason and fix.

    Args:
        error: The exception from opening or decoding the file (Pillow's or the system's).
        path: The file, to tell an empty file from other unidentified ones.
        limit: The pixel limit in force, to word a decompression-bomb refusal.

    Returns:
        The failure's kind, a short reason and the fix for that kind of file.
    """

    def failure(kind: str, reason: str) -> DecodeFailure:
        return DecodeFailure(kind, reason, FAILURE_FIXES[kind])

    detail = str(error).strip().rstrip(".")
    if isinstance(error, FileNotFoundError):
        return failure("missing", "file not found")
    if isinstance(error, PermissionError):
        return failure("permission", "permission denied")
    if isinstance(error, IsADirectoryError):
        return failure("folder", "a folder, not a file")
    if isinstance(error, OSError) and error.errno == errno.ELOOP:
        return failure("missing", "symbolic link loop")
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        pixels = pillow_claimed_pixels(error)
        return too_many_pixels(limit=limit or Image.MAX_IMAGE_PIXELS or 0, pixels=pixels)
    if isinstance(error, UnidentifiedImageError):
        try:
            empty = path is not None and Path(path).stat().st_size == 0
        except OSError:
            empty = False
        return (
            failure("empty", "empty file") if empty else failure("not_image", "not an image file")
        )
    lowered = detail.lower()
    if any(word in lowered for word in _TRUNCATED_WORDS):
        return failure("truncated", "truncated: the file ends before its image data does")
    if any(word in lowered for word in _UNSUPPORTED_WORDS):
        return failure("unsupported", f"unsupported image data ({detail or type(error).__name__})")
    return failure("damaged", f"damaged image data ({detail or type(error).__name__})")


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
                fix=bad[0].fix or None,
            )
        new = [item for item in bad if item.path not in self.listed]
        if new and self.write:
            # The file names are written as they are on disk, even when they are not UTF-8.
            with open(self.path, "a", encoding="utf-8", errors="surrogateescape") as stream:
                stream.writelines(f"{item.path}\t{item.reason}\n" for item in new)
            self.listed.update(item.path for item in new)
        return len(bad)


def refuse_bad_images(bad: Sequence[BadImage], data: Path | str) -> None:
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


def decode_error(
    path: object, error: BaseException, *, limit: int | None = None
) -> ImageDecodeError:
    """The ``ImageDecodeError`` for what a decoder raised on ``path``: our reason and fix."""
    failure = classify_decode_failure(error, path=Path(str(path)), limit=limit)
    return ImageDecodeError(path, failure.reason, fix=failure.fix, kind=failure.kind)


def bad_image(error: ImageDecodeError) -> BadImage:
    """The ``BadImage`` line of a file that failed to decode."""
    return BadImage(str(error.path), error.reason, error.fix)


def write_skipped(skipped: Sequence[BadImage], path: Path) -> None:
    """Write the files left out, one ``path<TAB>reason`` line each (``--skipped FILE``).

    The file names are written as they are on disk, even when they are not UTF-8.
    """
    text = "".join(f"{item.path}\t{item.reason}\n" for item in skipped)

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as stream:
            stream.write(text)

    atomic_write(Path(path), write)
