"""ResNet last norms: timm's zeros by default, torchvision's unit scale on request."""

from __future__ import annotations

import torch

from simclr_cli.core.model.backbone import create_backbone


def _last_norm_scales(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.bn2.weight.detach() for b in model.modules() if hasattr(b, "bn2")]


def test_create_backbone__keeps_timm_zero_init_by_default():
    model, _ = create_backbone("resnet10t", image_size=32)
    scales = _last_norm_scales(model)
    assert scales and all(not s.any() for s in scales)


def test_create_backbone__unit_last_norms_on_request():
    model, _ = create_backbone("resnet10t", image_size=32, unit_last_norms=True)
    scales = _last_norm_scales(model)
    assert scales and all(torch.equal(s, torch.ones_like(s)) for s in scales)
