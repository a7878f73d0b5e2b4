"""Configuration dataclasses and the choices they take.

Each command of the CLI fills one of these dataclasses and calls one core function with it;
Python users do the same. Choices are ``str`` enums, so their values print and serialise as the
words a user types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import ConfigError


class Stem(str, Enum):
    """First layers of a ResNet: the ImageNet stem or the small-image CIFAR stem."""

    auto = "auto"
    imagenet = "imagenet"
    cifar = "cifar"


class HeadVersion(str, Enum):
    """Projection head of SimCLR v1 (2 layers) or SimCLR v2 (3 layers)."""

    v1 = "v1"
    v2 = "v2"


class Preset(str, Enum):
    """Augmentation preset; ``auto`` picks ``cifar`` at 64 px and below, else ``imagenet``."""

    auto = "auto"
    imagenet = "imagenet"
    cifar = "cifar"


class OptimizerName(str, Enum):
    """Optimiser of the pretraining run."""

    lars = "lars"
    sgd = "sgd"
    adamw = "adamw"


class LRScaling(str, Enum):
    """How the learning rate grows with the batch size (SimCLR appendix B.1)."""

    linear = "linear"
    sqrt = "sqrt"


class Precision(str, Enum):
    """Precision of the forward pass; ``auto`` is bf16 where the device runs it natively."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class CacheMode(str, Enum):
    """Where decoded training images live between epochs.

    ``auto`` keeps them in RAM when they fit the memory budget and streams otherwise, ``ram``
    always keeps them, ``off`` decodes every image every epoch.
    """

    auto = "auto"
    ram = "ram"
    off = "off"


class DeviceName(str, Enum):
    """Where to compute: ``auto`` takes CUDA when it is present."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class PretrainConfig:
    """Everything a SimCLR pretraining run needs.

    ``None`` means "choose a good value from the others": the learning rate from the optimiser
    and batch size, the preset from the image size, the head's hidden size from the backbone.
    """

    data: Path
    out: Path = Path("runs/simclr")
    backbone: str = "resnet18"
    stem: Stem = Stem.auto
    init_weights: Path | None = None
    head: HeadVersion = HeadVersion.v2
    head_hidden_dim: int | None = None
    head_output_dim: int = 128
    preset: Preset = Preset.auto
    color_strength: float | None = None
    image_size: int = 224
    temperature: float = 0.5
    optimizer: OptimizerName = OptimizerName.lars
    learning_rate: float | None = None
    lr_scaling: LRScaling = LRScaling.linear
    weight_decay: float | None = None
    warmup_fraction: float = 0.1
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 256
    workers: int | None = None
    seed: int = 0
    precision: Precision = Precision.auto
    device: DeviceName = DeviceName.auto
    log_every: int = 10
    force: bool = False
    cache: CacheMode = CacheMode.auto
    compile: bool = False

    def __post_init__(self) -> None:
        # Python callers may pass plain strings; the rest of the core relies on the enums.
        self.data = Path(self.data)
        self.out = Path(self.out)
        self.cache = _choice(CacheMode, self.cache, "--cache")
        if self.init_weights is not None:
            self.init_weights = Path(self.init_weights)
        self.stem = _choice(Stem, self.stem, "--stem")
        self.head = _choice(HeadVersion, self.head, "--head")
        self.preset = _choice(Preset, self.preset, "--preset")
        self.optimizer = _choice(OptimizerName, self.optimizer, "--optimizer")
        self.lr_scaling = _choice(LRScaling, self.lr_scaling, "--lr-scaling")
        self.precision = _choice(Precision, self.precision, "--precision")
        self.device = _choice(DeviceName, self.device, "--device")

    def validate(self) -> None:
        """Refuse impossible values with a message that says how to fix them.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--image-size", self.image_size)
        if self.image_size < 8:
            raise ConfigError(f"--image-size {self.image_size} is too small; use 8 or more")
        _positive("--batch-size", self.batch_size)
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be at least 2: SimCLR needs negatives")
        _positive("--epochs", self.epochs)
        if self.max_steps is not None:
            _positive("--max-steps", self.max_steps)
        _positive("--head-output-dim", self.head_output_dim)
        if self.head_hidden_dim is not None:
            _positive("--head-hidden-dim", self.head_hidden_dim)
        if not 0.0 < self.temperature <= 10.0:
            raise ConfigError(f"--temperature {self.temperature} must be in (0, 10]; try 0.5")
        if self.color_strength is not None and not 0.0 <= self.color_strength <= 2.0:
            raise ConfigError(f"--color-strength {self.color_strength} must be in [0, 2]")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError("--lr must be positive")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError("--weight-decay must not be negative")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError("--warmup-fraction must be in [0, 1)")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("--workers must not be negative")
        _positive("--log-every", self.log_every)


@dataclass
class EmbedConfig:
    """Inputs of ``embed``: a model file and the images to embed."""

    model: Path
    inputs: list[Path] = field(default_factory=list)
    projection: bool = False
    batch_size: int = 64
    workers: int = 0
    device: DeviceName = DeviceName.auto

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.inputs = [Path(item) for item in self.inputs]
        self.device = _choice(DeviceName, self.device, "--device")

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--batch-size", self.batch_size)
        if not self.inputs:
            raise ConfigError("give at least one image file or folder to embed")


@dataclass
class DemoConfig:
    """Settings of the self-contained demo."""

    out: Path = Path("runs/demo")
    backbone: str = "resnet18"
    stem: str = "imagenet"
    images_per_class: int = 160
    val_images_per_class: int = 60
    image_size: int = 32
    max_steps: int = 300
    batch_size: int = 128
    seed: int = 0


def _choice(enum: type[Enum], value: object, flag: str) -> Any:
    try:
        return enum(getattr(value, "value", value))
    except ValueError:
        choices = ", ".join(item.value for item in enum)
        raise ConfigError(f"{flag} {value!r} is not one of: {choices}") from None


def _positive(flag: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{flag} must be positive, got {value}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Turn a config dataclass into plain values: enums to words, paths to strings.

    Args:
        config: A dataclass instance such as ``PretrainConfig``.

    Returns:
        A dict of ``str``, ``int``, ``float``, ``bool`` and ``None`` values.
    """
    result: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        result[item.name] = value
    return result
