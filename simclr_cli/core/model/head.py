"""The projection head g(.) that maps backbone features to the space of the contrastive loss.

SimCLR v1 (Chen et al. 2020, section 2.1): z = W2 ReLU(W1 h), here with batch norm after the
hidden layer as in the reference code. SimCLR v2 (Chen et al. 2020b, "Big Self-Supervised Models
are Strong Semi-Supervised Learners"): three layers, batch norm after each; the last batch norm
learns a scale but no shift, as the reference's last layer does (``center=False, scale=True``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..choices import HeadVersion


class ScaleOnlyBatchNorm1d(nn.BatchNorm1d):
    """Batch norm with a learnable scale and no shift: y = weight * (x - mean) / std.

    The reference implementation's last head layer (``center=False, scale=True``): a shift would
    move every projection alike, which the cosine similarity of the loss undoes only in part.
    ``bias`` is None, so the module's ``state_dict`` holds ``weight`` and the running statistics.

    Args:
        num_features: Channels C of the input (N, C).
        eps: Added to the variance for stability.
        momentum: Update factor of the running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        """Running statistics to their start and the scale to ones."""
        self.reset_running_stats()
        nn.init.ones_(self.weight)


class ProjectionHead(nn.Module):
    """A stack of Linear + BatchNorm (+ ReLU except after the last) blocks.

    Blocks are kept as ``self.blocks[i]`` so that fine-tuning can reuse the first ones
    (SimCLR v2 fine-tunes from the first layer of the head).

    Args:
        input_dim: Size of the backbone features.
        hidden_dim: Size of the hidden layers.
        output_dim: Size of the projections z.
        num_layers: 2 for SimCLR v1, 3 for SimCLR v2.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2):
        super().__init__()
        if num_layers < 1:
            raise ValueError("a projection head needs at least one layer")
        sizes = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        blocks = []
        for index in range(num_layers):
            last = index == num_layers - 1
            layers: list[nn.Module] = [nn.Linear(sizes[index], sizes[index + 1], bias=False)]
            # v2's output keeps batch norm with a learned scale and no shift (as the reference
            # code does); v1's output is a plain linear layer.
            if not last:
                layers += [nn.BatchNorm1d(sizes[index + 1]), nn.ReLU(inplace=True)]
            elif num_layers > 2:
                layers.append(ScaleOnlyBatchNorm1d(sizes[index + 1]))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim
        self.num_layers = num_layers

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Project features.

        Args:
            features: Backbone features of shape (B, input_dim).

        Returns:
            Projections of shape (B, output_dim).
        """
        return self.blocks(features)


def create_projection_head(
    version: HeadVersion | str,
    *,
    input_dim: int,
    hidden_dim: int | None = None,
    output_dim: int = 128,
) -> ProjectionHead:
    """Create the projection head of SimCLR v1 or v2.

    Args:
        version: ``v1`` (2 layers) or ``v2`` (3 layers).
        input_dim: Size of the backbone features.
        hidden_dim: Hidden size; defaults to ``input_dim`` as in the paper.
        output_dim: Size of the projections (128 in the paper).

    Returns:
        The head, mapping (B, input_dim) to (B, output_dim).
    """
    layers = 2 if HeadVersion(version) is HeadVersion.v1 else 3
    return ProjectionHead(input_dim, hidden_dim or input_dim, output_dim, num_layers=layers)
