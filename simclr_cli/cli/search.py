"""`simclr search`: flags -> SearchConfig -> core search_index -> table, pictures, PNG or JSON."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core._io import check_png_path
from ..core.choices import Protocol
from ..core.config import SearchConfig
from ..core.retrieval.search import SearchResult, search_index
from ..core.viz import terminal
from ..core.viz.thumbnail_rows import (
    Thumbnail,
    ThumbnailRow,
    render_rows_terminal,
    save_rows_png,
)
from . import _console
from ._options import BatchSizeOption, DeviceOption, JsonOption, QuietOption, default_of
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr search photos.index photo.jpg

  simclr search photos.index ./photos/cat.jpg ./new/dog.png --top-k 5 --save grid.png

  simclr search photos.index photo.jpg --json | jq '.queries[0].neighbours[0]'
"""

IndexArgument = Annotated[
    Path, typer.Argument(help="An index folder written by `simclr index`.", show_default=False)
]
ProtocolOption = Annotated[
    Protocol,
    typer.Option(
        help="How to draw thumbnails: auto asks the terminal (kitty, iterm, else truecolor or "
        "256-colour half blocks); none draws nothing.",
    ),
]


def choose_protocol(protocol: Protocol, *, quiet: bool) -> Protocol:
    """The drawing protocol: the terminal's own for ``auto``, none when quiet or piped."""
    if quiet:
        return Protocol.none
    if protocol is Protocol.auto:
        return terminal.detect_protocol(os.environ, is_terminal=sys.stdout.isatty())
    return protocol


def result_rows(result: SearchResult) -> list[ThumbnailRow]:
    """One row per query: the query, then its neighbours with rank and similarity."""
    rows = []
    for query in result.queries:
        items = [Thumbnail(query.query, ("query", query.query.name))]
        items += [
            Thumbnail(Path(n.path), (f"{rank} · {n.similarity:.3f}", Path(n.path).name))
            for rank, n in enumerate(query.neighbours, 1)
        ]
        rows.append(ThumbnailRow(title=str(query.query), items=items))
    return rows


def render_table(result: SearchResult) -> Table:
    """A table of rank, similarity and path per neighbour, one section per query."""
    table = Table(
        title=f"{result.top_k} nearest of {len(result.index)} images · {result.method} search"
    )
    table.add_column("query", overflow="fold")
    table.add_column("#", justify="right")
    table.add_column("similarity", justify="right")
    table.add_column("path", overflow="fold")
    for query in result.queries:
        for rank, neighbour in enumerate(query.neighbours, 1):
            table.add_row(
                escape(str(query.query)) if rank == 1 else "",
                str(rank),
                f"{neighbour.similarity:.3f}",
                escape(neighbour.path),
                end_section=rank == len(query.neighbours),
            )
    return table


def search_command(
    index: IndexArgument,
    queries: Annotated[
        list[Path],
        typer.Argument(help="Image files, or paths already in the index.", show_default=False),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Neighbours per query.")] = default_of(
        SearchConfig, "top_k"
    ),
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="The model that embeds queries not in the index (default: the index's own; "
            "another model is refused).",
            show_default=False,
        ),
    ] = default_of(SearchConfig, "model"),
    exact: Annotated[
        bool, typer.Option("--exact", help="Search exactly even when the index has FAISS.")
    ] = default_of(SearchConfig, "exact"),
    save: Annotated[
        Path | None,
        typer.Option("--save", help="Also write the queries and their neighbours as a PNG grid."),
    ] = None,
    protocol: ProtocolOption = Protocol.auto,
    batch_size: BatchSizeOption = default_of(SearchConfig, "batch_size"),
    device: DeviceOption = default_of(SearchConfig, "device"),
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Find the images most similar to each query. [dim]simclr search photos.index photo.jpg[/]"""
    config = SearchConfig(
        index=index,
        queries=queries,
        top_k=top_k,
        model=model,
        exact=exact,
        batch_size=batch_size,
        device=device,
    )
    if save is not None:
        check_png_path(save, flag="--save")
    with create_progress(quiet=quiet or as_json) as progress:
        result = search_index(config=config, progress=progress)
    rows = result_rows(result)
    if save is not None:
        save_rows_png(rows, save, title=f"simclr search {index}: {result.method}, top {top_k}")
    if as_json:
        document = result.to_dict()
        document["save"] = None if save is None else str(save)
        sys.stdout.write(json.dumps(document) + "\n")
        return
    if not quiet:
        _console.stdout.print(render_table(result))
    chosen = choose_protocol(protocol, quiet=quiet)
    if chosen is not Protocol.none:
        columns = shutil.get_terminal_size().columns
        sys.stdout.write(render_rows_terminal(rows, protocol=chosen, columns=columns) + "\n")
        sys.stdout.flush()
    if save is not None:
        _console.stdout.print(
            f"Wrote {len(rows)} rows of neighbours to [bold]{escape(str(save))}[/]",
            highlight=False,
            soft_wrap=True,
        )
