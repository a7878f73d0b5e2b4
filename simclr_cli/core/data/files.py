"""Image folders: finding images, decoding them safely, and the datasets built on them."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from .. import _env
from ..errors import DataError, ImageDecodeError
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


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Expand files and folders given on a command line into image paths.

    Args:
        inputs: Image files and/or folders.

    Returns:
        Image files in the order given, each folder expanded in sorted order.

    Raises:
        DataError: When an input is missing or a folder holds no image.
    """
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(find_images(item))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{item} does not exist; check the path")
    return paths


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


def load_rgb(path: ImageSource) -> Image.Image:
    """Decode an image file (or a shard member) as RGB with its EXIF orientation applied.

    Args:
        path: The image file, or an image member of a tar shard.

    Returns:
        A fully decoded RGB PIL image.

    Raises:
        ImageDecodeError: When the file is not an image or is damaged.
        ConfigError: When ``SIMCLR_MAX_IMAGE_PIXELS`` is not a whole number.
    """
    limit = max_image_pixels()
    try:
        # Pillow warns about images over its pixel limit; a warning raised is a refusal.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image_file = Image.open(open_source(path))
        with image_file as opened:
            image: Image.Image = opened  # Becomes a plain image once transposed or converted.
            pixels = image.width * image.height
            if limit and pixels > limit:
                raise Image.DecompressionBombError(
                    f"{image.width} x {image.height} pixels is more than the limit of "
                    f"{limit} ({_env.MAX_IMAGE_PIXELS.name})"
                )
            image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = _to_rgb(image)
            image.load()
            return image.copy() if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except PermissionError:
        raise ImageDecodeError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(path, f"refused as a possible decompression bomb: {error}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(path, str(error) or type(error).__name__) from None


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
