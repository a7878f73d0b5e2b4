"""``visualize-aug``: the two views training would make of some images, with their parameters.

Before hours of compute, a user looks at what the network will see. The preview takes the path
training takes: each image is decoded by the training decoder (``augment.crop_at_decode.
CropAtDecode``: a small source to a short side of at most ``source_side_bound(image_size)``, the
tensor the RAM cache keeps; a large photo straight into two views cut from its full resolution),
put into a batch of one by the loader's collate (``collate_images``) and augmented by
``BatchAugmenter``, the object the training loop calls, with a generator of its own seeded per
pair (which also seeds the crop boxes cut at decode, as the first epoch of a run seeded so). Its
normalised views are the tensors a training step on that image, with that seed, feeds the
network; they are shown un-normalised and rounded to 8 bits, captioned with the parameters drawn
for them (``BatchViewParams.to_view_params``).

This module holds the preview itself; ``preview_panels`` draws its captions and panels,
``preview_terminal`` the terminal grid and interactive mode, ``preview_png`` the PNG grid.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..augment.batched import BatchAugmenter
from ..augment.crop_at_decode import CropAtDecode, view_seed
from ..augment.recipe import DEFAULT_COLOR_STRENGTH, create_recipe, resolve_preset
from ..augment.reference import ViewParams
from ..choices import Preset
from ..config import VisualizeConfig
from ..constants import COLOR_STRENGTH_RANGE, DEFAULT_MEAN, DEFAULT_STD
from ..data.crop_decode import CutViews
from ..data.decode import decode_for_training, source_side_bound
from ..data.files import find_images
from ..data.loader import collate_images
from ..errors import DataError, ImageDecodeError, ModelFileError
from ..model.files import read_header, read_metadata

#: Image size of ``pretrain`` when neither a flag nor a model gives one.
DEFAULT_IMAGE_SIZE = 224
#: Most images tried in a folder to find ``pairs`` readable ones.
MAX_TRIES = 200


@dataclass(frozen=True)
class AugmentationSettings:
    """The augmentation being previewed.

    Attributes:
        preset: ``imagenet`` or ``cifar`` (never ``auto``).
        color_strength: Strength s of the colour distortion.
        image_size: Side of the views in pixels.
        model: The model file these settings came from, if any.
    """

    preset: Preset
    color_strength: float
    image_size: int
    model: Path | None = None

    def describe(self) -> str:
        """One line such as ``preset cifar, colour strength 0.5, 32 px views``."""
        text = (
            f"preset {self.preset.value}, colour strength {format_strength(self.color_strength)}, "
            f"{self.image_size} px views"
        )
        return text + (f" (from {self.model.name})" if self.model is not None else "")

    def decode(self, path: Path, *, seed: int) -> torch.Tensor | CutViews:
        """Decode ``path`` as training does for the first epoch of a run seeded ``seed``."""
        cutter = CropAtDecode(
            create_recipe(
                self.preset, image_size=self.image_size, color_strength=self.color_strength
            )
        )
        return cutter(path, seed=view_seed(seed, epoch=0, index=0))

    def augmenter(self, *, seed: int) -> BatchAugmenter:
        """The training augmentation with these settings, drawing from a generator seeded so."""
        return BatchAugmenter(
            self.preset,
            image_size=self.image_size,
            color_strength=self.color_strength,
            device="cpu",
            generator=torch.Generator().manual_seed(seed),
            mean=DEFAULT_MEAN,
            std=DEFAULT_STD,
        )


@dataclass
class AugmentedPair:
    """One image and its two views.

    Attributes:
        path: The image file.
        source: uint8 (3, H, W): the image decoded to the bound of training's decode (what the
            RAM cache keeps); the crop boxes of ``params`` are in pixels of a source of
            ``params[i].source_size``: this one, or the full-resolution photo its views were
            cut from at decode.
        views: Views A and B as shown, uint8 (3, S, S): ``inputs`` un-normalised and rounded.
        params: The parameters drawn for views A and B.
        seed: Seed of the generator that drew both views: ``settings.augmenter(seed=seed)``
            called on the batch ``settings.decode(path, seed=seed)`` makes them again (and so
            does the training loop's augmenter after ``torch.manual_seed(seed)``, on the first
            epoch of a one-image loader seeded ``seed``).
        inputs: Views A and B as the network is fed them, float32 (3, S, S) normalised; None
            for a pair put together by hand.
    """

    path: Path
    source: torch.Tensor
    views: tuple[torch.Tensor, torch.Tensor]
    params: tuple[ViewParams, ViewParams]
    seed: int = 0
    inputs: tuple[torch.Tensor, torch.Tensor] | None = None


def unnormalize(view: torch.Tensor) -> torch.Tensor:
    """A normalised float view (3, S, S) back to uint8 (3, S, S) for display."""
    mean = torch.tensor(DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(DEFAULT_STD).view(3, 1, 1)
    return (view * std + mean).mul_(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def draw_pair(
    path: Path, source: torch.Tensor, settings: AugmentationSettings, *, seed: int
) -> AugmentedPair:
    """Make the two views of one decoded image as a training step on it alone would.

    A large photo is decoded again, by training's decoder, which cuts its two views at decode.

    Args:
        path: The image file.
        source: uint8 (3, H, W), from ``decode_for_training`` (shown with the boxes).
        settings: The augmentation.
        seed: Seed of the pair's generator.

    Returns:
        The pair, with the normalised views, their 8-bit display and their parameters.
    """
    decoded = settings.decode(path, seed=seed) if _may_be_cut(source, settings) else source
    batch = collate_images([(0, decoded)])
    augmenter = settings.augmenter(seed=seed)
    view_a, view_b, params = augmenter.draw(batch.images, batch.sizes, cut=batch.cut)
    records = params.to_view_params()
    inputs = (view_a[0], view_b[0])
    views = (unnormalize(inputs[0]), unnormalize(inputs[1]))
    return AugmentedPair(path, source, views, (records[0], records[1]), seed, inputs)


def _may_be_cut(source: torch.Tensor, settings: AugmentationSettings) -> bool:
    # A source decoded below the bound was small: its bounded decode is what training uses.
    return min(source.shape[-2:]) >= source_side_bound(settings.image_size)


@dataclass
class AugmentationPreview:
    """Images, the augmentation settings, and the views drawn for them; redrawable.

    ``draw`` makes new views; ``change_strength`` and ``next_preset`` change the settings and
    draw the same views again (each pair has a generator of its own, and the crops and flips
    are drawn before the colours and the blur), so the crops stay put and only the colours or
    the blur change.

    Attributes:
        images: Paths and decoded sources, uint8 (3, H, W), one per pair (a single file
            repeats).
        settings: The augmentation.
        seed: Seed of the first draw.
        skipped: Files of the folder that could not be decoded and were passed over.
        pairs: The current views.
        draws: How many times new views were drawn.
    """

    images: list[tuple[Path, torch.Tensor]]
    settings: AugmentationSettings
    seed: int = 0
    skipped: list[Path] = field(default_factory=list)
    pairs: list[AugmentedPair] = field(default_factory=list)
    draws: int = 0

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)
        self._pair_seeds = self._new_seeds()
        if not self.pairs:
            self._draw_views()

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: settings, skipped files, and each pair's parameters and seed."""
        return {
            "preset": self.settings.preset.value,
            "color_strength": self.settings.color_strength,
            "image_size": self.settings.image_size,
            "model": None if self.settings.model is None else str(self.settings.model),
            "seed": self.seed,
            "skipped": [str(path) for path in self.skipped],
            "pairs": [
                {
                    "path": str(pair.path),
                    "views": [params.to_dict() for params in pair.params],
                    "seed": pair.seed,
                }
                for pair in self.pairs
            ],
        }

    def _new_seeds(self) -> list[int]:
        count = len(self.images)
        return torch.randint(0, 2**62, (count,), generator=self._generator).tolist()

    def _draw_views(self) -> None:
        self.pairs = [
            draw_pair(path, source, self.settings, seed=seed)
            for (path, source), seed in zip(self.images, self._pair_seeds, strict=True)
        ]

    def draw(self) -> None:
        """Draw new views of the same images."""
        self._pair_seeds = self._new_seeds()
        self.draws += 1
        self._draw_views()

    def change_strength(self, delta: float) -> None:
        """Change the colour strength by ``delta`` (kept in ``COLOR_STRENGTH_RANGE``), redraw."""
        low, high = COLOR_STRENGTH_RANGE
        strength = round(min(high, max(low, self.settings.color_strength + delta)), 2)
        self.settings = AugmentationSettings(
            self.settings.preset, strength, self.settings.image_size, self.settings.model
        )
        self._draw_views()

    def next_preset(self) -> None:
        """Switch between ``imagenet`` and ``cifar`` and redraw the same views."""
        preset = Preset.cifar if self.settings.preset is Preset.imagenet else Preset.imagenet
        self.settings = AugmentationSettings(
            preset, self.settings.color_strength, self.settings.image_size, self.settings.model
        )
        self._draw_views()


