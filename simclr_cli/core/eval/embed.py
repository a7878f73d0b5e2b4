"""Embedding images with a trained model: features for search, clustering and evaluation."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._runtime import resolve_device
from .._threads import default_workers
from ..augment.eval import create_eval_transform
from ..choices import BadImagePolicy
from ..config import EmbedConfig
from ..data.checks import (
    BadImage,
    bad_image,
    describe_bad_images,
    display_path,
    write_skipped,
)
from ..data.files import ImageSource, collect_inputs, load_rgb, resolve_inputs
from ..data.shards import index_shards, is_shard_input
from ..errors import ConfigError, DataError, ImageDecodeError
from ..model.files import load_model
from ..model.simclr import ModelMetadata, SimCLRModel
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .embed_output import (
    EmbeddingWriter,
    check_output_path,
    output_key,
    partial_folder,
    read_embeddings,
)

__all__ = [
    "EmbedResult",
    "FeatureBatch",
    "KeptFeatures",
    "embed",
    "embed_images",
    "extract_features",
    "extract_kept_features",
    "iterate_features",
    "read_embeddings",
    "write_embeddings",
    "write_skipped",
]


@dataclass
class EmbedResult:
    """Embeddings of a list of images.

    Attributes:
        paths: The image files (or shard members, ``shard.tar:cat/0001.jpg``) embedded, in the
            order of the rows.
        embeddings: Array of shape (len(paths), D), float32: in memory without an output file;
            a read-only memory map of a .npy output; ``None`` for the other output formats
            (``read_embeddings(output)`` reads them).
        projection: Whether the rows are head outputs rather than backbone features.
        metadata: The model's metadata.
        output: The file the rows were written to, if any.
        skipped: The inputs left out (unreadable, or missing from a file list), with reasons.
        resumed_rows: Rows kept from an interrupted output (``resume``).
        dimension: Width D of the rows.
    """

    paths: Sequence[ImageSource]
    embeddings: np.ndarray | None
    projection: bool
    metadata: ModelMetadata
    output: Path | None = None
    skipped: list[BadImage] = field(default_factory=list)
    resumed_rows: int = 0
    dimension: int = 0

    def __post_init__(self) -> None:
        if not self.dimension and self.embeddings is not None and self.embeddings.ndim == 2:
            self.dimension = int(self.embeddings.shape[1])


def eval_transform_for(metadata: ModelMetadata):
    """The deterministic preprocessing recorded in a model's metadata."""
    return create_eval_transform(
        image_size=metadata.image_size,
        crop_fraction=metadata.crop_fraction,
        mean=metadata.mean,
        std=metadata.std,
    )


class _FileDataset(Dataset):
    """Image files preprocessed to tensors (3, S, S) with their decoded (width, height); a file
    that cannot be read is a BadImage."""

    def __init__(self, paths: Sequence[ImageSource], transform: Any):
        # A shard index stays flat arrays, which the loader workers share without copying.
        self.paths = list(paths) if isinstance(paths, list | tuple) else paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | BadImage, tuple[int, int]]:
        try:
            image = load_rgb(self.paths[index])
            return index, self.transform(image), image.size
        except ImageDecodeError as error:
            return index, bad_image(error), (0, 0)


def _collate_files(
    samples: list[tuple[int, torch.Tensor | BadImage, tuple[int, int]]],
) -> tuple[torch.Tensor | None, list[int], list[BadImage], int, list[tuple[int, int]]]:
    # The good images stacked (B, 3, S, S) with their indices, the bad ones, how many inputs
    # the batch covered (the batches are consecutive runs of the inputs), and the good ones'
    # decoded sizes.
    good = [(index, item, size) for index, item, size in samples if isinstance(item, torch.Tensor)]
    bad = [item for _, item, _ in samples if isinstance(item, BadImage)]
    images = torch.stack([item for _, item, _ in good]) if good else None
    return images, [index for index, _, _ in good], bad, len(samples), [s for *_, s in good]


