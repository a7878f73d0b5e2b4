"""The resumable sampler: orders depend on seed and epoch only, resume mid-epoch, rank shards."""

from __future__ import annotations

import torch

from simclr_cli.core.data.sampler import ResumableRandomSampler


def test_resumable_random_sampler__orders_are_permutations_per_epoch():
    sampler = ResumableRandomSampler(20, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second
    assert ResumableRandomSampler(20, seed=3).order(1) == second
    assert ResumableRandomSampler(20, seed=4).order(0) != first


def test_resumable_random_sampler__resume_skips_consumed_samples_once():
    sampler = ResumableRandomSampler(12, seed=0)
    sampler.resume_at(2, 8)
    assert len(sampler) == 4
    sampler.set_epoch(2)  # The loop selects the resumed epoch: the offset stays.
    assert list(sampler) == sampler.order(2)[8:]
    assert list(sampler) == sampler.order(2)  # The next pass of the same epoch is whole.
    sampler.resume_at(2, 4)
    sampler.set_epoch(3)  # Another epoch: the offset does not apply.
    assert list(sampler) == sampler.order(3)


def test_resumable_random_sampler__one_rank_keeps_its_earlier_order():
    # One process trains on exactly the orders of earlier versions (fixed-seed runs stay bitwise).
    sampler = ResumableRandomSampler(20, seed=3)
    for epoch in (0, 1, 5):
        generator = torch.Generator().manual_seed(3 * 1_000_003 + epoch)
        assert sampler.order(epoch) == torch.randperm(20, generator=generator).tolist()
    assert sampler.shard() == list(range(20))


def test_resumable_random_sampler__ranks_shuffle_inside_fixed_disjoint_shards():
    samplers = [ResumableRandomSampler(21, seed=5, rank=rank, world_size=2) for rank in (0, 1)]
    shards = [set(sampler.shard()) for sampler in samplers]
    # The shards split the images between the ranks, sizes within one of each other.
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(range(21))
    assert sorted(len(shard) for shard in shards) == [10, 11]
    assert all(len(sampler) == 10 for sampler in samplers)
    orders = {}
    for epoch in range(3):
        for rank, sampler in enumerate(samplers):
            order = sampler.order(epoch)
            # Each epoch: `share` distinct images of the rank's own shard, in a new order.
            assert len(order) == len(set(order)) == 10 and set(order) <= shards[rank]
            orders[rank, epoch] = order
    assert orders[0, 0] != orders[0, 1] and orders[1, 1] != orders[1, 2]
    # The ranks shuffle independently: not by the same permutation of their shards.
    positions = [[samplers[r].shard().index(i) for i in orders[r, 0]] for r in (0, 1)]
    assert positions[0] != positions[1]
    # The shards depend on the seed, and a fresh sampler gives the same orders (resume).
    assert ResumableRandomSampler(21, seed=5, rank=1, world_size=2).order(2) == orders[1, 2]
    assert set(ResumableRandomSampler(21, seed=6, world_size=2).shard()) != shards[0]


def test_resumable_random_sampler__rank_resumes_inside_its_shard():
    sampler = ResumableRandomSampler(24, seed=0, rank=1, world_size=2)
    sampler.resume_at(3, 8)
    assert len(sampler) == 4
    sampler.set_epoch(3)
    assert list(sampler) == sampler.order(3)[8:]
    assert list(sampler) == sampler.order(3)
