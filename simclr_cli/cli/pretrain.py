"""`simclr pretrain`: flags -> PretrainConfig -> core.pretrain -> summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..core._io import format_duration, parse_duration
from ..core.choices import (
    BadImagePolicy,
    CacheMode,
    HeadVersion,
    LoggerName,
    LRScaling,
    OptimizerName,
    Precision,
    Preset,
    Stem,
)
from ..core.config import PretrainConfig
from ..core.constants import DEFAULT_BATCH_SIZE
from ..core.distributed.ranks import is_main_process
from ..core.errors import RunInterrupted
from ..core.progress import ProgressCallback, ProgressEvent
from ..core.train.loop import pretrain
from ..core.train.run_folder import SKIPPED_FILE
from . import _console
from ._options import (
    PRESET_AUTO_TEXT,
    SMALL_IMAGE_TEXT,
    STRENGTH_DEFAULTS_TEXT,
    STRENGTH_RANGE_TEXT,
    DeviceOption,
    FileListOption,
    ImageSizeOption,
    JsonOption,
    QuietOption,
    SeedOption,
    WorkersOption,
    default_of,
)
from ._progress import create_progress
from ._started import command_started_at

MODEL = "Model"
AUGMENT = "Augmentation"
OPTIMISE = "Optimisation"
RUN = "Run"
PROCESSES = "Processes"

EPILOG = """[bold]Examples[/]

  simclr pretrain ./images --out runs/first

  simclr pretrain ./cifar/train --image-size 32 --time-budget 10m --val ./cifar/val

  simclr pretrain ./cifar/train --image-size 32 --epochs 50 --batch-size 512 --out runs/cifar

  simclr pretrain ./photos --backbone resnet50 --optimizer lars --lr-scaling sqrt --epochs 200

  simclr pretrain ./photos --out runs/long --checkpoint-every 30m --resume
  simclr pretrain ./photos --batch-size 4096 --accumulate 16   # 4096 images in the memory of 256
  simclr pretrain ./images --gpus 4 --batch-size 1024   [dim]# 256 images per GPU[/]

  [dim]# On each of 2 machines with 8 GPUs:[/]
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-id run1
  --rdzv-endpoint HOST:PORT -m simclr_cli pretrain ./images --batch-size 4096
  simclr pretrain ./huge-folder --cache off --workers 8 --compile
  simclr pretrain --config runs/first/config.toml --out runs/again   [dim]# repeat a run[/]
  simclr pretrain ./images --logger csv --logger tensorboard
  simclr pretrain ./photos-2023 ./photos-2024 --file-list more.txt   [dim]# several inputs[/]
"""


def plan_table(rows: tuple[tuple[str, str, str], ...]) -> Table:
    """The run's plan as one short table: setting, value, and how it was chosen."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    table.title = "Plan"
    table.add_column("setting", style="bold")
    table.add_column("value")
    table.add_column("chosen", style="dim")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def with_plan_table(progress: ProgressCallback) -> ProgressCallback:
    """A progress callback that prints the ``plan`` event as a table on stderr, then draws."""

    def show(event: ProgressEvent) -> None:
        if event.kind == "plan":
            _console.stderr.print(plan_table(event.rows), highlight=False)
        else:
            progress(event)

    return show


