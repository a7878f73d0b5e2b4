"""Speed settings chosen by measuring them on the machine at hand, not by its CPU flags.

On the CPU, ``--precision auto`` and the memory format decide most of a step's time, and which is
fastest depends on the CPU: on an AVX512-BF16 machine bf16 autocast with channels-last made a
resnet18 step 1.4x faster than fp32, on an AVX2 machine bf16 is emulated (more than 10x slower)
while fp32 with channels-last was 1.19x faster than fp32 in NCHW (benchmarks/RESULTS.md). So a run
long enough to repay it measures the candidates: a few training steps of each on a copy of the
real model at the run's image size and batch, on a fixed random batch (forward, NT-Xent,
backward and an SGD update). The fastest wins; bf16 only where it is faster *and* its losses over
those steps follow fp32's. A candidate whose single convolution is already far slower than fp32
(emulated bf16) is screened out before it costs a whole step.

The choice is cached per machine and model shape in the cache folder (``SIMCLR_CACHE_DIR``), so
later runs skip the measurement. ``--precision`` and ``SIMCLR_CHANNELS_LAST`` force a choice; on
a GPU the rules of ``_runtime`` stay (bf16 or fp16 autocast with channels-last).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _env
from .._io import atomic_write
from .._runtime import autocast
from ..choices import Precision
from ..loss.nt_xent import nt_xent_loss

#: Training steps timed per candidate, after one untimed warm-up step.
CALIBRATION_STEPS = 2
#: Most pixels of a calibration batch (both views): the run's own batch up to 512 views of 32 px
#: (a batch of 256 at 32 px). The winner depends on the batch: measured here (AVX2 CPU, resnet18,
#: 32 px) channels-last was 16% slower at 64 views and 8% faster at 512; larger images use fewer
#: views, so that a calibration step costs about what a 32 px step of 256 images does.
CALIBRATION_PIXELS = 512 * 32 * 32
#: Fewest views of a calibration step (batch norm needs more than one per channel).
MIN_CALIBRATION_VIEWS = 4
#: A candidate is screened out when one convolution takes this many times as long as in fp32.
SCREEN_SLOWDOWN = 2.0
#: bf16's losses over the calibration steps must stay within this share of fp32's.
LOSS_TOLERANCE = 0.02
#: Runs with a shorter time budget are not calibrated: the measurement (6 steps of the run's
#: own size, about 17 s for resnet18 at 32 px on a 2-core AVX2 CPU) would cost more than it saves.
MIN_RUN_SECONDS = 240.0
#: Version of the cached records; a change of the procedure makes old records stale.
CACHE_VERSION = 1


@dataclass(frozen=True)
class SpeedSetting:
    """One way to run the training step: its precision and its memory format."""

    precision: Precision
    channels_last: bool

    @property
    def label(self) -> str:
        """``fp32, channels-last`` and the like."""
        layout = "channels-last" if self.channels_last else "contiguous"
        return f"{self.precision.value}, {layout}"


@dataclass(frozen=True)
class Calibration:
    """What the speed settings of a run are and how they were chosen.

    Attributes:
        choice: The setting the run trains with.
        how: ``measured``, ``cached`` (measured by an earlier run), or the rule that decided.
        images_per_second: Training images per second of each measured candidate, by label.
        rejected: Candidates left out, by label, with the reason.
        seconds: Time the measurement took (0 when cached or decided by a rule).
    """

    choice: SpeedSetting
    how: str
    images_per_second: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_table(self) -> dict[str, Any]:
        """Plain values for ``[plan]`` of ``config.toml``."""
        table: dict[str, Any] = {"speed_choice": self.choice.label, "speed_chosen_by": self.how}
        for label, speed in self.images_per_second.items():
            name = label.replace(", ", "_").replace("-", "_")
            table[f"images_per_second_{name}"] = round(speed, 2)
        return table


def calibration_views(image_size: int, batch_per_rank: int) -> int:
    """Views of a calibration step: the run's own (2 per image), at most ``CALIBRATION_PIXELS``
    worth, an even number, at least ``MIN_CALIBRATION_VIEWS``."""
    views = min(2 * batch_per_rank, CALIBRATION_PIXELS // (image_size * image_size))
    return max(MIN_CALIBRATION_VIEWS, views - views % 2)


def candidates(precision: Precision, channels_last: bool | None) -> list[SpeedSetting]:
    """The settings worth measuring on the CPU, given what the flags force.

    Args:
        precision: ``--precision``: ``auto`` measures fp32 and bf16, anything else only itself.
        channels_last: ``SIMCLR_CHANNELS_LAST``: None measures both memory formats.
    """
    precisions = [Precision.fp32, Precision.bf16] if precision is Precision.auto else [precision]
    layouts = [False, True] if channels_last is None else [channels_last]
    return [SpeedSetting(p, layout) for p in precisions for layout in layouts]


def machine_key(*, model_shape: dict[str, Any], threads: int, views: int) -> str:
    """The cache key of a measurement: this machine's CPU, torch, threads and the model shape."""
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        lines = cpu.splitlines()
        names = sorted({line for line in lines if line.startswith(("model name", "flags"))})
    except OSError:
        names = [platform.processor()]
    record = {
        "version": CACHE_VERSION,
        "cpu": names,
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": threads,
        "views": views,
        "model": model_shape,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]


