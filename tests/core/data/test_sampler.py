"""The resumable sampler: orders depend on seed and epoch only, and resume mid-epoch."""

from __future__ import annotations

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
