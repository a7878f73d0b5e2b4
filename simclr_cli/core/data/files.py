"""Image folders: finding images, decoding them safely, and the datasets built on them."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol, TextIO

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from .. import _env
from ..errors import DataError, ImageDecodeError
from .checks import (
    BadImage,
    decode_error,
    display_path,
    too_many_pixels,
)
from .index import IMAGE_SUFFIXES, check_image_folder, no_images_error, walk_images


class ImageMember(Protocol):
    """An image stored inside another file (a member of a tar shard, see ``shards.py``).

    ``str()`` of it names it in messages (``shard.tar:cat/0001.jpg``).
    """

    def read_bytes(self) -> bytes:
        """The member's encoded image (JPEG, PNG, ...)."""
        ...


#: What the decoders take: an image file, or an image member of a shard.
ImageSource = Path | ImageMember


def open_source(source: ImageSource) -> Path | IO[bytes]:
    """What Pillow opens for a source: the path of a file, or the bytes of a shard member."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    return io.BytesIO(source.read_bytes())


def max_image_pixels() -> int:
    """Largest image decoded, in pixels; 0 for no limit.

    Pillow's own warning threshold (about 89 megapixels, a 9459 x 9459 image), refused rather than
    warned about, so that a small file claiming a huge size (a decompression bomb) cannot exhaust
    memory. ``SIMCLR_MAX_IMAGE_PIXELS`` changes it.

    Raises:
        ConfigError: When ``SIMCLR_MAX_IMAGE_PIXELS`` is not a whole number.
    """
    configured = _env.max_image_pixels()
    return (Image.MAX_IMAGE_PIXELS or 0) if configured is None else configured


def is_image_path(path: Path) -> bool:
    """Whether the file name has one of the image suffixes, in any case."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(root: Path) -> list[Path]:
    """List the images under a folder, recursively, in a stable sorted order.

    Args:
        root: The folder to search. Sub-folders (such as class folders) are searched too.

    Returns:
        The image paths, sorted.

    Raises:
        DataError: When the folder is missing, is a file, or holds no image.
    """
    root = Path(root)
    check_image_folder(root)
    paths = list(_walk_images(root))
    if not paths:
        raise no_images_error(root)
    return paths


def _walk_images(root: Path) -> Iterable[Path]:
    # Sorted as sorted() sorts paths, links to folders not followed (see index.walk_images).
    index, _ = walk_images(root)
    return iter(index)


#: The ``--file-list`` name that reads the list from standard input.
STDIN_LIST = "-"
#: Standard input (the stream and its text) as first read by ``read_file_list``: a second read
#: of the same stream (a run planned twice, or handed to its ranks by ``listed_in_a_file``) sees
#: the same list. The stream is kept so that a replaced ``sys.stdin`` is read afresh.
_stdin_read: tuple[TextIO, str] | None = None


class ResolvedInputs(NamedTuple):
    """The image files of a command line, and the listed files that are missing.

    Attributes:
        paths: Image files, in the order given, each folder expanded in sorted order.
        missing: Files named in a ``--file-list`` that do not exist, one ``BadImage`` each
            (skipped and listed like bad images).
    """

    paths: list[Path]
    missing: list[BadImage]


def read_file_list(file_list: Path | str, *, stdin: TextIO | None = None) -> list[Path]:
    """Read a list of image files: one path a line, relative to the list's folder.

    Blank lines are ignored; nothing else is interpreted, so any file name can be listed. File
    names that are not UTF-8 are kept as they are on disk.

    Args:
        file_list: The list file, or ``"-"`` for standard input (paths relative to the current
            folder).
        stdin: What ``"-"`` reads; ``sys.stdin`` when not given.

    Returns:
        The listed paths, in order.

    Raises:
        DataError: When the list file cannot be read or names no file.
    """
    global _stdin_read
    if str(file_list) == STDIN_LIST:
        if stdin is not None:
            text = stdin.read()
        else:
            if _stdin_read is None or _stdin_read[0] is not sys.stdin:
                _stdin_read = (sys.stdin, sys.stdin.read())
            text = _stdin_read[1]
        base, name = Path(), "standard input"
    else:
        list_path = Path(file_list)
        try:
            text = list_path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            raise DataError(
                f"--file-list {display_path(list_path)} does not exist; check the path",
                flag="--file-list",
            ) from None
        except (IsADirectoryError, PermissionError, UnicodeError, OSError) as error:
            raise DataError(
                f"--file-list {display_path(list_path)} cannot be read "
                f"({error.strerror if isinstance(error, OSError) else error}); give a text file "
                "with one path a line",
                flag="--file-list",
            ) from None
        base, name = list_path.parent, display_path(list_path)
    paths = [base / line for line in text.splitlines() if line.strip()]
    if not paths:
        raise DataError(
            f"--file-list {name} names no files; write one image path a line",
            flag="--file-list",
        )
    return paths


