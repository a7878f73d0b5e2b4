"""The ``visualize-aug`` grid in a terminal, and its interactive mode.

Three columns per pair (the decoded source with both crop boxes, view A, view B), captions under
them, drawn with half blocks in 24-bit or 256 colours, or as one picture per pair with the Kitty
or iTerm2 graphics protocols. Interactive mode redraws the grid full-screen as keys change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from PIL import Image

from ..choices import Preset, Protocol
from ..errors import DataError, DisplayError
from . import terminal
from .interactive import CLEAR, run_key_loop
from .preview import AugmentationPreview, AugmentedPair, format_strength
from .preview_panels import BOX_COLORS, flow, pair_caption_items, pair_panels, panel_pixels
from .preview_png import save_grid

#: Narrowest column of the terminal grid: the width of the longest caption item.
MIN_COLUMN = 24
#: Widest column: wider panels are just taller, not clearer, in half blocks.
MAX_COLUMN = 48
#: Caption lines per pair assumed when fitting pictures into a fixed height.
CAPTION_LINES = 6
#: Smallest picture, in cells, worth showing in interactive mode before dropping pairs.
MIN_INTERACTIVE_PANEL = 16
#: Blank cells between the columns of the terminal grid.
GAP = 2
#: The box colours in the 16 standard terminal colours (yellow, blue), understood everywhere.
BOX_ANSI = ("33", "34")
#: Step of the ``+`` and ``-`` keys in interactive mode.
STRENGTH_STEP = 0.1
#: Where ``s`` saves in interactive mode when no ``--save`` was given.
DEFAULT_SAVE_PATH = Path("visualize-aug.png")


@dataclass(frozen=True)
class TerminalLayout:
    """Where things go in a terminal: three columns of ``column`` cells, ``GAP`` apart.

    Attributes:
        column: Width of each column in cells (captions wrap to it).
        panel: Width of each picture in cells; in half blocks also its height in pixels.
        pairs: How many pairs are shown (fewer than asked when a fixed height cannot hold all).
    """

    column: int
    panel: int
    pairs: int = 1

    @property
    def width(self) -> int:
        """Total width in cells."""
        return 3 * self.column + 2 * GAP


def minimum_columns() -> int:
    """Narrowest terminal that shows one pair: three caption columns and two gaps."""
    return 3 * MIN_COLUMN + 2 * GAP


def fit_layout(columns: int, *, rows: int | None = None, pairs: int = 1) -> TerminalLayout:
    """Choose the column and picture widths for a terminal of ``columns`` x ``rows`` cells.

    Args:
        columns: Width of the terminal in cells.
        rows: Height to fit into (interactive mode), or None to let the output scroll.
        pairs: Rows of pictures to fit into ``rows``.

    Raises:
        DisplayError: When the terminal is too narrow for one pair.
    """
    needed = minimum_columns()
    if columns < needed:
        raise DisplayError(
            f"the terminal is {columns} columns wide; visualize-aug needs at least {needed} "
            "for one pair: widen the window, or write a PNG with --save grid.png"
        )
    column = min(MAX_COLUMN, (columns - 2 * GAP) // 3)
    if rows is None:
        return TerminalLayout(column=column, panel=column, pairs=pairs)
    # Each pair takes panel/2 lines of half blocks, its captions and a blank line, under one
    # header line. Pairs are dropped from the end until the pictures are big enough to see.
    shown = max(1, pairs)
    while True:
        lines_per_pair = (rows - 1) // shown
        panel = min(column, 2 * (lines_per_pair - CAPTION_LINES - 1))
        if panel >= MIN_INTERACTIVE_PANEL or shown == 1:
            return TerminalLayout(column=column, panel=max(4, panel), pairs=shown)
        shown -= 1


def _colored(text: str, index: int, protocol: Protocol) -> str:
    if protocol is Protocol.none:
        return text
    if protocol is Protocol.color256:
        return f"{terminal.ESC}[{BOX_ANSI[index]}m{text}{terminal.RESET}"
    red, green, blue = BOX_COLORS[index]
    return f"{terminal.ESC}[38;2;{red};{green};{blue}m{text}{terminal.RESET}"


def caption_columns(pair: AugmentedPair, preset: Preset, width: int) -> list[list[str]]:
    """The three captions of one row as lines of at most ``width`` characters."""

    def fits(text: str) -> bool:
        return len(text) <= width

    return [flow(column, fits) for column in pair_caption_items(pair, preset)]


def _caption_block(columns: list[list[str]], layout: TerminalLayout, protocol: Protocol) -> str:
    height = max(len(lines) for lines in columns)
    out = []
    for row in range(height):
        cells = []
        for index, lines in enumerate(columns):
            text = lines[row] if row < len(lines) else ""
            padded = text.ljust(layout.column)
            if index > 0 and row == 0:
                # The label line takes its box's colour, tying caption, view and box together.
                padded = _colored(text, index - 1, protocol) + " " * (layout.column - len(text))
            cells.append(padded)
        out.append((" " * GAP).join(cells).rstrip())
    return "\n".join(out)


def _pictures(pair: AugmentedPair, layout: TerminalLayout, protocol: Protocol) -> str:
    if protocol in (Protocol.truecolor, Protocol.color256):
        truecolor = protocol is Protocol.truecolor
        blocks = [
            terminal.encode_half_blocks(panel, truecolor=truecolor)
            for panel in pair_panels(pair, layout.panel)
        ]
        pad = " " * (layout.column - layout.panel)
        lines = [(pad + " " * GAP).join(cells) for cells in zip(*blocks, strict=True)]
        return "\n".join(lines)
    # Graphics protocols: one picture per row at full resolution, scaled by the terminal to the
    # same cells the half blocks would take.
    side = panel_pixels(pair.views[0].shape[-1])
    pixels_per_cell = side / layout.panel
    step = round((layout.column + GAP) * pixels_per_cell)
    row = Image.new("RGBA", (2 * step + side, side), (0, 0, 0, 0))
    for index, panel in enumerate(pair_panels(pair, side)):
        row.paste(panel, (index * step, 0))
    cells = 2 * (layout.column + GAP) + layout.panel
    if protocol is Protocol.kitty:
        return terminal.encode_kitty(row, columns=cells)
    return terminal.encode_iterm(row, columns=cells, name=f"{pair.path.stem}-views.png")


def render_terminal(
    preview: AugmentationPreview,
    *,
    protocol: Protocol,
    columns: int,
    rows: int | None = None,
) -> str:
    """Draw the preview as text and escape sequences for a terminal ``columns`` cells wide.

    Args:
        preview: The images and views.
        protocol: ``kitty``, ``iterm``, ``truecolor`` or ``256`` (not ``auto``).
        columns: Width of the terminal in cells.
        rows: Height to fit into (interactive mode); None lets the output scroll.

    Returns:
        The whole drawing, lines separated by newlines, ending without one.

    Raises:
        DisplayError: When the terminal is too narrow for one pair.
    """
    if protocol in (Protocol.auto, Protocol.none):
        raise ValueError(f"render_terminal needs a drawing protocol, not {protocol.value}")
    layout = fit_layout(columns, rows=rows, pairs=len(preview.pairs))
    settings = preview.settings
    header = f"{settings.describe()}, seed {preview.seed}"
    if preview.draws:
        header += f", draw {preview.draws + 1}"
    if layout.pairs < len(preview.pairs):
        header += f"; {layout.pairs} of {len(preview.pairs)} pairs fit, a taller window shows more"
    parts = [header[: layout.width]]
    for pair in preview.pairs[: layout.pairs]:
        parts.append(_pictures(pair, layout, protocol))
        captions = caption_columns(pair, settings.preset, layout.column)
        parts.append(_caption_block(captions, layout, protocol))
        parts.append("")
    return "\n".join(parts).rstrip("\n")


# ---------------------------------------------------------------------------------------------
# Interactive mode.


def handle_key(preview: AugmentationPreview, key: str, *, save_path: Path) -> str:
    """Act on one key of interactive mode and say what happened.

    Keys: space draws new views, ``+``/``-`` change the colour strength by 0.1, ``p`` switches
    the preset, ``s`` saves the grid to ``save_path``.
    """
    if key == " ":
        preview.draw()
        return f"new views (draw {preview.draws + 1})"
    if key in ("+", "="):
        preview.change_strength(STRENGTH_STEP)
        return f"colour strength {format_strength(preview.settings.color_strength)}"
    if key in ("-", "_"):
        preview.change_strength(-STRENGTH_STEP)
        return f"colour strength {format_strength(preview.settings.color_strength)}"
    if key in ("p", "P"):
        preview.next_preset()
        return f"preset {preview.settings.preset.value}"
    if key in ("s", "S"):
        grid = save_grid(preview, save_path)
        return f"saved {save_path} ({grid.width}x{grid.height} px)"
    return f"key {key!r} does nothing"


def run_interactive(
    preview: AugmentationPreview,
    *,
    protocol: Protocol,
    save_path: Path | None,
    input_descriptor: int,
    output: TextIO,
) -> None:
    """Show the preview full-screen and let keys redraw it until ``q``.

    Raises:
        UsageError: When the input is not a terminal.
    """
    clear = CLEAR + (terminal.kitty_delete_all() if protocol is Protocol.kitty else "")
    target = DEFAULT_SAVE_PATH if save_path is None else Path(save_path)

    def render(columns: int, rows: int) -> str:
        # Two status lines and a blank one sit under the frame.
        return render_terminal(preview, protocol=protocol, columns=columns, rows=rows - 3)

    def handle(key: str) -> str:
        try:
            return handle_key(preview, key, save_path=target)
        except DataError as error:
            return str(error)

    run_key_loop(
        render=render, handle=handle, input_descriptor=input_descriptor, output=output, clear=clear
    )
