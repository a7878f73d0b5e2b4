"""Flags shared by several commands, declared once as ``Annotated`` aliases, and their defaults.

A flag's default is the default of the config field it fills (``default_of(EmbedConfig,
"batch_size")``), so that the command line and the Python API cannot drift apart;
``tests/cli/test_options.py`` checks every flag of every command against its field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..core.augment.recipe import CIFAR_PRESET_MAX_SIZE, DEFAULT_COLOR_STRENGTH
from ..core.choices import BadImagePolicy, DeviceName, Preset
from ..core.constants import COLOR_STRENGTH_RANGE, SMALL_IMAGE_SIZE
from ..core.data.checks import BadImage, describe_bad_images, display_path
from . import _console

# Help phrases that quote the augmentation recipe, so the help cannot drift from it.
#: "in [0, 2.5]": the colour strengths the recipe accepts.
STRENGTH_RANGE_TEXT = "in [{:g}, {:g}]".format(*COLOR_STRENGTH_RANGE)
#: "1.0 imagenet, 0.5 cifar": each preset's default colour strength.
STRENGTH_DEFAULTS_TEXT = ", ".join(
    f"{DEFAULT_COLOR_STRENGTH[preset]:.1f} {preset.value}"
    for preset in (Preset.imagenet, Preset.cifar)
)
#: "cifar at 64 px and below": what the preset auto means.
PRESET_AUTO_TEXT = f"cifar at {CIFAR_PRESET_MAX_SIZE} px and below"
#: "64 px": the side up to which images are CIFAR-like (stem, preset).
SMALL_IMAGE_TEXT = f"{SMALL_IMAGE_SIZE} px"


def default_of(config_class: type, name: str) -> Any:
    """The default of the field ``name`` of the config dataclass ``config_class``.

    Args:
        config_class: A dataclass of ``core/config.py``, such as ``PretrainConfig``.
        name: One of its fields, such as ``"batch_size"``.

    Returns:
        The field's default, or a fresh value of its default factory (``[]`` for a list).

    Raises:
        KeyError: When the class has no such field or the field has no default.
    """
    for item in dataclasses.fields(config_class):
        if item.name != name:
            continue
        if item.default is not dataclasses.MISSING:
            return item.default
        if item.default_factory is not dataclasses.MISSING:
            return item.default_factory()
        raise KeyError(f"{config_class.__name__}.{name} has no default")
    raise KeyError(f"{config_class.__name__} has no field {name!r}")


ModelArgument = Annotated[
    Path,
    typer.Argument(help="A model.safetensors written by `simclr pretrain`.", show_default=False),
]
DeviceOption = Annotated[
    DeviceName,
    typer.Option("--device", help="Where to compute; auto takes a CUDA GPU when present."),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the final line; no progress.")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed of the run.")]
ImageSizeOption = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        help="Side of the square training images in pixels. Default auto: 224, or the images' "
        "own size when smaller; with --time-budget on the CPU, the largest size at which the "
        "budget still affords a few hundred steps (shown in the plan).",
        show_default=False,
    ),
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="Data-loading processes (default: half the CPU cores)."),
]
TrainFolderOption = Annotated[
    Path,
    typer.Option(
        "--train",
        help="Labelled folder: one sub-folder of images per class; or tar shards with cls "
        "members (named in classes.json) or class folders in the member names.",
        show_default=False,
    ),
]
ValFractionOption = Annotated[
    float,
    typer.Option(help="Without --val: share of each class of --train held out (seeded)."),
]
#: The help of --on-bad-image where no run folder lists the files (pretrain says RUN/skipped.txt).
ON_BAD_IMAGE_HELP = (
    "skip: leave unreadable files out and list them (--skipped FILE, else the first few on "
    "stderr); fail: stop at the first."
)
OnBadImageOption = Annotated[BadImagePolicy, typer.Option("--on-bad-image", help=ON_BAD_IMAGE_HELP)]
SkippedOption = Annotated[
    Path | None,
    typer.Option(
        "--skipped",
        help="Write the files left out to this file, one path<TAB>reason line each.",
        show_default=False,
    ),
]
FileListOption = Annotated[
    Path | None,
    typer.Option(
        "--file-list",
        help="A file of image paths, one a line, relative to the list's folder; - reads "
        "standard input. Listed files that are missing are skipped and listed.",
        show_default=False,
    ),
]


def skipped_line(skipped: Sequence[BadImage], listed: Path | None) -> str:
    """The stderr line about the files left out: where they are listed, or the first few."""
    count = f"{len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''} skipped"
    if listed is not None:
        return f"{count} (listed in {display_path(listed)})"
    return f"{count}: {describe_bad_images(skipped)} (--skipped FILE lists them all)"


def print_skipped(skipped: Sequence[BadImage], listed: Path | None) -> None:
    """Say on stderr, in one yellow line, which files were left out (nothing when none were)."""
    if skipped:
        _console.stderr.print(
            f"[yellow]{escape(skipped_line(skipped, listed))}[/]", highlight=False, soft_wrap=True
        )
