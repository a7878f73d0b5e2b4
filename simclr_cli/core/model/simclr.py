"""The SimCLR model: a backbone f(.) and a projection head g(.), with the metadata to rebuild it."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..constants import DEFAULT_MEAN, DEFAULT_STD
from ..errors import ConfigError
from .backbone import create_backbone
from .head import ProjectionHead, create_projection_head


@dataclass
class ModelMetadata:
    """Everything needed to rebuild a saved model and preprocess images for it.

    Stored as string metadata in the ``.safetensors`` file (see ``model/files.py``).
    """

    backbone: str
    stem: str
    feature_dim: int
    head_version: str
    head_layers: int
    head_hidden_dim: int
    head_output_dim: int
    image_size: int
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    preset: str = "imagenet"
    color_strength: float = 1.0
    temperature: float = 0.5
    steps: int = 0
    images_seen: int = 0
    kind: str = "encoder"
    extra: dict[str, str] = field(default_factory=dict)

    def replace(self, **changes: Any) -> ModelMetadata:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


class SimCLRModel(nn.Module):
    """Backbone plus projection head.

    Args:
        backbone: Maps images (B, 3, H, W) to features (B, F).
        head: Maps features (B, F) to projections (B, P).
        metadata: How the model was built and how its inputs are preprocessed.
    """

    def __init__(self, backbone: nn.Module, head: ProjectionHead, metadata: ModelMetadata):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.metadata = metadata

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed and project a batch.

        Args:
            images: Normalised images of shape (B, 3, H, W).

        Returns:
            Features h of shape (B, F) and projections z of shape (B, P).
        """
        features = self.backbone(images)
        return features, self.head(features)


def create_simclr_model(
    *,
    backbone: str,
    stem: str = "auto",
    image_size: int = 224,
    init_weights: str | os.PathLike[str] | None = None,
    head: str = "v2",
    head_hidden_dim: int | None = None,
    head_output_dim: int = 128,
    metadata: dict[str, Any] | None = None,
) -> SimCLRModel:
    """Create a backbone and projection head and check that they run at this image size.

    Args:
        backbone: A timm model name.
        stem: ``auto``, ``imagenet`` or ``cifar``.
        image_size: Side of the training images.
        init_weights: Optional local safetensors file for the backbone.
        head: ``v1`` or ``v2``.
        head_hidden_dim: Hidden size of the head; the feature size when None.
        head_output_dim: Size of the projections.
        metadata: Further ``ModelMetadata`` fields (preset, normalisation, ...).

    Returns:
        The model in training mode.

    Raises:
        ConfigError: When the backbone cannot take images of this size.
    """
    weights = Path(init_weights) if init_weights is not None else None
    network, chosen_stem = create_backbone(
        backbone, stem=stem, image_size=image_size, init_weights=weights
    )
    # A dry run reads the true feature size and turns an impossible image size into a clear
    # error now rather than a shape error deep inside the first training step.
    network.eval()
    try:
        with torch.no_grad():
            feature_dim = int(network(torch.zeros(1, 3, image_size, image_size)).shape[-1])
    except (RuntimeError, ValueError, AssertionError) as error:
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else "error"
        raise ConfigError(
            f"backbone {backbone} cannot take {image_size} px images ({reason}); "
            "choose another --image-size or --backbone",
            flag="--image-size",
        ) from None
    network.train()
    projection = create_projection_head(
        head, input_dim=feature_dim, hidden_dim=head_hidden_dim, output_dim=head_output_dim
    )
    info = ModelMetadata(
        backbone=backbone,
        stem=chosen_stem.value,
        feature_dim=feature_dim,
        head_version=str(getattr(head, "value", head)),
        head_layers=projection.num_layers,
        head_hidden_dim=projection.hidden_dim,
        head_output_dim=projection.output_dim,
        image_size=image_size,
        **(metadata or {}),
    )
    return SimCLRModel(network, projection, info)
