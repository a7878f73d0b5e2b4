"""`simclr embed`: flags -> EmbedConfig -> core.embed -> table, JSON or file."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ..core._io import check_png_path
from ..core.config import EmbedConfig
from ..core.data.checks import display_path
from ..core.eval.embed import EmbedResult, embed, read_embeddings
from ..core.viz.embedding_map import MapMethod, save_embedding_map
from . import _console
from ._options import (
    BatchSizeOption,
    DeviceOption,
    FileListOption,
    JsonOption,
    ModelArgument,
    OnBadImageOption,
    QuietOption,
    SkippedOption,
    WorkersOption,
    default_of,
    print_skipped,
)
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr embed runs/first/model.safetensors photo.jpg

  simclr embed runs/first/model.safetensors ./images --output embeddings.npy

  simclr embed runs/first/model.safetensors a.jpg b.png --json > embeddings.json

  simclr embed runs/first/model.safetensors ./val --map map.png   [dim]# thumbnails on a 2-D map[/]

  find /photos -name '*.jpg' | simclr embed runs/first/model.safetensors --file-list - -o x.npy

  simclr embed runs/first/model.safetensors ./photos -o x.parquet --resume   [dim]# after Ctrl-C[/]
"""


def render_table(result: EmbedResult, *, first: int = 4) -> Table:
    """A table of path, dimension, norm and the first values of each embedding."""
    kind = "projection" if result.projection else "feature"
    table = Table(title=f"{len(result.paths)} {kind} embeddings · {result.metadata.backbone}")
    table.add_column("path", overflow="fold")
    table.add_column("dim", justify="right")
    table.add_column("norm", justify="right")
    table.add_column("first values")
    rows: Sequence[np.ndarray] = [] if result.embeddings is None else list(result.embeddings)
    for path, row in zip(result.paths, rows, strict=True):
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
    ] = default_of(EmbedConfig, "inputs"),
    file_list: FileListOption = default_of(EmbedConfig, "file_list"),
    projection: Annotated[
        bool,
        typer.Option(
            "--projection", help="Embed with the projection head instead of backbone features."
        ),
    ] = default_of(EmbedConfig, "projection"),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the rows as they are computed to .npy (paths in .paths.txt beside it), "
            ".safetensors, .csv, .jsonl or .parquet (needs pyarrow), by suffix.",
        ),
    ] = default_of(EmbedConfig, "output"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted --output (its .partial folder): keep the rows "
            "written, embed the rest.",
        ),
    ] = default_of(EmbedConfig, "resume"),
    on_bad_image: OnBadImageOption = default_of(EmbedConfig, "on_bad_image"),
    skipped: SkippedOption = default_of(EmbedConfig, "skipped"),
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
    workers: WorkersOption = default_of(EmbedConfig, "workers"),
    device: DeviceOption = default_of(EmbedConfig, "device"),
    quiet: QuietOption = False,
) -> None:
    """Embed images with a pretrained model. [dim]simclr embed model.safetensors photo.jpg[/]"""
    config = EmbedConfig(
        model=model,
        inputs=list(inputs or []),
        file_list=file_list,
        projection=projection,
        batch_size=batch_size,
        workers=workers,
        device=device,
        output=output,
        resume=resume,
        on_bad_image=on_bad_image,
        skipped=skipped,
    )
    if map_path is not None:
        check_png_path(map_path, flag="--map")
    with create_progress(quiet=quiet or as_json) as progress:
        result = embed(config=config, progress=progress)
        embeddings = result.embeddings
        if embeddings is None and (map_path is not None or as_json) and output is not None:
            embeddings = read_embeddings(output)[1]  # Written to a file: read back for these.
        if embeddings is None:
            embeddings = np.zeros((0, result.dimension), dtype=np.float32)
        if map_path is not None:
            drawn = save_embedding_map(
                result.paths, embeddings, map_path, method=map_method, progress=progress
            )
    if as_json:
        document = {
            "model": str(model),
            "backbone": result.metadata.backbone,
            "projection": result.projection,
            "dimension": result.dimension,
            "output": None if output is None else str(output),
            "map": None if map_path is None else str(map_path),
            "map_method": None if map_path is None else str(drawn.method),
            "skipped": [{"path": display_path(b.path), "reason": b.reason} for b in result.skipped],
            "embeddings": [
                {"path": str(path), "embedding": row.tolist()}
                for path, row in zip(result.paths, embeddings, strict=True)
            ],
        }
        sys.stdout.write(json.dumps(document) + "\n")
        return
    print_skipped(result.skipped, skipped)
    if output is not None:
        resumed = f" · {result.resumed_rows} kept from before" if result.resumed_rows else ""
        _console.stdout.print(
            f"Wrote {len(result.paths)} embeddings of dimension {result.dimension} to "
            f"[bold]{escape(str(output))}[/]{resumed}",
            highlight=False,
            soft_wrap=True,
        )
    elif not quiet and map_path is None:
        _console.stdout.print(render_table(result))
    if map_path is not None:
        method = "t-SNE" if drawn.method == "tsne" else "PCA"
        _console.stdout.print(
            f"Wrote a {method} map of {len(result.paths)} images to "
            f"[bold]{escape(str(map_path))}[/]",
            highlight=False,
            soft_wrap=True,
        )
