"""An index folder: the L2-normalised embeddings of a set of images, their files, and the model.

Layout of the folder ``simclr index`` writes:

- ``embeddings.npy``: array (N, D), float16 (default) or float32, each row of unit length;
- ``paths.jsonl``: one line per row, ``{"path", "width", "height", "mtime", "size"}``;
- ``index.json``: the format version, the row count and dimension, the model's sha256, backbone
  and preprocessing, and the FAISS index when there is one;
- ``faiss.index``: only for large indexes when faiss is installed (see ``_faiss.py``).

Every file is written atomically and ``index.json`` last, so a crash leaves either the old index
or a folder whose counts disagree, which ``load_index`` reports as damaged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..._version import __version__
from .._io import atomic_write, prepare_output
from .._runtime import resolve_device
from .._threads import default_workers
from ..choices import EmbeddingDtype
from ..config import IndexConfig
from ..data.checks import BadImage, bad_image, describe_bad_images
from ..data.files import ImageSource
from ..data.shards import ShardIndex, ShardMember, is_shard_input
from ..errors import DataError, ImageDecodeError, RunFolderError, SearchIndexError
from ..eval.embed import (
    embedding_network,
    extract_features,
    iterate_features,
    resolve_image_sources,
)
from ..model.files import load_model, read_header
from ..model.info import file_sha256
from ..model.simclr import SimCLRModel
from ..progress import ProgressCallback, null_progress
from . import _faiss

EMBEDDINGS_FILE = "embeddings.npy"
PATHS_FILE = "paths.jsonl"
META_FILE = "index.json"
#: Value of ``format`` in every index.json this package writes.
FORMAT_NAME = "simclr-index"
#: Version of the folder layout; bumped when it changes incompatibly.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ImageRecord:
    """One indexed file, with what ``--update`` compares to see whether it changed.

    A member of a tar shard is named as ``embed`` names it, ``/abs/shard.tar:cat/0001.jpg``;
    its ``mtime`` and ``size`` are the shard file's, so that a changed shard is embedded again.

    Attributes:
        path: Absolute path of the file, or ``shard.tar:member`` for a shard member.
        width: Width in pixels, as decoded (EXIF orientation applied).
        height: Height in pixels.
        mtime: Modification time, seconds since the epoch.
        size: File size in bytes.
    """

    path: str
    width: int
    height: int
    mtime: float
    size: int

    def unchanged(self, other: ImageRecord) -> bool:
        """Whether ``other`` is the same file, neither moved nor modified."""
        return (self.path, self.mtime, self.size) == (other.path, other.mtime, other.size)


@dataclass
class SearchIndex:
    """An index folder, loaded.

    Attributes:
        folder: Where it lives.
        embeddings: Array (N, D), float16 or float32, rows of unit length (memory-mapped).
        records: The N files, in row order.
        meta: The content of index.json.
    """

    folder: Path
    embeddings: np.ndarray
    records: list[ImageRecord]
    meta: dict[str, Any]
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rows = {record.path: row for row, record in enumerate(self.records)}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def model_sha256(self) -> str:
        """The sha256 of the model file that embedded the rows."""
        return str(self.meta["model"]["sha256"])

    @property
    def model_path(self) -> Path:
        """Where the model file was when the index was built."""
        return Path(self.meta["model"]["path"])

    @property
    def projection(self) -> bool:
        """Whether the rows are head outputs rather than backbone features."""
        return bool(self.meta["projection"])

    @property
    def flip_invariant(self) -> bool:
        """Whether each row is the mean over the image and its mirror image (``FlipAveraged``)."""
        return bool(self.meta.get("flip_invariant", False))

    def row_of(self, path: Path | str) -> int | None:
        """The row of a file or shard member already in the index, or None.

        Compared as absolute paths: a relative ``shards/a.tar:cat/1.jpg`` finds the member of
        ``/abs/shards/a.tar`` too.
        """
        row = self._rows.get(str(path))
        return row if row is not None else self._rows.get(os.path.abspath(path))

    def faiss_file(self) -> Path | None:
        """The FAISS index file, when the index has one."""
        entry = self.meta.get("faiss")
        return None if not entry else self.folder / str(entry["file"])


@dataclass
class IndexBuild:
    """What ``build_index`` did.

    Attributes:
        index: The index as written.
        embedded: Images embedded now.
        kept: Rows kept from the previous index (``--update``).
        dropped: Rows of the previous index whose files are gone or changed.
        skipped: Files left out because they are not readable images.
    """

    index: SearchIndex
    embedded: int
    kept: int
    dropped: int
    skipped: list[BadImage] = field(default_factory=list)


class IndexInputs(NamedTuple):
    """The images to index and the files of a list that are missing.

    Attributes:
        sources: Image files (absolute paths) and shard members, without repeats, in the order
            given; a ``ShardIndex`` (flat arrays) when the inputs are shards.
        missing: Files named in ``--file-list`` that do not exist (skipped and listed).
    """

    sources: Sequence[ImageSource]
    missing: list[BadImage]


def collect_images(
    inputs: Sequence[Path],
    *,
    file_list: Path | str | None = None,
    progress: ProgressCallback = null_progress,
) -> IndexInputs:
    """The images to index: what ``embed`` takes (files, folders, tar shards, a file list).

    The one place that reads the inputs; it resolves them as ``embed`` does
    (``resolve_image_sources``), then makes the paths absolute and drops repeats.

    Raises:
        DataError: When an input is missing, a folder holds no image, the list cannot be read,
            or shards hold no readable image.
        ConfigError: When shards come with a file list.
    """
    # Shards made absolute before they are read, so that their members get absolute names
    # (``str(member)``); files and folders stay as given, for the messages about them.
    given = [Path(os.path.abspath(item)) if is_shard_input(item) else item for item in inputs]
    sources, missing = resolve_image_sources(
        given,
        file_list=file_list,
        progress=progress,
        fix="index each kind into an index of its own",
    )
    seen: set[str] = set()
    keep: list[int] = []
    for position, source in enumerate(sources):
        name = os.path.abspath(source) if isinstance(source, Path) else str(source)
        if name not in seen:
            seen.add(name)
            keep.append(position)
    if isinstance(sources, ShardIndex):
        # The flat arrays stay flat (loader workers share them), unless a shard came twice.
        unique: Sequence[ImageSource] = sources if len(keep) == len(sources) else sources.take(keep)
    else:
        unique = [
            Path(os.path.abspath(source)) if isinstance(source, Path) else source
            for source in (sources[position] for position in keep)
        ]
    return IndexInputs(unique, missing)


def file_status(
    path: ImageSource, shard_status: dict[str, os.stat_result] | None = None
) -> os.stat_result:
    """The size and time of an image file, or of the shard that holds a member.

    What ``--update`` compares (with the path) to tell an unchanged file; nothing is decoded.

    Args:
        path: An image file, or a member of a tar shard (whose size and time are the shard's).
        shard_status: The ``stat`` of shard files already read, filled in here; one per shard
            rather than one per member.

    Raises:
        ImageDecodeError: When the file (or shard) is missing or cannot be read.
    """
    try:
        if isinstance(path, ShardMember):
            return _shard_status(path.shard, shard_status)
        return os.stat(path if isinstance(path, Path) else str(path))
    except FileNotFoundError:
        raise ImageDecodeError(path, "file not found") from None
    except OSError as error:
        raise ImageDecodeError(path, str(error) or type(error).__name__) from None


def _take(sources: Sequence[ImageSource], positions: list[int]) -> Sequence[ImageSource]:
    # A shard index stays flat arrays (the loader workers share them without copying).
    if isinstance(sources, ShardIndex):
        return sources.take(positions)
    return [sources[position] for position in positions]


def _shard_status(shard: str, cache: dict[str, os.stat_result] | None) -> os.stat_result:
    if cache is None:
        return os.stat(shard)
    if shard not in cache:
        cache[shard] = os.stat(shard)
    return cache[shard]


def normalize_rows(rows: np.ndarray) -> np.ndarray:
    """Scale each row (N, D) to unit length in float32; all-zero rows stay zero."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def embed_files(
    model: SimCLRModel,
    paths: Sequence[ImageSource],
    *,
    projection: bool,
    flip_invariant: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = null_progress,
    task: str = "index",
) -> np.ndarray:
    """Embed files (or shard members) with the model's preprocessing; L2-normalise the rows.

    Args:
        model: The model that embeds.
        paths: The image files.
        projection: Embed with the head's outputs instead of the backbone features.
        flip_invariant: Average each image's outputs with its mirror image's.
        batch_size: Images per forward pass.
        workers: Decoding processes.
        device: Where the model runs.
        progress: Progress callback: one ``task`` of one unit per image.
        task: The progress task's name.

    Returns:
        Array (len(paths), D), float32, rows of unit length.

    Raises:
        ImageDecodeError: When a file cannot be decoded.
    """
    network = embedding_network(model, projection=projection, flip_invariant=flip_invariant)
    if not paths:
        width = model.metadata.head_output_dim if projection else model.metadata.feature_dim
        return np.zeros((0, width), dtype=np.float32)
    rows = extract_features(
        network,
        paths,
        metadata=model.metadata,
        batch_size=batch_size,
        workers=workers,
        device=device,
        progress=progress,
        task=task,
    )
    return normalize_rows(rows)


