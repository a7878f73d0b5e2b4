"""Rows of captioned thumbnails, as a PNG or in a terminal: search results and duplicate groups.

Each row has a title and a list of images with short captions; the first image of a row can be
marked (the query of a search, the first image of a group of duplicates) with a coloured frame.
The terminal drawing uses the encoders of ``terminal.py`` (Kitty, iTerm2, half blocks), as
``visualize-aug`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .._io import check_png_path, write_png
from ..choices import Protocol
from ..errors import DisplayError
from . import terminal
from .embedding_map import load_thumbnail

#: Colour of the frame around a row's marked first image.
MARK_COLOR = (240, 130, 20)
#: Grey of a file that can no longer be read.
MISSING_COLOR = (200, 200, 200)
#: Blank cells between thumbnails in the terminal.
GAP = 2


@dataclass(frozen=True)
class Thumbnail:
    """One picture of a row.

    Attributes:
        path: The image file (drawn grey when it cannot be read).
        captions: Short lines under it (a rank and similarity, a file name).
    """

    path: Path
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ThumbnailRow:
    """A titled row of pictures; ``marked`` frames the first."""

    title: str
    items: Sequence[Thumbnail] = field(default_factory=tuple)
    marked: bool = True


def _picture(path: Path, size: int) -> Image.Image:
    # The image fitted into a size x size square, small images enlarged by a whole factor so
    # that their pixels stay sharp; a file that cannot be read becomes a grey square.
    try:
        image = load_thumbnail(path, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return Image.new("RGB", (size, size), MISSING_COLOR)
    factor = size // max(image.width, image.height)
    if factor > 1:
        image = image.resize(
            (image.width * factor, image.height * factor), Image.Resampling.NEAREST
        )
    square = Image.new("RGB", (size, size), (255, 255, 255))
    square.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return square


def _fit(text: str, fits) -> str:
    if fits(text):
        return text
    while text and not fits(text + "…"):
        text = text[:-1]
    return text + "…"


def render_rows_png(
    rows: Sequence[ThumbnailRow], *, title: str, thumbnail: int = 128
) -> Image.Image:
    """Draw the rows as one RGB picture: a title, then per row its title and captioned images.

    Args:
        rows: The rows, drawn top to bottom.
        title: The line at the top.
        thumbnail: Side of each picture in pixels.

    Returns:
        The picture.
    """
    font_size = max(11, min(16, thumbnail // 9))
    font = ImageFont.load_default(size=font_size)
    line = font_size + 4
    margin = max(8, thumbnail // 12)
    captions = max((len(item.captions) for row in rows for item in row.items), default=0)
    columns = max((len(row.items) for row in rows), default=1)
    row_height = line + thumbnail + 4 + captions * line + margin
    width = max(margin + columns * (thumbnail + margin), 320)
    height = margin + line + len(rows) * row_height + margin
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)

    def fits(text: str) -> bool:
        return font.getlength(text) <= thumbnail

    def fits_width(text: str) -> bool:
        return font.getlength(text) <= width - 2 * margin

    draw.text((margin, margin // 2), _fit(title, fits_width), fill=(20, 20, 20), font=font)
    top = margin + line
    for row in rows:
        draw.text((margin, top), _fit(row.title, fits_width), fill=(20, 20, 20), font=font)
        y = top + line
        for column, item in enumerate(row.items):
            x = margin + column * (thumbnail + margin)
            picture.paste(_picture(item.path, thumbnail), (x, y))
            if column == 0 and row.marked:
                frame = max(2, thumbnail // 40)
                draw.rectangle(
                    (x - frame, y - frame, x + thumbnail + frame - 1, y + thumbnail + frame - 1),
                    outline=MARK_COLOR,
                    width=frame,
                )
            for index, text in enumerate(item.captions):
                position = (x, y + thumbnail + 4 + index * line)
                draw.text(position, _fit(text, fits), fill=(40, 40, 40), font=font)
        top += row_height
    return picture


def save_rows_png(
    rows: Sequence[ThumbnailRow], path: Path, *, title: str, thumbnail: int = 128
) -> Image.Image:
    """Write ``render_rows_png`` as a PNG, atomically; returns the picture.

    Raises:
        DataError: When ``path`` does not end in .png or cannot be written.
    """
    path = check_png_path(path, flag="--save")
    picture = render_rows_png(rows, title=title, thumbnail=thumbnail)
    write_png(picture, path)
    return picture


def render_rows_terminal(
    rows: Sequence[ThumbnailRow], *, protocol: Protocol, columns: int, cell: int = 16
) -> str:
    """Draw the rows for a terminal ``columns`` cells wide; long rows wrap.

    Args:
        rows: The rows, drawn top to bottom.
        protocol: ``kitty``, ``iterm``, ``truecolor`` or ``256`` (not ``auto`` or ``none``).
        columns: Width of the terminal in cells.
        cell: Width of each picture in cells (in half blocks also its height in pixels).

    Returns:
        The drawing, lines separated by newlines, without a trailing one.

    Raises:
        DisplayError: When the terminal is narrower than one picture.
    """
    if protocol in (Protocol.auto, Protocol.none):
        raise ValueError(f"render_rows_terminal needs a drawing protocol, not {protocol.value}")
    if columns < cell:
        raise DisplayError(
            f"the terminal is {columns} columns wide; pictures need at least {cell}: widen the "
            "window, or write a PNG with --save grid.png"
        )
    per_line = max(1, (columns + GAP) // (cell + GAP))
    parts: list[str] = []
    for row in rows:
        parts.append(row.title[:columns])
        items = list(row.items)
        for start in range(0, len(items), per_line):
            chunk = items[start : start + per_line]
            parts.append(_pictures(chunk, protocol=protocol, cell=cell))
            height = max((len(item.captions) for item in chunk), default=0)
            for index in range(height):
                cells = [
                    (item.captions[index] if index < len(item.captions) else "")[:cell].ljust(cell)
                    for item in chunk
                ]
                parts.append((" " * GAP).join(cells).rstrip())
        parts.append("")
    return "\n".join(parts).rstrip("\n")


def _pictures(items: Sequence[Thumbnail], *, protocol: Protocol, cell: int) -> str:
    if protocol in (Protocol.truecolor, Protocol.color256):
        truecolor = protocol is Protocol.truecolor
        blocks = [
            terminal.encode_half_blocks(_picture(item.path, cell), truecolor=truecolor)
            for item in items
        ]
        return "\n".join((" " * GAP).join(lines) for lines in zip(*blocks, strict=True))
    # Graphics protocols: one picture for the line at a higher resolution, scaled by the
    # terminal to the cells the half blocks would take (cells are about twice as tall as wide).
    side = 8 * cell
    step = round(side * (cell + GAP) / cell)
    strip = Image.new("RGBA", (step * (len(items) - 1) + side, side), (0, 0, 0, 0))
    for index, item in enumerate(items):
        strip.paste(_picture(item.path, side), (index * step, 0))
    cells = (cell + GAP) * (len(items) - 1) + cell
    if protocol is Protocol.kitty:
        return terminal.encode_kitty(strip, columns=cells)
    return terminal.encode_iterm(strip, columns=cells, name="search.png")
