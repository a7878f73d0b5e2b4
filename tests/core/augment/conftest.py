"""Images for the augmentation tests."""

from __future__ import annotations

import numpy as np
import torch

from simclr_cli.core.data.synthetic import render_shape


def shape_images(count: int, size: int) -> torch.Tensor:
    """uint8 (count, 3, size, size) images with edges and colours, like real ones."""
    rng = np.random.default_rng(0)
    shapes = ("circle", "square", "stripes")
    images = [
        torch.from_numpy(np.array(render_shape(shapes[i % 3], rng, size=size))).permute(2, 0, 1)
        for i in range(count)
    ]
    return torch.stack(images).contiguous()
