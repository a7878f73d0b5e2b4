"""One .safetensors file per model: round trip, timm compatibility, and bad files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from simclr_cli.core.errors import ModelFileError
from simclr_cli.core.model.classifier import create_classifier, load_classifier, save_classifier
from simclr_cli.core.model.files import load_model, read_metadata, save_model
from simclr_cli.core.model.simclr import create_simclr_model


def _backbone_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {
        k[len("backbone.") :]: v
        for k, v in load_file(str(path)).items()
        if k.startswith("backbone.")
    }


def test_save_model__round_trip_gives_same_outputs(tmp_path: Path):
    model = create_simclr_model(backbone="test_resnet", image_size=32, head="v1").eval()
    path = tmp_path / "model.safetensors"
    save_model(path, model)
    loaded = load_model(path)
    images = torch.randn(2, 3, 32, 32)
    for expected, actual in zip(model(images), loaded(images), strict=True):
        torch.testing.assert_close(expected, actual)
    assert loaded.metadata.backbone == "test_resnet"
    assert loaded.metadata.head_layers == 2


def test_save_model__backbone_loads_strict_into_timm(tmp_path: Path):
    model = create_simclr_model(backbone="resnet10t", stem="imagenet", image_size=64)
    path = tmp_path / "model.safetensors"
    save_model(path, model)
    reference = timm.create_model("resnet10t", num_classes=0)
    reference.load_state_dict(_backbone_tensors(path), strict=True)


def test_save_model__cifar_stem_loads_strict_into_timm_with_same_stem(tmp_path: Path):
    from simclr_cli.core.model.backbone import apply_cifar_stem

    model = create_simclr_model(backbone="resnet18", image_size=32)
    assert model.metadata.stem == "cifar"
    path = tmp_path / "model.safetensors"
    save_model(path, model)
    reference = timm.create_model("resnet18", num_classes=0)
    apply_cifar_stem(reference)
    reference.load_state_dict(_backbone_tensors(path), strict=True)


def test_read_metadata__has_everything_to_rebuild(trained_model: Path):
    metadata = read_metadata(trained_model)
    assert metadata.backbone == "test_resnet" and metadata.image_size == 32
    assert metadata.preset == "cifar" and metadata.steps == 2
    assert len(metadata.mean) == 3 and metadata.head_output_dim == 128
    header = json.loads(
        trained_model.read_bytes()[8 : 8 + struct.unpack("<Q", trained_model.read_bytes()[:8])[0]]
    )
    raw = header["__metadata__"]
    assert raw["format"] == "simclr-cli" and "torch_version" in raw and "timm_version" in raw


def test_load_model__not_safetensors_raises(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04\x95pickle data here")
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(path)


def test_load_model__missing_file_raises(tmp_path: Path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "none.safetensors")


def test_load_model__safetensors_without_metadata_raises(tmp_path: Path):
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="without simclr metadata"):
        load_model(path)


def test_load_model__truncated_file_raises(trained_model: Path, tmp_path: Path):
    path = tmp_path / "cut.safetensors"
    data = trained_model.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(path)


def test_load_model__huge_header_is_refused(tmp_path: Path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(path)


def test_load_model__shape_mismatch_raises(trained_model: Path, tmp_path: Path):
    tensors = load_file(str(trained_model))
    raw = json.loads(
        trained_model.read_bytes()[8 : 8 + struct.unpack("<Q", trained_model.read_bytes()[:8])[0]]
    )["__metadata__"]
    raw["head_output_dim"] = "64"
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=raw)
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)


def test_load_model__unknown_backbone_in_metadata_raises(trained_model: Path, tmp_path: Path):
    header = trained_model.read_bytes()[
        8 : 8 + struct.unpack("<Q", trained_model.read_bytes()[:8])[0]
    ]
    raw = json.loads(header)["__metadata__"]
    raw["backbone"] = "resnet_from_the_future"
    path = tmp_path / "unknown.safetensors"
    save_file(load_file(str(trained_model)), str(path), metadata=raw)
    with pytest.raises(ModelFileError, match="cannot build"):
        load_model(path)


def test_load_model__pickle_file_is_refused_without_unpickling(tmp_path: Path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "model.safetensors"
    torch.save({"weight": torch.zeros(2), "trap": Trap()}, path)
    with pytest.raises(ModelFileError, match="not a safetensors"):
        load_model(path)
    assert not marker.exists()


def test_save_model__file_gets_the_umask_mode(tmp_path: Path):
    import os

    model = create_simclr_model(backbone="test_resnet", image_size=32)
    path = tmp_path / "model.safetensors"
    umask = os.umask(0o022)
    try:
        save_model(path, model)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_load_classifier__round_trip_and_kinds_refused_both_ways(tmp_path: Path):
    torch.manual_seed(0)
    encoder = create_simclr_model(backbone="test_resnet", image_size=32)
    encoder_path = tmp_path / "model.safetensors"
    save_model(encoder_path, encoder)
    classifier = create_classifier(encoder, classes=["a", "b", "c"], from_head_layer=1)
    classifier_path = tmp_path / "classifier.safetensors"
    save_classifier(classifier_path, classifier.eval())
    loaded = load_classifier(classifier_path)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(images), classifier(images))
    assert loaded.classes == ["a", "b", "c"] and loaded.from_head_layer == 1
    with pytest.raises(ModelFileError, match=r"is a classifier .* not an encoder"):
        load_model(classifier_path)
    with pytest.raises(ModelFileError, match="is an encoder, not a classifier"):
        load_classifier(encoder_path)
    assert read_metadata(classifier_path).kind == "classifier"


def test_load_model__file_without_the_head_scale_loads_with_ones(tmp_path: Path):
    # Files written when the v2 head's last batch norm had no learnable scale.
    model = create_simclr_model(backbone="test_resnet", image_size=32, head="v2").eval()
    with torch.no_grad():
        model.head.blocks[2][1].running_var.fill_(4.0)
    path = tmp_path / "model.safetensors"
    save_model(path, model)
    tensors = load_file(str(path))
    raw = json.loads(path.read_bytes()[8 : 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
    del tensors["head.blocks.2.1.weight"]
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=raw["__metadata__"])
    loaded = load_model(old)
    torch.testing.assert_close(loaded.head.blocks[2][1].weight, torch.ones(128))
    torch.testing.assert_close(loaded.head.blocks[2][1].running_var, torch.full((128,), 4.0))
    images = torch.randn(2, 3, 32, 32)
    for expected, actual in zip(model(images), loaded(images), strict=True):
        torch.testing.assert_close(expected, actual)
