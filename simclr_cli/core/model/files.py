"""Saving and loading models as one ``.safetensors`` file; nothing is ever unpickled.

Layout: backbone tensors under ``backbone.`` (the rest of each key loads with ``strict=True``
into ``timm.create_model(name, num_classes=0)`` with the same stem), head tensors under
``head.``, and string metadata (``ModelMetadata`` plus versions and a format version).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..._version import __version__
from .._io import atomic_write
from ..errors import BackboneError, ModelFileError
from .backbone import create_backbone
from .head import ProjectionHead, ScaleOnlyBatchNorm1d
from .simclr import ModelMetadata, SimCLRModel

#: Value of the ``format`` metadata key in every file this package writes.
FORMAT_NAME = "simclr-cli"
#: Version of the file layout; bumped when the layout changes incompatibly.
FORMAT_VERSION = "1"
#: Largest safetensors header read; real headers are kilobytes, a bigger one is hostile.
MAX_HEADER_BYTES = 64 * 1024 * 1024


def software_versions() -> dict[str, str]:
    """The versions a model file or a checkpoint records: simclr, torch and timm."""
    return {
        "simclr_version": __version__,
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
    }


def metadata_to_strings(metadata: ModelMetadata) -> dict[str, str]:
    """Encode metadata as the ``dict[str, str]`` that safetensors stores.

    Strings stay as they are; numbers and lists are JSON.
    """
    encoded: dict[str, str] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
    for item in dataclasses.fields(metadata):
        value = getattr(metadata, item.name)
        if item.name == "extra":
            encoded.update({f"extra.{k}": str(v) for k, v in value.items()})
        elif isinstance(value, str):
            encoded[item.name] = value
        else:
            encoded[item.name] = json.dumps(list(value) if isinstance(value, tuple) else value)
    encoded.update(software_versions())
    encoded["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return encoded


def metadata_from_strings(raw: dict[str, str], *, path: Path) -> ModelMetadata:
    """Decode metadata written by ``metadata_to_strings``.

    Raises:
        ModelFileError: When keys are missing or malformed.
    """
    values: dict[str, Any] = {}
    try:
        for item in dataclasses.fields(ModelMetadata):
            if item.name == "extra":
                continue
            if item.name not in raw:
                if item.default is dataclasses.MISSING:
                    raise KeyError(item.name)
                continue
            text = raw[item.name]
            is_text = item.type in ("str", str)
            value = text if is_text else json.loads(text)
            values[item.name] = tuple(value) if isinstance(value, list) else value
    except (KeyError, json.JSONDecodeError) as error:
        raise ModelFileError(
            f"{path} has incomplete simclr metadata ({error}); re-save it with this version"
        ) from None
    extra = {k[len("extra.") :]: v for k, v in raw.items() if k.startswith("extra.")}
    return ModelMetadata(**values, extra=extra)


def read_header(path: Path) -> dict[str, Any]:
    """Read and check the JSON header of a safetensors file without loading tensors.

    Args:
        path: The file.

    Returns:
        The header: tensor entries plus ``__metadata__``.

    Raises:
        ModelFileError: When the file is missing, not safetensors, truncated or hostile.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; give the model's .safetensors file")
    size = path.stat().st_size
    not_safetensors = f"{path} is not a safetensors model file; give a model.safetensors "
    not_safetensors += "written by `simclr pretrain`"
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ModelFileError(not_safetensors)
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES or length + 8 > size:
                raise ModelFileError(not_safetensors)
            header = json.loads(stream.read(length).decode("utf-8"))
    except PermissionError:
        raise ModelFileError(f"cannot read {path}: permission denied") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(not_safetensors) from None
    if not isinstance(header, dict):
        raise ModelFileError(not_safetensors)
    end = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0)
    if 8 + length + end > size:
        raise ModelFileError(
            f"{path} is truncated (the file is shorter than its header says); copy it again"
        )
    return header


#: What to give instead of a file of the other kind, by the kind that was expected.
_WRONG_KIND = {
    "encoder": "is a {kind} (written by `simclr finetune`), not an encoder; give the "
    "model.safetensors written by `simclr pretrain`",
    "classifier": "is an encoder, not a classifier; fine-tune it first with `simclr finetune "
    "{path} --train DIR` and give the classifier.safetensors it writes",
}


