"""Speed settings by measurement: candidates, the bf16 loss check, the cache and the rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from simclr_cli.core.choices import Precision
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train import calibrate as calibration
from simclr_cli.core.train.calibrate import (
    Calibration,
    SpeedSetting,
    calibrate,
    calibration_views,
    candidates,
    losses_agree,
    measure_setting,
    plan_speed,
)

CPU = torch.device("cpu")
FP32 = SpeedSetting(Precision.fp32, False)
FP32_NHWC = SpeedSetting(Precision.fp32, True)
BF16_NHWC = SpeedSetting(Precision.bf16, True)


def _tiny_model():
    torch.manual_seed(0)
    return create_simclr_model(backbone="test_resnet", stem="imagenet", image_size=16)


def _fake_measure(seconds: dict[SpeedSetting, float], losses: dict[SpeedSetting, list[float]]):
    def measure(model, setting, *, views, temperature):
        return seconds[setting], losses.get(setting, [4.0, 3.9, 3.8, 3.7])

    return measure


def test_candidates__flags_narrow_what_is_measured():
    assert len(candidates(Precision.auto, None)) == 4
    assert candidates(Precision.fp32, None) == [FP32, FP32_NHWC]
    assert candidates(Precision.auto, True) == [FP32_NHWC, BF16_NHWC]


def test_calibration_views__fewer_views_for_larger_images():
    # The run's own batch (two views an image), up to 512 views of 32 px worth of pixels.
    assert calibration_views(32, 256) == 512
    assert calibration_views(32, 16) == 32
    assert calibration_views(224, 256) == 10
    assert calibration_views(1024, 256) == 4


def test_calibrate__fastest_setting_wins():
    seconds = {FP32: 1.0, FP32_NHWC: 0.8, SpeedSetting(Precision.bf16, False): 0.9, BF16_NHWC: 0.5}
    result = calibrate(
        _tiny_model(),
        precision=Precision.auto,
        channels_last=None,
        image_size=16,
        batch_per_rank=4,
        temperature=0.1,
        screen=lambda: None,
        measure=_fake_measure(seconds, {}),
    )
    assert result.choice == BF16_NHWC and result.how == "measured"
    assert result.images_per_second[FP32.label] < result.images_per_second[BF16_NHWC.label]


def test_calibrate__bf16_whose_losses_drift_is_not_chosen():
    seconds = {FP32: 1.0, FP32_NHWC: 0.8, SpeedSetting(Precision.bf16, False): 0.4, BF16_NHWC: 0.3}
    drifting = [4.0, 3.5, 3.0, 2.0]
    losses = {SpeedSetting(Precision.bf16, False): drifting, BF16_NHWC: drifting}
    result = calibrate(
        _tiny_model(),
        precision=Precision.auto,
        channels_last=None,
        image_size=16,
        batch_per_rank=4,
        temperature=0.1,
        screen=lambda: None,
        measure=_fake_measure(seconds, losses),
    )
    assert result.choice == FP32_NHWC
    assert "did not follow fp32" in result.rejected[BF16_NHWC.label]


def test_calibrate__screened_bf16_is_never_run():
    measured = []

    def measure(model, setting, *, views, temperature):
        measured.append(setting)
        return 1.0, [4.0, 3.9, 3.8, 3.7]

    result = calibrate(
        _tiny_model(),
        precision=Precision.auto,
        channels_last=None,
        image_size=16,
        batch_per_rank=4,
        temperature=0.1,
        screen=lambda: "emulated",
        measure=measure,
    )
    assert all(setting.precision is Precision.fp32 for setting in measured)
    assert result.rejected[BF16_NHWC.label] == "emulated"


def test_calibrate__leaves_the_model_and_the_random_state_alone():
    model = _tiny_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    calibrate(
        model,
        precision=Precision.fp32,
        channels_last=False,
        image_size=16,
        batch_per_rank=4,
        temperature=0.1,
    )
    assert torch.equal(torch.rand(3), expected)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_measure_setting__real_steps_give_finite_losses():
    views = torch.randn(8, 3, 16, 16)
    seconds, losses = measure_setting(_tiny_model(), FP32_NHWC, views=views, temperature=0.1)
    assert seconds > 0 and len(losses) == calibration.CALIBRATION_STEPS + 1
    assert losses_agree(losses, losses) and not losses_agree(losses, [x * 1.5 for x in losses])


def _plan_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes):
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SIMCLR_CHANNELS_LAST", raising=False)
    calls = []

    def measure(model, **kwargs):
        calls.append(kwargs)
        return Calibration(FP32_NHWC, "measured", {FP32.label: 10.0, FP32_NHWC.label: 12.0})

    arguments = {
        "model": _tiny_model(),
        "device": CPU,
        "precision": Precision.auto,
        "rule": FP32,
        "model_shape": {"backbone": "test_resnet", "image_size": 16},
        "image_size": 16,
        "batch_per_rank": 4,
        "temperature": 0.1,
        "threads": 2,
        "world_size": 1,
        "run_seconds": 265.0,
        "total_steps": 10,
        "measure": measure,
    }
    arguments.update(changes)
    return plan_speed(**arguments), calls


def test_plan_speed__measures_once_then_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    first, calls = _plan_speed(tmp_path, monkeypatch)
    assert first.how == "measured" and first.choice == FP32_NHWC and len(calls) == 1
    second, calls = _plan_speed(tmp_path, monkeypatch)
    assert second.how == "cached" and second.choice == FP32_NHWC and not calls
    assert second.images_per_second == first.images_per_second
    # Another model shape is another question.
    third, calls = _plan_speed(tmp_path, monkeypatch, model_shape={"backbone": "resnet18"})
    assert third.how == "measured" and len(calls) == 1


@pytest.mark.parametrize(
    ("changes", "how"),
    [
        ({"run_seconds": 60.0}, "too short"),
        ({"run_seconds": None, "total_steps": 50}, "too short"),
        ({"world_size": 2}, "several processes"),
        ({"device": torch.device("cuda")}, "GPU"),
    ],
)
def test_plan_speed__rules_where_nothing_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict, how: str
):
    result, calls = _plan_speed(tmp_path, monkeypatch, **changes)
    assert result.choice == FP32 and how in result.how and not calls


def test_plan_speed__forced_flags_skip_the_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SIMCLR_CHANNELS_LAST", "0")
    monkeypatch.setenv("SIMCLR_CACHE_DIR", str(tmp_path / "cache"))
    result = plan_speed(
        model=_tiny_model(),
        device=CPU,
        precision=Precision.fp32,
        rule=FP32,
        model_shape={},
        image_size=16,
        batch_per_rank=4,
        temperature=0.1,
        threads=2,
        world_size=1,
        run_seconds=265.0,
        total_steps=10,
        measure=lambda *a, **k: pytest.fail("measured although both settings were forced"),
    )
    assert result.choice == FP32 and "forced" in result.how
