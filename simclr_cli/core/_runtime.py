"""Device, precision and seeding machinery shared by the core functions."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import _env
from .choices import DeviceName, Precision
from .errors import ConfigError


def resolve_device(name: DeviceName | str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda`` into a device; ``auto`` takes CUDA when present.

    Raises:
        ConfigError: When CUDA is asked for but not available.
    """
    name = DeviceName(name)
    if name is DeviceName.cuda and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was given but no CUDA GPU is visible; use --device cpu", flag="--device"
        )
    if name is DeviceName.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name.value)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: Precision | str, device: torch.device) -> Precision:
    """Choose the precision ``auto`` means on this device.

    bf16 autocast where the hardware runs it natively (measured here: a resnet18 training step
    at 32 px ran 1.4x faster than fp32 on an AVX512-BF16 CPU), fp16 on a GPU without bf16 (with
    loss scaling, see ``_amp``), fp32 elsewhere. An explicit fp16 is allowed on the CPU too:
    PyTorch autocasts it there and scales its loss, slowly but correctly.
    """
    precision = Precision(precision)
    if precision is Precision.auto:
        if device.type == "cuda":
            return Precision.bf16 if torch.cuda.is_bf16_supported() else Precision.fp16
        return Precision.bf16 if cpu_has_native_bf16() else Precision.fp32
    return precision


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision is Precision.fp32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is Precision.bf16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(precision: Precision, device: torch.device) -> bool:
    """Whether training runs with channels-last (NHWC) activations and weights.

    On a GPU with mixed precision, channels-last is what the tensor-core convolutions want. On the
    CPU it pays with bf16 autocast: a resnet18 training step at 32 px (512 views, one thread)
    took 0.95 s against 1.16 s in NCHW, while fp32 was level (benchmarks/RESULTS.md). The
    environment variable ``SIMCLR_CHANNELS_LAST=0`` or ``=1`` overrides the choice.
    """
    setting = _env.channels_last()
    if setting is not None:
        return setting
    if device.type == "cuda":
        return precision is not Precision.fp32
    return device.type == "cpu" and precision is Precision.bf16


def process_age_seconds() -> float | None:
    """Seconds since this process started, from ``/proc`` (None where that cannot be read).

    ``--time-budget`` bounds the whole command, Python's start-up and the imports included, so its
    clock starts when the process did rather than when ``pretrain`` is called (measured here:
    about 3 s of start-up before the first line of the command runs).
    """
    try:
        with open("/proc/self/stat") as stat_file:
            # The command name (field 2) may hold spaces; the fields after it are plain.
            fields = stat_file.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as uptime_file:
            uptime = float(uptime_file.read().split()[0])
        started_ticks = int(fields[19])  # Field 22, starttime, in clock ticks after boot.
        ticks_per_second = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started_ticks / ticks_per_second)


def process_started_at() -> float:
    """When this process started, as ``time.time()`` (now, where ``/proc`` cannot tell)."""
    return time.time() - (process_age_seconds() or 0.0)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give NumPy and ``random`` the worker's torch seed.

    Workers also ignore SIGINT and SIGTERM: a Ctrl-C or a scheduler's SIGTERM reaches the whole
    process group, and the main process, which checkpoints before it stops, ends the workers.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
