"""The training data pipeline: decode each image once per step, cache it, batch it as uint8.

The data loader no longer augments. Its workers only decode (JPEGs in draft mode, so the
decoder's DCT scaling does most of the down-sizing for free) and return uint8 images; the
training loop makes both views of every image from that one decode with the batched
augmentation of ``augment/batched.py``, on the training device. With ``--cache auto`` (or
``ram``) the decoded images are kept in RAM during the first epoch, and later epochs gather
their batches from memory with no file I/O and no decode.

The decoding itself, and the bound on the size of the stored images, are in decode.py.

Large photos are cut at decode (with ``--cache off`` and ``auto``): the loader is given a
``cutter`` (``augment.crop_at_decode.CropAtDecode``, built by the training setup), each image's
index goes to the worker with a seed of its own (from the run's seed, the epoch and the index),
and the worker hands back both views already cropped and resized from the full-resolution source
(``crop_decode.py``), in ``ImageBatch.cut``. Small sources keep the bounded decode, and so does
every image with ``--cache ram``. Views cut at decode cannot be cached (they change every
epoch), so ``auto`` stops caching at the first one: it caches data sets of small sources only,
and its batches are the same whether it caches or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset

from .. import _env
from .._runtime import seed_worker
from ..choices import CacheMode
from ..errors import ImageDecodeError
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .checks import BadImage, bad_image
from .crop_decode import CutBatch, CutViews
from .decode import decode_for_training, source_side_bound, stack_images
from .files import ImageSource
from .index import FileIndex
from .sampler import ResumableRandomSampler

#: Share of the available memory that ``--cache auto`` may fill.
CACHE_MEMORY_SHARE = 0.5
#: Share of step time spent waiting for data above which the run prints a hint.
DATA_WAIT_HINT_SHARE = 0.2

#: Decodes one image for training from its path and a seed of its crop boxes: the bounded decode
#: uint8 (3, H, W), or views cut at decode (``augment.crop_at_decode.CropAtDecode``).
Cutter = Callable[..., torch.Tensor | CutViews]
#: Gives the seed of an image's crop boxes from (epoch, index) (``crop_at_decode.view_seed``).
SeedOf = Callable[[int, int], int]


@dataclass
class ImageBatch:
    """A batch of decoded images, before augmentation.

    Attributes:
        images: uint8 (B, 3, H, W); an image smaller than (H, W) is padded at the bottom and
            right by repeating its edge pixels, so a crop inside it never sees other values.
        sizes: int64 (B, 2), the height and width of each image before padding.
        indices: int64 (B,), the images' positions in the dataset.
        skipped: Images of this batch dropped because they could not be decoded.
        bad: Those images, with the reason (for ``RUN/skipped.txt``).
        cut: The views of the rows cut at decode, or None when none was: the augmenter does
            not crop those rows, whose ``images`` are a 1 x 1 placeholder.
    """

    images: torch.Tensor
    sizes: torch.Tensor
    indices: torch.Tensor
    skipped: int
    bad: list[BadImage] = field(default_factory=list)
    cut: CutBatch | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> ImageBatch:
        """Page-locked copy, for faster transfers to the GPU (called by the DataLoader)."""
        self.images = self.images.pin_memory()
        if self.cut is not None:
            self.cut.views = self.cut.views.pin_memory()
        return self


class DecodedImageDataset(Dataset):
    """Images decoded for training: ``(index, uint8 (3, H, W))``, or ``(index, BadImage)``.

    With a ``cutter``, items are asked for as ``(index, seed)`` and large images come back as
    ``(index, CutViews)``.

    The paths are held as a ``FileIndex`` (flat arrays): workers read them without writing the
    reference counts of a million ``Path`` objects, so their memory does not grow page by page.

    Args:
        paths: Image files, or the image members of tar shards (a ``ShardIndex``).
        max_short_side: Bound on the short side of the decoded images.
        cutter: Decodes an image given its seed (``CropAtDecode``), or None for the bounded
            decode of every image.
    """

    def __init__(
        self, paths: Sequence[ImageSource], *, max_short_side: int, cutter: Cutter | None = None
    ):
        self.paths = _as_sequence(paths)
        self.max_short_side = max_short_side
        self.cutter = cutter

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(
        self, item: int | tuple[int, int]
    ) -> tuple[int, torch.Tensor | CutViews | BadImage]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        path = self.paths[index]
        try:
            if self.cutter is not None and seed is not None:
                return index, self.cutter(path, seed=seed)
            return index, decode_for_training(path, max_short_side=self.max_short_side)
        except ImageDecodeError as error:
            return index, bad_image(error)


def _as_sequence(paths: Sequence[ImageSource]) -> Sequence[ImageSource]:
    # Loader workers share flat arrays without copy-on-read growth: a list or tuple of paths
    # becomes a FileIndex; a FileIndex or a shard index stays as it is.
    if isinstance(paths, list | tuple):
        return FileIndex.from_paths([Path(path) for path in paths])
    return paths


def collate_images(
    samples: list[tuple[int, torch.Tensor | CutViews | BadImage | None]],
) -> ImageBatch:
    """Stack decoded images into an ``ImageBatch``, dropping, counting and listing the bad ones.

    Views cut at decode go to ``ImageBatch.cut``; their rows of ``images`` are a 1 x 1 black
    placeholder (edge-padded like any smaller image), so a batch of cut views only is tiny.
    """
    good = [
        (index, image) for index, image in samples if isinstance(image, torch.Tensor | CutViews)
    ]
    bad = [image for _, image in samples if isinstance(image, BadImage)]
    skipped = len(samples) - len(good)
    if not good:
        empty = torch.empty(0, 3, 0, 0, dtype=torch.uint8)
        none = torch.empty(0, dtype=torch.int64)
        return ImageBatch(empty, torch.empty(0, 2, dtype=torch.int64), none, skipped, bad)
    cut_rows = [row for row, (_, image) in enumerate(good) if isinstance(image, CutViews)]
    placeholder = torch.zeros(3, 1, 1, dtype=torch.uint8)
    images, sizes = stack_images(
        [image if isinstance(image, torch.Tensor) else placeholder for _, image in good]
    )
    indices = torch.tensor([index for index, _ in good], dtype=torch.int64)
    cut = None
    if cut_rows:
        pieces = [cast(CutViews, good[row][1]) for row in cut_rows]
        cut = CutBatch(
            views=torch.stack([piece.views for piece in pieces]),
            rows=torch.tensor(cut_rows, dtype=torch.int64),
            crops=torch.stack([piece.crops for piece in pieces]),
            source_sizes=torch.tensor([piece.source_size for piece in pieces], dtype=torch.int64),
        )
    return ImageBatch(images, sizes, indices, skipped, bad, cut)


def available_memory_bytes() -> int | None:
    """The machine's available memory (``MemAvailable`` of ``/proc/meminfo``), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_cache_budget_bytes() -> int:
    """Bytes ``--cache auto`` may use on this machine, for all its ranks together.

    ``SIMCLR_CACHE_BUDGET`` when set, else half the available memory (2 GiB where that is
    unknown).
    """
    configured = _env.cache_budget_bytes()
    if configured is not None:
        return configured
    available = available_memory_bytes()
    if available is None:
        return 2 * 1024**3  # Unknown platform: a modest 2 GiB.
    return int(CACHE_MEMORY_SHARE * available)


