"""`simclr search` through Typer's CliRunner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.data.shards import index_shards
from simclr_cli.core.model.files import save_model
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.viz.embedding_map import load_thumbnail
from tests.cli.test_index import write_test_shards
from tests.conftest import TINY_BACKBONE

runner = CliRunner()


@pytest.fixture(scope="module")
def index_folder(trained_model: Path, shapes_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("search") / "ix"
    result = runner.invoke(app, ["index", str(trained_model), str(shapes_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_search__table_of_neighbours(index_folder: Path, shapes_dir: Path):
    query = sorted((shapes_dir / "circle").iterdir())[0]
    result = runner.invoke(
        app, ["search", str(index_folder), str(query), "--top-k", "3", "--protocol", "none"]
    )
    assert result.exit_code == 0, result.output
    assert "3 nearest of 24 images" in result.output and "similarity" in result.output


def test_search__json_and_save(index_folder: Path, shapes_dir: Path, tmp_path: Path):
    queries = [sorted((shapes_dir / name).iterdir())[0] for name in ("circle", "square")]
    grid = tmp_path / "grid.png"
    result = runner.invoke(
        app,
        ["search", str(index_folder), *map(str, queries), "-k", "4", "--save", str(grid), "--json"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [len(q["neighbours"]) for q in document["queries"]] == [4, 4]
    assert document["queries"][0]["in_index"] is True and document["save"] == str(grid)
    similarities = [n["similarity"] for n in document["queries"][0]["neighbours"]]
    assert similarities == sorted(similarities, reverse=True)
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.width >= 5 * 128


def test_search__half_blocks_in_the_terminal(index_folder: Path, shapes_dir: Path):
    query = sorted((shapes_dir / "stripes").iterdir())[0]
    result = runner.invoke(
        app, ["search", str(index_folder), str(query), "-k", "2", "--protocol", "truecolor"]
    )
    assert result.exit_code == 0, result.output
    assert "\x1b[38;2;" in result.output and "\u2580" in result.output


def test_search__query_not_an_image(index_folder: Path, tmp_path: Path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    result = runner.invoke(app, ["search", str(index_folder), str(text)])
    assert result.exit_code == 1 and "not an image file" in result.output
    assert "Traceback" not in result.output


def test_search__another_model_is_refused(index_folder: Path, shapes_val_dir: Path, tmp_path):
    other = tmp_path / "other.safetensors"
    save_model(other, create_simclr_model(backbone=TINY_BACKBONE, image_size=32))
    query = sorted((shapes_val_dir / "circle").iterdir())[0]
    result = runner.invoke(app, ["search", str(index_folder), str(query), "--model", str(other)])
    assert result.exit_code == 1 and "made by another model" in result.output
    assert "--force" in result.output


def test_search__not_an_index(tmp_path: Path, shapes_dir: Path):
    query = sorted((shapes_dir / "circle").iterdir())[0]
    result = runner.invoke(app, ["search", str(tmp_path), str(query)])
    assert result.exit_code == 1 and "not an index folder" in result.output


def test_search__save_needs_png_before_any_work(index_folder: Path, shapes_dir: Path, tmp_path):
    query = sorted((shapes_dir / "circle").iterdir())[0]
    result = runner.invoke(
        app, ["search", str(index_folder), str(query), "--save", str(tmp_path / "g.jpg")]
    )
    assert result.exit_code == 1 and "ending in .png" in result.output


def test_search__flip_invariant_index_finds_a_new_mirrored_query(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "ix"
    built = runner.invoke(
        app,
        ["index", str(trained_model), str(shapes_dir), "--out", str(out), "--flip-invariant"],
    )
    assert built.exit_code == 0, built.output
    original = sorted((shapes_dir / "stripes").iterdir())[0]
    mirrored = tmp_path / "mirrored.png"
    with Image.open(original) as opened:
        opened.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    result = runner.invoke(app, ["search", str(out), str(mirrored), "--top-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    (neighbour,) = json.loads(result.stdout)["queries"][0]["neighbours"]
    # The query is embedded as the index was (with its mirror image), so it meets its original.
    assert neighbour["path"] == str(original.absolute())
    assert neighbour["similarity"] > 0.999


@pytest.fixture(scope="module")
def shard_index(trained_model: Path, shapes_dir: Path, tmp_path_factory) -> Path:
    """An index of the 24 shapes read from tar shards."""
    folder = tmp_path_factory.mktemp("shard-search")
    shards = write_test_shards(shapes_dir, folder / "shards")
    out = folder / "ix"
    result = runner.invoke(app, ["index", str(trained_model), str(shards), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def first_picture(grid: Path) -> Image.Image:
    """The first picture of the first row of a saved grid of 128 px thumbnails.

    Its corner is one margin (10 px) in, below the title and row title lines (18 px each).
    """
    with Image.open(grid) as image:
        return image.convert("RGB").crop((10, 46, 138, 174))


def test_search__shard_member_query_is_found_and_drawn(
    shard_index: Path, shapes_dir: Path, tmp_path: Path
):
    first = json.loads((shard_index / "paths.jsonl").read_text().splitlines()[0])["path"]
    grid = tmp_path / "grid.png"
    result = runner.invoke(
        app, ["search", str(shard_index), first, "-k", "3", "--save", str(grid), "--json"]
    )
    assert result.exit_code == 0, result.output
    query = json.loads(result.stdout)["queries"][0]
    assert query["in_index"] is True
    assert first not in [n["path"] for n in query["neighbours"]]
    assert all(".tar:" in n["path"] for n in query["neighbours"])
    picture = first_picture(grid)
    assert len(picture.getcolors(maxcolors=1 << 16) or []) > 1  # Not the grey missing square.
    original = shapes_dir / first.partition(".tar:")[2]
    expected = load_thumbnail(original, 128)
    expected = expected.resize((128, 128), Image.Resampling.NEAREST)  # 32 px, enlarged x4.
    assert picture.tobytes() == expected.tobytes()


def test_search__shard_member_given_relative_is_in_the_index(shard_index: Path):
    first = json.loads((shard_index / "paths.jsonl").read_text().splitlines()[0])["path"]
    result = runner.invoke(app, ["search", str(shard_index), os.path.relpath(first), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queries"][0]["in_index"] is True


def test_search__shard_member_not_in_the_index_is_embedded(
    shard_index: Path, shapes_val_dir: Path, tmp_path: Path
):
    shards = write_test_shards(shapes_val_dir, tmp_path / "shards")
    member = str(index_shards(shards)[0][0])  # A held-out image, as embed names it.
    result = runner.invoke(app, ["search", str(shard_index), member, "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    query = json.loads(result.stdout)["queries"][0]
    assert query["in_index"] is False and len(query["neighbours"]) == 2
