"""Flags shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core.config import DeviceName

ModelArgument = Annotated[
    Path,
    typer.Argument(help="A model.safetensors written by `simclr pretrain`.", show_default=False),
]
DeviceOption = Annotated[
    DeviceName,
    typer.Option("--device", help="Where to compute; auto takes a CUDA GPU when present."),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the final line; no progress.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed of the run.")]
ImageSizeOption = Annotated[
    int, typer.Option("--image-size", help="Side of the square training images in pixels.")
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="Data-loading processes (default: half the CPU cores)."),
]
TrainFolderOption = Annotated[
    Path,
    typer.Option(
        "--train",
        help="Labelled folder: one sub-folder of images per class.",
        show_default=False,
    ),
]
ValFractionOption = Annotated[
    float,
    typer.Option(help="Without --val: share of each class of --train held out (seeded)."),
]
