"""SimCLR pretraining: the training loop behind ``simclr pretrain``.

The loop is flat, in the manner of nanoGPT: ``pretrain`` resolves the plan (``plan.py``), builds
from it (``setup.py``), prepares the run folder, then runs one loop that reads top to bottom, one
comment per block. Extensions (ranks, fused loss, augmentation on the device, resume) replace one
block each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._amp import StepOutcome, create_grad_scaler, finish_step, scaled_backward
from .._runtime import autocast
from ..config import PretrainConfig
from ..data.files import STDIN_LIST, listed_in_a_file
from ..data.loader import DataWaitGauge
from ..distributed.batch_norm import gradient_sync_deferral
from ..distributed.collectives import (
    agree_batch_size,
    broadcast_from_main,
    nt_xent_across_ranks,
    sum_across_ranks,
)
from ..distributed.launcher import launch_pretrain
from ..distributed.ranks import SINGLE_PROCESS, RankContext, join_job
from ..errors import DataError
from ..loss.grad_cache import MicroBatches, cached_contrastive_loss, split_views
from ..loss.nt_xent import nt_xent_loss
from ..model.files import save_model
from ..progress import ProgressCallback, ProgressEvent, null_progress
from ..schedule import learning_rate_at
from .budget import TimeBudget
from .plan import plan_rows, plan_run, plan_warmup, resolved_settings, seconds_spent
from .run_folder import open_run_folder, refuse_early
from .safeguards import create_run_guard
from .setup import (
    MetricsWindow,
    build_data,
    build_model,
    build_monitor,
    build_optimizer,
    choose_speed,
    use_planned_threads,
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
        scaler_skipped_steps: Steps whose update the fp16 loss scaler skipped because the scaled
            gradients overflowed (the loss was finite); they do not count toward divergence.
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
    scaler_skipped_steps: int = 0
    resumed_from: int = 0
    total_seconds: float = 0.0
    data_wait: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: every attribute, paths as strings."""
        return {
            name: str(value) if isinstance(value, Path) else value
            for name, value in dataclasses.asdict(self).items()
        }


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
    through in K micro-batches by gradient caching (``cached_contrastive_step``): the loss still
    sees all 2N views (of every rank), and its ``backward()`` re-runs the micro-batches to fill
    the gradients.

    Args:
        model: Backbone plus head (a ``SimCLRModel``, or one wrapped for ranks or compiled).
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
        return cached_contrastive_step(
            model,
            split_views(views_a, views_b, accumulate),
            temperature=temperature,
            autocast_context=autocast_context,
            context=context,
            memory_format=memory_format,
        )
    views = torch.cat([views_a, views_b]).contiguous(memory_format=memory_format)
    with autocast_context:
        _, projections = model(views)
    z_a, z_b = projections.float().chunk(2)
    return _contrastive_loss(z_a, z_b, temperature=temperature, context=context)


def cached_contrastive_step(
    model: nn.Module,
    micro_batches: MicroBatches,
    *,
    temperature: float,
    autocast_context: contextlib.AbstractContextManager,
    context: RankContext = SINGLE_PROCESS,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """The NT-Xent loss of a batch given in micro-batches, by gradient caching (grad_cache.py).

    On several ranks the loss compares this rank's views with those of every rank and every
    micro-batch, and the backward all-reduces the gradients once, after the last micro-batch:
    the step is that of one process with the whole global batch (with batch norm, up to its
    statistics, which are those of one micro-batch of every rank).

    Args:
        model: As for ``contrastive_step``; ``DistributedDataParallel`` on several ranks.
        micro_batches: The batch's K micro-batches of views a and b (``split_views``, or
            ``BatchAugmenter.micro_batches`` to make each when it is embedded).
        temperature: Loss temperature.
        autocast_context: Context manager for mixed precision.
        context: This rank's place in a multi-process job.
        memory_format: Layout of the model's input.

    Returns:
        The scalar loss, whose ``backward()`` fills the gradients.
    """
    return cached_contrastive_loss(
        model,
        micro_batches,
        loss_function=functools.partial(
            _contrastive_loss, temperature=temperature, context=context
        ),
        autocast_context=autocast_context,
        defer_gradient_sync=gradient_sync_deferral(model),
        memory_format=memory_format,
    )


def _contrastive_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, *, temperature: float, context: RankContext
) -> torch.Tensor:
    """NT-Xent of projections (n, P): against every rank's views on several ranks."""
    if context.distributed:
        return nt_xent_across_ranks(z_a, z_b, temperature=temperature, context=context)
    return nt_xent_loss(z_a, z_b, temperature=temperature)


