"""Embedding images with a trained model: features for search, clustering and evaluation."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._io import atomic_write
from .._runtime import resolve_device
from ..augment.eval import create_eval_transform
from ..config import EmbedConfig
from ..data.checks import describe_bad_images
from ..data.files import EvalDataset, ImageSource, collect_inputs, load_rgb
from ..data.shards import index_shards, is_shard_input
from ..errors import ConfigError, DataError
from ..model.files import load_model
from ..model.simclr import ModelMetadata, SimCLRModel
from ..progress import ProgressCallback, ProgressEvent, null_progress


@dataclass
class EmbedResult:
    """Embeddings of a list of images.

    Attributes:
        paths: The image files (or shard members, ``shard.tar:cat/0001.jpg``), in the order of
            the rows.
        embeddings: Array of shape (len(paths), D), float32.
        projection: Whether the rows are head outputs rather than backbone features.
        metadata: The model's metadata.
    """

    paths: Sequence[ImageSource]
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
    paths: Sequence[ImageSource],
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
        paths: Image files, or the image members of tar shards (a ``ShardIndex``).
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


#: What ``embed_images`` takes as one image: a file, a PIL image, or a tensor (3, H, W).
ImageLike = str | os.PathLike | Image.Image | torch.Tensor


def _as_image_list(images: Sequence[ImageLike] | torch.Tensor | np.ndarray) -> list[ImageLike]:
    # A batch tensor or array (B, 3, H, W) becomes its images; one image (3, H, W) a list of one.
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(
                f"an image tensor must be (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}; "
                "put the channels first (image.permute(2, 0, 1) for an (H, W, 3) array)"
            )
        return list(images.unbind(0))
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    return list(images)


def _check_image(item: ImageLike) -> None:
    # Refuse what would otherwise be embedded silently wrong or fail deep in a transform.
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise DataError(f"an image tensor must be (3, H, W), got {tuple(item.shape)}")
        if item.dtype != torch.uint8:
            if not item.is_floating_point():
                raise DataError(f"image tensors must be uint8 or float, got {item.dtype}")
            if item.numel() and (item.min() < 0 or item.max() > 1):
                raise DataError(
                    "float image tensors must hold values in [0, 1] (not normalised ones); the "
                    "model's own normalisation is applied here"
                )
    elif isinstance(item, (str, os.PathLike)):
        if Path(item).is_dir():
            raise DataError(
                f"{item} is a folder; pass its files (simclr_cli.core.data.files.find_images) "
                "or use embed(config=EmbedConfig(model=..., inputs=[folder]))"
            )
        load_rgb(Path(item))
    elif not isinstance(item, Image.Image):
        raise DataError(
            f"cannot embed a {type(item).__name__}; give image files, PIL images or tensors"
        )


class _ImageListDataset(Dataset):
    """Files, PIL images and tensors (3, H, W), each preprocessed to a tensor (3, S, S)."""

    def __init__(self, images: Sequence[ImageLike], transform: Any):
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        item = self.images[index]
        if isinstance(item, (str, os.PathLike)):
            item = load_rgb(Path(item))
        elif isinstance(item, Image.Image) and item.mode != "RGB":
            item = item.convert("RGB")
        return self.transform(item)


@torch.no_grad()
def embed_images(
    model: SimCLRModel,
    images: Sequence[ImageLike] | torch.Tensor | np.ndarray,
    *,
    projection: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed images with a loaded model (the Python-friendly form of ``embed``).

    Every image gets the model's deterministic preprocessing (resize, centre crop and the
    normalisation recorded in its metadata), whatever form it comes in.

    Args:
        model: A model from ``load_model``.
        images: Image files (``str`` or ``Path``), PIL images, or tensors: a batch (B, 3, H, W)
            or a list of (3, H, W), uint8 in [0, 255] or float in [0, 1], not normalised.
            Numpy arrays of the same shapes work too.
        projection: Return head outputs (B, P) instead of backbone features (B, F).
        batch_size: Images per forward pass.

    Returns:
        Array (len(images), D), float32, one row per image in order.

    Raises:
        DataError: For a file that cannot be decoded, a folder, or a tensor of the wrong shape,
            type or range; raised before any compute.
    """
    network = nn.Sequential(model.backbone, model.head) if projection else model.backbone
    device = next(model.parameters()).device
    items = _as_image_list(images)
    # Check (and for files, decode) everything up front so that a bad image is reported before
    # any compute.
    for item in items:
        _check_image(item)
    network.eval()
    loader = DataLoader(
        _ImageListDataset(items, eval_transform_for(model.metadata)),
        batch_size=batch_size,
        shuffle=False,
    )
    rows = [network(batch.to(device)).float().cpu() for batch in loader]
    if not rows:
        return np.zeros((0, _output_dim(model, projection)), dtype=np.float32)
    return torch.cat(rows).numpy()


