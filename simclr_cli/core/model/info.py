"""What a model file holds: its metadata, parameter counts, size and hash, without running it.

``read_model_info`` reads the safetensors header (never the tensors) of an encoder written by
``simclr pretrain`` or a classifier written by ``simclr finetune``. Parameter counts come from
the module that the metadata describes, built on the ``meta`` device so that no memory is
allocated; buffers such as batch-norm statistics are therefore not counted as parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .files import build_backbone_and_head, read_header, read_metadata
from .simclr import ModelMetadata

#: Human-readable names of the ``kind`` metadata values.
KIND_DESCRIPTIONS = {
    "encoder": "SimCLR encoder (backbone + projection head), written by `simclr pretrain`",
    "classifier": "classifier (encoder + linear layer), written by `simclr finetune`",
}


@dataclass
class ModelInfo:
    """Everything ``simclr info`` shows about a model file.

    Attributes:
        path: The file.
        kind: ``encoder`` or ``classifier``.
        metadata: The decoded ``ModelMetadata``.
        parameters: Trainable parameter counts by part (``backbone``, ``head``, ``classifier``)
            and their ``total``.
        tensors: Number of tensors stored (parameters and buffers).
        dtypes: The tensor data types stored, such as ``["F32"]``.
        file_size: Size in bytes.
        sha256: Hex digest of the whole file.
        versions: ``simclr``, ``torch`` and ``timm`` versions that wrote the file.
        created: When it was written (ISO 8601, UTC), or empty when unknown.
        format_version: Version of the file layout.
        classes: Class names of a classifier; empty for an encoder.
        from_head_layer: Head blocks below a classifier's linear layer (0 for an encoder).
    """

    path: Path
    kind: str
    metadata: ModelMetadata
    parameters: dict[str, int]
    tensors: int
    dtypes: list[str]
    file_size: int
    sha256: str
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: str = ""
    classes: list[str] = field(default_factory=list)
    from_head_layer: int = 0

    @property
    def description(self) -> str:
        """A sentence saying what kind of file this is."""
        return KIND_DESCRIPTIONS.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: paths as strings, tuples as lists."""
        metadata = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self.metadata).items()
        }
        return {
            "path": str(self.path),
            "kind": self.kind,
            "description": self.description,
            "metadata": metadata,
            "parameters": dict(self.parameters),
            "tensors": self.tensors,
            "dtypes": list(self.dtypes),
            "file_size": self.file_size,
            "sha256": self.sha256,
            "versions": dict(self.versions),
            "created": self.created,
            "format_version": self.format_version,
            "classes": list(self.classes),
            "from_head_layer": self.from_head_layer,
        }


def file_sha256(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks so that large models need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def count_parameters(metadata: ModelMetadata, *, path: Path) -> dict[str, int]:
    """Parameter counts of the backbone and head a metadata describes (no weights allocated).

    Raises:
        ModelFileError: When the metadata names a backbone this install cannot build.
    """
    # The meta device builds the modules with shapes only, so that counting the parameters of
    # a large backbone costs no memory and almost no time.
    with torch.device("meta"):
        backbone, head = build_backbone_and_head(metadata, path=path)
    return {"backbone": _count_parameters(backbone), "head": _count_parameters(head)}


def read_model_info(path: Path) -> ModelInfo:
    """Describe a model file written by ``simclr pretrain`` or ``simclr finetune``.

    Args:
        path: The ``.safetensors`` file.

    Returns:
        Its metadata, parameter counts, size and hash.

    Raises:
        ModelFileError: When the file is missing, not safetensors, or lacks simclr metadata.
    """
    path = Path(path)
    header = read_header(path)
    metadata = read_metadata(path)
    raw = header.get("__metadata__") or {}
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    parameters = count_parameters(metadata, path=path)
    classes: list[str] = []
    from_head_layer = 0
    if metadata.kind == "classifier":
        # The classifier is one linear layer: its weight and bias are all its parameters.
        parameters["classifier"] = sum(
            _numel(entry["shape"]) for k, entry in entries.items() if k.startswith("classifier.")
        )
        try:
            classes = list(json.loads(metadata.extra.get("classes", "[]")))
            from_head_layer = int(metadata.extra.get("from_head_layer", "0"))
        except ValueError:
            classes, from_head_layer = [], 0
    parameters["total"] = sum(parameters.values())
    versions = {
        name: raw[f"{name}_version"]
        for name in ("simclr", "torch", "timm")
        if f"{name}_version" in raw
    }
    return ModelInfo(
        path=path,
        kind=metadata.kind,
        metadata=metadata,
        parameters=parameters,
        tensors=len(entries),
        dtypes=sorted({str(entry.get("dtype", "?")) for entry in entries.values()}),
        file_size=path.stat().st_size,
        sha256=file_sha256(path),
        versions=versions,
        created=raw.get("created", ""),
        format_version=raw.get("format_version", ""),
        classes=classes,
        from_head_layer=from_head_layer,
    )


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count
