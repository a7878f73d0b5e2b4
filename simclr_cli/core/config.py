"""Configuration dataclasses.

Each command of the CLI fills one of these dataclasses and calls one core function with it;
Python users do the same. The choices they take are the enums of choices.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ._io import parse_interval, parse_size
from .choices import (
    BadImagePolicy,
    CacheMode,
    DeviceName,
    EmbeddingDtype,
    ExportFormat,
    HeadVersion,
    LoggerName,
    LRScaling,
    OptimizerName,
    Precision,
    Preset,
    Protocol,
    Stem,
)
from .constants import COLOR_STRENGTH_RANGE
from .errors import ConfigError


@dataclass
class PretrainConfig:
    """Everything a SimCLR pretraining run needs.

    ``None`` means "choose a good value from the others": the learning rate from the optimiser
    and batch size, the preset from the image size, the head's hidden size from the backbone.
    """

    data: Path | None = None
    out: Path = Path("runs/simclr")
    backbone: str = "resnet18"
    stem: Stem = Stem.auto
    init_weights: Path | None = None
    head: HeadVersion = HeadVersion.v2
    head_hidden_dim: int | None = None
    head_output_dim: int = 128
    preset: Preset = Preset.auto
    color_strength: float | None = None
    # None: auto, 224 px or the data's resolution, under a time budget on the CPU the size at
    # which the budget affords enough steps (train/image_size.py).
    image_size: int | None = None
    # 0.1 (the paper's ImageNet value) rather than its 0.5 for CIFAR: at 400 steps on a CIFAR-10
    # subset it probed a point above 0.2, which was far above 0.5 in short CPU runs (see
    # "Tuning the defaults at a fixed step count" in benchmarks/RESULTS.md).
    temperature: float = 0.1
    optimizer: OptimizerName = OptimizerName.lars
    learning_rate: float | None = None
    lr_scaling: LRScaling = LRScaling.sqrt
    weight_decay: float | None = None
    # None: 0.1 of the steps, unless warmup_epochs is given (see train/plan.py plan_warmup).
    warmup_fraction: float | None = None
    warmup_epochs: int | None = None
    epochs: int = 100
    max_steps: int | None = None
    # None: DEFAULT_BATCH_SIZE, or the largest batch that a smaller folder fills (train/plan.py).
    batch_size: int | None = None
    accumulate: int = 1
    workers: int | None = None
    seed: int = 0
    precision: Precision = Precision.auto
    device: DeviceName = DeviceName.auto
    gpus: int | str | None = None
    cpu_processes: int | None = None
    sync_batch_norm: bool = True
    log_every: int = 10
    force: bool = False
    resume: bool = False
    checkpoint_every: str = "10m"
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    time_budget: float | None = None
    val: Path | None = None
    eval_every: int = 100
    cache: CacheMode = CacheMode.auto
    compile: bool = False
    loggers: list[LoggerName] = field(default_factory=list)
    #: More image folders or files after ``data`` (``simclr pretrain A B C``).
    extra_data: list[Path] = field(default_factory=list)
    #: A file of image paths, one a line, relative to its folder; ``"-"`` for standard input.
    file_list: Path | None = None
    # Not a flag: when the command started, as time.time(). The command line sets it to its
    # process's start and a launching process passes it to its ranks, so that --time-budget
    # bounds the whole command; None: the budget starts when pretrain() is called.
    started_at: float | None = field(default=None, metadata={"internal": True})

    def __post_init__(self) -> None:
        # Python callers may pass plain strings; the rest of the core relies on the enums.
        self.loggers = [_choice(LoggerName, name, "--logger") for name in self.loggers]
        self.data = None if self.data is None else Path(self.data)
        self.extra_data = [Path(item) for item in self.extra_data]
        self.file_list = None if self.file_list is None else Path(self.file_list)
        self.out = Path(self.out)
        if self.val is not None:
            self.val = Path(self.val)
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
        self.on_bad_image = _choice(BadImagePolicy, self.on_bad_image, "--on-bad-image")
        self.gpus = _gpu_count(self.gpus)

    def validate(self) -> None:
        """Refuse impossible values with a message that says how to fix them.

        Raises:
            ConfigError: When a value cannot work.
        """
        if self.data is None and self.file_list is None:
            raise ConfigError("give a folder of images to pretrain on (or files, or --file-list)")
        if self.image_size is not None:
            _positive("--image-size", self.image_size)
            if self.image_size < 8:
                raise ConfigError(
                    f"--image-size {self.image_size} is too small; use 8 or more",
                    flag="--image-size",
                )
        _positive("--accumulate", self.accumulate)
        if self.batch_size is None:
            pass  # auto: the default batch, or the largest the data fills (train/plan.py).
        elif self.batch_size < 2:
            _positive("--batch-size", self.batch_size)
            raise ConfigError(
                "--batch-size must be at least 2: SimCLR needs negatives", flag="--batch-size"
            )
        elif self.batch_size % self.accumulate:
            raise ConfigError(
                f"--batch-size {self.batch_size} is not divisible by --accumulate "
                f"{self.accumulate}; choose a batch size that is a multiple of it",
                flag="--batch-size",
            )
        _positive("--epochs", self.epochs)
        if self.max_steps is not None:
            _positive("--max-steps", self.max_steps)
        _positive("--head-output-dim", self.head_output_dim)
        if self.head_hidden_dim is not None:
            _positive("--head-hidden-dim", self.head_hidden_dim)
        if not 0.0 < self.temperature <= 10.0:
            raise ConfigError(
                f"--temperature {self.temperature} must be in (0, 10]; try 0.1",
                flag="--temperature",
            )
        if self.color_strength is not None:
            _color_strength(self.color_strength)
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError("--lr must be positive", flag="--lr")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError("--weight-decay must not be negative", flag="--weight-decay")
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError("--warmup-fraction must be in [0, 1)", flag="--warmup-fraction")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError("--warmup-epochs must not be negative", flag="--warmup-epochs")
        if self.warmup_epochs is not None and self.warmup_fraction is not None:
            raise ConfigError(
                f"--warmup-epochs {self.warmup_epochs} and --warmup-fraction "
                f"{self.warmup_fraction:g} both set the warm-up; give one",
                flag="--warmup-epochs",
            )
        if self.workers is not None and self.workers < 0:
            raise ConfigError("--workers must not be negative", flag="--workers")
        _positive("--log-every", self.log_every)
        if self.force and self.resume:
            raise ConfigError(
                "--force starts the run again and --resume continues it; give one", flag="--force"
            )
        parse_interval(self.checkpoint_every)
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(
                "--time-budget must be positive, such as 265s, 10m or 2h", flag="--time-budget"
            )
        _positive("--eval-every", self.eval_every)
        if isinstance(self.gpus, int):
            _positive("--gpus", self.gpus)
        if self.cpu_processes is not None:
            _positive("--cpu-processes", self.cpu_processes)

    @property
    def inputs(self) -> list[Path]:
        """The folders and files of the command line: ``data`` then ``extra_data``."""
        return ([] if self.data is None else [self.data]) + list(self.extra_data)

    def data_label(self) -> str:
        """The training data in a message: the folder, or how many inputs and the list."""
        parts = [str(item) for item in self.inputs]
        if self.file_list is not None:
            parts.append(f"--file-list {self.file_list}")
        return parts[0] if len(parts) == 1 else " + ".join(parts)


@dataclass
class EmbedConfig:
    """Inputs of ``embed``: a model file, the images to embed, and where the rows go.

    Attributes:
        model: A model.safetensors written by ``pretrain``.
        inputs: Image files and/or folders (searched recursively).
        file_list: A file of image paths, one a line, relative to its folder; ``"-"`` for
            standard input.
        projection: Embed with the projection head instead of backbone features.
        batch_size: Images per forward pass.
        workers: Decoding processes; ``None`` picks half the cores for more than two batches.
        device: Where to compute.
        output: Write the rows to this file as they are computed (by suffix: .npy,
            .safetensors, .csv, .jsonl or .parquet); ``None`` keeps them in memory.
        resume: Continue an interrupted ``output`` (its ``.partial`` folder).
        on_bad_image: ``skip`` leaves unreadable files out (listed); ``fail`` stops at the first.
        skipped: Write the files left out here (``path<TAB>reason`` lines).
    """

    model: Path
    inputs: list[Path] = field(default_factory=list)
    file_list: Path | None = None
    projection: bool = False
    batch_size: int = 64
    workers: int | None = None
    device: DeviceName = DeviceName.auto
    output: Path | None = None
    resume: bool = False
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    skipped: Path | None = None

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.inputs = [Path(item) for item in self.inputs]
        self.file_list = None if self.file_list is None else Path(self.file_list)
        self.output = None if self.output is None else Path(self.output)
        self.skipped = None if self.skipped is None else Path(self.skipped)
        self.device = _choice(DeviceName, self.device, "--device")
        self.on_bad_image = _choice(BadImagePolicy, self.on_bad_image, "--on-bad-image")

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--batch-size", self.batch_size)
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}", flag="--workers")
        if not self.inputs and self.file_list is None:
            raise ConfigError("give at least one image file or folder to embed, or --file-list")
        if self.resume and self.output is None:
            raise ConfigError(
                "--resume continues an interrupted --output file; give --output", flag="--resume"
            )


@dataclass
class ShardConfig:
    """Inputs of ``write_shards`` (``simclr shard``): a folder of images and where to write."""

    data: Path
    out: Path
    shard_size: str = "1GB"
    labels: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        self.out = Path(self.out)

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When the shard size is not a positive size.
        """
        parse_size(self.shard_size, flag="--shard-size")


