"""LARS, parameter groups, learning-rate scaling and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simclr_cli.core.choices import LRScaling, OptimizerName
from simclr_cli.core.schedule import learning_rate_at
from simclr_cli.core.train.optimizers import (
    LARS,
    create_optimizer,
    scaled_learning_rate,
    split_decay_groups,
)


def test_split_decay_groups__biases_and_norms_have_no_decay():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    decay, no_decay = split_decay_groups([model])
    assert [tuple(p.shape) for p in decay] == [(3, 4)]
    assert len(no_decay) == 3


def test_lars__step_is_scaled_by_trust_ratio():
    weight = nn.Parameter(torch.full((2, 2), 2.0))
    weight.grad = torch.full((2, 2), 0.5)
    optimizer = LARS([{"params": [weight]}], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1)
    optimizer.step()
    # ||w|| = 4, ||g|| = 1, ratio = 0.1 * 4 / 1 = 0.4: each element moves by 0.4 * 0.5.
    torch.testing.assert_close(weight.data, torch.full((2, 2), 2.0 - 0.2))


def test_lars__excluded_group_is_plain_sgd_without_decay():
    bias = nn.Parameter(torch.full((3,), 1.0))
    bias.grad = torch.full((3,), 0.5)
    group = {"params": [bias], "lars_adapt": False, "weight_decay": 0.0}
    LARS([group], lr=0.1, momentum=0.0, weight_decay=1.0).step()
    torch.testing.assert_close(bias.data, torch.full((3,), 1.0 - 0.05))


def test_create_optimizer__each_name_trains_a_model():
    for name in OptimizerName:
        model = nn.Linear(3, 1)
        optimizer = create_optimizer(name, [model], learning_rate=0.1)
        before = model.weight.detach().clone()
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        assert not torch.equal(before, model.weight), name


def test_scaled_learning_rate__linear_and_sqrt():
    linear = scaled_learning_rate("lars", batch_size=512, base=None, scaling=LRScaling.linear)
    assert linear == pytest.approx(0.6)
    sqrt = scaled_learning_rate("lars", batch_size=4096, base=None, scaling=LRScaling.sqrt)
    assert sqrt == pytest.approx(0.075 * 64)


def test_learning_rate_at__warmup_then_cosine_to_zero():
    peak = 1.0
    assert learning_rate_at(0, total_steps=100, warmup_steps=10, peak=peak) == pytest.approx(0.1)
    assert learning_rate_at(9, total_steps=100, warmup_steps=10, peak=peak) == pytest.approx(1.0)
    middle = learning_rate_at(55, total_steps=100, warmup_steps=10, peak=peak)
    assert middle == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate_at(100, total_steps=100, warmup_steps=10, peak=peak) == pytest.approx(0)