def pretrain(
    *, config: PretrainConfig, progress: ProgressCallback = null_progress
) -> PretrainResult:
    """Pretrain a backbone with SimCLR on a folder of images and save it.

    Args:
        config: The run's settings.
        progress: Receives a ``plan`` event (the table of the run's choices) once the run folder
            is ready, a ``start`` event, an ``advance`` event per step (with loss, learning
            rate and images per second), ``message`` events and an ``end`` event.

    Returns:
        Where the model was saved and how the run went.

    Raises:
        SimCLRError: For bad input, before the run folder is created.
    """
    # The run folder's lock is released however the run ends (see run_folder.py).
    with contextlib.ExitStack() as cleanup:
        return _pretrain(config, progress, cleanup)


def _pretrain(
    config: PretrainConfig, progress: ProgressCallback, cleanup: contextlib.ExitStack
) -> PretrainResult:
    """The body of ``pretrain``; ``cleanup`` holds what must be released at the end."""
    # Check the flags and the data and resolve every `auto` (see plan.py), before anything is
    # written; a time budget starts first, so that the checks count against it.
    budget = None
    if config.time_budget:
        # The command line passes its process's start; a Python caller's budget starts now.
        budget = TimeBudget(
            config.time_budget, elapsed=seconds_spent(config), max_steps=config.max_steps
        )
    plan = plan_run(config=config, progress=progress)
    # From here on the batch and the image size are the planned ones (the flags, or what the
    # data and the budget call for); the ranks of a job take them as they are.
    flags, config = (
        config,
        dataclasses.replace(config, batch_size=plan.batch_size, image_size=plan.image_size),
    )

    # Several processes: start them now that the input is known to be good (rank 0's result
    # comes back), or join the job this process is a rank of. Only rank 0 writes and reports.
    if plan.processes.launch:
        refuse_early(config.out, force=config.force, resume=config.resume)
        processes = plan.processes.processes
        if budget is not None:
            # The ranks' budget counts from this command's start, not from theirs.
            config = dataclasses.replace(config, started_at=time.time() - budget.elapsed())
        if config.file_list is not None and str(config.file_list) == STDIN_LIST:
            # The ranks cannot read this process's standard input: hand them the list as a file.
            with listed_in_a_file(config.file_list) as listed:
                ranks_config = dataclasses.replace(config, file_list=listed)
                return launch_pretrain(
                    pretrain, config=ranks_config, progress=progress, processes=processes
                )
        return launch_pretrain(pretrain, config=config, progress=progress, processes=processes)
    context = join_job(plan.processes)
    if not context.is_main:
        progress = null_progress
    use_planned_threads(plan)

    # Build from the plan: model (seeded), optimiser, online kNN monitor, loader and augmenter.
    model, network = build_model(config, plan)
    # Precision and memory format by measurement on this machine, or from its cache (see
    # calibrate.py); before the optimiser and the loss scaler depend on them.
    plan = choose_speed(config, plan, model)
    optimizer = build_optimizer(config, plan, model)
    monitor = build_monitor(config, plan, model)
    data = build_data(config, plan, progress=progress)
    device, precision, gauge = plan.device, plan.precision, DataWaitGauge()
    # fp16 scales the loss so that small gradients do not flush to zero (see _amp.py).
    scaler = create_grad_scaler(precision, device)

    # The run folder and its resolved configuration; --resume continues a run of the same one.
    resolved = resolved_settings(config, plan)
    step_plan = {"total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps}
    settings = {**resolved, **step_plan, "num_images": plan.num_images}
    # [pretrain] holds the flags, so that `--config RUN/config.toml` repeats the run; --force and
    # --resume are actions of one invocation, and [plan] what the run derived from the flags.
    written = {key: value for key, value in resolved.items() if key not in ("force", "resume")}
    run = cleanup.enter_context(
        open_run_folder(
            config.out,
            force=config.force,
            resume=config.resume,
            settings=settings,
            config_tables={"pretrain": written, "plan": plan.to_table()},
            context=context,
        )
    )
    run_dir, checkpoint = run.path, run.checkpoint
    # The plan, saved, is shown once the run is sure to start (a failing run prints one line).
    progress(ProgressEvent("plan", "pretrain", rows=plan_rows(plan, flags)))
    # Checkpoints, resume, stop signals, non-finite steps and bad images (see safeguards.py).
    guard = create_run_guard(
        config=config,
        run_dir=run_dir,
        model=model,
        optimizer=optimizer,
        sampler=data.sampler,
        loader_generator=data.generator,
        settings=settings,
        total_steps=plan.total_steps,
        bad_images=plan.bad_images,
        progress=progress,
        is_main=context.is_main,
        scaler=scaler,
        context=context,
    )
    position = guard.resume(checkpoint)
    # metrics.jsonl, and --logger csv/tensorboard with the same records (see loggers.py).
    logger = run.create_logger(config.loggers)

    # The training loop.
    total_steps, warmup_steps = plan.total_steps, plan.warmup_steps
    progress(ProgressEvent("start", "pretrain", total=total_steps, completed=position.step))
    model.train()
    step, epoch, images_seen = position.step, position.epoch, position.images_seen
    skipped = position.skipped_images if checkpoint else len(plan.bad_images)
    started = time.perf_counter()
    window = MetricsWindow(
        gauge=gauge,
        context=context,
        steps_per_epoch=max(1, plan.num_images // plan.batch_size),
        loader=data.loader,
    )
    micro_batch_views = config.accumulate > 1 and device.type == "cuda"
    guard.install()
    try:
        while step < total_steps:
            steps_before_epoch = step
            guard.start_epoch(epoch)
            for batch in gauge.timed(data.loader):
                skipped += guard.note_batch(batch.bad)
                # Two augmented views of every image; every rank agrees on the batch size. With
                # --accumulate on a GPU each micro-batch's views are made when it is embedded,
                # so that one micro-batch of views is in memory, not the whole batch's (views
                # cut at decode from large photos are already made: they go the whole way).
                if micro_batch_views and batch.cut is None:
                    images, sizes = agree_batch_size(batch.images, batch.sizes, context)
                    count = images.shape[0]
                    views: MicroBatches = data.augment.micro_batches(
                        images, sizes, count=min(config.accumulate, count)
                    )
                else:
                    views_a, views_b = data.augment(batch.images, batch.sizes, cut=batch.cut)
                    views_a, views_b = agree_batch_size(views_a, views_b, context)
                    count = views_a.shape[0]
                    views = split_views(views_a, views_b, min(config.accumulate, count))
                if count < 2:
                    continue
                # Learning rate from the step alone, so a re-planned run follows the same curve.
                lr = learning_rate_at(
                    step,
                    total_steps=total_steps,
                    warmup_steps=warmup_steps,
                    peak=plan.peak_learning_rate,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # Forward, loss, backward, update (by gradient caching with micro-batches).
                if len(views) > 1:
                    loss = cached_contrastive_step(
                        network,
                        views,
                        temperature=config.temperature,
                        autocast_context=autocast(precision, device),
                        context=context,
                        memory_format=plan.memory_format,
                    )
                else:
                    loss = contrastive_step(
                        network,
                        *views[0],
                        temperature=config.temperature,
                        autocast_context=autocast(precision, device),
                        context=context,
                        memory_format=plan.memory_format,
                    )
                optimizer.zero_grad(set_to_none=True)
                scaled_backward(loss, optimizer=optimizer, scaler=scaler)
                # A non-finite loss or gradient skips the update; several in a row stop the run.
                # The gradients are unscaled here, before the check and LARS' trust ratio.
                outcome = guard.check_update(loss, step=step)
                finish_step(outcome, optimizer=optimizer, scaler=scaler)
                if outcome is StepOutcome.applied:
                    window.add_loss(loss.item())
                step += 1
                images_seen += count * context.world_size
                # With --time-budget, the measured speed fixes (and corrects) the step count;
                # rank 0's plan is every rank's, so that all ranks stop at the same step.
                if budget is not None:
                    total_steps = broadcast_from_main(budget.plan(step, total_steps), context)
                    warmup_steps = plan_warmup(
                        total_steps=total_steps,
                        steps_per_epoch=plan.num_images // plan.batch_size,
                        warmup_epochs=config.warmup_epochs,
                        warmup_fraction=config.warmup_fraction,
                    )
                    guard.total_steps = total_steps
                # The online kNN monitor on --val, within its share of the time.
                if monitor is not None and (monitor.due(step) or step == total_steps):
                    evaluation = monitor.evaluate(
                        model.backbone, step=step, autocast_context=autocast(precision, device)
                    )
                    logger.log(evaluation)
                    if budget is not None:
                        budget.note_evaluation(monitor.last_seconds)
                window.images += count * context.world_size
                # Log a record every log_every steps and at the end; report progress every step.
                record = {}
                if step % config.log_every == 0 or step == total_steps:
                    latest = monitor.latest if monitor is not None else {}
                    record = window.record(step=step, lr=lr, skipped=skipped, evaluation=latest)
                    logger.log(record)
                progress(
                    ProgressEvent(
                        "advance", "pretrain", total=total_steps, completed=step, metrics=record
                    )
                )
                # A hint when the loop waits for data (after the first window: worker start-up).
                if record and step > config.log_every:
                    hint = gauge.hint(
                        record["data_wait"], workers=plan.workers, cached=data.loader.cached
                    )
                    if hint:
                        progress(ProgressEvent("message", "pretrain", text=hint))
                # Checkpoint when due and at the end; stop here after SIGINT/SIGTERM. A budgeted
                # run also writes one after its first step, so that the final checkpoint and the
                # model file are planned from a measured time.
                guard.after_step(step=step, epoch=epoch, images_seen=images_seen, skipped=skipped)
                if budget is not None:
                    if guard.save_seconds is None:
                        guard.save(announce=False)
                        budget.leave_out(guard.save_seconds or 0.0)
                    budget.note_checkpoint(guard.save_seconds or 0.0)
                if step >= total_steps:
                    break
            if step == steps_before_epoch:
                raise DataError(
                    f"none of the images in {config.data_label()} could be decoded; check the files"
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
    model_path = run.model_path
    if context.is_main:
        with guard.disk_full_hint():
            save_model(model_path, model)
    return PretrainResult(
        run_dir=run_dir,
        model_path=model_path,
        steps=step,
        images_seen=images_seen,
        final_loss=window.last_loss,
        images_per_second=(images_seen - position.images_seen) / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        skipped_images=skipped,
        nonfinite_steps=guard.position.nonfinite_steps,
        scaler_skipped_steps=guard.position.scaler_skipped_steps,
        resumed_from=checkpoint.position.step if checkpoint else 0,
        total_seconds=budget.elapsed() if budget is not None else time.perf_counter() - started,
        data_wait=(gauge.total + gauge.take_seconds()) / seconds if seconds > 0 else 0.0,
    )
