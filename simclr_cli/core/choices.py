"""The choices of the flags, as Enums.

Choices are ``str`` enums, so their values print and serialise as the words a user types; the
config dataclasses in config.py take them.
"""

from __future__ import annotations

from enum import Enum


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


class BadImagePolicy(str, Enum):
    """What a run does with a file that is not a readable image: skip it (listed) or stop."""

    skip = "skip"
    fail = "fail"


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


class LoggerName(str, Enum):
    """Where a run logs its metrics besides RUN/metrics.jsonl (see train/loggers.py)."""

    csv = "csv"
    tensorboard = "tensorboard"


class Protocol(str, Enum):
    """How ``visualize-aug`` draws images in a terminal; ``auto`` asks the environment."""

    auto = "auto"
    kitty = "kitty"
    iterm = "iterm"
    truecolor = "truecolor"
    color256 = "256"
    none = "none"


class ExportFormat(str, Enum):
    """What ``simclr export`` writes: a timm hub folder, an ONNX graph or a TorchScript archive."""

    timm = "timm"
    onnx = "onnx"
    torchscript = "torchscript"


class EmbeddingDtype(str, Enum):
    """How an index stores its embeddings: ``float16`` halves the file, ``float32`` is exact."""

    float16 = "float16"
    float32 = "float32"
