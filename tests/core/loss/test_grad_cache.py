"""Gradient caching gives the gradients of the un-split batch."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn

from simclr_cli.core.loss.nt_xent import nt_xent_loss
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.loop import contrastive_step


class DropoutModel(nn.Module):
    """A small model without batch norm but with dropout, returning (features, projections)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(32, 16)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        return features, self.head(self.dropout(features))


def gradients(
    model: nn.Module, views_a: torch.Tensor, views_b: torch.Tensor, accumulate: int, seed: int
) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = contrastive_step(
        model,
        views_a,
        views_b,
        temperature=0.2,
        autocast_context=contextlib.nullcontext(),
        accumulate=accumulate,
    )
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_gradients(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("accumulate", [2, 4, 3])
def test_cached_contrastive_loss__same_gradients_as_whole_batch(accumulate: int):
    # In evaluation mode batch norm normalises with its running statistics, so a micro-batch's
    # outputs do not depend on the rest of the batch and the comparison is exact. (In training
    # mode the statistics are per micro-batch, which changes the outputs themselves.)
    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", image_size=16, head="v2").eval()
    views_a, views_b = torch.randn(12, 3, 16, 16), torch.randn(12, 3, 16, 16)
    whole_loss, whole = gradients(model, views_a, views_b, accumulate=1, seed=0)
    cached_loss, cached = gradients(model, views_a, views_b, accumulate=accumulate, seed=0)
    assert cached_loss == pytest.approx(whole_loss, rel=1e-6)
    assert_same_gradients(whole, cached)


def test_cached_contrastive_loss__replays_dropout_masks():
    # Training mode without batch norm: the replay must draw the same dropout masks as the
    # first pass, or the cached gradients belong to different projections.
    torch.manual_seed(0)
    model = DropoutModel().train()
    views_a, views_b = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    # The whole batch in one pass draws one mask for 16 rows; the cached path draws it per
    # micro-batch, so compare with the same model fed micro-batch by micro-batch: the losses
    # must agree with the gradients computed from them, which fails if masks differ.
    cached_loss, cached = gradients(model, views_a, views_b, accumulate=2, seed=5)
    torch.manual_seed(5)
    projections_a, projections_b = [], []
    for chunk_a, chunk_b in zip(views_a.chunk(2), views_b.chunk(2), strict=True):
        _, projections = model(torch.cat([chunk_a, chunk_b]))
        a, b = projections.chunk(2)
        projections_a.append(a)
        projections_b.append(b)
    model.zero_grad(set_to_none=True)
    loss = nt_xent_loss(torch.cat(projections_a), torch.cat(projections_b), temperature=0.2)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert cached_loss == pytest.approx(loss.item(), rel=1e-6)
    assert_same_gradients(expected, cached)


def test_cached_contrastive_loss__one_running_statistics_update_per_micro_batch():
    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", image_size=16, head="v2").train()
    reference = copy.deepcopy(model)
    views_a, views_b = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    loss = contrastive_step(
        model,
        views_a,
        views_b,
        temperature=0.5,
        autocast_context=contextlib.nullcontext(),
        accumulate=2,
    )
    loss.backward()
    with torch.no_grad():
        for chunk_a, chunk_b in zip(views_a.chunk(2), views_b.chunk(2), strict=True):
            reference(torch.cat([chunk_a, chunk_b]))
    for (name, buffer), expected in zip(model.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(buffer, expected, msg=name)


def test_cached_contrastive_loss__loss_scale_reaches_the_cached_gradients():
    # A loss scaler back-propagates scale x loss: the replay must multiply its cached gradients
    # by the incoming gradient, or fp16 loss scaling would not reach the parameters.
    torch.manual_seed(0)
    model = DropoutModel().eval()
    views_a, views_b = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    _, plain = gradients(model, views_a, views_b, accumulate=2, seed=0)
    model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = contrastive_step(
        model,
        views_a,
        views_b,
        temperature=0.2,
        autocast_context=contextlib.nullcontext(),
        accumulate=2,
    )
    scaler.scale(loss).backward()
    scaled = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert_same_gradients({name: 1024.0 * grad for name, grad in plain.items()}, scaled)
