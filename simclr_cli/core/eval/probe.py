"""``simclr probe``: how good are an encoder's features? Linear probe and weighted kNN.

Features are extracted once per split with the model's deterministic preprocessing and kept in
memory; both evaluations then run on them. Baselines (a randomly initialised backbone, or local
supervised timm weights) go through the same code, so their figures compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .._runtime import resolve_device, seed_everything
from .._threads import use_idle_cores
from ..augment.eval import default_crop_fraction
from ..config import ProbeConfig
from ..data.checks import BadImage, describe_bad_images, write_skipped
from ..errors import DataError
from ..model.files import load_model
from ..model.simclr import SimCLRModel, create_simclr_model
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .embed import extract_kept_features
from .knn import knn_accuracy, topk_accuracy
from .linear import fit_linear_probe
from .splits import load_train_val, report_skipped_members


@dataclass
class ProbeResult:
    """Accuracies of one encoder on a labelled validation set.

    Attributes:
        linear: Linear-probe ``{"top1", "top5"}`` as fractions in [0, 1].
        knn: Weighted kNN ``{"top1", "top5"}``.
        n_train: Labelled training images.
        n_val: Validation images scored.
        classes: Class names, in label order.
        model: What was probed (a file, or a baseline description).
        l2: The linear probe's penalty, chosen on a held-out slice of the training features.
        feature_dim: Size of the features.
        skipped: Images left out because they could not be read (both splits).
    """

    linear: dict[str, float]
    knn: dict[str, float]
    n_train: int
    n_val: int
    classes: list[str]
    model: str
    l2: float
    feature_dim: int
    skipped: list[BadImage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: linear, knn, n_train, n_val and classes."""
        return {
            "linear": dict(self.linear),
            "knn": dict(self.knn),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "classes": list(self.classes),
        }


def create_probe_model(config: ProbeConfig, device: torch.device) -> tuple[SimCLRModel, str]:
    """The encoder a probe evaluates: the model file, or a baseline backbone.

    Returns:
        The model in eval mode and a short description of it.

    Raises:
        ModelFileError: When the model file is not an encoder.
        BackboneError: For an unknown backbone or weights that do not fit.
    """
    if config.model is not None:
        return load_model(config.model, device=device), str(config.model)
    assert config.backbone is not None  # validate(): a baseline names its backbone.
    seed_everything(config.seed)
    model = create_simclr_model(
        backbone=config.backbone,
        stem=config.stem.value,
        image_size=config.image_size,
        init_weights=config.init_weights,
        metadata={"crop_fraction": default_crop_fraction(config.image_size)},
    )
    origin = "random init" if config.random_init else f"weights {config.init_weights}"
    description = f"{config.backbone} ({model.metadata.stem} stem, {origin})"
    return model.to(device).eval(), description


def probe(*, config: ProbeConfig, progress: ProgressCallback = null_progress) -> ProbeResult:
    """Evaluate an encoder's frozen features with a linear probe and a weighted kNN.

    Args:
        config: The encoder (or baseline), the folders and the kNN settings.
        progress: Receives one ``features`` task per split and a message per stage.

    Returns:
        Top-1 and top-5 accuracies of both evaluations on the validation images.

    Raises:
        SimCLRError: For bad folders (empty or single class, classes that differ) or model files.
    """
    config.validate()
    device = resolve_device(config.device)
    use_idle_cores(device)
    train, val = load_train_val(
        config.train, config.val, val_fraction=config.val_fraction, seed=config.seed
    )
    report_skipped_members(train, val, progress=progress, task="probe")
    model, description = create_probe_model(config, device)

    # Features of both splits, once; the evaluations below reuse them.
    common: dict[str, Any] = {
        "metadata": model.metadata,
        "batch_size": config.batch_size,
        "workers": config.workers,
        "device": device,
        "progress": progress,
        "task": "features",
    }
    # Unreadable files are left out (or stop the probe, under fail) with their labels.
    common["on_bad_image"] = config.on_bad_image
    train_kept = extract_kept_features(model.backbone, train.paths, **common)
    val_kept = extract_kept_features(model.backbone, val.paths, **common)
    skipped = [*train_kept.bad, *val_kept.bad]
    if config.skipped is not None:
        write_skipped(skipped, config.skipped)
    for name, kept in (("training", train_kept), ("validation", val_kept)):
        if not kept.kept:
            raise DataError(
                f"none of the {name} images could be read ({describe_bad_images(kept.bad)}); "
                "check the files"
            )
    train_features = torch.from_numpy(train_kept.features)
    val_features = torch.from_numpy(val_kept.features)
    train_labels = torch.tensor([train.labels[i] for i in train_kept.kept])
    val_labels = torch.tensor([val.labels[i] for i in val_kept.kept])
    num_classes = len(train.classes)

    # Linear probe on standardised features, penalty chosen on a slice of train.
    progress(ProgressEvent("message", "probe", text="Fitting the linear probe (L-BFGS)"))
    linear_probe = fit_linear_probe(
        train_features, train_labels, num_classes=num_classes, seed=config.seed, device=device
    )
    scores = linear_probe.scores(val_features.to(device)).cpu()
    linear = {
        "top1": topk_accuracy(scores, val_labels, 1),
        "top5": topk_accuracy(scores, val_labels, 5),
    }

    # Weighted kNN on cosine similarity.
    knn = knn_accuracy(
        train_features.to(device),
        train_labels.to(device),
        val_features.to(device),
        val_labels.to(device),
        num_classes=num_classes,
        k=config.k,
        temperature=config.knn_temperature,
    )
    return ProbeResult(
        linear=linear,
        knn=knn,
        n_train=len(train_kept.kept),
        n_val=len(val_kept.kept),
        classes=train.classes,
        model=description,
        l2=linear_probe.l2,
        feature_dim=int(train_features.shape[1]),
        skipped=skipped,
    )
