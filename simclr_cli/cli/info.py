"""`simclr info`: model file -> core.read_model_info -> table or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..core.model.info import ModelInfo, read_model_info
from . import _console
from ._options import JsonOption

EPILOG = """[bold]Examples[/]

  simclr info runs/first/model.safetensors

  simclr info runs/first/classifier.safetensors

  simclr info runs/first/model.safetensors --json | jq .sha256
"""


def format_bytes(size: int) -> str:
    """A size in bytes as a short human-readable string (1024-based units)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def render_table(info: ModelInfo) -> Table:
    """Two columns, grouped by topic: what the file is, how it was trained, what it holds."""
    metadata = info.metadata
    table = Table(title=f"{escape(info.path.name)} · {info.kind}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("kind", info.description),
        ("backbone", f"{metadata.backbone} (stem {metadata.stem})"),
        ("features", str(metadata.feature_dim)),
        (
            "projection head",
            f"{metadata.head_version}, {metadata.head_layers} layers, "
            f"{metadata.feature_dim} → {metadata.head_hidden_dim} → {metadata.head_output_dim}",
        ),
    ]
    if info.kind == "classifier":
        names = ", ".join(info.classes[:8]) + (", …" if len(info.classes) > 8 else "")
        rows += [
            ("classes", f"{len(info.classes)}: {names}"),
            ("classifier input", f"head layer {info.from_head_layer}"),
        ]
    rows += [
        ("image size", f"{metadata.image_size} px"),
        (
            "preprocessing",
            f"crop fraction {metadata.crop_fraction:g}, {metadata.interpolation}, "
            f"mean {_numbers(metadata.mean)}, std {_numbers(metadata.std)}",
        ),
        (
            "preset",
            f"{metadata.preset} (colour strength {metadata.color_strength:g}, "
            f"temperature {metadata.temperature:g})",
        ),
        ("training", f"{metadata.steps:,} steps, {metadata.images_seen:,} images"),
        ("parameters", ", ".join(f"{k} {v:,}" for k, v in info.parameters.items())),
        ("tensors", f"{info.tensors} ({', '.join(info.dtypes)})"),
        ("versions", ", ".join(f"{k} {v}" for k, v in info.versions.items()) or "unknown"),
        ("created", info.created or "unknown"),
        ("file", f"{escape(str(info.path))} ({format_bytes(info.file_size)})"),
        ("sha256", info.sha256),
    ]
    for key, value in sorted(metadata.extra.items()):
        if key not in ("classes", "from_head_layer"):
            rows.append((f"extra.{escape(key)}", escape(value)))
    for field, value in rows:
        table.add_row(field, value)
    return table


def info_command(
    model: Annotated[
        Path,
        typer.Argument(
            help="A model.safetensors from `simclr pretrain` or a classifier.safetensors from "
            "`simclr finetune`.",
            show_default=False,
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Show what a model file holds: backbone, preprocessing, training, size and hash.
    [dim]simclr info model.safetensors[/]
    """
    info = read_model_info(model)
    if as_json:
        sys.stdout.write(json.dumps(info.to_dict()) + "\n")
    else:
        _console.stdout.print(render_table(info))