def pretrain_command(
    data: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Folders of images (searched recursively; labels are ignored) and/or image "
            "files. Or WebDataset tar shards: a .tar, a folder of them, or a pattern such as "
            "'shards/shard-{000000..000099}.tar'.",
            show_default=False,
        ),
    ] = None,
    file_list: FileListOption = default_of(PretrainConfig, "file_list"),
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder to write.", rich_help_panel=RUN)
    ] = default_of(PretrainConfig, "out"),
    backbone: Annotated[
        str, typer.Option(help="Any timm model name.", rich_help_panel=MODEL)
    ] = default_of(PretrainConfig, "backbone"),
    stem: Annotated[
        Stem,
        typer.Option(
            help="ResNet stem; auto gives the CIFAR stem (3x3 stride 1, no max-pool) at "
            f"{SMALL_IMAGE_TEXT} and below.",
            rich_help_panel=MODEL,
        ),
    ] = default_of(PretrainConfig, "stem"),
    init_weights: Annotated[
        Path | None,
        typer.Option(help="Local timm .safetensors weights to start from.", rich_help_panel=MODEL),
    ] = default_of(PretrainConfig, "init_weights"),
    head: Annotated[
        HeadVersion,
        typer.Option(
            help="Projection head: v1 (2 layers) or v2 (3 layers).", rich_help_panel=MODEL
        ),
    ] = default_of(PretrainConfig, "head"),
    head_hidden_dim: Annotated[
        int | None,
        typer.Option(
            help="Hidden size of the head (default: the backbone's feature size).",
            rich_help_panel=MODEL,
        ),
    ] = default_of(PretrainConfig, "head_hidden_dim"),
    head_output_dim: Annotated[
        int, typer.Option(help="Size of the projections.", rich_help_panel=MODEL)
    ] = default_of(PretrainConfig, "head_output_dim"),
    image_size: ImageSizeOption = default_of(PretrainConfig, "image_size"),
    preset: Annotated[
        Preset,
        typer.Option(
            help="Augmentations: imagenet (with blur) or cifar (without); auto picks "
            f"{PRESET_AUTO_TEXT}.",
            rich_help_panel=AUGMENT,
        ),
    ] = default_of(PretrainConfig, "preset"),
    color_strength: Annotated[
        float | None,
        typer.Option(
            help=f"Colour distortion strength s {STRENGTH_RANGE_TEXT} (default: "
            f"{STRENGTH_DEFAULTS_TEXT}).",
            rich_help_panel=AUGMENT,
        ),
    ] = default_of(PretrainConfig, "color_strength"),
    temperature: Annotated[
        float,
        typer.Option(
            help="Temperature of the NT-Xent loss (the paper's ImageNet value; on CIFAR-10 it "
            "beat 0.5, 0.2 and 0.05 in our short runs).",
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "temperature"),
    optimizer: Annotated[
        OptimizerName,
        typer.Option(
            help="Optimiser; LARS excludes biases and norms from adaptation and weight decay.",
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "optimizer"),
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Base learning rate, as the paper's flag means it: the peak is base x batch/256 "
            "with --lr-scaling linear, base x sqrt(batch) with sqrt (default base: lars 0.3 "
            "linear, 0.075 sqrt; sgd 0.06 linear, 0.00375 sqrt; adamw 0.001 linear, 6.25e-05 "
            "sqrt). The plan table shows the peak.",
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "learning_rate"),
    lr_scaling: Annotated[
        LRScaling,
        typer.Option(
            help="How the peak grows with the batch: sqrt: --lr x sqrt(batch) (LARS: 0.075 x "
            "sqrt(batch), 1.2 at batch 256); linear: --lr x batch/256. sqrt learned faster in "
            "every short run we measured (benchmarks/RESULTS.md).",
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "lr_scaling"),
    weight_decay: Annotated[
        float | None,
        typer.Option(
            help="Weight decay (default: 1e-6 lars, 5e-4 sgd, 1e-4 adamw).",
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "weight_decay"),
    warmup_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of the steps spent in linear warm-up before cosine decay (default 0.1 "
            "when --warmup-epochs is not given).",
            rich_help_panel=OPTIMISE,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "warmup_fraction"),
    warmup_epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs of linear warm-up (the paper: 10). When given it decides: epochs x "
            "steps per epoch, capped below the total steps; else --warmup-fraction of the total "
            "steps. Give one of the two.",
            rich_help_panel=OPTIMISE,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "warmup_epochs"),
    epochs: Annotated[
        int, typer.Option(help="Passes over the data.", rich_help_panel=OPTIMISE)
    ] = default_of(PretrainConfig, "epochs"),
    max_steps: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many steps (overrides --epochs).", rich_help_panel=OPTIMISE
        ),
    ] = default_of(PretrainConfig, "max_steps"),
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help=f"Images per step, over all processes [default: {DEFAULT_BATCH_SIZE}, or the "
            "largest batch a smaller folder fills].",
            show_default=False,
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "batch_size"),
    accumulate: Annotated[
        int,
        typer.Option(
            metavar="K",
            help="Forward each batch in K micro-batches with gradient caching: the loss still "
            "compares all 2 x batch-size views, activation memory is that of batch-size / K, "
            "each step costs one extra forward pass. Batch norm statistics are per micro-batch "
            "(of every rank, with several processes). With --gpus/--cpu-processes each "
            "process splits its share of the batch.",
            rich_help_panel=OPTIMISE,
        ),
    ] = default_of(PretrainConfig, "accumulate"),
    precision: Annotated[
        Precision,
        typer.Option(
            help="auto: bf16 where the device runs it natively, fp16 with loss scaling on a GPU "
            "without bf16, else fp32; fp16 also runs on the CPU, slowly.",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "precision"),
    device: DeviceOption = default_of(PretrainConfig, "device"),
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            metavar="N|all",
            help="Train on N GPUs of this machine, one process each (NCCL), or on all of them: "
            "--gpus all. --batch-size is the global batch, split over the GPUs.",
            rich_help_panel=PROCESSES,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "gpus"),
    cpu_processes: Annotated[
        int | None,
        typer.Option(
            "--cpu-processes",
            metavar="N",
            help="Train in N processes on the CPU (gloo), for development or many-core servers.",
            rich_help_panel=PROCESSES,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "cpu_processes"),
    sync_bn: Annotated[
        bool,
        typer.Option(
            "--sync-bn/--no-sync-bn",
            help="Batch norm statistics over the global batch (the paper's global BN) or per "
            "process.",
            rich_help_panel=PROCESSES,
        ),
    ] = default_of(PretrainConfig, "sync_batch_norm"),
    workers: WorkersOption = default_of(PretrainConfig, "workers"),
    cache: Annotated[
        CacheMode,
        typer.Option(
            help="Keep decoded images in RAM after the first epoch: auto (when they fit half "
            "the free memory), ram (always) or off (decode every epoch).",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "cache"),
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model (pays on a GPU; on the CPU the compile time was not "
            "won back in our measurements).",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "compile"),
    seed: SeedOption = default_of(PretrainConfig, "seed"),
    log_every: Annotated[
        int, typer.Option(help="Steps between lines of metrics.jsonl.", rich_help_panel=RUN)
    ] = default_of(PretrainConfig, "log_every"),
    loggers: Annotated[
        list[LoggerName],
        typer.Option(
            "--logger",
            help="Also log the metrics.jsonl values to RUN/metrics.csv (csv) or RUN/tensorboard/ "
            "(tensorboard, an optional extra); repeat for both.",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "loggers"),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace the files of an existing run in --out.", rich_help_panel=RUN
        ),
    ] = default_of(PretrainConfig, "force"),
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its checkpoint (same settings required; "
            "starts it when there is none yet).",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "resume"),
    checkpoint_every: Annotated[
        str,
        typer.Option(
            "--checkpoint-every",
            help="Save RUN/checkpoint.safetensors every N steps (500) or every period (30s, "
            "10m, 1h30m), and at the end.",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "checkpoint_every"),
    on_bad_image: Annotated[
        BadImagePolicy,
        typer.Option(
            "--on-bad-image",
            help="skip: leave unreadable files out (listed in RUN/skipped.txt); fail: stop.",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "on_bad_image"),
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Fit the run into this wall time, saving included (265s, 10m, 1h30m); the step "
            "count is planned from the measured speed and overrides --epochs (rank 0 plans "
            "for every process).",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "time_budget"),
    val: Annotated[
        Path | None,
        typer.Option(
            help="Labelled folder (one sub-folder per class) for an online kNN monitor.",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = default_of(PretrainConfig, "val"),
    eval_every: Annotated[
        int,
        typer.Option(
            help="Steps between kNN evaluations on --val (kept under 10% of the time).",
            rich_help_panel=RUN,
        ),
    ] = default_of(PretrainConfig, "eval_every"),
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pretrain an encoder with SimCLR on a folder of images. [dim]simclr pretrain ./images[/]

    Writes RUN/model.safetensors (backbone + head + metadata), RUN/metrics.jsonl,
    RUN/config.toml and RUN/checkpoint.safetensors. Ctrl-C (or SIGTERM) stops after the current
    step with a checkpoint; --resume continues from it.
    """
    inputs = list(data or [])
    config = PretrainConfig(
        data=inputs[0] if inputs else None,
        extra_data=inputs[1:],
        file_list=file_list,
        out=out,
        backbone=backbone,
        stem=stem,
        init_weights=init_weights,
        head=head,
        head_hidden_dim=head_hidden_dim,
        head_output_dim=head_output_dim,
        preset=preset,
        color_strength=color_strength,
        image_size=image_size,
        temperature=temperature,
        optimizer=optimizer,
        learning_rate=lr,
        lr_scaling=lr_scaling,
        weight_decay=weight_decay,
        warmup_fraction=warmup_fraction,
        warmup_epochs=warmup_epochs,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        accumulate=accumulate,
        workers=workers,
        seed=seed,
        precision=precision,
        device=device,
        gpus=gpus,
        cpu_processes=cpu_processes,
        sync_batch_norm=sync_bn,
        log_every=log_every,
        force=force,
        resume=resume,
        checkpoint_every=checkpoint_every,
        on_bad_image=on_bad_image,
        time_budget=None if time_budget is None else parse_duration(time_budget),
        val=val,
        eval_every=eval_every,
        cache=cache,
        compile=compile_model,
        loggers=list(loggers),
        started_at=command_started_at(),
    )
    # Under torchrun every rank runs this command; rank 0 alone draws and prints. The plan table
    # comes first, with the progress display: --quiet and --json hide both.
    main = is_main_process()
    drawn = main and not (quiet or as_json)
    try:
        with create_progress(quiet=not drawn) as progress:
            result = pretrain(
                config=config, progress=with_plan_table(progress) if drawn else progress
            )
    except RunInterrupted as stop:
        # A requested stop, not an error: say where the checkpoint is and how to continue.
        if main:
            _console.stderr.print(
                f"[yellow]{escape(str(stop))}[/]", highlight=False, soft_wrap=True
            )
        raise typer.Exit(stop.exit_code) from None
    if not main:
        return
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    minutes, seconds = divmod(round(result.seconds), 60)
    line = f"Saved [bold]{escape(str(result.model_path))}[/] · {result.steps} steps · "
    if result.steps > result.resumed_from:  # A resumed run that was already finished trains none.
        line += f"loss {result.final_loss:.4f} · {result.images_per_second:.0f} img/s · "
    line += f"{minutes}m{seconds:02d}s · data wait {result.data_wait:.0%}"
    if result.resumed_from:
        line += f" · resumed from step {result.resumed_from}"
    if config.time_budget is not None:
        line += (
            f" · {format_duration(result.total_seconds)} of a "
            f"{format_duration(config.time_budget)} budget"
        )
    if result.skipped_images:
        listed = escape(str(result.run_dir / SKIPPED_FILE))
        line += f" · [yellow]{result.skipped_images} unreadable images skipped ({listed})[/]"
    if result.nonfinite_steps:
        line += f" · [yellow]{result.nonfinite_steps} non-finite steps skipped[/]"
    if result.scaler_skipped_steps:
        line += f" · {result.scaler_skipped_steps} steps skipped by the fp16 loss scaler"
    _console.stdout.print(line, highlight=False, soft_wrap=True)
    if not quiet:
        _console.stdout.print(
            f"Next: [cyan]simclr embed {escape(str(result.model_path))} photo.jpg[/]",
            highlight=False,
            soft_wrap=True,
        )
