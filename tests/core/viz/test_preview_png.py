"""The ``visualize-aug`` grid as a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from simclr_cli.core.errors import DataError
from simclr_cli.core.viz.preview_png import grid_layout, render_grid, save_grid
from tests.core.viz.conftest import make_preview


def test_save_grid__png_size_and_pixels(shapes_dir: Path, tmp_path: Path):
    preview = make_preview(shapes_dir, pairs=2)
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
        save_grid(make_preview(shapes_dir, pairs=1), tmp_path / "grid.jpg")
