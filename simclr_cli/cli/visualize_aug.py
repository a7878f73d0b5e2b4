"""`simclr visualize-aug`: flags -> VisualizeConfig -> core preview -> terminal, PNG or key loop."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.choices import Preset, Protocol
from ..core.config import VisualizeConfig
from ..core.errors import UsageError
from ..core.viz import terminal
from ..core.viz.preview import create_augmentation_preview
from ..core.viz.preview_png import save_grid
from ..core.viz.preview_terminal import render_terminal, run_interactive
from . import _console
from ._options import (
    PRESET_AUTO_TEXT,
    STRENGTH_DEFAULTS_TEXT,
    STRENGTH_RANGE_TEXT,
    JsonOption,
    QuietOption,
    SeedOption,
    default_of,
)

EPILOG = """[bold]Examples[/]

  simclr visualize-aug ./images --image-size 32

  simclr visualize-aug photo.jpg --pairs 3 --preset imagenet --color-strength 1.0

  simclr visualize-aug ./images --model runs/first/model.safetensors --save grid.png

  simclr visualize-aug ./images --interactive   [dim](space, + / -, p, s, q)[/]
"""

NOT_A_TERMINAL = (
    "output is not a terminal, so no pictures were drawn; add --save grid.png to write them "
    "to a PNG, or --protocol truecolor to print the escape codes anyway"
)


def _print(message: str) -> None:
    _console.stdout.print(escape(message), highlight=False, soft_wrap=True)


def visualize_aug_command(
    input: Annotated[
        Path,
        typer.Argument(
            help="An image file, or a folder whose images are sampled (seeded).",
            show_default=False,
        ),
    ],
    pairs: Annotated[
        int, typer.Option("--pairs", "-n", help="Images to show, each with two views.")
    ] = default_of(VisualizeConfig, "pairs"),
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="Augmentations: imagenet (with blur) or cifar (without); default: the model's, "
            f"else auto ({PRESET_AUTO_TEXT}).",
            show_default=False,
        ),
    ] = default_of(VisualizeConfig, "preset"),
    color_strength: Annotated[
        float | None,
        typer.Option(
            help=f"Colour distortion strength s {STRENGTH_RANGE_TEXT}; default: the model's, else "
            f"{STRENGTH_DEFAULTS_TEXT}.",
            show_default=False,
        ),
    ] = default_of(VisualizeConfig, "color_strength"),
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Side of the views in pixels; default: the model's, else 224 as in pretrain.",
            show_default=False,
        ),
    ] = default_of(VisualizeConfig, "image_size"),
    model: Annotated[
        Path | None,
        typer.Option(
            help="Use the preset, colour strength and image size recorded in this "
            "model.safetensors.",
            show_default=False,
        ),
    ] = default_of(VisualizeConfig, "model"),
    seed: SeedOption = default_of(VisualizeConfig, "seed"),
    save: Annotated[
        Path | None,
        typer.Option(help="Also write the grid, with captions, as a PNG at full resolution."),
    ] = default_of(VisualizeConfig, "save"),
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="How to draw: auto asks the terminal (kitty, iterm, else truecolor or 256-colour "
            "half blocks); none draws nothing.",
        ),
    ] = default_of(VisualizeConfig, "protocol"),
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive",
            "-i",
            help="Full screen: space new views, + / - colour strength, p preset, s save, q quit.",
        ),
    ] = default_of(VisualizeConfig, "interactive"),
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Preview augmented view pairs and their parameters. [dim]simclr visualize-aug ./images[/]

    For example: simclr visualize-aug ./images --image-size 32 --save grid.png
    """
    config = VisualizeConfig(
        input=input,
        pairs=pairs,
        preset=preset,
        color_strength=color_strength,
        image_size=image_size,
        model=model,
        seed=seed,
        save=save,
        protocol=protocol,
        interactive=interactive,
    )
    is_terminal = sys.stdout.isatty()
    chosen = config.protocol
    if chosen is Protocol.auto:
        chosen = terminal.detect_protocol(os.environ, is_terminal=is_terminal)
    if interactive:
        # Checked before any work so that a pipe fails at once, not after decoding images.
        if not sys.stdin.isatty():
            raise UsageError(
                "--interactive needs a terminal on stdin; run it in a terminal",
                flag="--interactive",
            )
        if chosen is Protocol.none:
            chosen = Protocol.color256
    if (quiet or as_json) and not interactive:
        chosen = Protocol.none
    preview = create_augmentation_preview(config=config)
    if as_json:
        if save is not None:
            save_grid(preview, save)
        sys.stdout.write(json.dumps(preview.to_dict()) + "\n")
        return
    for path in [] if quiet else preview.skipped:
        _print(f"skipped {path}: not a readable image")
    if interactive:
        run_interactive(
            preview,
            protocol=chosen,
            save_path=save,
            input_descriptor=sys.stdin.fileno(),
            output=sys.stdout,
        )
        return
    if chosen is not Protocol.none:
        size = shutil.get_terminal_size()
        sys.stdout.write(render_terminal(preview, protocol=chosen, columns=size.columns) + "\n")
        sys.stdout.flush()
    if save is not None:
        grid = save_grid(preview, save)
        if not quiet:
            _print(f"saved {len(preview.pairs)} pairs to {save} ({grid.width}x{grid.height} px)")
    elif chosen is Protocol.none and not quiet:
        _print(NOT_A_TERMINAL if not is_terminal else "nothing drawn (--protocol none)")
