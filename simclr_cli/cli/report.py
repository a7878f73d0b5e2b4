"""`simclr report`: run folder -> core.report.read_run -> summary table and curves."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..core._io import format_duration
from ..core.viz.report import (
    RunReport,
    TextChart,
    read_run,
    render_text_chart,
    report_charts,
    save_report_png,
)
from . import _console
from ._options import JsonOption

EPILOG = """[bold]Examples[/]

  simclr report runs/first

  simclr report runs/first --save curves.png

  simclr report runs/first --json | jq .best_knn_top1
"""

#: (summary key, label, format) of the rows of the summary table, in order.
ROWS: list[tuple[str, str, str]] = [
    ("status", "status", "{}"),
    ("backbone", "backbone", "{}"),
    ("stem", "stem", "{}"),
    ("image_size", "image size", "{} px"),
    ("batch_size", "batch size", "{}"),
    ("preset", "augmentations", "{}"),
    ("optimizer", "optimizer", "{}"),
    ("device", "device", "{}"),
    ("data", "data", "{}"),
    ("steps", "steps", "{}"),
    ("epochs", "epochs", "{:.2f}"),
    ("images_seen", "images seen", "{:,}"),
    ("wall_seconds", "training time", "time"),
    ("images_per_second", "images/s", "{:,.1f}"),
    ("final_loss", "final loss", "{:.4f}"),
    ("min_loss", "lowest loss", "{:.4f}"),
    ("final_lr", "final learning rate", "{:.3g}"),
    ("best_knn_top1", "best kNN top-1", "percent"),
    ("final_knn_top1", "final kNN top-1", "percent"),
    ("final_knn_top5", "final kNN top-5", "percent"),
    ("eval_seconds", "time in kNN evaluation", "time"),
    ("data_wait", "waiting for data", "percent"),
    ("skipped_images", "skipped images", "{}"),
]


def _format(key: str, value: Any, pattern: str, summary: dict[str, Any]) -> str:
    if pattern == "time":
        return format_duration(value) if value >= 1 else f"{value:.2f}s"
    if pattern == "percent":
        text = f"{100 * value:.1f}%"
        if key == "best_knn_top1" and summary.get("best_knn_step") is not None:
            text += f" (step {summary['best_knn_step']})"
        return text
    if key == "steps" and summary.get("planned_steps"):
        return f"{value} of {summary['planned_steps']}"
    return pattern.format(value)


def render_summary(report: RunReport) -> Table:
    """The summary as a two-column table; rows whose value is unknown are left out."""
    table = Table(title=f"run {escape(str(report.run_dir))}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    for key, label, pattern in ROWS:
        value = report.summary.get(key)
        if value is None:
            continue
        table.add_row(label, escape(_format(key, value, pattern, report.summary)))
    return table


def render_chart(chart: TextChart, colors: list[tuple[int, int, int]], *, legend: str) -> Panel:
    """A braille chart in a panel, each character in the colour of the series that drew it."""
    lines = []
    for label, row, owners in zip(chart.labels, chart.rows, chart.series_rows, strict=True):
        line = Text(label + ("┤" if label.strip() else "│"), style="dim")
        for character, owner in zip(row, owners, strict=True):
            style = "rgb({},{},{})".format(*colors[owner]) if owner >= 0 else ""
            line.append(character, style=style)
        lines.append(line)
    lines.append(Text(chart.x_axis, style="dim"))
    title = escape(chart.title) + (f" [dim]{legend}[/]" if legend else "")
    return Panel(Group(*lines), title=title, title_align="left", expand=False)


def report_command(
    run: Annotated[
        Path,
        typer.Argument(help="A run folder written by `simclr pretrain --out`.", show_default=False),
    ],
    save: Annotated[
        Path | None, typer.Option("--save", help="Also write the curves as a PNG file.")
    ] = None,
    as_json: JsonOption = False,
    height: Annotated[
        int, typer.Option("--height", min=3, help="Rows of each curve in the terminal.")
    ] = 8,
) -> None:
    """Summarise a pretraining run and draw its curves. [dim]simclr report runs/first[/]"""
    report = read_run(run)
    if save is not None:
        save_report_png(report, save)
    if as_json:
        sys.stdout.write(json.dumps({**report.summary, "notes": report.notes}) + "\n")
        return
    console = _console.stdout
    console.print(render_summary(report))
    charts = report_charts(report)
    # Two charts side by side where the terminal is wide enough, one per row otherwise.
    per_row = 2 if console.width >= 120 else 1
    width = max(30, console.width // per_row - 6)
    panels = []
    for chart in charts:
        colors = [series.color for series in chart.series]
        legend = (
            " ".join(
                f"[rgb({c[0]},{c[1]},{c[2]})]━[/] {escape(series.name)}"
                for series, c in zip(chart.series, colors, strict=True)
            )
            if len(chart.series) > 1
            else ""
        )
        panels.append(
            render_chart(
                render_text_chart(chart, width=width, height=height), colors, legend=legend
            )
        )
    for start in range(0, len(panels), per_row):
        grid = Table.grid(padding=(0, 1))
        for _ in panels[start : start + per_row]:
            grid.add_column()
        grid.add_row(*panels[start : start + per_row])
        console.print(grid)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if save is not None:
        console.print(f"Wrote the curves to [bold]{escape(str(save))}[/]", highlight=False)
