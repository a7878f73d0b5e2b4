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

On several ranks the same three stages run on every rank's share of the global batch: stage 2's
loss gathers the projections of all ranks and all their micro-batches (every view is compared
with all 2B - 2 others of the global batch), and gives each rank the gradient of its own
projections; stage 3's backward passes sum the micro-batches' gradients locally (DDP's
``no_sync``) and all-reduce them once, with the last micro-batch.

The micro-batches may be made on demand (``augment.batched.MicroBatchViews``): then only one
micro-batch of views exists at a time, at the cost of augmenting each twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import nn


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


class MicroBatches(Protocol):
    """The micro-batches of one batch: item k is (views a, views b) of micro-batch k.

    Each is (n_k, 3, S, S). A list of tensor pairs (``split_views``), or views made on demand
    (``augment.batched.MicroBatchViews``); item k is asked for twice, and must be the same both
    times.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


#: The loss of the whole batch from its projections z_a, z_b (n, P), float32: ``nt_xent_loss``
#: on one process, this rank's rows against every rank's on several (``nt_xent_across_ranks``).
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def split_views(
    views_a: torch.Tensor, views_b: torch.Tensor, accumulate: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Views (n, 3, S, S) as ``accumulate`` micro-batches of about n / accumulate views each."""
    return list(
        zip(
            torch.tensor_split(views_a, accumulate),
            torch.tensor_split(views_b, accumulate),
            strict=True,
        )
    )


def cached_contrastive_loss(
    model: nn.Module,
    micro_batches: MicroBatches,
    *,
    loss_function: LossFunction,
    autocast_context: contextlib.AbstractContextManager,
    defer_gradient_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """The contrastive loss of a whole batch, forwarded micro-batch by micro-batch.

    The returned loss has the value of the un-split batch's loss; calling ``backward()`` on it
    re-runs every micro-batch with gradients and accumulates the parameters' gradients, which
    match those of the un-split batch (exactly without batch norm in training mode).

    On several ranks ``loss_function`` gathers every rank's projections (with a gather whose
    backward sums the gradients over ranks), so the cache holds the gradient of this rank's
    projections for the loss of all ranks' micro-batches together. ``defer_gradient_sync``
    (``DistributedDataParallel.no_sync``) then wraps every micro-batch's replay but the last, so
    that the gradients of all micro-batches are summed locally and all-reduced once per step.

    Args:
        model: Maps images (B, 3, S, S) to ``(features, projections)``; projections (B, P).
        micro_batches: The K micro-batches of the batch (``split_views``, or views made on
            demand), n views a and n views b in all.
        loss_function: The loss of the whole batch from its projections, two (n, P) tensors.
        autocast_context: Context manager for mixed precision, entered once per forward pass.
        defer_gradient_sync: Makes a context manager in which backward passes do not
            all-reduce gradients; None on one process.
        memory_format: Layout of the model's input (``torch.channels_last`` for a model
            converted to it).

    Returns:
        The scalar loss, float32.
    """
    # Stage 1: projections of every micro-batch, without activations.
    states, projections_a, projections_b, sizes = [], [], [], []
    with torch.no_grad(), _running_statistics_kept(model):
        for index in range(len(micro_batches)):
            chunk_a, chunk_b = micro_batches[index]
            states.append(_RandomState(chunk_a.device))
            views = torch.cat([chunk_a, chunk_b]).contiguous(memory_format=memory_format)
            del chunk_a, chunk_b  # Views made on demand are freed before the next are made.
            with autocast_context:
                _, projections = model(views)
            del views
            z_a, z_b = projections.float().chunk(2)
            projections_a.append(z_a)
            projections_b.append(z_b)
            sizes.append(z_a.shape[0])

    # Stage 2: the loss over the whole batch and its gradient with respect to the projections.
    # On several ranks this is where the projections are gathered; the gradient is that of this
    # rank's own rows, summed over every rank's loss (see distributed/collectives.py).
    z_a = torch.cat(projections_a).requires_grad_()
    z_b = torch.cat(projections_b).requires_grad_()
    with torch.enable_grad():
        loss = loss_function(z_a, z_b)
        grad_a, grad_b = torch.autograd.grad(loss, [z_a, z_b])
    grad_a, grad_b = grad_a.split(sizes), grad_b.split(sizes)

    # Stage 3, run by loss.backward(): each micro-batch again, back-propagating its slice. All
    # but the last leave their gradients unsynchronised; the last one's backward all-reduces
    # the sum of all of them, once.
    last = len(states) - 1

    def replay(grad_output: torch.Tensor) -> None:
        with torch.enable_grad():
            for index, state in enumerate(states):
                sync: contextlib.AbstractContextManager = contextlib.nullcontext()
                if defer_gradient_sync is not None and index < last:
                    sync = defer_gradient_sync()
                with sync:
                    chunk_a, chunk_b = micro_batches[index]
                    views = torch.cat([chunk_a, chunk_b]).contiguous(memory_format=memory_format)
                    del chunk_a, chunk_b
                    with state.restored(), autocast_context:
                        _, projections = model(views)
                    cached = torch.cat([grad_a[index], grad_b[index]]) * grad_output
                    torch.autograd.backward(projections.float(), cached)

    anchor = next((p for p in model.parameters() if p.requires_grad), None)
    if anchor is None:
        return loss.detach()
    return _ReplayOnBackward.apply(loss.detach(), anchor, replay)
