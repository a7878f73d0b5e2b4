"""Fast implementations of NT-Xent behind ``simclr_cli.core.loss.nt_xent``.

Both compute exactly what the dense reference ``nt_xent_rows`` specifies, over rows and columns
that are already normalised, without ever holding the (R, C) matrix of similarities:

- ``chunked_nt_xent``: row blocks in plain PyTorch, for the CPU (and any device);
- ``fused_nt_xent``: Triton kernels with an online log-sum-exp, for CUDA GPUs (and the Triton
  CPU interpreter under ``TRITON_INTERPRET=1``, which the tests use).

Triton is imported only when ``fused_nt_xent`` first runs, so this package imports on machines
without Triton or a GPU.
"""

from __future__ import annotations

import importlib.util

import torch

from ._chunked import chunked_nt_xent
from ._triton_env import interpreting

__all__ = ["chunked_nt_xent", "fused_nt_xent", "fused_supported", "triton_available"]

#: Input dtypes the Triton kernels take; they accumulate in float32 whatever the input.
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available() -> bool:
    """Whether Triton is installed (it comes with PyTorch's CUDA wheels on Linux)."""
    return importlib.util.find_spec("triton") is not None


def fused_supported(tensor: torch.Tensor) -> bool:
    """Whether ``fused_nt_xent`` can run on this tensor here: its device, its dtype, Triton."""
    if tensor.dtype not in FUSED_DTYPES or not triton_available():
        return False
    if tensor.device.type == "cuda":
        return True
    return tensor.device.type == "cpu" and interpreting()


def fused_nt_xent(
    rows: torch.Tensor,
    columns: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """NT-Xent of normalised rows against normalised columns, in Triton kernels.

    Args:
        rows: Normalised rows, shape (R, D), float32, bfloat16 or float16, on a CUDA device (or
            the CPU under ``TRITON_INTERPRET=1``).
        columns: Normalised columns, shape (C, D), same dtype and device; it contains the rows.
        positive_index: Column of each row's positive, shape (R,), int64.
        self_index: Column of each row itself, excluded from its softmax, shape (R,), int64.
        temperature: Softmax temperature.

    Returns:
        The mean loss over the rows, a float32 scalar.
    """
    from ._triton import FusedNTXent

    return FusedNTXent.apply(rows, columns, positive_index, self_index, temperature)
