"""The augmentation preview: settings, images, captions, terminal drawing and the PNG grid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from simclr_cli.core.augment.reference import ViewParams, apply_view_params
from simclr_cli.core.config import Preset, Protocol, VisualizeConfig
from simclr_cli.core.errors import DataError, DisplayError, ImageDecodeError, ModelFileError
from simclr_cli.core.model.files import read_header
from simclr_cli.core.viz.preview import (
    BOX_COLORS,
    AugmentationPreview,
    AugmentationSettings,
    AugmentedPair,
    TerminalLayout,
    create_augmentation_preview,
    fit_layout,
    flow,
    grid_layout,
    handle_key,
    minimum_columns,
    render_grid,
    render_terminal,
    resolve_settings,
    save_grid,
    view_caption_items,
)

RED, BLUE = (200, 30, 60), (20, 40, 220)
CELL = re.compile(r"\x1b\[38;2;(\d+);(\d+);(\d+)m\x1b\[48;2;(\d+);(\d+);(\d+)m▀")


def _two_colour_image(path: Path) -> Path:
    """8x8: three red rows over five blue ones."""
    image = Image.new("RGB", (8, 8), BLUE)
    image.paste(Image.new("RGB", (8, 3), RED), (0, 0))
    image.save(path)
    return path


def _identity_params(size: tuple[int, int]) -> ViewParams:
    return ViewParams(
        crop=(0, 0, *size),
        flip=False,
        color_jitter=False,
        brightness=1.0,
        contrast=1.0,
        saturation=1.0,
        hue=0.0,
        jitter_order=(0, 1, 2, 3),
        grayscale=False,
        blur_sigma=None,
        source_size=size,
    )


def _known_preview(path: Path) -> AugmentationPreview:
    """A preview whose views are the image itself: full crops, no colour change."""
    image = Image.open(path).convert("RGB")
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    params = _identity_params((8, 8))
    view = apply_view_params(pixels, params, image_size=8)
    pair = AugmentedPair(path, image, (view, view.clone()), (params, params))
    settings = AugmentationSettings(Preset.cifar, 0.5, 8)
    return AugmentationPreview(images=[(path, image)], settings=settings, pairs=[pair])


def _preview(source: Path, **changes: object) -> AugmentationPreview:
    settings: dict[str, object] = {"input": source, "pairs": 2, "image_size": 32, "seed": 3}
    settings.update(changes)
    return create_augmentation_preview(config=VisualizeConfig(**settings))


def test_render_terminal__truecolor_cells_of_a_known_image(tmp_path: Path):
    preview = _known_preview(_two_colour_image(tmp_path / "known.png"))
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
    preview = _known_preview(_two_colour_image(tmp_path / "known.png"))
    palette = render_terminal(preview, protocol=Protocol.color256, columns=76)
    assert "\x1b[38;5;" in palette and "\x1b[38;2;" not in palette
    kitty = render_terminal(preview, protocol=Protocol.kitty, columns=76)
    assert kitty.count("\x1b_Ga=T,f=100,c=76,q=2") == 1  # one picture per pair, 76 cells wide
    iterm = render_terminal(preview, protocol=Protocol.iterm, columns=76)
    assert iterm.count("\x1b]1337;File=") == 1 and ";width=76;" in iterm


def test_render_terminal__fits_width_and_refuses_a_narrow_terminal(tmp_path: Path):
    preview = _known_preview(_two_colour_image(tmp_path / "known.png"))
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
    preview = _preview(shapes_dir, pairs=4)
    text = render_terminal(preview, protocol=Protocol.truecolor, columns=100, rows=40)
    assert "2 of 4 pairs fit" in text.split("\n")[0]
    assert len(text.split("\n")) <= 40


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


def test_render_terminal__captions_match_the_views_parameters(shapes_dir: Path):
    preview = _preview(shapes_dir, preset="imagenet", color_strength=1.0, pairs=3)
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


def test_preview__views_are_the_training_transform_for_their_seeds(shapes_dir: Path):
    from simclr_cli.core.augment.reference import ViewTransform

    preview = _preview(shapes_dir, preset="cifar", color_strength=0.5, pairs=2)
    for pair in preview.pairs:
        for view, params, seed in zip(pair.views, pair.params, pair.seeds, strict=True):
            generator = torch.Generator().manual_seed(seed)
            transform = ViewTransform(
                "cifar", image_size=32, color_strength=0.5, generator=generator
            )
            expected_view, expected_params = transform.view(pair.image)
            assert params == expected_params and torch.equal(view, expected_view)


def test_preview__strength_and_preset_keys_keep_the_crops(shapes_dir: Path, tmp_path: Path):
    preview = _preview(shapes_dir, preset="cifar", color_strength=0.5)
    crops = [p.crop for pair in preview.pairs for p in pair.params]
    assert handle_key(preview, "+", save_path=tmp_path / "g.png") == "colour strength 0.6"
    assert [p.crop for pair in preview.pairs for p in pair.params] == crops
    assert handle_key(preview, "p", save_path=tmp_path / "g.png") == "preset imagenet"
    assert preview.settings.preset is Preset.imagenet
    assert [p.crop for pair in preview.pairs for p in pair.params] == crops
    assert any(p.blur_sigma is not None for pair in preview.pairs for p in pair.params)
    assert handle_key(preview, " ", save_path=tmp_path / "g.png").startswith("new views")
    assert [p.crop for pair in preview.pairs for p in pair.params] != crops
    assert handle_key(preview, "s", save_path=tmp_path / "g.png").startswith("saved")
    assert (tmp_path / "g.png").exists()
    for _ in range(30):
        handle_key(preview, "-", save_path=tmp_path / "g.png")
    assert preview.settings.color_strength == 0.0


def test_save_grid__png_size_and_pixels(shapes_dir: Path, tmp_path: Path):
    preview = _preview(shapes_dir, pairs=2)
    path = tmp_path / "grid.png"
    save_grid(preview, path)
    layout = grid_layout(preview)
    with Image.open(path) as image:
        assert image.format == "PNG"
        # 32 px views are enlarged 5x to 160 px panels; three panels and four 8 px margins.
        assert layout.panel == 160 and image.size == (3 * 160 + 4 * 8, layout.height)
        # The first pixel of view A, enlarged 5x, sits at the top left of the second panel.
        view = preview.pairs[0].views[0]
        x, y = 8 + 160 + 8 + 2, layout.header + 8 + 2
        assert image.convert("RGB").getpixel((x, y)) == tuple(view[:, 0, 0].tolist())
    assert render_grid(preview).size == (layout.width, layout.height)


def test_save_grid__refuses_other_suffixes(shapes_dir: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"\.png"):
        save_grid(_preview(shapes_dir, pairs=1), tmp_path / "grid.jpg")


def test_create_augmentation_preview__single_file_repeats_with_new_views(tmp_path: Path):
    path = _two_colour_image(tmp_path / "one.png")
    preview = _preview(path, pairs=3, image_size=16)
    assert [pair.path for pair in preview.pairs] == [path] * 3
    assert len({pair.params for pair in preview.pairs}) == 3


def test_create_augmentation_preview__folder_pick_is_seeded(shapes_dir: Path):
    first = [pair.path for pair in _preview(shapes_dir, pairs=3, seed=5).pairs]
    again = [pair.path for pair in _preview(shapes_dir, pairs=3, seed=5).pairs]
    other = [pair.path for pair in _preview(shapes_dir, pairs=3, seed=6).pairs]
    assert first == again and first != other and len(set(first)) == 3


def test_create_augmentation_preview__skips_undecodable_files_in_a_folder(tmp_path: Path):
    _two_colour_image(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    preview = _preview(tmp_path, pairs=2)
    assert [pair.path.name for pair in preview.pairs] == ["good.png"]
    assert [path.name for path in preview.skipped] == ["bad.jpg"]


def test_create_augmentation_preview__bad_inputs(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        _preview(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        _preview(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageDecodeError, match="not an image"):
        _preview(tmp_path / "notes.txt")


def test_resolve_settings__flags_then_model_then_defaults(trained_model: Path):
    from_model = resolve_settings(VisualizeConfig(input=Path("."), model=trained_model))
    assert (from_model.preset, from_model.image_size) == (Preset.cifar, 32)
    assert from_model.color_strength == 0.5
    overridden = resolve_settings(
        VisualizeConfig(input=Path("."), model=trained_model, color_strength=1.5)
    )
    assert overridden.color_strength == 1.5 and overridden.preset is Preset.cifar
    plain = resolve_settings(VisualizeConfig(input=Path(".")))
    assert (plain.preset, plain.image_size, plain.color_strength) == (Preset.imagenet, 224, 1.0)


def test_resolve_settings__model_without_augmentation_metadata(trained_model: Path, tmp_path: Path):
    raw = read_header(trained_model)["__metadata__"]
    stripped = {k: v for k, v in raw.items() if k not in ("preset", "color_strength")}
    path = tmp_path / "old.safetensors"
    save_file({"backbone.x": torch.zeros(1)}, str(path), metadata=stripped)
    with pytest.raises(ModelFileError, match="records no augmentation settings"):
        resolve_settings(VisualizeConfig(input=Path("."), model=path))


def test_flow__lines_with_their_commas_fit_the_width():
    items = ["view A", "crop 61%: 27x25 at 4,3", "flipped", "brightness 1.21", "hue +0.04"]
    lines = flow(items, lambda text: len(text) <= 24)
    assert lines[0] == "view A" and all(len(line) <= 24 for line in lines)
    assert " ".join(lines[1:]) == ", ".join(items[1:])
    assert flow(["x", "a" * 40], lambda text: len(text) <= 10) == ["x", "aaaaaaa..."]
