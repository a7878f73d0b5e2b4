"""Exporting a model's backbone for other tools: timm, ONNX and TorchScript.

Each format writes into a staging folder inside ``out``, loads the result back the way its
users will (``timm.create_model('local-dir:...')``, onnxruntime, ``torch.jit.load``), compares
its features with the PyTorch backbone on a sample batch, and only then moves the files into
``out`` with a ``README.md`` saying how to load them. A failed export or check leaves ``out`` as
it was. The formats' details live in ``to_timm``, ``to_onnx`` and
``to_torchscript``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .._io import prepare_output
from ..choices import ExportFormat
from ..config import ExportConfig
from ..errors import ExportError
from ..model.files import load_model
from ..model.info import file_sha256
from ..model.simclr import SimCLRModel
from ..progress import ProgressCallback, ProgressEvent, null_progress
from . import to_onnx, to_timm, to_torchscript
from .to_timm import resize_size

#: Batch size the exporters trace with; the check uses another size to prove the batch axis free.
EXAMPLE_BATCH_SIZE = 2
#: Seed of the sample batches, so that a check is reproducible.
SAMPLE_SEED = 0


@dataclass
class ExportResult:
    """What ``export_model`` wrote and how well the export matched PyTorch.

    Attributes:
        format: The export format.
        out: The folder written.
        files: The files written into it, README included.
        max_abs_difference: Largest absolute difference between the export's features and the
            PyTorch backbone's on the check batch.
        tolerance: The largest difference accepted (already scaled by the features' size).
        check_batch_size: Images in the check batch.
        load_hint: One line of Python that loads the export.
    """

    format: ExportFormat
    out: Path
    files: list[Path]
    max_abs_difference: float
    tolerance: float
    check_batch_size: int
    load_hint: str

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values."""
        return {
            "format": self.format.value,
            "out": str(self.out),
            "files": [str(p) for p in self.files],
            "max_abs_difference": self.max_abs_difference,
            "tolerance": self.tolerance,
            "check_batch_size": self.check_batch_size,
            "load_hint": self.load_hint,
        }


def sample_batch(model: SimCLRModel, batch_size: int, *, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """A seeded batch (B, 3, S, S) of standard-normal values, the scale of normalised images."""
    generator = torch.Generator().manual_seed(seed)
    size = model.metadata.image_size
    return torch.randn(batch_size, 3, size, size, generator=generator)


def _writer_and_runner(
    fmt: ExportFormat,
) -> tuple[
    Callable[[SimCLRModel, torch.Tensor, Path], list[Path]],
    Callable[[Path, torch.Tensor], torch.Tensor],
    Callable[[Path], str],
]:
    if fmt is ExportFormat.timm:
        return (
            lambda model, example, folder: to_timm.write_timm(model, folder),
            to_timm.run_timm,
            to_timm.load_hint,
        )
    if fmt is ExportFormat.onnx:
        return (
            lambda model, example, folder: to_onnx.write_onnx(model.backbone, example, folder),
            to_onnx.run_onnx,
            to_onnx.load_hint,
        )
    return (
        lambda model, example, folder: to_torchscript.write_torchscript(
            model.backbone, example, folder
        ),
        to_torchscript.run_torchscript,
        to_torchscript.load_hint,
    )


def export_readme(model: SimCLRModel, *, source: Path, fmt: ExportFormat, hint: str) -> str:
    """The ``README.md`` written beside an export: what it is and how to load it."""
    metadata = model.metadata
    mean = ", ".join(f"{v:g}" for v in metadata.mean)
    std = ", ".join(f"{v:g}" for v in metadata.std)
    lines = [
        f"# {metadata.backbone} SimCLR backbone ({fmt.value} export)",
        "",
        f"Exported by simclr-cli from `{source.name}` (sha256 {file_sha256(source)}).",
        f"Trained {metadata.steps} steps on {metadata.images_seen} images, preset "
        f"{metadata.preset}, stem {metadata.stem}.",
        "",
        "Input: float images (B, 3, "
        f"{metadata.image_size}, {metadata.image_size}); output: features "
        f"(B, {metadata.feature_dim}).",
        f"Preprocessing: resize the short side to {resize_size(metadata)} px "
        f"({metadata.interpolation}), centre-crop {metadata.image_size} px, scale to [0, 1], "
        f"normalise with mean ({mean}) and std ({std}).",
        "",
        "Load it:",
        "",
        "```python",
        hint,
        "```",
    ]
    if fmt is ExportFormat.timm:
        lines += [
            "",
            "The preprocessing is in `config.json`, so timm builds it for you:",
            "",
            "```python",
            "import timm",
            "model = timm.create_model('local-dir:PATH/TO/THIS/FOLDER', pretrained=True)",
            "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))",
            "```",
        ]
    return "\n".join(lines) + "\n"


def export_model(
    *, config: ExportConfig, progress: ProgressCallback = null_progress
) -> ExportResult:
    """Export a model's backbone and check the export against PyTorch.

    Args:
        config: Model file, format, output folder and check settings.
        progress: Progress callback (three units: load, write, check).

    Returns:
        The files written and the largest difference found by the check.

    Raises:
        ModelFileError: For a bad model file.
        ExportError: When the format cannot represent the model or the check fails.
        MissingDependencyError: When the format's optional packages are missing.
        RunFolderError: When ``out`` is not empty and ``force`` is not set.
    """
    config.validate()
    fmt = config.format
    # Everything that can refuse the export is checked before the output folder is touched.
    if fmt is ExportFormat.onnx:
        to_onnx.require_onnx()
    model = load_model(config.model, device="cpu")
    if fmt is ExportFormat.timm:
        to_timm.check_timm_compatible(model.metadata, path=config.model)
    prepare_output(config.out, force=config.force)
    write, run, hint_for = _writer_and_runner(fmt)

    progress(ProgressEvent("start", "export", total=3, completed=1))
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=config.out))
    try:
        with torch.no_grad():
            example = sample_batch(model, EXAMPLE_BATCH_SIZE, seed=SAMPLE_SEED + 1)
            written = write(model, example, staging)
            progress(ProgressEvent("advance", "export", total=3, completed=2))
            check = sample_batch(model, config.check_batch_size)
            reference = model.backbone(check)
            exported = run(staging, check)
        if tuple(exported.shape) != tuple(reference.shape):
            raise ExportError(
                f"the {fmt.value} export gives features of shape {tuple(exported.shape)}, "
                f"PyTorch {tuple(reference.shape)}; nothing was written to {config.out}"
            )
        difference = float((exported.float() - reference.float()).abs().max())
        tolerance = config.tolerance * max(1.0, float(reference.abs().max()))
        if not difference <= tolerance:
            raise ExportError(
                f"the {fmt.value} export differs from PyTorch by {difference:.3g} (more than "
                f"{tolerance:.3g}); nothing was written to {config.out}; try another --format "
                "and report it with SIMCLR_DEBUG=1"
            )
        hint = hint_for(config.out)
        readme = staging / "README.md"
        readme.write_text(
            export_readme(model, source=config.model, fmt=fmt, hint=hint), encoding="utf-8"
        )
        files = []
        for path in [*written, readme]:
            target = config.out / path.name
            os.replace(path, target)
            files.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(ProgressEvent("end", "export", total=3, completed=3))
    return ExportResult(
        format=fmt,
        out=config.out,
        files=files,
        max_abs_difference=difference,
        tolerance=tolerance,
        check_batch_size=config.check_batch_size,
        load_hint=hint,
    )
