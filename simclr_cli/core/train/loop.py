"""SimCLR pretraining: the training loop behind ``simclr pretrain``.

The loop is flat, in the manner of nanoGPT: small pure helpers above, one function below that
reads top to bottom. Extensions (ranks, fused loss, augmentation on the device, resume) replace
one block each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .. import _io
from .._runtime import (
    autocast,
    resolve_device,
    resolve_precision,
    seed_everything,
    use_channels_last,
)
from .._threads import use_idle_cores
from ..augment.batched import BatchAugmenter
from ..augment.presets import (
    DEFAULT_COLOR_STRENGTH,
    DEFAULT_MEAN,
    DEFAULT_STD,
    default_crop_fraction,
    resolve_preset,
)
from ..config import PretrainConfig, config_to_dict
from ..data.checks import describe_bad_images, refuse_bad_images, scan_images
from ..data.files import find_images
from ..data.loader import DataWaitGauge, TrainImageLoader
from ..data.sampler import ResumableRandomSampler
from ..distributed.ranks import (
    SINGLE_PROCESS,
    RankContext,
    agree_batch_size,
    average_across_ranks,
    join_job,
    nt_xent_across_ranks,
    per_rank_workers,
    plan_processes,
    prepare_model,
    sum_across_ranks,
)
from ..errors import DataError, RunFolderError, UsageError
from ..loss.grad_cache import cached_contrastive_loss
from ..loss.nt_xent import nt_xent_loss
from ..model.files import atomic_write, save_model
from ..model.simclr import create_simclr_model
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .budget import TimeBudget, budget_stem
from .checkpoints import find_resumable_checkpoint
from .loggers import check_loggers, create_logger
from .monitor import KnnMonitor
from .optimizers import create_optimizer, learning_rate_at, scaled_learning_rate
from .safeguards import create_run_guard

#: Files a run writes; ``--force`` removes exactly these before starting again.
RUN_FILES = (
    "model.safetensors",
    "metrics.jsonl",
    "config.toml",
    "checkpoint.safetensors",
    "skipped.txt",
)


@dataclass
class PretrainResult:
    """What a pretraining run produced.

    Attributes:
        run_dir: The run folder.
        model_path: The saved ``model.safetensors``.
        steps: Optimiser steps taken.
        images_seen: Images processed (each gives two views).
        final_loss: Mean loss over the last logging window.
        images_per_second: Throughput over the whole run.
        seconds: Wall time of the training loop.
        skipped_images: Images dropped because they could not be decoded.
        nonfinite_steps: Steps whose update was skipped for a non-finite loss or gradient.
        resumed_from: The step the run resumed from (0 for a new run).
        total_seconds: Wall time of the whole call, saving included (what --time-budget bounds).
        data_wait: Share of the loop's time spent waiting for the next batch.
    """

    run_dir: Path
    model_path: Path
    steps: int
    images_seen: int
    final_loss: float
    images_per_second: float
    seconds: float
    skipped_images: int
    nonfinite_steps: int = 0
    resumed_from: int = 0
    total_seconds: float = 0.0
    data_wait: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: every attribute, paths as strings."""
        return {
            name: str(value) if isinstance(value, Path) else value
            for name, value in dataclasses.asdict(self).items()
        }


def default_workers() -> int:
    """Data-loading processes: half the cores (the other half trains), at most 8, at least 1."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def prepare_run_folder(out: Path, *, force: bool) -> Path:
    """Create the run folder, refusing to mix a new run into an old one without ``force``.

    Raises:
        RunFolderError: When ``out`` is a file or a non-empty folder and ``force`` is off.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; give a folder for the run")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RunFolderError(
                f"run folder {out} is not empty; choose another --out or add --force to replace it"
            )
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create run folder {out}: {error.strerror}") from None
    return out


