"""The SimCLR presets as transforms: ``ViewTransform`` and the torchvision ``v2.Compose``.

Both are built from the preset's ``AugmentationRecipe`` (``recipe.py``, where every distribution
and constant is defined). ``create_view_transform`` gives the per-image reference with its
parameters drawn explicitly; ``create_torchvision_view_transform`` gives the same recipe as plain
torchvision steps, the independent reference the tests compare distributions and outputs with.
Training and ``simclr visualize-aug`` use neither: they make views with ``BatchAugmenter``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

from ..choices import Preset
from ..constants import DEFAULT_MEAN, DEFAULT_STD
from .recipe import create_recipe
from .reference import ViewTransform


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
        ``reference.draw_view_params``, the per-image reference of training's batched path.
    """
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
    """The preset's recipe as a torchvision ``v2.Compose``, the reference for ``ViewTransform``.

    ``ViewTransform`` draws the same parameters explicitly (see ``reference.py``) so that they
    can be shown and checked against the batched path; this Compose stays as the independent
    reference that the tests compare distributions and outputs with.

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
    recipe = create_recipe(preset, image_size=image_size, color_strength=color_strength)
    reach = recipe.jitter_reach
    steps: list[torch.nn.Module] = [
        v2.RandomResizedCrop(
            image_size,
            scale=recipe.crop_scale,
            ratio=recipe.crop_ratio,
            interpolation=InterpolationMode.BILINEAR,
            antialias=True,
        ),
        v2.RandomHorizontalFlip(p=recipe.flip_probability),
        v2.RandomApply(
            [v2.ColorJitter(reach, reach, reach, recipe.hue_reach)], p=recipe.jitter_probability
        ),
        v2.RandomGrayscale(p=recipe.grayscale_probability),
    ]
    if recipe.has_blur:
        kernel = recipe.blur_kernel_size
        steps.append(
            v2.RandomApply(
                [v2.GaussianBlur(kernel, sigma=recipe.blur_sigma)], p=recipe.blur_probability
            )
        )
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]
    return v2.Compose(steps)
