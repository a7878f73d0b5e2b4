"""View parameters: drawn as torchvision draws them, applied as torchvision applies them."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from simclr_cli.core.augment.presets import create_torchvision_view_transform
from simclr_cli.core.augment.recipe import blur_kernel_size
from simclr_cli.core.augment.reference import (
    ViewParams,
    ViewTransform,
    apply_view_params,
    sample_crop,
    sample_view_params,
)
from simclr_cli.core.errors import ConfigError

SAMPLES = 2000


def _image(height: int = 60, width: int = 80, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)


def _draw(count: int, **settings: object) -> list[ViewParams]:
    generator = torch.Generator().manual_seed(1234)
    return [sample_view_params(generator=generator, **settings) for _ in range(count)]


def _same_distribution(ours: list[float], theirs: list[float]) -> bool:
    # Both samples come from fixed seeds, so this is deterministic; a wrong range or a missing
    # log in the aspect ratio gives p-values many orders of magnitude below the threshold.
    return ks_2samp(ours, theirs).pvalue > 1e-3


@pytest.mark.parametrize("size", [(60, 80), (32, 32), (20, 200)])
def test_sample_crop__equals_random_resized_crop_for_the_same_seed(size):
    height, width = size
    crop = v2.RandomResizedCrop(16, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    for seed in range(200):
        torch.manual_seed(seed)
        expected = crop.make_params([image])
        torch.manual_seed(seed)
        top, left, crop_height, crop_width = sample_crop(height, width)
        assert (top, left, crop_height, crop_width) == (
            expected["top"],
            expected["left"],
            expected["height"],
            expected["width"],
        )


def test_sample_crop__falls_back_to_a_central_crop_in_the_ratio_range():
    # A 1x100 strip: no crop with a 3/4-4/3 aspect ratio and positive height fits in ten tries.
    top, left, height, width = sample_crop(1, 100, generator=torch.Generator().manual_seed(0))
    assert (top, height) == (0, 1)
    assert width == round(1 * 4 / 3) and left == (100 - width) // 2


def test_sample_view_params__crop_distribution_matches_torchvision():
    ours = _draw(SAMPLES, height=60, width=80, preset="imagenet", color_strength=1.0, image_size=32)
    crop = v2.RandomResizedCrop(32)
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    torch.manual_seed(99)
    theirs = [crop.make_params([image]) for _ in range(SAMPLES)]
    our_scale = [p.crop_scale for p in ours]
    their_scale = [t["height"] * t["width"] / (60 * 80) for t in theirs]
    assert _same_distribution(our_scale, their_scale)
    our_ratio = [math.log(p.crop[3] / p.crop[2]) for p in ours]
    their_ratio = [math.log(t["width"] / t["height"]) for t in theirs]
    assert _same_distribution(our_ratio, their_ratio)
    assert _same_distribution([p.crop[0] for p in ours], [t["top"] for t in theirs])
    assert min(our_scale) >= 0.07 and max(our_scale) <= 1.0


def test_sample_view_params__jitter_distribution_matches_torchvision():
    strength = 0.5
    ours = _draw(
        SAMPLES, height=32, width=32, preset="cifar", color_strength=strength, image_size=32
    )
    jittered = [p for p in ours if p.color_jitter]
    jitter = v2.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)
    torch.manual_seed(7)
    theirs = [jitter.make_params([]) for _ in range(len(jittered))]
    for name, key in [
        ("brightness", "brightness_factor"),
        ("contrast", "contrast_factor"),
        ("saturation", "saturation_factor"),
        ("hue", "hue_factor"),
    ]:
        our_values = [getattr(p, name) for p in jittered]
        assert _same_distribution(our_values, [t[key] for t in theirs]), name
    assert min(p.brightness for p in jittered) >= 0.6 and max(p.brightness for p in jittered) <= 1.4
    assert max(abs(p.hue) for p in jittered) <= 0.1
    # Every order of the four operations is drawn, each about 1/24 of the time.
    orders = [p.jitter_order for p in jittered]
    assert len(set(orders)) == 24
    first_ops = [order[0] for order in orders]
    their_first = [int(t["fn_idx"][0]) for t in theirs]
    assert _same_distribution(first_ops, their_first)


def test_sample_view_params__probabilities_of_the_random_steps():
    ours = _draw(SAMPLES, height=64, width=64, preset="imagenet", color_strength=1.0, image_size=64)

    def rate(values: list[bool]) -> float:
        return sum(values) / len(values)

    # Binomial standard error at n=2000 is at most 0.011; 0.04 is over three of them.
    assert rate([p.flip for p in ours]) == pytest.approx(0.5, abs=0.04)
    assert rate([p.color_jitter for p in ours]) == pytest.approx(0.8, abs=0.04)
    assert rate([p.grayscale for p in ours]) == pytest.approx(0.2, abs=0.04)
    blurred = [p.blur_sigma for p in ours if p.blur_sigma is not None]
    assert len(blurred) / len(ours) == pytest.approx(0.5, abs=0.04)
    assert min(blurred) >= 0.1 and max(blurred) <= 2.0
    torch.manual_seed(3)
    blur = v2.GaussianBlur(7, sigma=(0.1, 2.0))
    assert _same_distribution(blurred, [blur.make_params([])["sigma"][0] for _ in blurred])


def test_sample_view_params__cifar_never_blurs_and_no_jitter_means_identity_factors():
    ours = _draw(300, height=32, width=32, preset="cifar", color_strength=0.5, image_size=32)
    assert all(p.blur_sigma is None for p in ours)
    plain = [p for p in ours if not p.color_jitter]
    assert plain, "with p = 0.8, some of 300 views are not jittered"
    assert all((p.brightness, p.contrast, p.saturation, p.hue) == (1, 1, 1, 0) for p in plain)


def test_sample_view_params__generator_makes_draws_repeatable():
    settings = dict(height=50, width=70, preset="imagenet", color_strength=1.0, image_size=48)
    first = _draw(20, **settings)
    second = _draw(20, **settings)
    assert first == second
    assert len({p.crop for p in first}) > 1


def test_sample_view_params__rejects_out_of_range_colour_strength():
    with pytest.raises(ConfigError, match="colour strength"):
        sample_view_params(height=8, width=8, preset="cifar", color_strength=3.0, image_size=8)


def test_view_params__crop_scale_and_to_dict_are_json_ready():
    params = _draw(1, height=60, width=80, preset="imagenet", color_strength=1.0, image_size=32)[0]
    values = json.loads(json.dumps(params.to_dict()))
    _, _, height, width = values["crop"]
    assert values["crop_scale"] == pytest.approx(height * width / (60 * 80))
    assert values["source_size"] == [60, 80]
    assert set(values) >= {"flip", "brightness", "hue", "jitter_order", "grayscale", "blur_sigma"}


@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
@pytest.mark.parametrize("as_pil", [False, True])
def test_view_transform__equals_the_torchvision_compose_for_the_same_seed(preset, as_pil):
    image = _image()
    if as_pil:
        image = Image.fromarray(image.permute(1, 2, 0).numpy())
    reference = create_torchvision_view_transform(preset, image_size=40, color_strength=1.0)
    ours = ViewTransform(preset, image_size=40, color_strength=1.0)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = reference(image)
        torch.manual_seed(seed)
        assert torch.equal(ours(image), expected), f"seed {seed}"


def test_apply_view_params__equals_torchvision_transforms_given_the_same_parameters():
    image = _image(48, 64, seed=5)
    params = ViewParams(
        crop=(5, 7, 30, 40),
        flip=True,
        color_jitter=True,
        brightness=1.3,
        contrast=0.7,
        saturation=1.4,
        hue=-0.15,
        jitter_order=(3, 0, 2, 1),
        grayscale=False,
        blur_sigma=1.2,
        source_size=(48, 64),
    )
    size = 32
    expected = v2.RandomResizedCrop(size).transform(image, dict(top=5, left=7, height=30, width=40))
    expected = v2.RandomHorizontalFlip(p=1.0).transform(expected, {})
    expected = v2.ColorJitter(0.8, 0.8, 0.8, 0.2).transform(
        expected,
        dict(
            fn_idx=torch.tensor([3, 0, 2, 1]),
            brightness_factor=1.3,
            contrast_factor=0.7,
            saturation_factor=1.4,
            hue_factor=-0.15,
        ),
    )
    expected = v2.GaussianBlur(blur_kernel_size(size)).transform(expected, dict(sigma=[1.2, 1.2]))
    view = apply_view_params(image, params, image_size=size)
    assert view.dtype == torch.uint8 and view.shape == (3, size, size)
    assert torch.equal(view, expected)


def test_apply_view_params__grayscale_gives_equal_channels_and_identity_crop_keeps_pixels():
    image = _image(16, 16)
    params = ViewParams(
        crop=(0, 0, 16, 16),
        flip=False,
        color_jitter=False,
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue=0.0,
        jitter_order=(0, 1, 2, 3),
        grayscale=False,
        blur_sigma=None,
        source_size=(16, 16),
    )
    assert torch.equal(apply_view_params(image, params, image_size=16), image)
    gray = apply_view_params(
        image, ViewParams(**{**params.__dict__, "grayscale": True}), image_size=16
    )
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_apply_view_params__rejects_parameters_drawn_for_another_size():
    params = _draw(1, height=60, width=80, preset="cifar", color_strength=0.5, image_size=32)[0]
    with pytest.raises(ValueError, match="drawn for"):
        apply_view_params(_image(30, 30), params, image_size=32)


def test_view_transform__view_returns_uint8_view_and_its_parameters():
    transform = ViewTransform("cifar", image_size=24, generator=torch.Generator().manual_seed(0))
    view, params = transform.view(_image(40, 50))
    assert view.dtype == torch.uint8 and view.shape == (3, 24, 24)
    assert params.source_size == (40, 50)
    assert transform.color_strength == 0.5 and not transform.has_blur