@dataclass
class DemoConfig:
    """Settings of the self-contained demo."""

    out: Path = Path("runs/demo")
    backbone: str = "resnet18"
    stem: str = "imagenet"
    images_per_class: int = 160
    val_images_per_class: int = 60
    image_size: int = 32
    # Training time rather than steps, so that the demo takes as long on a slow CPU as on a fast
    # one (200 fixed steps took 72 s on an AVX512-BF16 CPU and about 8 minutes on an AVX2 one).
    time_budget: float | None = 90.0
    # A fixed step count instead (and a cap on the budgeted one).
    max_steps: int | None = None
    batch_size: int = 128
    temperature: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(
                "--time-budget must be positive, such as 60s or 3m", flag="--time-budget"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--steps {self.max_steps} must be 1 or more", flag="--steps")
        if self.time_budget is None and self.max_steps is None:
            raise ConfigError(
                "give the demo a --time-budget or a number of --steps", flag="--steps"
            )


@dataclass
class ProbeConfig:
    """Inputs of ``probe``: an encoder (or a baseline backbone) and labelled folders.

    Give ``model``, or ``backbone`` with ``random_init`` or ``init_weights`` for a baseline.
    """

    train: Path
    model: Path | None = None
    val: Path | None = None
    val_fraction: float = 0.2
    backbone: str | None = None
    random_init: bool = False
    init_weights: Path | None = None
    stem: Stem = Stem.auto
    image_size: int = 224
    k: int = 200
    knn_temperature: float = 0.1
    batch_size: int = 256
    workers: int = 0
    seed: int = 0
    device: DeviceName = DeviceName.auto
    #: ``skip`` leaves unreadable files out (listed); ``fail`` stops at the first.
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    #: Write the files left out here (``path<TAB>reason`` lines).
    skipped: Path | None = None

    def __post_init__(self) -> None:
        self.train = Path(self.train)
        self.model = None if self.model is None else Path(self.model)
        self.val = None if self.val is None else Path(self.val)
        self.init_weights = None if self.init_weights is None else Path(self.init_weights)
        self.stem = _choice(Stem, self.stem, "--stem")
        self.device = _choice(DeviceName, self.device, "--device")
        self.on_bad_image = _choice(BadImagePolicy, self.on_bad_image, "--on-bad-image")
        self.skipped = None if self.skipped is None else Path(self.skipped)

    def validate(self) -> None:
        """Refuse contradictory or impossible settings.

        Raises:
            ConfigError: When a value cannot work.
        """
        baseline = self.random_init or self.init_weights is not None
        if self.model is not None and (baseline or self.backbone is not None):
            raise ConfigError(
                "give either a MODEL file or --backbone with --random-init/--init-weights, "
                "not both",
                flag="--backbone",
            )
        if self.model is None:
            if self.backbone is None or not baseline:
                raise ConfigError(
                    "give a MODEL file, or a baseline: --backbone NAME with --random-init or "
                    "--init-weights FILE",
                    flag="--backbone",
                )
            if self.random_init and self.init_weights is not None:
                raise ConfigError(
                    "--random-init and --init-weights exclude each other", flag="--random-init"
                )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"--val-fraction {self.val_fraction} must be in (0, 1)", flag="--val-fraction"
            )
        _positive("--image-size", self.image_size)
        _positive("--k", self.k)
        _positive("--batch-size", self.batch_size)
        if self.knn_temperature <= 0:
            raise ConfigError("--knn-temperature must be positive", flag="--knn-temperature")