def _cache_path(key: str) -> Path | None:
    folder = _env.cache_dir()
    return None if folder is None else folder / "calibration" / f"{key}.json"


def read_cached(key: str) -> Calibration | None:
    """The calibration an earlier run cached under ``key``, or None (missing, unreadable, or
    ``SIMCLR_CACHE_DIR=off``)."""
    path = _cache_path(key)
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
        choice = SpeedSetting(Precision(record["precision"]), bool(record["channels_last"]))
        speeds = {str(k): float(v) for k, v in record.get("images_per_second", {}).items()}
        rejected = {str(k): str(v) for k, v in record.get("rejected", {}).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Calibration(choice, "cached", speeds, rejected)


def write_cached(key: str, calibration: Calibration) -> None:
    """Cache a measurement for later runs; a cache folder that cannot be written is skipped."""
    record = {
        "precision": calibration.choice.precision.value,
        "channels_last": calibration.choice.channels_last,
        "images_per_second": calibration.images_per_second,
        "rejected": calibration.rejected,
    }
    path = _cache_path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: Path(temporary).write_text(json.dumps(record)))
    except OSError:
        pass  # The cache only saves time; a read-only home must not stop a run.


def screen_bf16(*, clock: Callable[[], float] = time.perf_counter) -> str | None:
    """Why bf16 is not worth a whole step here, or None when it is.

    Times one 3x3 convolution (64 channels, 8 x 16 x 16; smaller ones are all overhead) in bf16
    autocast against fp32: where bf16 is emulated it is many times slower, and a whole training
    step would take minutes.
    """
    convolution = nn.Conv2d(64, 64, 3, padding=1)
    inputs = torch.randn(8, 64, 16, 16)

    def timed(precision: Precision) -> float:
        with torch.no_grad(), autocast(precision, torch.device("cpu")):
            convolution(inputs)  # Warm-up: the first call selects the kernels.
            started = clock()
            convolution(inputs)
            convolution(inputs)
        return clock() - started

    fp32, bf16 = timed(Precision.fp32), timed(Precision.bf16)
    if bf16 > SCREEN_SLOWDOWN * fp32:
        return f"a bf16 convolution ran {bf16 / max(fp32, 1e-9):.1f}x slower than fp32"
    return None


