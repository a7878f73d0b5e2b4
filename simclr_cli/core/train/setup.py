"""Building a pretraining run from its plan: model, optimiser, online monitor, data, metrics.

Each builder takes the run's config and its ``RunPlan`` and decides nothing the plan has not
decided. The order of the calls in ``loop.pretrain`` is part of the run's reproducibility: the
model is built right after seeding, and the augmentations draw from the global generator after it.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import nn

from .._runtime import seed_everything
from ..augment.batched import BatchAugmenter
from ..augment.crop_at_decode import CropAtDecode, view_seed
from ..augment.eval import default_crop_fraction
from ..choices import CacheMode
from ..config import PretrainConfig
from ..constants import DEFAULT_MEAN, DEFAULT_STD
from ..data.loader import DataWaitGauge, TrainImageLoader
from ..data.sampler import ResumableRandomSampler
from ..data.shards import ShardEpochSampler, ShardIndex
from ..distributed.batch_norm import prepare_model
from ..distributed.collectives import average_across_ranks, sum_across_ranks
from ..distributed.ranks import RankContext
from ..model.simclr import SimCLRModel, create_simclr_model
from ..progress import ProgressCallback
from .calibrate import SpeedSetting, plan_speed
from .monitor import KnnMonitor
from .optimizers import create_optimizer
from .plan import RunPlan


def use_planned_threads(plan: RunPlan) -> None:
    """Give torch the plan's intra-op threads (left alone when the count is already right)."""
    if plan.threads != torch.get_num_threads():
        torch.set_num_threads(plan.threads)


def build_model(config: PretrainConfig, plan: RunPlan) -> tuple[SimCLRModel, nn.Module]:
    """Seed, build the backbone and head on the plan's device and wrap them for the ranks.

    An unknown backbone or an impossible image size fails here, before the run folder exists.

    Returns:
        The model (what is optimised and saved) and the network the loop calls: the model
        wrapped by ``DistributedDataParallel`` on several ranks, compiled with ``--compile``.
    """
    seed_everything(config.seed)
    model = create_simclr_model(
        backbone=config.backbone,
        stem=plan.stem.value,
        image_size=plan.image_size,
        init_weights=config.init_weights,
        head=config.head.value,
        head_hidden_dim=config.head_hidden_dim,
        head_output_dim=config.head_output_dim,
        metadata={
            "crop_fraction": default_crop_fraction(plan.image_size),
            "mean": DEFAULT_MEAN,
            "std": DEFAULT_STD,
            "preset": plan.preset.value,
            "color_strength": plan.color_strength,
            "temperature": config.temperature,
        },
    ).to(plan.device)
    model = model.to(memory_format=plan.memory_format)
    network = prepare_model(
        model, plan.context, device=plan.device, sync_batch_norm=config.sync_batch_norm
    )
    if plan.context.rank:
        seed_everything(config.seed + plan.context.rank)  # Each rank draws its own augmentations.
    if config.compile:
        network = cast(nn.Module, torch.compile(network))
    return model, network


def choose_speed(config: PretrainConfig, plan: RunPlan, model: SimCLRModel) -> RunPlan:
    """The plan with its precision and memory format measured, cached or kept (calibrate.py).

    The model is converted in place when the measured memory format differs from the plan's.
    """
    rule = SpeedSetting(plan.precision, plan.channels_last)
    speed = plan_speed(
        model=model,
        device=plan.device,
        precision=config.precision,
        rule=rule,
        model_shape={
            "backbone": config.backbone,
            "stem": plan.stem.value,
            "image_size": plan.image_size,
            "head": config.head.value,
            "head_hidden_dim": config.head_hidden_dim,
            "head_output_dim": config.head_output_dim,
        },
        image_size=plan.image_size,
        batch_per_rank=plan.batch_per_rank,
        temperature=config.temperature,
        threads=plan.threads,
        world_size=plan.world_size,
        run_seconds=config.time_budget,
        total_steps=plan.total_steps,
    )
    choice = speed.choice
    plan = replace(
        plan, precision=choice.precision, channels_last=choice.channels_last, speed=speed
    )
    model.to(memory_format=plan.memory_format)
    return plan


def build_optimizer(
    config: PretrainConfig, plan: RunPlan, model: SimCLRModel
) -> torch.optim.Optimizer:
    """The optimiser of backbone and head at the plan's peak learning rate and weight decay."""
    return create_optimizer(
        config.optimizer,
        [model.backbone, model.head],
        learning_rate=plan.peak_learning_rate,
        weight_decay=plan.weight_decay,
    )


def build_monitor(config: PretrainConfig, plan: RunPlan, model: SimCLRModel) -> KnnMonitor | None:
    """The online kNN monitor on ``--val``, in rank 0 only.

    It reads its labelled images now, so a bad ``--val`` fails before the first step.
    """
    if config.val is None or not plan.context.is_main:
        return None
    return KnnMonitor(
        config.val, metadata=model.metadata, every=config.eval_every, device=plan.device
    )