def read_metadata(path: Path, *, kind: str | None = None) -> ModelMetadata:
    """Read a simclr model file's metadata, without loading its tensors.

    Args:
        path: A ``.safetensors`` file written by ``save_model`` or ``save_classifier``.
        kind: ``encoder`` or ``classifier`` to refuse a file of the other kind; None for any.

    Returns:
        The metadata: backbone, stem, sizes, preprocessing and training facts.

    Raises:
        ModelFileError: When the file is not a simclr model file, or not of ``kind``.
    """
    raw = read_header(path).get("__metadata__") or {}
    if raw.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{path} is a safetensors file without simclr metadata; give a model written by "
            "`simclr pretrain` (for plain timm weights use --init-weights)"
        )
    if raw.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {raw.get('format_version')}, this "
            f"simclr reads {FORMAT_VERSION}; upgrade simclr"
        )
    metadata = metadata_from_strings(raw, path=Path(path))
    if kind is not None and metadata.kind != kind:
        raise ModelFileError(f"{path} " + _WRONG_KIND[kind].format(kind=metadata.kind, path=path))
    return metadata


def write_model_file(path: Path, module: nn.Module, metadata: ModelMetadata) -> None:
    """Write a module's tensors and a model's metadata as one safetensors file, atomically.

    Args:
        path: Destination ``.safetensors`` file.
        module: Whose ``state_dict`` is written (on the CPU, contiguous).
        metadata: Written beside the tensors, with the format and software versions.

    Raises:
        DiskFullError: When the disk fills up during the write (the old file is kept).
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    strings = metadata_to_strings(metadata)
    atomic_write(Path(path), lambda temporary: save_file(tensors, temporary, metadata=strings))


def read_model_tensors(module: nn.Module, path: Path) -> None:
    """Load a model file's tensors into ``module``, every key matching (``strict=True``).

    Files written before the v2 head's last batch norm learned a scale have no ``weight`` for it;
    it is filled with ones, the scale those files trained with.

    Raises:
        ModelFileError: When the tensors cannot be read or do not match the module.
    """
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"cannot read tensors of {path} ({error}); copy it again") from None
    fill_missing_scales(module, tensors)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ModelFileError(f"{path}: tensors do not match its metadata ({first})") from None


def fill_missing_scales(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give each ``ScaleOnlyBatchNorm1d`` that ``tensors`` has statistics but no scale of ones.

    Args:
        module: The module the tensors are for.
        tensors: Its state dict as read from a file; changed in place.
    """
    for name, submodule in module.named_modules():
        if not isinstance(submodule, ScaleOnlyBatchNorm1d):
            continue
        prefix = f"{name}." if name else ""
        if f"{prefix}weight" not in tensors and f"{prefix}running_mean" in tensors:
            statistics = tensors[f"{prefix}running_mean"]
            tensors[f"{prefix}weight"] = torch.ones_like(statistics)


def save_model(path: Path, model: SimCLRModel) -> None:
    """Save a model as one safetensors file, atomically.

    Tensors are stored under ``backbone.`` and ``head.``, as ``model.state_dict()`` names them.

    Args:
        path: Destination ``.safetensors`` file.
        model: The model; its ``metadata`` is written beside the tensors.
    """
    write_model_file(path, model, model.metadata)


def build_backbone_and_head(
    metadata: ModelMetadata, *, path: Path
) -> tuple[torch.nn.Module, ProjectionHead]:
    """The untrained backbone and projection head that a model file's metadata describes.

    Raises:
        ModelFileError: When the metadata names a backbone this install cannot build.
    """
    try:
        backbone, _ = create_backbone(
            metadata.backbone, stem=metadata.stem, image_size=metadata.image_size
        )
    except BackboneError as error:
        raise ModelFileError(
            f"{path} names a backbone this install cannot build: {error}"
        ) from None
    head = ProjectionHead(
        metadata.feature_dim,
        metadata.head_hidden_dim,
        metadata.head_output_dim,
        num_layers=metadata.head_layers,
    )
    return backbone, head


def load_model(path: Path, *, device: str | torch.device = "cpu") -> SimCLRModel:
    """Load a model saved by ``save_model``, in eval mode.

    Args:
        path: The ``.safetensors`` file.
        device: Where to put the model.

    Returns:
        The model, with its metadata.

    Raises:
        ModelFileError: When the file is not a simclr model or its tensors do not match.
    """
    path = Path(path)
    metadata = read_metadata(path, kind="encoder")
    backbone, head = build_backbone_and_head(metadata, path=path)
    model = SimCLRModel(backbone, head, metadata)
    read_model_tensors(model, path)
    return model.to(device).eval()
