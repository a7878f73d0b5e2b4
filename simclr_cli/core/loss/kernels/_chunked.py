"""NT-Xent in row blocks on any device: the CPU fast path.

The dense reference builds the whole (R, C) similarity matrix, and autograd keeps it (and the
softmax of it) for the backward: at R = C = 8192 that is 256 MiB per copy. Here the rows are
processed a block at a time. The forward keeps only the log-sum-exp of each row; the backward
recomputes each block of logits from the saved (normalised) inputs and that log-sum-exp, turns
it into the gradient of the logits in place and multiplies it into the gradients of the rows and
of the columns. Extra memory is one (block, C) buffer, independent of R.

With p = softmax over the row of logits s (self masked) and q the one-hot of the positive:

    loss  = mean_i ( lse_i - s_{i, pos(i)} ),      s_ij = r_i . c_j / t
    dL/ds = (p - q) / R
    dL/dr = dL/ds @ C / t,   dL/dc = dL/ds^T @ R / t
"""

from __future__ import annotations

from typing import Any

import torch

#: Bytes of the (block, C) logits buffer: 16 MiB, 512 rows at C = 8192. Larger blocks mean fewer,
#: larger matrix products and element-wise passes; on the shared 2-core machine of
#: benchmarks/RESULTS.md 8-32 MiB were fastest (smaller blocks lost more to thread
#: synchronisation than they gained in cache), and memory stays O(C x block).
BLOCK_BYTES = 16 * 2**20

#: Below this temperature exp((s - 1) / t) can underflow float32 for every column of a row, so
#: the forward subtracts each row's maximum instead of the bound 1 / t of the logits.
MIN_TEMPERATURE_FOR_FIXED_SHIFT = 0.025


def _block_rows(num_columns: int, element_size: int) -> int:
    return max(1, BLOCK_BYTES // (element_size * max(1, num_columns)))


def _with_ones(columns: torch.Tensor) -> torch.Tensor:
    """Columns with a trailing 1, (C, D + 1), so that one product also subtracts a per-row shift."""
    return torch.cat([columns, columns.new_ones(columns.shape[0], 1)], dim=1)


def _shifted_logits(
    rows: torch.Tensor,
    shift: torch.Tensor,
    columns_with_ones: torch.Tensor,
    self_index: torch.Tensor,
    temperature: float,
    buffer: torch.Tensor,
) -> torch.Tensor:
    """Logits of a block of rows minus a per-row shift, self-similarity at -inf.

    The shift rides in the matrix product as an extra coordinate (-shift against a column of
    ones) instead of costing a pass over the (B, C) block.

    Args:
        rows: A block of normalised rows, (B, D).
        shift: What to subtract from each row's logits, (B,).
        columns_with_ones: All normalised columns with a trailing 1, (C, D + 1).
        self_index: The column of each row's own view, (B,).
        temperature: Softmax temperature.
        buffer: At least (B, C) elements to write into.

    Returns:
        ``rows @ columns.T / temperature - shift[:, None]`` with -inf at the row's own column,
        a (B, C) view of ``buffer``.
    """
    rows_with_shift = torch.cat([rows / temperature, -shift[:, None]], dim=1)
    logits = torch.mm(rows_with_shift, columns_with_ones.T, out=buffer[: rows.shape[0]])
    logits[torch.arange(rows.shape[0], device=rows.device), self_index] = float("-inf")
    return logits


class ChunkedNTXent(torch.autograd.Function):
    """NT-Xent mean over rows, computed in row blocks; saves the inputs and a (R,) log-sum-exp."""

    @staticmethod
    def forward(
        ctx: Any,
        rows: torch.Tensor,
        columns: torch.Tensor,
        positive_index: torch.Tensor,
        self_index: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        num_rows, num_columns = rows.shape[0], columns.shape[0]
        block = min(_block_rows(num_columns, rows.element_size()), num_rows)
        buffer = rows.new_empty(block, num_columns)
        columns_with_ones = _with_ones(columns)
        log_sum_exp = rows.new_empty(num_rows)
        fixed_shift = temperature >= MIN_TEMPERATURE_FOR_FIXED_SHIFT
        for start in range(0, num_rows, block):
            stop = min(start + block, num_rows)
            # Normalised rows and columns bound the logits by 1 / t: subtracting that bound keeps
            # exp() from overflowing without a pass to find each row's maximum.
            shift = rows.new_full((stop - start,), 1.0 / temperature)
            logits = _shifted_logits(
                rows[start:stop],
                shift if fixed_shift else shift.zero_(),
                columns_with_ones,
                self_index[start:stop],
                temperature,
                buffer,
            )
            if not fixed_shift:
                shift = logits.amax(dim=1)
                logits.sub_(shift[:, None])
            torch.log(logits.exp_().sum(dim=1), out=log_sum_exp[start:stop])
            log_sum_exp[start:stop] += shift
        positive_logits = (rows * columns[positive_index]).sum(dim=1) / temperature
        ctx.save_for_backward(rows, columns, positive_index, self_index, log_sum_exp)
        ctx.temperature = temperature
        return (log_sum_exp - positive_logits).mean()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        rows, columns, positive_index, self_index, log_sum_exp = ctx.saved_tensors
        temperature = ctx.temperature
        num_rows, num_columns = rows.shape[0], columns.shape[0]
        block = min(_block_rows(num_columns, rows.element_size()), num_rows)
        buffer = rows.new_empty(block, num_columns)
        columns_with_ones = _with_ones(columns)
        grad_rows = torch.empty_like(rows)
        grad_columns = torch.zeros_like(columns)
        for start in range(0, num_rows, block):
            stop = min(start + block, num_rows)
            block_rows = rows[start:stop]
            # Recompute the block's softmax from the saved log-sum-exp, then subtract the one-hot
            # of the positives in place: the block becomes R * dL/ds.
            probabilities = _shifted_logits(
                block_rows,
                log_sum_exp[start:stop],
                columns_with_ones,
                self_index[start:stop],
                temperature,
                buffer,
            ).exp_()
            arange = torch.arange(stop - start, device=rows.device)
            probabilities[arange, positive_index[start:stop]] -= 1.0
            torch.mm(probabilities, columns, out=grad_rows[start:stop])
            grad_columns.addmm_(probabilities.T, block_rows)
        # dL/ds carries 1 / R from the mean; dL/dr and dL/dc carry 1 / t from s = r.c / t.
        scale = grad_output / (num_rows * temperature)
        return grad_rows.mul_(scale), grad_columns.mul_(scale), None, None, None


def chunked_nt_xent(
    rows: torch.Tensor,
    columns: torch.Tensor,
    positive_index: torch.Tensor,
    self_index: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """NT-Xent of normalised rows against normalised columns, in row blocks.

    Args:
        rows: Normalised rows, shape (R, D), float32 or float64.
        columns: Normalised columns, shape (C, D), same dtype; it contains the rows.
        positive_index: Column of each row's positive, shape (R,), int64.
        self_index: Column of each row itself, excluded from its softmax, shape (R,), int64.
        temperature: Softmax temperature.

    Returns:
        The mean loss over the rows, a scalar of the inputs' dtype.
    """
    return ChunkedNTXent.apply(rows, columns, positive_index, self_index, temperature)
