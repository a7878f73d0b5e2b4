"""Chart machinery: nice ticks, braille text charts and PNG charts."""

from __future__ import annotations

import itertools

import numpy as np

from simclr_cli.core.viz.plots import (
    Chart,
    Series,
    format_tick,
    nice_ticks,
    render_charts,
    render_text_chart,
)


def test_nice_ticks__cover_the_range_with_round_steps():
    ticks = nice_ticks(0.013, 0.087, 4)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.087
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert steps == {0.02}


def test_nice_ticks__flat_values_get_a_window():
    ticks = nice_ticks(5.0, 5.0)
    assert ticks[0] < 5.0 < ticks[-1]


def test_format_tick__digits_follow_the_step():
    assert format_tick(0.0075, [0.0, 0.0025, 0.005, 0.0075]) == "0.0075"
    assert format_tick(2.0, [2.0, 2.2, 2.4]) == "2.0"
    assert format_tick(0.25, [0.0, 0.25, 0.5], percent=True) == "25%"
    assert format_tick(300000.0, [0.0, 300000.0]) == "3.0e+05"


def test_render_text_chart__rising_line_goes_from_bottom_left_to_top_right():
    chart = Chart("rising", [Series("y", [0, 1, 2, 3], [0.0, 1.0, 2.0, 3.0], (0, 0, 255))])
    text = render_text_chart(chart, width=40, height=6)
    assert len(text.rows) == 6 and len({len(row) for row in text.rows}) == 1
    blank = chr(0x2800)
    assert text.rows[-1][0] != blank and text.rows[0][0] == blank
    assert text.rows[0][-1] != blank and text.rows[-1][-1] == blank
    assert all(owner in (-1, 0) for row in text.series_rows for owner in row)
    assert "3" in text.x_axis and text.labels[0].strip() != ""


def test_render_text_chart__nan_points_are_skipped():
    chart = Chart("gap", [Series("y", [0, 1, 2], [1.0, float("nan"), 2.0], (0, 0, 0))])
    text = render_text_chart(chart, width=30, height=4)
    drawn = sum(ch != chr(0x2800) for row in text.rows for ch in row)
    assert drawn == 2  # two isolated points, no line through the gap


def test_render_charts__grid_size_and_line_colour():
    charts = [
        Chart("a", [Series("a", [0, 1, 2], [1.0, 3.0, 2.0], (255, 0, 0))]),
        Chart("b", [Series("b", [0, 1, 2], [0.1, 0.2, 0.3], (0, 0, 255))], percent=True),
        Chart("c", [Series("c", [0, 1], [5.0, 5.0], (0, 160, 0))]),
    ]
    image = render_charts(charts, columns=2, panel_size=(300, 200), title="t")
    assert image.size == (600, 2 * 200 + 36) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    red = (np.abs(pixels - [255, 0, 0]).max(axis=2) < 30).sum()
    blue = (np.abs(pixels - [0, 0, 255]).max(axis=2) < 30).sum()
    assert red > 50 and blue > 50
