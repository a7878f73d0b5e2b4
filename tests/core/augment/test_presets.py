"""Augmentation presets and the evaluation preprocessing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from simclr_cli.core.augment.presets import (
    blur_kernel_size,
    create_eval_transform,
    create_torchvision_view_transform,
    create_view_transform,
    resolve_preset,
)
from simclr_cli.core.config import Preset


def _compose_has_blur(transform: v2.Compose) -> bool:
    return any(
        isinstance(inner, v2.GaussianBlur)
        for step in transform.transforms
        if isinstance(step, v2.RandomApply)
        for inner in step.transforms
    )


def test_resolve_preset__auto_by_image_size():
    assert resolve_preset("auto", image_size=32) is Preset.cifar
    assert resolve_preset("auto", image_size=224) is Preset.imagenet
    assert resolve_preset("imagenet", image_size=32) is Preset.imagenet


def test_blur_kernel_size__ten_percent_and_odd():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(96) == 9
    assert blur_kernel_size(32) == 3


def test_create_view_transform__imagenet_has_blur_and_cifar_does_not():
    assert create_view_transform("imagenet", image_size=64).has_blur
    assert not create_view_transform("cifar", image_size=64).has_blur
    assert _compose_has_blur(create_torchvision_view_transform("imagenet", image_size=64))
    assert not _compose_has_blur(create_torchvision_view_transform("cifar", image_size=64))


def test_create_view_transform__gives_normalised_views_that_differ():
    torch.manual_seed(0)
    image = Image.linear_gradient("L").resize((80, 60)).convert("RGB")
    transform = create_view_transform("imagenet", image_size=48, color_strength=1.0)
    first, second = transform(image), transform(image)
    assert first.shape == (3, 48, 48) and first.dtype == torch.float32
    assert not torch.equal(first, second)
    assert first.min() < 0 < first.max()


def test_create_eval_transform__is_deterministic_and_centre_crops():
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    transform = create_eval_transform(image_size=40, crop_fraction=0.875)
    first, second = transform(image), transform(image)
    assert first.shape == (3, 40, 40)
    assert torch.equal(first, second)
    red = (1.0 - 0.485) / 0.229
    assert first[0].mean().item() == pytest.approx(red, rel=1e-5)
