"""Batched augmentation: the per-image reference's output for the same parameters, on any
device, and the augmenter training calls."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simclr_cli.core.augment.batched import BatchAugmenter, apply_batch_view_params
from simclr_cli.core.augment.batched_params import BatchViewParams, sample_batch_view_params
from simclr_cli.core.augment.reference import apply_view_params, sample_view_params
from tests.core.augment.conftest import shape_images


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


@pytest.mark.parametrize("image_size,source", [(32, 40), (96, 100)])
def test_batch_augmenter__micro_batches_make_the_views_of_the_whole_batch(
    image_size: int, source: int
):
    # The same seed gives the same parameters, so micro-batch k holds rows k of the whole
    # batch's views, whether they come from one roi_align call (32 px) or a resize per view.
    images = shape_images(5, source)
    sizes = torch.tensor([[source, source]]).repeat(5, 1)
    whole = BatchAugmenter("imagenet", image_size=image_size, generator=torch.Generator())
    split = BatchAugmenter("imagenet", image_size=image_size, generator=torch.Generator())
    whole.generator.manual_seed(8)
    split.generator.manual_seed(8)
    views_a, views_b = whole(images, sizes)
    micro_batches = split.micro_batches(images, sizes, count=2)
    assert len(micro_batches) == 2 and micro_batches.batch_size == 5
    # Rows as torch.tensor_split gives them: 3 images, then 2.
    for index, rows in enumerate([slice(0, 3), slice(3, 5)]):
        chunk_a, chunk_b = micro_batches[index]
        assert chunk_a.shape == (rows.stop - rows.start, 3, image_size, image_size)
        torch.testing.assert_close(chunk_a, views_a[rows], rtol=0, atol=1e-6)
        torch.testing.assert_close(chunk_b, views_b[rows], rtol=0, atol=1e-6)
        # Asked again (the replay of gradient caching), the same views again.
        again_a, again_b = micro_batches[index]
        assert torch.equal(again_a, chunk_a) and torch.equal(again_b, chunk_b)