@dataclass
class FinetuneConfig:
    """Inputs of ``finetune``: an encoder, labelled folders and the training settings."""

    model: Path
    train: Path
    val: Path | None = None
    val_fraction: float = 0.2
    out: Path | None = None
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float | None = None
    weight_decay: float = 0.0
    from_head_layer: int = 0
    freeze_backbone: bool = False
    label_fraction: float = 1.0
    workers: int | None = None
    seed: int = 0
    precision: Precision = Precision.auto
    device: DeviceName = DeviceName.auto
    #: ``skip`` leaves unreadable files out (listed); ``fail`` stops at the first.
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    #: Write the files left out here (``path<TAB>reason`` lines).
    skipped: Path | None = None
    force: bool = False

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.train = Path(self.train)
        self.val = None if self.val is None else Path(self.val)
        self.out = None if self.out is None else Path(self.out)
        self.precision = _choice(Precision, self.precision, "--precision")
        self.device = _choice(DeviceName, self.device, "--device")
        self.on_bad_image = _choice(BadImagePolicy, self.on_bad_image, "--on-bad-image")
        self.skipped = None if self.skipped is None else Path(self.skipped)

    def validate(self) -> None:
        """Refuse impossible settings.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--epochs", self.epochs)
        _positive("--batch-size", self.batch_size)
        if not 0.0 < self.label_fraction <= 1.0:
            raise ConfigError(
                f"--label-fraction {self.label_fraction} must be in (0, 1], such as 0.01 or 0.1",
                flag="--label-fraction",
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"--val-fraction {self.val_fraction} must be in (0, 1)", flag="--val-fraction"
            )
        if self.from_head_layer < 0:
            raise ConfigError(
                "--from-head-layer must be 0 (backbone features) or more", flag="--from-head-layer"
            )
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError("--lr must be positive", flag="--lr")
        if self.weight_decay < 0:
            raise ConfigError("--weight-decay must not be negative", flag="--weight-decay")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("--workers must not be negative", flag="--workers")


@dataclass
class PredictConfig:
    """Inputs of ``predict``: a classifier file and the images to classify."""

    classifier: Path
    inputs: list[Path] = field(default_factory=list)
    top_k: int = 5
    batch_size: int = 64
    device: DeviceName = DeviceName.auto
    #: A file of image paths, one a line, relative to its folder; ``"-"`` for standard input.
    file_list: Path | None = None
    #: ``skip`` leaves unreadable files out (listed); ``fail`` stops at the first.
    on_bad_image: BadImagePolicy = BadImagePolicy.skip
    #: Write the files left out here (``path<TAB>reason`` lines).
    skipped: Path | None = None

    def __post_init__(self) -> None:
        self.classifier = Path(self.classifier)
        self.inputs = [Path(item) for item in self.inputs]
        self.device = _choice(DeviceName, self.device, "--device")
        self.file_list = None if self.file_list is None else Path(self.file_list)
        self.skipped = None if self.skipped is None else Path(self.skipped)
        self.on_bad_image = _choice(BadImagePolicy, self.on_bad_image, "--on-bad-image")

    def validate(self) -> None:
        """Refuse impossible settings.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--top-k", self.top_k)
        _positive("--batch-size", self.batch_size)
        if not self.inputs and self.file_list is None:
            raise ConfigError("give at least one image file or folder to classify, or --file-list")


