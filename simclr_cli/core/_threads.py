"""Intra-op threads on a shared CPU: use the cores that are idle, not all of them.

PyTorch's OpenMP threads wait for each other at the end of every operation. When other processes
hold the cores, a thread that is descheduled stalls all the others: measured on a 2-core machine
at load average 10, a resnet18 step at 32 px (128 views) took 4-11 s with 2 threads and 0.6 s
with 1, and the linear probe's L-BFGS fit took 42 s against 0.9 s (benchmarks/RESULTS.md). So
``SIMCLR_THREADS=auto`` makes the long-running commands start with as many threads as there are
idle cores, at least one; ``SIMCLR_THREADS=N`` sets the count. It is opt-in: the load average
trails by a minute, so on a dedicated machine a run started right after another would otherwise
see the previous run's load and take half the cores.
"""

from __future__ import annotations

import os

import torch

from . import _env


def idle_cores() -> int:
    """Cores not busy with other work, from the 1-minute load average (all cores if unknown)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - load)))


def planned_threads(device: torch.device) -> int:
    """The intra-op threads a run on ``device`` uses under ``SIMCLR_THREADS``; changes nothing.

    On the CPU, ``SIMCLR_THREADS=auto`` gives the idle cores (at most torch's current count) and
    ``SIMCLR_THREADS=N`` gives N; otherwise, and on a GPU, torch's current count stays.

    Raises:
        ConfigError: When ``SIMCLR_THREADS`` is neither ``auto`` nor a whole number.
    """
    if device.type != "cpu":
        return torch.get_num_threads()
    setting = _env.threads()
    if setting is None:
        return torch.get_num_threads()
    if setting == "auto":
        return min(torch.get_num_threads(), idle_cores())
    return max(1, setting)


def use_idle_cores(device: torch.device) -> int:
    """Set torch's intra-op threads for a CPU run as ``SIMCLR_THREADS`` asks; return the count."""
    threads = planned_threads(device)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def default_workers() -> int:
    """Data-loading processes: half the cores (the other half trains), at most 8, at least 1."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))
