"""`simclr finetune` and `simclr predict` through Typer's CliRunner."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.model.classifier import load_classifier

runner = CliRunner()


@pytest.fixture(scope="module")
def classifier_file(trained_model: Path, shapes_dir, shapes_val_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clf") / "classifier.safetensors"
    result = runner.invoke(
        app,
        [
            "finetune",
            str(trained_model),
            "--train",
            str(shapes_dir),
            "--val",
            str(shapes_val_dir),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--from-head-layer",
            "1",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["epoch"] for r in report["epochs"]] == [1, 2]
    assert 0.0 <= report["top1"] <= report["top5"] == 1.0
    return out


def test_finetune__writes_a_classifier_with_class_names(classifier_file: Path):
    model = load_classifier(classifier_file)
    assert model.metadata.kind == "classifier" and model.from_head_layer == 1
    assert model.classes == ["circle", "square", "stripes"]


def test_finetune__freeze_backbone_and_label_fraction(trained_model, shapes_dir, tmp_path):
    out = tmp_path / "c.safetensors"
    result = runner.invoke(
        app,
        [
            "finetune",
            str(trained_model),
            "--train",
            str(shapes_dir),
            "--val-fraction",
            "0.25",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--freeze-backbone",
            "--label-fraction",
            "0.5",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # 6 train images per class after the 25% val split, half of them kept: 3 per class.
    assert report["n_train"] == 9 and report["n_val"] == 6


def test_finetune__existing_output_needs_force(trained_model, shapes_dir, classifier_file):
    result = runner.invoke(
        app,
        ["finetune", str(trained_model), "--train", str(shapes_dir), "--out", str(classifier_file)],
    )
    assert result.exit_code == 1 and "--force" in result.output


def test_finetune__classifier_given_as_encoder_is_one_line_error(classifier_file, shapes_dir):
    result = runner.invoke(app, ["finetune", str(classifier_file), "--train", str(shapes_dir)])
    assert result.exit_code == 1 and "is a classifier" in result.output
    assert "Traceback" not in result.output


def test_probe__classifier_given_as_encoder_is_one_line_error(classifier_file, shapes_dir):
    result = runner.invoke(app, ["probe", str(classifier_file), "--train", str(shapes_dir)])
    assert result.exit_code == 1 and "is a classifier" in result.output


def test_predict__table_and_json(classifier_file: Path, shapes_val_dir: Path):
    image = sorted((shapes_val_dir / "square").iterdir())[0]
    table = runner.invoke(app, ["predict", str(classifier_file), str(image)])
    assert table.exit_code == 0, table.output
    assert "probability" in table.output
    result = runner.invoke(app, ["predict", str(classifier_file), str(image), "-k", "2", "--json"])
    document = json.loads(result.stdout)
    assert document["top_k"] == 2 and document["classes"] == ["circle", "square", "stripes"]
    predictions = document["images"][0]["predictions"]
    assert document["images"][0]["path"] == str(image)
    assert len(predictions) == 2 and predictions[0]["probability"] >= predictions[1]["probability"]
    assert {p["class"] for p in predictions} <= {"circle", "square", "stripes"}


def test_predict__csv_and_jsonl_outputs(classifier_file, shapes_val_dir, tmp_path):
    for name in ("p.csv", "p.jsonl"):
        out = tmp_path / name
        result = runner.invoke(
            app, ["predict", str(classifier_file), str(shapes_val_dir), "-o", str(out)]
        )
        assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert len(rows) == 12 * 3 and rows[0]["rank"] == "1"
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len(json.loads(lines[0])["predictions"]) == 3


def test_predict__encoder_given_as_classifier_is_one_line_error(trained_model, shapes_dir):
    result = runner.invoke(app, ["predict", str(trained_model), str(shapes_dir)])
    assert result.exit_code == 1 and "is an encoder, not a classifier" in result.output


def _with_a_bad_file(source: Path, target: Path) -> Path:
    """A copy of a labelled folder with a text file named .png in its first class."""
    shutil.copytree(source, target)
    (target / "circle" / "notes.png").write_text("not an image")
    return target


def test_predict__bad_and_missing_files_are_skipped_and_listed(
    classifier_file: Path, shapes_val_dir: Path, tmp_path: Path
):
    images = sorted((shapes_val_dir / "square").iterdir())[:2]
    (tmp_path / "notes.png").write_text("not an image")
    file_list = tmp_path / "list.txt"
    file_list.write_text("notes.png\ngone.png\n")
    listed = tmp_path / "skipped.txt"
    arguments = ["predict", str(classifier_file), *map(str, images), "--file-list", str(file_list)]
    result = runner.invoke(app, [*arguments, "--skipped", str(listed)])
    assert result.exit_code == 0, result.output
    assert "2 unreadable files skipped" in result.stderr
    assert [line.split("\t")[0] for line in listed.read_text().splitlines()] == [
        str(tmp_path / "gone.png"),
        str(tmp_path / "notes.png"),
    ]
    failed = runner.invoke(app, [*arguments, "--on-bad-image", "fail"])
    assert failed.exit_code == 1 and "gone.png: file not found" in failed.output
    assert "Traceback" not in failed.output


def test_finetune__bad_file_is_skipped_or_fails(
    trained_model: Path, shapes_dir: Path, shapes_val_dir: Path, tmp_path: Path
):
    train = _with_a_bad_file(shapes_dir, tmp_path / "train")
    common = [
        "finetune",
        str(trained_model),
        *["--train", str(train), "--val", str(shapes_val_dir), "--epochs", "1"],
        *["--batch-size", "8", "--workers", "0"],
    ]
    listed = tmp_path / "skipped.txt"
    result = runner.invoke(
        app, [*common, "--out", str(tmp_path / "a.safetensors"), "--skipped", str(listed)]
    )
    assert result.exit_code == 0, result.output
    assert listed.read_text().startswith(str(train / "circle" / "notes.png") + "\t")
    failed = runner.invoke(
        app, [*common, "--out", str(tmp_path / "b.safetensors"), "--on-bad-image", "fail"]
    )
    assert failed.exit_code == 1 and "notes.png: not an image file" in failed.output
    assert "Traceback" not in failed.output


def test_probe__bad_file_is_skipped_and_counted(
    trained_model: Path, shapes_dir: Path, shapes_val_dir: Path, tmp_path: Path
):
    train = _with_a_bad_file(shapes_dir, tmp_path / "train")
    result = runner.invoke(
        app,
        [
            "probe",
            str(trained_model),
            *["--train", str(train), "--val", str(shapes_val_dir)],
            *["--batch-size", "8", "--workers", "0", "--k", "5", "-q"],
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 unreadable file skipped" in result.stderr and "notes.png" in result.stderr
