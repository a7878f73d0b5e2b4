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

    With several ranks, every rank draws the same permutation and takes every ``world_size``-th
    index from its own offset (as ``DistributedSampler`` does), cut to an equal share, so the
    ranks see disjoint parts of each epoch.

    Args:
        num_items: Size of the dataset.
        seed: Seed of the run; the order of epoch ``e`` depends on ``seed`` and ``e`` only.
        rank: This process's rank.
        world_size: Number of ranks sharing each epoch.
    """

    def __init__(self, num_items: int, *, seed: int, rank: int = 0, world_size: int = 1):
        self.num_items = num_items
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.share = num_items // world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration yields; a resume offset applies only to its epoch."""
        if epoch != self.epoch:
            self.start = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, samples_consumed: int) -> None:
        """Make the next iteration of ``epoch`` skip the first ``samples_consumed`` indices of this
        rank's share."""
        self.epoch = epoch
        self.start = max(0, min(samples_consumed, self.share))

    def order(self, epoch: int) -> list[int]:
        """This rank's share of the permutation of ``epoch`` (the whole of it on one rank)."""
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)
        permutation = torch.randperm(self.num_items, generator=generator).tolist()
        return permutation[self.rank :: self.world_size][: self.share]

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.share - self.start
