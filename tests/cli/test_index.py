"""`simclr index` through Typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from simclr_cli.cli.app import app

runner = CliRunner()


def test_index__writes_an_index_and_says_so(trained_model: Path, shapes_dir: Path, tmp_path):
    out = tmp_path / "ix"
    result = runner.invoke(app, ["index", str(trained_model), str(shapes_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Indexed 24 images (24 embedded)" in result.output
    assert {p.name for p in out.iterdir()} == {"embeddings.npy", "paths.jsonl", "index.json"}


def test_index__update_json_counts_kept_and_new(trained_model: Path, shapes_dir: Path, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(shapes_dir / "circle", images)
    out = tmp_path / "ix"
    arguments = ["index", str(trained_model), str(images), "--out", str(out)]
    assert runner.invoke(app, arguments).exit_code == 0
    shutil.copy(sorted((shapes_dir / "square").iterdir())[0], images / "new.png")
    result = runner.invoke(app, [*arguments, "--update", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["images"], document["embedded"], document["kept"]) == (9, 1, 8)
    assert document["dtype"] == "float16" and document["dropped"] == 0


def test_index__existing_index_is_not_overwritten(trained_model: Path, shapes_dir: Path, tmp_path):
    out = tmp_path / "ix"
    arguments = ["index", str(trained_model), str(shapes_dir / "circle"), "--out", str(out)]
    assert runner.invoke(app, arguments).exit_code == 0
    before = (out / "embeddings.npy").read_bytes()
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1 and "--update" in result.output and "--force" in result.output
    assert "Traceback" not in result.output
    assert (out / "embeddings.npy").read_bytes() == before
    assert runner.invoke(app, [*arguments, "--force", "--dtype", "float32"]).exit_code == 0


def test_index__not_an_image_is_one_line_error(trained_model: Path, tmp_path: Path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("text")
    result = runner.invoke(
        app, ["index", str(trained_model), str(bad), "--out", str(tmp_path / "i")]
    )
    assert result.exit_code == 1 and "not an image file" in result.output
    assert not (tmp_path / "i" / "index.json").exists()


def test_index__unreadable_file_in_a_folder_is_skipped_and_listed(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    folder = tmp_path / "photos"
    shutil.copytree(shapes_dir / "circle", folder)
    (folder / "broken.jpg").write_text("text")
    result = runner.invoke(
        app, ["index", str(trained_model), str(folder), "--out", str(tmp_path / "i")]
    )
    assert result.exit_code == 0, result.output
    assert "1 unreadable file skipped" in result.output and "broken.jpg" in result.output
    assert "Indexed 8 images" in result.output


def test_index__wrong_model_file_is_reported_before_the_images(tmp_path: Path):
    (tmp_path / "broken.jpg").write_text("text")
    fake = tmp_path / "fake.safetensors"
    fake.write_text("not a model")
    result = runner.invoke(app, ["index", str(fake), str(tmp_path), "--out", str(tmp_path / "i")])
    assert result.exit_code == 1
    assert "broken.jpg" not in result.output and "fake.safetensors" in result.output
