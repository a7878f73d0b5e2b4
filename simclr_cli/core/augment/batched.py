"""Batched SimCLR augmentation: a whole batch of uint8 images in, normalised float views out.

This is the path training takes, and the one ``simclr visualize-aug`` shows. The per-image
reference (``reference.apply_view_params``, torchvision v2 ops one image at a time) is simple and
exact but costs Python and small-tensor overhead per image and per view. Here the random
parameters are drawn from the same ``AugmentationRecipe`` for a whole batch at once
(``batched_params.draw_batch_view_params``) and applied with a few vectorised torch ops
(``apply_batch_view_params`` here, the pixel operations in ``batched_ops``), on whatever device
the images are on:

- random resized crop and resize: one ``torchvision.ops.roi_align`` call for both views of every
  image. With ``aligned=True`` and an adaptive sampling ratio it samples at pixel centres like
  bilinear resizing, and averages several samples per output pixel when shrinking, which plays
  the role of torchvision's antialiasing;
- flip, colour jitter in each sample's random order, grayscale and Gaussian blur: masked
  in-place ops on the samples that draw them (hue is shifted exactly in HSV with a closed form
  instead of a full RGB->HSV->RGB round trip);
- conversion to float, scaling and normalisation folded into the last op.

Views cut at decode (large photos, ``data.crop_decode``; ``ImageBatch.cut``) arrive already
cropped and resized to S: for them the crop is skipped, and the same flip, colour and blur
follow. Their parameters are drawn as for every view (so the random stream does not depend on
which images were cut), and their boxes are replaced by the boxes they were cut with.

The result equals the reference up to interpolation and rounding: the reference rounds to uint8
after every colour op, the batched path stays in float (see ``tests/core/augment/test_batched.py``
for the tolerances). ``BatchAugmenter`` is the object the training loop calls, and the one
``visualize-aug`` draws its views and their parameters with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..choices import Preset
from ..constants import DEFAULT_MEAN, DEFAULT_STD
from ..data.crop_decode import CutBatch
from .batched_ops import (
    HUE_PLANES,
    LEVELS,
    blur_views,
    color_jitter,
    flip_views,
    grayscale_views,
    permutation_id,
)
from .batched_params import BatchViewParams, draw_batch_view_params
from .recipe import blur_kernel_size, create_recipe


def apply_batch_view_params(
    images: torch.Tensor,
    params: BatchViewParams,
    *,
    image_size: int,
    sources: torch.Tensor | None = None,
    mean: Sequence[float] | None = DEFAULT_MEAN,
    std: Sequence[float] | None = DEFAULT_STD,
    chunk_bytes: int | None = None,
    cut_views: torch.Tensor | None = None,
    cut: torch.Tensor | None = None,
) -> torch.Tensor:
    """Make the views that ``params`` describe, for a whole batch at once.

    Args:
        images: uint8 (N, 3, H, W) source images, on the device to compute on. Smaller images
            are edge-padded at the bottom and right (``data.decode.stack_images``).
        params: One row per view (V rows).
        image_size: Side S of the views.
        sources: int64 (V,): the image each view is cut from; ``arange(V)`` when None.
        mean: Per-channel mean for normalisation; None returns values in [0, 1].
        std: Per-channel standard deviation.
        chunk_bytes: Views are made in chunks of about this many bytes of float32 pixels. On the
            CPU the default (``CPU_CHUNK_BYTES``) keeps a chunk in the core's cache, which made
            the colour ops 10-30x faster at 224 px than whole-batch ops; on a GPU the default is
            the whole batch.
        cut_views: uint8 (P, 3, S, S): views already cropped and resized (cut at decode).
        cut: bool (V,): the views made from ``cut_views`` (their ``sources`` index it, their
            crop boxes are not used); None when there are none.

    Returns:
        float32 (V, 3, S, S) on the images' device.
    """
    device = images.device
    params = params.to(device)
    count = len(params)
    if sources is None:
        sources = torch.arange(count, device=device)
    sources = sources.to(device)
    if cut is not None:
        cut = cut.to(device)
        cut_views = None if cut_views is None else cut_views.to(device, non_blocking=True)
    if chunk_bytes is None:
        chunk_bytes = CPU_CHUNK_BYTES if device.type == "cpu" else 2**62
    chunk = max(1, chunk_bytes // (3 * image_size * image_size * 4))
    kernel_size = blur_kernel_size(image_size)
    # Views are made in an order sorted by their colour-jitter order (24 permutations, then the
    # views without jitter), so that the views of one order are contiguous slices that the
    # jitter changes in place, mostly several views at a time; each chunk is written back to
    # the caller's order by the copy into ``output``, which was needed anyway.
    group = torch.where(params.jitter, permutation_id(params.jitter_order), 24)
    order = torch.argsort(group, stable=True)
    # Views stay in levels of 255 until the end, where one multiply-add per chunk, while the
    # chunk is still in the cache, scales them and normalises them.
    if mean is None or std is None:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    scale = torch.tensor([1.0 / (LEVELS * s) for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=device)
    output = torch.empty(count, 3, image_size, image_size, device=device)
    # On the CPU the chunk's views and the hue's intermediate planes live in buffers made once
    # per call: fresh tensors for them in every chunk cost the kernel 250 page faults per
    # 224 px view (a quarter of the time), as the allocator handed their memory back and forth.
    workspace = _Workspace.create(chunk, image_size, device) if device.type == "cpu" else None
    if _resizes_per_view(images, image_size):
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for start in range(0, count, chunk):
            rows = order[start : start + chunk]
            part = params.index(rows)
            views = _crop_and_resize(
                images,
                part,
                sources[rows],
                image_size=image_size,
                workspace=workspace,
                cut_views=cut_views,
                cut=None if cut is None else cut[rows],
            )
            _augment_views(views, part, group[rows], kernel_size=kernel_size, workspace=workspace)
            if workspace is not None:
                # Normalised straight into the output, view by view: index_copy_ was 20x
                # slower than plain copies on the CPU.
                for position, row in enumerate(rows.tolist()):
                    torch.mul(views[position], scale[0], out=output[row]).add_(shift.view(3, 1, 1))
            else:
                views.mul_(scale).add_(shift.view(1, 3, 1, 1))
                output.index_copy_(0, rows, views)
    return output


def _resizes_per_view(images: torch.Tensor, image_size: int) -> bool:
    return images.device.type == "cpu" and image_size >= PER_VIEW_RESIZE_FROM


@dataclass
class _Workspace:
    """Buffers reused from chunk to chunk on the CPU.

    Attributes:
        views: float32 (C, 3, S, S): the chunk's views.
        planes: float32 (HUE_PLANES, C, S, S): the hue rotation's intermediate planes.
    """

    views: torch.Tensor
    planes: torch.Tensor

    @classmethod
    def create(cls, chunk: int, image_size: int, device: torch.device) -> _Workspace:
        return cls(
            views=torch.empty(chunk, 3, image_size, image_size, device=device),
            planes=torch.empty(HUE_PLANES, chunk, image_size, image_size, device=device),
        )


#: View side from which the CPU crops view by view with the uint8 resize (see below).
PER_VIEW_RESIZE_FROM = 96
#: Bytes of float32 views augmented together on the CPU (about two 224 px views).
CPU_CHUNK_BYTES = 1_300_000


def _crop_and_resize(
    images: torch.Tensor,
    params: BatchViewParams,
    sources: torch.Tensor,
    *,
    image_size: int,
    workspace: _Workspace | None = None,
    cut_views: torch.Tensor | None = None,
    cut: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop, resize to S and flip every view: float (V, 3, S, S) in levels [0, 255].

    One ``roi_align`` call resamples all views, except for large views on the CPU: there torch's
    antialiased uint8 resize (SIMD kernels) per view, what the reference does, was 3x faster
    than ``roi_align`` at 224 px, while at 32 px the single batched call was 2.9x faster than a
    loop over the views (``benchmarks/RESULTS.md``). Views marked in ``cut`` are taken from
    ``cut_views`` as they are (then flipped).
    """
    if cut is not None and cut_views is not None and bool(cut.any()):
        return _take_cut_views(
            images,
            params,
            sources,
            image_size=image_size,
            workspace=workspace,
            cut_views=cut_views,
            cut=cut,
        )
    if _resizes_per_view(images, image_size):
        views = (
            workspace.views[: len(params)]
            if workspace is not None
            else torch.empty(len(params), 3, image_size, image_size)
        )
        for view, source, (top, left, height, width), flip in zip(
            views, sources.tolist(), params.crops.tolist(), params.flips.tolist(), strict=True
        ):
            # What torchvision's resized_crop does, called directly on a channels-last source
            # (``apply_batch_view_params`` converts it once), the layout the uint8 kernel
            # works in: 1.8x faster than resized_crop on a contiguous image.
            resized = F.interpolate(
                images[source : source + 1, :, top : top + height, left : left + width],
                size=(image_size, image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
            # Flipping the uint8 view is 4x less memory traffic than flipping floats later.
            view.copy_(resized.flip(-1) if flip else resized)
        return views
    top, left, height, width = params.crops.double().unbind(dim=1)
    boxes = torch.stack([sources.double(), left, top, left + width, top + height], dim=1)
    views = roi_align(
        images.float(), boxes.float(), output_size=image_size, sampling_ratio=-1, aligned=True
    )
    flip_views(views, params.flips)
    return views


def _take_cut_views(
    images: torch.Tensor,
    params: BatchViewParams,
    sources: torch.Tensor,
    *,
    image_size: int,
    workspace: _Workspace | None,
    cut_views: torch.Tensor,
    cut: torch.Tensor,
) -> torch.Tensor:
    """``_crop_and_resize`` for a chunk with views cut at decode: those are only flipped."""
    count = len(params)
    views = (
        workspace.views[:count]
        if workspace is not None
        else torch.empty(count, 3, image_size, image_size, device=images.device)
    )
    kept = (~cut).nonzero()[:, 0]
    if kept.numel():
        views[kept] = _crop_and_resize(
            images, params.index(kept), sources[kept], image_size=image_size
        )
    taken = cut.nonzero()[:, 0]
    cut_part = cut_views.index_select(0, sources[taken]).float()
    flips = params.flips[taken].to(cut_part.device)
    flip_views(cut_part, flips)
    views[taken] = cut_part
    return views


def _augment_views(
    views: torch.Tensor,
    params: BatchViewParams,
    group: torch.Tensor,
    *,
    kernel_size: int,
    workspace: _Workspace | None = None,
) -> None:
    """Colour jitter, grayscale and blur float views (V, 3, S, S) in levels, in place.

    Args:
        views: Already flipped, sorted by ``group``.
        params: The views' parameters.
        group: int64 (V,), non-decreasing: each view's jitter order (``permutation_id``), 24
            for views without jitter.
        kernel_size: Side of the blur kernel.
        workspace: Buffers to reuse, or None to allocate.
    """
    planes = None if workspace is None else workspace.planes
    color_jitter(views, params, group, planes=planes)
    grayscale_views(views, params.grayscale)
    blur_views(views, params.blur_sigma, kernel_size=kernel_size)


class BatchAugmenter:
    """Two views of every image of an ``ImageBatch``, made on the training device.

    What training calls (``augmenter(batch.images, batch.sizes)``) and what ``simclr
    visualize-aug`` calls (``augmenter.draw``, the same views with their parameters).

    Args:
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        image_size: Side of the views.
        color_strength: Strength s of the colour distortion; the preset's default when None.
        device: Where to augment (the training device).
        generator: CPU random source of the parameters; the global torch generator when None.
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation.
        memory_format: Memory format of the returned views.
    """

    def __init__(
        self,
        preset: Preset | str,
        *,
        image_size: int,
        color_strength: float | None = None,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.recipe = create_recipe(preset, image_size=image_size, color_strength=color_strength)
        self.device = torch.device(device)
        self.generator = generator
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.memory_format = memory_format

    @property
    def preset(self) -> Preset:
        """The recipe's preset, ``imagenet`` or ``cifar``."""
        return self.recipe.preset

    @property
    def image_size(self) -> int:
        """Side of the views in pixels."""
        return self.recipe.image_size

    @property
    def color_strength(self) -> float:
        """Strength s of the colour distortion."""
        return self.recipe.color_strength

    def sample(self, sizes: torch.Tensor) -> BatchViewParams:
        """Parameters of one view per row of ``sizes`` (B, 2)."""
        return draw_batch_view_params(self.recipe, sizes, generator=self.generator)

    def draw(
        self, images: torch.Tensor, sizes: torch.Tensor, *, cut: CutBatch | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, BatchViewParams]:
        """Views a and b as ``__call__`` makes them, and the parameters drawn for them.

        Args:
            images: uint8 (B, 3, H, W), edge-padded where smaller (``ImageBatch.images``).
            sizes: int64 (B, 2), each image's height and width before padding.
            cut: The views of rows cut at decode (``ImageBatch.cut``): not cropped here, and
                their boxes and source sizes in the parameters are those they were cut with.

        Returns:
            Views a and b, float32 (B, 3, S, S) normalised, on ``device``; and the parameters
            of the 2B views, rows 0..B-1 for the a views and B..2B-1 for the b views (CPU).
        """
        count = images.shape[0]
        images = images.to(self.device, non_blocking=True)
        params = self.sample(torch.cat([sizes, sizes]))
        sources = torch.arange(count, device=self.device).repeat(2)
        cut_views, cut_mask = None, None
        if cut is not None and len(cut):
            # View a of cut image p is cut_views[2p], view b cut_views[2p + 1].
            rows = torch.cat([cut.rows, cut.rows + count])
            pieces = torch.arange(len(cut), dtype=torch.int64)
            params.crops[rows] = torch.cat([cut.crops[:, 0], cut.crops[:, 1]])
            params.source_sizes[rows] = cut.source_sizes.repeat(2, 1)
            sources[rows.to(self.device)] = torch.cat([2 * pieces, 2 * pieces + 1]).to(self.device)
            cut_mask = torch.zeros(2 * count, dtype=torch.bool)
            cut_mask[rows] = True
            cut_views = cut.views.reshape(-1, *cut.views.shape[2:])
        views = apply_batch_view_params(
            images,
            params,
            image_size=self.image_size,
            sources=sources,
            mean=self.mean,
            std=self.std,
            cut_views=cut_views,
            cut=cut_mask,
        )
        views = views.contiguous(memory_format=self.memory_format)
        return views[:count], views[count:], params

    def __call__(
        self, images: torch.Tensor, sizes: torch.Tensor, *, cut: CutBatch | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Views a and b (B, 3, S, S), float32 normalised, from uint8 images (B, 3, H, W) and
        the views cut at decode (``ImageBatch.cut``)."""
        views_a, views_b, _ = self.draw(images, sizes, cut=cut)
        return views_a, views_b

    def micro_batches(
        self, images: torch.Tensor, sizes: torch.Tensor, *, count: int
    ) -> MicroBatchViews:
        """The views of ``__call__``, made one micro-batch at a time when each is asked for.

        The parameters of all 2B views are drawn now, as ``__call__`` draws them (the same
        numbers from the same generator), so micro-batch k holds the rows of ``__call__``'s
        views that ``torch.tensor_split(views, count)[k]`` would: gradient caching
        (``loss.grad_cache``) gets the same views either way, with one micro-batch of float
        views in memory instead of the whole batch's.

        Args:
            images: uint8 (B, 3, H, W), edge-padded where smaller (``ImageBatch.images``).
            sizes: int64 (B, 2), each image's height and width before padding.
            count: Number of micro-batches K.
        """
        images = images.to(self.device, non_blocking=True)
        params = self.sample(torch.cat([sizes, sizes]))
        return MicroBatchViews(self, images, params, count=count)


class MicroBatchViews:
    """The two views of a batch in K micro-batches, each made when it is asked for.

    Item k is (views a, views b), float32 (n_k, 3, S, S) on the augmenter's device; asking for
    it again makes the same views again (the parameters were drawn once, the ops are
    deterministic). From ``BatchAugmenter.micro_batches``.

    Args:
        augmenter: Gives the view size, normalisation and memory format.
        images: uint8 (B, 3, H, W) on the augmenter's device.
        params: The parameters of the 2B views: rows 0..B-1 the a views, B..2B-1 the b views.
        count: Number of micro-batches K.
    """

    def __init__(
        self,
        augmenter: BatchAugmenter,
        images: torch.Tensor,
        params: BatchViewParams,
        *,
        count: int,
    ):
        self.augmenter = augmenter
        self.images = images
        self.params = params
        # The images of each micro-batch, as torch.tensor_split divides the batch.
        self.rows = torch.tensor_split(torch.arange(images.shape[0]), count)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def batch_size(self) -> int:
        """Images B in the whole batch."""
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views a and b of micro-batch ``index``, each (n_k, 3, S, S)."""
        rows = self.rows[index]
        count = rows.shape[0]
        augmenter = self.augmenter
        views = apply_batch_view_params(
            self.images[rows.to(self.images.device)],
            self.params.index(torch.cat([rows, rows + self.batch_size])),
            image_size=augmenter.image_size,
            sources=torch.arange(count).repeat(2),
            mean=augmenter.mean,
            std=augmenter.std,
        )
        views = views.contiguous(memory_format=augmenter.memory_format)
        return views[:count], views[count:]