@dataclass
class VisualizeConfig:
    """Settings of ``visualize-aug``: which images, which augmentation, how to show it.

    ``None`` for the preset, colour strength or image size means "the model's value when a
    model is given, else the default of ``pretrain``".
    """

    input: Path
    pairs: int = 4
    preset: Preset | None = None
    color_strength: float | None = None
    image_size: int | None = None
    model: Path | None = None
    seed: int = 0
    save: Path | None = None
    protocol: Protocol = Protocol.auto
    interactive: bool = False

    def __post_init__(self) -> None:
        self.input = Path(self.input)
        self.model = None if self.model is None else Path(self.model)
        self.save = None if self.save is None else Path(self.save)
        if self.preset is not None:
            self.preset = _choice(Preset, self.preset, "--preset")
        self.protocol = _choice(Protocol, self.protocol, "--protocol")

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        if not 1 <= self.pairs <= 64:
            raise ConfigError(f"--pairs {self.pairs} must be between 1 and 64", flag="--pairs")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(
                f"--image-size {self.image_size} is too small; use 8 or more", flag="--image-size"
            )
        if self.color_strength is not None:
            _color_strength(self.color_strength)


def _choice(enum: type[Enum], value: object, flag: str) -> Any:
    try:
        return enum(getattr(value, "value", value))
    except ValueError:
        choices = ", ".join(item.value for item in enum)
        raise ConfigError(f"{flag} {value!r} is not one of: {choices}", flag=flag) from None


