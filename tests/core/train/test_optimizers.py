"""LARS, parameter groups, learning-rate scaling and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simclr_cli.core.choices import LRScaling, OptimizerName
from simclr_cli.core.model.head import create_projection_head
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


def test_split_decay_groups__head_scale_is_a_norm_parameter():
    head = create_projection_head("v2", input_dim=16, hidden_dim=32, output_dim=8)
    decay, no_decay = split_decay_groups([head])
    scale = head.blocks[2][1].weight
    assert any(p is scale for p in no_decay) and not any(p is scale for p in decay)
    optimizer = create_optimizer("lars", [head], learning_rate=0.1)
    group = next(g for g in optimizer.param_groups if any(p is scale for p in g["params"]))
    assert group["weight_decay"] == 0.0 and group["lars_adapt"] is False


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


@pytest.mark.parametrize(
    ("optimizer", "scaling", "base", "batch_size", "expected"),
    [
        # The paper's flags: --lr 0.075 with sqrt gives 1.2 at batch 256; 0.3 linear gives 0.3.
        ("lars", "sqrt", 0.075, 256, 1.2),
        ("lars", "sqrt", 1.2, 256, 1.2 * 16),
        ("lars", "sqrt", 0.075, 4096, 0.075 * 64),
        ("lars", "linear", 0.3, 256, 0.3),
        ("lars", "linear", 0.3, 4096, 4.8),
        ("sgd", "sqrt", 0.01, 1024, 0.01 * 32),
        ("sgd", "linear", 0.01, 1024, 0.04),
        ("adamw", "sqrt", 1e-3, 64, 1e-3 * 8),
        ("adamw", "linear", 1e-3, 64, 2.5e-4),
    ],
)
def test_scaled_learning_rate__lr_means_what_the_papers_flag_means(
    optimizer, scaling, base, batch_size, expected
):
    rate = scaled_learning_rate(optimizer, batch_size=batch_size, base=base, scaling=scaling)
    assert rate == pytest.approx(expected)


@pytest.mark.parametrize("batch_size", [2, 8, 32, 256, 500, 4096])
def test_scaled_learning_rate__defaults_are_the_earlier_peaks_bitwise(batch_size):
    # The defaults before --lr took the paper's meaning, written as they were computed then.
    earlier = {
        ("lars", "sqrt"): 0.075 * math.sqrt(batch_size),
        ("sgd", "sqrt"): 0.06 * math.sqrt(batch_size / 256),
        ("adamw", "sqrt"): 1e-3 * math.sqrt(batch_size / 256),
        ("lars", "linear"): 0.3 * batch_size / 256,
        ("sgd", "linear"): 0.06 * batch_size / 256,
        ("adamw", "linear"): 1e-3 * batch_size / 256,
    }
    for (optimizer, scaling), rate in earlier.items():
        now = scaled_learning_rate(optimizer, batch_size=batch_size, base=None, scaling=scaling)
        assert now == rate, (optimizer, scaling)


def test_scaled_learning_rate__both_scalings_agree_at_batch_256_by_default():
    for optimizer in OptimizerName:
        rates = {
            scaled_learning_rate(optimizer, batch_size=256, base=None, scaling=scaling)
            for scaling in ("linear", "sqrt")
        }
        # LARS keeps the paper's two defaults (0.3 linear, 1.2 sqrt); the others agree.
        assert len(rates) == (2 if optimizer is OptimizerName.lars else 1), optimizer


def test_learning_rate_at__warmup_then_cosine_to_zero():
    peak = 1.0
    assert learning_rate_at(0, total_steps=100, warmup_steps=10, peak=peak) == pytest.approx(0.1)
    assert learning_rate_at(9, total_steps=100, warmup_steps=10, peak=peak) == pytest.approx(1.0)
    middle = learning_rate_at(55, total_steps=100, warmup_steps=10, peak=peak)
    assert middle == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate_at(100, total_steps=100, warmup_steps=10, peak=peak) == pytest.approx(0)