@dataclass
class FeatureBatch:
    """One batch of ``iterate_features``.

    Attributes:
        indices: Positions of the embedded images in the input list.
        rows: Their rows (len(indices), D), float32.
        bad: The inputs of the batch that could not be read.
        consumed: Inputs done so far, counted from the start of the list (a prefix of it).
        sizes: (width, height) of each embedded image as decoded (EXIF orientation applied).
    """

    indices: list[int]
    rows: np.ndarray
    bad: list[BadImage]
    consumed: int
    sizes: list[tuple[int, int]] = field(default_factory=list)


class FlipAveraged(nn.Module):
    """A network made exactly invariant to horizontal flips: the mean of its outputs on an image
    and on its mirror image.

    SimCLR trains with random flips, so a well-trained encoder maps a photo and its mirror image
    close together; a briefly trained one does not, and then a mirrored copy is no near
    duplicate. Averaging the two outputs makes them identical whatever the training, at twice
    the forward cost.

    Args:
        network: Maps images (B, C, H, W) to rows (B, D).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Rows (B, D) of images (B, C, H, W): the mean over the image and its mirror image."""
        both = self.network(torch.cat([images, torch.flip(images, dims=(3,))]))
        original, mirrored = both.chunk(2)
        return (original + mirrored) / 2


def embedding_network(
    model: SimCLRModel, *, projection: bool, flip_invariant: bool = False
) -> nn.Module:
    """The network whose outputs are the embeddings: the backbone, or backbone and head.

    Args:
        model: The SimCLR model.
        projection: Embed with the projection head's outputs instead of the backbone features.
        flip_invariant: Average each image's outputs with its mirror image's (``FlipAveraged``).
    """
    network = nn.Sequential(model.backbone, model.head) if projection else model.backbone
    return FlipAveraged(network) if flip_invariant else network