def model_mismatch(folder: Path, *, index_sha256: str, model: Path, model_sha256: str) -> str:
    """The one line that refuses a model other than the index's, saying both ways out."""
    return (
        f"index {folder} was made by another model (sha256 {index_sha256[:12]}), not {model} "
        f"(sha256 {model_sha256[:12]}); rebuild it with `simclr index {model} IMAGES --out "
        f"{folder} --force`, or give the model it was made with"
    )


def check_model(index: SearchIndex, model: Path) -> str:
    """Refuse a model file that is not the one the index was made with.

    Returns:
        The model file's sha256.

    Raises:
        SearchIndexError: When the sha256 differs.
        ModelFileError: When the file is missing.
    """
    read_header(model)  # A missing or non-model file gets the usual message.
    digest = file_sha256(model)
    if digest != index.model_sha256:
        raise SearchIndexError(
            model_mismatch(
                index.folder, index_sha256=index.model_sha256, model=model, model_sha256=digest
            )
        )
    return digest


# ---------------------------------------------------------------------------------------------
# Reading.


def _damaged(folder: Path, reason: str) -> SearchIndexError:
    return SearchIndexError(
        f"index folder {folder} is damaged ({reason}); rebuild it with "
        f"`simclr index MODEL IMAGES --out {folder} --force`"
    )


