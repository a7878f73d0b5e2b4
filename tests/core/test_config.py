"""PretrainConfig refuses settings that cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_cli.core.config import PretrainConfig
from simclr_cli.core.errors import ConfigError


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
