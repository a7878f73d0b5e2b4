"""`simclr embed` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from simclr_cli.cli.app import app

runner = CliRunner()


def test_embed__table_lists_each_image(trained_model: Path, shapes_dir: Path):
    result = runner.invoke(app, ["embed", str(trained_model), str(shapes_dir / "circle")])
    assert result.exit_code == 0, result.output
    assert "8 feature embeddings" in result.output and "norm" in result.output


def test_embed__json_is_parseable(trained_model: Path, shapes_dir: Path):
    image = sorted((shapes_dir / "square").iterdir())[0]
    result = runner.invoke(app, ["embed", str(trained_model), str(image), "--json"])
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    rows = document["embeddings"]
    assert rows[0]["path"] == str(image) and len(rows[0]["embedding"]) == document["dimension"]
    assert document["model"] == str(trained_model) and document["projection"] is False


def test_embed__output_file(trained_model: Path, shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "e.npy"
    result = runner.invoke(app, ["embed", str(trained_model), str(shapes_dir), "-o", str(out)])
    assert result.exit_code == 0 and "Wrote 24 embeddings" in result.output
    assert np.load(out).shape[0] == 24


def test_embed__model_without_metadata_is_one_line_error(shapes_dir: Path, tmp_path: Path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    result = runner.invoke(app, ["embed", str(plain), str(shapes_dir)])
    assert result.exit_code == 1 and "without simclr metadata" in result.output
    assert "Traceback" not in result.output


def test_embed__missing_input_is_one_line_error(trained_model: Path, tmp_path: Path):
    result = runner.invoke(app, ["embed", str(trained_model), str(tmp_path / "nope.jpg")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_embed__map_writes_a_png_of_thumbnails(trained_model: Path, shapes_dir: Path, tmp_path):
    out = tmp_path / "map.png"
    result = runner.invoke(
        app, ["embed", str(trained_model), str(shapes_dir), "--map", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "Wrote a PCA map of 24 images" in result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 1600


def test_embed__map_tsne_method(trained_model: Path, shapes_dir: Path, tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "map.png"
    result = runner.invoke(
        app,
        ["embed", str(trained_model), str(shapes_dir), "--map", str(out), "--map-method", "tsne"],
    )
    assert result.exit_code == 0, result.output
    assert "t-SNE map" in result.output and out.exists()


def test_embed__map_needs_png_before_any_work(trained_model: Path, shapes_dir: Path, tmp_path):
    result = runner.invoke(
        app, ["embed", str(trained_model), str(shapes_dir), "--map", str(tmp_path / "m.jpg")]
    )
    assert result.exit_code == 1 and ".png" in result.output
    assert "Traceback" not in result.output
