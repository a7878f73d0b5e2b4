"""`--image-size auto`: the data's resolution, and under a CPU time budget the size that affords
enough steps at the measured speed."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from simclr_cli.core.train.image_size import (
    IMAGE_SIZE_LADDER,
    MIN_BUDGET_STEPS,
    REFERENCE_SIZE,
    REFERENCE_VIEWS,
    ImageSizeChoice,
    largest_fitting,
    measure_reference_speed,
    native_side,
    plan_image_size,
)
from simclr_cli.core.train.plan import plan_rows, plan_run
from simclr_cli.core.train.run_folder import saved_settings
from tests.conftest import TINY_BACKBONE, tiny_config

CPU = torch.device("cpu")


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (width, height) in enumerate(sizes):
        path = folder / f"{number:03d}.png"
        Image.new("RGB", (width, height), (number * 40 % 255, 90, 160)).save(path)
        paths.append(path)
    return paths


def never_measure(**_: object) -> float:
    raise AssertionError("the speed should not be measured here")


def choose(
    paths: list[Path],
    *,
    budget: float | None,
    speed: float | None = None,
    device: torch.device = CPU,
    requested: int | None = None,
) -> ImageSizeChoice:
    """``plan_image_size`` at a batch of 256 and a fixed speed (None: never measured)."""
    return plan_image_size(
        requested=requested,
        images=paths,
        device=device,
        time_budget=budget,
        batch_size=256,
        backbone=TINY_BACKBONE,
        measure=never_measure if speed is None else (lambda **_: speed),
    )


def test_native_side__median_short_side_of_the_headers(tmp_path: Path):
    paths = write_images(tmp_path, [(40, 60), (80, 50), (100, 30)])
    assert native_side(paths) == 40
    assert native_side([]) is None


def test_largest_fitting__largest_size_whose_steps_reach_the_minimum():
    # 1000 s at 1000 img/s at 32 px, batch 256: 3906 steps at 32 px, 434 at 96, 319 at 112.
    size, steps = largest_fitting(
        budget_seconds=1000,
        reference_images_per_second=1000,
        batch_size=256,
        cap=224,
        min_steps=400,
    )
    assert size == 96 and steps >= 400
    for larger in (s for s in IMAGE_SIZE_LADDER if s > size):
        assert 1000 * 1000 * (REFERENCE_SIZE / larger) ** 2 / 256 < 400


def test_largest_fitting__never_above_the_cap_and_smallest_when_nothing_fits():
    assert (
        largest_fitting(
            budget_seconds=1e6, reference_images_per_second=1000, batch_size=256, cap=64
        )[0]
        == 64
    )
    assert (
        largest_fitting(budget_seconds=1, reference_images_per_second=10, batch_size=256, cap=224)[
            0
        ]
        == IMAGE_SIZE_LADDER[-1]
    )


def test_plan_image_size__flag_wins_without_measuring(tmp_path: Path):
    paths = write_images(tmp_path, [(300, 300)])
    choice = choose(paths, budget=60, requested=96)
    assert (choice.image_size, choice.how) == (96, "")


@pytest.mark.parametrize(("side", "expected"), [(32, 32), (150, 150), (600, 224)])
def test_plan_image_size__without_budget_224_or_the_data_resolution(
    tmp_path: Path, side: int, expected: int
):
    paths = write_images(tmp_path, [(side, side + 10)] * 3)
    choice = choose(paths, budget=None)
    assert choice.image_size == expected and choice.native_side == side
    assert "no time budget" in choice.how


def test_plan_image_size__gpu_keeps_224_under_a_budget(tmp_path: Path):
    paths = write_images(tmp_path, [(640, 480)])
    assert choose(paths, budget=60, device=torch.device("cuda")).image_size == 224


@pytest.mark.parametrize(("speed", "budget"), [(50.0, 180.0), (600.0, 180.0), (600.0, 36000.0)])
def test_plan_image_size__cpu_budget_follows_the_measured_speed(
    tmp_path: Path, speed: float, budget: float
):
    paths = write_images(tmp_path, [(640, 480)])
    choice = choose(paths, budget=budget, speed=speed)
    expected, _ = largest_fitting(
        budget_seconds=budget, reference_images_per_second=speed, batch_size=256, cap=224
    )
    assert choice.image_size == expected and choice.reference_images_per_second == speed
    assert "steps fit the budget" in choice.how


def test_plan_image_size__faster_machine_or_longer_budget_trains_larger(tmp_path: Path):
    paths = write_images(tmp_path, [(640, 480)])

    def size(speed: float, budget: float) -> int:
        return choose(paths, budget=budget, speed=speed).image_size

    # Just fast enough for the minimum steps at 64 px in 180 s (4x the pixels of 32 px).
    fast = MIN_BUDGET_STEPS * 256 / 180 * 4 * 1.01
    assert size(fast / 100, 180) == 32
    assert size(fast, 180) == 64
    assert size(fast, 100 * 180) == 224


def test_measure_reference_speed__images_per_second_from_the_timed_steps():
    ticks = itertools.count(start=0.0, step=0.5)
    speed = measure_reference_speed(backbone=TINY_BACKBONE, clock=lambda: next(ticks))
    # Two timed steps between two clock readings 0.5 s apart: 0.25 s a step of 32 images.
    assert speed == pytest.approx((REFERENCE_VIEWS // 2) / 0.25)


def test_plan_run__auto_size_is_the_data_resolution_and_shown(shapes_dir: Path, tmp_path: Path):
    config = tiny_config(shapes_dir, tmp_path / "run", image_size=None, device="cpu")
    plan = plan_run(config=config)
    assert plan.image_size == 32 and plan.to_table()["image_size"] == 32
    rows = {row[0]: row for row in plan_rows(plan, config)}
    assert (
        rows["image size"][1] == "32 px" and "median short side is 32 px" in rows["image size"][2]
    )


def test_saved_settings__a_checkpoint_s_settings_or_none(shapes_dir: Path, tmp_path: Path):
    from simclr_cli.core.train.loop import pretrain

    assert saved_settings(tmp_path / "nothing") is None
    out = tmp_path / "run"
    pretrain(config=tiny_config(shapes_dir, out, image_size=None))
    settings = saved_settings(out)
    assert settings is not None and settings["image_size"] == 32


def test_plan_run__resume_keeps_the_size_the_run_started_with(shapes_dir: Path, tmp_path: Path):
    from simclr_cli.core.train.loop import pretrain

    out = tmp_path / "run"
    pretrain(config=tiny_config(shapes_dir, out, image_size=48))
    again = tiny_config(shapes_dir, out, image_size=None, resume=True, device="cpu")
    # auto alone would say 32 (the images' size); the run continues at the size it began with.
    assert plan_run(config=again).image_size == 48
