"""The training image size ``--image-size auto`` means: the size that learns most in the time.

Without a time budget, or on a GPU, ``auto`` is 224 px (the paper's size), never more than the
data's own resolution: a folder of 32 px CIFAR images trains at 32 px rather than blown up to
224. Under ``--time-budget`` on the CPU the number of steps decides: SimCLR learns little from a
handful of steps, however large the views (on the 2-core CPU of benchmarks/RESULTS.md a 3-minute
budget at 224 px was 6 steps), so ``auto`` takes the largest size of ``IMAGE_SIZE_LADDER`` at
which the budget still affords ``MIN_BUDGET_STEPS`` steps of the run's batch, at a speed
measured on the machine at hand (``measure_reference_speed``: a few training steps of the
backbone at 32 px) and scaled with the pixels of a view. The measurements behind the numbers
are in benchmarks/RESULTS.md ("Training size under a time budget").
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..choices import Precision
from ..constants import DEFAULT_IMAGE_SIZE
from ..data.files import ImageSource, open_image
from ..errors import ImageDecodeError
from ..model.simclr import create_simclr_model
from .calibrate import SpeedSetting, measure_setting

#: The sizes ``auto`` chooses from under a time budget, largest first.
IMAGE_SIZE_LADDER = (224, 192, 160, 128, 112, 96, 80, 64, 48, 32)
#: Steps a budgeted run should at least make at the size ``auto`` picks, counted at the
#: measured fp32 speed (a run in bf16 makes more). On generated 160 px shapes the smallest size
#: won at every budget measured: 32 px over 64 px at 60 s and 180 s (linear probe 0.623 against
#: 0.523, and 0.737 against 0.712), where 64 px would have had 18 and 53 such steps; at 10
#: minutes (176 such steps) 64 px won the linear probe by 1.3 points and lost kNN by 7.9, so the
#: crossing is near and 200 errs on the side of more steps (benchmarks/RESULTS.md).
MIN_BUDGET_STEPS = 200
#: Side of the views of the speed measurement; other sizes are scaled by their pixels.
REFERENCE_SIZE = 32
#: Views of one step of the speed measurement (32 images).
REFERENCE_VIEWS = 64
#: Images whose headers are read for the data's resolution (spread evenly over the data).
RESOLUTION_SAMPLE = 64


@dataclass(frozen=True)
class ImageSizeChoice:
    """The training size and why.

    Attributes:
        image_size: Side of the training views in pixels.
        how: Why, for the plan table (empty when ``--image-size`` gave it).
        native_side: The data's median short side in pixels (None when not looked at).
        reference_images_per_second: Measured training images/s at ``REFERENCE_SIZE`` (None when
            nothing was measured).
    """

    image_size: int
    how: str
    native_side: int | None = None
    reference_images_per_second: float | None = None


def native_side(images: Sequence[ImageSource], *, sample: int = RESOLUTION_SAMPLE) -> int | None:
    """The median short side of the images, from the headers of an even sample of them.

    Returns:
        The side in pixels; None when no sampled header could be read.
    """
    if not len(images):
        return None
    count = min(sample, len(images))
    positions = sorted({round(i * (len(images) - 1) / max(1, count - 1)) for i in range(count)})
    sides = []
    for position in positions:
        try:
            with open_image(images[position]) as image:
                sides.append(min(image.size))
        except ImageDecodeError:
            continue  # The header scan lists unreadable files; the size needs only some.
    return int(statistics.median(sides)) if sides else None


def measure_reference_speed(
    *,
    backbone: str,
    head_output_dim: int = 128,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Training images per second of ``backbone`` at ``REFERENCE_SIZE`` on this CPU (fp32).

    One warm-up and two timed steps (forward of both views, NT-Xent, backward, update) of a
    fresh model with the ImageNet stem, on ``REFERENCE_VIEWS`` random views: well under a second
    on a recent CPU, a second or two on an old one. fp32 and contiguous, so the figure is a
    lower bound when the run later picks bf16 or channels-last.
    """
    model = create_simclr_model(
        backbone=backbone,
        stem="imagenet",
        image_size=REFERENCE_SIZE,
        head_output_dim=head_output_dim,
        metadata={},
    )
    generator = torch.Generator().manual_seed(0)
    views = torch.randn(REFERENCE_VIEWS, 3, REFERENCE_SIZE, REFERENCE_SIZE, generator=generator)
    setting = SpeedSetting(precision=Precision.fp32, channels_last=False)
    seconds, _ = measure_setting(model, setting, views=views, temperature=0.1, clock=clock)
    return (REFERENCE_VIEWS // 2) / seconds


def largest_fitting(
    *,
    budget_seconds: float,
    reference_images_per_second: float,
    batch_size: int,
    cap: int,
    min_steps: int = MIN_BUDGET_STEPS,
) -> tuple[int, float]:
    """The largest ladder size not above ``cap`` at which the budget affords ``min_steps``.

    A view's cost grows with its pixels, so the speed at side S is taken as the reference
    speed times (REFERENCE_SIZE / S)^2 (conservative for small sizes, where fixed costs weigh
    more). When no size affords the steps, the smallest size not above ``cap`` is chosen.

    Args:
        budget_seconds: Training time the run has.
        reference_images_per_second: Measured speed at ``REFERENCE_SIZE``.
        batch_size: Images of one step (the global batch).
        cap: The largest size worth training at (the data's resolution).
        min_steps: Steps the run should at least make.

    Returns:
        The size and the steps the budget affords at it.
    """
    allowed = [size for size in IMAGE_SIZE_LADDER if size <= cap] or [IMAGE_SIZE_LADDER[-1]]

    def steps_at(size: int) -> float:
        speed = reference_images_per_second * (REFERENCE_SIZE / size) ** 2
        return budget_seconds * speed / batch_size

    size = next((size for size in allowed if steps_at(size) >= min_steps), allowed[-1])
    return size, steps_at(size)


def plan_image_size(
    *,
    requested: int | None,
    images: Sequence[ImageSource],
    device: torch.device,
    time_budget: float | None,
    batch_size: int,
    backbone: str,
    head_output_dim: int = 128,
    measure: Callable[..., float] = measure_reference_speed,
) -> ImageSizeChoice:
    """The training size: ``--image-size`` when given, else what ``auto`` means (module note).

    Args:
        requested: The ``--image-size`` flag, or None for ``auto``.
        images: The training images (their headers give the data's resolution).
        device: Where the run trains.
        time_budget: Seconds the run has (``--time-budget``), or None.
        batch_size: The global batch.
        backbone: The timm model the run trains.
        head_output_dim: Output width of the projection head.
        measure: Measures the reference speed (a parameter for tests).

    Returns:
        The size and how it was chosen.
    """
    if requested is not None:
        return ImageSizeChoice(requested, "")
    side = native_side(images)
    # Never train above the data's resolution: upscaled views add compute, not information.
    cap = DEFAULT_IMAGE_SIZE if side is None else max(8, min(DEFAULT_IMAGE_SIZE, side))
    data = "" if side is None else f"; the images' median short side is {side} px"
    if time_budget is None or device.type != "cpu":
        where = "no time budget" if time_budget is None else f"on {device.type}"
        return ImageSizeChoice(cap, f"auto: {where}{data}", native_side=side)
    if cap <= IMAGE_SIZE_LADDER[-1]:
        # Already as small as the ladder goes: nothing to trade, nothing to measure.
        return ImageSizeChoice(cap, f"auto: the data's resolution{data}", native_side=side)
    speed = measure(backbone=backbone, head_output_dim=head_output_dim)
    size, steps = largest_fitting(
        budget_seconds=time_budget,
        reference_images_per_second=speed,
        batch_size=batch_size,
        cap=cap,
    )
    how = (
        f"auto: about {steps:.0f} steps fit the budget at this size "
        f"({speed:.0f} img/s measured at {REFERENCE_SIZE} px){data}"
    )
    return ImageSizeChoice(size, how, side, reference_images_per_second=speed)