def cache_budget_bytes(*, local_world_size: int = 1) -> int:
    """Bytes the cache of one rank may use: the machine's budget shared by its ranks.

    Every rank caches only its own shard of the images (``ResumableRandomSampler.shard``), so
    the ranks of a machine together hold the data set once, and each gets an equal part of the
    budget: W ranks never ask for W times half of the memory.

    Args:
        local_world_size: Ranks on this machine.
    """
    return machine_cache_budget_bytes() // max(1, local_world_size)


class ImageCache:
    """Decoded uint8 images kept in RAM, filled as the first epoch streams past.

    A cache holds the images of its members only: a rank's shard (all images on one rank).

    Args:
        size: Number of images in the dataset.
        members: Dataset indices the cache holds; all of them when None.
    """

    def __init__(self, size: int, members: Sequence[int] | None = None):
        self.members = torch.arange(size) if members is None else torch.tensor(members).long()
        # The row of each dataset index among the members (-1: not a member).
        self.rows = torch.full((size,), -1, dtype=torch.int64)
        self.rows[self.members] = torch.arange(len(self.members))
        self.images: list[torch.Tensor | None] = [None] * len(self.members)
        self.bad = torch.zeros(size, dtype=torch.bool)
        self.seen = torch.zeros(size, dtype=torch.bool)
        self.reasons: dict[int, BadImage] = {}
        self.nbytes = 0
        self._stacked: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.members)

    @property
    def complete(self) -> bool:
        """Whether every member is cached or known to be unreadable."""
        return bool(self.seen[self.members].all())

    @property
    def seen_count(self) -> int:
        """Members cached or known to be unreadable so far."""
        return int(self.seen[self.members].sum())

    def missing(self) -> torch.Tensor:
        """The members not seen yet (int64, in the order of the members)."""
        return self.members[~self.seen[self.members]]

    def add(self, batch: ImageBatch, batch_indices: torch.Tensor) -> None:
        """Store the images of a streamed batch; indices requested but absent were bad."""
        for row, index in enumerate(batch.indices.tolist()):
            member = int(self.rows[index])
            if self.images[member] is None:
                height, width = batch.sizes[row].tolist()
                image = batch.images[row, :, :height, :width].clone()
                self.images[member] = image
                self.nbytes += image.numel()
        self.seen[batch_indices] = True
        self.bad[batch_indices] = True
        self.bad[batch.indices] = False
        good = set(batch.indices.tolist())
        missing = [index for index in batch_indices.tolist() if index not in good]
        for index, item in zip(missing, batch.bad, strict=False):
            self.reasons[index] = item

    def finish(self) -> None:
        """Once complete, put same-sized images into one tensor so a batch is one gather."""
        good = [image for image in self.images if image is not None]
        if good and all(image.shape == good[0].shape for image in good):
            stacked = torch.empty(len(self.images), *good[0].shape, dtype=torch.uint8)
            for member, image in enumerate(self.images):
                if image is not None:
                    stacked[member] = image
            self._stacked = stacked
            self.images = [None] * len(self.images)
            self.nbytes = stacked.numel()  # Rows of unreadable images are allocated too.

    def batch(self, indices: torch.Tensor) -> ImageBatch:
        """Gather the batch of these dataset indices (members of the cache) from memory."""
        good = indices[~self.bad[indices]]
        skipped = len(indices) - len(good)
        bad = [self.reasons[i] for i in indices[self.bad[indices]].tolist() if i in self.reasons]
        if self._stacked is not None:
            images = self._stacked.index_select(0, self.rows[good])
            sizes = torch.tensor(images.shape[-2:], dtype=torch.int64).expand(len(good), 2)
            return ImageBatch(images, sizes.clone(), good, skipped, bad)
        if len(good) == 0:
            batch = collate_images([(int(i), None) for i in indices])
            batch.bad = bad
            return batch
        stored = [self.images[int(self.rows[i])] for i in good.tolist()]
        images, sizes = stack_images([image for image in stored if image is not None])
        return ImageBatch(images, sizes, good, skipped, bad)


