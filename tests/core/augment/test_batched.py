"""Batched augmentation: the presets' parameter distributions, and the per-image reference's
output for the same parameters."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torchvision import transforms as v1

from simclr_cli.core.augment.batched import (
    HUE_PLANES,
    BatchAugmenter,
    BatchViewParams,
    _blur,
    _hue,
    apply_batch_view_params,
    sample_batch_view_params,
)
from simclr_cli.core.augment.presets import CROP_SCALE
from simclr_cli.core.augment.reference import CROP_RATIO, apply_view_params, sample_view_params
from simclr_cli.core.data.synthetic import render_shape

DRAWS = 4000
# Two-sample Kolmogorov-Smirnov critical value at a 0.1% false-alarm rate for n = m = DRAWS.
KS_CRITICAL = 1.95 * math.sqrt(2 / DRAWS)


def ks_statistic(first: np.ndarray, second: np.ndarray) -> float:
    """Largest gap between the two empirical distribution functions."""
    values = np.sort(np.concatenate([first, second]))
    cdf_first = np.searchsorted(np.sort(first), values, side="right") / len(first)
    cdf_second = np.searchsorted(np.sort(second), values, side="right") / len(second)
    return float(np.abs(cdf_first - cdf_second).max())


def binomial_close(observed: float, probability: float, draws: int) -> bool:
    """Within 4 standard deviations of the expected frequency."""
    return abs(observed - probability) <= 4 * math.sqrt(probability * (1 - probability) / draws)


@pytest.mark.parametrize("height,width", [(32, 32), (48, 80), (300, 40)])
def test_sample_batch_crops__match_torchvision_random_resized_crop(height: int, width: int):
    # (300, 40) is so elongated that many draws take the central fallback.
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    reference = np.array(
        [v1.RandomResizedCrop.get_params(image, CROP_SCALE, CROP_RATIO) for _ in range(DRAWS)],
        dtype=np.float64,
    )
    sizes = torch.tensor([[height, width]]).repeat(DRAWS, 1)
    params = sample_batch_view_params(
        sizes,
        preset="cifar",
        color_strength=0.5,
        image_size=32,
        generator=torch.Generator().manual_seed(1),
    )
    batched = params.crops.double().numpy()
    top, left, crop_height, crop_width = batched.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + crop_height <= height).all() and (left + crop_width <= width).all()
    for name, column in zip(("top", "left", "height", "width"), range(4), strict=True):
        gap = ks_statistic(reference[:, column], batched[:, column])
        assert gap < KS_CRITICAL, f"{name}: KS {gap:.3f} >= {KS_CRITICAL:.3f}"
    area = lambda crops: crops[:, 2] * crops[:, 3] / (height * width)  # noqa: E731
    assert ks_statistic(area(reference), area(batched)) < KS_CRITICAL


def test_sample_batch_view_params__colour_and_blur_match_torchvision():
    strength = 1.0
    torch.manual_seed(0)
    amount = 0.8 * strength
    jitter = v1.ColorJitter(amount, amount, amount, 0.2 * strength)
    reference_order, *reference_factors = zip(
        *[
            jitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
            for _ in range(DRAWS)
        ],
        strict=True,
    )
    sizes = torch.tensor([[64, 64]]).repeat(DRAWS, 1)
    params = sample_batch_view_params(
        sizes,
        preset="imagenet",
        color_strength=strength,
        image_size=224,
        generator=torch.Generator().manual_seed(2),
    )
    jittered = params.jitter.numpy()
    assert binomial_close(jittered.mean(), 0.8, DRAWS)
    assert binomial_close(params.flips.float().mean().item(), 0.5, DRAWS)
    assert binomial_close(params.grayscale.float().mean().item(), 0.2, DRAWS)
    blurred = ~torch.isnan(params.blur_sigma)
    assert binomial_close(blurred.float().mean().item(), 0.5, DRAWS)
    # Factors of the jittered views against ColorJitter's own draws.
    for column, reference in enumerate(reference_factors):
        drawn = params.factors[:, column].numpy()[jittered]
        gap = ks_statistic(np.array([float(v) for v in reference]), drawn)
        assert gap < 1.95 * math.sqrt(1 / DRAWS + 1 / len(drawn)), f"factor {column}: KS {gap}"
    # Each of the 24 orders of the four operations equally often.
    orders = [tuple(int(i) for i in order) for order in reference_order]
    assert len(set(orders)) == 24
    batched_orders = params.jitter_order[params.jitter]
    counts = torch.unique(batched_orders, dim=0, return_counts=True)[1].double()
    assert len(counts) == 24
    expected = len(batched_orders) / 24
    assert ((counts - expected).abs() < 4 * math.sqrt(expected)).all()
    # Blur sigma uniform on [0.1, 2.0], as v2.GaussianBlur draws it.
    sigma = params.blur_sigma[blurred].numpy()
    uniform = np.random.default_rng(0).uniform(0.1, 2.0, DRAWS)
    assert ks_statistic(sigma, uniform) < 1.95 * math.sqrt(1 / DRAWS + 1 / len(sigma))


def test_sample_batch_view_params__cifar_preset_never_blurs():
    params = sample_batch_view_params(
        torch.tensor([[32, 32]]).repeat(500, 1), preset="cifar", color_strength=0.5, image_size=32
    )
    assert torch.isnan(params.blur_sigma).all()
    # Without jitter the factors are the identity, as in ViewParams.
    unjittered = params.factors[~params.jitter]
    assert (unjittered == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()


def test_batch_view_params__round_trips_through_view_params():
    generator = torch.Generator().manual_seed(3)
    params = sample_batch_view_params(
        torch.tensor([[40, 60], [32, 32], [100, 50]]),
        preset="imagenet",
        color_strength=1.0,
        image_size=32,
        generator=generator,
    )
    records = params.to_view_params()
    assert [r.source_size for r in records] == [(40, 60), (32, 32), (100, 50)]
    again = BatchViewParams.from_view_params(records)
    for name, value in vars(params).items():
        assert torch.equal(value, getattr(again, name)) or (
            name == "blur_sigma" and torch.equal(value.isnan(), again.blur_sigma.isnan())
        ), name


def shape_images(count: int, size: int) -> torch.Tensor:
    """uint8 (count, 3, size, size) images with edges and colours, like real ones."""
    rng = np.random.default_rng(0)
    shapes = ("circle", "square", "stripes")
    images = [
        torch.from_numpy(np.array(render_shape(shapes[i % 3], rng, size=size))).permute(2, 0, 1)
        for i in range(count)
    ]
    return torch.stack(images).contiguous()


def reference_views(images: torch.Tensor, records: list, image_size: int) -> torch.Tensor:
    views = [
        apply_view_params(image, r, image_size=image_size)
        for image, r in zip(images, records, strict=True)
    ]
    return torch.stack(views).float()


@pytest.mark.parametrize(
    "image_size,source,mean_levels,far_share",
    # 32 px: one roi_align call. Near a crop's edge it reads the source pixel beyond the edge
    # where the reference repeats the edge pixel, and when shrinking it averages a box of
    # samples where the reference weighs a triangle, so sharp edges differ more often.
    # 96 px: the per-view uint8 resize the reference itself uses, so only the colour ops differ.
    [(32, 40, 2.0, 0.02), (96, 100, 1.5, 1e-4)],
)
def test_apply_batch_view_params__matches_reference_for_fixed_parameters(
    image_size: int, source: int, mean_levels: float, far_share: float
):
    images = shape_images(24, source)
    generator = torch.Generator().manual_seed(4)
    records = [
        sample_view_params(
            height=source,
            width=source,
            preset="imagenet",
            color_strength=1.0,
            image_size=image_size,
            generator=generator,
        )
        for _ in range(len(images))
    ]
    batched = apply_batch_view_params(
        images,
        BatchViewParams.from_view_params(records),
        image_size=image_size,
        mean=None,
        std=None,
    )
    assert batched.shape == (24, 3, image_size, image_size) and batched.dtype == torch.float32
    difference = (batched * 255 - reference_views(images, records, image_size)).abs()
    # The reference rounds (truncates) to uint8 after every colour op; the batched path keeps
    # floats, so values differ by a few levels of 255, more where contrast amplifies them.
    assert difference.mean() < mean_levels
    assert (difference > 8).float().mean() < far_share


@pytest.mark.parametrize("operation", ["brightness", "contrast", "saturation", "hue"])
def test_apply_batch_view_params__each_colour_op_matches_reference(operation: str):
    # A full-image crop at the source size is the identity, so only the colour op differs.
    images = shape_images(12, 32)
    generator = torch.Generator().manual_seed(5)
    identity = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    records = []
    for _ in range(len(images)):
        drawn = sample_view_params(
            height=32,
            width=32,
            preset="cifar",
            color_strength=1.0,
            image_size=32,
            generator=generator,
        )
        factors = {**identity, operation: getattr(drawn, operation)}
        if operation == "hue":
            factors["hue"] = float(torch.empty(1).uniform_(-0.2, 0.2, generator=generator))
        records.append(
            dataclasses.replace(
                drawn,
                crop=(0, 0, 32, 32),
                flip=False,
                color_jitter=True,
                grayscale=False,
                blur_sigma=None,
                **factors,
            )
        )
    batched = apply_batch_view_params(
        images, BatchViewParams.from_view_params(records), image_size=32, mean=None, std=None
    )
    difference = (batched * 255 - reference_views(images, records, 32)).abs()
    assert difference.max() <= 3.0, f"{operation}: {difference.max():.2f} levels"


def test_batch_augmenter__makes_two_different_normalised_views():
    images = shape_images(6, 40)
    augment = BatchAugmenter("imagenet", image_size=32, generator=torch.Generator().manual_seed(6))
    views_a, views_b = augment(images, torch.tensor([[40, 40]]).repeat(6, 1))
    assert views_a.shape == views_b.shape == (6, 3, 32, 32)
    assert views_a.dtype == torch.float32 and not views_a.requires_grad
    assert not torch.allclose(views_a, views_b)
    # Normalised with the ImageNet statistics: roughly centred, not in [0, 1].
    assert views_a.min() < 0 < views_a.max()


def test_apply_batch_view_params__edge_padded_images_crop_like_unpadded():
    # A small image padded into a larger batch gives the same views as on its own.
    image = shape_images(1, 24)
    padded = torch.nn.functional.pad(image.float(), (0, 16, 0, 8), mode="replicate").byte()
    params = sample_batch_view_params(
        torch.tensor([[24, 24]]).repeat(4, 1),
        preset="cifar",
        color_strength=0.5,
        image_size=32,
        generator=torch.Generator().manual_seed(7),
    )
    sources = torch.zeros(4, dtype=torch.int64)
    alone = apply_batch_view_params(image, params, image_size=32, sources=sources)
    inside = apply_batch_view_params(padded, params, image_size=32, sources=sources)
    torch.testing.assert_close(alone, inside)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_apply_batch_view_params__cuda_matches_cpu():
    images = shape_images(16, 40)
    params = sample_batch_view_params(
        torch.tensor([[40, 40]]).repeat(16, 1),
        preset="imagenet",
        color_strength=1.0,
        image_size=32,
        generator=torch.Generator().manual_seed(8),
    )
    on_cpu = apply_batch_view_params(images, params, image_size=32)
    on_gpu = apply_batch_view_params(images.cuda(), params, image_size=32)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=1e-3)


def test_blur__per_view_path_matches_batched_path():
    # The CPU blurs view by view with each view's radius, other devices the whole batch with
    # the largest radius; both truncate the same kernels at 4 sigma.
    views = shape_images(5, 48).float()
    sigma = torch.tensor([0.3, math.nan, 1.9, 0.9, 1.4])
    per_view, batched = views.clone(), views.clone()
    _blur(per_view, sigma, kernel_size=23, per_view=True)
    _blur(batched, sigma, kernel_size=23, per_view=False)
    torch.testing.assert_close(per_view, batched, atol=0.1, rtol=0)
    assert torch.equal(per_view[1], views[1])
    assert not torch.equal(per_view[2], views[2])


def test_hue__own_planes_match_given_planes():
    views = shape_images(4, 32).float()
    shift = torch.tensor([0.1, -0.2, 0.45, -0.5])
    allocated, reused = views.clone(), views.clone()
    _hue(allocated, shift)
    _hue(reused, shift, planes=torch.full((HUE_PLANES, 6, 32, 32), math.nan)[:, :4])
    assert torch.equal(allocated, reused)
    assert not torch.equal(allocated, views)
