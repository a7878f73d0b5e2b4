"""`simclr export`: flags -> ExportConfig -> core.export_model -> summary or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.choices import ExportFormat
from ..core.config import ExportConfig
from ..core.export.exporter import export_model
from . import _console
from ._options import JsonOption, ModelArgument, QuietOption, default_of
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr export runs/first/model.safetensors --format timm --out exports/timm
  [dim]# then: timm.create_model('local-dir:exports/timm', pretrained=True)[/]

  simclr export runs/first/model.safetensors --format onnx --out exports/onnx
  [dim]# needs: pip install 'simclr-cli\\[onnx]'[/]

  simclr export runs/first/model.safetensors --format torchscript --out exports/ts --force
"""


def export_command(
    model: ModelArgument,
    format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help="timm: a local-dir folder for timm.create_model; onnx: model.onnx (optional "
            "extra); torchscript: model.pt for torch.jit.load.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write.", show_default=False)],
    force: Annotated[
        bool, typer.Option("--force", help="Write into a folder that is not empty.")
    ] = default_of(ExportConfig, "force"),
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export the backbone for timm, ONNX or TorchScript, checked against PyTorch.
    [dim]simclr export model.safetensors --format timm --out exported[/]
    """
    config = ExportConfig(model=model, format=format, out=out, force=force)
    with create_progress(quiet=quiet or as_json) as progress:
        result = export_model(config=config, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    names = ", ".join(path.name for path in result.files)
    _console.stdout.print(
        f"Exported {result.format.value} to [bold]{escape(str(result.out))}[/] ({escape(names)}); "
        f"matches PyTorch within {result.max_abs_difference:.2g} on {result.check_batch_size} "
        "images",
        highlight=False,
        soft_wrap=True,
    )
    if not quiet:
        _console.stdout.print(
            f"Load it: {escape(result.load_hint)}", highlight=False, soft_wrap=True
        )