@dataclass
class TrainingData:
    """Where the batches come from.

    Attributes:
        loader: Epochs of decoded uint8 images (``ImageBatch``).
        augment: Makes the two views of every image of a batch, on the training device.
        sampler: The resumable order of the images, sharded over the ranks.
        generator: The DataLoader's generator, saved in checkpoints.
    """

    loader: TrainImageLoader
    augment: BatchAugmenter
    sampler: ResumableRandomSampler
    generator: torch.Generator


def build_data(
    config: PretrainConfig, plan: RunPlan, *, progress: ProgressCallback
) -> TrainingData:
    """The loader and the batched augmentation of the run.

    Worker processes only decode (and the first epoch fills the RAM cache); the loop makes both
    views of every image from that one decode, batched, on the training device. The order comes
    from a resumable sampler (sharded over ranks), the augmentations from the global torch
    generator, so a checkpoint holds every random state of the run. When the loader streams
    without a cache, the workers cut large photos' views at decode, with boxes seeded by the
    run's seed (per rank), the epoch and the image (``crop_at_decode.view_seed``), so that a
    resumed run cuts the boxes the uninterrupted one would have.
    """
    context = plan.context
    generator = torch.Generator().manual_seed(config.seed + context.rank)
    augment = BatchAugmenter(
        plan.preset,
        image_size=plan.image_size,
        color_strength=plan.color_strength,
        device=plan.device,
        generator=None,
        mean=DEFAULT_MEAN,
        std=DEFAULT_STD,
    )
    crop_seed = config.seed + context.rank
    sampler: ResumableRandomSampler
    if isinstance(plan.images, ShardIndex):
        # Tar shards: a seeded shard order, a contiguous share of the members per rank.
        sampler = ShardEpochSampler(
            plan.images.counts(), seed=config.seed, rank=context.rank, world_size=context.world_size
        )
    else:
        sampler = ResumableRandomSampler(
            plan.num_images, seed=config.seed, rank=context.rank, world_size=context.world_size
        )
    loader = TrainImageLoader(
        plan.images,
        image_size=plan.image_size,
        batch_size=plan.batch_per_rank,
        workers=plan.workers,
        cache=plan.cache,
        cache_budget=plan.cache_budget_per_rank,
        generator=generator,
        sampler=sampler,
        pin_memory=plan.device.type == "cuda",
        progress=progress,
        cutter=CropAtDecode(augment.recipe),
        seed_of=functools.partial(_crop_seed, crop_seed),
    )
    return TrainingData(loader=loader, augment=augment, sampler=sampler, generator=generator)


def _crop_seed(seed: int, epoch: int, index: int) -> int:
    return view_seed(seed, epoch=epoch, index=index)


class MetricsWindow:
    """The steps since the last logged one, which become one record of ``metrics.jsonl``.

    Args:
        gauge: Measures the time the loop waits for batches.
        context: This rank's place in the job (the loss is averaged over the ranks).
        steps_per_epoch: Full batches in an epoch, for the fractional epoch of a record.
        loader: With its cache on, records add ``cache_bytes``: the decoded images in the RAM
            caches of all ranks together.
    """

    def __init__(
        self,
        *,
        gauge: DataWaitGauge,
        context: RankContext,
        steps_per_epoch: int,
        loader: TrainImageLoader | None = None,
    ):
        self.gauge = gauge
        self.loader = loader
        self.context = context
        self.steps_per_epoch = steps_per_epoch
        self.loss, self.steps, self.images = 0.0, 0, 0
        self.started = time.perf_counter()
        #: The mean loss of the last logged window, averaged over the ranks.
        self.last_loss = float("nan")

    def add_loss(self, loss: float) -> None:
        """Count the loss of a step whose update was applied."""
        self.loss += loss
        self.steps += 1

    def record(
        self, *, step: int, lr: float, skipped: int, evaluation: dict[str, Any]
    ) -> dict[str, Any]:
        """The window's record (loss, learning rate, speed, data wait, cache), then a new window.

        Args:
            step: Steps done.
            lr: The learning rate of the last step.
            skipped: Images skipped so far as unreadable.
            evaluation: The online monitor's latest values, if any.
        """
        now = time.perf_counter()
        mean_loss = self.loss / self.steps if self.steps else float("nan")
        self.last_loss = average_across_ranks(mean_loss, self.context)
        record = {
            "step": step,
            "epoch": round(step / self.steps_per_epoch, 4),
            "loss": round(self.last_loss, 6),
            "lr": lr,
            "images_per_second": round(self.images / (now - self.started), 2),
            **evaluation,
            "data_wait": round(self.gauge.take_seconds() / (now - self.started), 4),
            "skipped_images": skipped,
        }
        if self.loader is not None and self.loader.mode is not CacheMode.off:
            # Summed over the ranks: each caches only its shard, so this is the job's memory.
            record["cache_bytes"] = sum_across_ranks(self.loader.cache_bytes, self.context)
        self.loss, self.steps, self.images, self.started = 0.0, 0, 0, now
        return record
