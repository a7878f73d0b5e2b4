"""The random parameters of batched SimCLR views: ``BatchViewParams`` and their draws.

``draw_batch_view_params`` draws one view's parameters per image of a batch from an
``AugmentationRecipe``, every kind for the whole batch at once; ``BatchViewParams.to_view_params``
turns them into the per-image ``ViewParams`` records that ``visualize-aug`` captions views with,
and ``from_view_params`` goes back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..choices import Preset
from .recipe import CROP_RATIO, CROP_SCALE, CROP_TRIES, AugmentationRecipe, create_recipe
from .reference import ViewParams


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
            top, left, height, width = self.crops[row].tolist()
            first, second, third, fourth = self.jitter_order[row].tolist()
            source_height, source_width = self.source_sizes[row].tolist()
            sigma = float(self.blur_sigma[row])
            records.append(
                ViewParams(
                    crop=(top, left, height, width),
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
    sizes: torch.Tensor,
    *,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    tries: int = CROP_TRIES,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw random resized crop boxes for many images at once, as ``RandomResizedCrop``.

    All ``tries`` tries are drawn for every image and the first that fits is kept; images where
    none fits take torchvision's central fallback.

    Args:
        sizes: int64 (B, 2), height and width of each source image.
        scale: Range of the box's area as a fraction of the image's (the recipe's by default).
        ratio: Range of the box's aspect ratio, width / height.
        tries: Boxes tried before the central fallback.
        generator: Random source (CPU).

    Returns:
        int64 (B, 4): top, left, height, width.
    """
    count = sizes.shape[0]
    height, width = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = height * width * _uniform((count, tries), *scale, generator)
    log_ratio = torch.log(torch.tensor(ratio)).tolist()
    ratio_drawn = torch.exp(_uniform((count, tries), log_ratio[0], log_ratio[1], generator))
    crop_width = torch.round(torch.sqrt(area * ratio_drawn))
    crop_height = torch.round(torch.sqrt(area / ratio_drawn))
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
        low, high = min(ratio), max(ratio)
        fallback_width = torch.where(aspect > high, torch.round(height * high), width)
        fallback_height = torch.where(aspect < low, torch.round(width / low), height)
        crop_width = torch.where(found, crop_width, fallback_width)
        crop_height = torch.where(found, crop_height, fallback_height)
        top = torch.where(found, top, torch.div(height - crop_height, 2, rounding_mode="floor"))
        left = torch.where(found, left, torch.div(width - crop_width, 2, rounding_mode="floor"))
    return torch.stack([top, left, crop_height, crop_width], dim=1).long()


def draw_batch_view_params(
    recipe: AugmentationRecipe,
    sizes: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> BatchViewParams:
    """Draw the parameters of one view for each of B images, from a recipe.

    The distributions are those of ``reference.draw_view_params`` (and so of the torchvision
    presets); the draws come in a different order, so a seed gives different values. Each kind
    is drawn for the whole batch at once (crops, then flips, jitter, its order and factors,
    grayscale, blur), so a seed gives the same crops and flips whatever the colour strength or
    the preset.

    Args:
        recipe: The distributions (``recipe.create_recipe``).
        sizes: int64 (B, 2), height and width of each source image.
        generator: Random source (CPU); the global torch generator when None.

    Returns:
        The parameters, on the CPU.
    """
    sizes = sizes.to("cpu", torch.int64)
    count = sizes.shape[0]
    crops = sample_batch_crops(
        sizes,
        scale=recipe.crop_scale,
        ratio=recipe.crop_ratio,
        tries=recipe.crop_tries,
        generator=generator,
    )
    flips = torch.rand(count, generator=generator) < recipe.flip_probability
    jitter = torch.rand(count, generator=generator) < recipe.jitter_probability
    order = torch.rand(count, 4, generator=generator).argsort(dim=1)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(count, 1)
    for column, bounds in enumerate(recipe.jitter_ranges.values()):
        if bounds is not None:
            drawn = _uniform((count,), *bounds, generator).float()
            factors[:, column] = torch.where(jitter, drawn, factors[:, column])
    order = torch.where(jitter[:, None], order, torch.arange(4).expand(count, 4))
    grayscale = torch.rand(count, generator=generator) < recipe.grayscale_probability
    blur_sigma = torch.full((count,), math.nan)
    if recipe.has_blur:
        blurred = torch.rand(count, generator=generator) < recipe.blur_probability
        sigma = _uniform((count,), *recipe.blur_sigma, generator).float()
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


def sample_batch_view_params(
    sizes: torch.Tensor,
    *,
    preset: Preset | str,
    color_strength: float,
    image_size: int,
    generator: torch.Generator | None = None,
) -> BatchViewParams:
    """Draw the parameters of one view for each of B images, with the presets' distributions.

    ``draw_batch_view_params`` with ``create_recipe(preset, image_size=..., color_strength=...)``.

    Args:
        sizes: int64 (B, 2), height and width of each source image.
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        color_strength: Strength s of the colour distortion.
        image_size: Side of the output views.
        generator: Random source (CPU).

    Returns:
        The parameters, on the CPU.
    """
    recipe = create_recipe(preset, image_size=image_size, color_strength=color_strength)
    return draw_batch_view_params(recipe, sizes, generator=generator)


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)
