"""ResNet backbones start with unit-scale last norms (torchvision's init, not timm's zeros)."""

from __future__ import annotations

import timm
import torch

from simclr_cli.core.backbone import create_backbone


def test_create_backbone__last_norm_of_each_block_has_unit_scale():
    plain = timm.create_model("resnet10t", num_classes=0)
    assert all(not b.bn2.weight.detach().any() for b in plain.modules() if hasattr(b, "bn2"))
    model, _ = create_backbone("resnet10t", image_size=32)
    scales = [b.bn2.weight for b in model.modules() if hasattr(b, "bn2")]
    assert scales and all(torch.equal(s, torch.ones_like(s)) for s in scales)
