"""Batched SimCLR augmentation: a whole batch of uint8 images in, normalised float views out.

The per-image reference (``view_params.apply_view_params``, torchvision v2 ops one image at a
time) is simple and exact but costs Python and small-tensor overhead per image and per view. Here
the same random parameters are drawn for a whole batch at once (``sample_batch_view_params``,
the distributions of the torchvision presets) and applied with a few vectorised torch ops
(``apply_batch_view_params``), on whatever device the images are on:

- random resized crop and resize: one ``torchvision.ops.roi_align`` call for both views of every
  image. With ``aligned=True`` and an adaptive sampling ratio it samples at pixel centres like
  bilinear resizing, and averages several samples per output pixel when shrinking, which plays
  the role of torchvision's antialiasing;
- flip, colour jitter in each sample's random order, grayscale and Gaussian blur: masked
  in-place ops on the samples that draw them (hue is shifted exactly in HSV with a closed form
  instead of a full RGB->HSV->RGB round trip);
- conversion to float, scaling and normalisation folded into the last op.

The result equals the reference up to interpolation and rounding: the reference rounds to uint8
after every colour op, the batched path stays in float (see ``tests/core/test_batch_augment.py``
for the tolerances). ``BatchViewParams.to_view_params`` turns a batch of parameters into the
``ViewParams`` records that ``visualize-aug`` prints, and ``from_view_params`` goes back.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..config import Preset
from .presets import (
    CROP_SCALE,
    DEFAULT_COLOR_STRENGTH,
    DEFAULT_MEAN,
    DEFAULT_STD,
    blur_kernel_size,
    resolve_preset,
)
from .reference import (
    BLUR_PROBABILITY,
    BLUR_SIGMA,
    CROP_RATIO,
    FLIP_PROBABILITY,
    GRAYSCALE_PROBABILITY,
    JITTER_PROBABILITY,
    ViewParams,
    jitter_ranges,
)

#: Weights of R, G and B in the grayscale conversion (ITU-R 601-2, as torchvision).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Tries of the random resized crop before its central fallback (as torchvision).
CROP_TRIES = 10
#: Views are augmented in levels of 255 (the range of the uint8 sources) and scaled to [0, 1]
#: with the normalisation, which saves a pass over the pixels.
LEVELS = 255.0
#: Intermediate planes of the hue rotation.
HUE_PLANES = 7


@dataclass
class BatchViewParams:
    """The random parameters of B views, as tensors (one row per view).

    Attributes:
        crops: int64 (B, 4): top, left, height and width of each crop box in source pixels.
        flips: bool (B,).
        jitter: bool (B,): whether colour jitter is applied.
        factors: float32 (B, 4): brightness, contrast, saturation factors and hue shift.
        jitter_order: int64 (B, 4): order of the jitter operations (0 brightness, 1 contrast,
            2 saturation, 3 hue).
        grayscale: bool (B,).
        blur_sigma: float32 (B,): blur standard deviation in output pixels, NaN for no blur.
        source_sizes: int64 (B, 2): height and width of each source image.
    """

    crops: torch.Tensor
    flips: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    jitter_order: torch.Tensor
    grayscale: torch.Tensor
    blur_sigma: torch.Tensor
    source_sizes: torch.Tensor

    def __len__(self) -> int:
        return self.crops.shape[0]

    def to(self, device: torch.device | str) -> BatchViewParams:
        """The same parameters on another device."""
        return BatchViewParams(**{k: v.to(device) for k, v in vars(self).items()})

    def index(self, rows: torch.Tensor) -> BatchViewParams:
        """The parameters of the views at ``rows``."""
        return BatchViewParams(**{k: v[rows] for k, v in vars(self).items()})

    def to_view_params(self) -> list[ViewParams]:
        """One ``ViewParams`` record per view, as the per-image reference and captions use."""
        records = []
        for row in range(len(self)):
            brightness, contrast, saturation, hue = self.factors[row].tolist()
            top, left, crop_height, crop_width = self.crops[row].tolist()
            first, second, third, fourth = self.jitter_order[row].tolist()
            source_height, source_width = self.source_sizes[row].tolist()
            sigma = float(self.blur_sigma[row])
            records.append(
                ViewParams(
                    crop=(top, left, crop_height, crop_width),
                    flip=bool(self.flips[row]),
                    color_jitter=bool(self.jitter[row]),
                    brightness=brightness,
                    contrast=contrast,
                    saturation=saturation,
                    hue=hue,
                    jitter_order=(first, second, third, fourth),
                    grayscale=bool(self.grayscale[row]),
                    blur_sigma=None if math.isnan(sigma) else sigma,
                    source_size=(source_height, source_width),
                )
            )
        return records

    @classmethod
    def from_view_params(cls, records: Sequence[ViewParams]) -> BatchViewParams:
        """Stack ``ViewParams`` records into tensors."""
        return cls(
            crops=torch.tensor([r.crop for r in records], dtype=torch.int64),
            flips=torch.tensor([r.flip for r in records], dtype=torch.bool),
            jitter=torch.tensor([r.color_jitter for r in records], dtype=torch.bool),
            factors=torch.tensor(
                [(r.brightness, r.contrast, r.saturation, r.hue) for r in records],
                dtype=torch.float32,
            ),
            jitter_order=torch.tensor([r.jitter_order for r in records], dtype=torch.int64),
            grayscale=torch.tensor([r.grayscale for r in records], dtype=torch.bool),
            blur_sigma=torch.tensor(
                [math.nan if r.blur_sigma is None else r.blur_sigma for r in records],
                dtype=torch.float32,
            ),
            source_sizes=torch.tensor([r.source_size for r in records], dtype=torch.int64),
        )


def sample_batch_crops(
    sizes: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw random resized crop boxes for many images at once, as ``RandomResizedCrop``.

    All ten tries are drawn for every image and the first that fits is kept; images where none
    fits take torchvision's central fallback.

    Args:
        sizes: int64 (B, 2), height and width of each source image.
        generator: Random source (CPU).

    Returns:
        int64 (B, 4): top, left, height, width.
    """
    count = sizes.shape[0]
    height, width = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = height * width * _uniform((count, CROP_TRIES), *CROP_SCALE, generator)
    low_log_ratio, high_log_ratio = torch.log(torch.tensor(CROP_RATIO)).tolist()
    ratio = torch.exp(_uniform((count, CROP_TRIES), low_log_ratio, high_log_ratio, generator))
    crop_width = torch.round(torch.sqrt(area * ratio))
    crop_height = torch.round(torch.sqrt(area / ratio))
    fits = (crop_width > 0) & (crop_width <= width) & (crop_height > 0) & (crop_height <= height)
    first = fits.double().argmax(dim=1, keepdim=True)
    crop_width = crop_width.gather(1, first)[:, 0]
    crop_height = crop_height.gather(1, first)[:, 0]
    height, width = height[:, 0], width[:, 0]
    # Positions are uniform over the integer offsets that keep the box inside the image.
    top = torch.floor(
        torch.rand(count, generator=generator, dtype=torch.float64) * (height - crop_height + 1)
    )
    left = torch.floor(
        torch.rand(count, generator=generator, dtype=torch.float64) * (width - crop_width + 1)
    )
    # The central fallback, clipped to the aspect-ratio range.
    found = fits.any(dim=1)
    if not bool(found.all()):
        aspect = width / height
        low, high = min(CROP_RATIO), max(CROP_RATIO)
        fallback_width = torch.where(aspect > high, torch.round(height * high), width)
        fallback_height = torch.where(aspect < low, torch.round(width / low), height)
        crop_width = torch.where(found, crop_width, fallback_width)
        crop_height = torch.where(found, crop_height, fallback_height)
        top = torch.where(found, top, torch.div(height - crop_height, 2, rounding_mode="floor"))
        left = torch.where(found, left, torch.div(width - crop_width, 2, rounding_mode="floor"))
    return torch.stack([top, left, crop_height, crop_width], dim=1).long()


