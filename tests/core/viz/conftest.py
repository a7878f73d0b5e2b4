"""Previews to draw in the ``visualize-aug`` tests: a known one, and ones of real folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simclr_cli.core.augment.reference import ViewParams, apply_view_params
from simclr_cli.core.choices import Preset
from simclr_cli.core.config import VisualizeConfig
from simclr_cli.core.viz.preview import (
    AugmentationPreview,
    AugmentationSettings,
    AugmentedPair,
    create_augmentation_preview,
)

RED, BLUE = (200, 30, 60), (20, 40, 220)


def two_colour_image(path: Path) -> Path:
    """8x8: three red rows over five blue ones."""
    image = Image.new("RGB", (8, 8), BLUE)
    image.paste(Image.new("RGB", (8, 3), RED), (0, 0))
    image.save(path)
    return path


def identity_params(size: tuple[int, int]) -> ViewParams:
    """Parameters of a view that is its source: the full crop, no colour change."""
    return ViewParams(
        crop=(0, 0, *size),
        flip=False,
        color_jitter=False,
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue=0.0,
        jitter_order=(0, 1, 2, 3),
        grayscale=False,
        blur_sigma=None,
        source_size=size,
    )


def known_preview(path: Path) -> AugmentationPreview:
    """A preview whose views are the 8x8 image itself: full crops, no colour change."""
    with Image.open(path) as image:
        source = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    params = identity_params((8, 8))
    view = apply_view_params(source, params, image_size=8)
    pair = AugmentedPair(path, source, (view, view.clone()), (params, params))
    settings = AugmentationSettings(Preset.cifar, 0.5, 8)
    return AugmentationPreview(images=[(path, source)], settings=settings, pairs=[pair])


def make_preview(source: Path, **changes: object) -> AugmentationPreview:
    """``create_augmentation_preview`` of 2 pairs of 32 px views, seed 3, unless changed."""
    settings: dict[str, object] = {"input": source, "pairs": 2, "image_size": 32, "seed": 3}
    settings.update(changes)
    return create_augmentation_preview(config=VisualizeConfig(**settings))
