"""A shuffling sampler whose position can be saved and restored, for exact mid-epoch resume.

PyTorch's ``RandomSampler`` draws each epoch's order from a generator whose state moves on as it
is used, and it cannot start in the middle of an epoch without reading (decoding and augmenting)
the images it skips. ``ResumableRandomSampler`` derives the order of epoch ``e`` from the seed
and ``e`` alone, so a run resumed at (epoch, batch) sees exactly the batches the uninterrupted run
would have seen, and skipping the first batches of an epoch costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

#: Mixes the epoch into the seed, so that epochs of nearby seeds do not share orders.
_EPOCH_STRIDE = 1_000_003


class ResumableRandomSampler(Sampler[int]):
    """Indices of a fresh random permutation every epoch, optionally starting part-way through.

    The loop calls ``set_epoch(epoch)`` before iterating each epoch; ``resume_at`` (once, before
    the first epoch of a resumed run) skips the samples that run had already consumed.

    Args:
        num_items: Size of the dataset.
        seed: Seed of the run; the order of epoch ``e`` depends on ``seed`` and ``e`` only.
    """

    def __init__(self, num_items: int, *, seed: int):
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields; a resume offset applies only to its epoch."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, samples_consumed: int) -> None:
        """Make the next iteration of ``epoch`` skip its first ``samples_consumed`` indices."""
        self.epoch = epoch
        self.start = max(0, min(samples_consumed, self.num_items))

    def order(self, epoch: int) -> list[int]:
        """The full permutation of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.num_items - self.start
