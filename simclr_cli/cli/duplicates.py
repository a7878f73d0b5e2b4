"""`simclr duplicates`: flags -> DuplicatesConfig -> find_duplicates -> tables, CSV, PNG, JSON."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core._io import atomic_write, check_png_path
from ..core.config import DuplicatesConfig
from ..core.errors import ConfigError
from ..core.retrieval.duplicates import DuplicatesResult, find_duplicates
from ..core.viz.thumbnail_rows import Thumbnail, ThumbnailRow, save_rows_png
from . import _console
from ._options import JsonOption, QuietOption, default_of
from ._progress import create_progress
from .search import IndexArgument

EPILOG = """[bold]Examples[/]

  simclr duplicates photos.index

  simclr duplicates photos.index --threshold 0.9 --output groups.csv --save gallery.png

  simclr duplicates photos.index --outliers 20 --json | jq '.outliers[].path'
"""

#: Groups drawn by --save and listed in the table (all of them go to --output and --json).
SHOWN_GROUPS = 12
#: Images drawn per group by --save.
SHOWN_MEMBERS = 8


def write_groups_csv(result: DuplicatesResult, path: Path) -> None:
    """Write ``group,path,similarity`` rows, atomically; similarity is to the group's first."""

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["group", "path", "similarity"])
            for number, group in enumerate(result.groups, 1):
                for member in group:
                    writer.writerow([number, member.path, f"{member.similarity:.6f}"])

    atomic_write(path, write)


def gallery_rows(result: DuplicatesResult) -> list[ThumbnailRow]:
    """The first groups as rows of thumbnails, each image captioned with its similarity."""
    rows = []
    for number, group in enumerate(result.groups[:SHOWN_GROUPS], 1):
        items = [
            Thumbnail(Path(m.path), (f"{m.similarity:.3f}", Path(m.path).name))
            for m in group[:SHOWN_MEMBERS]
        ]
        more = f" (first {SHOWN_MEMBERS} shown)" if len(group) > SHOWN_MEMBERS else ""
        rows.append(ThumbnailRow(title=f"group {number}: {len(group)} images{more}", items=items))
    for outlier in result.outliers[:SHOWN_GROUPS]:
        caption = (f"nearest {outlier.nearest_similarity:.3f}", Path(outlier.path).name)
        rows.append(
            ThumbnailRow(
                title=f"outlier {outlier.path}",
                items=[Thumbnail(Path(outlier.path), caption)],
                marked=False,
            )
        )
    return rows


def groups_table(result: DuplicatesResult) -> Table:
    """The first groups: number, size, similarity to the first image, path."""
    table = Table(
        title=f"{len(result.groups)} groups of near duplicates (similarity ≥ {result.threshold:g}) "
        f"among {len(result.index)} images"
    )
    table.add_column("group", justify="right")
    table.add_column("images", justify="right")
    table.add_column("similarity", justify="right")
    table.add_column("path", overflow="fold")
    for number, group in enumerate(result.groups[:SHOWN_GROUPS], 1):
        for position, member in enumerate(group):
            table.add_row(
                str(number) if position == 0 else "",
                str(len(group)) if position == 0 else "",
                f"{member.similarity:.3f}",
                escape(member.path),
                end_section=position == len(group) - 1,
            )
    return table


def outliers_table(result: DuplicatesResult) -> Table:
    """The outliers: similarity to the nearest other image, the image and that neighbour."""
    table = Table(title=f"{len(result.outliers)} images farthest from their nearest neighbour")
    table.add_column("nearest similarity", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("nearest image", overflow="fold")
    for outlier in result.outliers:
        table.add_row(
            f"{outlier.nearest_similarity:.3f}", escape(outlier.path), escape(outlier.nearest_path)
        )
    return table


def duplicates_command(
    index: IndexArgument,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            "-t",
            help="Cosine similarity in (0, 1] from which images are duplicates.",
        ),
    ] = default_of(DuplicatesConfig, "threshold"),
    outliers: Annotated[
        int,
        typer.Option(
            "--outliers", help="Also list the N images farthest from their nearest neighbour."
        ),
    ] = default_of(DuplicatesConfig, "outliers"),
    exact: Annotated[
        bool, typer.Option("--exact", help="Compare exactly even when the index has FAISS.")
    ] = default_of(DuplicatesConfig, "exact"),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write every group as CSV: group, path, similarity."),
    ] = None,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save", help=f"Draw the first {SHOWN_GROUPS} groups (and outliers) as a PNG."
        ),
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Find groups of near-duplicate images, and outliers. [dim]simclr duplicates photos.index[/]"""
    config = DuplicatesConfig(index=index, threshold=threshold, outliers=outliers, exact=exact)
    if save is not None:
        check_png_path(save, flag="--save")
    if output is not None and output.suffix.lower() != ".csv":
        raise ConfigError(f"--output {output}: give a file name ending in .csv", flag="--output")
    with create_progress(quiet=quiet or as_json) as progress:
        result = find_duplicates(config=config, progress=progress)
    if output is not None:
        write_groups_csv(result, output)
    if save is not None:
        save_rows_png(
            gallery_rows(result),
            save,
            title=f"simclr duplicates {index}: {len(result.groups)} groups, similarity ≥ "
            f"{result.threshold:g}",
        )
    if as_json:
        document = result.to_dict()
        document["output"] = None if output is None else str(output)
        document["save"] = None if save is None else str(save)
        sys.stdout.write(json.dumps(document) + "\n")
        return
    if not quiet:
        if result.groups:
            _console.stdout.print(groups_table(result))
        if result.outliers:
            _console.stdout.print(outliers_table(result))
    _console.stdout.print(
        f"{len(result.groups)} groups of near duplicates ({result.duplicate_images} images "
        f"beyond the first of each) among {len(result.index)} images at similarity ≥ "
        f"{result.threshold:g}"
        + (f"; wrote {escape(str(output))}" if output is not None else "")
        + (f"; drew {escape(str(save))}" if save is not None else ""),
        highlight=False,
        soft_wrap=True,
    )
