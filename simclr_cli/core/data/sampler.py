"""A shuffling sampler whose position can be saved and restored, for exact mid-epoch resume.

PyTorch's ``RandomSampler`` draws each epoch's order from a generator whose state moves on as it
is used, and it cannot start in the middle of an epoch without reading (decoding and augmenting)
the images it skips. ``ResumableRandomSampler`` derives the order of epoch ``e`` from the seed
and ``e`` alone, so a run resumed at (epoch, batch) sees exactly the batches the uninterrupted run
would have seen, and skipping the first batches of an epoch costs nothing.

With several ranks, each rank keeps a fixed shard of the images for the whole run and shuffles
inside it every epoch, so that its RAM cache holds only its shard and is complete after one epoch
(``loader.ImageCache``); the shards together hold each image once, so a machine caches the data
set once however many ranks it runs. This is statistically the same training as one shuffled
order shared by the ranks:

* The shards are a random partition (drawn from the seed), so each is a uniform random sample of
  the data, and every rank's batch is a uniform random draw without replacement, as before.
* The loss gathers the projections of all ranks: each image still meets images of every shard as
  negatives, and two given images share a global batch with probability about B / N whether they
  are in one shard or in two (the ranks shuffle independently, so no pairing repeats).
* The gradient of a global batch of B / W images from each of W equal random shards is an
  unbiased estimate of the full gradient, with a variance no larger than that of B images drawn
  at random (stratified sampling). The reference implementation does the same: each TPU host
  reads its own shard of the input files.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

#: Mixes the epoch into the seed, so that epochs of nearby seeds do not share orders.
_EPOCH_STRIDE = 1_000_003
#: The "epoch" whose permutation cuts the shards: one that no run reaches.
_SHARD_EPOCH = _EPOCH_STRIDE - 1


class ResumableRandomSampler(Sampler[int]):
    """Indices of a fresh random permutation every epoch, optionally starting part-way through.

    The loop calls ``set_epoch(epoch)`` before iterating each epoch; ``resume_at`` (once, before
    the first epoch of a resumed run) skips the samples that run had already consumed.

    With several ranks, a permutation drawn once from the seed deals the images out to the ranks
    (rank r gets every ``world_size``-th image from position r): that is the rank's shard for the
    whole run. Each epoch, every rank shuffles its own shard (the ranks draw their orders in turn
    from the epoch's generator) and takes the first ``share`` images, the same count on every
    rank, so the ranks see disjoint parts of each epoch. On one rank the shard is the whole data
    set and the order is one permutation per epoch.

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
        self._shards: list[torch.Tensor] | None = None

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

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)

    def _all_shards(self) -> list[torch.Tensor]:
        if self._shards is None:
            dealt = torch.randperm(self.num_items, generator=self._generator(_SHARD_EPOCH))
            self._shards = [dealt[rank :: self.world_size] for rank in range(self.world_size)]
        return self._shards

    def shard(self) -> list[int]:
        """The dataset indices this rank draws from for the whole run (all of them on one rank).

        Shards of different ranks are disjoint and together hold every image; their sizes differ
        by at most one (an image a rank's ``share`` leaves out is dropped in that epoch only).
        """
        if self.world_size == 1:
            return list(range(self.num_items))
        return self._all_shards()[self.rank].tolist()

    def order(self, epoch: int) -> list[int]:
        """This rank's share of epoch ``epoch``: ``share`` indices of its shard, shuffled."""
        generator = self._generator(epoch)
        if self.world_size == 1:
            return torch.randperm(self.num_items, generator=generator).tolist()
        shards = self._all_shards()
        # Each rank first draws the permutations of the ranks before it, so that every rank gets
        # its own one from the epoch's generator (one shared permutation would put the same
        # neighbours of the dealt order into the same global batch every epoch).
        for shard in shards[: self.rank]:
            torch.randperm(len(shard), generator=generator)
        shard = shards[self.rank]
        permutation = torch.randperm(len(shard), generator=generator)
        return shard[permutation[: self.share]].tolist()

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.share - self.start
