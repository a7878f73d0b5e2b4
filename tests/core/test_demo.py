"""The demo pipeline on a tiny configuration."""

from __future__ import annotations

from pathlib import Path

from simclr_cli.core.config import DemoConfig
from simclr_cli.core.demo import run_demo
from simclr_cli.core.model.files import read_metadata


def tiny_demo_config(out: Path) -> DemoConfig:
    """Demo settings that run in seconds: the tiny timm test model and few images."""
    return DemoConfig(
        out=out,
        backbone="test_resnet",
        stem="imagenet",
        images_per_class=4,
        val_images_per_class=2,
        time_budget=None,
        max_steps=2,
        batch_size=8,
    )


def test_run_demo__trains_and_scores_both_encoders(tmp_path: Path):
    result = run_demo(config=tiny_demo_config(tmp_path / "demo"))
    assert result.classes == sorted(result.classes) and len(result.classes) == 6
    assert result.num_train == 24 and result.num_val == 12
    for scores in (result.pretrained, result.random_init):
        assert 0.0 <= scores["top1"] <= scores["top5"] <= 1.0
    assert read_metadata(result.pretrain.model_path).steps == 2
    assert (tmp_path / "demo" / "data" / "val" / "circle").is_dir()


def test_run_demo__uses_the_demo_temperature(tmp_path: Path):
    import dataclasses

    config = dataclasses.replace(tiny_demo_config(tmp_path / "demo"), temperature=0.3)
    result = run_demo(config=config)
    assert read_metadata(result.pretrain.model_path).temperature == 0.3


def test_run_demo__trains_for_a_time_budget(tmp_path: Path):
    import dataclasses

    from simclr_cli.core._io import loads as loads_toml

    config = dataclasses.replace(
        tiny_demo_config(tmp_path / "demo"), time_budget=4.0, max_steps=None
    )
    result = run_demo(config=config)
    # The run was planned by its budget (the steps follow the measured speed), not by epochs.
    settings = loads_toml((result.pretrain.run_dir / "config.toml").read_text())["pretrain"]
    assert settings["time_budget"] == 4.0 and "max_steps" not in settings
    assert result.pretrain.steps >= 1


def test_demo_config__needs_a_budget_or_steps():
    import pytest

    from simclr_cli.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--time-budget or a number of --steps"):
        DemoConfig(time_budget=None, max_steps=None).validate()
    with pytest.raises(ConfigError, match="--time-budget must be positive"):
        DemoConfig(time_budget=0).validate()