def load_index(folder: Path, *, allow_empty: bool = False) -> SearchIndex:
    """Read an index folder and check that its files agree with each other.

    Args:
        folder: What ``simclr index --out`` wrote.
        allow_empty: Accept an index of no rows (``--update`` replaces its rows anyway).

    Returns:
        The index; its embeddings are memory-mapped, not read into memory.

    Raises:
        SearchIndexError: When the folder is missing, is not an index, is damaged or is empty.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise SearchIndexError(
            f"index folder {folder} {what}; build one with "
            f"`simclr index MODEL IMAGES --out {folder}`"
        )
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise SearchIndexError(
            f"{folder} is not an index folder (no {META_FILE}); build one with "
            f"`simclr index MODEL IMAGES --out {folder}`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ValueError("not a simclr index")
        if meta.get("format_version") != FORMAT_VERSION:
            raise SearchIndexError(
                f"index {folder} has format version {meta.get('format_version')}, this simclr "
                f"reads {FORMAT_VERSION}; rebuild it with `simclr index MODEL IMAGES --out "
                f"{folder} --force`"
            )
        count, dimension = int(meta["count"]), int(meta["dimension"])
        str(meta["model"]["sha256"]), str(meta["model"]["path"])
    except SearchIndexError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _damaged(folder, f"{META_FILE}: {error}") from None
    try:
        embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise _damaged(folder, f"{EMBEDDINGS_FILE}: {error}") from None
    if embeddings.dtype not in (np.float16, np.float32) or embeddings.shape != (count, dimension):
        raise _damaged(
            folder,
            f"{EMBEDDINGS_FILE} holds {embeddings.dtype} {tuple(embeddings.shape)}, "
            f"{META_FILE} says {count} x {dimension}",
        )
    records = _read_records(folder, count)
    if not records and not allow_empty:
        raise SearchIndexError(
            f"index {folder} holds no images; rebuild it with `simclr index MODEL IMAGES --out "
            f"{folder} --force`"
        )
    return SearchIndex(folder=folder, embeddings=embeddings, records=records, meta=meta)


def _read_records(folder: Path, count: int) -> list[ImageRecord]:
    try:
        lines = (folder / PATHS_FILE).read_text(encoding="utf-8").splitlines()
        records = [ImageRecord(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, ValueError, TypeError) as error:
        raise _damaged(folder, f"{PATHS_FILE}: {error}") from None
    if len(records) != count:
        raise _damaged(folder, f"{PATHS_FILE} lists {len(records)} files for {count} rows")
    return records


# ---------------------------------------------------------------------------------------------
# Writing.


def write_index(
    folder: Path,
    *,
    embeddings: np.ndarray,
    records: Sequence[ImageRecord],
    meta: dict[str, Any],
    faiss_min_images: int,
) -> SearchIndex:
    """Write the files of an index folder, each atomically, ``index.json`` last.

    Args:
        folder: The index folder (created if missing).
        embeddings: Rows (N, D) of unit length, in the dtype to store.
        records: The N files.
        meta: index.json without its counts, which are filled in here.
        faiss_min_images: Write a FAISS index from this many rows when faiss imports (0: never).

    Returns:
        The index as written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def write_npy(temporary: str) -> None:
        with open(temporary, "wb") as stream:
            np.save(stream, np.ascontiguousarray(embeddings), allow_pickle=False)

    def write_paths(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            for record in records:
                stream.write(json.dumps(asdict(record)) + "\n")

    atomic_write(folder / EMBEDDINGS_FILE, write_npy)
    atomic_write(folder / PATHS_FILE, write_paths)
    meta = {**meta, "count": int(embeddings.shape[0]), "dimension": int(embeddings.shape[1])}
    meta["faiss"] = None
    if faiss_min_images and len(records) >= faiss_min_images and _faiss.available():
        meta["faiss"] = _faiss.write_faiss_index(folder, embeddings)
    else:
        (folder / _faiss.FAISS_FILE).unlink(missing_ok=True)
    atomic_write(
        folder / META_FILE,
        lambda temporary: Path(temporary).write_text(json.dumps(meta, indent=2) + "\n"),
    )
    return SearchIndex(folder=folder, embeddings=embeddings, records=list(records), meta=meta)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _meta(config: IndexConfig, model: SimCLRModel, digest: str, dtype: EmbeddingDtype) -> dict:
    metadata = model.metadata
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dtype": dtype.value,
        "projection": config.projection,
        "flip_invariant": config.flip_invariant,
        "model": {
            "path": os.path.abspath(config.model),
            "sha256": digest,
            "backbone": metadata.backbone,
            "steps": metadata.steps,
        },
        # What a query gets before the model sees it (the model file holds the same).
        "preprocessing": {
            "image_size": metadata.image_size,
            "crop_fraction": metadata.crop_fraction,
            "interpolation": metadata.interpolation,
            "mean": list(metadata.mean),
            "std": list(metadata.std),
        },
        "simclr_version": __version__,
        "updated": _now(),
    }


