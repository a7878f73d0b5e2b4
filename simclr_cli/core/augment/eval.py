"""The deterministic preprocessing used to embed and evaluate images (no augmentation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from ..constants import DEFAULT_MEAN, DEFAULT_STD, SMALL_IMAGE_SIZE

#: Fraction of the resized image the centre crop keeps for images larger than CIFAR's (the
#: ImageNet habit of resizing to size / 0.875 and cropping the centre).
CENTRE_CROP_FRACTION = 0.875


def default_crop_fraction(image_size: int) -> float:
    """Fraction of the resized image kept by the centre crop at evaluation.

    Small images (CIFAR-like, 64 px and below) are used whole; larger ones follow the ImageNet
    habit of resizing to size / 0.875 and cropping the centre.
    """
    return 1.0 if image_size <= SMALL_IMAGE_SIZE else CENTRE_CROP_FRACTION


def create_eval_transform(
    *,
    image_size: int,
    crop_fraction: float | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> v2.Compose:
    """Create the deterministic preprocessing used to embed and evaluate images.

    Args:
        image_size: Side of the output in pixels.
        crop_fraction: Centre-crop fraction; ``default_crop_fraction(image_size)`` when None.
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation.

    Returns:
        A transform from a PIL image to a float tensor (3, image_size, image_size).
    """
    fraction = default_crop_fraction(image_size) if crop_fraction is None else crop_fraction
    resize = max(image_size, round(image_size / fraction))
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )
