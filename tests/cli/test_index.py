"""`simclr index` through Typer's CliRunner."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
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


def write_test_shards(shapes_dir: Path, out: Path) -> Path:
    """The 24 shapes as several small tar shards, written by `simclr shard`."""
    result = runner.invoke(
        app, ["shard", str(shapes_dir), "--out", str(out), "--shard-size", "10KB"]
    )
    assert result.exit_code == 0, result.output
    return out


def read_rows(index: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """Each row of an index by its path: its record and its embedding."""
    records = [json.loads(line) for line in (index / "paths.jsonl").read_text().splitlines()]
    embeddings = np.load(index / "embeddings.npy").astype(np.float32)
    return {r["path"]: (r, row) for r, row in zip(records, embeddings, strict=True)}


def test_index__shards_give_one_row_per_member_as_the_folder_does(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    shards = write_test_shards(shapes_dir, tmp_path / "shards")
    from_shards, from_folder = tmp_path / "shards.index", tmp_path / "folder.index"
    for source, out in ((shards, from_shards), (shapes_dir, from_folder)):
        result = runner.invoke(app, ["index", str(trained_model), str(source), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "Indexed 24 images (24 embedded)" in result.output
    shard_rows, folder_rows = read_rows(from_shards), read_rows(from_folder)
    assert len(shard_rows) == 24
    for path, (record, row) in shard_rows.items():
        shard, _, member = path.partition(".tar:")
        assert Path(shard + ".tar").parent == shards.resolve() and Path(shard).is_absolute()
        folder_record, folder_row = folder_rows[str(shapes_dir.resolve() / member)]
        assert (record["width"], record["height"]) == (
            folder_record["width"],
            folder_record["height"],
        )
        assert record["size"] == (Path(shard + ".tar")).stat().st_size
        np.testing.assert_allclose(row, folder_row, atol=2e-3)


def test_index__update_on_shards_keeps_rows_until_the_shard_changes(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    shards = write_test_shards(shapes_dir, tmp_path / "shards")
    out = tmp_path / "ix"
    arguments = ["index", str(trained_model), str(shards), "--out", str(out)]
    assert runner.invoke(app, arguments).exit_code == 0
    result = runner.invoke(app, [*arguments, "--update", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["images"], document["embedded"], document["kept"]) == (24, 0, 24)
    first = sorted(shards.glob("*.tar"))[0]
    members = sum(path.startswith(f"{first}:") for path in read_rows(out))
    later = first.stat().st_mtime + 10
    os.utime(first, (later, later))  # The shard is written again: its members change.
    result = runner.invoke(app, [*arguments, "--update", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert 0 < members < 24
    assert (document["embedded"], document["kept"], document["dropped"]) == (
        members,
        24 - members,
        members,
    )


def test_index__file_list_with_a_missing_file_indexes_the_rest(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    images = sorted((shapes_dir / "square").iterdir())[:2]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join([*(str(p) for p in images), str(tmp_path / "gone.png")]) + "\n")
    out = tmp_path / "ix"
    result = runner.invoke(
        app, ["index", str(trained_model), "--file-list", str(listed), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Indexed 2 images" in result.output
    assert "1 unreadable file skipped" in result.output and "gone.png" in result.output
    assert sorted(read_rows(out)) == sorted(str(p.resolve()) for p in images)


def test_index__no_inputs_and_no_file_list_is_a_usage_line(trained_model: Path, tmp_path: Path):
    result = runner.invoke(app, ["index", str(trained_model), "--out", str(tmp_path / "ix")])
    assert result.exit_code == 2 and "--file-list" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "ix").exists()


def test_index__shards_with_a_file_list_are_refused_in_one_line(
    trained_model: Path, shapes_dir: Path, tmp_path: Path
):
    shards = write_test_shards(shapes_dir, tmp_path / "shards")
    listed = tmp_path / "list.txt"
    listed.write_text(str(sorted((shapes_dir / "circle").iterdir())[0]) + "\n")
    out = tmp_path / "ix"
    result = runner.invoke(
        app,
        ["index", str(trained_model), str(shards), "--file-list", str(listed), "-o", str(out)],
    )
    assert result.exit_code == 2
    assert "--file-list cannot be combined with tar shards" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
