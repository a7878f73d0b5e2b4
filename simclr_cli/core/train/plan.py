"""The plan of a pretraining run: every ``auto`` of its flags resolved, in one place.

``plan_run`` checks the flags and the data, then decides what the flags leave open: the processes
and the batch of each rank, the device, the precision, the memory format, the ResNet stem, the
augmentation, the data workers, the intra-op threads, the image cache, the step count, the
warm-up and the learning rate. Nothing is built or written: the loop builds from the plan, shows
it as a table (a ``plan`` progress event) and saves it under ``[plan]`` in ``config.toml``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import _env
from .._io import format_duration
from .._runtime import resolve_device, resolve_precision, use_channels_last
from .._threads import default_workers, planned_threads
from ..augment.recipe import DEFAULT_COLOR_STRENGTH, resolve_preset
from ..choices import CacheMode, Precision, Preset, Stem
from ..config import PretrainConfig, config_to_dict
from ..constants import DEFAULT_BATCH_SIZE
from ..data.checks import BadImage, describe_bad_images, refuse_bad_images, scan_images
from ..data.files import resolve_inputs
from ..data.index import index_training_images
from ..data.loader import machine_cache_budget_bytes
from ..data.shards import ShardIndex, index_shards, is_shard_input
from ..distributed.ranks import (
    ProcessPlan,
    RankContext,
    per_rank_workers,
    plan_processes,
    rank_context,
    threads_per_rank,
)
from ..errors import ConfigError, DataError
from ..model.backbone import plan_stem
from ..progress import ProgressCallback, null_progress
from .budget import budget_stem
from .calibrate import Calibration
from .image_size import ImageSizeChoice, plan_image_size
from .loggers import check_loggers
from .optimizers import DEFAULT_WEIGHT_DECAY, scaled_learning_rate
from .run_folder import saved_settings

#: Share of the steps spent in warm-up when neither --warmup-fraction nor --warmup-epochs is given.
DEFAULT_WARMUP_FRACTION = 0.1


@dataclass(frozen=True)
class RunPlan:
    """What a pretraining run decided before building anything.

    Attributes:
        images: The training images that passed the header scan: a ``FileIndex`` (flat arrays
            that the loader workers share without copying), or the image members of tar shards
            (a ``ShardIndex``).
        bad_images: Files the scan found unusable (skipped and listed, or refused).
        processes: How the run is spread over processes (``plan_processes``).
        context: This process's place in the job (``SINGLE_PROCESS`` outside one).
        batch_size: The global batch: ``--batch-size``, else the default or what the data fills.
        batch_fitted: Whether the batch was lowered to fit a folder smaller than the default.
        batch_per_rank: Images of each step on each rank: the global batch over the world size.
        image_size: Side of the training views: ``--image-size``, else what ``auto`` chose.
        image_size_choice: How the size was chosen (``image_size.py``).
        device: Where this process trains.
        precision: The forward pass's precision, never ``auto``.
        channels_last: Whether the model and its input are channels-last (NHWC).
        stem: The ResNet stem, never ``auto``.
        preset: The augmentation preset, never ``auto``.
        color_strength: The colour distortion strength s.
        workers: Decoding processes of this rank.
        threads: Intra-op threads of this process.
        cache: Where decoded images live between epochs.
        cache_budget: Bytes ``--cache auto`` may fill on this machine, all its ranks together
            (None for ``ram`` and ``off``); each rank gets ``cache_budget_per_rank``.
        total_steps: Optimiser steps; a time budget re-plans them from the measured speed.
        warmup_steps: Steps of linear warm-up.
        peak_learning_rate: The learning rate after warm-up, scaled with the batch size.
        weight_decay: The weight decay of the optimiser.
        speed: How precision and memory format were chosen (``calibrate.py``); None until the
            loop has decided (by measuring, from the cache, or by rule).
    """

    images: Sequence[Path] | ShardIndex = field(repr=False)
    bad_images: tuple[BadImage, ...] = field(repr=False)
    processes: ProcessPlan
    context: RankContext
    batch_size: int
    batch_fitted: bool
    batch_per_rank: int
    image_size: int
    image_size_choice: ImageSizeChoice
    device: torch.device
    precision: Precision
    channels_last: bool
    stem: Stem
    preset: Preset
    color_strength: float
    workers: int
    threads: int
    cache: CacheMode
    cache_budget: int | None
    total_steps: int
    warmup_steps: int
    peak_learning_rate: float
    weight_decay: float
    speed: Calibration | None = None

    @property
    def num_images(self) -> int:
        """Images the run trains on."""
        return len(self.images)

    @property
    def world_size(self) -> int:
        """Processes in the whole job."""
        return self.processes.world_size

    @property
    def cache_budget_per_rank(self) -> int | None:
        """This rank's part of the machine's cache budget: the ranks on it share it equally."""
        if self.cache_budget is None:
            return None
        return self.cache_budget // self.context.local_world_size

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the model's weights and input."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def to_table(self) -> dict[str, Any]:
        """The ``[plan]`` table of ``config.toml``: plain values, steps and learning rate first."""
        return {
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "peak_learning_rate": self.peak_learning_rate,
            "weight_decay": self.weight_decay,
            "num_images": self.num_images,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "batch_per_rank": self.batch_per_rank,
            "image_size": self.image_size,
            "device": self.device.type,
            "precision": self.precision.value,
            "channels_last": self.channels_last,
            "stem": self.stem.value,
            "preset": self.preset.value,
            "color_strength": self.color_strength,
            "workers": self.workers,
            "threads": self.threads,
            "cache": self.cache.value,
            **(self.speed.to_table() if self.speed is not None else {}),
        }


def plan_steps(*, num_images: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Optimiser steps of the run: ``max_steps`` if given, else whole epochs of full batches."""
    if max_steps is not None:
        return max_steps
    return epochs * (num_images // batch_size)


def plan_warmup(
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: int | None,
    warmup_fraction: float | None,
) -> int:
    """Steps of linear warm-up: ``--warmup-epochs`` when given, else ``--warmup-fraction``.

    Warm-up epochs count whole epochs of ``steps_per_epoch`` steps, capped below the total so
    that the run always reaches its peak rate; the fraction (0.1 when neither is given) is a share
    of the total steps, rounded.

    Args:
        total_steps: Optimiser steps of the run.
        steps_per_epoch: Full batches in one pass over the data.
        warmup_epochs: The ``--warmup-epochs`` flag, or None.
        warmup_fraction: The ``--warmup-fraction`` flag, or None for the default.

    Returns:
        The warm-up steps, from 0 to ``total_steps - 1`` (0 for a run of at most one step).
    """
    if warmup_epochs is not None:
        return max(0, min(warmup_epochs * steps_per_epoch, total_steps - 1))
    fraction = DEFAULT_WARMUP_FRACTION if warmup_fraction is None else warmup_fraction
    return round(fraction * total_steps)


def fit_batch_size(*, requested: int | None, num_images: int, multiple: int) -> tuple[int, bool]:
    """The global batch: ``--batch-size`` when given, else the default or what the data fills.

    A folder with fewer images than the default batch trains with the largest batch it fills
    (a multiple of the processes times ``--accumulate``, so that it splits evenly) instead of
    being refused; only an explicit ``--batch-size`` larger than the data is an error.

    Args:
        requested: The ``--batch-size`` flag, or None.
        num_images: Images that passed the header scan.
        multiple: What the batch must be a multiple of (world size x accumulate).

    Returns:
        The batch and whether it was lowered to fit the data.

    Raises:
        DataError: When the data holds fewer images than an explicit batch, or too few for any
            batch (two images per process and micro-batch).
    """
    if requested is not None:
        if num_images < requested:
            raise DataError(
                f"the data has {num_images} images, fewer than --batch-size {requested}; lower "
                f"--batch-size (or leave it out to fit the data) or add images"
            )
        return requested, False
    if num_images >= DEFAULT_BATCH_SIZE:
        return DEFAULT_BATCH_SIZE // multiple * multiple, False
    fitted = num_images // multiple * multiple
    if fitted < max(2, multiple):
        raise DataError(
            f"the data has {num_images} images, too few for a batch of two images per process "
            f"and micro-batch; add images"
        )
    return fitted, True


def plan_run(*, config: PretrainConfig, progress: ProgressCallback = null_progress) -> RunPlan:
    """Check a run's flags and data and resolve every ``auto`` of it.

    The checks come cheapest first: the flags, then the processes and the device, then the data
    (every file's header is read). Nothing is written, and in a process that will start others
    nothing is built either. In a rank of a GPU job the rank's GPU becomes the current device.

    Args:
        config: The run's settings.
        progress: Receives the listing and header scan of the data when they take over a second
            (a second run over an unchanged folder loads both from the cache, see index.py).

    Returns:
        The plan.

    Raises:
        SimCLRError: For bad flags (``ConfigError``), a backbone that does not
            exist or cannot take the stem (``BackboneError``), or data that cannot train
            (``DataError``).
    """
    config.validate()
    check_loggers(config.loggers)
    processes = plan_processes(config)
    device = resolve_device(processes.device)
    per_rank = (config.batch_size or 0) // processes.world_size
    if config.batch_size is not None and per_rank % config.accumulate:
        # Every rank splits its share of the batch into the same K micro-batches.
        multiple = processes.world_size * config.accumulate
        raise ConfigError(
            f"--batch-size {config.batch_size} gives {per_rank} images to each of "
            f"{processes.world_size} processes, which is not divisible by --accumulate "
            f"{config.accumulate}; use a batch size that is a multiple of {multiple}",
            flag="--batch-size",
        )
    precision = resolve_precision(config.precision, device)
    context = rank_context()
    # The other ranks of a job load what the launcher (or rank 0) listed, silently.
    images, bad_images = _training_images(config, progress if context.is_main else null_progress)
    batch_size, batch_fitted = fit_batch_size(
        requested=config.batch_size,
        num_images=len(images),
        multiple=processes.world_size * config.accumulate,
    )

    # Where the batch is computed: the machine's cores are shared among the ranks on it.
    workers = default_workers() if config.workers is None else config.workers
    if config.workers is None:
        workers = per_rank_workers(workers, context)
    threads = threads_per_rank(context, processes) or planned_threads(device)

    # What is learned: the size of the views (what the budget affords), the stem (the fast one
    # within a short time budget) and the augmentation.
    size_choice = plan_image_size(
        requested=_requested_image_size(config),
        images=images,
        device=device,
        time_budget=_training_seconds(config),
        batch_size=batch_size,
        backbone=config.backbone,
        head_output_dim=config.head_output_dim,
    )
    image_size = size_choice.image_size
    stem = plan_stem(
        budget_stem(config.stem, config.time_budget),
        backbone=config.backbone,
        image_size=image_size,
    )
    preset = resolve_preset(config.preset, image_size=image_size)
    color_strength = config.color_strength
    if color_strength is None:
        color_strength = DEFAULT_COLOR_STRENGTH[preset]

    # How long and how fast: steps, warm-up and the learning rate scaled with the global batch.
    total_steps = plan_steps(
        num_images=len(images),
        batch_size=batch_size,
        epochs=config.epochs,
        max_steps=config.max_steps,
    )
    peak_learning_rate = scaled_learning_rate(
        config.optimizer,
        batch_size=batch_size,
        base=config.learning_rate,
        scaling=config.lr_scaling,
    )
    weight_decay = config.weight_decay
    if weight_decay is None:
        weight_decay = DEFAULT_WEIGHT_DECAY[config.optimizer]
    return RunPlan(
        images=images,
        bad_images=tuple(bad_images),
        processes=processes,
        context=context,
        batch_size=batch_size,
        batch_fitted=batch_fitted,
        batch_per_rank=batch_size // processes.world_size,
        image_size=image_size,
        image_size_choice=size_choice,
        device=device,
        precision=precision,
        channels_last=use_channels_last(precision, device),
        stem=stem,
        preset=preset,
        color_strength=color_strength,
        workers=workers,
        threads=threads,
        cache=config.cache,
        cache_budget=machine_cache_budget_bytes() if config.cache is CacheMode.auto else None,
        total_steps=total_steps,
        warmup_steps=plan_warmup(
            total_steps=total_steps,
            steps_per_epoch=len(images) // batch_size,
            warmup_epochs=config.warmup_epochs,
            warmup_fraction=config.warmup_fraction,
        ),
        peak_learning_rate=peak_learning_rate,
        weight_decay=weight_decay,
    )


def _requested_image_size(config: PretrainConfig) -> int | None:
    # --resume continues at the size the run started with, whatever auto would say today.
    if config.image_size is not None or not config.resume:
        return config.image_size
    saved = saved_settings(config.out)
    size = None if saved is None else saved.get("image_size")
    return size if isinstance(size, int) else None


def seconds_spent(config: PretrainConfig) -> float:
    """Seconds since the command started (``started_at``); 0 for a Python caller's run."""
    return 0.0 if config.started_at is None else max(0.0, time.time() - config.started_at)


def _training_seconds(config: PretrainConfig) -> float | None:
    # The budget counts from the command's start; what is already spent is not training time.
    if config.time_budget is None:
        return None
    return max(1.0, config.time_budget - seconds_spent(config))


def _training_images(
    config: PretrainConfig, progress: ProgressCallback
) -> tuple[Sequence[Path] | ShardIndex, list[BadImage]]:
    # Files that cannot be images at all are found now, before the first step: for one folder
    # through its cached file index, for tar shards from their headers (with missing or damaged
    # shards), for several inputs and file lists once resolved (listed files that are missing).
    paths: Sequence[Path] | ShardIndex
    single = config.data if config.file_list is None and not config.extra_data else None
    if single is not None and is_shard_input(single):
        paths, bad_images = index_shards(single)
    elif single is not None and Path(single).is_dir():
        scanned = index_training_images(single, progress=progress)
        paths, bad_images = scanned.images, list(scanned.bad)
    else:
        resolved = resolve_inputs(config.inputs, file_list=config.file_list)
        paths, bad_images = scan_images(resolved.paths)
        bad_images = [*resolved.missing, *bad_images]
    label = config.data_label()
    if config.on_bad_image.value == "fail":
        refuse_bad_images(bad_images, label)
    if not paths:
        raise DataError(
            f"none of the images in {label} could be decoded "
            f"({describe_bad_images(bad_images)}); check the files"
        )
    return paths, bad_images


def _resolved_inputs(config: PretrainConfig) -> str | list[str] | None:
    inputs = [str(Path(item).resolve()) for item in config.inputs]
    if not inputs:
        return None
    return inputs[0] if len(inputs) == 1 else inputs


def resolved_settings(config: PretrainConfig, plan: RunPlan) -> dict[str, Any]:
    """The flags with the plan's choices for their ``auto`` values: ``[pretrain]`` of a run.

    With the step plan added, this is what a checkpoint records and ``--resume`` compares.
    """
    settings = config_to_dict(config)
    settings.pop("extra_data", None)
    settings.update(
        {
            # Several inputs are one list under `data`, as the command line takes them.
            "data": _resolved_inputs(config),
            "file_list": None
            if config.file_list is None or str(config.file_list) == "-"
            else str(Path(config.file_list).resolve()),
            "batch_size": plan.batch_size,
            "preset": plan.preset.value,
            "color_strength": plan.color_strength,
            "stem": plan.stem.value,
            "workers": plan.workers,
            "precision": plan.precision.value,
            "device": plan.device.type,
            "world_size": plan.world_size,
            "cache": plan.cache.value,
        }
    )
    if config.warmup_epochs is None and config.warmup_fraction is None:
        # The default written out, so that `--config RUN/config.toml` repeats the same warm-up.
        settings["warmup_fraction"] = DEFAULT_WARMUP_FRACTION
    return settings


def plan_rows(plan: RunPlan, config: PretrainConfig) -> tuple[tuple[str, str, str], ...]:
    """The plan as a short table: ``(setting, value, how it was chosen)`` rows.

    The third column says ``auto`` where the run chose, and why where a rule decided.
    """

    def chosen(value: object) -> str:
        return "auto" if value is None or getattr(value, "value", value) == "auto" else ""

    skipped = f"{len(plan.bad_images)} unreadable files skipped" if plan.bad_images else ""
    if plan.world_size > 1:
        processes = f"{plan.world_size} ({plan.processes.backend})"
        processes_how = f"{plan.batch_per_rank} images per rank and step"
    else:
        processes, processes_how = "1", ""
    channels_set = _env.channels_last() is not None
    threads_how = _env.THREADS.name if _env.threads() is not None else ""
    if threads_per_rank(plan.context, plan.processes) is not None:
        threads_how = "the cores shared among the ranks"
    stem_how = chosen(config.stem)
    if budget_stem(config.stem, config.time_budget) is not config.stem:
        stem_how = "auto: the fast stem within a time budget under 1h"
    memory_format = "channels-last" if plan.channels_last else "contiguous"
    layout_how = _env.CHANNELS_LAST.name if channels_set else "auto"
    speed_how = ""
    if plan.speed is not None and plan.speed.how in ("measured", "cached"):
        speeds = ", ".join(
            f"{label} {ips:.0f}" for label, ips in plan.speed.images_per_second.items()
        )
        speed_how = f"{plan.speed.how}: {speeds} img/s"
        if plan.speed.rejected:
            speed_how += "; " + "; ".join(f"no {k}: {v}" for k, v in plan.speed.rejected.items())
        if not channels_set:
            layout_how = plan.speed.how
    elif plan.speed is not None and config.precision is Precision.auto:
        speed_how = f"auto, {plan.speed.how}"
    augmentation = f"{plan.preset.value}, colour strength {plan.color_strength:g}"
    cache, cache_how = plan.cache.value, ""
    if plan.cache_budget is not None:
        cache = f"RAM up to {plan.cache_budget / 1e9:.1f} GB per machine, else stream"
        cache_how = "auto"
    if plan.cache is not CacheMode.off and plan.world_size > 1:
        # Each rank caches its own shard, so a machine holds every image at most once.
        share = f"per rank 1/{plan.world_size} of the images"
        per_rank = plan.cache_budget_per_rank
        if per_rank is not None:
            share += f", {per_rank / 1e9:.1f} GB"
        cache_how = f"{cache_how}; {share}" if cache_how else share
    if config.time_budget is not None:
        steps_how = f"re-planned to fit {format_duration(config.time_budget)}"
    elif config.max_steps is not None:
        steps_how = "--max-steps"
    else:
        steps_how = f"{config.epochs} epochs of {plan.num_images // plan.batch_size} batches"
    workers_how = chosen(config.workers)
    if config.workers is None and plan.context.distributed:
        workers_how = "auto, per rank"
    scaling = f"{config.lr_scaling.value} scaling to batch {plan.batch_size}"
    if config.learning_rate is not None:
        scaling = f"--lr {config.learning_rate:g}, {scaling}"
    if config.warmup_epochs is not None:
        warmup_how = f"--warmup-epochs {config.warmup_epochs}"
    else:
        fraction = config.warmup_fraction
        warmup_how = f"{DEFAULT_WARMUP_FRACTION if fraction is None else fraction:g} of the steps"
    size_how = plan.image_size_choice.how
    batch_how = chosen(config.batch_size)
    if plan.batch_fitted:
        batch_how = f"auto: the {plan.num_images} images fill no batch of {DEFAULT_BATCH_SIZE}"
    return (
        ("images", str(plan.num_images), skipped),
        ("batch", str(plan.batch_size), batch_how),
        ("image size", f"{plan.image_size} px", size_how),
        ("processes", processes, processes_how),
        ("device", plan.device.type, chosen(config.device)),
        ("precision", plan.precision.value, speed_how or chosen(config.precision)),
        ("memory format", memory_format, layout_how),
        ("stem", plan.stem.value, stem_how),
        ("augmentation", augmentation, chosen(config.preset) or chosen(config.color_strength)),
        ("workers", str(plan.workers), workers_how),
        ("threads", str(plan.threads), threads_how),
        ("cache", cache, cache_how),
        ("steps", str(plan.total_steps), steps_how),
        ("learning rate", f"{plan.peak_learning_rate:.4g} peak", scaling),
        ("warm-up", f"{plan.warmup_steps} steps", warmup_how),
        ("weight decay", f"{plan.weight_decay:g}", chosen(config.weight_decay)),
    )
