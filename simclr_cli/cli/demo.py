"""`simclr demo`: generated shapes -> short pretraining -> kNN table against random init."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core._io import format_duration, parse_duration
from ..core.config import DemoConfig
from ..core.demo import DemoResult, run_demo
from . import _console
from ._options import JsonOption, QuietOption, SeedOption, default_of
from ._progress import create_progress


def render_result(result: DemoResult) -> Table:
    """The kNN accuracies of the pretrained and the random encoder, side by side."""
    table = Table(
        title=f"kNN accuracy on {result.num_val} held-out images "
        f"({len(result.classes)} classes, {result.num_train} labelled neighbours)"
    )
    table.add_column("encoder")
    table.add_column("top-1", justify="right")
    table.add_column("top-5", justify="right")
    table.add_row(
        "random init", f"{result.random_init['top1']:.1%}", f"{result.random_init['top5']:.1%}"
    )
    table.add_row(
        "[bold green]SimCLR pretrained[/]",
        f"[bold]{result.pretrained['top1']:.1%}[/]",
        f"{result.pretrained['top5']:.1%}",
    )
    return table


def demo_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the data and the run.")
    ] = default_of(DemoConfig, "out"),
    time_budget: Annotated[
        str | None,
        typer.Option(
            "--time-budget",
            help=f"Pretraining time (30s, 3m) [default: "
            f"{format_duration(default_of(DemoConfig, 'time_budget'))}, none with --steps "
            f"alone]; the steps are planned from the measured speed.",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            help="Train exactly this many steps instead (with --time-budget: at most this many).",
            show_default=False,
        ),
    ] = default_of(DemoConfig, "max_steps"),
    seed: SeedOption = default_of(DemoConfig, "seed"),
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pretrain on generated shapes and show that it learned. [dim]simclr demo[/]

    Generates a small image set (six shapes in random colours), pretrains for 90 seconds (the
    same on a slow CPU as on a GPU: the steps follow the measured speed), and compares kNN
    accuracy with a randomly initialised encoder.
    """
    if time_budget is not None:
        budget: float | None = parse_duration(time_budget)
    else:  # The default budget, or exactly --steps steps when only they are given.
        budget = default_of(DemoConfig, "time_budget") if steps is None else None
    config = DemoConfig(out=out, time_budget=budget, max_steps=steps, seed=seed)
    with create_progress(quiet=quiet or as_json) as progress:
        result = run_demo(config=config, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    _console.stdout.print(render_result(result))
    gain = result.pretrained["top1"] - result.random_init["top1"]
    _console.stdout.print(
        f"SimCLR gained [bold]{gain * 100:+.1f}[/] points of top-1 in "
        f"{result.pretrain.seconds:.0f} s of training. Model: "
        f"[bold]{escape(str(result.pretrain.model_path))}[/]",
        highlight=False,
        soft_wrap=True,
    )
    _console.stdout.print(
        f"Try: [cyan]simclr embed {escape(str(result.pretrain.model_path))} "
        f"{escape(str(Path(config.out) / 'data' / 'val' / 'circle'))}[/]",
        highlight=False,
        soft_wrap=True,
    )
