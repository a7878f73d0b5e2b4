"""Saving and loading models as one ``.safetensors`` file; nothing is ever unpickled.

Layout: backbone tensors under ``backbone.`` (the rest of each key loads with ``strict=True``
into ``timm.create_model(name, num_classes=0)`` with the same stem), head tensors under
``head.``, and string metadata (``ModelMetadata`` plus versions and a format version).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import struct
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..errors import BackboneError, DiskFullError, ModelFileError
from .head import ProjectionHead
from .simclr import ModelMetadata, SimCLRModel

#: Value of the ``format`` metadata key in every file this package writes.
FORMAT_NAME = "simclr-cli"
#: Version of the file layout; bumped when the layout changes incompatibly.
FORMAT_VERSION = "1"
#: Largest safetensors header read; real headers are kilobytes, a bigger one is hostile.
MAX_HEADER_BYTES = 64 * 1024 * 1024


def atomic_write(path: Path, write: Any) -> None:
    """Write a file so that a crash leaves either the old file or the new one, never half.

    Args:
        path: Destination.
        write: Callable that writes the content to the temporary path it is given.

    Raises:
        DiskFullError: When the disk or quota fills up; the old file stays as it was.
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
        )
        os.close(handle)
        write(temporary)
        # mkstemp (and safetensors, which replaces the file) make it private (0600); give it
        # the mode a plain open() would, so that models can be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else "nothing was written"
            raise DiskFullError(
                f"no space left on the disk while writing {path} ({kept}); free some space "
                "and try again"
            ) from None
        raise


def _versions() -> dict[str, str]:
    import timm

    from ... import __version__

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
    encoded.update(_versions())
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


def read_metadata(path: Path) -> ModelMetadata:
    """Read a simclr model file's metadata, without loading its tensors.

    Args:
        path: A ``.safetensors`` file written by ``save_model``.

    Returns:
        The metadata: backbone, stem, sizes, preprocessing and training facts.

    Raises:
        ModelFileError: When the file is not a simclr model file.
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
    return metadata_from_strings(raw, path=Path(path))


def save_model(path: Path, model: SimCLRModel) -> None:
    """Save a model as one safetensors file, atomically.

    Args:
        path: Destination ``.safetensors`` file.
        model: The model; its ``metadata`` is written beside the tensors.
    """
    from safetensors.torch import save_file

    tensors = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    tensors.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = metadata_to_strings(model.metadata)
    atomic_write(Path(path), lambda temporary: save_file(tensors, temporary, metadata=metadata))


def build_backbone_and_head(
    metadata: ModelMetadata, *, path: Path
) -> tuple[torch.nn.Module, ProjectionHead]:
    """The untrained backbone and projection head that a model file's metadata describes.

    Raises:
        ModelFileError: When the metadata names a backbone this install cannot build.
    """
    from .backbone import create_backbone

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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_metadata(path)
    if metadata.kind != "encoder":
        raise ModelFileError(
            f"{path} is a {metadata.kind} (written by `simclr finetune`), not an encoder; give "
            "the model.safetensors written by `simclr pretrain`"
        )
    backbone, head = build_backbone_and_head(metadata, path=path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"cannot read tensors of {path} ({error}); copy it again") from None
    model = SimCLRModel(backbone, head, metadata)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise ModelFileError(f"{path}: tensors do not match its metadata ({first})") from None
    return model.to(device).eval()