def plan_steps(*, num_images: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Optimiser steps of the run: ``max_steps`` if given, else whole epochs of full batches."""
    if max_steps is not None:
        return max_steps
    return epochs * (num_images // batch_size)


def contrastive_step(
    model: nn.Module,
    views_a: torch.Tensor,
    views_b: torch.Tensor,
    *,
    temperature: float,
    autocast_context: contextlib.AbstractContextManager,
    accumulate: int = 1,
    context: RankContext = SINGLE_PROCESS,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Forward both views in one batch and return the NT-Xent loss.

    Both views go through the backbone together so that batch norm sees all 2N views, as the
    paper's global batch norm does on one device. With ``accumulate`` K > 1 the batch goes
    through in K micro-batches by gradient caching (see ``grad_cache``): the loss still sees
    all 2N views, and its ``backward()`` re-runs the micro-batches to fill the gradients.

    Args:
        model: Backbone plus head.
        views_a: First views (N, 3, S, S).
        views_b: Second views (N, 3, S, S).
        temperature: Loss temperature.
        autocast_context: Context manager for mixed precision.
        accumulate: Micro-batches per batch (gradient caching when above 1).
        context: This rank's place in a multi-process job; with several ranks the views are
            this rank's share of the global batch and the loss is that of its rows against
            every rank's views (see ``distributed``).
        memory_format: Layout of the model's input, ``torch.channels_last`` when the model
            was converted to it.

    Returns:
        The scalar loss.
    """
    if accumulate > 1:
        return cached_contrastive_loss(
            model,
            views_a,
            views_b,
            accumulate=accumulate,
            temperature=temperature,
            autocast_context=autocast_context,
        )
    views = torch.cat([views_a, views_b]).contiguous(memory_format=memory_format)
    with autocast_context:
        _, projections = model(views)
    z_a, z_b = projections.float().chunk(2)
    if context.distributed:
        return nt_xent_across_ranks(z_a, z_b, temperature=temperature, context=context)
    return nt_xent_loss(z_a, z_b, temperature=temperature)


def pretrain(
    *, config: PretrainConfig, progress: ProgressCallback = null_progress
) -> PretrainResult:
    """Pretrain a backbone with SimCLR on a folder of images and save it.

    Args:
        config: The run's settings.
        progress: Receives a ``start`` event, an ``advance`` event per step (with loss, learning
            rate and images per second) and an ``end`` event.

    Returns:
        Where the model was saved and how the run went.

    Raises:
        SimCLRError: For bad input, before the run folder is created.
    """
    # Check the settings and the data before anything is written; a time budget starts now.
    config.validate()
    check_loggers(config.loggers)
    budget = (
        TimeBudget(config.time_budget, max_steps=config.max_steps) if config.time_budget else None
    )
    plan = plan_processes(config)
    device = resolve_device(plan.device)
    use_idle_cores(device)
    if plan.world_size > 1 and (config.time_budget is not None or config.accumulate > 1):
        # Both change the step or its gradients on each rank alone; ranks would fall out of step.
        raise UsageError(
            "--time-budget and --accumulate work on one process only for now; drop them or "
            "run without --gpus/--cpu-processes"
        )
    precision = resolve_precision(config.precision, device)
    paths = find_images(config.data)
    # Files that cannot be images at all are found now, before the first step.
    paths, bad_images = scan_images(paths)
    if config.on_bad_image.value == "fail":
        refuse_bad_images(bad_images, config.data)
    if not paths:
        raise DataError(
            f"none of the images in {config.data} could be decoded "
            f"({describe_bad_images(bad_images)}); check the files"
        )
    if len(paths) < config.batch_size:
        raise DataError(
            f"{config.data} has {len(paths)} images, fewer than --batch-size "
            f"{config.batch_size}; lower --batch-size or add images"
        )
    preset = resolve_preset(config.preset, image_size=config.image_size)
    color_strength = config.color_strength
    if color_strength is None:
        color_strength = DEFAULT_COLOR_STRENGTH[preset]
    workers = default_workers() if config.workers is None else config.workers
    total_steps = plan_steps(
        num_images=len(paths),
        batch_size=config.batch_size,
        epochs=config.epochs,
        max_steps=config.max_steps,
    )
    warmup_steps = round(config.warmup_fraction * total_steps)
    peak_lr = scaled_learning_rate(
        config.optimizer,
        batch_size=config.batch_size,
        base=config.learning_rate,
        scaling=config.lr_scaling,
    )

    # Several processes: start them now that the input is known to be good (rank 0's result
    # comes back), or join the job this process is a rank of. Only rank 0 writes and reports.
    if plan.launch:
        from ..distributed.launcher import launch_pretrain

        return launch_pretrain(config=config, progress=progress, processes=plan.processes)
    context = join_job(plan)
    if not context.is_main:
        progress = null_progress
    if config.workers is None:
        workers = per_rank_workers(workers, context)

    # Build the model; an unknown backbone or an impossible size fails here.
    seed_everything(config.seed)
    model = create_simclr_model(
        backbone=config.backbone,
        stem=budget_stem(config.stem, config.time_budget).value,
        image_size=config.image_size,
        init_weights=config.init_weights,
        head=config.head.value,
        head_hidden_dim=config.head_hidden_dim,
        head_output_dim=config.head_output_dim,
        metadata={
            "crop_fraction": default_crop_fraction(config.image_size),
            "mean": DEFAULT_MEAN,
            "std": DEFAULT_STD,
            "preset": preset.value,
            "color_strength": color_strength,
            "temperature": config.temperature,
        },
    ).to(device)
    # Channels-last where it measured faster (bf16 on the CPU, mixed precision on a GPU).
    memory_format = (
        torch.channels_last if use_channels_last(precision, device) else torch.contiguous_format
    )
    model = model.to(memory_format=memory_format)
    network = prepare_model(model, context, device=device, sync_batch_norm=config.sync_batch_norm)
    if context.rank:
        seed_everything(config.seed + context.rank)  # Each rank draws its own augmentations.
    optimizer = create_optimizer(
        config.optimizer,
        [model.backbone, model.head],
        learning_rate=peak_lr,
        weight_decay=config.weight_decay,
    )

    # The online kNN monitor reads its labelled images now, so a bad --val fails early.
    monitor = None
    if config.val is not None and context.is_main:
        monitor = KnnMonitor(
            config.val, metadata=model.metadata, every=config.eval_every, device=device
        )

    # Data: worker processes only decode (and the first epoch fills the RAM cache); the loop
    # makes both views of every image from that one decode, batched, on the training device.
    # The order comes from a resumable sampler (sharded over ranks), the augmentations from the
    # global torch generator, so a checkpoint holds every random state of the run.
    generator = torch.Generator().manual_seed(config.seed + context.rank)
    sampler = ResumableRandomSampler(
        len(paths), seed=config.seed, rank=context.rank, world_size=context.world_size
    )
    loader = TrainImageLoader(
        paths,
        image_size=config.image_size,
        batch_size=config.batch_size // context.world_size,
        workers=workers,
        cache=config.cache,
        generator=generator,
        sampler=sampler,
        pin_memory=device.type == "cuda",
        progress=progress,
    )
    augment = BatchAugmenter(
        preset,
        image_size=config.image_size,
        color_strength=color_strength,
        device=device,
        generator=None,
        mean=DEFAULT_MEAN,
        std=DEFAULT_STD,
    )
    gauge = DataWaitGauge()
    # torch.compile of a module is a module (typed as a plain callable).
    forward_model = cast(nn.Module, torch.compile(network)) if config.compile else network

    # The run folder and its resolved configuration; --resume continues a run of the same one.
    resolved = config_to_dict(config)
    resolved.update(
        {
            "data": str(Path(config.data).resolve()),
            "preset": preset.value,
            "color_strength": color_strength,
            "stem": model.metadata.stem,
            "workers": workers,
            "precision": precision.value,
            "device": device.type,
            "world_size": context.world_size,
            "cache": config.cache.value,
        }
    )
    step_plan = {"total_steps": total_steps, "warmup_steps": warmup_steps}
    settings = {**resolved, **step_plan, "num_images": len(paths)}
    checkpoint = find_resumable_checkpoint(config.out, resume=config.resume, settings=settings)
    run_dir = Path(config.out)
    if checkpoint is None and context.is_main:
        run_dir = prepare_run_folder(config.out, force=config.force or config.resume)
    # [pretrain] holds the flags, so that `--config RUN/config.toml` repeats the run; --force and
    # --resume are actions of one invocation, and [plan] what the run derived from the flags.
    written = {key: value for key, value in resolved.items() if key not in ("force", "resume")}
    plan_table = {**step_plan, "peak_learning_rate": peak_lr}
    config_text = _io.dumps({"pretrain": written, "plan": plan_table})
    if context.is_main:
        atomic_write(run_dir / "config.toml", lambda p: Path(p).write_text(config_text))

    # Checkpoints, resume, stop signals, non-finite steps and bad images (see safeguards.py).
    guard = create_run_guard(
        config=config,
        run_dir=run_dir,
        model=model,
        optimizer=optimizer,
        sampler=sampler,
        loader_generator=generator,
        settings=settings,
        total_steps=total_steps,
        bad_images=bad_images,
        progress=progress,
        is_main=context.is_main,
    )
    position = guard.resume(checkpoint)
    # metrics.jsonl, and --logger csv/tensorboard with the same records (see loggers.py).
    logger = create_logger(
        config.loggers, run_dir=run_dir, fresh=checkpoint is None, enabled=context.is_main
    )

    # The training loop.
    progress(ProgressEvent("start", "pretrain", total=total_steps, completed=position.step))
    model.train()
    steps_per_epoch = max(1, len(paths) // config.batch_size)
    step, epoch, images_seen = position.step, position.epoch, position.images_seen
    skipped = position.skipped_images if checkpoint else len(bad_images)
    window_loss, window_steps, window_images = 0.0, 0, 0
    last_loss = float("nan")
    started = window_started = time.perf_counter()
    guard.install()
    try:
        while step < total_steps:
            steps_before_epoch = step
            guard.start_epoch(epoch)
            for batch in gauge.timed(loader):
                skipped += guard.note_batch(batch.bad)
                # Two augmented views of every image; every rank agrees on the batch size.
                views_a, views_b = augment(batch.images, batch.sizes)
                views_a, views_b = agree_batch_size(views_a, views_b, context)
                if views_a.shape[0] < 2:
                    continue
                # Learning rate from the step alone, so a re-planned run follows the same curve.
                lr = learning_rate_at(
                    step, total_steps=total_steps, warmup_steps=warmup_steps, peak=peak_lr
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # Forward, loss, backward, update.
                loss = contrastive_step(
                    forward_model,
                    views_a,
                    views_b,
                    temperature=config.temperature,
                    autocast_context=autocast(precision, device),
                    accumulate=config.accumulate,
                    context=context,
                    memory_format=memory_format,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # A non-finite loss or gradient skips the update; several in a row stop the run.
                if guard.update_is_finite(loss, step=step):
                    optimizer.step()
                    window_loss += loss.item()
                    window_steps += 1
                step += 1
                images_seen += views_a.shape[0] * context.world_size
                # With --time-budget, the measured speed fixes (and corrects) the step count.
                if budget is not None:
                    total_steps = budget.plan(step, total_steps)
                    warmup_steps = round(config.warmup_fraction * total_steps)
                    guard.total_steps = total_steps
                # The online kNN monitor on --val, within its share of the time.
                if monitor is not None and (monitor.due(step) or step == total_steps):
                    evaluation = monitor.evaluate(
                        model.backbone, step=step, autocast_context=autocast(precision, device)
                    )
                    logger.log(evaluation)
                window_images += views_a.shape[0] * context.world_size
                # Log a line and report progress every log_every steps and at the end.
                if step % config.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    last_loss = average_across_ranks(
                        window_loss / window_steps if window_steps else float("nan"), context
                    )
                    record = {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 4),
                        "loss": round(last_loss, 6),
                        "lr": lr,
                        "images_per_second": round(window_images / (now - window_started), 2),
                        **(monitor.latest if monitor is not None else {}),
                        "data_wait": round(gauge.take_seconds() / (now - window_started), 4),
                        "skipped_images": skipped,
                    }
                    logger.log(record)
                    window_loss, window_steps, window_images = 0.0, 0, 0
                    window_started = now
                    progress(
                        ProgressEvent(
                            "advance", "pretrain", total=total_steps, completed=step, metrics=record
                        )
                    )
                    # The first window includes starting the workers and filling the cache.
                    hint = step > config.log_every and gauge.hint(
                        record["data_wait"], workers=workers, cached=loader.cached
                    )
                    if hint:
                        progress(ProgressEvent("message", "pretrain", text=hint))
                else:
                    progress(
                        ProgressEvent("advance", "pretrain", total=total_steps, completed=step)
                    )
                # Checkpoint when due and at the end; stop here after SIGINT/SIGTERM.
                guard.after_step(step=step, epoch=epoch, images_seen=images_seen, skipped=skipped)
                if step >= total_steps:
                    break
            if step == steps_before_epoch:
                raise DataError(
                    f"none of the images in {config.data} could be decoded; check the files"
                )
            epoch += 1
    except Exception:
        guard.stop_if_signalled()
        raise
    finally:
        guard.uninstall()
        logger.close()
    seconds = time.perf_counter() - started
    skipped = sum_across_ranks(skipped, context)
    progress(ProgressEvent("end", "pretrain", total=total_steps, completed=step))

    # Save the encoder with everything needed to rebuild it.
    model.metadata = model.metadata.replace(steps=step, images_seen=images_seen)
    model_path = run_dir / "model.safetensors"
    if context.is_main:
        with guard.disk_full_hint():
            save_model(model_path, model)
    return PretrainResult(
        run_dir=run_dir,
        model_path=model_path,
        steps=step,
        images_seen=images_seen,
        final_loss=last_loss,
        images_per_second=(images_seen - position.images_seen) / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        skipped_images=skipped,
        nonfinite_steps=guard.position.nonfinite_steps,
        resumed_from=checkpoint.position.step if checkpoint else 0,
        total_seconds=budget.elapsed() if budget is not None else time.perf_counter() - started,
        data_wait=(gauge.total + gauge.take_seconds()) / seconds if seconds > 0 else 0.0,
    )
