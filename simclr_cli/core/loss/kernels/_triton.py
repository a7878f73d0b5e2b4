"""NT-Xent forward and backward as Triton kernels (flash-attention style).

Imported only when the fused path runs, so the package works without Triton or a GPU.

The forward walks each block of rows across the columns in tiles, computing the tile of
similarities on the fly (summed over the dimension D in slices, so that any D fits) and keeping
a running maximum and sum of exponentials per row (the online log-sum-exp of Milakov &
Gimelshein 2018, as in FlashAttention, Dao et al. 2022). Nothing of size
(R, C) is ever stored: the forward writes the log-sum-exp and the positive logit of each row.
The backward recomputes each tile from the inputs and the saved log-sum-exp; one kernel sums the
gradient of a block of rows over the columns, a second the gradient of a block of columns over
the rows, so neither needs atomics and both are deterministic. Each splits D into blocks across
its programs, so that a program's gradient stays a fixed size in registers whatever D is.

Exponentials are taken in base 2 (``exp2`` is one instruction on a GPU): logits are scaled by
log2(e) / t, and the log-sum-exp is converted back to natural units at the end.

Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors with NumPy; the interpreter
multiplies bfloat16 tiles wrongly, so there the tiles are converted to float32 before ``tl.dot``
(exact: a product of two bfloat16 numbers fits in float32, and the GPU accumulates in float32).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from ._triton_env import interpreting

LOG2_E = 1.0 / math.log(2.0)

#: Rows and columns per tile of similarities.
BLOCK_ROWS = 64
BLOCK_COLUMNS = 64
#: Dimensions per slice of the sum r . c: a tile of similarities is summed over D in slices of
#: this many, so no tile in shared memory grows with D.
BLOCK_SUM_DIMS = 64
#: Dimensions of the gradient that one backward program accumulates (in registers); D is split
#: across programs in blocks of this many, each recomputing its tiles of similarities over the
#: whole D. Up to D = 128 that is one block and no recomputation; above, the backward does
#: D / 128 times the work of the similarities.
BLOCK_GRADIENT_DIMS = 128
#: With these tiles, compiled offline (Triton 3.8) for sm_75, sm_80, sm_86, sm_89 and sm_90 at
#: any D, the kernels ask for at most 64 KiB of shared memory in float32 (48 KiB on sm_75, 96 KiB
#: with TF32 on sm_90, which has 228 KiB) and 32 KiB in bfloat16 or float16: within the 64 KiB
#: of a T4 and the more of later GPUs. Tiles of the whole D asked for 80 KiB in float32 at
#: D = 128 on sm_75 and 256 KiB at D = 512.


@triton.jit
def _load_tile(pointer, offsets, count, stride, dims, dim, UPCAST: tl.constexpr):
    tile = tl.load(
        pointer + offsets[:, None] * stride + dims[None, :],
        mask=(offsets[:, None] < count) & (dims[None, :] < dim),
        other=0.0,
    )
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _similarity_tile(
    rows_pointer,
    row_offsets,
    num_rows,
    columns_pointer,
    column_offsets,
    num_columns,
    dim,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """r . c of a (BLOCK_M, BLOCK_N) tile, summed over the dimension in slices of BLOCK_K."""
    similarity = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for dim_start in range(0, dim, BLOCK_K):
        dims = dim_start + tl.arange(0, BLOCK_K)
        rows = _load_tile(rows_pointer, row_offsets, num_rows, dim, dims, dim, UPCAST)
        columns = _load_tile(columns_pointer, column_offsets, num_columns, dim, dims, dim, UPCAST)
        similarity = tl.dot(rows, tl.trans(columns), similarity, input_precision=INPUT_PRECISION)
    return similarity


@triton.jit
def _forward_kernel(
    rows_pointer,
    columns_pointer,
    positive_pointer,
    self_pointer,
    log_sum_exp_pointer,
    positive_logit_pointer,
    num_rows,
    num_columns,
    dim,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    row_offsets = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = row_offsets < num_rows
    positive = tl.load(positive_pointer + row_offsets, mask=row_valid, other=-1)
    own = tl.load(self_pointer + row_offsets, mask=row_valid, other=-1)
    # A finite start keeps exp2(maximum - new_maximum) at 0, never NaN, before any column.
    maximum = tl.full((BLOCK_M,), -1.0e30, tl.float32)
    total = tl.zeros((BLOCK_M,), tl.float32)
    positive_logit = tl.zeros((BLOCK_M,), tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        column_offsets = start + tl.arange(0, BLOCK_N)
        # Logits of the tile in base-2 units: log2(e) * r . c / t.
        logits = (
            _similarity_tile(
                rows_pointer,
                row_offsets,
                num_rows,
                columns_pointer,
                column_offsets,
                num_columns,
                dim,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
                UPCAST,
                INPUT_PRECISION,
            )
            * scale
        )
        is_positive = column_offsets[None, :] == positive[:, None]
        positive_logit += tl.sum(tl.where(is_positive, logits, 0.0), axis=1)
        keep = (column_offsets[None, :] < num_columns) & (column_offsets[None, :] != own[:, None])
        logits = tl.where(keep, logits, float("-inf"))
        new_maximum = tl.maximum(maximum, tl.max(logits, axis=1))
        total = total * tl.exp2(maximum - new_maximum) + tl.sum(
            tl.exp2(logits - new_maximum[:, None]), axis=1
        )
        maximum = new_maximum
    tl.store(log_sum_exp_pointer + row_offsets, maximum + tl.log2(total), mask=row_valid)
    tl.store(positive_logit_pointer + row_offsets, positive_logit, mask=row_valid)


@triton.jit
def _gradient_tile(
    rows_pointer,
    row_offsets,
    num_rows,
    columns_pointer,
    column_offsets,
    num_columns,
    dim,
    positive,
    own,
    log_sum_exp,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """R * dL/ds of a tile: softmax recomputed from the saved log-sum-exp, minus the positives."""
    logits = (
        _similarity_tile(
            rows_pointer,
            row_offsets,
            num_rows,
            columns_pointer,
            column_offsets,
            num_columns,
            dim,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            UPCAST,
            INPUT_PRECISION,
        )
        * scale
    )
    keep = (
        (row_offsets[:, None] < num_rows)
        & (column_offsets[None, :] < num_columns)
        & (column_offsets[None, :] != own[:, None])
    )
    probabilities = tl.where(keep, tl.exp2(logits - log_sum_exp[:, None]), 0.0)
    is_positive = (column_offsets[None, :] == positive[:, None]) & (row_offsets[:, None] < num_rows)
    return probabilities - tl.where(is_positive, 1.0, 0.0)


@triton.jit
def _backward_rows_kernel(
    rows_pointer,
    columns_pointer,
    positive_pointer,
    self_pointer,
    log_sum_exp_pointer,
    grad_output_pointer,
    grad_rows_pointer,
    num_rows,
    num_columns,
    dim,
    scale,
    gradient_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    # Program (i, j) writes dL/dr of row block i in dimensions j * BLOCK_D onwards.
    row_offsets = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_valid = row_offsets < num_rows
    positive = tl.load(positive_pointer + row_offsets, mask=row_valid, other=-1)
    own = tl.load(self_pointer + row_offsets, mask=row_valid, other=-1)
    log_sum_exp = tl.load(log_sum_exp_pointer + row_offsets, mask=row_valid, other=0.0)
    grad_rows = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(0, num_columns, BLOCK_N):
        column_offsets = start + tl.arange(0, BLOCK_N)
        grad_logits = _gradient_tile(
            rows_pointer,
            row_offsets,
            num_rows,
            columns_pointer,
            column_offsets,
            num_columns,
            dim,
            positive,
            own,
            log_sum_exp,
            scale,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            UPCAST,
            INPUT_PRECISION,
        )
        columns = _load_tile(columns_pointer, column_offsets, num_columns, dim, dims, dim, UPCAST)
        grad_rows += tl.dot(grad_logits.to(columns.dtype), columns, input_precision=INPUT_PRECISION)
    grad_rows *= tl.load(grad_output_pointer) * gradient_scale
    tl.store(
        grad_rows_pointer + row_offsets[:, None] * dim + dims[None, :],
        grad_rows,
        mask=row_valid[:, None] & (dims[None, :] < dim),
    )


@triton.jit
def _backward_columns_kernel(
    rows_pointer,
    columns_pointer,
    positive_pointer,
    self_pointer,
    log_sum_exp_pointer,
    grad_output_pointer,
    grad_columns_pointer,
    num_rows,
    num_columns,
    dim,
    scale,
    gradient_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    # Program (i, j) writes dL/dc of column block i in dimensions j * BLOCK_D onwards.
    column_offsets = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    grad_columns = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for start in range(0, num_rows, BLOCK_M):
        row_offsets = start + tl.arange(0, BLOCK_M)
        row_valid = row_offsets < num_rows
        positive = tl.load(positive_pointer + row_offsets, mask=row_valid, other=-1)
        own = tl.load(self_pointer + row_offsets, mask=row_valid, other=-1)
        log_sum_exp = tl.load(log_sum_exp_pointer + row_offsets, mask=row_valid, other=0.0)
        grad_logits = _gradient_tile(
            rows_pointer,
            row_offsets,
            num_rows,
            columns_pointer,
            column_offsets,
            num_columns,
            dim,
            positive,
            own,
            log_sum_exp,
            scale,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
            UPCAST,
            INPUT_PRECISION,
        )
        rows = _load_tile(rows_pointer, row_offsets, num_rows, dim, dims, dim, UPCAST)
        grad_columns += tl.dot(
            tl.trans(grad_logits).to(rows.dtype), rows, input_precision=INPUT_PRECISION
        )
    grad_columns *= tl.load(grad_output_pointer) * gradient_scale
    tl.store(
        grad_columns_pointer + column_offsets[:, None] * dim + dims[None, :],
        grad_columns,
        mask=(column_offsets[:, None] < num_columns) & (dims[None, :] < dim),
    )


def _input_precision(dtype: torch.dtype) -> str:
    # float32 follows torch's own switch for matrix products, so the fused loss is as exact as
    # the dense one in the same program: IEEE by default, TF32 when the user allowed it.
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _launch_settings(dim: int) -> dict[str, object]:
    """Tile sizes for a dimension D; none grows past its cap, so any D fits in shared memory."""
    # tl.dot needs every side of a tile to be a power of two of at least 16.
    padded = max(16, triton.next_power_of_2(dim))
    return {
        "BLOCK_M": BLOCK_ROWS,
        "BLOCK_N": BLOCK_COLUMNS,
        "BLOCK_K": min(padded, BLOCK_SUM_DIMS),
        "UPCAST": interpreting(),
    }


def _gradient_block_dims(dim: int) -> int:
    """Dimensions of the gradient per backward program; D / this many programs share a block."""
    return min(max(16, triton.next_power_of_2(dim)), BLOCK_GRADIENT_DIMS)


class FusedNTXent(torch.autograd.Function):
    """NT-Xent mean over rows in Triton; saves the inputs and a (R,) log-sum-exp (base 2)."""

    @staticmethod
    def forward(
        ctx: Any,
        rows: torch.Tensor,
        columns: torch.Tensor,
        positive_index: torch.Tensor,
        self_index: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        rows, columns = rows.contiguous(), columns.contiguous()
        positive_index, self_index = positive_index.contiguous(), self_index.contiguous()
        num_rows, dim = rows.shape
        num_columns = columns.shape[0]
        log_sum_exp = torch.empty(num_rows, device=rows.device, dtype=torch.float32)
        positive_logit = torch.empty_like(log_sum_exp)
        _forward_kernel[(triton.cdiv(num_rows, BLOCK_ROWS),)](
            rows,
            columns,
            positive_index,
            self_index,
            log_sum_exp,
            positive_logit,
            num_rows,
            num_columns,
            dim,
            LOG2_E / temperature,
            INPUT_PRECISION=_input_precision(rows.dtype),
            **_launch_settings(dim),
        )
        ctx.save_for_backward(rows, columns, positive_index, self_index, log_sum_exp)
        ctx.temperature = temperature
        return (log_sum_exp - positive_logit).mean() / LOG2_E

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        rows, columns, positive_index, self_index, log_sum_exp = ctx.saved_tensors
        temperature = ctx.temperature
        num_rows, dim = rows.shape
        num_columns = columns.shape[0]
        block_dims = _gradient_block_dims(dim)
        grad_output = grad_output.to(torch.float32).contiguous()
        arguments = (rows, columns, positive_index, self_index, log_sum_exp, grad_output)
        # dL/ds carries 1 / R from the mean; dL/dr and dL/dc carry 1 / t from s = r.c / t.
        scales = (LOG2_E / temperature, 1.0 / (num_rows * temperature))
        settings = {
            **_launch_settings(dim),
            "BLOCK_D": block_dims,
            "INPUT_PRECISION": _input_precision(rows.dtype),
        }
        # Gradients are accumulated and written in float32, then cast to the inputs' dtype.
        grad_rows = torch.empty(num_rows, dim, device=rows.device, dtype=torch.float32)
        grad_columns = torch.empty(num_columns, dim, device=rows.device, dtype=torch.float32)
        dim_blocks = triton.cdiv(dim, block_dims)
        _backward_rows_kernel[(triton.cdiv(num_rows, BLOCK_ROWS), dim_blocks)](
            *arguments, grad_rows, num_rows, num_columns, dim, *scales, **settings
        )
        _backward_columns_kernel[(triton.cdiv(num_columns, BLOCK_COLUMNS), dim_blocks)](
            *arguments, grad_columns, num_rows, num_columns, dim, *scales, **settings
        )
        return grad_rows.to(rows.dtype), grad_columns.to(columns.dtype), None, None, None
