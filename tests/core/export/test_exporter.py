"""export_model: each format loaded back the way its users load it and compared with PyTorch."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from simclr_cli.core.choices import ExportFormat
from simclr_cli.core.config import ExportConfig
from simclr_cli.core.errors import (
    ConfigError,
    ExportError,
    MissingDependencyError,
    ModelFileError,
    RunFolderError,
)
from simclr_cli.core.eval.embed import embed_images
from simclr_cli.core.export import to_torchscript as _export_torchscript
from simclr_cli.core.export.exporter import export_model
from simclr_cli.core.export.to_timm import timm_crop_pct
from simclr_cli.core.model.files import load_model, save_model
from simclr_cli.core.model.simclr import create_simclr_model


def _images(folder: Path, count: int = 4) -> list[Path]:
    """Random RGB images of different, non-square sizes (so that resize and crop matter)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    paths = []
    for index in range(count):
        width, height = 90 + 7 * index, 70 + 11 * index
        pixels = generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        path = folder / f"image{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _saved_model(tmp_path: Path, *, backbone: str, image_size: int, **metadata: object) -> Path:
    torch.manual_seed(0)
    model = create_simclr_model(
        backbone=backbone, stem="imagenet", image_size=image_size, metadata=metadata
    )
    path = tmp_path / f"{backbone}_{image_size}.safetensors"
    save_model(path, model.eval())
    return path


@pytest.mark.parametrize(
    ("image_size", "crop_fraction"), [(32, 1.0), (72, 0.875)], ids=["whole", "centre_crop"]
)
def test_export_model__timm_round_trip_reproduces_embed(
    tmp_path: Path, image_size: int, crop_fraction: float
):
    source = _saved_model(
        tmp_path,
        backbone="test_resnet",
        image_size=image_size,
        crop_fraction=crop_fraction,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
    )
    out = tmp_path / "timm"
    result = export_model(config=ExportConfig(model=source, format="timm", out=out))
    assert {p.name for p in result.files} == {"model.safetensors", "config.json", "README.md"}
    assert json.loads((out / "config.json").read_text())["num_classes"] == 0

    network = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    data_config = timm.data.resolve_data_config(model=network)
    assert tuple(data_config["input_size"]) == (3, image_size, image_size)
    assert tuple(data_config["mean"]) == (0.5, 0.4, 0.3)
    transform = timm.data.create_transform(**data_config)
    paths = _images(tmp_path / "images")
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        timm_features = network(batch).numpy()
    ours = embed_images(load_model(source), paths)
    np.testing.assert_allclose(timm_features, ours, atol=1e-5, rtol=1e-4)
    assert network.num_classes == 0


def test_export_model__timm_vit_carries_image_size(tmp_path: Path):
    source = _saved_model(tmp_path, backbone="test_vit", image_size=48)
    out = tmp_path / "vit"
    export_model(config=ExportConfig(model=source, format=ExportFormat.timm, out=out))
    assert json.loads((out / "config.json").read_text())["model_args"] == {"img_size": 48}
    network = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(network(images), load_model(source).backbone(images))


def test_export_model__cifar_stem_is_refused_for_timm(trained_model: Path, tmp_path: Path):
    out = tmp_path / "timm"
    with pytest.raises(ExportError, match=r"CIFAR stem.*--stem imagenet"):
        export_model(config=ExportConfig(model=trained_model, format="timm", out=out))
    assert not out.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_export_model__torchscript_matches_torch(trained_model: Path, tmp_path: Path):
    out = tmp_path / "ts"
    result = export_model(config=ExportConfig(model=trained_model, format="torchscript", out=out))
    assert result.max_abs_difference <= result.tolerance
    network = torch.jit.load(str(out / "model.pt"))
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(network(images), load_model(trained_model).backbone(images))
    assert "torch.jit.load" in (out / "README.md").read_text()


def test_export_model__onnx_matches_torch_with_any_batch(trained_model: Path, tmp_path: Path):
    onnxruntime = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    result = export_model(config=ExportConfig(model=trained_model, format="onnx", out=out))
    assert result.max_abs_difference <= result.tolerance and (out / "model.onnx").is_file()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    backbone = load_model(trained_model).backbone
    for batch_size in (1, 5):
        images = torch.randn(batch_size, 3, 32, 32)
        (features,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(features, backbone(images).numpy(), atol=1e-4)


def test_export_model__onnx_without_extra_names_it(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"simclr-cli\[onnx\]"):
        export_model(config=ExportConfig(model=trained_model, format="onnx", out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_export_model__failed_check_writes_nothing(
    trained_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    original = _export_torchscript.run_torchscript
    monkeypatch.setattr(
        _export_torchscript, "run_torchscript", lambda folder, images: original(folder, images) + 1
    )
    out = tmp_path / "ts"
    with pytest.raises(ExportError, match="differs from PyTorch by 1"):
        export_model(config=ExportConfig(model=trained_model, format="torchscript", out=out))
    assert list(out.iterdir()) == []


def test_export_model__non_empty_out_needs_force(trained_model: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = ExportConfig(model=trained_model, format="torchscript", out=out)
    with pytest.raises(RunFolderError, match="--force"):
        export_model(config=config)
    config.force = True
    export_model(config=config)
    assert (out / "model.pt").is_file() and (out / "keep.txt").read_text() == "mine"


def test_export_model__bad_model_file(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(ModelFileError, match="not a safetensors"):
        export_model(config=ExportConfig(model=path, format="torchscript", out=tmp_path / "o"))


def test_export_config__unknown_format_is_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="--format 'tflite'"):
        ExportConfig(model=tmp_path / "m", format="tflite", out=tmp_path / "o")


@pytest.mark.parametrize("image_size", [24, 32, 64, 72, 96, 112, 160, 224, 288, 384])
@pytest.mark.parametrize("fraction", [1.0, 0.875, 0.9, 0.95])
def test_timm_crop_pct__timm_resizes_to_ours(image_size: int, fraction: float):
    resize = max(image_size, round(image_size / fraction))
    assert math.floor(image_size / timm_crop_pct(image_size, resize)) == resize


def test_write_timm__crash_mid_write_keeps_the_previous_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from simclr_cli.core.export import to_timm

    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", stem="imagenet", image_size=32, metadata={})
    out = tmp_path / "timm"
    out.mkdir()
    to_timm.write_timm(model, out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("the machine went down")

    monkeypatch.setattr(to_timm, "save_file", crash)
    with pytest.raises(OSError, match="went down"):
        to_timm.write_timm(model, out)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
