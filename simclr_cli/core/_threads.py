"""Intra-op threads on a shared CPU: use the cores that are idle, not all of them.

PyTorch's OpenMP threads wait for each other at the end of every operation. When other processes
hold the cores, a thread that is descheduled stalls all the others: measured on a 2-core machine
at load average 10, a resnet18 step at 32 px (128 views) took 4-11 s with 2 threads and 0.6 s
with 1, and the linear probe's L-BFGS fit took 42 s against 0.9 s (benchmarks/RESULTS.md). So
the long-running commands start with as many threads as there are idle cores, at least one.
``OMP_NUM_THREADS`` or ``SIMCLR_THREADS`` set by the user always win.
"""

from __future__ import annotations

import os

import torch


def idle_cores() -> int:
    """Cores not busy with other work, from the 1-minute load average (all cores if unknown)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - load)))


def use_idle_cores(device: torch.device) -> int:
    """Set torch's intra-op threads for a CPU run to the idle cores; return the count used."""
    if device.type != "cpu":
        return torch.get_num_threads()
    if os.environ.get("SIMCLR_THREADS"):
        threads = max(1, int(os.environ["SIMCLR_THREADS"]))
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        threads = min(torch.get_num_threads(), idle_cores())
    torch.set_num_threads(threads)
    return threads
