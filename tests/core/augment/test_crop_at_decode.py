"""Crop at decode: the recipe's boxes drawn in source pixels, small sources left as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from simclr_cli.core.augment.batched import BatchAugmenter, apply_batch_view_params
from simclr_cli.core.augment.batched_params import sample_batch_crops
from simclr_cli.core.augment.crop_at_decode import (
    CropAtDecode,
    small_source_side,
    view_seed,
)
from simclr_cli.core.augment.recipe import create_recipe
from simclr_cli.core.data.crop_decode import CutBatch, CutViews, draft_denominator
from simclr_cli.core.data.decode import decode_for_training
from tests.core.data.test_crop_decode import textured_photo


def test_small_source_side__twice_the_decode_bound():
    assert small_source_side(224) == 672
    assert small_source_side(32) == 96


def test_crop_at_decode__small_source_keeps_the_bounded_decode(tmp_path: Path):
    cutter = CropAtDecode(create_recipe("cifar", image_size=32))
    path = textured_photo(tmp_path / "small.jpg", 130, 96)  # short side 96 = 3 x 32: small
    decoded = cutter(path, seed=5)
    assert isinstance(decoded, torch.Tensor)
    assert torch.equal(decoded, decode_for_training(path, max_short_side=48))


def test_crop_at_decode__large_source_cuts_the_recipes_boxes_at_the_coarsest_scale(
    tmp_path: Path,
):
    recipe = create_recipe("imagenet", image_size=64)
    cutter = CropAtDecode(recipe)
    path = textured_photo(tmp_path / "large.jpg", 900, 700)
    for seed in range(6):
        cut = cutter(path, seed=seed)
        assert isinstance(cut, CutViews)
        assert cut.source_size == (700, 900)
        # The boxes are the recipe sampler's, drawn in source pixels from the seed.
        expected = sample_batch_crops(
            torch.tensor([[700, 900], [700, 900]]),
            scale=recipe.crop_scale,
            ratio=recipe.crop_ratio,
            tries=recipe.crop_tries,
            generator=torch.Generator().manual_seed(seed),
        )
        assert torch.equal(cut.crops, expected)
        # The scale is the coarsest at which both boxes keep at least 64 px on both sides.
        shortest = int(cut.crops[:, 2:].min())
        assert cut.denominator == draft_denominator(cut.crops, image_size=64)
        assert shortest / cut.denominator >= 64 or cut.denominator == 1
        assert cut.denominator == 8 or shortest / (2 * cut.denominator) < 64
        assert cut.views.shape == (2, 3, 64, 64)
    assert torch.equal(cutter(path, seed=3).views, cutter(path, seed=3).views)


def test_view_seed__depends_on_seed_epoch_and_image_only():
    seeds = {view_seed(seed, epoch=e, index=i) for seed in (0, 1) for e in (0, 1) for i in (0, 1)}
    assert len(seeds) == 8
    assert view_seed(7, epoch=3, index=11) == view_seed(7, epoch=3, index=11)
    assert all(0 <= seed < 2**63 for seed in seeds)


@pytest.mark.parametrize("side", [64, 96])  # roi_align, and the CPU's per-view resize
def test_batch_augmenter__cut_views_are_only_flipped_and_coloured(side: int):
    # A batch of one bounded image (row 0) and one image cut at decode (row 1): the cut views
    # equal what the augmenter makes of the same uint8 views given as S x S sources cropped
    # whole, with the same colour, blur and flip parameters.
    augmenter = BatchAugmenter("imagenet", image_size=side, generator=None)
    generator = torch.Generator().manual_seed(0)
    bounded = torch.randint(0, 256, (3, 96, 120), dtype=torch.uint8, generator=generator)
    cut_views = torch.randint(0, 256, (1, 2, 3, side, side), dtype=torch.uint8, generator=generator)
    crops = torch.tensor([[[10, 20, 600, 500], [0, 0, 700, 700]]])
    cut = CutBatch(cut_views, torch.tensor([1]), crops, torch.tensor([[800, 900]]))
    images = torch.zeros(2, 3, 96, 120, dtype=torch.uint8)
    images[0] = bounded
    sizes = torch.tensor([[96, 120], [1, 1]])
    with torch.random.fork_rng():
        torch.manual_seed(4)
        views_a, views_b, params = augmenter.draw(images, sizes, cut=cut)
    # The parameters carry the boxes the views were cut with, in the photo's pixels.
    assert params.crops[1].tolist() == [10, 20, 600, 500]
    assert params.crops[3].tolist() == [0, 0, 700, 700]
    assert params.source_sizes[[1, 3]].tolist() == [[800, 900], [800, 900]]
    # The same draws without the cut: the bounded image's views are unchanged.
    with torch.random.fork_rng():
        torch.manual_seed(4)
        plain_a, plain_b, plain = augmenter.draw(images, sizes)
    assert torch.equal(plain.crops[[0, 2]], params.crops[[0, 2]])
    assert torch.equal(views_a[0], plain_a[0]) and torch.equal(views_b[0], plain_b[0])
    # The cut views: whole-image crops of the views themselves with the same parameters.
    whole = params.index(torch.tensor([1, 3]))
    whole.crops = torch.tensor([[0, 0, side, side], [0, 0, side, side]])
    expected = apply_batch_view_params(cut_views[0], whole, image_size=side)
    assert torch.allclose(views_a[1], expected[0], atol=1e-5)
    assert torch.allclose(views_b[1], expected[1], atol=1e-5)


def test_crop_at_decode__non_jpeg_large_source_is_cut_from_the_full_decode(tmp_path: Path):
    cutter = CropAtDecode(create_recipe("cifar", image_size=32))
    path = tmp_path / "large.png"
    Image.open(textured_photo(tmp_path / "large.jpg", 200, 150)).save(path)
    cut = cutter(path, seed=1)
    assert isinstance(cut, CutViews) and cut.denominator == 1
