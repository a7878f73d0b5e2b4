"""``simclr finetune``: train a classifier on a pretrained encoder with labelled folders.

Two protocols of the SimCLR papers: fine-tuning the backbone together with a linear classifier
(optionally from the first layer of the projection head, as SimCLR v2 does), and linear
evaluation with ``freeze_backbone``, where only the classifier learns. ``label_fraction`` keeps a
class-balanced, seeded share of the labels (the semi-supervised protocol: 1% or 10%).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, v2

from .._amp import StepOutcome, backward_and_step, create_grad_scaler
from .._io import prepare_output
from .._runtime import autocast, resolve_device, resolve_precision, seed_everything, seed_worker
from .._threads import default_workers, use_idle_cores
from ..choices import BadImagePolicy
from ..config import FinetuneConfig
from ..constants import SMALL_IMAGE_SIZE
from ..data.checks import BadImage, bad_image, write_skipped
from ..data.files import ImageSource, load_rgb
from ..errors import DataError, ImageDecodeError
from ..model.classifier import ClassifierModel, create_classifier, save_classifier
from ..model.files import load_model
from ..model.simclr import ModelMetadata
from ..progress import ProgressCallback, ProgressEvent, null_progress
from ..schedule import learning_rate_at
from .embed import eval_transform_for, refusal
from .knn import topk_accuracy
from .splits import label_fraction_subset, load_train_val, report_skipped_members

#: Learning rate per 256 images of batch: the classifier alone, and the whole network.
BASE_LEARNING_RATE = {"frozen": 0.1, "full": 0.05}


@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes:
        classifier_path: The saved ``classifier.safetensors``.
        history: One record per epoch: epoch, loss, top1, top5 (val accuracies in [0, 1]).
        top1: Validation top-1 after the last epoch.
        top5: Validation top-5 after the last epoch.
        n_train: Labelled images trained on (after ``label_fraction``).
        n_val: Validation images.
        classes: Class names.
        seconds: Wall time of training and evaluation.
        nonfinite_steps: Steps whose update was skipped for a non-finite loss or gradient.
        scaler_skipped_steps: Steps whose update the fp16 loss scaler skipped (its scaled
            gradients overflowed while the loss was finite).
        skipped: Unreadable images left out (training and validation).
    """

    classifier_path: Path
    history: list[dict[str, float]] = field(default_factory=list)
    top1: float = 0.0
    top5: float = 0.0
    n_train: int = 0
    n_val: int = 0
    classes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    nonfinite_steps: int = 0
    scaler_skipped_steps: int = 0
    skipped: list[BadImage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {
            "classifier": str(self.classifier_path),
            "top1": self.top1,
            "top5": self.top5,
            "epochs": self.history,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "classes": self.classes,
            "seconds": round(self.seconds, 2),
            "nonfinite_steps": self.nonfinite_steps,
            "scaler_skipped_steps": self.scaler_skipped_steps,
        }


class LabeledDataset(Dataset):
    """Images with integer labels, through a transform.

    An unreadable file raises, or with ``skip_bad`` comes out as a ``BadImage`` in place of the
    image (``collate_labeled`` leaves it out of the batch).

    Args:
        paths: Image files, or the image members of tar shards (a ``ShardIndex``).
        labels: One label per file.
        transform: From a PIL image to a tensor (3, S, S).
        skip_bad: Return unreadable files as ``BadImage`` instead of raising.
    """

    def __init__(
        self,
        paths: Sequence[ImageSource],
        labels: Sequence[int],
        transform: Callable,
        *,
        skip_bad: bool = False,
    ):
        # A shard index stays flat arrays, which the loader workers share without copying.
        self.paths = list(paths) if isinstance(paths, list | tuple) else paths
        self.labels = list(labels)
        self.transform = transform
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | BadImage, int]:
        try:
            return self.transform(load_rgb(self.paths[index])), self.labels[index]
        except ImageDecodeError as error:
            if not self.skip_bad:
                raise
            # Returned, not raised: a loader worker would turn our error into a RuntimeError.
            return bad_image(error), self.labels[index]


def collate_labeled(
    samples: list[tuple[torch.Tensor | BadImage, int]],
) -> tuple[torch.Tensor, torch.Tensor, list[BadImage]]:
    """Stack the readable images (B, 3, S, S) and their labels (B,); list the bad files."""
    good = [(image, label) for image, label in samples if isinstance(image, torch.Tensor)]
    bad = [image for image, _ in samples if isinstance(image, BadImage)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.int64), bad
    images = torch.stack([image for image, _ in good])
    return images, torch.tensor([label for _, label in good], dtype=torch.int64), bad


