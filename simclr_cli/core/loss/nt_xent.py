"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
equation (1) and Algorithm 1. For a batch of N images there are 2N views; each view's positive
is the other view of its image and the remaining 2N - 2 views are its negatives:

    l(i, j) = -log( exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t) )

and the loss is the mean of l over all 2N views. ``sim`` is the cosine similarity.

The general form ``nt_xent_rows`` takes rows (the views whose loss is computed) and columns (all
the views they are compared with), which is what a rank of a distributed job holds: its own rows
against every rank's columns.

``nt_xent_rows_reference`` is the readable specification: it builds the whole (R, C) matrix of
similarities. ``nt_xent_rows`` (and ``nt_xent_loss``) compute the same loss without that matrix,
by one of the implementations in ``simclr_cli.core.loss.kernels``, chosen by the environment
variable ``SIMCLR_NT_XENT``:

- ``auto`` (default): ``fused`` for float32/bfloat16/float16 tensors on a CUDA GPU with Triton,
  ``chunked`` otherwise;
- ``fused``: the Triton kernels (CUDA, or the CPU under ``TRITON_INTERPRET=1``);
- ``chunked``: row blocks in PyTorch, memory O(C x block) instead of O(R x C);
- ``reference``: the dense specification below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _env
from ..errors import ConfigError
from . import kernels


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent loss of two batches of projections whose rows are positive pairs.

    Args:
        z_a: Projections of the first views, shape (N, D). Need not be normalised.
        z_b: Projections of the second views, shape (N, D); row i is the positive of z_a[i].
        temperature: The temperature t of the softmax.

    Returns:
        The scalar mean loss over the 2N views, in float32.

    Example:
        >>> z_a, z_b = torch.randn(8, 128), torch.randn(8, 128)
        >>> loss = nt_xent_loss(z_a, z_b, temperature=0.5)
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"z_a and z_b must both be (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    n = z_a.shape[0]
    columns = torch.cat([z_a, z_b], dim=0)
    index = torch.arange(2 * n, device=z_a.device)
    positive_index = (index + n) % (2 * n)
    return nt_xent_rows(columns, columns, positive_index, index, temperature=temperature)


def nt_xent_rows(
    rows: torch.Tensor,
    columns: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor,
    *,
    temperature: float = 0.5,
) -> torch.Tensor:
    """NT-Xent over a set of rows compared with a set of columns.

    Computes what ``nt_xent_rows_reference`` specifies with the implementation that
    ``SIMCLR_NT_XENT`` selects (see the module docstring). Gradients flow into both ``rows``
    and ``columns`` (and through their normalisation), so in a distributed job the gathered
    columns pass gradients back to their ranks.

    Args:
        rows: Projections whose loss is computed, shape (R, D). Need not be normalised.
        columns: Every projection the rows are compared with, shape (C, D); it contains the rows
            themselves (at ``self_index``) and their positives (at ``positive_index``).
        positive_index: For each row, the column of its positive, shape (R,), int64.
        self_index: For each row, the column that is the row itself (excluded), shape (R,).
        temperature: The temperature t of the softmax.

    Returns:
        The scalar mean loss over the R rows, in float32 (float64 for float64 inputs).

    Raises:
        ConfigError: When ``SIMCLR_NT_XENT`` names no implementation, or ``fused`` cannot run.
    """
    implementation = resolve_implementation(rows)
    if implementation == "reference":
        return nt_xent_rows_reference(
            rows, columns, positive_index, self_index, temperature=temperature
        )
    # The kernels take unit rows and columns; normalising here lets autograd carry the gradient
    # through the normalisation. Half precision is normalised in float32 first.
    dtype = torch.promote_types(rows.dtype, torch.float32)
    normalised_rows = F.normalize(rows.to(dtype), dim=1)
    normalised_columns = (
        normalised_rows if columns is rows else F.normalize(columns.to(dtype), dim=1)
    )
    if implementation == "chunked":
        return kernels.chunked_nt_xent(
            normalised_rows, normalised_columns, positive_index, self_index, temperature
        )
    # The Triton kernels read half-precision tiles as given and accumulate in float32.
    if rows.dtype != dtype:
        normalised_rows = normalised_rows.to(rows.dtype)
        normalised_columns = (
            normalised_rows if columns is rows else normalised_columns.to(rows.dtype)
        )
    return kernels.fused_nt_xent(
        normalised_rows, normalised_columns, positive_index, self_index, temperature
    )


def resolve_implementation(tensor: torch.Tensor) -> str:
    """The implementation ``SIMCLR_NT_XENT`` selects for a tensor: fused, chunked or reference.

    Raises:
        ConfigError: For an unknown value, or ``fused`` where the Triton kernels cannot run.
    """
    choice = _env.nt_xent_implementation()
    if choice == "auto":
        return "fused" if tensor.is_cuda and kernels.fused_supported(tensor) else "chunked"
    if choice == "fused" and not kernels.fused_supported(tensor):
        raise ConfigError(
            f"{_env.NT_XENT.name}=fused needs Triton and a float32, bfloat16 or float16 "
            f"tensor on a CUDA GPU (or TRITON_INTERPRET=1 on the CPU), got {tensor.dtype} on "
            f"{tensor.device.type}; unset {_env.NT_XENT.name} to choose automatically"
        )
    return choice


def nt_xent_rows_reference(
    rows: torch.Tensor,
    columns: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor,
    *,
    temperature: float = 0.5,
) -> torch.Tensor:
    """NT-Xent over a set of rows compared with a set of columns (the dense reference).

    This is the readable specification of the loss; it builds the full (R, C) similarity matrix.

    Args:
        rows: Projections whose loss is computed, shape (R, D). Need not be normalised.
        columns: Every projection the rows are compared with, shape (C, D); it contains the rows
            themselves (at ``self_index``) and their positives (at ``positive_index``).
        positive_index: For each row, the column of its positive, shape (R,), int64.
        self_index: For each row, the column that is the row itself (excluded), shape (R,).
        temperature: The temperature t of the softmax.

    Returns:
        The scalar mean loss over the R rows, in float32 (float64 for float64 inputs).
    """
    # Half-precision inputs are promoted: the softmax over thousands of logits needs float32.
    dtype = torch.promote_types(rows.dtype, torch.float32)
    rows = F.normalize(rows.to(dtype), dim=1)
    columns = F.normalize(columns.to(dtype), dim=1)
    logits = rows @ columns.T / temperature
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(rows.shape[0], device=rows.device), self_index] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, positive_index)
