"""The augmentation recipe: presets, default strengths, the colour-strength bound, 64 px rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.augment.batched_params import sample_batch_view_params
from simclr_cli.core.augment.recipe import (
    AugmentationRecipe,
    blur_kernel_size,
    create_recipe,
    resolve_preset,
)
from simclr_cli.core.augment.reference import ViewTransform, sample_view_params
from simclr_cli.core.choices import Preset
from simclr_cli.core.config import PretrainConfig, VisualizeConfig
from simclr_cli.core.constants import COLOR_STRENGTH_RANGE
from simclr_cli.core.errors import ConfigError


def test_resolve_preset__auto_by_image_size():
    assert resolve_preset("auto", image_size=32) is Preset.cifar
    assert resolve_preset("auto", image_size=64) is Preset.cifar
    assert resolve_preset("auto", image_size=65) is Preset.imagenet
    assert resolve_preset("auto", image_size=224) is Preset.imagenet
    assert resolve_preset("imagenet", image_size=32) is Preset.imagenet


def test_blur_kernel_size__ten_percent_and_odd():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(32) == 3


def test_create_recipe__default_strengths_and_blur_per_preset():
    imagenet = create_recipe("auto", image_size=224)
    cifar = create_recipe("auto", image_size=32)
    assert (imagenet.preset, imagenet.color_strength, imagenet.has_blur) == (
        Preset.imagenet,
        1.0,
        True,
    )
    assert (cifar.preset, cifar.color_strength, cifar.has_blur) == (Preset.cifar, 0.5, False)
    assert create_recipe("cifar", image_size=32, color_strength=0.0).color_strength == 0.0


def test_create_recipe__the_papers_distributions():
    recipe = create_recipe("imagenet", image_size=224)
    assert (recipe.crop_scale, recipe.crop_ratio, recipe.crop_tries) == (
        (0.08, 1.0),
        (3 / 4, 4 / 3),
        10,
    )
    assert (recipe.flip_probability, recipe.jitter_probability) == (0.5, 0.8)
    assert (recipe.grayscale_probability, recipe.blur_probability) == (0.2, 0.5)
    assert (recipe.blur_sigma, recipe.blur_kernel_size) == ((0.1, 2.0), 23)
    assert recipe.jitter_ranges == {
        "brightness": (pytest.approx(0.2), 1.8),
        "contrast": (pytest.approx(0.2), 1.8),
        "saturation": (pytest.approx(0.2), 1.8),
        "hue": (-0.2, 0.2),
    }
    # No factor below 0, and a zero strength draws no jitter factor at all.
    assert create_recipe("imagenet", image_size=224, color_strength=2.5).jitter_ranges[
        "brightness"
    ] == (0.0, 3.0)
    none = create_recipe("imagenet", image_size=224, color_strength=0.0).jitter_ranges
    assert set(none.values()) == {None}


def test_create_recipe__is_frozen():
    recipe = create_recipe("cifar", image_size=32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.color_strength = 1.0  # type: ignore[misc]


def test_color_strength_bound__one_limit_everywhere():
    low, high = COLOR_STRENGTH_RANGE
    # The hue shift, 0.2 s, reaches torchvision's limit of 0.5 at the upper bound.
    assert create_recipe("imagenet", image_size=32, color_strength=high).jitter_ranges["hue"] == (
        -0.5,
        0.5,
    )
    PretrainConfig(data=".", color_strength=high).validate()
    VisualizeConfig(input=".", color_strength=high).validate()
    too_strong = high + 0.1
    with pytest.raises(ConfigError, match=r"\[0, 2\.5\]"):
        PretrainConfig(data=".", color_strength=too_strong).validate()
    with pytest.raises(ConfigError, match=r"\[0, 2\.5\]"):
        VisualizeConfig(input=".", color_strength=too_strong).validate()
    for make in (
        lambda: create_recipe("cifar", image_size=32, color_strength=too_strong),
        lambda: ViewTransform("cifar", image_size=32, color_strength=too_strong),
        lambda: BatchAugmenter("cifar", image_size=32, color_strength=too_strong),
        lambda: sample_view_params(
            height=8, width=8, preset="cifar", color_strength=too_strong, image_size=8
        ),
        lambda: sample_batch_view_params(
            torch.tensor([[8, 8]]), preset="cifar", color_strength=too_strong, image_size=8
        ),
        lambda: create_recipe("cifar", image_size=32, color_strength=low - 0.1),
    ):
        with pytest.raises(ConfigError, match=r"colour strength .* must be in \[0, 2\.5\]"):
            make()


def test_augmentation_recipe__refuses_auto_and_empty_views():
    with pytest.raises(ConfigError, match="imagenet or cifar"):
        AugmentationRecipe(preset=Preset.auto, image_size=32, color_strength=0.5)
    with pytest.raises(ConfigError, match="at least 1 px"):
        AugmentationRecipe(preset=Preset.cifar, image_size=0, color_strength=0.5)
    named = AugmentationRecipe(preset="cifar", image_size=32, color_strength=0.5)  # type: ignore[arg-type]
    assert named.preset is Preset.cifar


def test_transforms__are_built_from_the_recipe():
    recipe = create_recipe("auto", image_size=32)
    assert ViewTransform("auto", image_size=32).recipe == recipe
    assert BatchAugmenter("auto", image_size=32).recipe == recipe