def _check_previous(previous: SearchIndex, config: IndexConfig, digest: str) -> None:
    # --update extends an index only with rows made the same way: same model, same outputs.
    if previous.model_sha256 != digest:
        raise SearchIndexError(
            model_mismatch(
                config.out,
                index_sha256=previous.model_sha256,
                model=config.model,
                model_sha256=digest,
            )
        )
    if previous.projection != config.projection:
        kind = "projections" if previous.projection else "backbone features"
        raise SearchIndexError(
            f"index {config.out} holds {kind}; give --projection as when it was built, or "
            "rebuild it with --force"
        )
    if previous.flip_invariant != config.flip_invariant:
        given = "give" if previous.flip_invariant else "leave out"
        raise SearchIndexError(
            f"index {config.out} was built {'with' if previous.flip_invariant else 'without'}"
            f" --flip-invariant; {given} --flip-invariant as when it was built, or rebuild "
            "it with --force"
        )


def _check_out(config: IndexConfig) -> SearchIndex | None:
    # Before any work: refuse to overwrite, and read the index --update extends.
    out = config.out
    if config.update and out.is_dir() and any(out.iterdir()):
        return load_index(out, allow_empty=True)
    if not config.force and (out / META_FILE).exists():
        raise RunFolderError(
            f"--out {out} already holds an index; add --update to add new images to it, or "
            "--force to rebuild it",
            flag="--out",
        )
    prepare_output(out, force=config.force, folder=True, create=False)
    return None


