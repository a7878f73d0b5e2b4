"""`simclr probe`: flags -> ProbeConfig -> core.probe -> table or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core._threads import default_workers
from ..core.choices import Stem
from ..core.config import ProbeConfig
from ..core.eval.probe import ProbeResult, probe
from . import _console
from ._options import (
    BatchSizeOption,
    DeviceOption,
    JsonOption,
    OnBadImageOption,
    QuietOption,
    SeedOption,
    SkippedOption,
    TrainFolderOption,
    ValFractionOption,
    WorkersOption,
    default_of,
    print_skipped,
)
from ._progress import create_progress

BASELINE = "Baseline (no model file)"

EPILOG = """[bold]Examples[/]

  simclr probe runs/first/model.safetensors --train ./cifar10/train --val ./cifar10/val

  simclr probe runs/first/model.safetensors --train ./labelled --val-fraction 0.2 --json

  simclr probe --backbone resnet18 --random-init --image-size 32 --train ./train --val ./val
"""


def render_table(result: ProbeResult) -> Table:
    """Linear-probe and kNN accuracies, top-1 and top-5."""
    table = Table(
        title=escape(result.model),
        caption=f"{result.n_val} val images · {len(result.classes)} classes · "
        f"{result.n_train} labelled train images",
    )
    table.add_column("evaluation")
    table.add_column("top-1", justify="right")
    table.add_column("top-5", justify="right")
    table.add_row(
        f"linear probe (L2 {result.l2:g})",
        f"[bold]{result.linear['top1']:.1%}[/]",
        f"{result.linear['top5']:.1%}",
    )
    table.add_row("weighted kNN", f"[bold]{result.knn['top1']:.1%}[/]", f"{result.knn['top5']:.1%}")
    return table


def probe_command(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="An encoder model.safetensors written by `simclr pretrain` (leave out for a "
            "baseline).",
            show_default=False,
        ),
    ] = default_of(ProbeConfig, "model"),
    # Keyword-only so that the required --train may follow the optional MODEL argument.
    *,
    train: TrainFolderOption,
    val: Annotated[
        Path | None,
        typer.Option("--val", help="Labelled folder scored; same class sub-folders as --train."),
    ] = default_of(ProbeConfig, "val"),
    val_fraction: ValFractionOption = default_of(ProbeConfig, "val_fraction"),
    backbone: Annotated[
        str | None,
        typer.Option(help="Baseline: a timm model name.", rich_help_panel=BASELINE),
    ] = default_of(ProbeConfig, "backbone"),
    random_init: Annotated[
        bool,
        typer.Option(
            "--random-init", help="Baseline: random weights (seeded).", rich_help_panel=BASELINE
        ),
    ] = default_of(ProbeConfig, "random_init"),
    init_weights: Annotated[
        Path | None,
        typer.Option(
            help="Baseline: local timm .safetensors weights, e.g. supervised ones.",
            rich_help_panel=BASELINE,
        ),
    ] = default_of(ProbeConfig, "init_weights"),
    stem: Annotated[
        Stem, typer.Option(help="Baseline: ResNet stem.", rich_help_panel=BASELINE)
    ] = default_of(ProbeConfig, "stem"),
    image_size: Annotated[
        int,
        typer.Option(help="Baseline: side of the input images.", rich_help_panel=BASELINE),
    ] = default_of(ProbeConfig, "image_size"),
    k: Annotated[
        int,
        typer.Option("--k", help="Neighbours of the kNN vote."),
    ] = default_of(ProbeConfig, "k"),
    knn_temperature: Annotated[
        float, typer.Option(help="Temperature of the kNN vote.")
    ] = default_of(ProbeConfig, "knn_temperature"),
    as_json: JsonOption = False,
    batch_size: BatchSizeOption = default_of(ProbeConfig, "batch_size"),
    # Not ProbeConfig's 0 (the Python default): on the command line, no --workers means half the
    # CPU cores, resolved below as pretrain and finetune resolve theirs.
    workers: WorkersOption = None,
    seed: SeedOption = default_of(ProbeConfig, "seed"),
    device: DeviceOption = default_of(ProbeConfig, "device"),
    on_bad_image: OnBadImageOption = default_of(ProbeConfig, "on_bad_image"),
    skipped: SkippedOption = default_of(ProbeConfig, "skipped"),
    quiet: QuietOption = False,
) -> None:
    """Score an encoder's features: linear probe and weighted kNN, top-1/top-5.
    [dim]simclr probe model.safetensors --train DIR --val DIR[/]
    """
    config = ProbeConfig(
        model=model,
        train=train,
        val=val,
        val_fraction=val_fraction,
        backbone=backbone,
        random_init=random_init,
        init_weights=init_weights,
        stem=stem,
        image_size=image_size,
        k=k,
        knn_temperature=knn_temperature,
        batch_size=batch_size,
        workers=default_workers() if workers is None else workers,
        seed=seed,
        device=device,
        on_bad_image=on_bad_image,
        skipped=skipped,
    )
    with create_progress(quiet=quiet or as_json) as progress:
        result = probe(config=config, progress=progress)
    if not as_json:
        print_skipped(result.skipped, skipped)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    elif quiet:
        _console.stdout.print(
            f"linear top-1 {result.linear['top1']:.4f} · kNN top-1 {result.knn['top1']:.4f}",
            highlight=False,
        )
    else:
        _console.stdout.print(render_table(result))
