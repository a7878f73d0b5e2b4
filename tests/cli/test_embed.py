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


def test_embed__bad_images_are_skipped_and_counted_on_stderr(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    (tmp_path / "notes.jpg").write_text("not an image")
    image = sorted((shapes_dir / "circle").iterdir())[0]
    out = tmp_path / "e.csv"
    result = runner.invoke(
        app, ["embed", str(trained_model), str(image), str(tmp_path / "notes.jpg"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "1 unreadable file skipped" in result.stderr and "notes.jpg" in result.stderr
    assert "Wrote 1 embeddings" in result.stdout and len(out.read_text().splitlines()) == 2


def test_embed__fail_policy_is_one_line_error(trained_model: Path, tmp_path: Path):
    (tmp_path / "notes.jpg").write_text("not an image")
    result = runner.invoke(
        app, ["embed", str(trained_model), str(tmp_path / "notes.jpg"), "--on-bad-image", "fail"]
    )
    assert result.exit_code == 1 and "not an image file" in result.output
    assert "Traceback" not in result.output


def test_embed__file_list_from_standard_input_and_skipped_file(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    images = sorted((shapes_dir / "square").iterdir())[:2]
    lines = "\n".join([*(str(p) for p in images), str(tmp_path / "gone.png")]) + "\n"
    out, listed = tmp_path / "e.npy", tmp_path / "skipped.txt"
    result = runner.invoke(
        app,
        ["embed", str(trained_model), "--file-list", "-", "-o", str(out), "--skipped", str(listed)],
        input=lines,
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape[0] == 2
    assert (tmp_path / "e.paths.txt").read_text().splitlines() == [str(p) for p in images]
    assert listed.read_text().startswith(str(tmp_path / "gone.png") + "\tfile not found")
    assert f"listed in {listed}" in result.stderr


def test_embed__json_with_parquet_output_reads_the_rows_back(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "e.parquet"
    result = runner.invoke(
        app, ["embed", str(trained_model), str(shapes_dir / "circle"), "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert len(document["embeddings"]) == 8 and document["skipped"] == []
    assert document["output"] == str(out) and out.exists()


def test_embed__interrupted_output_needs_resume(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "e.npy"
    (tmp_path / "e.npy.partial").mkdir()
    result = runner.invoke(app, ["embed", str(trained_model), str(shapes_dir), "-o", str(out)])
    assert result.exit_code == 1 and "--resume" in result.output
    assert "Traceback" not in result.output
