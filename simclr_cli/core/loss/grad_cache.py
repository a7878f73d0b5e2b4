"""Gradient caching: the contrastive loss of a big batch in the memory of a small one.

Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup". The
loss of SimCLR couples every view of the batch with every other, so plain gradient accumulation
(K losses over K micro-batches) would shrink the set of negatives K-fold. Gradient caching keeps
them all in three stages:

1. embed the K micro-batches without keeping activations (``torch.no_grad``);
2. compute the loss over the whole batch of projections and its gradient with respect to the
   projections, a (2N, P) tensor: the "gradient cache";
3. run each micro-batch forward again, this time with activations, and back-propagate its slice
   of the cache into the parameters.

The parameter gradients equal those of the un-split batch, up to batch norm, whose statistics
are computed per micro-batch (as they are per rank without SyncBN). Memory is that of one
micro-batch of activations plus the projections of the whole batch; the price is a second forward
pass of every micro-batch.

Stage 3 runs when the caller back-propagates the returned loss (``loss.backward()``), so a
training loop does not change shape: ``contrastive_step`` returns this loss instead of the
ordinary one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .nt_xent import nt_xent_loss


class _RandomState:
    """The CPU and CUDA random states before a micro-batch, so its replay draws the same numbers
    (dropout, stochastic depth) as its first pass did."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        """Run a block with the saved states, leaving the global states as they were."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@contextlib.contextmanager
def _running_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Undo the running-statistics updates of batch norm layers made inside the block.

    The first, gradient-free pass would otherwise move the running mean and variance once more
    than training without the cache does; the replay makes the one update per micro-batch.
    """
    saved = [
        (buffer, buffer.clone())
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.training
        for buffer in module.buffers()
    ]
    try:
        yield
    finally:
        for buffer, value in saved:
            buffer.copy_(value)


class _ReplayOnBackward(torch.autograd.Function):
    """Pass the loss through; on backward, run ``replay`` to put the gradients into the model.

    ``anchor`` is any parameter that requires grad: it makes the output part of the autograd
    graph, so that ``loss.backward()`` reaches this function. It receives no gradient here;
    ``replay`` accumulates the real ones into every parameter (a re-entrant backward, as
    ``torch.utils.checkpoint`` does).
    """

    @staticmethod
    def forward(
        ctx: Any,
        loss: torch.Tensor,
        anchor: torch.Tensor,
        replay: Callable[[torch.Tensor], None],
    ) -> torch.Tensor:
        ctx.replay = replay
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        ctx.replay(grad_output)
        return None, None, None


def cached_contrastive_loss(
    model: nn.Module,
    views_a: torch.Tensor,
    views_b: torch.Tensor,
    *,
    accumulate: int,
    temperature: float,
    autocast_context: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """NT-Xent over the whole batch, forwarded in ``accumulate`` micro-batches.

    The returned loss has the value of the un-split batch's loss; calling ``backward()`` on it
    re-runs every micro-batch with gradients and accumulates the parameters' gradients, which
    match those of the un-split batch (exactly without batch norm in training mode).

    Args:
        model: Maps images (B, 3, S, S) to ``(features, projections)``; projections (B, P).
        views_a: First views (N, 3, S, S).
        views_b: Second views (N, 3, S, S).
        accumulate: Number of micro-batches K; each holds about N / K images (2N / K views).
        temperature: Loss temperature.
        autocast_context: Context manager for mixed precision, entered once per forward pass.

    Returns:
        The scalar loss, float32.
    """
    chunks_a = torch.tensor_split(views_a, accumulate)
    chunks_b = torch.tensor_split(views_b, accumulate)
    sizes = [chunk.shape[0] for chunk in chunks_a]

    # Stage 1: projections of every micro-batch, without activations.
    states, projections_a, projections_b = [], [], []
    with torch.no_grad(), _running_statistics_kept(model):
        for chunk_a, chunk_b in zip(chunks_a, chunks_b, strict=True):
            states.append(_RandomState(views_a.device))
            with autocast_context:
                _, projections = model(torch.cat([chunk_a, chunk_b]))
            z_a, z_b = projections.float().chunk(2)
            projections_a.append(z_a)
            projections_b.append(z_b)

    # Stage 2: the loss over the whole batch and its gradient with respect to the projections.
    z_a = torch.cat(projections_a).requires_grad_()
    z_b = torch.cat(projections_b).requires_grad_()
    with torch.enable_grad():
        loss = nt_xent_loss(z_a, z_b, temperature=temperature)
        grad_a, grad_b = torch.autograd.grad(loss, [z_a, z_b])
    grad_a, grad_b = grad_a.split(sizes), grad_b.split(sizes)

    # Stage 3, run by loss.backward(): each micro-batch again, back-propagating its slice.
    def replay(grad_output: torch.Tensor) -> None:
        with torch.enable_grad():
            for index, state in enumerate(states):
                with state.restored(), autocast_context:
                    _, projections = model(torch.cat([chunks_a[index], chunks_b[index]]))
                cached = torch.cat([grad_a[index], grad_b[index]]) * grad_output
                torch.autograd.backward(projections.float(), cached)

    anchor = next((p for p in model.parameters() if p.requires_grad), None)
    if anchor is None:
        return loss.detach()
    return _ReplayOnBackward.apply(loss.detach(), anchor, replay)
