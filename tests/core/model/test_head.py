"""Projection heads of SimCLR v1 and v2."""

from __future__ import annotations

import torch
from torch import nn

from simclr_cli.core.model.head import ScaleOnlyBatchNorm1d, create_projection_head


def test_create_projection_head__v1_has_two_linear_layers():
    head = create_projection_head("v1", input_dim=16, output_dim=8)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 16), (8, 16)]
    assert head(torch.randn(4, 16)).shape == (4, 8)


def test_create_projection_head__v2_has_three_layers_with_batch_norm():
    head = create_projection_head("v2", input_dim=16, hidden_dim=32, output_dim=8)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 16), (32, 32), (8, 32)]
    assert len(norms) == 3 and head.num_layers == 3
    assert head(torch.randn(4, 16)).shape == (4, 8)


def test_create_projection_head__v2_last_norm_learns_a_scale_and_no_shift():
    head = create_projection_head("v2", input_dim=16, hidden_dim=32, output_dim=8)
    last = head.blocks[2][1]
    assert isinstance(last, ScaleOnlyBatchNorm1d)
    assert last.weight.requires_grad and tuple(last.weight.shape) == (8,)
    assert last.bias is None
    keys = {key for key in head.state_dict() if key.startswith("blocks.2.")}
    assert keys == {
        "blocks.2.0.weight",
        "blocks.2.1.weight",
        "blocks.2.1.running_mean",
        "blocks.2.1.running_var",
        "blocks.2.1.num_batches_tracked",
    }
    # The scale trains: it gets a gradient, and the output follows it without any shift.
    features = torch.randn(6, 16)
    head(features).square().sum().backward()
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    with torch.no_grad():
        last.weight.fill_(2.0)
    output = head(features)
    torch.testing.assert_close(output.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        output.std(0, unbiased=False), torch.full((8,), 2.0), atol=1e-3, rtol=0
    )
