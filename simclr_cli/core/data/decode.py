"""Decoding training images: uint8 tensors with a bounded short side, stacked into batches.

Images are stored with their short side at most ``source_side_bound(image_size)``
(``SOURCE_SIDE_FACTOR`` x the view size): enough that a full-image crop is never up-sampled,
small enough that CIFAR-10's 45,000 images at 32 px take 138 MB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .files import ImageSource, load_rgb, open_image

#: Stored images keep their short side at most this multiple of the view size.
SOURCE_SIDE_FACTOR = 1.5


def source_side_bound(image_size: int) -> int:
    """Largest short side a decoded training image is kept at (48 at 32 px, 336 at 224 px)."""
    return max(image_size, math.ceil(SOURCE_SIDE_FACTOR * image_size))


def decode_for_training(path: ImageSource, *, max_short_side: int) -> torch.Tensor:
    """Decode an image as uint8 RGB with its short side at most ``max_short_side``.

    JPEGs are decoded in draft mode: libjpeg's DCT scaling (1/2, 1/4, 1/8) picks the smallest
    scale whose short side is still at least ``max_short_side``, which is several times faster
    than decoding in full and resizing. What is left is resized with Pillow's antialiased
    bilinear filter. Other formats, EXIF orientation and odd modes go through ``load_rgb``.

    Args:
        path: The image file, or an image member of a tar shard.
        max_short_side: Bound on the short side of the result.

    Returns:
        uint8 tensor (3, H, W) with min(H, W) <= max_short_side (images already smaller are
        kept as they are).

    Raises:
        ImageDecodeError: When the file is not an image or is damaged.
    """
    image = _open_draft(path, max_short_side)
    width, height = image.size
    short = min(width, height)
    if short > max_short_side:
        scale = max_short_side / short
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return array.view(image.size[1], image.size[0], 3).permute(2, 0, 1).contiguous()


def _open_draft(path: ImageSource, max_short_side: int) -> Image.Image:
    # Draft mode only for plain JPEGs without an EXIF rotation; everything else takes the
    # foundation's careful path (transparency, 16-bit, orientation). open_image checks the pixel
    # limit from the header first, so a JPEG bomb is refused here as well as in load_rgb.
    with open_image(path) as image:
        try:
            if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
                orientation = image.getexif().get(0x0112, 1)
                if orientation in (0, 1):
                    width, height = image.size
                    scale = max_short_side / min(width, height)
                    if scale < 1:
                        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
                    image.load()
                    return image if image.mode == "RGB" else image.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            pass  # load_rgb below gives the precise message.
    return load_rgb(path)


def stack_images(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack uint8 images (3, h_i, w_i) into one tensor, edge-padding smaller ones.

    Returns:
        The batch (B, 3, max h, max w) and the sizes (B, 2).
    """
    sizes = torch.tensor([tuple(image.shape[-2:]) for image in images], dtype=torch.int64)
    height, width = (int(v) for v in sizes.max(dim=0).values) if len(images) else (0, 0)
    if all(tuple(image.shape[-2:]) == (height, width) for image in images):
        return torch.stack(list(images)), sizes
    batch = torch.empty(len(images), 3, height, width, dtype=torch.uint8)
    for row, image in enumerate(images):
        pad = (0, width - image.shape[-1], 0, height - image.shape[-2])
        # Replicate padding is not implemented for uint8; pad in float and round back exactly.
        batch[row] = F.pad(image[None].float(), pad, mode="replicate")[0].to(torch.uint8)
    return batch, sizes
