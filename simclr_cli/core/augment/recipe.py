"""The SimCLR augmentation recipe: every distribution of a view, and every constant, in one place.

The ``imagenet`` preset follows the paper's appendix A: random resized crop (area fraction
U(0.08, 1), log-uniform aspect ratio in [3/4, 4/3], ten tries and then a central fallback),
horizontal flip with probability 0.5, colour jitter of strength s (brightness, contrast and
saturation factors in [1 - 0.8 s, 1 + 0.8 s], hue shift in [-0.2 s, 0.2 s], in a random order)
applied with probability 0.8, grayscale with probability 0.2, and Gaussian blur with probability
0.5 (sigma U(0.1, 2.0), kernel 10% of the view's side made odd). The ``cifar`` preset is the same
without blur, as in the paper's CIFAR-10 experiments (appendix B.9).

``create_recipe`` turns a preset, a view size and a colour strength into one frozen
``AugmentationRecipe``. The three implementations of a view are built from it: the per-image
reference (``reference.py``), the batched path training uses (``batched.py``) and the torchvision
``v2.Compose`` they are tested against (``presets.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import Preset
from ..constants import COLOR_STRENGTH_RANGE, SMALL_IMAGE_SIZE
from ..errors import ConfigError

#: Colour strength s that each preset uses by default (the paper: 1.0 ImageNet, 0.5 CIFAR-10).
DEFAULT_COLOR_STRENGTH = {Preset.imagenet: 1.0, Preset.cifar: 0.5}
#: ``auto`` means ``cifar`` for views of this side and smaller, else ``imagenet``.
CIFAR_PRESET_MAX_SIZE = SMALL_IMAGE_SIZE
#: Presets with the Gaussian blur step.
BLURRING_PRESETS = frozenset({Preset.imagenet})

#: Range of the area fraction of the random resized crop.
CROP_SCALE = (0.08, 1.0)
#: Aspect-ratio range (width / height) of the random resized crop.
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: Tries of the random resized crop before its central fallback (as torchvision).
CROP_TRIES = 10
#: Probabilities of the random steps, as in the paper's appendix A.
FLIP_PROBABILITY = 0.5
JITTER_PROBABILITY = 0.8
GRAYSCALE_PROBABILITY = 0.2
BLUR_PROBABILITY = 0.5
#: Reach of the brightness, contrast and saturation factors, and of the hue shift, per unit of
#: colour strength s.
JITTER_REACH = 0.8
HUE_REACH = 0.2
#: Names of the colour-jitter operations, indexed as in ``ViewParams.jitter_order``.
JITTER_OPERATIONS = ("brightness", "contrast", "saturation", "hue")
#: Range of the Gaussian blur's standard deviation, in pixels of the output view.
BLUR_SIGMA = (0.1, 2.0)
#: Side of the blur kernel as a fraction of the view's side (then made odd, at least 3).
BLUR_KERNEL_FRACTION = 0.1


def resolve_preset(preset: Preset | str, *, image_size: int) -> Preset:
    """Choose the preset ``auto`` means: ``cifar`` at 64 px and below, else ``imagenet``."""
    preset = Preset(preset)
    if preset is Preset.auto:
        return Preset.cifar if image_size <= CIFAR_PRESET_MAX_SIZE else Preset.imagenet
    return preset


def blur_kernel_size(image_size: int) -> int:
    """Side of the Gaussian blur kernel: 10% of the image side, made odd (23 at 224 px)."""
    size = max(3, int(BLUR_KERNEL_FRACTION * image_size))
    return size if size % 2 == 1 else size + 1


@dataclass(frozen=True)
class AugmentationRecipe:
    """The distributions of one SimCLR view; build one with ``create_recipe``.

    Attributes:
        preset: ``imagenet`` or ``cifar`` (never ``auto``).
        image_size: Side S of the views in pixels.
        color_strength: Strength s of the colour distortion, in ``COLOR_STRENGTH_RANGE``.
        crop_scale: Range of the crop's area as a fraction of the source's area.
        crop_ratio: Range of the crop's aspect ratio (width / height), drawn log-uniformly.
        crop_tries: Boxes tried before the central fallback.
        flip_probability: Probability of a horizontal flip.
        jitter_probability: Probability of the colour jitter.
        grayscale_probability: Probability of the grayscale conversion.
        blur_probability: Probability of the blur, for presets that blur.
        blur_sigma: Range of the blur's standard deviation in pixels of the view.
    """

    preset: Preset
    image_size: int
    color_strength: float
    crop_scale: tuple[float, float] = CROP_SCALE
    crop_ratio: tuple[float, float] = CROP_RATIO
    crop_tries: int = CROP_TRIES
    flip_probability: float = FLIP_PROBABILITY
    jitter_probability: float = JITTER_PROBABILITY
    grayscale_probability: float = GRAYSCALE_PROBABILITY
    blur_probability: float = BLUR_PROBABILITY
    blur_sigma: tuple[float, float] = BLUR_SIGMA

    def __post_init__(self) -> None:
        # A preset given by name becomes the enum, so that comparisons and hashing are exact.
        if self.preset not in (Preset.imagenet.value, Preset.cifar.value):
            raise ConfigError(f"a recipe needs preset imagenet or cifar, not {self.preset!r}")
        object.__setattr__(self, "preset", Preset(self.preset))
        if self.image_size < 1:
            raise ConfigError(f"image size {self.image_size} must be at least 1 px")
        low, high = COLOR_STRENGTH_RANGE
        if not low <= self.color_strength <= high:
            raise ConfigError(
                f"colour strength {self.color_strength} must be in [{low:g}, {high:g}]"
            )

    @property
    def has_blur(self) -> bool:
        """Whether the preset blurs (``imagenet`` does, ``cifar`` does not)."""
        return self.preset in BLURRING_PRESETS

    @property
    def blur_kernel_size(self) -> int:
        """Side of the blur kernel for these views."""
        return blur_kernel_size(self.image_size)

    @property
    def jitter_reach(self) -> float:
        """How far the brightness, contrast and saturation factors reach from 1: 0.8 s."""
        return JITTER_REACH * self.color_strength

    @property
    def hue_reach(self) -> float:
        """How far the hue shift reaches from 0, in turns: 0.2 s."""
        return HUE_REACH * self.color_strength

    @property
    def jitter_ranges(self) -> dict[str, tuple[float, float] | None]:
        """Ranges of the colour-jitter factors, as ``v2.ColorJitter`` sets them for strength s.

        Brightness, contrast and saturation are drawn from [max(0, 1 - 0.8 s), 1 + 0.8 s] and hue
        from [-0.2 s, 0.2 s]; a range that collapses to the identity is None, and nothing is drawn
        for it. Keys in the order of ``JITTER_OPERATIONS``.
        """
        ranges: dict[str, tuple[float, float] | None] = {}
        amount = self.jitter_reach
        for name in JITTER_OPERATIONS[:3]:
            ranges[name] = None if amount == 0 else (max(0.0, 1.0 - amount), 1.0 + amount)
        hue = self.hue_reach
        ranges["hue"] = None if hue == 0 else (-hue, hue)
        return ranges


def create_recipe(
    preset: Preset | str, *, image_size: int, color_strength: float | None = None
) -> AugmentationRecipe:
    """The recipe of a preset at a view size: ``auto`` and the default strength resolved.

    Args:
        preset: ``imagenet``, ``cifar`` or ``auto`` (``cifar`` at 64 px and below).
        image_size: Side of the views in pixels.
        color_strength: Strength s of the colour distortion; the preset's default (1.0
            ``imagenet``, 0.5 ``cifar``) when None.

    Returns:
        The frozen recipe.

    Raises:
        ConfigError: When the colour strength or the image size is out of range.
    """
    resolved = resolve_preset(preset, image_size=image_size)
    strength = DEFAULT_COLOR_STRENGTH[resolved] if color_strength is None else color_strength
    return AugmentationRecipe(preset=resolved, image_size=image_size, color_strength=strength)
