"""read_model_info: metadata, parameter counts, size and hash of encoder and classifier files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from simclr_cli.core.errors import ModelFileError
from simclr_cli.core.model.classifier import create_classifier, save_classifier
from simclr_cli.core.model.files import load_model
from simclr_cli.core.model.info import read_model_info


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_read_model_info__encoder_counts_hash_and_size(trained_model: Path):
    info = read_model_info(trained_model)
    model = load_model(trained_model)
    assert info.kind == "encoder" and "simclr pretrain" in info.description
    assert info.metadata.backbone == model.metadata.backbone
    assert info.parameters["backbone"] == _parameters(model.backbone)
    assert info.parameters["head"] == _parameters(model.head)
    assert info.parameters["total"] == _parameters(model)
    assert info.sha256 == hashlib.sha256(trained_model.read_bytes()).hexdigest()
    assert info.file_size == trained_model.stat().st_size
    assert info.tensors == len(model.state_dict())
    assert set(info.versions) == {"simclr", "torch", "timm"} and info.versions["torch"]
    assert info.metadata.steps == 2 and info.classes == []


def test_read_model_info__classifier_says_what_it_is(trained_model: Path, tmp_path: Path):
    classifier = create_classifier(load_model(trained_model), classes=["a", "b", "c"])
    path = tmp_path / "classifier.safetensors"
    save_classifier(path, classifier)
    info = read_model_info(path)
    assert info.kind == "classifier" and "simclr finetune" in info.description
    assert info.classes == ["a", "b", "c"] and info.from_head_layer == 0
    assert info.parameters["classifier"] == _parameters(classifier.classifier)
    assert info.parameters["total"] == _parameters(classifier)


def test_model_info_to_dict__is_json(trained_model: Path):
    data = json.loads(json.dumps(read_model_info(trained_model).to_dict()))
    assert data["kind"] == "encoder" and data["metadata"]["image_size"] == 32
    assert isinstance(data["metadata"]["mean"], list) and len(data["sha256"]) == 64


@pytest.mark.parametrize("case", ["missing", "folder", "not_safetensors", "no_metadata"])
def test_read_model_info__bad_input_is_model_file_error(case: str, tmp_path: Path):
    path = tmp_path / "model.safetensors"
    if case == "folder":
        path.mkdir()
    elif case == "not_safetensors":
        path.write_text("this is not a model")
    elif case == "no_metadata":
        save_file({"w": torch.zeros(2)}, str(path))
    expected = {
        "missing": "does not exist",
        "folder": "is a folder",
        "not_safetensors": "not a safetensors",
        "no_metadata": "without simclr metadata",
    }[case]
    with pytest.raises(ModelFileError, match=expected):
        read_model_info(path)
