"""The evaluation preprocessing: a deterministic resize and centre crop."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from simclr_cli.core.augment.eval import create_eval_transform, default_crop_fraction


def test_create_eval_transform__is_deterministic_and_centre_crops():
    image = Image.new("RGB", (100, 50), (255, 0, 0))
    transform = create_eval_transform(image_size=40, crop_fraction=0.875)
    first, second = transform(image), transform(image)
    assert first.shape == (3, 40, 40)
    assert torch.equal(first, second)
    red = (1.0 - 0.485) / 0.229  # ImageNet's red mean and standard deviation
    assert first[0].mean().item() == pytest.approx(red, rel=1e-5)


def test_default_crop_fraction__small_images_whole_larger_ones_cropped():
    assert default_crop_fraction(32) == default_crop_fraction(64) == 1.0
    assert default_crop_fraction(65) == default_crop_fraction(224) == 0.875