def sample_batch_view_params(
    sizes: torch.Tensor,
    *,
    preset: Preset | str,
    color_strength: float,
    image_size: int,
    generator: torch.Generator | None = None,
) -> BatchViewParams:
    """Draw the parameters of one view for each of B images, with the presets' distributions.

    The distributions are those of ``view_params.sample_view_params`` (and so of the
    torchvision presets); the draws come in a different order, so a seed gives different values.

    Args:
        sizes: int64 (B, 2), height and width of each source image.
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        color_strength: Strength s of the colour distortion.
        image_size: Side of the output views.
        generator: Random source (CPU).

    Returns:
        The parameters, on the CPU.
    """
    preset = resolve_preset(preset, image_size=image_size)
    sizes = sizes.to("cpu", torch.int64)
    count = sizes.shape[0]
    crops = sample_batch_crops(sizes, generator=generator)
    flips = torch.rand(count, generator=generator) < FLIP_PROBABILITY
    jitter = torch.rand(count, generator=generator) < JITTER_PROBABILITY
    order = torch.rand(count, 4, generator=generator).argsort(dim=1)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(count, 1)
    for column, bounds in enumerate(jitter_ranges(color_strength).values()):
        if bounds is not None:
            drawn = _uniform((count,), *bounds, generator).float()
            factors[:, column] = torch.where(jitter, drawn, factors[:, column])
    order = torch.where(jitter[:, None], order, torch.arange(4).expand(count, 4))
    grayscale = torch.rand(count, generator=generator) < GRAYSCALE_PROBABILITY
    blur_sigma = torch.full((count,), math.nan)
    if preset is Preset.imagenet:
        blurred = torch.rand(count, generator=generator) < BLUR_PROBABILITY
        sigma = _uniform((count,), *BLUR_SIGMA, generator).float()
        blur_sigma = torch.where(blurred, sigma, blur_sigma)
    return BatchViewParams(
        crops=crops,
        flips=flips,
        jitter=jitter,
        factors=factors,
        jitter_order=order,
        grayscale=grayscale,
        blur_sigma=blur_sigma,
        source_sizes=sizes.clone(),
    )


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)


