"""Line charts without a plotting library: braille text for the terminal, PIL for PNG files.

Both renderers draw the same ``Chart``: a title, axis labels and one or more series of (x, y)
points. Non-finite values (a window whose loss was NaN) are left out of the line, which breaks
there. The PNG renderer draws at twice the size and scales down, so lines and text are smooth
without an anti-aliasing library; ticks fall on "nice" numbers (1, 2, 2.5, 5 x 10^k).

PIL rather than matplotlib: Pillow is already a dependency, a chart of a few curves needs
little, and the pictures come out the same on every machine (one bundled font, no style files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

#: Drawing happens at this multiple of the final size, then the image is scaled down.
SUPERSAMPLE = 2
BACKGROUND = (255, 255, 255)
AXIS_COLOR = (60, 60, 60)
GRID_COLOR = (228, 228, 228)
TEXT_COLOR = (30, 30, 30)
#: Braille dots: the bit of the dot at (column, row) of a 2 x 4 cell (Unicode U+2800 block).
_BRAILLE_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


@dataclass
class Series:
    """One line of a chart.

    Attributes:
        name: Shown in the legend when a chart has several series.
        xs: X values (steps), same length as ``ys``.
        ys: Y values; non-finite ones are skipped.
        color: RGB colour of the line.
    """

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: tuple[int, int, int]


@dataclass
class Chart:
    """A titled chart of one or more series sharing the axes.

    Attributes:
        title: Shown above the plot.
        series: The lines.
        x_label: Label of the x axis.
        y_label: Label of the y axis.
        percent: Format the y ticks as percentages (values are shares in [0, 1]).
        x_range: (low, high) the x axis must cover, so that charts of one run line up.
    """

    title: str
    series: list[Series] = field(default_factory=list)
    x_label: str = "step"
    y_label: str = ""
    percent: bool = False
    x_range: tuple[float, float] | None = None

    def points(self) -> list[tuple[float, float]]:
        """Every finite point of every series."""
        return [
            (float(x), float(y))
            for s in self.series
            for x, y in zip(s.xs, s.ys, strict=True)
            if math.isfinite(x) and math.isfinite(y)
        ]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high].

    Args:
        low: Smallest value to cover.
        high: Largest value to cover.
        count: Wanted number of intervals.

    Returns:
        Ascending ticks, the first <= low and the last >= high, spaced by 1, 2, 2.5 or 5 x 10^k.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0, 1.0]
    if high <= low:
        # A flat curve: open a small window around its value.
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def format_tick(value: float, ticks: Sequence[float], *, percent: bool = False) -> str:
    """A tick label with as few digits as tell the ticks apart (``3e-04`` for tiny values)."""
    if percent:
        value, ticks = value * 100, [t * 100 for t in ticks]
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    biggest = max(abs(t) for t in ticks) if ticks else abs(value)
    if biggest and (biggest >= 1e5 or biggest < 1e-3):
        text = f"{value:.1e}"
    else:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
        decimals += 1 if step > 0 and round(step / 10**-decimals, 6) % 1 else 0
        text = f"{value:.{min(decimals, 6)}f}"
    return text + ("%" if percent else "")


def _ranges(chart: Chart) -> tuple[list[float], list[float]]:
    points = chart.points()
    if not points:
        return [0.0, 1.0], [0.0, 1.0]
    xs, ys = zip(*points, strict=True)
    low, high = min(ys), max(ys)
    if chart.percent:
        low, high = min(0.0, low), max(high, 0.01)
    x_low, x_high = min(xs), max(xs)
    if chart.x_range is not None:
        x_low, x_high = min(x_low, chart.x_range[0]), max(x_high, chart.x_range[1])
    x_ticks = nice_ticks(x_low, x_high, 5) if x_high > x_low else [x_low - 1, x_low, x_low + 1]
    return x_ticks, nice_ticks(low, high, 4)


# ---------------------------------------------------------------------------------------------
# Terminal: braille dots.


@dataclass
class TextChart:
    """A chart as lines of text.

    Attributes:
        title: The chart's title.
        labels: Y tick label of each plot row ("" where none), right-aligned to one width.
        rows: The plot, one string of braille characters per row.
        x_axis: The line under the plot with the x tick labels (already indented).
        series_rows: For each plot row, the index of the series that drew each character
            (-1 where none), so that a renderer can colour them.
    """

    title: str
    labels: list[str]
    rows: list[str]
    x_axis: str
    series_rows: list[list[int]]


def _line_dots(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Dots of the segment between two dots (Bresenham)."""
    dots = []
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    error = dx + dy
    while True:
        dots.append((x0, y0))
        if x0 == x1 and y0 == y1:
            return dots
        twice = 2 * error
        if twice >= dy:
            error += dy
            x0 += sx
        if twice <= dx:
            error += dx
            y0 += sy


