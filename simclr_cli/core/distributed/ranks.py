"""Several processes, one global batch: the rank context, the process plan, joining the job.

A SimCLR step over W processes (ranks) with a global batch of B images gives each rank B / W
images. Three things make the result equal to one process training on all B images:

* The loss sees every rank's projections. Each rank gathers all 2B projections with a collective
  that carries gradients back to the rank that owns them, and computes the loss of its own 2B / W
  rows against all 2B columns (``nt_xent_across_ranks`` in collectives.py). No rank repeats
  another's rows.
* Gradients are averaged by ``DistributedDataParallel``. The gather's backward *sums* over ranks,
  because every rank's loss depends on every rank's projections; the local loss is the mean over
  the rank's own rows. Averaging the W per-rank gradients then gives the gradient of the mean over
  all 2B rows, which is the single-process loss.
* Batch norm statistics are taken over the global batch (the paper's global BN): on CUDA with
  PyTorch's ``SyncBatchNorm`` (through timm, which also converts ``BatchNormAct2d``), on the CPU
  with ``GlobalBatchNorm`` (batch_norm.py), the readable reference that PyTorch lacks for CPU
  tensors. ``SIMCLR_SYNC_BN=reference`` uses the reference on CUDA too.

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

from .. import _env
from ..choices import DeviceName
from ..config import PretrainConfig
from ..errors import ConfigError

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
    if config.batch_size is not None and config.batch_size % world_size:
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