def _gpu_count(value: object) -> int | str | None:
    # --gpus takes a number or the word "all" (every visible GPU).
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--gpus {value!r} must be a number or all", flag="--gpus") from None


def _positive(flag: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{flag} must be positive, got {value}", flag=flag)


def _color_strength(value: float) -> None:
    # The bound the augmentation recipe draws with (hue 0.2 s must stay within 0.5).
    low, high = COLOR_STRENGTH_RANGE
    if not low <= value <= high:
        raise ConfigError(
            f"--color-strength {value} must be in [{low:g}, {high:g}]", flag="--color-strength"
        )


def config_to_dict(config: Any) -> dict[str, Any]:
    """Turn a config dataclass into plain values: enums to words, paths to strings.

    Args:
        config: A dataclass instance such as ``PretrainConfig``.

    Returns:
        A dict of ``str``, ``int``, ``float``, ``bool`` and ``None`` values.
    """
    result: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if item.metadata.get("internal"):
            continue  # Set by the program for itself, not a setting of the run.
        value = getattr(config, item.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list):
            value = [
                v.value if isinstance(v, Enum) else str(v) if isinstance(v, Path) else v
                for v in value
            ]
        result[item.name] = value
    return result


@dataclass
class ExportConfig:
    """Inputs of ``export_model``: a model file, a format and the folder to write."""

    model: Path
    format: ExportFormat
    out: Path
    force: bool = False
    check_batch_size: int = 3
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.out = Path(self.out)
        self.format = _choice(ExportFormat, self.format, "--format")

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        if self.check_batch_size <= 0:
            raise ConfigError(f"check_batch_size must be positive, got {self.check_batch_size}")
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance must be positive, got {self.tolerance}")


#: Cosine similarity above which two images count as near duplicates (``simclr duplicates``).
#: Chosen on 200 planted copies (re-encoded, resized, cropped 5-10 %, flipped, colour-shifted)
#: among 2,000 images of CIFAR-10's val/, with a model pretrained for 15 minutes on a CPU: the
#: best F1 of the thresholds tried for a plain index (precision 0.960, recall 0.965; 0.97 gave
#: 0.984 and 0.910); an index built with --flip-invariant gave 0.952 and 0.985 here (and 0.975
#: and 0.975 at 0.97). A weaker encoder wants a higher threshold (a 265 s one on an AVX2 CPU
#: found 0.97 best, at 0.93 and 0.63); see benchmarks/RESULTS.md.
DEFAULT_DUPLICATE_THRESHOLD = 0.96
#: Index size from which ``simclr index`` also writes a FAISS index, when faiss is installed:
#: exact search costs N x D multiply-adds per query and ``duplicates`` N^2 x D, which at 200,000
#: x 512 is about 2e13 (minutes on a CPU); below it exact search is fast enough and exact.
DEFAULT_FAISS_MIN_IMAGES = 200_000


@dataclass
class IndexConfig:
    """Inputs of ``build_index``: a model file, the images, and the index folder to write.

    Attributes:
        model: The model.safetensors that embeds the images.
        inputs: Image files, folders and tar shards (what ``embed`` takes).
        file_list: A file of image paths, one a line, relative to its folder; ``"-"`` for
            standard input (not with shards).
        out: The index folder.
        dtype: How the embeddings are stored; None is float16, or on ``update`` the dtype of
            the index being extended.
        update: Keep the rows of unchanged files (same path, size and mtime) and embed only new
            or changed ones; files no longer among the inputs are dropped.
        force: Replace an existing index, even one made by another model.
        projection: Index head outputs instead of backbone features.
        flip_invariant: Make each row the mean over the image and its mirror image, so that a
            mirrored copy gets the same row (twice the embedding work).
        faiss_min_images: Also write a FAISS index from this many images (when faiss imports);
            0 never writes one.
        batch_size: Images per forward pass.
        workers: Decoding processes; ``None`` picks half the cores for more than two batches,
            as ``embed`` does.
        device: Where to compute.
    """

    model: Path
    inputs: list[Path] = field(default_factory=list)
    file_list: Path | None = None
    out: Path = Path("index")
    dtype: EmbeddingDtype | None = None
    update: bool = False
    force: bool = False
    projection: bool = False
    flip_invariant: bool = False
    faiss_min_images: int = DEFAULT_FAISS_MIN_IMAGES
    batch_size: int = 64
    workers: int | None = None
    device: DeviceName = DeviceName.auto

    def __post_init__(self) -> None:
        self.model = Path(self.model)
        self.inputs = [Path(item) for item in self.inputs]
        self.file_list = None if self.file_list is None else Path(self.file_list)
        self.out = Path(self.out)
        if self.dtype is not None:
            self.dtype = _choice(EmbeddingDtype, self.dtype, "--dtype")
        self.device = _choice(DeviceName, self.device, "--device")

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--batch-size", self.batch_size)
        if not self.inputs and self.file_list is None:
            raise ConfigError(
                "give at least one image file, folder or tar shard to index, or --file-list"
            )
        if self.update and self.force:
            raise ConfigError(
                "--update keeps the index and --force replaces it; give one of them",
                flag="--update",
            )
        if self.faiss_min_images < 0:
            raise ConfigError("faiss_min_images must not be negative")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}", flag="--workers")