def render_text_chart(chart: Chart, *, width: int, height: int) -> TextChart:
    """Draw a chart with braille characters (2 x 4 dots per character).

    Args:
        chart: What to draw.
        width: Characters of the whole chart, tick labels included (at least 20).
        height: Rows of the plot (at least 3), without the x axis line.

    Returns:
        The chart as text, for a renderer to colour and frame.
    """
    x_ticks, y_ticks = _ranges(chart)
    y_labels = [format_tick(t, y_ticks, percent=chart.percent) for t in y_ticks]
    label_width = max(len(label) for label in y_labels) + 1
    columns = max(8, width - label_width - 1)
    height = max(3, height)
    dots_x, dots_y = columns * 2, height * 4
    x_low, x_high = x_ticks[0], x_ticks[-1]
    y_low, y_high = y_ticks[0], y_ticks[-1]

    def to_dot(x: float, y: float) -> tuple[int, int]:
        column = round((x - x_low) / (x_high - x_low) * (dots_x - 1))
        row = round((y_high - y) / (y_high - y_low) * (dots_y - 1))
        return column, row

    cells = [[0] * columns for _ in range(height)]
    owners = [[-1] * columns for _ in range(height)]
    for index, series in enumerate(chart.series):
        previous = None
        for x, y in zip(series.xs, series.ys, strict=True):
            if not (math.isfinite(x) and math.isfinite(y)):
                previous = None
                continue
            dot = to_dot(x, y)
            for column, row in _line_dots(*(previous or dot), *dot):
                cells[row // 4][column // 2] |= _BRAILLE_BITS[row % 4][column % 2]
                owners[row // 4][column // 2] = index
            previous = dot
    rows = ["".join(chr(0x2800 + bits) for bits in line) for line in cells]
    # Each y tick goes on the row nearest its value.
    labels = [""] * height
    for tick, label in zip(y_ticks, y_labels, strict=True):
        row = round((y_high - tick) / (y_high - y_low) * (height - 1))
        labels[row] = label
    labels = [label.rjust(label_width) for label in labels]
    # X tick labels under the plot, each centred on its column where it fits.
    axis = [" "] * (columns + 8)
    for tick in x_ticks:
        text = format_tick(tick, x_ticks)
        column = round((tick - x_low) / (x_high - x_low) * (columns - 1))
        start = min(max(0, column - len(text) // 2), columns - len(text))
        if all(c == " " for c in axis[max(0, start - 1) : start + len(text) + 1]):
            axis[start : start + len(text)] = text
    x_axis = " " * (label_width + 1) + "".join(axis).rstrip()
    return TextChart(chart.title, labels, rows, x_axis, owners)


# ---------------------------------------------------------------------------------------------
# PNG: PIL.


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` pixels (Pillow >= 10.1); its small bitmap font before."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0 has no size argument.
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    # Pillow types the box as floats; drawn from (0, 0) its values are whole pixels.
    return int(right - left), int(bottom - top)


def draw_chart(
    draw: ImageDraw.ImageDraw, chart: Chart, box: tuple[int, int, int, int], *, scale: int = 1
) -> None:
    """Draw one chart (title, grid, ticks, labels, lines, legend) inside ``box`` of an image.

    Args:
        draw: Draws on the image.
        chart: What to draw.
        box: (left, top, right, bottom) in pixels of that image.
        scale: Multiplies line widths, gaps and font sizes (the supersampling factor).
    """
    left, top, right, bottom = box
    title_font, tick_font = load_font(16 * scale), load_font(12 * scale)
    x_ticks, y_ticks = _ranges(chart)
    y_labels = [format_tick(t, y_ticks, percent=chart.percent) for t in y_ticks]
    label_width = max(_text_size(draw, label, tick_font)[0] for label in y_labels)
    tick_height = _text_size(draw, "0", tick_font)[1]
    # The plot area leaves room for the title above, tick labels left and below.
    plot_left = left + label_width + 14 * scale + (tick_height + 6 * scale if chart.y_label else 0)
    plot_top = top + _text_size(draw, chart.title, title_font)[1] + 14 * scale
    plot_right = right - 12 * scale
    plot_bottom = bottom - 2 * tick_height - 16 * scale
    title_width = _text_size(draw, chart.title, title_font)[0]
    draw.text(
        ((plot_left + plot_right - title_width) / 2, top + 4 * scale),
        chart.title,
        fill=TEXT_COLOR,
        font=title_font,
    )
    x_low, x_high, y_low, y_high = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    # Values map to the plot area less a small inset, so that a line along an extreme value
    # (an accuracy of 0% or 100%) is not hidden under the frame.
    inset = 5 * scale

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (
            plot_left
            + inset
            + (x - x_low) / (x_high - x_low) * (plot_right - plot_left - 2 * inset),
            plot_bottom
            - inset
            - (y - y_low) / (y_high - y_low) * (plot_bottom - plot_top - 2 * inset),
        )

    # Grid lines and tick labels.
    for tick, label in zip(y_ticks, y_labels, strict=True):
        _, y = to_pixel(x_low, tick)
        draw.line([(plot_left, y), (plot_right, y)], fill=GRID_COLOR, width=scale)
        text_width, _ = _text_size(draw, label, tick_font)
        draw.text(
            (plot_left - 6 * scale - text_width, y),
            label,
            fill=TEXT_COLOR,
            font=tick_font,
            anchor="lm",
        )
    for tick in x_ticks:
        x, _ = to_pixel(tick, y_low)
        draw.line([(x, plot_top), (x, plot_bottom)], fill=GRID_COLOR, width=scale)
        draw.line([(x, plot_bottom), (x, plot_bottom + 4 * scale)], fill=AXIS_COLOR, width=scale)
        draw.text(
            (x, plot_bottom + 6 * scale),
            format_tick(tick, x_ticks),
            fill=TEXT_COLOR,
            font=tick_font,
            anchor="mt",
        )
    draw.rectangle([plot_left, plot_top, plot_right, plot_bottom], outline=AXIS_COLOR, width=scale)
    if chart.x_label:
        draw.text(
            ((plot_left + plot_right) / 2, bottom - 2 * scale),
            chart.x_label,
            fill=TEXT_COLOR,
            font=tick_font,
            anchor="md",
        )
    if chart.y_label:
        _draw_vertical_text(
            draw, chart.y_label, (left + 2 * scale, (plot_top + plot_bottom) / 2), tick_font
        )

    # The lines; a single point is drawn as a dot.
    for series in chart.series:
        segment: list[tuple[float, float]] = []
        for x, y in [*zip(series.xs, series.ys, strict=True), (math.nan, math.nan)]:
            if math.isfinite(x) and math.isfinite(y):
                segment.append(to_pixel(x, y))
                continue
            if len(segment) > 1:
                draw.line(segment, fill=series.color, width=2 * scale, joint="curve")
            elif segment:
                (px, py), radius = segment[0], 3 * scale
                draw.ellipse(
                    [px - radius, py - radius, px + radius, py + radius], fill=series.color
                )
            segment = []

    # A legend right of the title when there are several series, clear of the lines.
    if len(chart.series) > 1:
        x = plot_right
        for series in reversed(chart.series):
            text_width, _ = _text_size(draw, series.name, tick_font)
            x -= text_width
            y = top + 4 * scale + _text_size(draw, chart.title, title_font)[1] // 2
            y -= y % scale  # On whole pixels of the final image, so the swatch stays solid.
            draw.text((x, y), series.name, fill=TEXT_COLOR, font=tick_font, anchor="lm")
            draw.rectangle(
                [x - 24 * scale, y - 2 * scale, x - 6 * scale - 1, y + 2 * scale - 1],
                fill=series.color,
            )
            x -= 36 * scale


def _draw_vertical_text(draw: ImageDraw.ImageDraw, text: str, at: tuple[float, float], font):
    """Text rotated by 90 degrees, its left edge at ``at[0]`` and centred on ``at[1]``."""
    width, height = _text_size(draw, text, font)
    label = Image.new("RGBA", (width + 4, height + 8), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((2, 2), text, fill=TEXT_COLOR, font=font)
    label = label.rotate(90, expand=True)
    draw._image.paste(label, (round(at[0]), round(at[1] - label.height / 2)), label)


def render_charts(
    charts: Sequence[Chart],
    *,
    columns: int = 2,
    panel_size: tuple[int, int] = (560, 340),
    title: str | None = None,
) -> Image.Image:
    """Draw charts in a grid on one white RGB image.

    Args:
        charts: The charts, filled row by row.
        columns: Charts per row (fewer when there are fewer charts).
        panel_size: (width, height) of each chart in pixels.
        title: Optional heading above the grid.

    Returns:
        An RGB image of ``columns x panel_size`` (plus the heading).
    """
    columns = max(1, min(columns, len(charts) or 1))
    rows = max(1, math.ceil(len(charts) / columns))
    s = SUPERSAMPLE
    panel_width, panel_height = panel_size[0] * s, panel_size[1] * s
    heading = 36 * s if title else 0
    image = Image.new("RGB", (columns * panel_width, rows * panel_height + heading), BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text(
            (image.width / 2, 8 * s), title, fill=TEXT_COLOR, font=load_font(18 * s), anchor="mt"
        )
    for index, chart in enumerate(charts):
        row, column = divmod(index, columns)
        left, top = column * panel_width, heading + row * panel_height
        margin = 10 * s
        draw_chart(
            draw,
            chart,
            (left + margin, top + margin, left + panel_width - margin, top + panel_height - margin),
            scale=s,
        )
    return image.resize((image.width // s, image.height // s), Image.Resampling.LANCZOS)
