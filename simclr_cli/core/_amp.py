"""Loss scaling for fp16 training: one backward-and-update step shared by every training loop.

fp16 has 5 exponent bits: gradients below about 6e-8 flush to zero, silently. A
``torch.amp.GradScaler`` multiplies the loss by a large factor (65536 to start) before
``backward``, so that the gradients stay representable, and divides them back before the update;
when the scaled gradients overflow, the scaler skips that update and halves the factor. bf16 and
fp32 have float32's range and need no scaler: for them it is disabled and every call below is
what the plain ``loss.backward(); optimizer.step()`` does, so their training is unchanged.

The order matters: the gradients are unscaled before anything reads them (the finiteness check,
gradient clipping, LARS' trust ratio inside ``optimizer.step``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch

from .choices import Precision


class StepOutcome(enum.Enum):
    """What became of one training step's update.

    Attributes:
        applied: The optimiser stepped.
        nonfinite: The loss (or, without a scaler, a gradient) was not finite; no update.
        scaler_skipped: The loss was finite but the scaled fp16 gradients overflowed; the scaler
            skipped the update and lowered its scale. Expected now and then (most often in the
            first steps, while the scale settles), not a sign of divergence.
    """

    applied = "applied"
    nonfinite = "nonfinite"
    scaler_skipped = "scaler_skipped"


def create_grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 and fp32 need none).

    Args:
        precision: The resolved precision (not ``auto``).
        device: Where the model trains; ``GradScaler`` exists for the CPU and CUDA.
    """
    return torch.amp.GradScaler(device.type, enabled=precision is Precision.fp16)


def parameters_are_finite(loss: torch.Tensor, parameters: Sequence[torch.nn.Parameter]) -> bool:
    """Whether a loss and all gradients of ``parameters`` are finite (one device sync).

    Args:
        loss: The scalar loss of the step.
        parameters: The trained parameters, after ``backward``.
    """
    finite = torch.isfinite(loss.detach())
    gradients = [p.grad for p in parameters if p.grad is not None]
    if gradients:
        # The norm of all gradients is finite exactly when every gradient entry is.
        finite = finite & torch.isfinite(torch.nn.utils.get_total_norm(gradients))
    return bool(finite.item())


def scaled_backward(
    loss: torch.Tensor, *, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    """Back-propagate ``loss`` through the scaler, then unscale the gradients in place.

    After it the gradients of ``optimizer``'s parameters are the true (unscaled) ones, ready
    to be checked or clipped. Zero the gradients before calling it.

    Args:
        loss: The scalar loss, float32.
        optimizer: The optimiser whose parameters' gradients are unscaled.
        scaler: From ``create_grad_scaler``; a disabled one makes this ``loss.backward()``.
    """
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)


def step_outcome(
    loss: torch.Tensor,
    parameters: Sequence[torch.nn.Parameter],
    *,
    scaler: torch.amp.GradScaler,
) -> StepOutcome:
    """Whether to apply the update, after ``scaled_backward``; counts nothing.

    A non-finite loss is a non-finite step; a finite loss with non-finite gradients is the
    scaler's skip under fp16 (overflow of the scaled gradients) and a non-finite step otherwise.
    """
    if parameters_are_finite(loss, parameters):
        return StepOutcome.applied
    if scaler.is_enabled() and bool(torch.isfinite(loss.detach()).item()):
        return StepOutcome.scaler_skipped
    return StepOutcome.nonfinite


def finish_step(
    outcome: StepOutcome, *, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    """Apply the update when ``outcome`` allows it, then let the scaler adjust its scale.

    A skipped step still updates the scaler, so that an overflow lowers the scale.
    """
    if outcome is StepOutcome.applied:
        scaler.step(optimizer)
    scaler.update()


def backward_and_step(
    loss: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    parameters: Sequence[torch.nn.Parameter],
) -> StepOutcome:
    """Back-propagate ``loss`` with loss scaling and update, unless the step is not finite.

    The gradients are zeroed first. ``scaled_backward``, ``step_outcome`` and ``finish_step`` in
    one call, for loops that have nothing to do between them.

    Args:
        loss: The scalar loss, float32.
        optimizer: The optimiser of ``parameters``.
        scaler: From ``create_grad_scaler``.
        parameters: The trained parameters, whose gradients are checked.

    Returns:
        Whether the update was applied, and if not, why.
    """
    optimizer.zero_grad(set_to_none=True)
    scaled_backward(loss, optimizer=optimizer, scaler=scaler)
    outcome = step_outcome(loss, parameters, scaler=scaler)
    finish_step(outcome, optimizer=optimizer, scaler=scaler)
    return outcome
