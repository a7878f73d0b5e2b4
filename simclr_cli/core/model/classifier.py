"""A classifier built on a pretrained encoder, and its ``classifier.safetensors`` file.

SimCLR v2 (Chen et al. 2020b, section 2) fine-tunes "from a middle layer of the projection
head": the classifier reads the output of the head's first ``from_head_layer`` blocks instead of
the backbone features. ``from_head_layer=0`` is the usual classifier on backbone features.

File layout: ``backbone.*`` and ``head.*`` as in an encoder file, plus ``classifier.weight``
(C, D) and ``classifier.bias`` (C,); metadata ``kind="classifier"`` and, under ``extra``, the
class names (JSON) and ``from_head_layer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelFileError
from .files import build_backbone_and_head, read_metadata, read_model_tensors, write_model_file
from .head import ProjectionHead
from .simclr import ModelMetadata, SimCLRModel


class ClassifierModel(nn.Module):
    """Backbone, the first blocks of the projection head, and a linear classifier.

    Args:
        backbone: Maps images (B, 3, H, W) to features (B, F).
        head: The encoder's projection head; only its first ``from_head_layer`` blocks are used.
        classifier: Maps (B, D) to class scores (B, C); D is F, or the head's hidden size.
        metadata: Metadata with ``kind="classifier"`` and the class names in ``extra``.
        from_head_layer: How many head blocks sit between the backbone and the classifier.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: ProjectionHead,
        classifier: nn.Linear,
        metadata: ModelMetadata,
        from_head_layer: int = 0,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.classifier = classifier
        self.metadata = metadata
        self.from_head_layer = from_head_layer

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the classifier's outputs."""
        return json.loads(self.metadata.extra["classes"])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Inputs of the classifier (B, D) for images (B, 3, H, W)."""
        features = self.backbone(images)
        for block in self.head.blocks[: self.from_head_layer]:
            features = block(features)
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) of shape (B, C) for images (B, 3, H, W)."""
        return self.classifier(self.features(images))


def create_classifier(
    encoder: SimCLRModel, *, classes: list[str], from_head_layer: int = 0
) -> ClassifierModel:
    """Put a fresh linear classifier on an encoder.

    Args:
        encoder: A pretrained model (backbone + head).
        classes: Class names; their number is the classifier's output size.
        from_head_layer: Head blocks to keep before the classifier (SimCLR v2 uses 1).

    Raises:
        ConfigError: When ``from_head_layer`` is not below the number of head layers.
    """
    layers = encoder.metadata.head_layers
    if from_head_layer > layers - 1:
        raise ConfigError(
            f"--from-head-layer {from_head_layer} is too deep: this head has {layers} layers, "
            f"so use 0 to {layers - 1}",
            flag="--from-head-layer",
        )
    input_dim = encoder.metadata.feature_dim if from_head_layer == 0 else encoder.head.hidden_dim
    classifier = nn.Linear(input_dim, len(classes))
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)
    extra = dict(encoder.metadata.extra)
    extra.update({"classes": json.dumps(classes), "from_head_layer": str(from_head_layer)})
    metadata = encoder.metadata.replace(kind="classifier", extra=extra)
    return ClassifierModel(encoder.backbone, encoder.head, classifier, metadata, from_head_layer)


def save_classifier(path: Path, model: ClassifierModel) -> None:
    """Save a classifier as one safetensors file, atomically."""
    write_model_file(path, model, model.metadata)


def load_classifier(path: Path, *, device: str | torch.device = "cpu") -> ClassifierModel:
    """Load a ``classifier.safetensors`` written by ``simclr finetune``, in eval mode.

    Args:
        path: The ``.safetensors`` file.
        device: Where to put the model.

    Returns:
        The classifier, mapping images (B, 3, S, S) to logits (B, C), with its metadata.

    Raises:
        ModelFileError: When the file is an encoder, not a simclr file, or does not match.
    """
    path = Path(path)
    metadata = read_metadata(path, kind="classifier")
    try:
        classes = json.loads(metadata.extra["classes"])
        from_head_layer = int(metadata.extra.get("from_head_layer", "0"))
    except (KeyError, ValueError):
        raise ModelFileError(f"{path} lacks its class names; fine-tune again") from None
    backbone, head = build_backbone_and_head(metadata, path=path)
    input_dim = metadata.feature_dim if from_head_layer == 0 else metadata.head_hidden_dim
    model = ClassifierModel(
        backbone, head, nn.Linear(input_dim, len(classes)), metadata, from_head_layer
    )
    read_model_tensors(model, path)
    return model.to(device).eval()
