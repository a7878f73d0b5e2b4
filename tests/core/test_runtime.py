"""Device, precision and memory-format choices."""

from __future__ import annotations

import pytest
import torch

from simclr_cli.core._runtime import use_channels_last
from simclr_cli.core.choices import Precision
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.loop import contrastive_step

CPU = torch.device("cpu")


def test_use_channels_last__cpu_only_with_bf16(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SIMCLR_CHANNELS_LAST", raising=False)
    assert use_channels_last(Precision.bf16, CPU)
    assert not use_channels_last(Precision.fp32, CPU)


@pytest.mark.parametrize(("setting", "expected"), [("0", False), ("1", True)])
def test_use_channels_last__environment_overrides(
    monkeypatch: pytest.MonkeyPatch, setting: str, expected: bool
):
    monkeypatch.setenv("SIMCLR_CHANNELS_LAST", setting)
    assert use_channels_last(Precision.bf16, CPU) is expected
    assert use_channels_last(Precision.fp32, CPU) is expected


def test_contrastive_step__channels_last_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", stem="imagenet", image_size=32)
    views_a, views_b = torch.randn(2, 6, 3, 32, 32)
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        model.zero_grad()
        model.to(memory_format=memory_format)
        loss = contrastive_step(
            model,
            views_a,
            views_b,
            temperature=0.2,
            autocast_context=torch.autocast("cpu", enabled=False),
            memory_format=memory_format,
        )
        loss.backward()
        first = next(p for p in model.parameters() if p.ndim == 4)
        results.append((loss.detach(), first.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4, rtol=1e-3)
    assert results[1][1].is_contiguous(memory_format=torch.channels_last)
