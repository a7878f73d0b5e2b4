"""Captions and panels of the ``visualize-aug`` grid."""

from __future__ import annotations

from pathlib import Path

from simclr_cli.core.augment.reference import ViewParams
from simclr_cli.core.choices import Preset
from simclr_cli.core.viz.preview_panels import (
    BOX_COLORS,
    flow,
    original_caption_items,
    original_panel,
    panel_pixels,
    view_caption_items,
)
from tests.core.viz.conftest import BLUE, RED, known_preview, make_preview, two_colour_image


def test_view_caption_items__name_the_drawn_parameters():
    params = ViewParams(
        crop=(3, 4, 25, 27),
        flip=True,
        color_jitter=True,
        brightness=1.214,
        contrast=0.83,
        saturation=1.1,
        hue=0.04,
        jitter_order=(3, 0, 2, 1),
        grayscale=True,
        blur_sigma=1.318,
        source_size=(32, 32),
    )
    assert view_caption_items(params, label="A", preset=Preset.imagenet) == [
        "view A",
        "crop 66%: 27x25 at 4,3",
        "flipped",
        "brightness 1.21",
        "contrast 0.83",
        "saturation 1.10",
        "hue +0.04",
        "grayscale",
        "blur sigma 1.32",
    ]


def test_original_caption_items__give_the_decoded_size(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    two_colour_image(folder / "one.png")
    # 8 px images are kept whole: training decodes them as they are.
    pair = make_preview(folder / "one.png", pairs=1, image_size=16).pairs[0]
    assert original_caption_items(pair) == ["one.png", "decoded 8x8 px", "boxes: A and B"]


def test_original_panel__the_decoded_source_with_both_boxes(tmp_path: Path):
    pair = known_preview(two_colour_image(tmp_path / "known.png")).pairs[0]
    panel = original_panel(pair, 16).convert("RGB")
    # Enlarged 2x: rows 0-5 red, 6-15 blue; both boxes cover the whole image, B's drawn last.
    assert panel.getpixel((0, 0)) == BOX_COLORS[1] and panel.getpixel((15, 15)) == BOX_COLORS[1]
    assert panel.getpixel((5, 4)) == RED and panel.getpixel((5, 8)) == BLUE


def test_panel_pixels__whole_enlargement_to_at_least_160():
    assert panel_pixels(32) == 160 and panel_pixels(224) == 224 and panel_pixels(50) == 200


def test_flow__lines_with_their_commas_fit_the_width():
    items = ["view A", "crop 61%: 27x25 at 4,3", "flipped", "brightness 1.21", "hue +0.04"]
    lines = flow(items, lambda text: len(text) <= 24)
    assert lines[0] == "view A" and all(len(line) <= 24 for line in lines)
    assert " ".join(lines[1:]) == ", ".join(items[1:])
    assert flow(["x", "a" * 40], lambda text: len(text) <= 10) == ["x", "aaaaaaa..."]
