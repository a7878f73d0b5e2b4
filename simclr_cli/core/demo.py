"""The self-contained demo: generate shapes, pretrain briefly, and show that learning happened."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .choices import Stem
from .config import DemoConfig, PretrainConfig
from .data.files import find_labeled_images
from .data.synthetic import generate_shapes_dataset
from .eval.embed import extract_features
from .eval.knn import knn_accuracy
from .model.files import load_model
from .model.simclr import SimCLRModel, create_simclr_model
from .progress import ProgressCallback, ProgressEvent, null_progress
from .train.loop import PretrainResult, pretrain


@dataclass
class DemoResult:
    """Outcome of the demo.

    Attributes:
        pretrain: The pretraining run.
        pretrained: kNN top-1/top-5 of the pretrained encoder on the held-out images.
        random_init: The same for a randomly initialised encoder of the same architecture.
        num_train: Labelled images the kNN votes with.
        num_val: Held-out images scored.
        classes: Class names.
    """

    pretrain: PretrainResult
    pretrained: dict[str, float]
    random_init: dict[str, float]
    num_train: int
    num_val: int
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: both kNN results, the sizes, the classes and the run."""
        return {
            "pretrained": dict(self.pretrained),
            "random_init": dict(self.random_init),
            "num_train": self.num_train,
            "num_val": self.num_val,
            "classes": list(self.classes),
            "pretrain": self.pretrain.to_dict(),
        }


def knn_evaluate(
    model: SimCLRModel,
    *,
    train_dir: Path,
    val_dir: Path,
    k: int,
    progress: ProgressCallback = null_progress,
) -> dict[str, float]:
    """kNN accuracy of a model's backbone features, labels from class folders."""
    train_paths, train_labels, classes = find_labeled_images(train_dir)
    val_paths, val_labels, _ = find_labeled_images(val_dir)
    common: dict[str, Any] = {"metadata": model.metadata, "batch_size": 256, "progress": progress}
    train_features = extract_features(model.backbone, train_paths, task="features", **common)
    val_features = extract_features(model.backbone, val_paths, task="features", **common)
    return knn_accuracy(
        torch.from_numpy(train_features),
        torch.tensor(train_labels),
        torch.from_numpy(val_features),
        torch.tensor(val_labels),
        num_classes=len(classes),
        k=k,
    )


def run_demo(*, config: DemoConfig, progress: ProgressCallback = null_progress) -> DemoResult:
    """Generate a shapes dataset, pretrain on it, and compare kNN accuracy with random init.

    Args:
        config: Where to write and how long to train.
        progress: Progress callback.

    Returns:
        The pretraining result and both accuracies.
    """
    config.validate()
    out = Path(config.out)
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    progress(ProgressEvent("message", "demo", text=f"Generating shapes images in {data}"))
    generate_shapes_dataset(
        data / "train",
        images_per_class=config.images_per_class,
        size=config.image_size,
        seed=config.seed,
    )
    generate_shapes_dataset(
        data / "val",
        images_per_class=config.val_images_per_class,
        size=config.image_size,
        seed=config.seed + 1,
    )

    run = pretrain(
        config=PretrainConfig(
            data=data / "train",
            out=out / "run",
            backbone=config.backbone,
            stem=Stem(config.stem),
            image_size=config.image_size,
            batch_size=config.batch_size,
            max_steps=config.max_steps,
            time_budget=config.time_budget,
            temperature=config.temperature,
            seed=config.seed,
            force=True,
        ),
        progress=progress,
    )

    pretrained = load_model(run.model_path)
    torch.manual_seed(config.seed)
    random_model = create_simclr_model(
        backbone=config.backbone,
        stem=config.stem,
        image_size=config.image_size,
        metadata={"crop_fraction": pretrained.metadata.crop_fraction},
    )
    k = 20
    train_dir, val_dir = data / "train", data / "val"
    scores = knn_evaluate(pretrained, train_dir=train_dir, val_dir=val_dir, k=k, progress=progress)
    baseline = knn_evaluate(
        random_model, train_dir=train_dir, val_dir=val_dir, k=k, progress=progress
    )
    _, train_labels, classes = find_labeled_images(train_dir)
    _, val_labels, _ = find_labeled_images(val_dir)
    return DemoResult(run, scores, baseline, len(train_labels), len(val_labels), classes)
