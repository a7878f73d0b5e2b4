"""Augmentation presets of SimCLR and the deterministic preprocessing used for evaluation.

The ``imagenet`` preset follows the paper's appendix A: random resized crop (scale 0.08-1, aspect
3/4-4/3), horizontal flip, colour jitter of strength s (brightness, contrast and saturation 0.8s,
hue 0.2s) applied with probability 0.8, grayscale with probability 0.2, and Gaussian blur with
probability 0.5 (kernel 10% of the image side, sigma 0.1-2.0). The ``cifar`` preset is the same
without blur, as in the paper's CIFAR-10 experiments (appendix B.9).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torchvision.transforms import InterpolationMode, v2

from ..config import Preset

if TYPE_CHECKING:
    from .reference import ViewTransform

#: Normalisation used unless a model says otherwise (the ImageNet statistics timm uses).
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)

#: Colour strength s that each preset uses by default (the paper: 1.0 ImageNet, 0.5 CIFAR-10).
DEFAULT_COLOR_STRENGTH = {Preset.imagenet: 1.0, Preset.cifar: 0.5}

#: Crop scale range of the random resized crop.
CROP_SCALE = (0.08, 1.0)


def resolve_preset(preset: Preset | str, *, image_size: int) -> Preset:
    """Choose the preset ``auto`` means: ``cifar`` at 64 px and below, else ``imagenet``."""
    preset = Preset(preset)
    if preset is Preset.auto:
        return Preset.cifar if image_size <= 64 else Preset.imagenet
    return preset


def blur_kernel_size(image_size: int) -> int:
    """Side of the Gaussian blur kernel: 10% of the image side, made odd (23 at 224 px)."""
    size = max(3, int(0.1 * image_size))
    return size if size % 2 == 1 else size + 1


def create_view_transform(
    preset: Preset | str,
    *,
    image_size: int,
    color_strength: float | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> ViewTransform:
    """Create the random transform that makes one SimCLR view of an image.

    Args:
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        image_size: Side of the output views in pixels.
        color_strength: Strength s of the colour distortion; the preset's default when None.
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation for normalisation.

    Returns:
        A ``ViewTransform`` from a PIL image or uint8 tensor (3, H, W) to a float tensor
        (3, image_size, image_size), normalised; its parameters come from
        ``view_params.sample_view_params``, the code path ``simclr visualize-aug`` shows.
    """
    # Imported here because view_params builds on this module's preset constants.
    from .reference import ViewTransform

    return ViewTransform(
        preset, image_size=image_size, color_strength=color_strength, mean=mean, std=std
    )


def create_torchvision_view_transform(
    preset: Preset | str,
    *,
    image_size: int,
    color_strength: float | None = None,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
) -> v2.Compose:
    """The preset as a torchvision ``v2.Compose``, the reference for ``ViewTransform``.

    Training uses ``create_view_transform``, which draws the same parameters explicitly (see
    ``view_params.py``) so that they can be shown and batched; this Compose stays as the
    independent reference that the tests compare distributions and outputs with.

    Args:
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        image_size: Side of the output views in pixels.
        color_strength: Strength s of the colour distortion; the preset's default when None.
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation for normalisation.

    Returns:
        A transform from a PIL image or uint8 tensor (3, H, W) to a float tensor
        (3, image_size, image_size), normalised.
    """
    preset = resolve_preset(preset, image_size=image_size)
    strength = DEFAULT_COLOR_STRENGTH[preset] if color_strength is None else color_strength
    steps: list[torch.nn.Module] = [
        v2.RandomResizedCrop(
            image_size, scale=CROP_SCALE, interpolation=InterpolationMode.BILINEAR, antialias=True
        ),
        v2.RandomHorizontalFlip(),
        v2.RandomApply(
            [v2.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)],
            p=0.8,
        ),
        v2.RandomGrayscale(p=0.2),
    ]
    if preset is Preset.imagenet:
        steps.append(
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(image_size), sigma=(0.1, 2.0))], p=0.5)
        )
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]
    return v2.Compose(steps)


def default_crop_fraction(image_size: int) -> float:
    """Fraction of the resized image kept by the centre crop at evaluation.

    Small images (CIFAR-like) are used whole; larger ones follow the ImageNet habit of resizing
    to size / 0.875 and cropping the centre.
    """
    return 1.0 if image_size <= 64 else 0.875


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
