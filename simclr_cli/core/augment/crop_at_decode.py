"""Crop at decode: both views' boxes drawn in the source's pixels, cut while decoding.

For a source much larger than the bounded decode (``data.decode.source_side_bound``), the
loader's workers call a ``CropAtDecode``: it reads the header's size, draws the two views' crop
boxes with the recipe's sampler (``batched_params.sample_batch_crops``, the same one the batched
augmenter draws with) from a generator seeded for this image and epoch, and has
``data.crop_decode.decode_crops`` decode the JPEG at the coarsest sufficient draft scale and cut
both views. The batched augmenter then only flips and colours them (``ImageBatch.cut``).

Small sources keep the bounded decode, so that they can be cached and augmented as before:
a source is small when its short side is at most ``SMALL_SOURCE_FACTOR`` (2) times the bound,
i.e. 3x the view size (672 px for 224 px views, 96 px for 32 px views, so CIFAR-10 and its
one-process results are unchanged). Why there: up to the bound both paths see every pixel, and
up to twice the bound the bounded decode keeps at least half the source's linear resolution,
while the smallest crops (8% of the area: 0.85 S of a 3 S source) are enlarged in both paths
anyway. Such sources (ImageNet's ~400 x 350 photos at 224 px, for example) are cheap to decode
and small enough to cache, which views cut at decode are not. Above it the loss grows with the
photo (12x for a 4000 x 3000 photo at 224 px), and so does what cutting at decode saves: such a
JPEG is decoded at 1/4 or 1/8 of its size for most boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.crop_decode import CutViews, decode_crops, read_source_size
from ..data.decode import decode_for_training, source_side_bound
from .batched_params import sample_batch_crops
from .recipe import AugmentationRecipe

#: A source whose short side is at most this multiple of the decode bound is "small".
SMALL_SOURCE_FACTOR = 2
#: Views cut from each image (SimCLR's pair).
VIEWS_PER_IMAGE = 2
#: Mix the run seed, the epoch and the image into one seed (primes, so nearby ones differ).
_SEED_STRIDE = 1_000_003
_EPOCH_STRIDE = 2_147_483_647
_SEED_MODULUS = 2**63 - 1


def view_seed(seed: int, *, epoch: int, index: int) -> int:
    """The seed of the crop boxes of image ``index`` in ``epoch`` of a run seeded ``seed``.

    It depends on these three numbers only, not on the worker or the batch, so a resumed run
    cuts the same boxes as the uninterrupted one.
    """
    return ((seed * _SEED_STRIDE + epoch) * _EPOCH_STRIDE + index) % _SEED_MODULUS


def small_source_side(image_size: int) -> int:
    """Largest short side of a source decoded by the bounded decode (672 px at 224 px views)."""
    return SMALL_SOURCE_FACTOR * source_side_bound(image_size)


@dataclass(frozen=True)
class CropAtDecode:
    """Decodes one training image: two views cut at decode, or the bounded decode when small.

    Picklable, for the loader's worker processes.

    Args:
        recipe: The augmentation; its crop distribution and view size are used here.
    """

    recipe: AugmentationRecipe

    @property
    def image_size(self) -> int:
        """Side S of the views."""
        return self.recipe.image_size

    @property
    def small_source_side(self) -> int:
        """Largest short side of a source that keeps the bounded decode."""
        return small_source_side(self.image_size)

    def draw_crops(self, source_size: tuple[int, int], *, seed: int) -> torch.Tensor:
        """The two views' boxes in source pixels, int64 (2, 4), from a generator seeded ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        sizes = torch.tensor([source_size] * VIEWS_PER_IMAGE, dtype=torch.int64)
        return sample_batch_crops(
            sizes,
            scale=self.recipe.crop_scale,
            ratio=self.recipe.crop_ratio,
            tries=self.recipe.crop_tries,
            generator=generator,
        )

    def __call__(self, path: Path, *, seed: int) -> torch.Tensor | CutViews:
        """Decode ``path`` for training.

        Args:
            path: The image file.
            seed: Seed of the crop boxes (``view_seed``).

        Returns:
            For a small source (or an unreadable header), the bounded decode, uint8 (3, H, W),
            exactly as ``decode_for_training``; else both views, uint8 (2, 3, S, S), with their
            boxes.

        Raises:
            ImageDecodeError: When the file is not an image or is damaged.
        """
        bound = source_side_bound(self.image_size)
        source_size = read_source_size(path)
        if source_size is None or min(source_size) <= self.small_source_side:
            return decode_for_training(path, max_short_side=bound)
        crops = self.draw_crops(source_size, seed=seed)
        return decode_crops(path, crops, image_size=self.image_size, source_size=source_size)
