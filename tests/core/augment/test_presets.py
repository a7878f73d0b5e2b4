"""The presets as transforms: ``ViewTransform`` and the torchvision ``v2.Compose`` reference."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2

from simclr_cli.core.augment.presets import (
    create_torchvision_view_transform,
    create_view_transform,
)


def _compose_has_blur(transform: v2.Compose) -> bool:
    return any(
        isinstance(inner, v2.GaussianBlur)
        for step in transform.transforms
        if isinstance(step, v2.RandomApply)
        for inner in step.transforms
    )


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