class TrainImageLoader:
    """Epochs of shuffled ``ImageBatch``es: streamed by a DataLoader, then from the RAM cache.

    Iterating gives one epoch. While the cache is incomplete the epoch streams through a
    DataLoader whose workers decode; with caching on, the main process keeps what arrives, and
    decodes the images of its shard that the epoch left out after its last batch, so that from
    the second epoch on, batches are gathered from memory in the main process and no file is
    read. With several ranks each caches only its own shard (``ResumableRandomSampler.shard``).

    Args:
        paths: Image files, or the image members of tar shards (a ``ShardIndex``).
        image_size: Side of the training views (sets the stored size bound).
        batch_size: Images per batch; the last incomplete batch of an epoch is dropped.
        workers: Decoding processes of the streaming DataLoader.
        cache: ``auto``, ``ram`` or ``off``.
        generator: Seeded source of the shuffling when no ``sampler`` is given.
        sampler: Gives each epoch's order instead (a resumable one, sharded over ranks); the
            cache holds its shard.
        pin_memory: Page-lock streamed batches (for a CUDA device).
        progress: Receives the one-line notice when ``auto`` falls back to streaming.
        cache_budget: Bytes ``auto`` may fill in this process; ``cache_budget_bytes()`` when
            None.
        cutter: Cuts the views of large images at decode (``CropAtDecode``), with ``off`` and
            ``auto`` (``ram`` keeps the bounded decode of every image); None decodes every
            image to the bound.
        seed_of: The seed of an image's crop boxes from (epoch, index); needed with ``cutter``.
    """

    def __init__(
        self,
        paths: Sequence[ImageSource],
        *,
        image_size: int,
        batch_size: int,
        workers: int,
        cache: CacheMode | str,
        generator: torch.Generator,
        sampler: ResumableRandomSampler | None = None,
        pin_memory: bool = False,
        progress: ProgressCallback = null_progress,
        cache_budget: int | None = None,
        cutter: Cutter | None = None,
        seed_of: SeedOf | None = None,
    ):
        if cutter is not None and seed_of is None:
            raise ValueError("a loader that cuts views at decode needs seed_of")
        self.cutter = cutter
        self.seed_of = seed_of
        self.epochs = 0
        self.sampler = sampler
        self.paths = _as_sequence(paths)
        self.batch_size = batch_size
        self.generator = generator
        self.mode = CacheMode(getattr(cache, "value", cache))
        self.progress = progress
        self.max_short_side = source_side_bound(image_size)
        members = None if sampler is None else sampler.shard()
        self.cache = (
            ImageCache(len(self.paths), members) if self.mode is not CacheMode.off else None
        )
        if cache_budget is None and self.mode is CacheMode.auto:
            cache_budget = cache_budget_bytes()
        self.budget = cache_budget if self.mode is CacheMode.auto else None
        self.workers = workers
        self.pin_memory = pin_memory
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        items = len(self.paths) if self.sampler is None else len(self.sampler)
        return items // self.batch_size

    @property
    def cached(self) -> bool:
        """Whether epochs now come from RAM."""
        return self.cache is not None and self.cache.complete

    @property
    def cuts_at_decode(self) -> bool:
        """Whether large images' views are cut at decode (every cache mode but ``ram``)."""
        return self.cutter is not None and self.mode is not CacheMode.ram

    @property
    def cache_bytes(self) -> int:
        """Bytes of decoded images this process holds in RAM (0 without a cache)."""
        return 0 if self.cache is None else self.cache.nbytes

    def __iter__(self) -> Iterator[ImageBatch]:
        # The epoch the crop boxes are seeded with: the sampler's (set by the loop, and by a
        # resume), else the count of epochs this loader has started.
        epoch = self.sampler.epoch if self.sampler is not None else self.epochs
        self.epochs += 1
        if self.cached:
            yield from self._cached_epoch()
        else:
            yield from self._streamed_epoch(epoch)

    def _shuffled_batches(self) -> list[torch.Tensor]:
        if self.sampler is not None:
            order = torch.tensor(list(self.sampler), dtype=torch.int64)
        else:
            order = torch.randperm(len(self.paths), generator=self.generator)
        return list(order[: len(order) // self.batch_size * self.batch_size].split(self.batch_size))

    def _cached_epoch(self) -> Iterator[ImageBatch]:
        cache = self.cache
        assert cache is not None, "epochs come from the cache only once it is complete"
        for indices in self._shuffled_batches():
            yield cache.batch(indices)

    def _streamed_epoch(self, epoch: int) -> Iterator[ImageBatch]:
        batches = self._shuffled_batches()
        trained = len(batches)
        if self.cache is not None:
            # The images of the shard that this epoch leaves out (its incomplete last batch, the
            # batches a resumed epoch skips, the image a shard has over the share) are decoded
            # after its last batch, so that the cache is complete after one epoch.
            batches = batches + self._filling_batches(batches)
        if self._loader is None:
            self._loader = self._create_loader()
        batch_sampler = cast(_EpochBatches, self._loader.batch_sampler)
        batch_sampler.batches = batches
        seed_of = self.seed_of
        batch_sampler.seed_of = None
        if isinstance(self._loader.dataset, DecodedImageDataset) and self._loader.dataset.cutter:
            batch_sampler.seed_of = None if seed_of is None else lambda index: seed_of(epoch, index)
        for position, batch in enumerate(self._loader):
            if self.cache is not None:
                if batch.cut is not None:
                    self._stop_caching_cut_views()
                else:
                    self.cache.add(batch, batches[position])
                    self._check_budget()
                if self.cache is None:
                    # The next epoch starts workers that persist, now that nothing is cached.
                    self._loader = None
            if position < trained:
                yield batch
            elif self.cache is None:
                break  # The cache gave up: the rest of the batches would only have filled it.
        if self.cache is not None and self.cache.complete:
            self.cache.finish()
            self._loader = None  # The decoding workers are no longer needed.

    def _filling_batches(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        cache = self.cache
        assert cache is not None, "only a cache is filled"
        missing = cache.missing()
        if batches:
            in_epoch = torch.zeros(len(self.paths), dtype=torch.bool)
            in_epoch[torch.cat(batches)] = True
            missing = missing[~in_epoch[missing]]
        return list(missing.split(self.batch_size)) if len(missing) else []

    def _create_loader(self) -> DataLoader:
        persistent = self.workers > 0 and self.cache is None
        cutter = self.cutter if self.cuts_at_decode else None
        return DataLoader(
            DecodedImageDataset(self.paths, max_short_side=self.max_short_side, cutter=cutter),
            batch_sampler=_EpochBatches(),
            num_workers=self.workers,
            collate_fn=collate_images,
            pin_memory=self.pin_memory,
            persistent_workers=persistent,
            worker_init_fn=seed_worker,
            # Without a generator, starting an epoch draws the workers' base seed from the global
            # generator, which also draws the augmentations: a resumed run would drift.
            generator=self.generator,
        )

    def _stop_caching_cut_views(self) -> None:
        side = getattr(self.cutter, "small_source_side", None)
        larger = f"larger than {side} px " if isinstance(side, int) else ""
        self.progress(
            ProgressEvent(
                "message",
                "pretrain",
                text=f"Images {larger}are cut at decode from the full-resolution file every "
                "epoch, so --cache auto does not cache (--cache ram caches every image at "
                f"{self.max_short_side} px instead, which blurs small crops of large photos).",
            )
        )
        self.cache = None
        self.budget = None

    def _check_budget(self) -> None:
        # The estimate is the mean stored size so far times the images of the shard.
        if self.budget is None or self.cache is None:
            return
        estimate = self.cache.nbytes / max(1, self.cache.seen_count) * len(self.cache)
        if estimate > self.budget:
            self.progress(
                ProgressEvent(
                    "message",
                    "pretrain",
                    text=f"Image cache would need {estimate / 1e9:.1f} GB, more than its budget "
                    f"of {self.budget / 1e9:.1f} GB: streaming from disk every epoch "
                    "(set --cache off to skip this check).",
                )
            )
            self.cache = None
            self.budget = None


class _EpochBatches:
    """Batch sampler whose batches the loader sets before each epoch (reshuffled by it).

    With ``seed_of`` set, each index goes to the dataset as ``(index, seed_of(index))``.
    """

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []
        self.seed_of: Callable[[int], int] | None = None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        seed_of = self.seed_of
        for batch in self.batches:
            indices = batch.tolist()
            yield indices if seed_of is None else [(index, seed_of(index)) for index in indices]


class DataWaitGauge:
    """Measures the time a loop spends waiting for its next batch.

    Wrap the loader (``for batch in gauge.timed(loader)``) and read ``take_seconds()`` when
    logging: the waiting time since the last read.
    """

    def __init__(self) -> None:
        self._waited = 0.0
        self.total = 0.0
        self.hinted = False

    def timed(self, batches: Iterable[ImageBatch]) -> Iterator[ImageBatch]:
        """Yield the batches of ``batches``, adding the time spent in ``next`` to the gauge."""
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                self._waited += time.perf_counter() - started
                return
            self._waited += time.perf_counter() - started
            yield batch

    def take_seconds(self) -> float:
        """Seconds spent waiting since the last call."""
        waited, self._waited = self._waited, 0.0
        self.total += waited
        return waited

    def hint(self, share: float, *, workers: int, cached: bool) -> str | None:
        """A one-time suggestion when waiting takes more than 20% of the step time."""
        if self.hinted or share <= DATA_WAIT_HINT_SHARE:
            return None
        self.hinted = True
        advice = (
            "the cache is serving the batches, so the batched augmentation or the host is slow"
            if cached
            else f"try more --workers (now {workers}) or --cache ram if the images fit memory"
        )
        return f"Training waits for data {share:.0%} of the time: {advice}."
