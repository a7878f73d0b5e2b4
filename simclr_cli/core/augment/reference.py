"""The random parameters of one SimCLR view, drawn once and then applied.

Training and ``simclr visualize-aug`` share this code path: ``sample_view_params`` draws the
parameters of the preset's transform, ``apply_view_params`` applies them, and ``ViewTransform``
chains the two for the data loader. Keeping the draw apart from the application lets a preview
print the parameters that were actually used, and lets a batched implementation be checked
against this per-image reference for the same parameters.

The draws follow ``torchvision.transforms.v2`` exactly (distributions, the random resized crop's
ten tries and central fallback, the colour jitter's random order of operations) and, with no
generator, consume the global random stream in the same order as the preset's ``v2.Compose``, so
the same seed gives the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..config import Preset
from ..errors import ConfigError
from .presets import (
    CROP_SCALE,
    DEFAULT_COLOR_STRENGTH,
    DEFAULT_MEAN,
    DEFAULT_STD,
    blur_kernel_size,
    resolve_preset,
)

#: Aspect-ratio range (width / height) of the random resized crop.
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: Probabilities of the random steps, as in the SimCLR paper's appendix A.
FLIP_PROBABILITY = 0.5
JITTER_PROBABILITY = 0.8
GRAYSCALE_PROBABILITY = 0.2
BLUR_PROBABILITY = 0.5
#: Range of the Gaussian blur's standard deviation, in pixels of the output view.
BLUR_SIGMA = (0.1, 2.0)
#: Largest colour strength whose hue range (0.2 s) stays within torchvision's [-0.5, 0.5].
MAX_COLOR_STRENGTH = 2.5

# torchvision draws the log aspect ratio between float32 logarithms; the same values keep the
# same seed giving the same crops.
#: What the view functions take: a uint8 tensor (3, H, W) or an RGB PIL image.
ImageLike = TypeVar("ImageLike", torch.Tensor, Image.Image)

_LOG_RATIO = torch.log(torch.tensor(CROP_RATIO)).tolist()
#: Names of the colour-jitter operations, indexed as in ``ViewParams.jitter_order``.
JITTER_OPERATIONS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class ViewParams:
    """Everything drawn at random to make one view of one image.

    Attributes:
        crop: Top, left, height and width of the crop box, in source pixels.
        flip: Whether the view is flipped horizontally.
        color_jitter: Whether colour jitter was applied (probability 0.8).
        brightness: Multiplicative brightness factor; 1.0 leaves the image unchanged.
        contrast: Contrast factor; 1.0 leaves the image unchanged.
        saturation: Saturation factor; 1.0 leaves the image unchanged.
        hue: Hue shift in turns, in [-0.5, 0.5]; 0.0 leaves the image unchanged.
        jitter_order: Order in which the brightness (0), contrast (1), saturation (2) and hue (3)
            operations are applied, as torchvision draws it.
        grayscale: Whether the view is converted to grayscale (probability 0.2).
        blur_sigma: Standard deviation of the Gaussian blur in pixels, or None without blur.
        source_size: Height and width of the source image.
    """

    crop: tuple[int, int, int, int]
    flip: bool
    color_jitter: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    jitter_order: tuple[int, int, int, int]
    grayscale: bool
    blur_sigma: float | None
    source_size: tuple[int, int]

    @property
    def crop_scale(self) -> float:
        """Area of the crop box as a fraction of the source image's area."""
        _, _, height, width = self.crop
        return (height * width) / (self.source_size[0] * self.source_size[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain values for captions and JSON: the fields plus ``crop_scale``."""
        values = asdict(self)
        values["crop"] = list(self.crop)
        values["jitter_order"] = list(self.jitter_order)
        values["source_size"] = list(self.source_size)
        values["crop_scale"] = self.crop_scale
        return values


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    # Same call as torchvision's draws (a float32 tensor of one), so a seed gives equal values.
    return torch.empty(1).uniform_(low, high, generator=generator).item()


def _chance(probability: float, generator: torch.Generator | None) -> bool:
    # torchvision skips a step when rand >= p, so "applied" is rand < p.
    return bool(torch.rand(1, generator=generator) < probability)


def sample_crop(
    height: int, width: int, *, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """Draw a random resized crop box as ``RandomResizedCrop.make_params`` does.

    Ten tries at a box of area fraction U(0.08, 1) and log-uniform aspect ratio in [3/4, 4/3];
    when none fits, the largest central box whose aspect ratio is in range.

    Returns:
        Top, left, height and width of the box in source pixels.
    """
    area = height * width
    for _ in range(10):
        target_area = area * _uniform(CROP_SCALE[0], CROP_SCALE[1], generator)
        aspect_ratio = math.exp(_uniform(_LOG_RATIO[0], _LOG_RATIO[1], generator))
        crop_width = round(math.sqrt(target_area * aspect_ratio))
        crop_height = round(math.sqrt(target_area / aspect_ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
            return top, left, crop_height, crop_width
    # The fallback: a central crop clipped to the aspect-ratio range.
    ratio = width / height
    if ratio < min(CROP_RATIO):
        crop_width, crop_height = width, round(width / min(CROP_RATIO))
    elif ratio > max(CROP_RATIO):
        crop_width, crop_height = round(height * max(CROP_RATIO)), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def jitter_ranges(color_strength: float) -> dict[str, tuple[float, float] | None]:
    """Ranges of the colour-jitter factors for strength s, as ``v2.ColorJitter`` sets them.

    Brightness, contrast and saturation are drawn from [max(0, 1 - 0.8 s), 1 + 0.8 s] and hue from
    [-0.2 s, 0.2 s]; a range that collapses to the identity is None, and nothing is drawn for it.
    """
    ranges: dict[str, tuple[float, float] | None] = {}
    for name in ("brightness", "contrast", "saturation"):
        amount = 0.8 * color_strength
        ranges[name] = None if amount == 0 else (max(0.0, 1.0 - amount), 1.0 + amount)
    hue = 0.2 * color_strength
    ranges["hue"] = None if hue == 0 else (-hue, hue)
    return ranges


def sample_view_params(
    *,
    height: int,
    width: int,
    preset: Preset | str,
    color_strength: float,
    image_size: int,
    generator: torch.Generator | None = None,
) -> ViewParams:
    """Draw the random parameters of one view of an image of a given size.

    The draws and their order are those of the preset's torchvision transform: crop, flip,
    colour jitter (applied with probability 0.8; random order of operations, then one factor per
    operation), grayscale, and for ``imagenet`` a blur with probability 0.5.

    Args:
        height: Height of the source image in pixels.
        width: Width of the source image in pixels.
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        color_strength: Strength s of the colour distortion, in [0, 2.5].
        image_size: Side of the output view (decides ``auto``).
        generator: Random source; the global torch generator when None.

    Returns:
        The drawn parameters.

    Raises:
        ConfigError: When the colour strength or the image size is out of range.
    """
    if not 0.0 <= color_strength <= MAX_COLOR_STRENGTH:
        raise ConfigError(f"colour strength {color_strength} must be in [0, {MAX_COLOR_STRENGTH}]")
    if height < 1 or width < 1 or image_size < 1:
        raise ConfigError(f"cannot crop a {height}x{width} image to {image_size} px")
    preset = resolve_preset(preset, image_size=image_size)
    crop = sample_crop(height, width, generator=generator)
    flip = _chance(FLIP_PROBABILITY, generator)

    jitter = _chance(JITTER_PROBABILITY, generator)
    factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    order: tuple[int, ...] = (0, 1, 2, 3)
    if jitter:
        order = tuple(int(i) for i in torch.randperm(4, generator=generator))
        for name, bounds in jitter_ranges(color_strength).items():
            if bounds is not None:
                factors[name] = _uniform(bounds[0], bounds[1], generator)

    grayscale = _chance(GRAYSCALE_PROBABILITY, generator)
    blur_sigma = None
    if preset is Preset.imagenet and _chance(BLUR_PROBABILITY, generator):
        blur_sigma = _uniform(BLUR_SIGMA[0], BLUR_SIGMA[1], generator)
    return ViewParams(
        crop=crop,
        flip=flip,
        color_jitter=jitter,
        brightness=factors["brightness"],
        contrast=factors["contrast"],
        saturation=factors["saturation"],
        hue=factors["hue"],
        jitter_order=order,  # type: ignore[arg-type]
        grayscale=grayscale,
        blur_sigma=blur_sigma,
        source_size=(height, width),
    )


def apply_view_params(image: ImageLike, params: ViewParams, *, image_size: int) -> ImageLike:
    """Make the view that ``params`` describe: the per-image reference implementation.

    The torchvision v2 functional ops run in the presets' order (crop and resize, flip, colour
    jitter, grayscale, blur), so the result equals the preset's ``v2.Compose`` on the same input
    when that draws the same parameters. The ops dispatch on the input type: a uint8 tensor uses
    torchvision's tensor kernels, a PIL image its PIL kernels (several times faster for hue at
    small sizes, which is why training hands the decoded PIL image in as it is).

    Args:
        image: uint8 image (3, H, W), or an RGB PIL image, of size ``params.source_size``.
        params: Parameters from ``sample_view_params``.
        image_size: Side of the output view in pixels.

    Returns:
        The view, of the input's type: uint8 (3, image_size, image_size) for a tensor.
    """
    size = (image.height, image.width) if isinstance(image, Image.Image) else image.shape[-2:]
    if tuple(size) != tuple(params.source_size):
        raise ValueError(
            f"image of size {tuple(size)} given parameters drawn for {params.source_size}"
        )
    top, left, height, width = params.crop
    view = F.resized_crop(
        image,
        top,
        left,
        height,
        width,
        size=[image_size, image_size],
        interpolation=InterpolationMode.BILINEAR,
        antialias=True,
    )
    if params.flip:
        view = F.horizontal_flip(view)
    if params.color_jitter:
        # An identity factor is skipped, as torchvision skips an operation whose range is None.
        for operation in params.jitter_order:
            if operation == 0 and params.brightness != 1.0:
                view = F.adjust_brightness(view, brightness_factor=params.brightness)
            elif operation == 1 and params.contrast != 1.0:
                view = F.adjust_contrast(view, contrast_factor=params.contrast)
            elif operation == 2 and params.saturation != 1.0:
                view = F.adjust_saturation(view, saturation_factor=params.saturation)
            elif operation == 3 and params.hue != 0.0:
                view = F.adjust_hue(view, hue_factor=params.hue)
    if params.grayscale:
        view = F.rgb_to_grayscale(view, num_output_channels=3)
    if params.blur_sigma is not None:
        kernel = blur_kernel_size(image_size)
        view = F.gaussian_blur(
            view, kernel_size=[kernel, kernel], sigma=[params.blur_sigma, params.blur_sigma]
        )
    return view


def to_uint8_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """A PIL image or tensor as a plain uint8 tensor (3, H, W)."""
    if isinstance(image, Image.Image):
        return F.pil_to_tensor(image.convert("RGB") if image.mode != "RGB" else image)
    return image.as_subclass(torch.Tensor)


class ViewTransform:
    """The random transform that makes one SimCLR view: draw parameters, apply, normalise.

    This is the per-image reference of training's batched augmentation;
    ``simclr visualize-aug`` calls ``sample`` and ``apply_view_params`` itself to show the same
    views with their parameters.

    Args:
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        image_size: Side of the output views in pixels.
        color_strength: Strength s of the colour distortion; the preset's default when None.
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation for normalisation.
        generator: Random source; the global torch generator (seeded per data-loader worker)
            when None.
    """

    def __init__(
        self,
        preset: Preset | str,
        *,
        image_size: int,
        color_strength: float | None = None,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        generator: torch.Generator | None = None,
    ) -> None:
        self.preset = resolve_preset(preset, image_size=image_size)
        self.image_size = image_size
        self.color_strength = (
            DEFAULT_COLOR_STRENGTH[self.preset] if color_strength is None else color_strength
        )
        self.mean = list(mean)
        self.std = list(std)
        self.generator = generator

    @property
    def has_blur(self) -> bool:
        """Whether the preset blurs (``imagenet`` does, ``cifar`` does not)."""
        return self.preset is Preset.imagenet

    def sample(self, height: int, width: int) -> ViewParams:
        """Draw the parameters of one view of an image of the given size."""
        return sample_view_params(
            height=height,
            width=width,
            preset=self.preset,
            color_strength=self.color_strength,
            image_size=self.image_size,
            generator=self.generator,
        )

    def view(self, image: Image.Image | torch.Tensor) -> tuple[torch.Tensor, ViewParams]:
        """Draw parameters and make the uint8 view (3, S, S), returning both."""
        view: Image.Image | torch.Tensor
        if isinstance(image, Image.Image):
            image = image if image.mode == "RGB" else image.convert("RGB")
            params = self.sample(image.height, image.width)
            view = apply_view_params(image, params, image_size=self.image_size)
        else:
            image = image.as_subclass(torch.Tensor)
            params = self.sample(image.shape[-2], image.shape[-1])
            view = apply_view_params(image, params, image_size=self.image_size)
        return to_uint8_tensor(view), params

    def normalize(self, view: torch.Tensor) -> torch.Tensor:
        """uint8 view (3, S, S) -> float32 (3, S, S), scaled to [0, 1] and normalised."""
        return F.normalize(F.to_dtype(view, torch.float32, scale=True), self.mean, self.std)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """One normalised float32 view (3, S, S) of a PIL image or uint8 tensor (3, H, W)."""
        view, _ = self.view(image)
        return self.normalize(view)

    def __repr__(self) -> str:
        return (
            f"ViewTransform(preset={self.preset.value!r}, image_size={self.image_size}, "
            f"color_strength={self.color_strength})"
        )
