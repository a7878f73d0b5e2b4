"""`simclr shard`, and reading its shards with embed and probe, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from tests.cli.test_json import check_keys

runner = CliRunner()


def test_shard__writes_shards_with_labels(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "shards"
    args = ["shard", str(shapes_dir), "--out", str(out), "--labels", "--shard-size", "10KB"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    check_keys("shard", document)
    assert document["images"] == 24 and len(document["shards"]) > 1
    assert document["classes"] == ["circle", "square", "stripes"]
    assert sorted(path.name for path in out.iterdir())[-1] == "shard-" + (
        f"{len(document['shards']) - 1:06d}.tar"
    )


def test_shard__never_overwrites(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "shards"
    assert runner.invoke(app, ["shard", str(shapes_dir), "--out", str(out)]).exit_code == 0
    before = {path: path.read_bytes() for path in out.iterdir()}
    result = runner.invoke(app, ["shard", str(shapes_dir), "--out", str(out), "--labels"])
    assert result.exit_code == 1
    assert "already holds shards" in result.output and "Traceback" not in result.output
    assert {path: path.read_bytes() for path in out.iterdir()} == before


def test_shard__bad_size_is_a_usage_line(shapes_dir: Path, tmp_path: Path):
    args = ["shard", str(shapes_dir), "--out", str(tmp_path / "s"), "--shard-size", "big"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0 and "1GB" in result.output
    assert not (tmp_path / "s").exists()


def test_embed__reads_shards(trained_model: Path, shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "shards"
    runner.invoke(app, ["shard", str(shapes_dir), "--out", str(out), "--shard-size", "10KB"])
    output = tmp_path / "embeddings.jsonl"
    result = runner.invoke(app, ["embed", str(trained_model), str(out), "--output", str(output)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 24
    assert all(".tar:" in row["path"] for row in rows)
    names = sorted(row["path"].split(".tar:")[1] for row in rows)
    assert names[0] == "circle/circle_00000.png"
    assert np.isfinite(np.array([row["embedding"] for row in rows])).all()


def test_embed__pattern_matching_nothing_is_one_line(trained_model: Path, tmp_path: Path):
    pattern = str(tmp_path / "shard-{000000..000003}.tar")
    result = runner.invoke(app, ["embed", str(trained_model), pattern])
    assert result.exit_code == 1
    assert "matches no file" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_probe__on_labelled_shards(trained_model: Path, shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "shards"
    runner.invoke(app, ["shard", str(shapes_dir), "--out", str(out), "--labels"])
    args = ["probe", str(trained_model), "--train", str(out), "--val-fraction", "0.25", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["classes"] == ["circle", "square", "stripes"]
    assert document["n_train"] + document["n_val"] == 24
