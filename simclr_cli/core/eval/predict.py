"""``simclr predict``: class probabilities of images under a fine-tuned classifier."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write
from .._runtime import resolve_device
from ..choices import BadImagePolicy
from ..config import PredictConfig
from ..data.checks import BadImage, describe_bad_images, write_skipped
from ..data.files import resolve_inputs
from ..errors import ConfigError, DataError
from ..model.classifier import load_classifier
from ..progress import ProgressCallback, null_progress
from .embed import extract_kept_features, refusal


@dataclass
class PredictResult:
    """Class probabilities of a list of images.

    Attributes:
        paths: The image files, in the order of the rows.
        classes: Class names, in the order of the columns.
        probabilities: (len(paths), len(classes)) softmax probabilities, float32.
        top_k: How many classes each row reports.
        skipped: The inputs left out (unreadable, or missing from a file list).
    """

    paths: list[Path]
    classes: list[str]
    probabilities: np.ndarray
    top_k: int
    skipped: list[BadImage] = field(default_factory=list)

    def top(self, row: int) -> list[tuple[str, float]]:
        """The ``top_k`` most likely classes of one image, most likely first."""
        order = np.argsort(-self.probabilities[row], kind="stable")[: self.top_k]
        return [(self.classes[i], float(self.probabilities[row, i])) for i in order]

    def to_records(self) -> list[dict]:
        """One ``{"path", "predictions": [{"class", "probability"}, ...]}`` per image."""
        return [
            {
                "path": str(path),
                "predictions": [
                    {"class": name, "probability": round(value, 6)} for name, value in self.top(i)
                ],
            }
            for i, path in enumerate(self.paths)
        ]


def predict(*, config: PredictConfig, progress: ProgressCallback = null_progress) -> PredictResult:
    """Classify image files and folders with a ``classifier.safetensors``.

    Args:
        config: The classifier file, the inputs and options.
        progress: Progress callback (one unit per image).

    Returns:
        The paths, the class names and the class probabilities (len(paths), C).

    Raises:
        SimCLRError: For an encoder given instead of a classifier, or unreadable images.
    """
    config.validate()
    device = resolve_device(config.device)
    model = load_classifier(config.classifier, device=device)
    resolved = resolve_inputs(config.inputs, file_list=config.file_list)
    fail = config.on_bad_image is BadImagePolicy.fail
    if resolved.missing and fail:
        raise refusal(resolved.missing[0])
    kept = extract_kept_features(
        model,
        resolved.paths,
        metadata=model.metadata,
        batch_size=config.batch_size,
        device=device,
        progress=progress,
        task="predict",
        on_bad_image=config.on_bad_image,
    )
    skipped = [*resolved.missing, *kept.bad]
    if not kept.kept:
        raise DataError(
            f"none of the {len(skipped)} images could be read ({describe_bad_images(skipped)}); "
            "check the files"
        )
    if config.skipped is not None:
        write_skipped(skipped, config.skipped)
    probabilities = torch.from_numpy(kept.features).softmax(dim=1).numpy()
    classes = model.classes
    paths = [resolved.paths[index] for index in kept.kept]
    return PredictResult(
        paths, classes, probabilities, min(config.top_k, len(classes)), skipped=skipped
    )


def write_predictions(result: PredictResult, path: Path) -> None:
    """Write predictions to ``.csv`` (path, rank, class, probability) or ``.jsonl``.

    Raises:
        ConfigError: For another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":

        def write_csv(temporary: str) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream)
                writer.writerow(["path", "rank", "class", "probability"])
                for record in result.to_records():
                    for rank, item in enumerate(record["predictions"], start=1):
                        writer.writerow(
                            [record["path"], rank, item["class"], f"{item['probability']:.6f}"]
                        )

        atomic_write(path, write_csv)
    elif suffix == ".jsonl":

        def write_jsonl(temporary: str) -> None:
            with open(temporary, "w", encoding="utf-8") as stream:
                for record in result.to_records():
                    stream.write(json.dumps(record) + "\n")

        atomic_write(path, write_jsonl)
    else:
        raise ConfigError(
            f"--output {path}: unknown suffix {suffix or '(none)'}; use .csv or .jsonl",
            flag="--output",
        )
