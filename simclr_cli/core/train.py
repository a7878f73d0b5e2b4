"""SimCLR pretraining: the training loop behind ``simclr pretrain``.

The loop is flat, in the manner of nanoGPT: small pure helpers above, one function below that
reads top to bottom. Extensions (ranks, fused loss, augmentation on the device, resume) replace
one block each.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import _toml
from ._runtime import autocast, resolve_device, resolve_precision, seed_everything
from .augment import (
    DEFAULT_COLOR_STRENGTH,
    DEFAULT_MEAN,
    DEFAULT_STD,
    default_crop_fraction,
    resolve_preset,
)
from .batch_augment import BatchAugmenter
from .config import PretrainConfig, config_to_dict
from .data import find_images
from .datapipe import DataWaitGauge, TrainImageLoader
from .errors import DataError, RunFolderError
from .model import SimCLRModel, create_simclr_model
from .nt_xent import nt_xent_loss
from .optim import create_optimizer, learning_rate_at, scaled_learning_rate
from .progress import ProgressCallback, ProgressEvent, null_progress
from .serialization import atomic_write, save_model

#: Files a run writes; ``--force`` removes exactly these before starting again.
RUN_FILES = ("model.safetensors", "metrics.jsonl", "config.toml")


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
    data_wait: float = 0.0


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
    model: SimCLRModel,
    views_a: torch.Tensor,
    views_b: torch.Tensor,
    *,
    temperature: float,
    autocast_context: object,
) -> torch.Tensor:
    """Forward both views in one batch and return the NT-Xent loss.

    Both views go through the backbone together so that batch norm sees all 2N views, as the
    paper's global batch norm does on one device.

    Args:
        model: Backbone plus head.
        views_a: First views (N, 3, S, S).
        views_b: Second views (N, 3, S, S).
        temperature: Loss temperature.
        autocast_context: Context manager for mixed precision.

    Returns:
        The scalar loss.
    """
    with autocast_context:
        _, projections = model(torch.cat([views_a, views_b]))
    z_a, z_b = projections.float().chunk(2)
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
    # Check the settings and the data before anything is written.
    config.validate()
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    paths = find_images(config.data)
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

    # Build the model; an unknown backbone or an impossible size fails here.
    seed_everything(config.seed)
    model = create_simclr_model(
        backbone=config.backbone,
        stem=config.stem.value,
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
    optimizer = create_optimizer(
        config.optimizer,
        [model.backbone, model.head],
        learning_rate=peak_lr,
        weight_decay=config.weight_decay,
    )

    # Data: worker processes only decode (and the first epoch fills the RAM cache); the loop
    # makes both views of every image from that one decode, batched, on the training device.
    generator = torch.Generator().manual_seed(config.seed)
    loader = TrainImageLoader(
        paths,
        image_size=config.image_size,
        batch_size=config.batch_size,
        workers=workers,
        cache=config.cache,
        generator=generator,
        pin_memory=device.type == "cuda",
        progress=progress,
    )
    augment = BatchAugmenter(
        preset,
        image_size=config.image_size,
        color_strength=color_strength,
        device=device,
        generator=torch.Generator().manual_seed(config.seed + 1),
        mean=DEFAULT_MEAN,
        std=DEFAULT_STD,
    )
    gauge = DataWaitGauge()
    forward_model = torch.compile(model) if config.compile else model

    # The run folder and its resolved configuration.
    run_dir = prepare_run_folder(config.out, force=config.force)
    resolved = config_to_dict(config)
    resolved.update(
        {
            "data": str(Path(config.data).resolve()),
            "preset": preset.value,
            "color_strength": color_strength,
            "stem": model.metadata.stem,
            "learning_rate": peak_lr,
            "workers": workers,
            "precision": precision.value,
            "device": device.type,
            "cache": config.cache.value,
        }
    )
    config_text = _toml.dumps(
        {"pretrain": resolved, "plan": {"total_steps": total_steps, "warmup_steps": warmup_steps}}
    )
    atomic_write(run_dir / "config.toml", lambda p: Path(p).write_text(config_text))
    metrics_file = open(run_dir / "metrics.jsonl", "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    # The training loop.
    progress(ProgressEvent("start", "pretrain", total=total_steps))
    model.train()
    steps_per_epoch = max(1, len(loader))
    step, epoch, images_seen, skipped = 0, 0, 0, 0
    window_loss, window_steps, window_images = 0.0, 0, 0
    last_loss = float("nan")
    started = window_started = time.perf_counter()
    try:
        while step < total_steps:
            steps_before_epoch = step
            for batch in gauge.timed(loader):
                skipped += batch.skipped
                if len(batch) < 2:
                    continue
                # Learning rate from the step alone, so a re-planned run follows the same curve.
                lr = learning_rate_at(
                    step, total_steps=total_steps, warmup_steps=warmup_steps, peak=peak_lr
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # Two augmented views of every image, then forward, loss, backward, update.
                views_a, views_b = augment(batch.images, batch.sizes)
                loss = contrastive_step(
                    forward_model,
                    views_a,
                    views_b,
                    temperature=config.temperature,
                    autocast_context=autocast(precision, device),
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                images_seen += views_a.shape[0]
                window_loss += loss.item()
                window_steps += 1
                window_images += views_a.shape[0]
                # Log a line and report progress every log_every steps and at the end.
                if step % config.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    last_loss = window_loss / window_steps
                    record = {
                        "step": step,
                        "epoch": round(step / steps_per_epoch, 4),
                        "loss": round(last_loss, 6),
                        "lr": lr,
                        "images_per_second": round(window_images / (now - window_started), 2),
                        "data_wait": round(gauge.take_seconds() / (now - window_started), 4),
                        "skipped_images": skipped,
                    }
                    metrics_file.write(json.dumps(record) + "\n")
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
                if step >= total_steps:
                    break
            if step == steps_before_epoch:
                raise DataError(
                    f"none of the images in {config.data} could be decoded; check the files"
                )
            epoch += 1
    finally:
        metrics_file.close()
    seconds = time.perf_counter() - started
    progress(ProgressEvent("end", "pretrain", total=total_steps, completed=step))

    # Save the encoder with everything needed to rebuild it.
    model.metadata = model.metadata.replace(steps=step, images_seen=images_seen)
    model_path = run_dir / "model.safetensors"
    save_model(model_path, model)
    return PretrainResult(
        run_dir=run_dir,
        model_path=model_path,
        steps=step,
        images_seen=images_seen,
        final_loss=last_loss,
        images_per_second=images_seen / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        skipped_images=skipped,
        data_wait=(gauge.total + gauge.take_seconds()) / seconds if seconds > 0 else 0.0,
    )