def format_strength(value: float) -> str:
    """A colour strength for a caption: "1.0" rather than "1", but "0.55" as given."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def resolve_settings(config: VisualizeConfig) -> AugmentationSettings:
    """Combine flags, the model's metadata and the defaults of ``pretrain``, in that order.

    Raises:
        ModelFileError: When the model file is not a simclr model or lacks augmentation metadata.
    """
    preset, strength, size = config.preset, config.color_strength, config.image_size
    if config.model is not None:
        metadata = read_metadata(config.model)
        raw = read_header(config.model).get("__metadata__") or {}
        missing = [key for key in ("preset", "color_strength", "image_size") if key not in raw]
        if missing or metadata.preset not in (Preset.imagenet.value, Preset.cifar.value):
            raise ModelFileError(
                f"{config.model} records no augmentation settings (missing "
                f"{', '.join(missing) or 'preset'}); give --preset, --color-strength and "
                "--image-size instead of --model",
                flag="--model",
            )
        preset = preset or Preset(metadata.preset)
        strength = metadata.color_strength if strength is None else strength
        size = metadata.image_size if size is None else size
    size = DEFAULT_IMAGE_SIZE if size is None else size
    resolved = resolve_preset(preset or Preset.auto, image_size=size)
    strength = DEFAULT_COLOR_STRENGTH[resolved] if strength is None else strength
    return AugmentationSettings(resolved, float(strength), int(size), config.model)


def load_images(
    source: Path, *, count: int, seed: int, image_size: int
) -> tuple[list[tuple[Path, torch.Tensor]], list[Path]]:
    """Decode the images to preview: ``count`` seeded picks from a folder, or one file repeated.

    Each image is decoded as training decodes it for views of ``image_size``
    (``decode_for_training`` with ``max_short_side=source_side_bound(image_size)``).

    Args:
        source: An image file or a folder (searched recursively).
        count: How many images (pairs) to return.
        seed: Seed of the pick.
        image_size: Side of the views.

    Returns:
        ``count`` (path, uint8 (3, H, W)) pairs (fewer if the folder has fewer images), and the
        files that were passed over because they could not be decoded.

    Raises:
        DataError: When the path is missing, the folder holds no images, or none decodes.
        ImageDecodeError: When a single file given is not a readable image.
    """
    source = Path(source)
    bound = source_side_bound(image_size)
    if not source.exists():
        raise DataError(f"{source} does not exist; give an image file or a folder of images")
    if source.is_file():
        image = decode_for_training(source, max_short_side=bound)
        return [(source, image)] * count, []
    paths = find_images(source)
    order = random.Random(seed).sample(paths, len(paths))
    chosen: list[tuple[Path, torch.Tensor]] = []
    skipped: list[Path] = []
    for path in order[:MAX_TRIES]:
        try:
            chosen.append((path, decode_for_training(path, max_short_side=bound)))
        except ImageDecodeError:
            skipped.append(path)
        if len(chosen) == count:
            break
    if not chosen:
        raise DataError(
            f"none of the {len(skipped)} images tried in {source} could be decoded; "
            "check the files (for example with an image viewer)"
        )
    return chosen, skipped


def create_augmentation_preview(*, config: VisualizeConfig) -> AugmentationPreview:
    """Load the images and draw their views: the core call behind ``simclr visualize-aug``.

    Args:
        config: Input, number of pairs, augmentation settings or model, seed.

    Returns:
        The preview, ready to render or save.

    Raises:
        ConfigError, DataError, ImageDecodeError, ModelFileError: On bad input.
    """
    config.validate()
    settings = resolve_settings(config)
    images, skipped = load_images(
        config.input, count=config.pairs, seed=config.seed, image_size=settings.image_size
    )
    return AugmentationPreview(images=images, settings=settings, seed=config.seed, skipped=skipped)
