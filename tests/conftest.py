"""Shared fixtures: tiny image folders and a tiny trained model, made once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels are tested on the CPU by Triton's interpreter. Triton reads
# TRITON_INTERPRET when it is first imported (timm imports it), so it is set before anything else.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from simclr_cli.core.config import PretrainConfig
from simclr_cli.core.data.synthetic import generate_shapes_dataset
from simclr_cli.core.train.loop import pretrain

TINY_BACKBONE = "test_resnet"


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests cache file indexes in a folder of their own, never in the user's cache."""
    folder = tmp_path_factory.mktemp("simclr_cache")
    previous = os.environ.get("SIMCLR_CACHE_DIR")
    os.environ["SIMCLR_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("SIMCLR_CACHE_DIR", None)
    else:
        os.environ["SIMCLR_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled folder: 3 shape classes x 8 images of 32 px."""
    root = tmp_path_factory.mktemp("shapes")
    return generate_shapes_dataset(
        root, images_per_class=8, size=32, seed=0, classes=("circle", "square", "stripes")
    )


@pytest.fixture(scope="session")
def shapes_val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out images of the same classes as ``shapes_dir``."""
    root = tmp_path_factory.mktemp("shapes_val")
    return generate_shapes_dataset(
        root, images_per_class=4, size=32, seed=1, classes=("circle", "square", "stripes")
    )


def tiny_config(data: Path, out: Path, **changes: object) -> PretrainConfig:
    """A pretraining config that runs in a second or two on a CPU."""
    settings: dict[str, object] = {
        "data": data,
        "out": out,
        "backbone": TINY_BACKBONE,
        "image_size": 32,
        "batch_size": 8,
        "max_steps": 2,
        "workers": 0,
        "log_every": 1,
        "seed": 0,
    }
    settings.update(changes)
    return PretrainConfig(**settings)


@pytest.fixture(scope="session")
def trained_model(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model.safetensors of a 2-step run on ``shapes_dir``."""
    out = tmp_path_factory.mktemp("run") / "run"
    return pretrain(config=tiny_config(shapes_dir, out)).model_path


@pytest.fixture(scope="session")
def trained_model_imagenet_stem(shapes_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``trained_model`` but with timm's own stem, so that timm can rebuild it (export)."""
    out = tmp_path_factory.mktemp("run_imagenet_stem") / "run"
    return pretrain(config=tiny_config(shapes_dir, out, stem="imagenet")).model_path
