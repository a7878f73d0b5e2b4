"""Embedding images with a saved model and writing the results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file

from simclr_cli.core.config import EmbedConfig
from simclr_cli.core.errors import ConfigError, DataError, ImageDecodeError
from simclr_cli.core.eval.embed import embed, embed_images, write_embeddings
from simclr_cli.core.model.files import load_model


def test_embed__folder_gives_one_row_per_image(trained_model: Path, shapes_dir: Path):
    result = embed(config=EmbedConfig(model=trained_model, inputs=[shapes_dir / "circle"]))
    model = load_model(trained_model)
    assert len(result.paths) == 8
    assert result.embeddings.shape == (8, model.metadata.feature_dim)
    assert result.embeddings.dtype == np.float32


def test_embed__projection_uses_head_output(trained_model: Path, shapes_dir: Path):
    image = next((shapes_dir / "square").iterdir())
    result = embed(config=EmbedConfig(model=trained_model, inputs=[image], projection=True))
    assert result.embeddings.shape == (1, 128)


def test_embed__is_deterministic_and_matches_python_api(trained_model: Path, shapes_dir: Path):
    images = sorted((shapes_dir / "stripes").iterdir())[:3]
    first = embed(config=EmbedConfig(model=trained_model, inputs=images)).embeddings
    second = embed_images(load_model(trained_model), images)
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


def test_embed__unreadable_image_raises(trained_model: Path, tmp_path: Path):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(ImageDecodeError, match=r"bad\.png"):
        embed(config=EmbedConfig(model=trained_model, inputs=[bad]))


@pytest.mark.parametrize("suffix", [".npy", ".safetensors", ".csv", ".jsonl"])
def test_write_embeddings__round_trip(
    trained_model: Path, shapes_dir: Path, tmp_path: Path, suffix: str
):
    result = embed(config=EmbedConfig(model=trained_model, inputs=[shapes_dir / "circle"]))
    path = tmp_path / f"out{suffix}"
    write_embeddings(result, path)
    if suffix == ".npy":
        loaded = np.load(path)
    elif suffix == ".safetensors":
        loaded = load_file(str(path))["embeddings"]
        with safe_open(str(path), "np") as handle:
            paths = json.loads(handle.metadata()["paths"])
        assert paths == [str(p) for p in result.paths]
    elif suffix == ".csv":
        with open(path, newline="") as stream:
            rows = list(csv.reader(stream))
        assert rows[0][0] == "path" and rows[1][0] == str(result.paths[0])
        loaded = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert rows[0]["path"] == str(result.paths[0])
        loaded = np.array([row["embedding"] for row in rows])
    np.testing.assert_allclose(loaded, result.embeddings, rtol=1e-5, atol=1e-6)


def test_write_embeddings__unknown_suffix_raises(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    result = embed(config=EmbedConfig(model=trained_model, inputs=[shapes_dir / "circle"]))
    with pytest.raises(ConfigError, match=r"\.parquet"):
        write_embeddings(result, tmp_path / "out.parquet")


def test_embed__model_and_images_gives_the_same_rows_for_every_input_form(
    trained_model: Path, shapes_dir: Path
):
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    model = load_model(trained_model)
    files = sorted((shapes_dir / "circle").iterdir())[:3]
    pictures = [Image.open(f).convert("RGB") for f in files]
    uint8_batch = torch.stack([TF.pil_to_tensor(p) for p in pictures])
    expected = embed(config=EmbedConfig(model=trained_model, inputs=files)).embeddings
    forms = {
        "str paths": [str(f) for f in files],
        "PIL images": pictures,
        "uint8 batch": uint8_batch,
        "float batch": uint8_batch.float() / 255,
        "list of tensors": list(uint8_batch),
        "numpy batch": uint8_batch.numpy(),
    }
    for name, images in forms.items():
        rows = embed(model, images)
        assert rows.shape == expected.shape, name
        np.testing.assert_allclose(rows, expected, rtol=1e-4, atol=1e-4, err_msg=name)


def test_embed__model_and_single_image_tensor_gives_one_row(trained_model: Path):
    model = load_model(trained_model)
    rows = embed(model, torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8), projection=True)
    assert rows.shape == (1, model.metadata.head_output_dim)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 3, 32, 32) * 4 - 2, r"\[0, 1\]"),
        (torch.zeros(2, 32, 32, 3, dtype=torch.uint8), r"\(B, 3, H, W\)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "uint8 or float"),
        ([42], "cannot embed a int"),
    ],
)
def test_embed__model_and_bad_images_raise_data_error(
    trained_model: Path, images: object, message: str
):
    with pytest.raises(DataError, match=message):
        embed(load_model(trained_model), images)


def test_embed__folder_passed_to_python_form_raises(trained_model: Path, shapes_dir: Path):
    with pytest.raises(DataError, match="is a folder"):
        embed(load_model(trained_model), [shapes_dir])


def test_embed__model_and_config_together_raise_type_error(trained_model: Path):
    config = EmbedConfig(model=trained_model, inputs=[trained_model])
    with pytest.raises(TypeError, match="not both"):
        embed(load_model(trained_model), [], config=config)
    with pytest.raises(TypeError):
        embed()
