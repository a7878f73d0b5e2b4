"""The ``torchscript`` export format: the traced backbone as ``model.pt``.

``torch.jit.load`` reads a TorchScript archive (code and tensors), not a pickle of arbitrary
Python objects, so loading it runs no code from the file beyond the traced graph.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

MODEL_NAME = "model.pt"


def write_torchscript(backbone: nn.Module, example: torch.Tensor, folder: Path) -> list[Path]:
    """Trace the backbone on an example batch and save the archive.

    Args:
        backbone: Maps (B, 3, S, S) to (B, F); in eval mode.
        example: A batch (B, 3, S, S) to trace with.
        folder: Where to write ``model.pt``.

    Returns:
        The file written.
    """
    path = folder / MODEL_NAME
    # torch 2.9+ marks TorchScript as deprecated; the warning is for library authors, and the
    # format still is what many serving stacks load.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(backbone, example)
        torch.jit.save(traced, str(path))
    return [path]


def run_torchscript(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """Features (B, F) of normalised images (B, 3, S, S), from the saved archive."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        network = torch.jit.load(str(folder / MODEL_NAME), map_location="cpu")
        return network(images)


def load_hint(out: Path) -> str:
    """One line of Python that loads the export."""
    return f"torch.jit.load('{out / MODEL_NAME}')"
