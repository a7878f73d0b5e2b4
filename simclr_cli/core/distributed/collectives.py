"""Collectives that carry gradients, and the loss and numbers that ranks share through them.

The loss sees every rank's projections: each rank gathers all 2B projections with a collective
that carries gradients back to the rank that owns them, and computes the loss of its own 2B / W
rows against all 2B columns (``nt_xent_across_ranks``). See ranks.py for why the result equals
one process training on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..loss import nt_xent
from .ranks import RankContext


class _GatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns each rank the gradient of its own rows."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss depends on this rank's rows, so their gradient is the sum of the
        # gradients that all ranks computed for them.
        world_size, rank = dist.get_world_size(), dist.get_rank()
        grad = grad.contiguous()
        rows = grad.shape[0] // world_size
        if dist.get_backend() == "nccl":
            own = torch.empty_like(grad[:rows])
            dist.reduce_scatter_tensor(own, grad)
            return own
        # Gloo has no reduce-scatter; the tensors here are small (2B x 128).
        total = grad.clone()
        dist.all_reduce(total)
        return total[rank * rows : (rank + 1) * rows]


def gather_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order, keeping gradients.

    Args:
        tensor: This rank's rows, shape (R, ...), the same shape on every rank.

    Returns:
        All ranks' rows, shape (world_size * R, ...); rank r's rows are at ``r*R:(r+1)*R``.
        The gradient flowing into row block r is summed over ranks and returned to rank r.
    """
    return _GatherWithGradient.apply(tensor)


class _AllReduceWithGradient(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


def all_reduce_with_gradient(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all ranks, differentiable (the backward sums over ranks)."""
    return _AllReduceWithGradient.apply(tensor)


def nt_xent_across_ranks(
    z_a: torch.Tensor, z_b: torch.Tensor, *, temperature: float, context: RankContext
) -> torch.Tensor:
    """NT-Xent of this rank's views against every rank's views.

    Args:
        z_a: This rank's projections of the first views, shape (n, D).
        z_b: This rank's projections of the second views, shape (n, D).
        temperature: The temperature of the softmax.
        context: This rank's place in the job.

    Returns:
        The mean loss over this rank's 2n rows. The mean of this over ranks is the loss of the
        global batch, and with ``DistributedDataParallel`` averaging the gradients, the gradient
        is that of the global batch.
    """
    rows = torch.cat([z_a, z_b])
    columns = gather_with_gradient(rows)
    count = z_a.shape[0]
    local = torch.arange(2 * count, device=rows.device)
    offset = context.rank * 2 * count
    positive_index = offset + (local + count) % (2 * count)
    return nt_xent.nt_xent_rows(
        rows, columns, positive_index, offset + local, temperature=temperature
    )


def agree_batch_size(
    views_a: torch.Tensor, views_b: torch.Tensor, context: RankContext
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trim this rank's batch to the smallest batch of any rank.

    Unreadable images are dropped from a batch, so ranks may hold different numbers of images;
    the gather needs the same number everywhere. A no-op for a single process.

    Args:
        views_a: This rank's first views (n, ...), or any tensor whose rows are the batch's
            images (the uint8 images themselves, before augmentation).
        views_b: The second views (n, ...), or the images' sizes (n, 2).
        context: This rank's place in the job.
    """
    if not context.distributed:
        return views_a, views_b
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    size = torch.tensor([views_a.shape[0]], device=device)
    dist.all_reduce(size, op=dist.ReduceOp.MIN)
    smallest = int(size.item())
    return views_a[:smallest], views_b[:smallest]


def average_across_ranks(value: float, context: RankContext) -> float:
    """The mean of a number over ranks (every rank must call it); the number itself on one."""
    if not context.distributed:
        return value
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total.item()) / context.world_size


def sum_across_ranks(value: int, context: RankContext) -> int:
    """The sum of a count over ranks (every rank must call it); the count itself on one."""
    if not context.distributed:
        return value
    device = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return int(total.item())


def _collective_device() -> torch.device:
    """Where a collective's tensors live: on this rank's GPU for NCCL, on the CPU for gloo."""
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def any_across_ranks(flags: list[bool], context: RankContext) -> list[bool]:
    """For each flag, whether it is set on any rank (every rank must call it with as many).

    Lets the ranks agree on a decision that each takes from its own clock or signals (stop
    now, checkpoint now), so that they all reach the same collectives.
    """
    if not context.distributed:
        return list(flags)
    values = torch.tensor([int(flag) for flag in flags], dtype=torch.int64)
    values = values.to(_collective_device())
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value) for value in values.tolist()]


def all_gather_bytes(blob: torch.Tensor, context: RankContext) -> list[torch.Tensor]:
    """Every rank's bytes, in rank order (every rank must call it); lengths may differ.

    Args:
        blob: This rank's bytes, uint8 of shape (L,), on the CPU.
        context: This rank's place in the job.

    Returns:
        W uint8 tensors on the CPU, rank r's bytes at index r (only ``blob`` on one process).
    """
    if not context.distributed:
        return [blob]
    device = _collective_device()
    length = torch.tensor([blob.numel()], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(context.world_size)]
    dist.all_gather(lengths, length)
    sizes = [int(size.item()) for size in lengths]
    # all_gather needs one shape everywhere: pad to the longest, cut each back afterwards.
    padded = torch.zeros(max(sizes), dtype=torch.uint8, device=device)
    padded[: blob.numel()] = blob.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return [part[:size].cpu() for part, size in zip(parts, sizes, strict=True)]


def broadcast_from_main(value: int, context: RankContext) -> int:
    """Rank 0's value of an integer, on every rank (every rank must call it).

    What makes a decision that one rank takes, such as the step count that rank 0's time budget
    plans, the same on all ranks, so that they stop at the same step. One 8-byte broadcast.
    """
    if not context.distributed:
        return value
    number = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.broadcast(number, src=0)
    return int(number.item())