@contextlib.contextmanager
def listed_in_a_file(file_list: Path | str) -> Iterator[Path]:
    """The paths of a file list (standard input too) in a temporary file, as absolute paths.

    For processes that cannot read this one's standard input (the ranks of a job).

    Yields:
        The temporary list file; removed afterwards.
    """
    paths = read_file_list(file_list)
    handle, name = tempfile.mkstemp(prefix="simclr-file-list-", suffix=".txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors="surrogateescape") as stream:
            stream.writelines(f"{Path(path).absolute()}\n" for path in paths)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def resolve_inputs(
    inputs: Sequence[Path], *, file_list: Path | str | None = None, stdin: TextIO | None = None
) -> ResolvedInputs:
    """Expand the files, folders and file list of a command line into image paths.

    The one input resolution of ``pretrain``, ``embed`` and ``predict``. A file or folder given
    on the command line must exist (a typo is refused at once); a file named in the list that is
    missing is one ``BadImage`` line, skipped and listed like an unreadable image, so that a
    million-line list with a few stale entries still runs.

    Args:
        inputs: Image files and/or folders (folders are searched recursively).
        file_list: A file of paths, one a line, relative to its folder; ``"-"`` reads standard
            input. Its paths come after ``inputs``; a listed folder is expanded too.
        stdin: What ``file_list="-"`` reads; ``sys.stdin`` when not given.

    Returns:
        The image paths and the missing listed files.

    Raises:
        DataError: When an input on the command line is missing, a folder holds no image, the
            list cannot be read, or nothing usable is left.
    """
    paths: list[Path] = []
    missing: list[BadImage] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(find_images(item))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{display_path(item)} does not exist; check the path")
    if file_list is not None:
        for item in read_file_list(file_list, stdin=stdin):
            if item.is_dir():
                paths.extend(find_images(item))
            elif item.is_file():
                paths.append(item)
            else:
                missing.append(
                    BadImage(
                        str(item),
                        "file not found (named in --file-list)",
                        "check the path, or take the line out of the list",
                    )
                )
    if not paths:
        shown = "; ".join(display_path(bad.path) for bad in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(
            f"none of the {len(missing)} listed files exists ({shown}{more}); paths in a "
            "--file-list are relative to the list's folder",
            flag="--file-list",
        )
    return ResolvedInputs(paths, missing)


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Expand files and folders given on a command line into image paths.

    ``resolve_inputs`` without a file list; kept for callers that take paths alone.

    Raises:
        DataError: When an input is missing or a folder holds no image.
    """
    return resolve_inputs(inputs).paths


def find_labeled_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """List images whose class is the name of the sub-folder they are in.

    Args:
        root: A folder with one sub-folder per class.

    Returns:
        Paths, integer labels (indices into the class list) and the sorted class names.

    Raises:
        DataError: When the folder has no class sub-folders with images.
    """
    root = Path(root)
    find_images(root)  # Validates the folder with the usual messages.
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = list(_walk_images(root / name))
        paths.extend(found)
        labels.extend([label] * len(found))
    if not paths:
        raise DataError(
            f"folder {root} has no class sub-folders with images; put each class "
            "in a folder of its own"
        )
    return paths, labels, classes


#: Serialises the rare reopening of an image with Pillow's own pixel guard off (a global).
_PILLOW_GUARD_LOCK = threading.Lock()


def open_image(path: ImageSource) -> Image.Image:
    """Open an image file lazily (header only) under our pixel limit, not Pillow's.

    Pillow warns above its limit and refuses above twice it; here the limit is
    ``max_image_pixels()`` alone (``SIMCLR_MAX_IMAGE_PIXELS``), checked from the header before
    any pixel is decoded, so that a small file claiming a huge size cannot exhaust memory.

    Args:
        path: The image file, or a shard member.

    Returns:
        The opened image; close it (``with`` it) when done.

    Raises:
        ImageDecodeError: When the file is missing, not an image, or over the pixel limit.
        ConfigError: When ``SIMCLR_MAX_IMAGE_PIXELS`` is not a whole number.
    """
    limit = max_image_pixels()
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(open_source(path))
        except Image.DecompressionBombError:
            # Pillow refuses at twice its own limit before giving the size; reading the header
            # again without its guard is safe (no pixel is decoded) and gives the size, which
            # our limit judges below.
            with _PILLOW_GUARD_LOCK:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    image = Image.open(open_source(path))
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as error:
        raise decode_error(path, error, limit=limit) from None
    if limit and image.width * image.height > limit:
        image.close()
        failure = too_many_pixels(limit=limit, size=image.size)
        raise ImageDecodeError(path, failure.reason, fix=failure.fix, kind=failure.kind)
    return image


def load_rgb(path: ImageSource) -> Image.Image:
    """Decode an image file (or a shard member) as RGB with its EXIF orientation applied.

    Args:
        path: The image file, or an image member of a tar shard.

    Returns:
        A fully decoded RGB PIL image.

    Raises:
        ImageDecodeError: When the file is not an image, is damaged or is over the pixel limit;
            the message says what to do for that kind of file (``classify_decode_failure``).
        ConfigError: When ``SIMCLR_MAX_IMAGE_PIXELS`` is not a whole number.
    """
    with open_image(path) as opened:
        try:
            # Pillow's own pixel guard is replaced by open_image's (frames of a GIF may warn).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image: Image.Image = opened  # Becomes a plain image once transposed/converted.
                image = ImageOps.exif_transpose(image)
                if image.mode != "RGB":
                    image = _to_rgb(image)
                image.load()
                return image.copy() if image.mode == "RGB" else image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise decode_error(path, error, limit=max_image_pixels()) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    # Transparent pixels become white rather than the arbitrary colour stored under them.
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit images: scale to 8 bits instead of clipping.
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    return image.convert("RGB")


class EvalDataset(Dataset):
    """Images with deterministic preprocessing, for embedding and evaluation.

    Unlike pretraining, a file that cannot be read raises: the user asked for that file.

    Args:
        paths: Image files.
        transform: Deterministic transform from a PIL image to a tensor (3, S, S).
    """

    def __init__(self, paths: Sequence[ImageSource], transform: Callable[[Any], torch.Tensor]):
        # A shard index is kept as it is: flat arrays, not a list of members.
        self.paths = paths if not isinstance(paths, list | tuple) else list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb(self.paths[index]))