def apply_batch_view_params(
    images: torch.Tensor,
    params: BatchViewParams,
    *,
    image_size: int,
    sources: torch.Tensor | None = None,
    mean: Sequence[float] | None = DEFAULT_MEAN,
    std: Sequence[float] | None = DEFAULT_STD,
    chunk_bytes: int | None = None,
) -> torch.Tensor:
    """Make the views that ``params`` describe, for a whole batch at once.

    Args:
        images: uint8 (N, 3, H, W) source images, on the device to compute on. Smaller images
            are edge-padded at the bottom and right (``datapipe.stack_images``).
        params: One row per view (V rows).
        image_size: Side S of the views.
        sources: int64 (V,): the image each view is cut from; ``arange(V)`` when None.
        mean: Per-channel mean for normalisation; None returns values in [0, 1].
        std: Per-channel standard deviation.
        chunk_bytes: Views are made in chunks of about this many bytes of float32 pixels. On the
            CPU the default (``CPU_CHUNK_BYTES``) keeps a chunk in the core's cache, which made
            the colour ops 10-30x faster at 224 px than whole-batch ops; on a GPU the default is
            the whole batch.

    Returns:
        float32 (V, 3, S, S) on the images' device.
    """
    device = images.device
    params = params.to(device)
    count = len(params)
    if sources is None:
        sources = torch.arange(count, device=device)
    sources = sources.to(device)
    if chunk_bytes is None:
        chunk_bytes = CPU_CHUNK_BYTES if device.type == "cpu" else 2**62
    chunk = max(1, chunk_bytes // (3 * image_size * image_size * 4))
    kernel_size = blur_kernel_size(image_size)
    # Views are made in an order sorted by their colour-jitter order (24 permutations, then the
    # views without jitter), so that the views of one order are contiguous slices that the
    # jitter changes in place, mostly several views at a time; each chunk is written back to
    # the caller's order by the copy into ``output``, which was needed anyway.
    group = torch.where(params.jitter, _permutation_id(params.jitter_order), 24)
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
                images, part, sources[rows], image_size=image_size, workspace=workspace
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
) -> torch.Tensor:
    """Crop, resize to S and flip every view: float (V, 3, S, S) in levels [0, 255].

    One ``roi_align`` call resamples all views, except for large views on the CPU: there torch's
    antialiased uint8 resize (SIMD kernels) per view, what the reference does, was 3x faster
    than ``roi_align`` at 224 px, while at 32 px the single batched call was 2.9x faster than a
    loop over the views (``benchmarks/RESULTS.md``).
    """
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
    _flip(views, params.flips)
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
        group: int64 (V,), non-decreasing: each view's jitter order (``_permutation_id``), 24
            for views without jitter.
        kernel_size: Side of the blur kernel.
        workspace: Buffers to reuse, or None to allocate.
    """
    planes = None if workspace is None else workspace.planes
    _color_jitter(views, params, group, planes=planes)
    _grayscale(views, params.grayscale)
    _blur(views, params.blur_sigma, kernel_size=kernel_size)


def _permutation_id(orders: torch.Tensor) -> torch.Tensor:
    # A number in [0, 24) for each permutation of four: its Lehmer code.
    code = torch.zeros(orders.shape[0], dtype=torch.int64, device=orders.device)
    for position, radix in zip(range(3), (6, 2, 1), strict=True):
        smaller_later = (orders[:, position + 1 :] < orders[:, position : position + 1]).sum(1)
        code += radix * smaller_later
    return code


def _where(mask: torch.Tensor) -> torch.Tensor | None:
    index = mask.nonzero()[:, 0]
    return index if index.numel() else None


def _flip(views: torch.Tensor, flips: torch.Tensor) -> None:
    index = _where(flips)
    if index is not None:
        views[index] = views[index].flip(-1)


def _gray(views: torch.Tensor) -> torch.Tensor:
    # One matrix product over the channels: 2x faster on the CPU than three scaled sums.
    weights = views.new_tensor(GRAY_WEIGHTS)
    count, _, height, width = views.shape
    return torch.matmul(weights, views.reshape(count, 3, height * width)).view(
        count, 1, height, width
    )


def _color_jitter(
    views: torch.Tensor,
    params: BatchViewParams,
    group: torch.Tensor,
    *,
    planes: torch.Tensor | None = None,
) -> None:
    # Views are sorted by group, so every group of one jitter order is a slice; group 24, the
    # views without jitter, comes last and is left alone.
    boundaries = torch.searchsorted(group, torch.arange(25, device=group.device)).tolist()
    for start, end in itertools.pairwise(boundaries):
        if start == end:
            continue
        slice_ = views[start:end]
        factors = params.factors[start:end]
        for operation in params.jitter_order[start].tolist():
            column = factors[:, operation]
            identity = 0.0 if operation == 3 else 1.0
            if bool((column == identity).all()):
                continue
            if operation == 3:
                _hue(slice_, column, planes=None if planes is None else planes[:, : end - start])
            else:
                _JITTER_OPERATIONS[operation](slice_, column.view(-1, 1, 1, 1))


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> None:
    x.mul_(factor).clamp_(0.0, LEVELS)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> None:
    # The mean of the grayscale image is the weighted sum of the channel means.
    mean = (x.mean(dim=(2, 3)) @ x.new_tensor(GRAY_WEIGHTS)).view(-1, 1, 1, 1)
    x.mul_(factor).add_((1.0 - factor) * mean).clamp_(0.0, LEVELS)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> None:
    # gray + factor * (x - gray), in one pass, written into x.
    torch.lerp(_gray(x), x, factor, out=x).clamp_(0.0, LEVELS)


def _hue(x: torch.Tensor, shift: torch.Tensor, *, planes: torch.Tensor | None = None) -> None:
    """Rotate the hue of views x (V, 3, S, S) in levels by ``shift`` (V,) turns, in place.

    An exact HSV hue rotation without the full round trip: value (max) and chroma (max - min)
    do not change, and each output channel is max - chroma * weight, with the weight 1 within
    1 of the channel's opposite hue (3, 5 and 1 sixths of a turn for red, green and blue), 0
    beyond 2, linear between. Comparisons and torch.where were 4x slower than arithmetic ops on
    the CPU, so the hue sector is picked with ceil (1 for every channel below the maximum, 0
    for the maximum) and lerp; every intermediate goes to one of the ``planes``
    (float32 (HUE_PLANES, V, S, S), allocated when None).
    """
    if planes is None:
        planes = x.new_empty(HUE_PLANES, x.shape[0], *x.shape[2:])
    high, chroma, hue, below_red, below_green, below_blue, spare = planes
    red, green, blue = x.unbind(dim=1)
    torch.maximum(torch.maximum(red, green, out=high), blue, out=high)
    torch.minimum(torch.minimum(red, green, out=chroma), blue, out=chroma)
    torch.sub(high, chroma, out=chroma)
    inverse = torch.clamp(chroma, min=1e-12, out=hue).reciprocal_()
    # How far each channel is below the maximum, in units of chroma (0 for the maximum).
    torch.sub(high, red, out=below_red).mul_(inverse)
    torch.sub(high, green, out=below_green).mul_(inverse)
    torch.sub(high, blue, out=below_blue).mul_(inverse)
    # Six times the hue, from the sector of the channel holding the maximum (red first on ties):
    # below_blue - below_green for red, 2 + below_red - below_blue for green and
    # 4 + below_green - below_red for blue.
    if_green = torch.sub(below_red, below_blue, out=spare).add_(2.0)
    if_red = torch.sub(below_blue, below_green, out=hue)
    if_blue = torch.sub(below_green, below_red, out=below_blue).add_(4.0)
    torch.lerp(if_green, if_blue, below_green.ceil_(), out=if_green)
    torch.lerp(if_red, if_green, below_red.ceil_(), out=hue)
    # Shifted by 6 * shift plus 12 (so it is positive), then taken modulo 6; the floor-based
    # modulo was 1.9x faster than torch.remainder.
    hue.add_(6.0 * shift.view(-1, 1, 1) + 12.0)
    hue.sub_(torch.mul(hue, 1.0 / 6.0, out=spare).floor_().mul_(6.0))
    distance, mirrored = below_red, below_green
    for channel, opposite in enumerate((3.0, 5.0, 1.0)):
        torch.sub(hue, opposite, out=distance).abs_()
        if opposite != 3.0:
            # The distance around the circle of hues.
            mirrored = torch.neg(distance, out=mirrored).add_(6.0)
            torch.minimum(distance, mirrored, out=distance)
        weight = distance.neg_().add_(2.0).clamp_(0.0, 1.0)
        torch.addcmul(high, chroma, weight, value=-1.0, out=x[:, channel])


_JITTER_OPERATIONS = (_brightness, _contrast, _saturation, _hue)


def _grayscale(views: torch.Tensor, grayscale: torch.Tensor) -> None:
    index = _where(grayscale)
    if index is not None:
        views[index] = _gray(views[index]).expand(-1, 3, -1, -1)


def _blur_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    # torchvision's kernels: a Gaussian sampled at integer offsets, normalised over the kernel.
    reach = kernel_size // 2
    positions = torch.linspace(-reach, reach, kernel_size, device=sigma.device)
    kernel = torch.exp(-0.5 * (positions[None] / sigma[:, None]) ** 2)
    return kernel / kernel.sum(dim=1, keepdim=True)


def _blur_radius(sigma: float, kernel_size: int) -> int:
    # Taps further than 4 sigma from the centre (weight < 3e-4 of the peak) are left out, which
    # changes no output by more than 0.1 level of 255 and saves most of the 23 taps at 224 px.
    return min(kernel_size // 2, max(1, math.ceil(4.0 * sigma)))


def _blur(
    views: torch.Tensor, sigma: torch.Tensor, *, kernel_size: int, per_view: bool | None = None
) -> None:
    # A separable Gaussian per sample with reflect padding, as torchvision's gaussian_blur, as
    # weighted sums of shifted slices (grouped convolutions with one kernel per sample were
    # 2-4x slower on the CPU). ``per_view`` defaults to whether the views are on the CPU.
    index = _where(~torch.isnan(sigma))
    if index is None:
        return
    if views.device.type == "cpu" if per_view is None else per_view:
        # On the CPU, view by view with each view's own radius and the weights as Python
        # numbers (scalar multiply-adds were 1.6x faster than ones broadcasting a tensor).
        reach = kernel_size // 2
        kernels = _blur_kernels(sigma[index], kernel_size).tolist()
        for row, kernel in zip(index.tolist(), kernels, strict=True):
            radius = _blur_radius(float(sigma[row]), kernel_size)
            _blur_one(views[row], kernel[reach - radius : reach + radius + 1])
        return
    sigma = sigma[index]
    radius = _blur_radius(float(sigma.max()), kernel_size)
    taps = 2 * radius + 1
    reach = kernel_size // 2
    kernel = _blur_kernels(sigma, kernel_size)
    kernel = kernel[:, reach - radius : reach + radius + 1].reshape(-1, taps, 1, 1, 1)
    side = views.shape[-1]
    padded = F.pad(views[index], (radius, radius, radius, radius), mode="reflect")
    rows = torch.zeros(index.numel(), 3, side + 2 * radius, side, device=views.device)
    for tap in range(taps):
        rows.addcmul_(padded[..., tap : tap + side], kernel[:, tap])
    blurred = torch.zeros(index.numel(), 3, side, side, device=views.device)
    for tap in range(taps):
        blurred.addcmul_(rows[..., tap : tap + side, :], kernel[:, tap])
    views[index] = blurred


def _blur_one(view: torch.Tensor, kernel: list[float]) -> None:
    """Blur one view (3, S, S) in place with a 1-D kernel of odd length along both axes."""
    radius = len(kernel) // 2
    side = view.shape[-1]
    padded = F.pad(view[None], (radius, radius, radius, radius), mode="reflect")[0]
    rows = torch.mul(padded[..., 0:side], kernel[0])
    for tap in range(1, len(kernel)):
        rows.add_(padded[..., tap : tap + side], alpha=kernel[tap])
    torch.mul(rows[..., 0:side, :], kernel[0], out=view)
    for tap in range(1, len(kernel)):
        view.add_(rows[..., tap : tap + side, :], alpha=kernel[tap])


class BatchAugmenter:
    """Two views of every image of an ``ImageBatch``, made on the training device.

    Args:
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        image_size: Side of the views.
        color_strength: Strength s of the colour distortion; the preset's default when None.
        device: Where to augment (the training device).
        generator: CPU random source of the parameters.
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
        self.preset = resolve_preset(preset, image_size=image_size)
        self.image_size = image_size
        self.color_strength = (
            DEFAULT_COLOR_STRENGTH[self.preset] if color_strength is None else color_strength
        )
        self.device = torch.device(device)
        self.generator = generator
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.memory_format = memory_format

    def sample(self, sizes: torch.Tensor) -> BatchViewParams:
        """Parameters of one view per row of ``sizes`` (B, 2)."""
        return sample_batch_view_params(
            sizes,
            preset=self.preset,
            color_strength=self.color_strength,
            image_size=self.image_size,
            generator=self.generator,
        )

    def __call__(
        self, images: torch.Tensor, sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Views a and b (B, 3, S, S), float32 normalised, from uint8 images (B, 3, H, W)."""
        count = images.shape[0]
        images = images.to(self.device, non_blocking=True)
        params = self.sample(torch.cat([sizes, sizes]))
        sources = torch.arange(count, device=self.device).repeat(2)
        views = apply_batch_view_params(
            images,
            params,
            image_size=self.image_size,
            sources=sources,
            mean=self.mean,
            std=self.std,
        )
        views = views.contiguous(memory_format=self.memory_format)
        return views[:count], views[count:]
