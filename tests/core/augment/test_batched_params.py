"""Batched view parameters: the presets' distributions, drawn for a whole batch at once."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision import transforms as v1

from simclr_cli.core.augment.batched_params import BatchViewParams, sample_batch_view_params
from simclr_cli.core.augment.recipe import CROP_RATIO, CROP_SCALE

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