def measure_setting(
    model: nn.Module,
    setting: SpeedSetting,
    *,
    views: torch.Tensor,
    temperature: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, list[float]]:
    """Time training steps of a copy of ``model`` with one setting.

    Args:
        model: The model to copy (left unchanged): a ``SimCLRModel`` returning
            ``(features, projections)``.
        setting: Precision and memory format to run with.
        views: The fixed batch of both views, (2N, 3, S, S).
        temperature: NT-Xent temperature.
        clock: Source of time (a parameter for tests).

    Returns:
        Seconds per step over the timed steps, and the loss of every step (warm-up included).
    """
    candidate = copy.deepcopy(model).train()
    memory_format = torch.channels_last if setting.channels_last else torch.contiguous_format
    candidate = candidate.to(memory_format=memory_format)
    inputs = views.contiguous(memory_format=memory_format)
    optimizer = torch.optim.SGD(candidate.parameters(), lr=0.01)
    losses: list[float] = []
    started = 0.0
    for step in range(CALIBRATION_STEPS + 1):
        if step == 1:
            started = clock()  # The warm-up step allocates and picks kernels: not timed.
        with autocast(setting.precision, torch.device("cpu")):
            _, projections = candidate(inputs)
        z_a, z_b = projections.float().chunk(2)
        loss = nt_xent_loss(z_a, z_b, temperature=temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return (clock() - started) / CALIBRATION_STEPS, losses


def losses_agree(reference: Sequence[float], other: Sequence[float]) -> bool:
    """Whether ``other``'s losses stay within ``LOSS_TOLERANCE`` of ``reference``'s each step."""
    return all(
        math.isfinite(b) and abs(a - b) <= LOSS_TOLERANCE * abs(a)
        for a, b in zip(reference, other, strict=True)
    )


def calibrate(
    model: nn.Module,
    *,
    precision: Precision,
    channels_last: bool | None,
    image_size: int,
    batch_per_rank: int,
    temperature: float,
    seed: int = 0,
    screen: Callable[[], str | None] = screen_bf16,
    measure: Callable[..., tuple[float, list[float]]] = measure_setting,
) -> Calibration:
    """Measure the candidate settings on a copy of ``model`` and pick the fastest good one.

    The global random state is left as it was: a calibrated run draws the same augmentations as
    one that was not, and differs from it only by the arithmetic of the setting that won.

    Args:
        model: The run's model on the CPU (copied, never changed).
        precision: ``--precision`` (``auto`` measures fp32 and bf16).
        channels_last: ``SIMCLR_CHANNELS_LAST`` (None measures both memory formats).
        image_size: Side of the training views.
        batch_per_rank: Images of a step in this process (the calibration batch is as big, up to
            ``CALIBRATION_PIXELS``).
        temperature: NT-Xent temperature.
        seed: Seed of the random calibration batch.
        screen: Says why bf16 is not worth measuring, or None (a parameter for tests).
        measure: Times one setting (a parameter for tests).

    Returns:
        The chosen setting, every measured speed and every rejected candidate.
    """
    started = time.perf_counter()
    settings = candidates(precision, channels_last)
    rejected: dict[str, str] = {}
    if precision is Precision.auto and any(s.precision is Precision.bf16 for s in settings):
        reason = screen()
        if reason is not None:
            for setting in settings:
                if setting.precision is Precision.bf16:
                    rejected[setting.label] = reason
            settings = [s for s in settings if s.precision is not Precision.bf16]
    count = calibration_views(image_size, batch_per_rank)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        views = torch.randn(count, 3, image_size, image_size)
        results = {
            setting: measure(model, setting, views=views, temperature=temperature)
            for setting in settings
        }
    views_per_image = 2
    speeds = {s.label: count / views_per_image / seconds for s, (seconds, _) in results.items()}
    reference = next(
        (losses for s, (_, losses) in results.items() if s.precision is Precision.fp32), None
    )
    usable = []
    for setting, (_, losses) in results.items():
        checked = setting.precision is Precision.bf16 and precision is Precision.auto
        if checked and reference and not losses_agree(reference, losses):
            rejected[setting.label] = "its losses did not follow fp32's"
            continue
        usable.append(setting)
    choice = max(usable, key=lambda s: speeds[s.label])
    return Calibration(choice, "measured", speeds, rejected, time.perf_counter() - started)


def plan_speed(
    *,
    model: nn.Module,
    device: torch.device,
    precision: Precision,
    rule: SpeedSetting,
    model_shape: dict[str, Any],
    image_size: int,
    batch_per_rank: int,
    temperature: float,
    threads: int,
    world_size: int,
    run_seconds: float | None,
    total_steps: int,
    measure: Callable[..., Calibration] = calibrate,
) -> Calibration:
    """The speed settings of a run: measured, cached, or by rule, and why.

    Args:
        model: The run's model (copied when measured, never changed).
        device: Where the run trains; on a GPU the rule decides.
        precision: ``--precision`` as given (``auto`` or a forced one).
        rule: What the rules of ``_runtime`` chose: kept where nothing is measured.
        model_shape: What decides the step's cost besides the machine (backbone, stem, sizes).
        image_size: Side of the training views.
        batch_per_rank: Images of a step in this process.
        temperature: NT-Xent temperature.
        threads: Intra-op threads of the run.
        world_size: Processes of the job; with several, each reads the cache but none measures
            (ranks measuring apart could choose apart).
        run_seconds: The time budget, or None.
        total_steps: The planned steps (a run without a budget is measured from 200 steps on).
        measure: Measures the candidates (a parameter for tests).

    Returns:
        The calibration; ``how`` says which way it was decided.
    """
    forced_layout = _env.channels_last()
    if device.type != "cpu":
        return Calibration(rule, "rule (GPU)")
    if precision is not Precision.auto and forced_layout is not None:
        return Calibration(rule, "forced by --precision and SIMCLR_CHANNELS_LAST")
    # The candidates (what the flags leave open) are part of the key: a record answers only the
    # question it measured.
    shape = {**model_shape, "precision": precision.value, "channels_last": forced_layout}
    views = calibration_views(image_size, batch_per_rank)
    key = machine_key(model_shape=shape, threads=threads, views=views)
    cached = read_cached(key)
    if cached is not None:
        return cached
    long_enough = run_seconds >= MIN_RUN_SECONDS if run_seconds is not None else total_steps >= 200
    if world_size > 1:
        return Calibration(rule, "rule (several processes; a one-process run measures)")
    if not long_enough:
        return Calibration(rule, "rule (run too short to measure)")
    calibration = measure(
        model,
        precision=precision,
        channels_last=forced_layout,
        image_size=image_size,
        batch_per_rank=batch_per_rank,
        temperature=temperature,
    )
    write_cached(key, calibration)
    return calibration
