"""`simclr index`: flags -> IndexConfig -> core build_index -> one line or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.choices import EmbeddingDtype
from ..core.config import IndexConfig
from ..core.retrieval.index import IndexBuild, build_index
from . import _console
from ._options import (
    BatchSizeOption,
    DeviceOption,
    FileListOption,
    JsonOption,
    ModelArgument,
    QuietOption,
    WorkersOption,
    default_of,
    print_skipped,
)
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr index runs/first/model.safetensors ./photos --out photos.index

  simclr index runs/first/model.safetensors ./photos --out photos.index --update

  simclr index runs/first/model.safetensors 'shards/shard-{000000..000127}.tar' --out photos.index

  simclr index runs/first/model.safetensors --file-list photos.txt --out photos.index

  simclr index runs/first/model.safetensors ./photos --out photos.index --flip-invariant --force

  simclr index runs/first/model.safetensors ./photos --out photos.index --dtype float32 --force
"""


def build_document(build: IndexBuild) -> dict:
    """The ``--json`` object of ``simclr index``."""
    index = build.index
    return {
        "index": str(index.folder),
        "images": len(index),
        "dimension": int(index.embeddings.shape[1]),
        "dtype": index.meta["dtype"],
        "projection": index.projection,
        "flip_invariant": index.flip_invariant,
        "embedded": build.embedded,
        "kept": build.kept,
        "dropped": build.dropped,
        "model_sha256": index.model_sha256,
        "faiss": index.meta.get("faiss") is not None,
    }


def index_command(
    model: ModelArgument,
    # Before the inputs, which have a default: --out has none, the index goes where it is told.
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The index folder to write.", show_default=False)
    ],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files and/or folders (searched recursively), or WebDataset tar shards "
            "(a .tar, a folder of them or a brace pattern), as `embed` takes them.",
            show_default=False,
        ),
    ] = default_of(IndexConfig, "inputs"),
    file_list: FileListOption = default_of(IndexConfig, "file_list"),
    dtype: Annotated[
        EmbeddingDtype | None,
        typer.Option(
            "--dtype",
            help="How to store the embeddings; default float16 (or, with --update, as before).",
            show_default=False,
        ),
    ] = default_of(IndexConfig, "dtype"),
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Embed only new or changed files; drop files no longer given.",
        ),
    ] = default_of(IndexConfig, "update"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing index (even another model's).")
    ] = default_of(IndexConfig, "force"),
    projection: Annotated[
        bool,
        typer.Option(
            "--projection", help="Index projection-head outputs instead of backbone features."
        ),
    ] = default_of(IndexConfig, "projection"),
    flip_invariant: Annotated[
        bool,
        typer.Option(
            "--flip-invariant",
            help="Make each row the mean over the image and its mirror image, so that mirrored "
            "copies are found as duplicates (twice the embedding work).",
        ),
    ] = default_of(IndexConfig, "flip_invariant"),
    batch_size: BatchSizeOption = default_of(IndexConfig, "batch_size"),
    workers: WorkersOption = default_of(IndexConfig, "workers"),
    device: DeviceOption = default_of(IndexConfig, "device"),
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Embed images into an index for search. [dim]simclr index m.safetensors ./photos -o ix[/]"""
    config = IndexConfig(
        model=model,
        inputs=list(inputs or []),
        file_list=file_list,
        out=out,
        dtype=dtype,
        update=update,
        force=force,
        projection=projection,
        flip_invariant=flip_invariant,
        batch_size=batch_size,
        workers=workers,
        device=device,
    )
    with create_progress(quiet=quiet or as_json) as progress:
        build = build_index(config=config, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(build_document(build)) + "\n")
        return
    print_skipped(build.skipped, None)
    index = build.index
    detail = f"{build.embedded} embedded"
    if update:
        detail += f", {build.kept} kept, {build.dropped} dropped"
    faiss = " and a FAISS index" if index.meta.get("faiss") else ""
    _console.stdout.print(
        f"Indexed {len(index)} images ({detail}) in [bold]{escape(str(index.folder))}[/]{faiss}: "
        f"{index.embeddings.shape[1]} {index.meta['dtype']} values each",
        highlight=False,
        soft_wrap=True,
    )
