"""Several processes, one global batch: the rank context, collectives with gradients, global BN.

A SimCLR step over W processes (ranks) with a global batch of B images gives each rank B / W
images. Three things make the result equal to one process training on all B images:

* The loss sees every rank's projections. Each rank gathers all 2B projections with a collective
  that carries gradients back to the rank that owns them, and computes the loss of its own 2B / W
  rows against all 2B columns (``nt_xent_across_ranks``). No rank repeats another's rows.
* Gradients are averaged by ``DistributedDataParallel``. The gather's backward *sums* over ranks,
  because every rank's loss depends on every rank's projections; the local loss is the mean over
  the rank's own rows. Averaging the W per-rank gradients then gives the gradient of the mean over
  all 2B rows, which is the single-process loss.
* Batch norm statistics are taken over the global batch (the paper's global BN): on CUDA with
  PyTorch's ``SyncBatchNorm`` (through timm, which also converts ``BatchNormAct2d``), on the CPU
  with ``GlobalBatchNorm`` below, the readable reference that PyTorch lacks for CPU tensors.
  ``SIMCLR_SYNC_BN=reference`` uses the reference on CUDA too.

Ranks learn who they are from the variables that ``torchrun`` and the elastic launcher set
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); ``launcher`` starts
them on this machine for ``--gpus`` and ``--cpu-processes``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from timm.layers import convert_sync_batchnorm
from torch import nn

from .. import _env
from ..choices import DeviceName
from ..config import PretrainConfig
from ..errors import ConfigError
from ..loss import nt_xent

#: Variables a launcher sets for each process of a job; with all of them present, a process joins
#: that job instead of starting processes of its own.
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")


@dataclass(frozen=True)
class RankContext:
    """Where this process stands in the job.

    Attributes:
        rank: Global rank, 0 to ``world_size - 1``; rank 0 writes files and reports progress.
        world_size: Number of processes in the job (1 for an ordinary run).
        local_rank: Rank on this machine; the GPU index of a ``--gpus`` run.
        local_world_size: Processes on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes files and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world_size > 1


#: The context of an ordinary single-process run.
SINGLE_PROCESS = RankContext()


@dataclass(frozen=True)
class ProcessPlan:
    """How a pretraining run is spread over processes, decided before any process starts.

    Attributes:
        world_size: Processes in the whole job.
        processes: Processes to start on this machine (1: train in this process).
        launch: Whether this process starts the others (``--gpus``/``--cpu-processes``) rather
            than training or joining a job started by ``torchrun``.
        backend: ``nccl`` for GPUs, ``gloo`` for the CPU.
        device: The device kind every rank trains on.
    """

    world_size: int
    processes: int
    launch: bool
    backend: str
    device: DeviceName