def iterate_features(
    network: nn.Module,
    paths: Sequence[ImageSource],
    *,
    metadata: ModelMetadata,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = null_progress,
    task: str = "embed",
    start: int = 0,
) -> Iterator[FeatureBatch]:
    """Run ``network`` over image files in order, batch by batch, leaving out unreadable ones.

    The loader's workers decode the next batches while the network runs; at most about
    2 x ``workers`` batches of images are in flight. Progress advances by one unit per input
    with the images per second beside the bar.

    Args:
        network: Maps (B, 3, S, S) to (B, D); put in eval mode here.
        paths: Image files.
        metadata: Gives image size, crop and normalisation.
        batch_size: Images per forward pass.
        workers: Decoding processes (0 decodes in this process).
        device: Where to run.
        progress: Progress callback (one unit per input).
        task: Name of the progress task.
        start: Inputs already done (a resumed output): embedding begins after them.

    Yields:
        One ``FeatureBatch`` per batch of inputs.
    """
    network.eval()
    total = len(paths)
    loader = DataLoader(
        _FileDataset(paths[start:], eval_transform_for(metadata)),
        batch_size=batch_size,
        num_workers=workers,
        shuffle=False,
        collate_fn=_collate_files,
        persistent_workers=False,
    )
    progress(ProgressEvent("start", task, total=total, completed=start))
    done, began = start, time.perf_counter()
    with torch.inference_mode():
        for images, indices, bad, count, sizes in loader:
            if images is None:
                rows = np.zeros((0, 0), dtype=np.float32)
            else:
                rows = network(images.to(device)).float().cpu().numpy()
            done += count
            yield FeatureBatch([start + i for i in indices], rows, bad, done, sizes)
            speed = (done - start) / max(time.perf_counter() - began, 1e-9)
            progress(
                ProgressEvent(
                    "advance",
                    task,
                    total=total,
                    completed=done,
                    metrics={"images_per_second": speed},
                )
            )
    progress(ProgressEvent("end", task, total=total, completed=done))


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
        ImageDecodeError: When a file cannot be decoded (``extract_kept_features`` skips it).
    """
    kept = extract_kept_features(
        network,
        paths,
        metadata=metadata,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        task=task,
    )
    if kept.bad:
        # Callers of this function have no --on-bad-image to suggest: the file's own fix only.
        first = kept.bad[0]
        raise ImageDecodeError(display_path(first.path), first.reason, fix=first.fix)
    return kept.features


@dataclass
class KeptFeatures:
    """Features of the readable images of a list.

    Attributes:
        features: Array (len(kept), D), float32.
        kept: Positions in the input list of the rows.
        bad: The inputs left out, with reasons.
    """

    features: np.ndarray
    kept: list[int]
    bad: list[BadImage]


def extract_kept_features(
    network: nn.Module,
    paths: Sequence[ImageSource],
    *,
    metadata: ModelMetadata,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = null_progress,
    task: str = "embed",
    on_bad_image: BadImagePolicy | str = BadImagePolicy.skip,
) -> KeptFeatures:
    """``extract_features`` that leaves unreadable files out (``skip``) or stops (``fail``).

    Raises:
        ImageDecodeError: For the first unreadable file, under ``fail``.
    """
    fail = BadImagePolicy(on_bad_image) is BadImagePolicy.fail
    rows: list[np.ndarray] = []
    kept: list[int] = []
    bad: list[BadImage] = []
    dim = 0
    for batch in iterate_features(
        network,
        paths,
        metadata=metadata,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        task=task,
    ):
        if batch.bad and fail:
            raise refusal(batch.bad[0])
        if batch.indices:
            rows.append(batch.rows)
            dim = batch.rows.shape[1]
        kept.extend(batch.indices)
        bad.extend(batch.bad)
    features = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return KeptFeatures(features, kept, bad)


def refusal(bad: BadImage) -> ImageDecodeError:
    """The error of ``--on-bad-image fail`` for a bad file: our reason and its fix.

    Args:
        bad: The first file left out.

    Returns:
        The error to raise.
    """
    return ImageDecodeError(
        display_path(bad.path),
        bad.reason,
        fix=(bad.fix or "remove the file") + " (or use --on-bad-image skip to leave it out)",
    )


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
    network = embedding_network(model, projection=projection)
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
    """Embed image files and folders with a saved model, into memory or an output file.

    With ``config.output`` the rows are written as they are computed (see embed_output.py),
    at most a few batches of them in memory, and ``resume`` continues an interrupted output.

    Args:
        config: Model file, inputs and options.
        progress: Progress callback (one unit per input).

    Returns:
        The paths embedded, their rows (in memory, or the output file's) and the skipped files.

    Raises:
        SimCLRError: For a bad model file, inputs, output or, under ``fail``, an unreadable
            image; a partial output is kept (``resume`` continues it).
    """
    config.validate()
    if config.output is not None:
        check_output_path(config.output)
    fail = config.on_bad_image is BadImagePolicy.fail
    paths, missing = resolve_image_sources(
        config.inputs, file_list=config.file_list, progress=progress
    )
    if missing and fail:
        raise refusal(missing[0])
    device = resolve_device(config.device)
    model = load_model(config.model, device=device)
    network = embedding_network(model, projection=config.projection)
    dim = _output_dim(model, config.projection)
    workers = config.workers
    if workers is None:
        # Worker processes take a second or two to start: not worth it for a few batches.
        workers = default_workers() if len(paths) > 2 * config.batch_size else 0
    writer = None
    if config.output is not None:
        writer = EmbeddingWriter(
            config.output,
            key=output_key(
                model=config.model,
                projection=config.projection,
                paths=paths,
                suffix=config.output.suffix.lower(),
            ),
            dim=dim,
            resume=config.resume,
            metadata={
                "projection": str(config.projection).lower(),
                "backbone": model.metadata.backbone,
            },
        )
    start = 0 if writer is None else writer.consumed
    resumed_rows = 0 if writer is None else writer.progress.rows
    skipped: list[BadImage] = list(missing) if writer is None else writer.skipped
    if writer is not None and not writer.resumed:
        writer.skip(missing)
    names: list[str] = []
    rows: list[np.ndarray] = []
    consumed, committed = start, time.perf_counter()
    try:
        for batch in iterate_features(
            network,
            paths,
            metadata=model.metadata,
            batch_size=config.batch_size,
            workers=workers,
            device=device,
            progress=progress,
            start=start,
        ):
            if batch.bad and fail:
                raise refusal(batch.bad[0])
            batch_names = [str(paths[index]) for index in batch.indices]
            if writer is None:
                names.extend(batch_names)
                if batch.indices:
                    rows.append(batch.rows)
                skipped.extend(batch.bad)
            else:
                if batch.indices:
                    writer.write(batch_names, batch.rows)
                writer.skip(batch.bad)
            consumed = batch.consumed
            if writer is not None and time.perf_counter() - committed > COMMIT_SECONDS:
                writer.commit(consumed)
                committed = time.perf_counter()
    except BaseException:
        if writer is not None:
            # What is done stays done: --resume continues after it.
            writer.commit(consumed)
            writer.close()
        raise
    if writer is not None:
        writer.commit(consumed)
        if writer.progress.rows == 0:
            writer.discard()
            raise _nothing_readable(skipped)
        names = writer.finish()
    elif not names:
        raise _nothing_readable(skipped)
    if config.skipped is not None:
        write_skipped(skipped, config.skipped)
    if writer is None:
        embeddings: np.ndarray | None = np.concatenate(rows)
    elif config.output is not None and config.output.suffix.lower() == ".npy":
        embeddings = np.load(config.output, mmap_mode="r")
    else:
        embeddings = None
    return EmbedResult(
        [Path(name) for name in names],
        embeddings,
        config.projection,
        model.metadata,
        output=config.output,
        skipped=skipped,
        resumed_rows=resumed_rows,
        dimension=dim,
    )


#: Seconds between two records of a partial output's progress (and at the end).
COMMIT_SECONDS = 1.0


def _nothing_readable(skipped: Sequence[BadImage]) -> DataError:
    return DataError(
        f"none of the {len(skipped)} images could be read ({describe_bad_images(skipped)}); "
        "check the files",
    )


def resolve_image_sources(
    inputs: Sequence[Path],
    *,
    file_list: Path | str | None = None,
    progress: ProgressCallback = null_progress,
    fix: str = "embed them in two runs",
) -> tuple[Sequence[ImageSource], list[BadImage]]:
    """The images of files, folders, tar shards or a file list: what ``embed`` and ``index`` take.

    Args:
        inputs: Image files, folders and tar shards (see ``embed_inputs``).
        file_list: A file of image paths (see ``resolve_inputs``); not with shards.
        progress: Receives the one-line messages about skipped shards and members.
        fix: What the refusal of shards with a file list suggests instead.

    Returns:
        The images (files, or shard members), and the files of the list that are missing (to
        be skipped and listed like unreadable images).

    Raises:
        ConfigError: When shards come with a file list.
        DataError: For a missing input, an empty folder, an unreadable list, or shards without a
            readable image.
    """
    if any(is_shard_input(item) for item in inputs):
        if file_list is not None:
            # A list names files, and a shard's members are no files: one kind of input a run.
            raise ConfigError(
                f"--file-list cannot be combined with tar shards; {fix}", flag="--file-list"
            )
        return embed_inputs(inputs, progress=progress), []
    resolved = resolve_inputs(inputs, file_list=file_list)
    return resolved.paths, list(resolved.missing)


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
    """Write embeddings to a file chosen by suffix: .npy, .safetensors, .csv, .jsonl or .parquet.

    The same writer as ``embed(config=EmbedConfig(..., output=path))``; a .npy gets its row
    paths in ``x.paths.txt`` beside it.

    Args:
        result: What ``embed(config=...)`` returned; its rows (N, D) and paths are written.
        path: The output file; its suffix chooses the format.

    Raises:
        ConfigError: For an unknown suffix.
        MissingDependencyError: For .parquet without pyarrow.
    """
    path = Path(path)
    check_output_path(path)
    if result.embeddings is None:
        raise DataError(
            f"these embeddings are in {result.output}, not in memory; read them with "
            "read_embeddings first"
        )
    names = [str(p) for p in result.paths]
    key = {"written": "write_embeddings", "count": len(names)}
    partial = partial_folder(path)
    if partial.exists():
        shutil.rmtree(partial)
    writer = EmbeddingWriter(
        path,
        key=key,
        dim=int(result.embeddings.shape[1]),
        metadata={
            "projection": str(result.projection).lower(),
            "backbone": result.metadata.backbone,
        },
    )
    try:
        for begin in range(0, len(names), 4096):
            writer.write(names[begin : begin + 4096], result.embeddings[begin : begin + 4096])
        writer.finish()
    except BaseException:
        writer.discard()
        raise
