"""`simclr predict`: flags -> PredictConfig -> core.predict -> table, JSON or file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core.config import PredictConfig
from ..core.eval.predict import PredictResult, predict, write_predictions
from . import _console
from ._options import (
    BatchSizeOption,
    DeviceOption,
    FileListOption,
    JsonOption,
    OnBadImageOption,
    QuietOption,
    SkippedOption,
    default_of,
    print_skipped,
)
from ._progress import create_progress

EPILOG = """[bold]Examples[/]

  simclr predict runs/first/classifier.safetensors photo.jpg

  simclr predict runs/first/classifier.safetensors ./new-images --top-k 3 --output predictions.csv

  simclr predict runs/first/classifier.safetensors a.jpg b.png --json
"""


def render_table(result: PredictResult) -> Table:
    """One row per image: its top-k classes with probabilities."""
    table = Table(
        title=f"{len(result.paths)} images · top-{result.top_k} of {len(result.classes)} classes"
    )
    table.add_column("path", overflow="fold")
    table.add_column("class")
    table.add_column("probability", justify="right")
    table.add_column("next")
    for row, path in enumerate(result.paths):
        top = result.top(row)
        others = ", ".join(f"{escape(name)} {value:.1%}" for name, value in top[1:])
        table.add_row(
            escape(str(path)), f"[bold]{escape(top[0][0])}[/]", f"{top[0][1]:.1%}", others
        )
    return table


def predict_command(
    classifier: Annotated[
        Path,
        typer.Argument(
            help="A classifier.safetensors written by `simclr finetune`.", show_default=False
        ),
    ],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files and/or folders (searched recursively).", show_default=False
        ),
    ] = default_of(PredictConfig, "inputs"),
    file_list: FileListOption = default_of(PredictConfig, "file_list"),
    on_bad_image: OnBadImageOption = default_of(PredictConfig, "on_bad_image"),
    skipped: SkippedOption = default_of(PredictConfig, "skipped"),
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="Classes reported per image.")
    ] = default_of(PredictConfig, "top_k"),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to .csv or .jsonl (by suffix)."),
    ] = None,
    as_json: JsonOption = False,
    batch_size: BatchSizeOption = default_of(PredictConfig, "batch_size"),
    device: DeviceOption = default_of(PredictConfig, "device"),
    quiet: QuietOption = False,
) -> None:
    """Classify images with a fine-tuned classifier.
    [dim]simclr predict classifier.safetensors photo.jpg[/]
    """
    config = PredictConfig(
        classifier=classifier,
        inputs=list(inputs or []),
        top_k=top_k,
        batch_size=batch_size,
        device=device,
        file_list=file_list,
        on_bad_image=on_bad_image,
        skipped=skipped,
    )
    with create_progress(quiet=quiet or as_json) as progress:
        result = predict(config=config, progress=progress)
    if output is not None:
        write_predictions(result, output)
    if as_json:
        document = {
            "classifier": str(classifier),
            "classes": list(result.classes),
            "top_k": result.top_k,
            "output": None if output is None else str(output),
            "images": result.to_records(),
        }
        sys.stdout.write(json.dumps(document) + "\n")
        return
    print_skipped(result.skipped, skipped)
    if output is not None:
        _console.stdout.print(
            f"Wrote top-{result.top_k} predictions of {len(result.paths)} images to "
            f"[bold]{escape(str(output))}[/]",
            highlight=False,
            soft_wrap=True,
        )
    elif not quiet:
        _console.stdout.print(render_table(result))
