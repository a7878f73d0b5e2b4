"""`simclr finetune`: flags -> FinetuneConfig -> core.finetune -> summary or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.choices import Precision
from ..core.config import FinetuneConfig
from ..core.eval.finetune import finetune
from . import _console
from ._options import (
    BatchSizeOption,
    DeviceOption,
    JsonOption,
    ModelArgument,
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

EPILOG = """[bold]Examples[/]

  simclr finetune runs/first/model.safetensors --train ./labelled/train --val ./labelled/val

  simclr finetune runs/first/model.safetensors --train ./train --val ./val --freeze-backbone

  simclr finetune runs/first/model.safetensors --train ./train --val ./val --label-fraction 0.1 \\
      --from-head-layer 1 --epochs 30 --out runs/first/classifier-10pct.safetensors
"""


def finetune_command(
    model: ModelArgument,
    train: TrainFolderOption,
    val: Annotated[
        Path | None,
        typer.Option("--val", help="Labelled folder scored after each epoch; same classes."),
    ] = default_of(FinetuneConfig, "val"),
    val_fraction: ValFractionOption = default_of(FinetuneConfig, "val_fraction"),
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Classifier file to write (default: classifier.safetensors beside MODEL).",
            show_default=False,
        ),
    ] = default_of(FinetuneConfig, "out"),
    epochs: Annotated[
        int,
        typer.Option(help="Passes over the labelled images."),
    ] = default_of(FinetuneConfig, "epochs"),
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Peak learning rate of SGD (default: 0.05 x batch/256, 0.1 x batch/256 with "
            "--freeze-backbone); cosine decay.",
        ),
    ] = default_of(FinetuneConfig, "learning_rate"),
    weight_decay: Annotated[
        float,
        typer.Option(help="Weight decay."),
    ] = default_of(FinetuneConfig, "weight_decay"),
    from_head_layer: Annotated[
        int,
        typer.Option(
            help="Put the classifier after this many projection-head layers (SimCLR v2: 1).",
        ),
    ] = default_of(FinetuneConfig, "from_head_layer"),
    freeze_backbone: Annotated[
        bool,
        typer.Option(
            "--freeze-backbone", help="Train only the classifier (the linear evaluation protocol)."
        ),
    ] = default_of(FinetuneConfig, "freeze_backbone"),
    label_fraction: Annotated[
        float,
        typer.Option(
            help="Keep this class-balanced, seeded share of the train labels (e.g. 0.01, 0.1)."
        ),
    ] = default_of(FinetuneConfig, "label_fraction"),
    batch_size: BatchSizeOption = default_of(FinetuneConfig, "batch_size"),
    precision: Annotated[
        Precision,
        typer.Option(
            help="auto: bf16 where the device runs it natively, fp16 with loss scaling on a GPU "
            "without bf16, else fp32; fp16 also runs on the CPU, slowly."
        ),
    ] = default_of(FinetuneConfig, "precision"),
    device: DeviceOption = default_of(FinetuneConfig, "device"),
    workers: WorkersOption = default_of(FinetuneConfig, "workers"),
    seed: SeedOption = default_of(FinetuneConfig, "seed"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing classifier file.")
    ] = default_of(FinetuneConfig, "force"),
    on_bad_image: OnBadImageOption = default_of(FinetuneConfig, "on_bad_image"),
    skipped: SkippedOption = default_of(FinetuneConfig, "skipped"),
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train a classifier on a pretrained encoder.
    [dim]simclr finetune model.safetensors --train DIR --val DIR[/]

    Writes a classifier.safetensors (backbone + classifier + class names) for `simclr predict`.
    """
    config = FinetuneConfig(
        model=model,
        train=train,
        val=val,
        val_fraction=val_fraction,
        out=out,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        from_head_layer=from_head_layer,
        freeze_backbone=freeze_backbone,
        label_fraction=label_fraction,
        workers=workers,
        seed=seed,
        precision=precision,
        device=device,
        force=force,
        on_bad_image=on_bad_image,
        skipped=skipped,
    )
    with create_progress(quiet=quiet or as_json) as progress:
        result = finetune(config=config, progress=progress)
    if not as_json:
        print_skipped(result.skipped, skipped)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    _console.stdout.print(
        f"Saved [bold]{escape(str(result.classifier_path))}[/] · {result.n_train} labelled "
        f"images · val top-1 {result.top1:.1%} · top-5 {result.top5:.1%} · "
        f"{round(result.seconds)}s",
        highlight=False,
        soft_wrap=True,
    )
    if not quiet:
        _console.stdout.print(
            f"Next: [cyan]simclr predict {escape(str(result.classifier_path))} photo.jpg[/]",
            highlight=False,
            soft_wrap=True,
        )
