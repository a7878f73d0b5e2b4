"""The config dataclasses refuse settings that cannot work, naming the flag to fix."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from simclr_cli.core.config import (
    EmbedConfig,
    FinetuneConfig,
    PredictConfig,
    PretrainConfig,
    ProbeConfig,
    VisualizeConfig,
)
from simclr_cli.core.errors import ConfigError, DataError


@pytest.mark.parametrize(
    ("batch_size", "accumulate", "message"),
    [
        (10, 4, "--batch-size 10 is not divisible by --accumulate 4"),
        (8, 0, "--accumulate must be positive"),
    ],
)
def test_pretrain_config__accumulate_must_divide_batch(batch_size, accumulate, message):
    config = PretrainConfig(data=Path("images"), batch_size=batch_size, accumulate=accumulate)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_pretrain_config__accumulate_dividing_batch_is_valid():
    PretrainConfig(data=Path("images"), batch_size=12, accumulate=3).validate()


@pytest.mark.parametrize("every", ["500", "90s", "10m", "2h", "1h30m"])
def test_pretrain_config__checkpoint_every_takes_steps_or_any_duration(every: str):
    PretrainConfig(data=Path("images"), checkpoint_every=every).validate()


def test_pretrain_config__checkpoint_every_bad_text_names_the_flag():
    with pytest.raises(ConfigError, match="--checkpoint-every 'soon'"):
        PretrainConfig(data=Path("images"), checkpoint_every="soon").validate()


@pytest.mark.parametrize(
    ("build", "flag"),
    [
        (lambda: PretrainConfig(data=Path("d"), image_size=4).validate(), "--image-size"),
        (lambda: PretrainConfig(data=Path("d"), batch_size=0).validate(), "--batch-size"),
        (lambda: PretrainConfig(data=Path("d"), temperature=0).validate(), "--temperature"),
        (
            lambda: PretrainConfig(data=Path("d"), checkpoint_every="often").validate(),
            "--checkpoint-every",
        ),
        (lambda: PretrainConfig(data=Path("d"), cache="disk"), "--cache"),
        (
            lambda: PretrainConfig(
                data=Path("d"), warmup_epochs=10, warmup_fraction=0.1
            ).validate(),
            "--warmup-epochs",
        ),
        (lambda: PretrainConfig(data=Path("d"), warmup_epochs=-1).validate(), "--warmup-epochs"),
        (lambda: PretrainConfig(data=Path("d"), gpus="many"), "--gpus"),
        (lambda: ProbeConfig(train=Path("t"), model=Path("m"), k=0).validate(), "--k"),
        (
            lambda: FinetuneConfig(model=Path("m"), train=Path("t"), label_fraction=2).validate(),
            "--label-fraction",
        ),
        (lambda: EmbedConfig(model=Path("m"), inputs=[Path("a")], device="tpu"), "--device"),
        (lambda: VisualizeConfig(input=Path("i"), pairs=0).validate(), "--pairs"),
    ],
)
def test_config_error__names_its_flag(build, flag):
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.flag == flag and caught.value.exit_code == 2


def test_config_error__without_a_flag_names_none():
    with pytest.raises(ConfigError) as caught:
        PredictConfig(classifier=Path("c")).validate()
    assert caught.value.flag is None


def test_simclr_error__keeps_its_flag_through_pickle():
    error = pickle.loads(pickle.dumps(DataError("--val v has other classes", flag="--val")))
    assert error.flag == "--val" and str(error) == "--val v has other classes"
