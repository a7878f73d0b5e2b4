"""The run plan: every `auto` resolved in one place, flags win, shown first and saved in [plan]."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from simclr_cli.core._runtime import resolve_precision
from simclr_cli.core._threads import default_workers
from simclr_cli.core.choices import CacheMode, Precision, Preset, Stem
from simclr_cli.core.data import loader as loader_module
from simclr_cli.core.data.files import find_images
from simclr_cli.core.data.index import FileIndex
from simclr_cli.core.errors import ConfigError, DataError
from simclr_cli.core.progress import ProgressEvent
from simclr_cli.core.train.loop import pretrain
from simclr_cli.core.train.plan import (
    fit_batch_size,
    plan_rows,
    plan_run,
    plan_warmup,
    resolved_settings,
)
from tests.conftest import tiny_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


@pytest.fixture(autouse=True)
def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*TORCHRUN_VARIABLES, "SIMCLR_THREADS", "SIMCLR_CHANNELS_LAST"):
        monkeypatch.delenv(name, raising=False)


def test_plan_run__resolves_every_auto(shapes_dir: Path, tmp_path: Path):
    config = tiny_config(shapes_dir, tmp_path / "run", workers=None, device="cpu")
    plan = plan_run(config=config)
    assert plan.num_images == 24 and not plan.bad_images
    assert isinstance(plan.images, FileIndex) and list(plan.images) == find_images(shapes_dir)
    assert (plan.world_size, plan.batch_per_rank, plan.processes.launch) == (1, 8, False)
    assert plan.device == torch.device("cpu")
    assert plan.precision is resolve_precision(Precision.auto, plan.device)
    assert plan.channels_last is (plan.precision is Precision.bf16)
    # 32 px: the CIFAR stem and preset, the preset's colour strength.
    assert plan.stem is Stem.cifar and plan.preset is Preset.cifar
    assert plan.color_strength == 0.5
    assert plan.workers == default_workers() and plan.threads == torch.get_num_threads()
    assert plan.cache is CacheMode.auto and plan.cache_budget > 0
    assert (plan.total_steps, plan.warmup_steps) == (2, 0)
    assert math.isclose(plan.peak_learning_rate, 0.075 * math.sqrt(8))
    assert plan.weight_decay == 1e-6
    # Planning writes nothing.
    assert not (tmp_path / "run").exists()


def test_plan_run__flags_forcing_a_choice_win(shapes_dir: Path, tmp_path: Path):
    config = tiny_config(
        shapes_dir,
        tmp_path / "run",
        device="cpu",
        precision="fp32",
        stem="imagenet",
        preset="imagenet",
        color_strength=1.5,
        workers=3,
        cache="off",
        max_steps=None,
        epochs=2,
        warmup_fraction=0.5,
        optimizer="sgd",
        learning_rate=0.4,
        lr_scaling="linear",
        weight_decay=0.01,
    )
    plan = plan_run(config=config)
    assert plan.precision is Precision.fp32 and not plan.channels_last
    assert plan.stem is Stem.imagenet and plan.preset is Preset.imagenet
    assert plan.color_strength == 1.5 and plan.workers == 3
    assert plan.cache is CacheMode.off and plan.cache_budget is None
    # Two epochs of 24 // 8 batches, half of them warm-up; 0.4 x 8 / 256.
    assert (plan.total_steps, plan.warmup_steps) == (6, 3)
    assert math.isclose(plan.peak_learning_rate, 0.4 * 8 / 256)
    assert plan.weight_decay == 0.01
    rows = {setting: (value, how) for setting, value, how in plan_rows(plan, config)}
    assert rows["stem"] == ("imagenet", "") and rows["workers"] == ("3", "")
    assert rows["steps"] == ("6", "2 epochs of 3 batches")
    assert rows["warm-up"] == ("3 steps", "0.5 of the steps")
    assert rows["learning rate"] == ("0.0125 peak", "--lr 0.4, linear scaling to batch 8")


@pytest.mark.parametrize(
    ("total_steps", "warmup_epochs", "warmup_fraction", "expected"),
    [
        (1000, None, None, 100),  # neither: 0.1 of the steps
        (1000, None, 0.25, 250),
        (1000, 10, None, 500),  # 10 epochs of 50 steps
        (1000, 0, None, 0),
        (300, 10, None, 299),  # capped below the total: the run still reaches its peak
        (1, 10, None, 0),
    ],
)
def test_plan_warmup__epochs_decide_when_given_else_the_fraction(
    total_steps, warmup_epochs, warmup_fraction, expected
):
    steps = plan_warmup(
        total_steps=total_steps,
        steps_per_epoch=50,
        warmup_epochs=warmup_epochs,
        warmup_fraction=warmup_fraction,
    )
    assert steps == expected


def test_plan_run__warmup_epochs_count_epochs_of_the_data(shapes_dir: Path, tmp_path: Path):
    config = tiny_config(shapes_dir, tmp_path / "run", max_steps=None, epochs=4, warmup_epochs=1)
    plan = plan_run(config=config)
    # 24 // 8 = 3 steps per epoch; one epoch of warm-up out of 12 steps.
    assert (plan.total_steps, plan.warmup_steps) == (12, 3)
    rows = {setting: (value, how) for setting, value, how in plan_rows(plan, config)}
    assert rows["warm-up"] == ("3 steps", "--warmup-epochs 1")
    assert "warmup_fraction" not in {k for k, v in resolved_settings(config, plan).items() if v}


def test_plan_run__both_warmup_flags_are_refused(shapes_dir: Path, tmp_path: Path):
    config = tiny_config(shapes_dir, tmp_path / "run", warmup_epochs=1, warmup_fraction=0.1)
    with pytest.raises(ConfigError, match="give one") as caught:
        plan_run(config=config)
    assert caught.value.flag == "--warmup-epochs"


def test_plan_rows__default_run_shows_peak_and_warmup(shapes_dir: Path, tmp_path: Path):
    config = tiny_config(shapes_dir, tmp_path / "run", max_steps=None, epochs=10)
    plan = plan_run(config=config)
    rows = {setting: (value, how) for setting, value, how in plan_rows(plan, config)}
    assert rows["learning rate"] == (f"{0.075 * math.sqrt(8):.4g} peak", "sqrt scaling to batch 8")
    assert rows["warm-up"] == ("3 steps", "0.1 of the steps")
    assert resolved_settings(config, plan)["warmup_fraction"] == 0.1


def test_plan_run__short_time_budget_picks_the_fast_stem(shapes_dir: Path, tmp_path: Path):
    short = tiny_config(shapes_dir, tmp_path / "run", time_budget=60.0)
    plan = plan_run(config=short)
    assert plan.stem is Stem.imagenet
    assert dict((s, h) for s, _, h in plan_rows(plan, short))["stem"].startswith("auto: the fast")
    long = tiny_config(shapes_dir, tmp_path / "run", time_budget=7200.0)
    assert plan_run(config=long).stem is Stem.cifar
    forced = tiny_config(shapes_dir, tmp_path / "run", time_budget=60.0, stem="cifar")
    assert plan_run(config=forced).stem is Stem.cifar


def test_plan_run__environment_sets_threads_and_memory_format_without_applying_them(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    before = torch.get_num_threads()
    monkeypatch.setenv("SIMCLR_THREADS", "1")
    monkeypatch.setenv("SIMCLR_CHANNELS_LAST", "1")
    plan = plan_run(config=tiny_config(shapes_dir, tmp_path / "run", device="cpu"))
    assert plan.threads == 1 and plan.channels_last
    assert torch.get_num_threads() == before


def test_plan_run__cpu_ranks_share_the_cores_and_the_workers(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    environment = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for name, value in {**environment, "MASTER_ADDR": "localhost"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    config = tiny_config(shapes_dir, tmp_path / "run", device="cpu", workers=None)
    plan = plan_run(config=config)
    assert plan.context.rank == 1 and plan.world_size == 2 and not plan.processes.launch
    assert plan.batch_per_rank == 4 and plan.threads == 4
    assert plan.workers == 2  # Half of the 8 cores, shared by the 2 ranks.
    # An explicit --workers is each rank's own.
    assert plan_run(config=tiny_config(shapes_dir, tmp_path / "run", workers=3)).workers == 3


def test_plan_run__ranks_share_the_machine_cache_budget(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    environment = {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    for name, value in {**environment, "MASTER_ADDR": "localhost"}.items():
        monkeypatch.setenv(name, value)  # Two machines of two ranks.
    monkeypatch.delenv("SIMCLR_CACHE_BUDGET", raising=False)
    monkeypatch.setattr(loader_module, "available_memory_bytes", lambda: 12_000_000_000)
    config = tiny_config(shapes_dir, tmp_path / "run", device="cpu")
    plan = plan_run(config=config)
    # Half of this machine's free memory, shared by its two ranks.
    assert plan.cache_budget == 6_000_000_000 and plan.cache_budget_per_rank == 3_000_000_000
    rows = {setting: (value, how) for setting, value, how in plan_rows(plan, config)}
    assert rows["cache"] == (
        "RAM up to 6.0 GB per machine, else stream",
        "auto; per rank 1/4 of the images, 3.0 GB",
    )
    ram = tiny_config(shapes_dir, tmp_path / "run", device="cpu", cache="ram")
    rows = {setting: (value, how) for setting, value, how in plan_rows(plan_run(config=ram), ram)}
    assert rows["cache"] == ("ram", "per rank 1/4 of the images")


def test_plan_run__flags_are_checked_before_the_data(tmp_path: Path):
    missing = tmp_path / "nothing"
    with pytest.raises(ConfigError, match="does not split evenly"):
        plan_run(config=tiny_config(missing, tmp_path / "run", cpu_processes=3))
    # Each of the 2 processes gets 4 images: 8 micro-batches do not divide them.
    with pytest.raises(ConfigError, match="4 images to each of 2 processes"):
        plan_run(config=tiny_config(missing, tmp_path / "run", cpu_processes=2, accumulate=8))
    with pytest.raises(DataError, match="does not exist"):
        plan_run(config=tiny_config(missing, tmp_path / "run"))


def test_pretrain__plan_is_the_first_event_and_saved_under_plan(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A cache folder of its own: no speed setting measured by another test is found.
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    events: list[ProgressEvent] = []
    config = tiny_config(shapes_dir, tmp_path / "run", max_steps=3)
    pretrain(config=config, progress=events.append)
    assert events[0].kind == "plan" and [e.kind for e in events].count("plan") == 1
    assert events[1].kind == "start"
    rows = {setting: value for setting, value, _ in events[0].rows}
    assert rows["stem"] == "cifar" and rows["images"] == "24"
    table = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["plan"]
    # The keys [plan] always had come first; then every other choice of the run.
    assert list(table)[:3] == ["total_steps", "warmup_steps", "peak_learning_rate"]
    expected = plan_run(config=tiny_config(shapes_dir, tmp_path / "other", max_steps=3))
    # The loop adds how precision and memory format were chosen (a 3-step run: by rule).
    assert table.pop("speed_chosen_by") == "rule (run too short to measure)"
    # The rule's choice for this CPU: bf16 with channels-last where bf16 is native, else fp32.
    layout = "channels-last" if expected.channels_last else "contiguous"
    assert table.pop("speed_choice") == f"{expected.precision.value}, {layout}"
    assert table == expected.to_table()
    assert table["stem"] == "cifar" and table["device"] == "cpu" and table["num_images"] == 24


def test_fit_batch_size__default_fits_a_small_folder():
    assert fit_batch_size(requested=None, num_images=1000, multiple=1) == (256, False)
    # Fewer images than the default: the largest multiple of processes x micro-batches.
    assert fit_batch_size(requested=None, num_images=244, multiple=1) == (244, True)
    assert fit_batch_size(requested=None, num_images=245, multiple=4) == (244, True)
    assert fit_batch_size(requested=64, num_images=244, multiple=1) == (64, False)


def test_fit_batch_size__explicit_batch_larger_than_data_is_refused():
    with pytest.raises(DataError, match="fewer than --batch-size 256"):
        fit_batch_size(requested=256, num_images=244, multiple=1)
    with pytest.raises(DataError, match="too few"):
        fit_batch_size(requested=None, num_images=3, multiple=4)


def test_plan_run__several_inputs_and_a_file_list_with_missing_lines(
    shapes_dir: Path, tmp_path: Path
):
    squares = sorted((shapes_dir / "square").iterdir())
    file_list = tmp_path / "list.txt"
    file_list.write_text(f"{squares[0]}\n{squares[1]}\ngone.png\n")
    config = tiny_config(
        shapes_dir / "circle",
        tmp_path / "run",
        extra_data=[shapes_dir / "stripes", squares[2]],
        file_list=file_list,
    )
    plan = plan_run(config=config)
    assert plan.num_images == 8 + 8 + 1 + 2
    assert [Path(bad.path).name for bad in plan.bad_images] == ["gone.png"]
    settings = resolved_settings(config, plan)
    assert settings["data"] == [
        str((shapes_dir / "circle").resolve()),
        str((shapes_dir / "stripes").resolve()),
        str(squares[2].resolve()),
    ]
    assert settings["file_list"] == str(file_list.resolve()) and "extra_data" not in settings
    with pytest.raises(DataError, match=r"not readable images \(.*gone\.png: file not found"):
        plan_run(
            config=tiny_config(None, tmp_path / "run", file_list=file_list, on_bad_image="fail")
        )


def test_plan_run__file_list_naming_nothing_that_exists_is_refused(tmp_path: Path):
    file_list = tmp_path / "list.txt"
    file_list.write_text("a.png\nb.png\n")
    with pytest.raises(DataError, match="none of the 2 listed files exists"):
        plan_run(config=tiny_config(None, tmp_path / "run", file_list=file_list))
    with pytest.raises(ConfigError, match="--file-list"):
        plan_run(config=tiny_config(None, tmp_path / "run"))
