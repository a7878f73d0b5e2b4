"""The per-image reference of a SimCLR view: its random parameters, drawn once and then applied.

``draw_view_params`` draws the parameters of one view from an ``AugmentationRecipe``,
``apply_view_params`` applies them with torchvision's v2 functional ops, and ``ViewTransform``
chains the two. Keeping the draw apart from the application lets the batched path of training
(``batched.py``) be checked against this reference for the same parameters, and lets
``visualize-aug`` caption a view with the parameters it was made with (``ViewParams``).

The draws follow ``torchvision.transforms.v2`` exactly (distributions, the random resized crop's
ten tries and central fallback, the colour jitter's random order of operations) and, with no
generator, consume the global random stream in the same order as the recipe's ``v2.Compose``
(``presets.create_torchvision_view_transform``), so the same seed gives the same views.
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

from ..choices import Preset
from ..constants import DEFAULT_MEAN, DEFAULT_STD
from ..errors import ConfigError
from .recipe import (
    CROP_RATIO,
    CROP_SCALE,
    CROP_TRIES,
    AugmentationRecipe,
    blur_kernel_size,
    create_recipe,
)

#: What the view functions take: a uint8 tensor (3, H, W) or an RGB PIL image.
ImageLike = TypeVar("ImageLike", torch.Tensor, Image.Image)


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
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    tries: int = CROP_TRIES,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """Draw a random resized crop box as ``RandomResizedCrop.make_params`` does.

    ``tries`` tries at a box of area fraction U(scale) and log-uniform aspect ratio in ``ratio``;
    when none fits, the largest central box whose aspect ratio is in range.

    Args:
        height: Height of the source image in pixels.
        width: Width of the source image in pixels.
        scale: Range of the box's area as a fraction of the image's (the recipe's by default).
        ratio: Range of the box's aspect ratio, width / height.
        tries: Boxes tried before the central fallback.
        generator: Random source; the global torch generator when None.

    Returns:
        Top, left, height and width of the box in source pixels.
    """
    area = height * width
    # torchvision draws the log aspect ratio between float32 logarithms; the same values keep
    # the same seed giving the same crops.
    log_ratio = torch.log(torch.tensor(ratio)).tolist()
    for _ in range(tries):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect_ratio = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
        crop_width = round(math.sqrt(target_area * aspect_ratio))
        crop_height = round(math.sqrt(target_area / aspect_ratio))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(torch.randint(0, height - crop_height + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_width + 1, (1,), generator=generator))
            return top, left, crop_height, crop_width
    # The fallback: a central crop clipped to the aspect-ratio range.
    aspect = width / height
    if aspect < min(ratio):
        crop_width, crop_height = width, round(width / min(ratio))
    elif aspect > max(ratio):
        crop_width, crop_height = round(height * max(ratio)), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def draw_view_params(
    recipe: AugmentationRecipe,
    *,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
) -> ViewParams:
    """Draw the random parameters of one view of an image of a given size, from a recipe.

    The draws and their order are those of the recipe's torchvision transform
    (``presets.create_torchvision_view_transform``): crop, flip, colour jitter (random order of
    operations, then one factor per operation), grayscale, and blur for presets that blur.

    Args:
        recipe: The distributions (``recipe.create_recipe``).
        height: Height of the source image in pixels.
        width: Width of the source image in pixels.
        generator: Random source; the global torch generator when None.

    Returns:
        The drawn parameters.

    Raises:
        ConfigError: When the image is empty.
    """
    if height < 1 or width < 1:
        raise ConfigError(f"cannot crop a {height}x{width} image to {recipe.image_size} px")
    crop = sample_crop(
        height,
        width,
        scale=recipe.crop_scale,
        ratio=recipe.crop_ratio,
        tries=recipe.crop_tries,
        generator=generator,
    )
    flip = _chance(recipe.flip_probability, generator)

    jitter = _chance(recipe.jitter_probability, generator)
    factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    order: tuple[int, ...] = (0, 1, 2, 3)
    if jitter:
        order = tuple(int(i) for i in torch.randperm(4, generator=generator))
        for name, bounds in recipe.jitter_ranges.items():
            if bounds is not None:
                factors[name] = _uniform(bounds[0], bounds[1], generator)

    grayscale = _chance(recipe.grayscale_probability, generator)
    blur_sigma = None
    if recipe.has_blur and _chance(recipe.blur_probability, generator):
        blur_sigma = _uniform(recipe.blur_sigma[0], recipe.blur_sigma[1], generator)
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

    ``draw_view_params`` with ``create_recipe(preset, image_size=..., color_strength=...)``.

    Args:
        height: Height of the source image in pixels.
        width: Width of the source image in pixels.
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        color_strength: Strength s of the colour distortion, in ``COLOR_STRENGTH_RANGE``.
        image_size: Side of the output view (decides ``auto``).
        generator: Random source; the global torch generator when None.

    Returns:
        The drawn parameters.

    Raises:
        ConfigError: When the colour strength or the image size is out of range.
    """
    recipe = create_recipe(preset, image_size=image_size, color_strength=color_strength)
    return draw_view_params(recipe, height=height, width=width, generator=generator)


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

    This is the per-image reference of training's batched augmentation (``batched.py``): both
    are built from the same ``AugmentationRecipe`` and draw from the same distributions, but
    training and ``simclr visualize-aug`` make their views with ``BatchAugmenter``, not with this.

    Args:
        preset: ``imagenet`` or ``cifar`` (``auto`` resolves by ``image_size``).
        image_size: Side of the output views in pixels.
        color_strength: Strength s of the colour distortion; the preset's default when None.
        mean: Per-channel mean for normalisation.
        std: Per-channel standard deviation for normalisation.
        generator: Random source; the global torch generator when None.
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
        self.recipe = create_recipe(preset, image_size=image_size, color_strength=color_strength)
        self.mean = list(mean)
        self.std = list(std)
        self.generator = generator

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

    @property
    def has_blur(self) -> bool:
        """Whether the preset blurs (``imagenet`` does, ``cifar`` does not)."""
        return self.recipe.has_blur

    def sample(self, height: int, width: int) -> ViewParams:
        """Draw the parameters of one view of an image of the given size."""
        return draw_view_params(self.recipe, height=height, width=width, generator=self.generator)

    def view(self, image: Image.Image | torch.Tensor) -> tuple[torch.Tensor, ViewParams]:
        """Draw parameters and make the uint8 view (3, S, S), returning both."""
        if isinstance(image, Image.Image):
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            params = self.sample(rgb.height, rgb.width)
            return to_uint8_tensor(
                apply_view_params(rgb, params, image_size=self.image_size)
            ), params
        pixels = image.as_subclass(torch.Tensor)
        params = self.sample(pixels.shape[-2], pixels.shape[-1])
        return to_uint8_tensor(
            apply_view_params(pixels, params, image_size=self.image_size)
        ), params

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
