"""`simclr export` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.model.files import load_model

runner = CliRunner()


def test_export__timm_json_and_load_back(trained_model_imagenet_stem: Path, tmp_path: Path):
    out = tmp_path / "timm"
    args = ["export", str(trained_model_imagenet_stem), "--format", "timm", "--out", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["format"] == "timm" and data["max_abs_difference"] <= data["tolerance"]
    assert "local-dir:" in data["load_hint"]
    network = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = load_model(trained_model_imagenet_stem).backbone(images)
        torch.testing.assert_close(network(images), reference)


def test_export__torchscript_prints_how_to_load(trained_model: Path, tmp_path: Path):
    out = tmp_path / "ts"
    args = ["export", str(trained_model), "-f", "torchscript", "-o", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Exported torchscript" in result.output and "torch.jit.load(" in result.output
    assert (out / "model.pt").is_file() and (out / "README.md").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--force" in again.output
    assert runner.invoke(app, [*args, "--force", "--quiet"]).exit_code == 0


def test_export__cifar_stem_refused_for_timm(trained_model: Path, tmp_path: Path):
    out = tmp_path / "timm"
    result = runner.invoke(app, ["export", str(trained_model), "-f", "timm", "-o", str(out)])
    assert result.exit_code == 1 and "CIFAR stem" in result.output
    assert "--stem imagenet" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_export__bad_input(tmp_path: Path):
    missing = tmp_path / "missing.safetensors"
    result = runner.invoke(app, ["export", str(missing), "-f", "onnx", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["export", str(missing), "-f", "tflite", "-o", str(tmp_path)])
    assert result.exit_code == 2
