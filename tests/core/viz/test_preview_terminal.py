"""The ``visualize-aug`` grid in a terminal, and the keys of interactive mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simclr_cli.core.choices import Preset, Protocol
from simclr_cli.core.errors import DisplayError
from simclr_cli.core.viz.preview_panels import BOX_COLORS
from simclr_cli.core.viz.preview_terminal import (
    TerminalLayout,
    fit_layout,
    handle_key,
    minimum_columns,
    render_terminal,
)
from tests.core.viz.conftest import BLUE, RED, known_preview, make_preview, two_colour_image

CELL = re.compile(r"\x1b\[38;2;(\d+);(\d+);(\d+)m\x1b\[48;2;(\d+);(\d+);(\d+)m▀")


def test_render_terminal__truecolor_cells_of_a_known_image(tmp_path: Path):
    preview = known_preview(two_colour_image(tmp_path / "known.png"))
    # 76 columns: three 24-cell columns and two gaps, so the 8 px image is enlarged 3x: pixel
    # rows 0-8 red, 9-23 blue, and cell row 4 (pixel rows 8 and 9) is red over blue.
    text = render_terminal(preview, protocol=Protocol.truecolor, columns=76)
    lines = text.split("\n")
    assert lines[0].startswith("preset cifar, colour strength 0.5, 8 px views, seed 0")
    picture = lines[1:13]
    cells = [[tuple(map(int, m.groups())) for m in CELL.finditer(line)] for line in picture]
    assert all(len(row) == 72 for row in cells)  # 3 panels x 24 cells, every pixel opaque
    view_a = [row[24:48] for row in cells]
    assert view_a[0][5] == (*RED, *RED)
    assert view_a[4][5] == (*RED, *BLUE)  # the two known pixels of one cell
    assert view_a[5][5] == (*BLUE, *BLUE)
    # Both crop boxes cover the whole image, so B's box (drawn last) outlines the original.
    assert cells[0][0][:3] == BOX_COLORS[1] and cells[11][23][3:] == BOX_COLORS[1]
    assert "view A" in lines[13] and "view B" in lines[13]


def test_render_terminal__256_colours_and_graphics_protocols(tmp_path: Path):
    preview = known_preview(two_colour_image(tmp_path / "known.png"))
    palette = render_terminal(preview, protocol=Protocol.color256, columns=76)
    assert "\x1b[38;5;" in palette and "\x1b[38;2;" not in palette
    kitty = render_terminal(preview, protocol=Protocol.kitty, columns=76)
    assert kitty.count("\x1b_Ga=T,f=100,c=76,q=2") == 1  # one picture per pair, 76 cells wide
    iterm = render_terminal(preview, protocol=Protocol.iterm, columns=76)
    assert iterm.count("\x1b]1337;File=") == 1 and ";width=76;" in iterm


def test_render_terminal__fits_width_and_refuses_a_narrow_terminal(tmp_path: Path):
    preview = known_preview(two_colour_image(tmp_path / "known.png"))
    text = render_terminal(preview, protocol=Protocol.truecolor, columns=120)
    visible = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.split("\n")]
    assert max(len(line) for line in visible) <= 120
    with pytest.raises(DisplayError, match=f"at least {minimum_columns()}"):
        render_terminal(preview, protocol=Protocol.truecolor, columns=minimum_columns() - 1)


def test_fit_layout__shrinks_pictures_and_drops_pairs_to_fit_rows():
    assert fit_layout(200, pairs=4) == TerminalLayout(column=48, panel=48, pairs=4)
    shrunk = fit_layout(200, rows=40, pairs=2)
    assert shrunk.pairs == 2 and 16 <= shrunk.panel < 48
    # 4 pairs in 40 lines would leave 2-line pictures: show fewer, bigger ones.
    dropped = fit_layout(200, rows=40, pairs=4)
    assert dropped.pairs == 2 and dropped.panel >= 16


def test_render_terminal__fixed_height_says_how_many_pairs_fit(shapes_dir: Path):
    preview = make_preview(shapes_dir, pairs=4)
    text = render_terminal(preview, protocol=Protocol.truecolor, columns=100, rows=40)
    assert "2 of 4 pairs fit" in text.split("\n")[0]
    assert len(text.split("\n")) <= 40


def test_render_terminal__captions_match_the_views_parameters(shapes_dir: Path):
    preview = make_preview(shapes_dir, preset="imagenet", color_strength=1.0, pairs=3)
    text = re.sub(
        r"\x1b\[[0-9;]*m", "", render_terminal(preview, protocol=Protocol.truecolor, columns=200)
    )
    flat = " ".join(text.split())
    for pair in preview.pairs:
        for params in pair.params:
            top, left, height, width = params.crop
            assert f"crop {params.crop_scale:.0%}: {width}x{height} at {left},{top}" in flat
            if params.color_jitter:
                assert f"brightness {params.brightness:.2f}" in flat
                assert f"hue {params.hue:+.2f}" in flat
            if params.blur_sigma is not None:
                assert f"blur sigma {params.blur_sigma:.2f}" in flat


def test_handle_key__strength_and_preset_keys_keep_the_crops(shapes_dir: Path, tmp_path: Path):
    preview = make_preview(shapes_dir, preset="cifar", color_strength=0.5)
    crops = [p.crop for pair in preview.pairs for p in pair.params]
    assert handle_key(preview, "+", save_path=tmp_path / "g.png") == "colour strength 0.6"
    assert [p.crop for pair in preview.pairs for p in pair.params] == crops
    assert handle_key(preview, "p", save_path=tmp_path / "g.png") == "preset imagenet"
    assert preview.settings.preset is Preset.imagenet
    assert [p.crop for pair in preview.pairs for p in pair.params] == crops
    assert handle_key(preview, " ", save_path=tmp_path / "g.png").startswith("new views")
    assert [p.crop for pair in preview.pairs for p in pair.params] != crops
    assert handle_key(preview, "s", save_path=tmp_path / "g.png").startswith("saved")
    assert (tmp_path / "g.png").exists()
    for _ in range(30):
        handle_key(preview, "-", save_path=tmp_path / "g.png")
    assert preview.settings.color_strength == 0.0
    assert handle_key(preview, "x", save_path=tmp_path / "g.png") == "key 'x' does nothing"
