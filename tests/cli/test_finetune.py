"""`simclr finetune` and `simclr predict` through Typer's CliRunner."""

from __future__ import annotations

import csv
import json
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
