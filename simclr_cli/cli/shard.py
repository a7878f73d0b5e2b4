"""`simclr shard`: flags -> ShardConfig -> core write_shards -> summary or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.config import ShardConfig
from ..core.data.checks import describe_bad_images
from ..core.data.shards import write_shards
from . import _console
from ._options import JsonOption, QuietOption, SeedOption, default_of
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr shard ./photos --out shards
  [dim]# then: simclr pretrain 'shards/shard-{000000..000099}.tar' --out runs/photos[/]

  simclr shard ./labelled/train --out shards/train --labels --shard-size 500MB
"""


def shard_command(
    data: Annotated[
        Path,
        typer.Argument(
            help="Folder of images, searched recursively (with --labels: one sub-folder per "
            "class).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for the shards; never overwritten.", show_default=False
        ),
    ],
    shard_size: Annotated[
        str,
        typer.Option("--shard-size", help="Largest size of a shard, such as 1GB or 500MB."),
    ] = default_of(ShardConfig, "shard_size"),
    labels: Annotated[
        bool,
        typer.Option(
            "--labels",
            help="Store the class sub-folder of each image as its label (a cls member and "
            "classes.json).",
        ),
    ] = default_of(ShardConfig, "labels"),
    seed: SeedOption = default_of(ShardConfig, "seed"),
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Write a folder of images as WebDataset tar shards. [dim]simclr shard DIR --out SHARDS[/]

    The images are written in a seeded random order, so that each shard mixes the folders;
    pretrain, embed, probe and finetune read the shards without extracting them.
    """
    config = ShardConfig(data=data, out=out, shard_size=shard_size, labels=labels, seed=seed)
    with create_progress(quiet=quiet or as_json) as progress:
        result = write_shards(config=config, progress=progress)
    if as_json:
        document = {
            "out": str(result.out),
            "pattern": result.pattern,
            "shards": [str(path) for path in result.shards],
            "images": result.images,
            "classes": result.classes,
            "bytes": result.total_bytes,
            "skipped": [{"path": item.path, "reason": item.reason} for item in result.bad_images],
        }
        sys.stdout.write(json.dumps(document) + "\n")
        return
    classes = f", {len(result.classes)} classes" if result.classes else ""
    _console.stdout.print(
        f"Wrote {result.images} images{classes} to {len(result.shards)} shards "
        f"({result.total_bytes / 1e6:.1f} MB): [bold]{escape(result.pattern)}[/]",
        highlight=False,
        soft_wrap=True,
    )
    if result.bad_images:
        _console.stderr.print(
            f"{len(result.bad_images)} files skipped as not images: "
            f"{escape(describe_bad_images(result.bad_images))}",
            highlight=False,
            soft_wrap=True,
        )