def launched_by_torchrun() -> bool:
    """Whether this process is a rank of a job started by torchrun or another launcher."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def is_main_process() -> bool:
    """Whether this process is rank 0 (always true outside a multi-process job)."""
    return int(os.environ.get("RANK", "0")) == 0 if launched_by_torchrun() else True


def plan_processes(config: PretrainConfig) -> ProcessPlan:
    """Check the process settings of a run and decide how many processes it needs.

    Runs before any process starts, so that bad flags end with one line and exit code 2. In a
    rank of a GPU job it also makes the rank's GPU the current CUDA device.

    Args:
        config: The run's settings (``gpus``, ``cpu_processes``, ``device``, ``batch_size``).

    Returns:
        The plan.

    Raises:
        ConfigError: For ``--gpus`` without CUDA or with too few GPUs, ``--gpus`` together with
            ``--cpu-processes``, a device that contradicts them, or a global batch that does not
            split evenly over the processes, or a ``SIMCLR_COLLECTIVE_TIMEOUT`` that is not a
            positive number of seconds.
    """
    gpus, cpu_processes = config.gpus, config.cpu_processes
    if gpus is not None and cpu_processes is not None:
        raise ConfigError(
            "--gpus and --cpu-processes cannot be used together; use --gpus for GPUs or "
            "--cpu-processes for processes on the CPU",
            flag="--gpus",
        )
    inside = launched_by_torchrun()
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) if inside else 0
    if gpus is not None:
        if config.device is DeviceName.cpu:
            raise ConfigError(
                "--gpus cannot train on --device cpu; use --cpu-processes N instead", flag="--gpus"
            )
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--gpus {gpus} needs CUDA GPUs but none is visible; use --cpu-processes N to "
                "run N processes on the CPU",
                flag="--gpus",
            )
        visible = torch.cuda.device_count()
        count = (local_world_size or visible) if gpus == "all" else int(gpus)
        if not inside and count > visible:
            raise ConfigError(
                f"--gpus {count} asks for more GPUs than the {visible} visible; "
                f"use --gpus {visible} or --gpus all",
                flag="--gpus",
            )
        device, backend = DeviceName.cuda, "nccl"
    elif cpu_processes is not None:
        if config.device is DeviceName.cuda:
            raise ConfigError(
                "--cpu-processes trains on the CPU; use --gpus N for GPUs", flag="--cpu-processes"
            )
        count, device, backend = cpu_processes, DeviceName.cpu, "gloo"
    else:
        count, device = 1, config.device
        on_gpu = device is DeviceName.cuda or (
            device is DeviceName.auto and torch.cuda.is_available()
        )
        backend = "nccl" if on_gpu else "gloo"
    if inside:
        flag = "--gpus" if gpus is not None else "--cpu-processes"
        if (gpus is not None or cpu_processes is not None) and count != local_world_size:
            raise ConfigError(
                f"{flag} {count} does not match the {local_world_size} processes per machine "
                f"that the launcher started; leave {flag} out under torchrun"
            )
        world_size = int(os.environ["WORLD_SIZE"])
        if backend == "nccl":
            # This rank's GPU becomes the current device before anything touches CUDA, so that
            # no rank opens a context on GPU 0 by accident.
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        world_size = count
    if config.batch_size % world_size:
        lower = config.batch_size // world_size * world_size
        choices = f"{lower} or {lower + world_size}" if lower else str(world_size)
        raise ConfigError(
            f"--batch-size {config.batch_size} (the global batch) does not split evenly over "
            f"{world_size} processes; use a multiple of {world_size}, such as {choices}",
            flag="--batch-size",
        )
    if world_size > 1:
        _env.collective_timeout_seconds()  # A bad value ends the run before any process starts.
    return ProcessPlan(
        world_size=world_size,
        processes=count,
        launch=not inside and count > 1,
        backend=backend,
        device=device,
    )


def rank_context() -> RankContext:
    """This process's place in its job, read from the launcher's variables (changes nothing).

    Returns:
        The context; ``SINGLE_PROCESS`` outside a multi-process job.
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE_PROCESS
    return RankContext(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
    )


def threads_per_rank(context: RankContext, plan: ProcessPlan) -> int | None:
    """Intra-op threads of a CPU rank: the machine's cores shared among its ranks.

    N processes each using every core would fight over them. ``OMP_NUM_THREADS`` set by the
    user wins.

    Returns:
        The count, or None where the rank keeps torch's own choice (one process, GPU ranks,
        ``OMP_NUM_THREADS`` given).
    """
    on_gpu = plan.device is DeviceName.cuda or plan.backend == "nccl"
    if not context.distributed or on_gpu or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // context.local_world_size)


def join_job(plan: ProcessPlan) -> RankContext:
    """Join the process group of the job this process belongs to, if it belongs to one.

    Sets this rank's GPU as the current CUDA device (so ``torch.device("cuda")`` means it).
    The threads of CPU ranks are the run plan's (``threads_per_rank``).

    Args:
        plan: From ``plan_processes``.

    Returns:
        This process's context; ``SINGLE_PROCESS`` outside a multi-process job.
    """
    context = rank_context()
    if not context.distributed:
        return context
    if plan.device is DeviceName.cuda or plan.backend == "nccl":
        torch.cuda.set_device(context.local_rank)
    if not dist.is_initialized():
        # How long a collective waits for the other ranks before failing. A dead rank normally
        # stops the job within a second (the launcher sees it exit); this bounds the cases it
        # cannot see, such as a rank stuck on another machine. Rank 0 saving a model or a
        # checkpoint must fit in it.
        timeout = timedelta(seconds=_env.collective_timeout_seconds())
        dist.init_process_group(backend=plan.backend, timeout=timeout)
        atexit.register(_leave_job)
    return context


