"""The pixel operations of batched augmentation."""

from __future__ import annotations

import math

import torch

from simclr_cli.core.augment.batched_ops import HUE_PLANES, blur_views, rotate_hue
from tests.core.augment.conftest import shape_images


def test_blur_views__per_view_path_matches_batched_path():
    # The CPU blurs view by view with each view's radius, other devices the whole batch with
    # the largest radius; both truncate the same kernels at 4 sigma.
    views = shape_images(5, 48).float()
    sigma = torch.tensor([0.3, math.nan, 1.9, 0.9, 1.4])
    per_view, batched = views.clone(), views.clone()
    blur_views(per_view, sigma, kernel_size=23, per_view=True)
    blur_views(batched, sigma, kernel_size=23, per_view=False)
    torch.testing.assert_close(per_view, batched, atol=0.1, rtol=0)
    assert torch.equal(per_view[1], views[1])
    assert not torch.equal(per_view[2], views[2])


def test_rotate_hue__own_planes_match_given_planes():
    views = shape_images(4, 32).float()
    shift = torch.tensor([0.1, -0.2, 0.45, -0.5])
    allocated, reused = views.clone(), views.clone()
    rotate_hue(allocated, shift)
    rotate_hue(reused, shift, planes=torch.full((HUE_PLANES, 6, 32, 32), math.nan)[:, :4])
    assert torch.equal(allocated, reused)
    assert not torch.equal(allocated, views)
