"""`simclr probe` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from simclr_cli.cli.app import app
from simclr_cli.core.config import ProbeConfig
from simclr_cli.core.data.files import find_labeled_images
from simclr_cli.core.data.synthetic import generate_shapes_dataset
from simclr_cli.core.eval.embed import extract_features
from simclr_cli.core.eval.linear import fit_linear_probe
from simclr_cli.core.model.files import load_model

runner = CliRunner()


def test_probe__json_has_the_documented_keys(trained_model: Path, shapes_dir, shapes_val_dir):
    result = runner.invoke(
        app,
        [
            "probe",
            str(trained_model),
            "--train",
            str(shapes_dir),
            "--val",
            str(shapes_val_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"linear", "knn", "n_train", "n_val", "classes"}
    assert report["n_train"] == 24 and report["n_val"] == 12
    assert report["classes"] == ["circle", "square", "stripes"]
    for name in ("linear", "knn"):
        assert 0.0 <= report[name]["top1"] <= report[name]["top5"] <= 1.0
    # Three classes: every label is in the top 5.
    assert report["linear"]["top5"] == 1.0


def test_probe__table_without_val_uses_val_fraction(trained_model: Path, shapes_dir: Path):
    result = runner.invoke(
        app, ["probe", str(trained_model), "--train", str(shapes_dir), "--val-fraction", "0.25"]
    )
    assert result.exit_code == 0, result.output
    assert "linear probe" in result.output and "weighted kNN" in result.output
    assert "6 val images" in result.output.replace("\n", " ")


@pytest.mark.slow
def test_probe__random_init_baseline(shapes_dir: Path, shapes_val_dir: Path):
    result = runner.invoke(
        app,
        [
            "probe",
            "--backbone",
            "test_resnet",
            "--random-init",
            "--image-size",
            "32",
            "--train",
            str(shapes_dir),
            "--val",
            str(shapes_val_dir),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_val"] == 12


@pytest.mark.slow
def test_probe__linear_agrees_with_sklearn_on_model_features(trained_model: Path, tmp_path: Path):
    sklearn = pytest.importorskip("sklearn")
    del sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train_dir = generate_shapes_dataset(tmp_path / "train", images_per_class=40, seed=5)
    val_dir = generate_shapes_dataset(tmp_path / "val", images_per_class=40, seed=6)
    model = load_model(trained_model)
    train_paths, train_labels, _ = find_labeled_images(train_dir)
    val_paths, val_labels, _ = find_labeled_images(val_dir)
    train_x = extract_features(model.backbone, train_paths, metadata=model.metadata)
    val_x = extract_features(model.backbone, val_paths, metadata=model.metadata)
    probe = fit_linear_probe(train_x, train_labels, num_classes=6)
    ours = float(
        (probe.scores(torch.from_numpy(val_x)).argmax(1).numpy() == np.array(val_labels)).mean()
    )
    scaler = StandardScaler().fit(train_x)
    reference = LogisticRegression(C=1.0 / (probe.l2 * len(train_labels)), max_iter=10_000)
    reference.fit(scaler.transform(train_x), train_labels)
    theirs = reference.score(scaler.transform(val_x), val_labels)
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_probe__different_val_classes_is_one_line_error(trained_model, shapes_dir, tmp_path):
    val = generate_shapes_dataset(tmp_path / "v", images_per_class=2, classes=("circle", "ring"))
    result = runner.invoke(
        app, ["probe", str(trained_model), "--train", str(shapes_dir), "--val", str(val)]
    )
    assert result.exit_code == 1 and "other classes than --train" in result.output
    assert "Traceback" not in result.output


def test_probe__no_model_and_no_baseline_is_a_usage_error(shapes_dir: Path):
    result = runner.invoke(app, ["probe", "--train", str(shapes_dir)])
    assert result.exit_code == 2 and "--random-init" in result.output


def test_probe_config__model_and_baseline_exclude_each_other(trained_model, shapes_dir):
    from simclr_cli.core.errors import ConfigError

    config = ProbeConfig(train=shapes_dir, model=trained_model, random_init=True)
    with pytest.raises(ConfigError, match="not both"):
        config.validate()


def test_probe__empty_class_and_single_class_are_one_line_errors(trained_model, tmp_path):
    empty = generate_shapes_dataset(tmp_path / "e", images_per_class=2, classes=("circle", "ring"))
    (empty / "zebra").mkdir()
    result = runner.invoke(app, ["probe", str(trained_model), "--train", str(empty)])
    assert result.exit_code == 1 and "'zebra' holds no images" in result.output
    single = generate_shapes_dataset(tmp_path / "s", images_per_class=2, classes=("circle",))
    result = runner.invoke(app, ["probe", str(trained_model), "--train", str(single)])
    assert result.exit_code == 1 and "single class" in result.output
