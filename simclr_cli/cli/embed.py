"""`simclr embed`: flags -> EmbedConfig -> core.embed -> table, JSON or file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ..core._io import check_png_path
from ..core.config import EmbedConfig
from ..core.eval.embed import EmbedResult, embed, write_embeddings
from ..core.viz.embedding_map import MapMethod, save_embedding_map
from . import _console
from ._options import (
    BatchSizeOption,
    DeviceOption,
    JsonOption,
    ModelArgument,
    QuietOption,
    default_of,
)
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr embed runs/first/model.safetensors photo.jpg

  simclr embed runs/first/model.safetensors ./images --output embeddings.npy

  simclr embed runs/first/model.safetensors a.jpg b.png --json > embeddings.json

  simclr embed runs/first/model.safetensors ./val --map map.png   [dim]# thumbnails on a 2-D map[/]
"""


def render_table(result: EmbedResult, *, first: int = 4) -> Table:
    """A table of path, dimension, norm and the first values of each embedding."""
    kind = "projection" if result.projection else "feature"
    table = Table(title=f"{len(result.paths)} {kind} embeddings · {result.metadata.backbone}")
    table.add_column("path", overflow="fold")
    table.add_column("dim", justify="right")
    table.add_column("norm", justify="right")
    table.add_column("first values")
    for path, row in zip(result.paths, result.embeddings, strict=True):
        values = ", ".join(f"{v:+.3f}" for v in row[:first])
        table.add_row(
            escape(str(path)),
            str(row.shape[0]),
            f"{np.linalg.norm(row):.3f}",
            values + (", …" if row.shape[0] > first else ""),
        )
    return table


def embed_command(
    model: ModelArgument,
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files and/or folders (searched recursively), or WebDataset tar shards "
            "(a .tar, a folder of them or a brace pattern).",
            show_default=False,
        ),
    ],
    projection: Annotated[
        bool,
        typer.Option(
            "--projection", help="Embed with the projection head instead of backbone features."
        ),
    ] = default_of(EmbedConfig, "projection"),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write to .npy, .safetensors, .csv or .jsonl (by suffix)."
        ),
    ] = None,
    map_path: Annotated[
        Path | None,
        typer.Option("--map", help="Also draw a 2-D map of the embeddings with thumbnails (.png)."),
    ] = None,
    map_method: Annotated[
        MapMethod,
        typer.Option(
            "--map-method",
            help="pca, tsne (needs scikit-learn) or auto: t-SNE when installed and 50+ images.",
        ),
    ] = MapMethod.auto,
    as_json: JsonOption = False,
    batch_size: BatchSizeOption = default_of(EmbedConfig, "batch_size"),
    device: DeviceOption = default_of(EmbedConfig, "device"),
    quiet: QuietOption = False,
) -> None:
    """Embed images with a pretrained model. [dim]simclr embed model.safetensors photo.jpg[/]"""
    config = EmbedConfig(
        model=model, inputs=inputs, projection=projection, batch_size=batch_size, device=device
    )
    if map_path is not None:
        check_png_path(map_path, flag="--map")
    with create_progress(quiet=quiet or as_json) as progress:
        result = embed(config=config, progress=progress)
        if map_path is not None:
            drawn = save_embedding_map(
                result.paths, result.embeddings, map_path, method=map_method, progress=progress
            )
    if output is not None:
        write_embeddings(result, output)
    if as_json:
        document = {
            "model": str(model),
            "backbone": result.metadata.backbone,
            "projection": result.projection,
            "dimension": int(result.embeddings.shape[1]),
            "output": None if output is None else str(output),
            "map": None if map_path is None else str(map_path),
            "map_method": None if map_path is None else str(drawn.method),
            "embeddings": [
                {"path": str(path), "embedding": row.tolist()}
                for path, row in zip(result.paths, result.embeddings, strict=True)
            ],
        }
        sys.stdout.write(json.dumps(document) + "\n")
    elif output is not None:
        _console.stdout.print(
            f"Wrote {len(result.paths)} embeddings of dimension {result.embeddings.shape[1]} to "
            f"[bold]{escape(str(output))}[/]",
            highlight=False,
            soft_wrap=True,
        )
    elif not quiet and map_path is None:
        _console.stdout.print(render_table(result))
    if map_path is not None and not as_json:
        method = "t-SNE" if drawn.method == "tsne" else "PCA"
        _console.stdout.print(
            f"Wrote a {method} map of {len(result.paths)} images to "
            f"[bold]{escape(str(map_path))}[/]",
            highlight=False,
            soft_wrap=True,
        )