def _output_dim(model: SimCLRModel, projection: bool) -> int:
    return model.metadata.head_output_dim if projection else model.metadata.feature_dim


@overload
def embed(
    model: SimCLRModel,
    images: Sequence[ImageLike] | torch.Tensor | np.ndarray,
    *,
    projection: bool = ...,
    batch_size: int = ...,
) -> np.ndarray: ...


@overload
def embed(*, config: EmbedConfig, progress: ProgressCallback = ...) -> EmbedResult: ...


def embed(
    model: SimCLRModel | None = None,
    images: Sequence[ImageLike] | torch.Tensor | np.ndarray | None = None,
    *,
    config: EmbedConfig | None = None,
    progress: ProgressCallback = null_progress,
    projection: bool = False,
    batch_size: int = 64,
) -> EmbedResult | np.ndarray:
    """Embed images: ``embed(model, images)`` in Python, ``embed(config=...)`` as the CLI does.

    Args:
        model: A loaded model (``load_model``); give it with ``images``.
        images: What ``embed_images`` takes: files, PIL images or tensors (B, 3, H, W).
        config: Instead of ``model`` and ``images``: a model file, image files and folders, and
            options (what ``simclr embed`` calls).
        progress: Progress callback (one unit per image), with ``config``.
        projection: Return head outputs (B, P) instead of backbone features (B, F), with
            ``model``; ``config.projection`` otherwise.
        batch_size: Images per forward pass, with ``model``; ``config.batch_size`` otherwise.

    Returns:
        With ``model``: an array (len(images), D), float32. With ``config``: an ``EmbedResult``
        with the paths and their embeddings (len(paths), D).

    Raises:
        SimCLRError: For a bad model file or unreadable images.
        TypeError: When both or neither of ``model`` and ``config`` are given.
    """
    if (model is None) == (config is None):
        raise TypeError("call embed(model, images) or embed(config=EmbedConfig(...)), not both")
    if model is not None:
        if images is None:
            raise TypeError("embed(model, images) needs the images to embed")
        return embed_images(model, images, projection=projection, batch_size=batch_size)
    assert config is not None  # Exactly one of model and config, checked above.
    return _embed_with_config(config=config, progress=progress)


def _embed_with_config(
    *, config: EmbedConfig, progress: ProgressCallback = null_progress
) -> EmbedResult:
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
    paths = embed_inputs(config.inputs, progress=progress)
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


def embed_inputs(
    inputs: Sequence[Path], *, progress: ProgressCallback = null_progress
) -> Sequence[ImageSource]:
    """The images of ``embed``'s inputs: files, folders and tar shards, in the order given.

    Shards that are missing or damaged, and members that are not images, are skipped with one
    line; one shard input on its own stays a ``ShardIndex`` (flat arrays).

    Raises:
        DataError: For a missing input, an empty folder or shards without a readable image.
    """
    sources: list[ImageSource] = []
    for item in inputs:
        if not is_shard_input(item):
            sources.extend(collect_inputs([item]))
            continue
        index, bad = index_shards(item)
        if bad:
            text = f"{len(bad)} shards or members of {item} skipped: {describe_bad_images(bad)}"
            progress(ProgressEvent("message", "embed", text=text))
        if len(inputs) == 1:
            return index
        sources.extend(index)
    return sources


def write_embeddings(result: EmbedResult, path: Path) -> None:
    """Write embeddings to a file chosen by suffix: .npy, .safetensors, .csv or .jsonl.

    Args:
        result: What ``embed(config=...)`` returned; its rows (N, D) and paths are written.
        path: The output file; its suffix chooses the format.

    Raises:
        ConfigError: For an unknown suffix.
    """
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
            ".csv or .jsonl",
            flag="--output",
        )