def create_supervised_transform(metadata: ModelMetadata) -> v2.Compose:
    """Standard supervised augmentation at the model's image size.

    Small images (64 px and below, CIFAR-like) get a padded random crop and a flip, as in
    supervised CIFAR training; larger ones a random resized crop and a flip, as on ImageNet.
    """
    size = metadata.image_size
    if size <= SMALL_IMAGE_SIZE:
        crop: v2.Transform = v2.Compose(
            [
                v2.Resize(size, antialias=True),
                v2.CenterCrop(size),
                v2.RandomCrop(size, padding=size // 8, padding_mode="reflect"),
            ]
        )
    else:
        crop = v2.RandomResizedCrop(size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return v2.Compose(
        [
            crop,
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(metadata.mean), list(metadata.std)),
        ]
    )


def classifier_path_for(config: FinetuneConfig) -> Path:
    """Where the classifier goes: ``--out``, else ``classifier.safetensors`` beside the model."""
    return config.out if config.out is not None else config.model.parent / "classifier.safetensors"


@torch.no_grad()
def evaluate_classifier(
    model: ClassifierModel,
    loader: DataLoader,
    *,
    device: torch.device,
    autocast_context: Any,
    skipped: dict[str, BadImage] | None = None,
    fail: bool = False,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of a classifier over a loader of (images, labels, bad files).

    Args:
        model: The classifier.
        loader: Batches of ``collate_labeled``.
        device: Where to run.
        autocast_context: The precision context of the forward pass.
        skipped: Collects the unreadable files met, by path.
        fail: Raise at the first unreadable file (``--on-bad-image fail``).

    Raises:
        ImageDecodeError: For an unreadable file, with ``fail``.
        DataError: When no image of the loader could be read.
    """
    model.eval()
    scores, labels = [], []
    for images, targets, bad in loader:
        if bad and fail:
            raise refusal(bad[0])
        if skipped is not None:
            skipped.update((item.path, item) for item in bad)
        if not len(targets):
            continue
        with autocast_context:
            scores.append(model(images.to(device)).float().cpu())
        labels.append(targets)
    if not scores:
        raise DataError("none of the validation images could be read; check the files")
    all_scores, all_labels = torch.cat(scores), torch.cat(labels)
    return {
        "top1": topk_accuracy(all_scores, all_labels, 1),
        "top5": topk_accuracy(all_scores, all_labels, 5),
    }


def finetune(
    *, config: FinetuneConfig, progress: ProgressCallback = null_progress
) -> FinetuneResult:
    """Fine-tune (or linearly evaluate) an encoder on labelled folders and save the classifier.

    Args:
        config: Model, folders and training settings.
        progress: One ``finetune`` task of epochs x steps; each epoch's record carries val
            top-1/top-5.

    Returns:
        The saved classifier's path and the per-epoch history.

    Raises:
        SimCLRError: For bad folders, a model file that is not an encoder, or an existing output.
    """
    # Check everything before the first step.
    config.validate()
    device = resolve_device(config.device)
    use_idle_cores(device)
    precision = resolve_precision(config.precision, device)
    encoder = load_model(config.model, device="cpu")
    out = classifier_path_for(config)
    prepare_output(out, force=config.force, folder=False, create=False, name="classifier file")
    train, val = load_train_val(
        config.train, config.val, val_fraction=config.val_fraction, seed=config.seed
    )
    report_skipped_members(train, val, progress=progress, task="finetune")
    train = train.subset(
        label_fraction_subset(train.labels, fraction=config.label_fraction, seed=config.seed)
    )
    seed_everything(config.seed)
    model = create_classifier(
        encoder, classes=train.classes, from_head_layer=config.from_head_layer
    ).to(device)

    # Parameters that learn: the classifier alone, or everything up to it.
    if config.freeze_backbone:
        for parameter in [*model.backbone.parameters(), *model.head.parameters()]:
            parameter.requires_grad_(False)
        trainable = list(model.classifier.parameters())
        base = BASE_LEARNING_RATE["frozen"]
    else:
        used_head = model.head.blocks[: config.from_head_layer]
        trainable = [
            *model.backbone.parameters(),
            *used_head.parameters(),
            *model.classifier.parameters(),
        ]
        base = BASE_LEARNING_RATE["full"]
    peak_lr = config.learning_rate or base * config.batch_size / 256
    optimizer = torch.optim.SGD(
        trainable, lr=peak_lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )
    # fp16 scales the loss so that small gradients do not flush to zero (see _amp.py).
    scaler = create_grad_scaler(precision, device)
    outcomes = dict.fromkeys(StepOutcome, 0)

    # Data: supervised augmentation for training, the model's deterministic view for val.
    workers = default_workers() if config.workers is None else config.workers
    generator = torch.Generator().manual_seed(config.seed)
    fail = config.on_bad_image is BadImagePolicy.fail
    skipped: dict[str, BadImage] = {}  # Met again every epoch; listed once.
    train_loader = DataLoader(
        LabeledDataset(
            train.paths,
            train.labels,
            create_supervised_transform(model.metadata),
            skip_bad=True,
        ),
        collate_fn=collate_labeled,
        batch_size=min(config.batch_size, len(train.paths)),
        shuffle=True,
        drop_last=len(train.paths) > config.batch_size,
        num_workers=workers,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=workers > 0,
    )
    val_loader = DataLoader(
        LabeledDataset(val.paths, val.labels, eval_transform_for(model.metadata), skip_bad=True),
        collate_fn=collate_labeled,
        batch_size=256,
        num_workers=workers,
    )

    # The training loop: cosine decay over all steps, an evaluation after every epoch.
    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    progress(ProgressEvent("start", "finetune", total=total_steps))
    history: list[dict[str, float]] = []
    step = 0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        if config.freeze_backbone:
            # Frozen layers keep their batch-norm statistics: the paper's linear evaluation.
            model.backbone.eval()
            model.head.eval()
        epoch_loss, epoch_batches = 0.0, 0
        for images, labels, bad in train_loader:
            if bad and fail:
                raise refusal(bad[0])
            skipped.update((item.path, item) for item in bad)
            if not len(labels):
                continue  # Every file of the batch was unreadable (listed).
            lr = learning_rate_at(step, total_steps=total_steps, warmup_steps=0, peak=peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(precision, device):
                logits = model(images.to(device))
            loss = F.cross_entropy(logits.float(), labels.to(device))
            # A non-finite loss or gradient (or an fp16 overflow) skips the update.
            outcome = backward_and_step(
                loss, optimizer=optimizer, scaler=scaler, parameters=trainable
            )
            outcomes[outcome] += 1
            step += 1
            epoch_loss += loss.item()
            epoch_batches += 1
            progress(ProgressEvent("advance", "finetune", total=total_steps, completed=step))
        accuracy = evaluate_classifier(
            model,
            val_loader,
            device=device,
            autocast_context=autocast(precision, device),
            skipped=skipped,
            fail=fail,
        )
        record = {
            "epoch": epoch,
            "loss": round(epoch_loss / max(1, epoch_batches), 6),
            "top1": accuracy["top1"],
            "top5": accuracy["top5"],
        }
        history.append(record)
        metrics = {
            "epoch": float(epoch),
            "loss": record["loss"],
            "val_top1": record["top1"],
            "val_top5": record["top5"],
        }
        progress(
            ProgressEvent("advance", "finetune", total=total_steps, completed=step, metrics=metrics)
        )
        progress(
            ProgressEvent(
                "message",
                "finetune",
                text=f"epoch {epoch}/{config.epochs}: loss {record['loss']:.4f} · val top-1 "
                f"{record['top1']:.1%} · top-5 {record['top5']:.1%}",
            )
        )
    progress(ProgressEvent("end", "finetune", total=total_steps, completed=step))
    seconds = time.perf_counter() - started

    # Save backbone, head, classifier and class names together.
    model.metadata = model.metadata.replace(
        extra={
            **model.metadata.extra,
            "label_fraction": json.dumps(config.label_fraction),
            "n_train": str(len(train.paths)),
        }
    )
    save_classifier(out, model)
    if config.skipped is not None:
        write_skipped(list(skipped.values()), config.skipped)
    return FinetuneResult(
        classifier_path=out,
        history=history,
        top1=history[-1]["top1"],
        top5=history[-1]["top5"],
        n_train=len(train.paths),
        n_val=len(val.paths),
        classes=train.classes,
        seconds=seconds,
        nonfinite_steps=outcomes[StepOutcome.nonfinite],
        scaler_skipped_steps=outcomes[StepOutcome.scaler_skipped],
        skipped=list(skipped.values()),
    )
