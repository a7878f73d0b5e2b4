"""The ``onnx`` export format: the backbone as ``model.onnx`` with a dynamic batch axis.

Needs the optional extra ``onnx`` (onnx, onnxruntime, and onnxscript for torch's exporter);
they are imported only here, when the format is asked for.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import MissingDependencyError

MODEL_NAME = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "features"
#: ONNX protobufs cannot exceed 2 GiB; larger models keep their weights in a side file.
INLINE_LIMIT_BYTES = 1_800_000_000


def require_onnx() -> None:
    """Import the optional packages of the ONNX export, or say how to install them.

    Raises:
        MissingDependencyError: When onnx, onnxruntime or onnxscript is missing.
    """
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise MissingDependencyError(
                f"--format onnx needs the {name} package; install the extra with "
                "pip install 'simclr-cli[onnx]'",
                flag="--format",
            ) from None
    if "dynamic_shapes" not in inspect.signature(torch.onnx.export).parameters:
        raise MissingDependencyError(
            f"--format onnx needs torch 2.6 or newer (this is {torch.__version__}); "
            "upgrade torch, or use --format torchscript",
            flag="--format",
        )


def write_onnx(backbone: nn.Module, example: torch.Tensor, folder: Path) -> list[Path]:
    """Export the backbone with ``torch.onnx.export`` (batch axis dynamic).

    Args:
        backbone: Maps (B, 3, S, S) to (B, F); in eval mode.
        example: A batch (B, 3, S, S) to trace with.
        folder: Where to write ``model.onnx``.

    Returns:
        The files written (``model.onnx``, and ``model.onnx.data`` for models over 1.8 GB).
    """
    path = folder / MODEL_NAME
    size = sum(p.numel() * p.element_size() for p in backbone.state_dict().values())
    # The exporter prints its stages and warns about deprecations; neither helps the user, and
    # stray lines on stdout would break `--json`.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            backbone,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
            external_data=size > INLINE_LIMIT_BYTES,
            dynamo=True,
            verbose=False,
        )
    return sorted(folder.glob(f"{MODEL_NAME}*"))


def run_onnx(folder: Path, images: torch.Tensor) -> torch.Tensor:
    """Features (B, F) of normalised images (B, 3, S, S), computed by onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(folder / MODEL_NAME), providers=["CPUExecutionProvider"]
    )
    (features,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    return torch.from_numpy(features)


def load_hint(out: Path) -> str:
    """One line of Python that runs the export."""
    return (
        f"onnxruntime.InferenceSession('{out / MODEL_NAME}')"
        f".run(None, {{'{INPUT_NAME}': images}})[0]"
    )
