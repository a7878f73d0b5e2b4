"""The pixel operations of batched augmentation, in place on float views in levels of 255.

Flip, colour jitter (brightness, contrast, saturation and an exact closed-form hue rotation),
grayscale and Gaussian blur, each on the views of a (sorted) batch that draw it; the results equal
torchvision's ops on the same parameters up to rounding (``tests/core/augment/test_batched.py``).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from .batched_params import BatchViewParams

#: Weights of R, G and B in the grayscale conversion (ITU-R 601-2, as torchvision).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Views are augmented in levels of 255 (the range of the uint8 sources) and scaled to [0, 1]
#: with the normalisation, which saves a pass over the pixels.
LEVELS = 255.0
#: Intermediate planes of the hue rotation.
HUE_PLANES = 7


def permutation_id(orders: torch.Tensor) -> torch.Tensor:
    """int64 (V,) in [0, 24): the Lehmer code of each permutation of four in ``orders`` (V, 4)."""
    code = torch.zeros(orders.shape[0], dtype=torch.int64, device=orders.device)
    for position, radix in zip(range(3), (6, 2, 1), strict=True):
        smaller_later = (orders[:, position + 1 :] < orders[:, position : position + 1]).sum(1)
        code += radix * smaller_later
    return code


def _where(mask: torch.Tensor) -> torch.Tensor | None:
    index = mask.nonzero()[:, 0]
    return index if index.numel() else None


def flip_views(views: torch.Tensor, flips: torch.Tensor) -> None:
    """Flip the views (V, 3, S, S) whose ``flips`` (bool (V,)) is set, in place."""
    index = _where(flips)
    if index is not None:
        views[index] = views[index].flip(-1)


def gray_levels(views: torch.Tensor) -> torch.Tensor:
    """The grayscale (V, 1, S, S) of views (V, 3, S, S), with torchvision's channel weights."""
    # One matrix product over the channels: 2x faster on the CPU than three scaled sums.
    weights = views.new_tensor(GRAY_WEIGHTS)
    count, _, height, width = views.shape
    return torch.matmul(weights, views.reshape(count, 3, height * width)).view(
        count, 1, height, width
    )


def color_jitter(
    views: torch.Tensor,
    params: BatchViewParams,
    group: torch.Tensor,
    *,
    planes: torch.Tensor | None = None,
) -> None:
    """Colour-jitter views (V, 3, S, S) in place, each in its own random order of operations.

    Args:
        views: Sorted by ``group``.
        params: The views' parameters (``factors`` and ``jitter_order``).
        group: int64 (V,), non-decreasing: each view's ``permutation_id``, 24 without jitter.
        planes: Buffers for the hue rotation (``rotate_hue``), or None to allocate.
    """
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
                rotate_hue(
                    slice_, column, planes=None if planes is None else planes[:, : end - start]
                )
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
    torch.lerp(gray_levels(x), x, factor, out=x).clamp_(0.0, LEVELS)


def rotate_hue(x: torch.Tensor, shift: torch.Tensor, *, planes: torch.Tensor | None = None) -> None:
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


_JITTER_OPERATIONS = (_brightness, _contrast, _saturation, rotate_hue)


def grayscale_views(views: torch.Tensor, grayscale: torch.Tensor) -> None:
    """Turn the views (V, 3, S, S) whose ``grayscale`` (bool (V,)) is set to gray, in place."""
    index = _where(grayscale)
    if index is not None:
        views[index] = gray_levels(views[index]).expand(-1, 3, -1, -1)


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


def blur_views(
    views: torch.Tensor, sigma: torch.Tensor, *, kernel_size: int, per_view: bool | None = None
) -> None:
    """Blur views (V, 3, S, S) in place by ``sigma`` (V,) pixels; NaN leaves a view alone."""
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
