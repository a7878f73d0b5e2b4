"""Loss scaling for fp16: tiny gradients survive, overflows are skipped and counted apart."""

from __future__ import annotations

import pytest
import torch

from simclr_cli.core._amp import (
    StepOutcome,
    backward_and_step,
    create_grad_scaler,
    step_outcome,
)
from simclr_cli.core._runtime import autocast, resolve_precision
from simclr_cli.core.choices import Precision

CPU = torch.device("cpu")
INPUTS = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))


def _linear_step(
    *, loss_factor: float, scaled: bool
) -> tuple[StepOutcome, torch.nn.Linear, torch.Tensor, torch.amp.GradScaler]:
    """One step of a Linear under CPU fp16 autocast with the loss multiplied by ``loss_factor``.

    Returns the outcome, the layer (its gradients kept), its weight before the step and the scaler.
    """
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    before = layer.weight.detach().clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=scaled)
    with autocast(Precision.fp16, CPU):
        outputs = layer(INPUTS)
    assert outputs.dtype == torch.float16
    loss = outputs.float().sum() * loss_factor
    outcome = backward_and_step(
        loss, optimizer=optimizer, scaler=scaler, parameters=list(layer.parameters())
    )
    return outcome, layer, before, scaler


def test_backward_and_step__scaler_keeps_tiny_fp16_gradients_that_underflow_without_it():
    # d(loss)/d(output) = 1e-9 is below fp16's smallest subnormal (6e-8): it flushes to zero.
    _, unscaled, _, _ = _linear_step(loss_factor=1e-9, scaled=False)
    assert torch.count_nonzero(unscaled.weight.grad) == 0
    outcome, scaled, _, _ = _linear_step(loss_factor=1e-9, scaled=True)
    assert outcome is StepOutcome.applied
    assert torch.count_nonzero(scaled.weight.grad) == scaled.weight.numel()
    # The gradients are unscaled back to their true size: 1e-9 x the sum of each input column.
    expected = (1e-9 * INPUTS.sum(0)).expand(4, 8)
    torch.testing.assert_close(scaled.weight.grad, expected, rtol=2e-2, atol=1e-12)


def test_backward_and_step__overflow_is_a_scaler_skip_that_lowers_the_scale():
    # A finite loss whose scaled gradients (1e6 x 65536) overflow fp16.
    outcome, layer, before, scaler = _linear_step(loss_factor=1e6, scaled=True)
    assert outcome is StepOutcome.scaler_skipped
    assert torch.equal(layer.weight.detach(), before)
    assert scaler.get_scale() < 2.0**16


def test_step_outcome__a_nonfinite_loss_is_a_nonfinite_step_even_with_a_scaler():
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.tensor([0.0, float("inf"), 1.0])
    enabled = torch.amp.GradScaler("cpu", enabled=True)
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert step_outcome(torch.tensor(1.0), [weight], scaler=enabled) is StepOutcome.scaler_skipped
    assert step_outcome(torch.tensor(1.0), [weight], scaler=disabled) is StepOutcome.nonfinite
    nan = torch.tensor(float("nan"))
    assert step_outcome(nan, [weight], scaler=enabled) is StepOutcome.nonfinite
    weight.grad = torch.zeros(3)
    assert step_outcome(torch.tensor(1.0), [weight], scaler=enabled) is StepOutcome.applied


@pytest.mark.parametrize(
    ("precision", "enabled"),
    [(Precision.fp16, True), (Precision.bf16, False), (Precision.fp32, False)],
)
def test_create_grad_scaler__only_fp16_scales(precision: Precision, enabled: bool):
    assert create_grad_scaler(precision, CPU).is_enabled() is enabled


def test_resolve_precision__fp16_is_allowed_on_the_cpu():
    assert resolve_precision(Precision.fp16, CPU) is Precision.fp16
