"""Embedding images with a trained model: features for search, clustering and evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ._runtime import resolve_device
from .augment import create_eval_transform
from .config import EmbedConfig
from .data import EvalDataset, collect_inputs, load_rgb
from .model import ModelMetadata, SimCLRModel
from .progress import ProgressCallback, ProgressEvent, null_progress
from .serialization import load_model


@dataclass
class EmbedResult:
    """Embeddings of a list of images.

    Attributes:
        paths: The image files, in the order of the rows.
        embeddings: Array of shape (len(paths), D), float32.
        projection: Whether the rows are head outputs rather than backbone features.
        metadata: The model's metadata.
    """

    paths: list[Path]
    embeddings: np.ndarray
    projection: bool
    metadata: ModelMetadata


def eval_transform_for(metadata: ModelMetadata):
    """The deterministic preprocessing recorded in a model's metadata."""
    return create_eval_transform(
        image_size=metadata.image_size,
        crop_fraction=metadata.crop_fraction,
        mean=metadata.mean,
        std=metadata.std,
    )


@torch.no_grad()
def extract_features(
    network: nn.Module,
    paths: Sequence[Path],
    *,
    metadata: ModelMetadata,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = null_progress,
    task: str = "embed",
) -> np.ndarray:
    """Run ``network`` over images with the model's deterministic preprocessing.

    Args:
        network: Maps (B, 3, S, S) to (B, D); put in eval mode here.
        paths: Image files.
        metadata: Gives image size, crop and normalisation.
        batch_size: Images per forward pass.
        workers: Decoding processes.
        device: Where to run.
        progress: Progress callback (one unit per image).
        task: Name of the progress task.

    Returns:
        Array (len(paths), D), float32.

    Raises:
        ImageDecodeError: When a file cannot be decoded.
    """
    network.eval()
    loader = DataLoader(
        EvalDataset(paths, eval_transform_for(metadata)),
        batch_size=batch_size,
        num_workers=workers,
        shuffle=False,
    )
    progress(ProgressEvent("start", task, total=len(paths)))
    rows, done = [], 0
    for images in loader:
        rows.append(network(images.to(device)).float().cpu())
        done += images.shape[0]
        progress(ProgressEvent("advance", task, total=len(paths), completed=done))
    progress(ProgressEvent("end", task, total=len(paths), completed=done))
    return torch.cat(rows).numpy()


def embed_images(
    model: SimCLRModel,
    images: Sequence[Path],
    *,
    projection: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed image files with a loaded model (the Python-friendly form of ``embed``).

    Args:
        model: A model from ``load_model``.
        images: Image files.
        projection: Return head outputs (B, P) instead of backbone features (B, F).
        batch_size: Images per forward pass.

    Returns:
        Array (len(images), D), float32.
    """
    network = nn.Sequential(model.backbone, model.head) if projection else model.backbone
    device = next(model.parameters()).device
    # Decode once up front so that a bad file is reported before any compute.
    for path in images:
        load_rgb(Path(path))
    return extract_features(
        network,
        [Path(p) for p in images],
        metadata=model.metadata,
        batch_size=batch_size,
        device=device,
    )


def embed(*, config: EmbedConfig, progress: ProgressCallback = null_progress) -> EmbedResult:
    """Embed image files and folders with a saved model.

    Args:
        config: Model file, inputs and options.
        progress: Progress callback (one unit per image).

    Returns:
        The paths and their embeddings.

    Raises:
        SimCLRError: For a bad model file or unreadable images.
    """
    config.validate()
    device = resolve_device(config.device)
    model = load_model(config.model, device=device)
    paths = collect_inputs(config.inputs)
    network = nn.Sequential(model.backbone, model.head) if config.projection else model.backbone
    embeddings = extract_features(
        network,
        paths,
        metadata=model.metadata,
        batch_size=config.batch_size,
        workers=config.workers,
        device=device,
        progress=progress,
    )
    return EmbedResult(paths, embeddings, config.projection, model.metadata)


def write_embeddings(result: EmbedResult, path: Path) -> None:
    """Write embeddings to a file chosen by suffix: .npy, .safetensors, .csv or .jsonl.

    Raises:
        ConfigError: For an unknown suffix.
    """
    import csv
    import json

    from safetensors.numpy import save_file

    from .errors import ConfigError
    from .serialization import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    names = [str(p) for p in result.paths]
    if suffix == ".npy":

        def write_npy(temporary: str) -> None:
            with open(temporary, "wb") as stream:
                np.save(stream, result.embeddings)

        atomic_write(path, write_npy)
    elif suffix == ".safetensors":
        metadata = {
            "paths": json.dumps(names),
            "projection": str(result.projection).lower(),
            "backbone": result.metadata.backbone,
        }
        atomic_write(
            path,
            lambda t: save_file(
                {"embeddings": np.ascontiguousarray(result.embeddings)}, t, metadata=metadata
            ),
        )
    elif suffix == ".csv":

        def write_csv(temporary: str) -> None:
            with open(temporary, "w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream)
                writer.writerow(["path"] + [f"e{i}" for i in range(result.embeddings.shape[1])])
                for name, row in zip(names, result.embeddings, strict=True):
                    writer.writerow([name] + [f"{v:.7g}" for v in row])

        atomic_write(path, write_csv)
    elif suffix == ".jsonl":

        def write_jsonl(temporary: str) -> None:
            with open(temporary, "w", encoding="utf-8") as stream:
                for name, row in zip(names, result.embeddings, strict=True):
                    stream.write(json.dumps({"path": name, "embedding": row.tolist()}) + "\n")

        atomic_write(path, write_jsonl)
    else:
        raise ConfigError(
            f"--output {path}: unknown suffix {suffix or '(none)'}; use .npy, .safetensors, "
            ".csv or .jsonl"
        )
