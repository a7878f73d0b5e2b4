"""The ``timm`` export format: a folder in timm's hub layout that ``local-dir:`` loads.

The folder holds ``model.safetensors`` (the backbone's state dict, the keys of
``timm.create_model(name, num_classes=0)``) and ``config.json`` in the layout timm's
``save_config_for_hf`` writes: ``architecture``, ``num_classes``, ``num_features``,
``model_args`` and ``pretrained_cfg``. ``pretrained_cfg`` carries our evaluation
preprocessing so that ``timm.data.resolve_data_config`` plus ``timm.data.create_transform``
reproduce ``augment.eval.create_eval_transform``: resize the short side to R, centre-crop S,
normalise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from .._io import atomic_write
from ..augment.eval import default_crop_fraction
from ..errors import ExportError
from ..model.simclr import ModelMetadata, SimCLRModel

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def check_timm_compatible(metadata: ModelMetadata, *, path: Path) -> None:
    """Refuse a model whose architecture timm's factory cannot rebuild.

    Raises:
        ExportError: For the CIFAR stem, which no timm ResNet argument expresses.
    """
    if metadata.stem == "cifar":
        raise ExportError(
            f"{path} uses the CIFAR stem (3x3 stride-1 first convolution, no max-pool), which "
            f"timm's {metadata.backbone} cannot build, so timm would compute different "
            "features; export it with --format onnx or torchscript, or pretrain with "
            "--stem imagenet for a timm export"
        )


def resize_size(metadata: ModelMetadata) -> int:
    """Side the short edge is resized to before the centre crop (as ``create_eval_transform``)."""
    size = metadata.image_size
    fraction = metadata.crop_fraction or default_crop_fraction(size)
    return max(size, round(size / fraction))


def timm_crop_pct(image_size: int, resize: int) -> float:
    """The ``crop_pct`` for which timm resizes to exactly ``resize`` pixels.

    timm resizes the short side to ``floor(image_size / crop_pct)``; ``image_size / resize``
    can land a hair below ``resize`` in floating point, so it is nudged down until the floor
    is right.
    """
    crop_pct = image_size / resize
    while math.floor(image_size / crop_pct) < resize:
        crop_pct = math.nextafter(crop_pct, 0.0)
    return crop_pct


def model_args(metadata: ModelMetadata) -> dict[str, Any]:
    """Arguments ``timm.create_model`` needs to rebuild the backbone at its image size.

    Vision transformers and other fixed-size models take ``img_size``; convolutional networks
    take any size and reject the argument (as in ``backbone._create_timm_model``).
    """
    try:
        timm.create_model(
            metadata.backbone, pretrained=False, num_classes=0, img_size=metadata.image_size
        )
    except TypeError:
        return {}
    return {"img_size": metadata.image_size}


def timm_config(model: SimCLRModel) -> dict[str, Any]:
    """The ``config.json`` of the export: timm's hub layout, with our preprocessing.

    Args:
        model: The loaded encoder.

    Returns:
        A JSON-ready dict.
    """
    metadata = model.metadata
    backbone = model.backbone
    source_cfg = dict(getattr(backbone, "pretrained_cfg", {}) or {})
    resize = resize_size(metadata)
    pretrained_cfg: dict[str, Any] = {
        "input_size": [3, metadata.image_size, metadata.image_size],
        "fixed_input_size": bool(source_cfg.get("fixed_input_size", False)),
        "interpolation": metadata.interpolation,
        "crop_pct": timm_crop_pct(metadata.image_size, resize),
        "crop_mode": "center",
        "mean": list(metadata.mean),
        "std": list(metadata.std),
        "num_classes": 0,
        "description": (
            f"SimCLR {metadata.backbone} pretrained with simclr-cli for {metadata.steps} steps "
            f"({metadata.images_seen} images, preset {metadata.preset})"
        ),
    }
    for key in ("first_conv", "classifier"):
        if source_cfg.get(key):
            pretrained_cfg[key] = source_cfg[key]
    config: dict[str, Any] = {
        "architecture": metadata.backbone,
        "num_classes": 0,
        "num_features": metadata.feature_dim,
    }
    arguments = model_args(metadata)
    if arguments:
        config["model_args"] = arguments
    config["pretrained_cfg"] = pretrained_cfg
    # timm reads only the keys above; this one records where the weights came from.
    config["simclr"] = {
        "backbone": metadata.backbone,
        "stem": metadata.stem,
        "image_size": metadata.image_size,
        "resize": resize,
        "preset": metadata.preset,
        "steps": metadata.steps,
        "images_seen": metadata.images_seen,
        "temperature": metadata.temperature,
    }
    return config


def write_timm(model: SimCLRModel, folder: Path) -> list[Path]:
    """Write ``model.safetensors`` and ``config.json`` into ``folder``.

    Returns:
        The files written.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
    weights = folder / WEIGHTS_NAME
    # The "format" key is what Hugging Face's loaders expect of PyTorch safetensors files.
    # Both files are written whole or not at all, so a crash never leaves a half-written export.
    metadata = {"format": "pt"}
    atomic_write(weights, lambda temporary: save_file(tensors, temporary, metadata=metadata))
    config = folder / CONFIG_NAME
    text = json.dumps(timm_config(model), indent=2) + "\n"
    atomic_write(config, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    return [weights, config]


def load_timm(folder: Path) -> nn.Module:
    """Load an export the way its users will: ``timm.create_model('local-dir:...')``."""
    network = timm.create_model(f"local-dir:{Path(folder).resolve()}", pretrained=True)
    return network.eval()


def run_timm(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """Features (B, F) of normalised images (B, 3, S, S) from the exported folder."""
    with torch.no_grad():
        return load_timm(folder)(images)


def load_hint(out: Path) -> str:
    """One line of Python that loads the export."""
    return f"timm.create_model('local-dir:{out}', pretrained=True)"
