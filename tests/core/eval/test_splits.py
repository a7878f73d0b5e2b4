"""Checked class folders and seeded splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simclr_cli.core.data.synthetic import generate_shapes_dataset
from simclr_cli.core.errors import DataError
from simclr_cli.core.eval.splits import (
    find_classified_images,
    label_fraction_subset,
    load_train_val,
    split_per_class,
)


def test_label_fraction_subset__is_class_balanced_and_seeded():
    labels = np.repeat(np.arange(4), 50)
    first = label_fraction_subset(labels, fraction=0.1, seed=3)
    again = label_fraction_subset(labels, fraction=0.1, seed=3)
    other = label_fraction_subset(labels, fraction=0.1, seed=4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.bincount(labels[first]).tolist() == [5, 5, 5, 5]


def test_label_fraction_subset__keeps_one_image_of_a_small_class():
    labels = np.array([0] * 100 + [1] * 3)
    kept = label_fraction_subset(labels, fraction=0.01, seed=0)
    assert np.bincount(labels[kept]).tolist() == [1, 1]


def test_split_per_class__disjoint_and_covers_every_class():
    labels = np.repeat(np.arange(3), 10)
    kept, held = split_per_class(labels, fraction=0.2, seed=0)
    assert set(kept).isdisjoint(held) and len(kept) + len(held) == 30
    assert np.bincount(labels[held]).tolist() == [2, 2, 2]


def test_find_classified_images__empty_class_is_an_error(shapes_dir: Path, tmp_path: Path):
    root = generate_shapes_dataset(tmp_path / "d", images_per_class=2, classes=("circle", "ring"))
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="'empty' holds no images"):
        find_classified_images(root)


def test_find_classified_images__single_class_is_an_error(tmp_path: Path):
    root = generate_shapes_dataset(tmp_path / "d", images_per_class=2, classes=("circle",))
    with pytest.raises(DataError, match="single class"):
        find_classified_images(root)


def test_load_train_val__different_classes_is_an_error(shapes_dir: Path, tmp_path: Path):
    val = generate_shapes_dataset(tmp_path / "v", images_per_class=2, classes=("circle", "ring"))
    with pytest.raises(DataError, match="other classes than --train"):
        load_train_val(shapes_dir, val, val_fraction=0.2, seed=0)


def test_load_train_val__val_fraction_splits_train(shapes_dir: Path):
    train, val = load_train_val(shapes_dir, None, val_fraction=0.25, seed=0)
    assert len(train.paths) == 18 and len(val.paths) == 6
    assert set(train.paths).isdisjoint(val.paths)
