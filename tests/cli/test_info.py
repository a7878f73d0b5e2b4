"""`simclr info` through Typer's CliRunner."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.model.classifier import create_classifier, save_classifier
from simclr_cli.core.model.files import load_model

runner = CliRunner()


def test_info__table_shows_metadata_and_hash(trained_model: Path):
    result = runner.invoke(app, ["info", str(trained_model)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(trained_model.read_bytes()).hexdigest()
    for expected in ("encoder", "test_resnet (stem cifar)", "32 px", "2 steps", digest):
        assert expected in result.output


def test_info__json_is_parseable(trained_model: Path):
    result = runner.invoke(app, ["info", str(trained_model), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kind"] == "encoder" and data["metadata"]["backbone"] == "test_resnet"
    assert data["parameters"]["total"] == sum(
        p.numel() for p in load_model(trained_model).parameters()
    )


def test_info__classifier_says_it_is_a_classifier(trained_model: Path, tmp_path: Path):
    path = tmp_path / "classifier.safetensors"
    save_classifier(path, create_classifier(load_model(trained_model), classes=["cat", "dog"]))
    result = runner.invoke(app, ["info", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "classifier" in result.output and "2: cat, dog" in result.output


def test_info__bad_input_is_one_line_error(tmp_path: Path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path, expected in [
        (tmp_path / "missing.safetensors", "does not exist"),
        (text, "not a safetensors"),
        (plain, "without simclr metadata"),
    ]:
        result = runner.invoke(app, ["info", str(path)])
        assert result.exit_code == 1 and expected in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
