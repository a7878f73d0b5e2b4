"""The pretraining loop: files written, metrics logged, and bad input refused early."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from simclr_cli.core import _io
from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.errors import ConfigError, DataError, RunFolderError
from simclr_cli.core.model.files import load_model
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.checkpoints import read_checkpoint
from simclr_cli.core.train.loop import cached_contrastive_step, contrastive_step, pretrain
from tests.conftest import tiny_config
from tests.core.augment.conftest import shape_images

if sys.version_info >= (3, 11):
    pass
else:  # Python 3.10: the backport, a dependency there.
    pass


def test_pretrain__writes_model_metrics_and_config(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    result = pretrain(config=tiny_config(shapes_dir, out, max_steps=3))
    assert result.steps == 3 and result.images_seen == 24
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert set(lines[0]) == {
        "step",
        "epoch",
        "loss",
        "lr",
        "images_per_second",
        "data_wait",
        "skipped_images",
        "cache_bytes",
    }
    assert all(0.0 <= line["data_wait"] <= 1.0 for line in lines)
    assert lines[0]["loss"] > 0
    config = _io.loads((out / "config.toml").read_text())
    assert config["pretrain"]["backbone"] == "test_resnet"
    assert config["pretrain"]["data"] == str(shapes_dir.resolve())
    assert config["plan"]["total_steps"] == 3
    model = load_model(result.model_path)
    assert model.metadata.steps == 3 and model.metadata.images_seen == 24


@pytest.mark.slow
def test_pretrain__loss_decreases_on_learnable_data(shapes_dir: Path, tmp_path: Path):
    result = pretrain(
        config=tiny_config(
            shapes_dir,
            tmp_path / "run",
            max_steps=30,
            batch_size=12,
            optimizer="adamw",
            learning_rate=0.02,
            warmup_fraction=0.0,
            color_strength=0.0,
        )
    )
    losses = [
        json.loads(line)["loss"]
        for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1


def test_pretrain__epochs_give_whole_passes(shapes_dir: Path, tmp_path: Path):
    result = pretrain(config=tiny_config(shapes_dir, tmp_path / "run", max_steps=None, epochs=2))
    assert result.steps == 2 * (24 // 8)


def test_pretrain__refuses_non_empty_run_folder(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="--force"):
        pretrain(config=tiny_config(shapes_dir, out))
    pretrain(config=tiny_config(shapes_dir, out, force=True))
    assert (out / "model.safetensors").exists() and (out / "something.txt").exists()


def test_pretrain__missing_data_creates_no_run_folder(tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(DataError, match="does not exist"):
        pretrain(config=tiny_config(tmp_path / "nothing", out))
    assert not out.exists()


def test_pretrain__unknown_backbone_creates_no_run_folder(shapes_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(Exception, match="unknown backbone"):
        pretrain(config=tiny_config(shapes_dir, out, backbone="not_a_model"))
    assert not out.exists()


def test_pretrain__batch_larger_than_data_is_refused(shapes_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match="fewer than --batch-size"):
        pretrain(config=tiny_config(shapes_dir, tmp_path / "run", batch_size=100))


def test_pretrain__impossible_settings_are_refused(shapes_dir: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="--temperature"):
        pretrain(config=tiny_config(shapes_dir, tmp_path / "run", temperature=0))
    with pytest.raises(ConfigError, match="--image-size"):
        pretrain(config=tiny_config(shapes_dir, tmp_path / "run", image_size=-3))
    with pytest.raises(ConfigError, match="--optimizer"):
        tiny_config(shapes_dir, tmp_path / "run", optimizer="adam")


def test_pretrain__unreadable_images_are_skipped_and_counted(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for index in range(10):
        Image.new("RGB", (32, 32), (index * 20, 0, 0)).save(data / f"{index}.png")
    (data / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "empty.png").write_bytes(b"")
    result = pretrain(config=tiny_config(data, tmp_path / "run", batch_size=8, max_steps=2))
    # The header scan finds both before the first step; they are counted once and listed.
    assert result.steps == 2 and result.skipped_images == 2
    listed = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t") for line in listed] == [
        [str(data / "broken.jpg"), "not an image file"],
        [str(data / "empty.png"), "empty file"],
    ]


def test_pretrain__folder_of_only_broken_images_fails_clearly(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    for index in range(4):
        (data / f"{index}.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="could be decoded"):
        pretrain(config=tiny_config(data, tmp_path / "run", batch_size=2))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_pretrain__fp16_on_the_cpu_trains_with_a_loss_scaler(
    shapes_dir: Path, tmp_path: Path, accumulate: int
):
    # Slow but correct: fp16 autocast on the CPU, its loss scaled (through gradient caching with
    # --accumulate), the scale kept in the checkpoint.
    out = tmp_path / "run"
    result = pretrain(
        config=tiny_config(shapes_dir, out, max_steps=2, precision="fp16", accumulate=accumulate)
    )
    assert result.steps == 2 and result.nonfinite_steps == 0
    checkpoint = read_checkpoint(out / "checkpoint.safetensors")
    assert checkpoint.scaler_state["scale"] == 2.0**16 / 2**result.scaler_skipped_steps
    assert load_model(result.model_path).metadata.steps == 2


def test_pretrain__accumulate_runs_micro_batches(shapes_dir: Path, tmp_path: Path):
    result = pretrain(config=tiny_config(shapes_dir, tmp_path / "run", accumulate=4))
    assert result.steps == 2 and result.images_seen == 16
    config = _io.loads((result.run_dir / "config.toml").read_text())
    assert config["pretrain"]["accumulate"] == 4


def test_pretrain__small_folder_trains_with_a_batch_that_fits(shapes_dir: Path, tmp_path: Path):
    # 24 images and no --batch-size: the default 256 does not fit, so the batch is all of them.
    result = pretrain(config=tiny_config(shapes_dir, tmp_path / "run", batch_size=None))
    plan = _io.loads((result.run_dir / "config.toml").read_text())["plan"]
    assert plan["batch_size"] == 24 and result.images_seen == 2 * 24


def _step_of(model: torch.nn.Module, loss: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_cached_contrastive_step__views_made_per_micro_batch_give_the_same_step():
    # What --accumulate does on a GPU, each micro-batch augmented when it is embedded (and again
    # for its replay), run on the CPU: for a fixed seed, the step of the views made at once.
    images = shape_images(6, 20)
    sizes = torch.tensor([[20, 20]]).repeat(6, 1)
    augmenter = BatchAugmenter("cifar", image_size=16, generator=torch.Generator())
    results = []
    for per_micro_batch in (False, True):
        augmenter.generator.manual_seed(3)
        torch.manual_seed(0)
        model = create_simclr_model(backbone="test_resnet", image_size=16, head_output_dim=16)
        settings = {"temperature": 0.5, "autocast_context": contextlib.nullcontext()}
        if per_micro_batch:
            views = augmenter.micro_batches(images, sizes, count=2)
            loss = cached_contrastive_step(model, views, **settings)
        else:
            loss = contrastive_step(model, *augmenter(images, sizes), accumulate=2, **settings)
        results.append(_step_of(model, loss))
    (whole_loss, whole), (micro_loss, micro) = results
    assert micro_loss == pytest.approx(whole_loss, rel=1e-6)
    assert sum(grad.abs().sum() for grad in whole.values()) > 0
    for name, grad in whole.items():
        torch.testing.assert_close(micro[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_pretrain__two_ranks_stop_together_within_the_time_budget(
    shapes_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Each rank measures its own speed, but rank 0's plan is broadcast: had the ranks planned
    # different totals, one would wait in a collective for a step the other never takes, and
    # the timeout set here would fail the run instead of hanging the test.
    monkeypatch.setenv("SIMCLR_COLLECTIVE_TIMEOUT", "60")
    config = tiny_config(
        shapes_dir,
        tmp_path / "run",
        cpu_processes=2,
        max_steps=None,
        epochs=1000,
        # Room for a few steps after start-up, the first checkpoint and the planned exit.
        time_budget=20.0,
        accumulate=2,
        log_every=1000,
    )
    result = pretrain(config=config)
    assert result.total_seconds <= 20.0
    # The plan replaced the 3,000 steps of 1000 epochs with what fits, at least the first few.
    assert 3 <= result.steps < 3000
    metadata = load_model(result.model_path).metadata
    assert metadata.steps == result.steps and result.images_seen == 8 * result.steps
