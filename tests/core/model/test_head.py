"""Projection heads of SimCLR v1 and v2."""

from __future__ import annotations

import torch
from torch import nn

from simclr_cli.core.model.head import create_projection_head


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