@dataclass
class SearchConfig:
    """Inputs of ``search``: an index folder and the query images.

    Attributes:
        index: The folder ``simclr index`` wrote.
        queries: Image files, or paths already in the index (their stored rows are used).
        top_k: Neighbours per query.
        model: The model that embeds queries not in the index; None takes the one the index
            records. Refused when its sha256 differs from the index's.
        exact: Search exactly even when the index has a FAISS index.
    """

    index: Path
    queries: list[Path] = field(default_factory=list)
    top_k: int = 10
    model: Path | None = None
    exact: bool = False
    batch_size: int = 64
    device: DeviceName = DeviceName.auto

    def __post_init__(self) -> None:
        self.index = Path(self.index)
        self.queries = [Path(item) for item in self.queries]
        self.model = None if self.model is None else Path(self.model)
        self.device = _choice(DeviceName, self.device, "--device")

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        _positive("--top-k", self.top_k)
        _positive("--batch-size", self.batch_size)
        if not self.queries:
            raise ConfigError("give at least one query image")


@dataclass
class DuplicatesConfig:
    """Inputs of ``find_duplicates``: an index folder and what counts as a duplicate.

    Attributes:
        index: The folder ``simclr index`` wrote.
        threshold: Cosine similarity in (0, 1] above which two images are near duplicates.
        outliers: How many images farthest from their nearest neighbour to list (0: none).
        exact: Compare exactly even when the index has a FAISS index.
    """

    index: Path
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD
    outliers: int = 0
    exact: bool = False

    def __post_init__(self) -> None:
        self.index = Path(self.index)

    def validate(self) -> None:
        """Refuse impossible values.

        Raises:
            ConfigError: When a value cannot work.
        """
        if not 0 < self.threshold <= 1:
            raise ConfigError(
                f"--threshold {self.threshold} must be in (0, 1]: a cosine similarity such as "
                f"{DEFAULT_DUPLICATE_THRESHOLD}",
                flag="--threshold",
            )
        if self.outliers < 0:
            raise ConfigError("--outliers must not be negative", flag="--outliers")
