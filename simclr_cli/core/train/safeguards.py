"""What keeps a long run safe: checkpoints, resume, stop signals, non-finite steps, bad images.

The training loop in ``loop.py`` stays flat; it calls a ``RunGuard`` at a few points:

- ``resume(checkpoint)`` just before the loop: restores model, optimiser, data position and
  every random generator, and returns the position to continue from;
- ``start_epoch(epoch)`` at the top of each epoch: selects the epoch's order (and, on resume, the
  batch to start from);
- ``note_batch(dropped)`` for each batch: counts the batch and the images that failed to decode;
- ``check_update(loss)`` between the (scaled) ``backward`` and ``optimizer.step``: whether to
  apply the update (see ``_amp``); a non-finite step and a skip of the fp16 loss scaler are
  counted apart;
- ``after_step(...)`` at the end of each step: checkpoints when due, and stops the run (with a
  checkpoint) after SIGINT/SIGTERM or when the loss has diverged.

With several ranks, every rank takes part in each checkpoint: rank 0 gathers the others'
generator states and writes them with its own (see checkpoints.py). The ranks therefore agree,
at each step, on whether to checkpoint and whether to stop (a signal, a clock or a diverged loss
seen by one rank is acted on by all), so that they all reach the same collectives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .._amp import StepOutcome, step_outcome
from .._io import CheckpointInterval, parse_interval
from ..choices import BadImagePolicy
from ..config import PretrainConfig
from ..data.checks import BadImage, SkippedImages
from ..data.sampler import ResumableRandomSampler
from ..distributed.collectives import all_gather_bytes, any_across_ranks
from ..distributed.ranks import SINGLE_PROCESS, RankContext
from ..errors import DiskFullError, RunInterrupted, TrainingDivergedError
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .checkpoints import (
    Checkpoint,
    TrainingPosition,
    capture_rng_states,
    changed_settings,
    pack_rng_states,
    restore_checkpoint,
    save_checkpoint,
    unpack_rng_states,
)
from .run_folder import CHECKPOINT_FILE, SKIPPED_FILE
from .signals import StopSignals, name_of

#: Non-finite steps in a row after which the run stops as diverged.
MAX_NONFINITE_IN_ROW = 5

__all__ = ["MAX_NONFINITE_IN_ROW", "RunGuard", "create_run_guard"]


class RunGuard:
    """Checkpoints, resume, stop signals, the non-finite guard and bad images of one run.

    Args:
        run_dir: The run folder.
        model: The model being trained.
        optimizer: Its optimiser.
        sampler: The data order, positioned on resume.
        loader_generator: The DataLoader's generator (seeds the workers).
        settings: The resolved configuration, saved in checkpoints and compared on resume.
        interval: How often to checkpoint.
        batch_size: Images per batch.
        batches_per_epoch: Full batches in one epoch.
        total_steps: Steps of the whole run; a checkpoint is written when it is reached.
        skipped: The bad-image list.
        progress: Receives ``message`` events (resumed, checkpoint saved, step skipped).
        is_main: Whether this process writes files (rank 0 of a job, or a single process).
        scaler: The fp16 loss scaler (see ``_amp``); its state goes into the checkpoint.
        context: This process's place in the job; every rank's generators are checkpointed.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        sampler: ResumableRandomSampler,
        loader_generator: torch.Generator | None,
        settings: dict[str, Any],
        interval: CheckpointInterval,
        batch_size: int,
        batches_per_epoch: int,
        total_steps: int,
        skipped: SkippedImages,
        progress: ProgressCallback = null_progress,
        is_main: bool = True,
        scaler: torch.amp.GradScaler | None = None,
        context: RankContext = SINGLE_PROCESS,
    ):
        self.is_main = is_main
        self.context = context
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(enabled=False)
        self.run_dir = Path(run_dir)
        self.checkpoint_path = self.run_dir / CHECKPOINT_FILE
        self.model = model
        self.optimizer = optimizer
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.sampler = sampler
        self.loader_generator = loader_generator
        self.settings = settings
        self.interval = interval
        self.batch_size = batch_size
        self.batches_per_epoch = max(1, batches_per_epoch)
        self.total_steps = total_steps
        self.skipped = skipped
        self.progress = progress
        self.position = TrainingPosition()
        self.saved_step: int | None = None
        self.save_seconds: float | None = None
        self.nonfinite_in_row = 0
        self.signals = StopSignals()
        self._last_save = time.monotonic()
        self._stopped = False

    # Before the loop.

    def resume(self, checkpoint: Checkpoint | None) -> TrainingPosition:
        """Continue from ``checkpoint``, or from step 0 when it is None.

        Sets the global random generators, so call it after building everything and just
        before the loop. The run folder has trimmed the loggers back to the checkpoint.
        """
        if checkpoint is None:
            self.sampler.resume_at(0, 0)
            return dataclasses.replace(self.position)
        position = restore_checkpoint(
            checkpoint,
            model=self.model,
            optimizer=self.optimizer,
            loader_generator=self.loader_generator,
            scaler=self.scaler,
            rank=self.context.rank,
        )
        # A checkpoint at the end of an epoch resumes at the start of the next.
        if position.batches_in_epoch >= self.batches_per_epoch:
            position.epoch += 1
            position.batches_in_epoch = 0
        self.sampler.resume_at(position.epoch, position.batches_in_epoch * self.batch_size)
        self.position = position
        self.saved_step = position.step
        text = f"resuming from step {position.step} of {self.total_steps} ({checkpoint.path})"
        changes = changed_settings(checkpoint.settings, self.settings)
        if changes:
            text += "; changed: " + ", ".join(changes)
        if checkpoint.rng_world_size < self.context.world_size:
            text += (
                "; the checkpoint holds the random state of rank 0 only (an earlier simclr "
                "wrote it), so the other ranks continue with freshly seeded generators"
            )
        self._message(text)
        return dataclasses.replace(position)

    def install(self) -> None:
        """Catch SIGINT and SIGTERM until ``uninstall``."""
        self.signals.install()

    def uninstall(self) -> None:
        """Give SIGINT and SIGTERM back to their previous handlers."""
        self.signals.uninstall()

    # In the loop.

    def start_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``; a resumed epoch starts at its saved batch."""
        if epoch != self.position.epoch:
            self.position.batches_in_epoch = 0
        self.position.epoch = epoch
        self.sampler.set_epoch(epoch)

    def note_batch(self, dropped: Sequence[BadImage]) -> int:
        """Count a batch from the loader and record its undecodable images; return their number.

        Raises:
            ImageDecodeError: For the first bad image under ``--on-bad-image fail``.
        """
        self.position.batches_in_epoch += 1
        return self.skipped.record(dropped)

    def check_update(self, loss: torch.Tensor, *, step: int) -> StepOutcome:
        """Whether to apply the step's update; a non-finite step and a scaler skip are counted.

        Call it after ``_amp.scaled_backward``, which unscales the gradients. Only non-finite
        steps count toward the divergence stop: a skip of the fp16 scaler (a finite loss whose
        scaled gradients overflowed) lowers the scale and is expected now and then.

        Args:
            loss: The loss, after ``backward``.
            step: The step being taken (for the message).
        """
        outcome = step_outcome(loss, self.parameters, scaler=self.scaler)
        if outcome is StepOutcome.applied:
            self.nonfinite_in_row = 0
        elif outcome is StepOutcome.scaler_skipped:
            self.position.scaler_skipped_steps += 1
        else:
            self.nonfinite_in_row += 1
            self.position.nonfinite_steps += 1
            self._message(
                f"step {step + 1}: the loss or a gradient is not finite; the update is skipped "
                f"({self.nonfinite_in_row} in a row)"
            )
        return outcome

    def after_step(self, *, step: int, epoch: int, images_seen: int, skipped: int) -> None:
        """Record the step; checkpoint when due or at the end; stop after a signal or divergence.

        Raises:
            RunInterrupted: After SIGINT or SIGTERM, once the checkpoint is written.
            TrainingDivergedError: After ``MAX_NONFINITE_IN_ROW`` non-finite steps in a row.
            DiskFullError: When the checkpoint cannot be written for lack of space.
        """
        self.position.step = step
        self.position.epoch = epoch
        self.position.images_seen = images_seen
        self.position.skipped_images = skipped
        # One rank's signal, clock or divergence decides for all (see the module docstring).
        diverged, signalled, due = any_across_ranks(
            [
                self.nonfinite_in_row >= MAX_NONFINITE_IN_ROW,
                self.signals.received is not None,
                self._checkpoint_due(step),
            ],
            self.context,
        )
        if diverged:
            self._stop_diverged()
        if step >= self.total_steps:
            self.save()  # The last step: the run ends normally, even if a signal came meanwhile.
        elif signalled:
            self._stop_signalled()
        elif due:
            self.save()

    def stop_if_signalled(self) -> None:
        """Called when the loop fails: a stop signal also kills the data workers, so the loader
        raises; the last completed step is then checkpointed and the run stops as interrupted.
        """
        if self.signals.received is not None and not self._stopped:
            # The other ranks are not at a checkpoint with this one: keep the last checkpoint.
            self._stop_signalled(save=not self.context.distributed)

    # Saving.

    def save(self, *, announce: bool = True) -> None:
        """Write ``RUN/checkpoint.safetensors`` with the current position.

        Every rank of a job calls it at the same step: rank 0 gathers each rank's generator
        states and writes them with its weights (DDP keeps the weights equal on every rank).
        The time it took is kept in ``save_seconds`` (a time budget plans the last one from it).

        Args:
            announce: Report "checkpoint saved" as a progress message.

        Raises:
            DiskFullError: When the disk is full; the previous checkpoint is kept.
        """
        started = time.perf_counter()
        rank_rng_states = None
        if self.context.distributed:
            packed = pack_rng_states(capture_rng_states(self.loader_generator))
            rank_rng_states = [unpack_rng_states(b) for b in all_gather_bytes(packed, self.context)]
        if not self.is_main:
            self.saved_step = self.position.step
            self._last_save = time.monotonic()
            self.save_seconds = time.perf_counter() - started
            return
        with self.disk_full_hint():
            save_checkpoint(
                self.checkpoint_path,
                model=self.model,
                optimizer=self.optimizer,
                position=self.position,
                settings=self.settings,
                loader_generator=self.loader_generator,
                scaler=self.scaler,
                rank_rng_states=rank_rng_states,
            )
        self.saved_step = self.position.step
        self._last_save = time.monotonic()
        self.save_seconds = time.perf_counter() - started
        if announce:
            self._message(f"checkpoint saved at step {self.position.step}")

    @contextlib.contextmanager
    def disk_full_hint(self) -> Iterator[None]:
        """Add to a ``DiskFullError`` which checkpoint survived and how to continue."""
        try:
            yield
        except DiskFullError as error:
            if self.saved_step is None:
                hint = "no checkpoint was saved yet; free some space and start again with --force"
            else:
                hint = (
                    f"{self.checkpoint_path} from step {self.saved_step} is intact; free some "
                    "space and continue with --resume"
                )
            raise DiskFullError(f"{str(error).split('; free')[0]}; {hint}") from None

    # Internals.

    def _checkpoint_due(self, step: int) -> bool:
        if self.interval.steps is not None:
            return step % self.interval.steps == 0
        seconds = self.interval.seconds
        return seconds is not None and time.monotonic() - self._last_save >= seconds

    def _stop_signalled(self, *, save: bool = True) -> None:
        self._stopped = True
        if save:
            self.save()
        # A rank stopped because another rank received the signal names that usual one.
        number = self.signals.received or signal.SIGTERM
        if save:
            kept = f"checkpoint saved in {self.checkpoint_path}"
        elif self.saved_step is not None:
            kept = f"{self.checkpoint_path} holds step {self.saved_step}"
        else:
            kept = "no checkpoint was saved yet"
        raise RunInterrupted(
            f"stopped by {name_of(number)} after step {self.position.step} of "
            f"{self.total_steps}; {kept}; to continue, run "
            f"the same command with --resume{self._instead_of_force()}",
            signal_number=number,
            step=self.position.step,
            checkpoint=self.checkpoint_path,
        )

    def _stop_diverged(self) -> None:
        self._stopped = True
        # No non-finite update was applied, so the weights are those from before the divergence.
        self.save()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        raise TrainingDivergedError(
            f"training diverged: the loss or the gradients were not finite for "
            f"{self.nonfinite_in_row} steps in a row at step {self.position.step} "
            f"(learning rate {_short(learning_rate)}); {self.checkpoint_path} holds the weights "
            f"from before; continue with --resume{self._instead_of_force()} and a lower --lr "
            "or --precision fp32"
        )

    def _instead_of_force(self) -> str:
        return " instead of --force" if self.settings.get("force") else ""

    def _message(self, text: str) -> None:
        self.progress(ProgressEvent("message", "pretrain", text=text))


def create_run_guard(
    *,
    config: PretrainConfig,
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: ResumableRandomSampler,
    loader_generator: torch.Generator | None,
    settings: dict[str, Any],
    total_steps: int,
    bad_images: Sequence[BadImage],
    progress: ProgressCallback = null_progress,
    is_main: bool = True,
    scaler: torch.amp.GradScaler | None = None,
    context: RankContext = SINGLE_PROCESS,
) -> RunGuard:
    """The ``RunGuard`` of a pretraining run, with the header scan's bad images listed.

    Args:
        config: The run's settings (``checkpoint_every``, ``on_bad_image``, ``batch_size``).
        run_dir: The run folder, already prepared.
        model: The model being trained.
        optimizer: Its optimiser.
        sampler: The data order.
        loader_generator: The DataLoader's generator.
        settings: The resolved configuration, saved in checkpoints.
        total_steps: Steps of the whole run.
        bad_images: Files the header scan found unusable; listed in ``RUN/skipped.txt``.
        progress: Receives ``message`` events.
        is_main: Whether this process writes files (rank 0 of a job, or a single process).
        scaler: The fp16 loss scaler, saved in checkpoints.
        context: This process's place in the job.
    """
    skipped = SkippedImages(
        Path(run_dir) / SKIPPED_FILE,
        fail=config.on_bad_image is BadImagePolicy.fail,
        write=is_main,
    )
    already_listed = bool(skipped.listed)
    skipped.record(bad_images)
    if bad_images and not already_listed:
        text = f"{len(bad_images)} files are not images and are skipped (listed in {skipped.path})"
        progress(ProgressEvent("message", "pretrain", text=text))
    # The loop passes the planned batch (never None): --batch-size, or what the data fills.
    assert config.batch_size is not None, "pretrain resolves the batch before the guard"
    batch_per_rank = config.batch_size // sampler.world_size
    return RunGuard(
        run_dir=run_dir,
        model=model,
        optimizer=optimizer,
        sampler=sampler,
        loader_generator=loader_generator,
        settings=settings,
        interval=parse_interval(config.checkpoint_every),
        batch_size=batch_per_rank,
        batches_per_epoch=sampler.share // batch_per_rank,
        total_steps=total_steps,
        skipped=skipped,
        progress=progress,
        is_main=is_main,
        scaler=scaler,
        context=context,
    )


def _short(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)
