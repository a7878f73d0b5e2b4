"""Backbones: timm models without classifier, the CIFAR stem, local initial weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from simclr_cli.core.choices import Stem
from simclr_cli.core.errors import BackboneError
from simclr_cli.core.model.backbone import create_backbone, plan_stem, resolve_stem


def test_create_backbone__auto_stem_is_cifar_for_small_resnets():
    model, stem = create_backbone("resnet18", image_size=32)
    assert stem is Stem.cifar
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 512)


def test_create_backbone__auto_stem_is_imagenet_at_large_sizes():
    model, stem = create_backbone("resnet18", image_size=96)
    assert stem is Stem.imagenet
    assert model.conv1.kernel_size == (7, 7)


def test_create_backbone__deep_stem_keeps_tensor_shapes():
    model, stem = create_backbone("resnet10t", stem="cifar", image_size=32)
    reference = timm.create_model("resnet10t", num_classes=0)
    assert stem is Stem.cifar
    assert model.conv1[0].stride == (1, 1)
    model.load_state_dict(reference.state_dict(), strict=True)


def test_create_backbone__feature_dim_is_read_from_model():
    model, _ = create_backbone("test_resnet", image_size=32)
    assert model(torch.zeros(1, 3, 32, 32)).shape[-1] == model.num_features


def test_create_backbone__unknown_name_raises_with_hint():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet181'"):
        create_backbone("resnet181")


def test_resolve_stem__cifar_stem_on_non_resnet_raises():
    model = timm.create_model("test_vit", num_classes=0)
    with pytest.raises(BackboneError, match="ResNet models only"):
        resolve_stem("cifar", model=model, image_size=32)
    assert resolve_stem("auto", model=model, image_size=32) is Stem.imagenet


def test_plan_stem__decides_what_create_backbone_gives_without_random_numbers():
    state = torch.random.get_rng_state()
    for name, size in [("test_resnet", 32), ("test_resnet", 96), ("test_vit", 32)]:
        planned = plan_stem("auto", backbone=name, image_size=size)
        assert planned is create_backbone(name, image_size=size)[1]
        torch.random.set_rng_state(state)
    assert plan_stem("auto", backbone="test_resnet", image_size=32) is Stem.cifar
    assert torch.equal(torch.random.get_rng_state(), state)
    assert plan_stem("imagenet", backbone="test_resnet", image_size=32) is Stem.imagenet


def test_plan_stem__cifar_on_a_non_resnet_and_unknown_names_are_refused():
    with pytest.raises(BackboneError, match="ResNet models only"):
        plan_stem("cifar", backbone="test_vit", image_size=32)
    with pytest.raises(BackboneError, match="unknown backbone 'resnet181'"):
        plan_stem("auto", backbone="resnet181", image_size=32)


def test_create_backbone__init_weights_from_timm_file(tmp_path: Path):
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model, _ = create_backbone("test_resnet", stem="imagenet", init_weights=path)
    torch.testing.assert_close(model.conv1[0].weight, source.conv1[0].weight)


def test_create_backbone__init_weights_that_do_not_fit_raise(tmp_path: Path):
    path = tmp_path / "other.safetensors"
    other = timm.create_model("resnet10t", num_classes=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(BackboneError, match="does not fit"):
        create_backbone("test_resnet", stem="imagenet", init_weights=path)


def test_create_backbone__init_weights_not_safetensors_raise(tmp_path: Path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(BackboneError, match="not a readable safetensors"):
        create_backbone("test_resnet", init_weights=path)