def build_index(*, config: IndexConfig, progress: ProgressCallback = null_progress) -> IndexBuild:
    """Embed images and write (or, with ``update``, extend) an index folder.

    Args:
        config: Model, inputs, index folder and options.
        progress: Progress callback: one ``index`` task of one unit per image embedded now.

    Returns:
        The index written and how many rows were embedded, kept and dropped.

    Raises:
        SearchIndexError: With ``update``, when the index is damaged or was made by another
            model or with other outputs (``projection``).
        RunFolderError: When ``out`` holds earlier output and neither ``update`` nor ``force``.
        SimCLRError: For a bad model file or unreadable images; nothing is written then.
    """
    config.validate()
    previous = _check_out(config)
    sources, missing = collect_images(config.inputs, file_list=config.file_list, progress=progress)
    # The model first: a wrong model file is the one line, whatever the images are.
    device = resolve_device(config.device)
    model = load_model(config.model, device=device)
    digest = file_sha256(config.model)
    # One stat per file (per shard for its members) tells what --update keeps; the pixels are
    # read once, by the embedding, which also finds the unreadable files (left out, listed).
    skipped: list[BadImage] = list(missing)
    statuses: list[tuple[int, str, os.stat_result]] = []
    shard_status: dict[str, os.stat_result] = {}
    for position, source in enumerate(sources):
        try:
            statuses.append((position, str(source), file_status(source, shard_status)))
        except ImageDecodeError as error:
            skipped.append(bad_image(error))
    dtype = config.dtype
    kept: dict[int, tuple[int, ImageRecord]] = {}
    if previous is not None:
        _check_previous(previous, config, digest)
        if dtype is None:
            dtype = EmbeddingDtype(previous.meta["dtype"])
        old = {record.path: (row, record) for row, record in enumerate(previous.records)}
        for position, name, status in statuses:
            match = old.get(name)
            if match is not None and (match[1].mtime, match[1].size) == (
                status.st_mtime,
                status.st_size,
            ):
                kept[position] = match
    dtype = EmbeddingDtype.float16 if dtype is None else dtype
    positions = [position for position, _, _ in statuses if position not in kept]
    to_embed = _take(sources, positions)
    workers = config.workers
    if workers is None:
        # As embed: worker processes take a second or two to start, not worth a few batches.
        workers = default_workers() if len(to_embed) > 2 * config.batch_size else 0
    network = embedding_network(
        model, projection=config.projection, flip_invariant=config.flip_invariant
    )
    embedded: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
    for batch in iterate_features(
        network,
        to_embed,
        metadata=model.metadata,
        batch_size=config.batch_size,
        workers=workers,
        device=device,
        progress=progress,
        task="index",
    ):
        skipped.extend(batch.bad)
        rows = normalize_rows(batch.rows) if batch.indices else batch.rows
        for order, row, size in zip(batch.indices, rows, batch.sizes, strict=True):
            embedded[positions[order]] = (row, size)
    if not kept and not embedded:
        raise DataError(
            f"none of the {len(skipped)} images could be read ({describe_bad_images(skipped)}); "
            f"check the files"
        )
    if embedded:
        width = next(iter(embedded.values()))[0].shape[0]
    else:
        assert previous is not None  # Rows are kept only from a previous index.
        width = previous.embeddings.shape[1]
    if previous is not None and kept and previous.embeddings.shape[1] != width:
        raise _damaged(config.out, f"its rows have {previous.embeddings.shape[1]} values")
    records: list[ImageRecord] = []
    embeddings = np.empty((len(kept) + len(embedded), width), dtype=np.dtype(dtype.value))
    for position, name, status in statuses:
        if position in kept:
            assert previous is not None  # kept is only filled from a previous index.
            row, record = kept[position]
            embeddings[len(records)] = previous.embeddings[row]
            records.append(record)
        elif position in embedded:
            vector, (image_width, image_height) = embedded[position]
            embeddings[len(records)] = vector
            records.append(
                ImageRecord(
                    path=name,
                    width=int(image_width),
                    height=int(image_height),
                    mtime=status.st_mtime,
                    size=status.st_size,
                )
            )
    meta = _meta(config, model, digest, dtype)
    if previous is not None:
        meta["created"] = previous.meta.get("created", meta["updated"])
    else:
        meta["created"] = meta["updated"]
    if config.force and config.out.exists():
        prepare_output(config.out, force=True, folder=True)
    index = write_index(
        config.out,
        embeddings=embeddings,
        records=records,
        meta=meta,
        faiss_min_images=config.faiss_min_images,
    )
    dropped = 0 if previous is None else len(previous) - len(kept)
    return IndexBuild(
        index=index,
        embedded=len(embedded),
        kept=len(kept),
        dropped=dropped,
        skipped=skipped,
    )
