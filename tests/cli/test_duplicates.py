"""`simclr duplicates` through Typer's CliRunner."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from tests.cli.test_index import write_test_shards
from tests.cli.test_search import first_picture

runner = CliRunner()


@pytest.fixture(scope="module")
def index_folder(trained_model: Path, shapes_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """An index of the circles plus an exact copy of one of them, so one pair is certain."""
    root = tmp_path_factory.mktemp("duplicates")
    images = root / "images"
    shutil.copytree(shapes_dir / "circle", images)
    original = sorted(images.iterdir())[0]
    shutil.copy(original, images / "zz-copy.png")
    out = root / "ix"
    result = runner.invoke(app, ["index", str(trained_model), str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, original


def test_duplicates__json_groups_the_copy(index_folder):
    out, original = index_folder
    result = runner.invoke(app, ["duplicates", str(out), "--threshold", "0.999", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    first_group = [member["path"] for member in document["groups"][0]]
    assert str(original) in first_group and any("zz-copy" in p for p in first_group)
    assert document["images"] == 9 and document["threshold"] == 0.999


def test_duplicates__csv_gallery_and_outliers(index_folder, tmp_path: Path):
    out, _ = index_folder
    table, gallery = tmp_path / "groups.csv", tmp_path / "gallery.png"
    result = runner.invoke(
        app,
        [
            "duplicates",
            str(out),
            "-t",
            "0.999",
            "-o",
            str(table),
            "--save",
            str(gallery),
            "--outliers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "groups of near duplicates" in result.output and "farthest" in result.output
    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[0]["group"] == "1" and float(rows[0]["similarity"]) == 1.0
    with Image.open(gallery) as image:
        assert image.format == "PNG"


@pytest.mark.parametrize("threshold", ["0", "1.2"])
def test_duplicates__threshold_outside_0_1_is_a_usage_error(index_folder, threshold: str):
    out, _ = index_folder
    result = runner.invoke(app, ["duplicates", str(out), "--threshold", threshold])
    assert result.exit_code == 2 and "(0, 1]" in result.output


def test_duplicates__damaged_index_is_one_line(index_folder, tmp_path: Path):
    out, _ = index_folder
    damaged = tmp_path / "ix"
    shutil.copytree(out, damaged)
    (damaged / "paths.jsonl").write_text("")
    table = tmp_path / "groups.csv"
    result = runner.invoke(app, ["duplicates", str(damaged), "--output", str(table)])
    assert result.exit_code == 1 and "damaged" in result.output and "--force" in result.output
    assert not table.exists()


def test_duplicates__gallery_of_a_shard_index_draws_the_members(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    shards = write_test_shards(shapes_dir / "circle", tmp_path / "shards")
    out = tmp_path / "ix"
    result = runner.invoke(app, ["index", str(trained_model), str(shards), "--out", str(out)])
    assert result.exit_code == 0, result.output
    gallery = tmp_path / "gallery.png"
    result = runner.invoke(
        app, ["duplicates", str(out), "--threshold", "0.01", "--save", str(gallery), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["groups"][0][0]["path"].count(".tar:") == 1
    assert len(first_picture(gallery).getcolors(maxcolors=1 << 16) or []) > 1