def _leave_job() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def per_rank_workers(workers: int, context: RankContext) -> int:
    """Split a machine's data-loading processes among its ranks (at least one each)."""
    if not context.distributed:
        return workers
    return max(1, workers // context.local_world_size)


# --------------------------------------------------------------------------------------------
# Collectives that carry gradients.


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


# --------------------------------------------------------------------------------------------
# Global batch norm and the model wrapper.


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are taken over the batches of all ranks.

    The reference implementation, written with differentiable all-reduces so that autograd
    derives the backward: the mean and the (biased) variance are two-pass sums over every rank's
    samples, and the running statistics are updated as ``nn.BatchNorm`` does (unbiased
    variance). In evaluation, or with one process, it is ordinary batch norm. Works for inputs
    (N, C) and (N, C, ...).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise (N, C, ...) with statistics over every rank's N in training."""
        self._check_input_dim(input)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        values = input.float()
        count = torch.tensor([input.numel() / input.shape[1]], device=input.device)
        sums = all_reduce_with_gradient(torch.cat([values.sum(dims), count]))
        total = sums[-1].detach()
        mean = sums[:-1] / total
        centered = values - mean.view(shape)
        variance = all_reduce_with_gradient((centered * centered).sum(dims)) / total
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        # With track_running_stats the three buffers exist; the checks name them for the types.
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
            and self.num_batches_tracked is not None
        ):
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = variance * total / (total - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return output.to(input.dtype)


class GlobalBatchNormAct(GlobalBatchNorm):
    """``GlobalBatchNorm`` followed by the dropout and activation of timm's ``BatchNormAct2d``."""

    # Copied from the converted ``BatchNormAct2d``.
    drop: nn.Module
    act: nn.Module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise over all ranks, then apply ``drop`` and ``act``."""
        return self.act(self.drop(super().forward(input)))


def _convert_to_global_batch_norm(module: nn.Module) -> nn.Module:
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, nn.SyncBatchNorm)
    ):
        with_activation = hasattr(module, "act") and hasattr(module, "drop")
        kind = GlobalBatchNormAct if with_activation else GlobalBatchNorm
        converted = kind(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if with_activation:
            converted.act = module.act
            converted.drop = module.drop
        # The same parameters and buffers, so that the optimiser and the saved file see them.
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        if not (converted is not module and name in ("act", "drop")):
            converted.add_module(name, _convert_to_global_batch_norm(child))
    return converted


def convert_sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch norm of ``model`` take its statistics over all ranks.

    Args:
        model: The model; its batch norm layers are replaced in place (parameters kept).
        device: Where it trains: CUDA uses PyTorch's fused ``SyncBatchNorm`` (via timm, which
            also handles ``BatchNormAct2d``), the CPU uses ``GlobalBatchNorm``.

    Returns:
        The model (a new object only if ``model`` itself is a batch norm).
    """
    if device.type == "cuda" and not _env.sync_batch_norm_reference():
        return convert_sync_batchnorm(model)
    return _convert_to_global_batch_norm(model)


def prepare_model(
    model: nn.Module, context: RankContext, *, device: torch.device, sync_batch_norm: bool
) -> nn.Module:
    """Wrap a model for training on several ranks; the model itself on one.

    Args:
        model: The model, already on ``device``. Its batch norm layers are converted in place
            when ``sync_batch_norm``; save it (not the wrapper) afterwards.
        context: This rank's place in the job.
        device: The rank's device.
        sync_batch_norm: Take batch norm statistics over the global batch.

    Returns:
        The module to call in the training step: ``DistributedDataParallel``, which starts from
        rank 0's weights and averages the gradients over ranks.
    """
    if not context.distributed:
        return model
    if sync_batch_norm:
        model = convert_sync_batch_norm(model, device)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[context.local_rank] if device.type == "cuda" else None
    )
