"""The ``visualize-aug`` grid as a PNG at full resolution: a header, then per pair its three
panels (the decoded source with both crop boxes, view A, view B) and their captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .._io import check_png_path, write_png
from .preview import AugmentationPreview
from .preview_panels import BOX_COLORS, flow, pair_caption_items, pair_panels, panel_pixels


@dataclass(frozen=True)
class GridLayout:
    """Pixel geometry of the PNG grid.

    Attributes:
        panel: Side of each square panel.
        margin: Space around and between panels.
        line_height: Height of one caption line.
        caption_lines: Lines of caption under each row (the longest of the row's captions).
    """

    panel: int
    margin: int
    line_height: int
    caption_lines: tuple[int, ...]

    @property
    def width(self) -> int:
        """Width of the PNG."""
        return 3 * self.panel + 4 * self.margin

    @property
    def header(self) -> int:
        """Height of the header above the first row."""
        return self.margin + self.line_height

    def row_height(self, index: int) -> int:
        """Height of row ``index``: margin, panel, gap, caption."""
        return self.margin + self.panel + 4 + self.caption_lines[index] * self.line_height

    @property
    def height(self) -> int:
        """Height of the PNG."""
        rows = sum(self.row_height(i) for i in range(len(self.caption_lines)))
        return self.header + rows + self.margin


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def grid_captions(
    preview: AugmentationPreview, panel: int, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> list[list[list[str]]]:
    """Caption lines of every row and column, wrapped to the panel's width in pixels."""

    def fits(text: str) -> bool:
        return font.getlength(text) <= panel

    return [
        [flow(column, fits) for column in pair_caption_items(pair, preview.settings.preset)]
        for pair in preview.pairs
    ]


def _grid_plan(
    preview: AugmentationPreview,
) -> tuple[GridLayout, ImageFont.FreeTypeFont | ImageFont.ImageFont, list[list[list[str]]]]:
    panel = panel_pixels(preview.settings.image_size)
    font_size = max(12, min(18, panel // 14))
    font = _font(font_size)
    captions = grid_captions(preview, panel, font)
    layout = GridLayout(
        panel=panel,
        margin=max(8, panel // 20),
        line_height=font_size + 4,
        caption_lines=tuple(max(len(lines) for lines in row) for row in captions),
    )
    return layout, font, captions


def grid_layout(preview: AugmentationPreview) -> GridLayout:
    """The pixel geometry ``render_grid`` uses for this preview."""
    return _grid_plan(preview)[0]


def render_grid(preview: AugmentationPreview) -> Image.Image:
    """The preview as one RGB image: a header, then per image its panels and captions.

    Views keep every pixel: small ones are enlarged by a whole factor, never shrunk.

    Args:
        preview: The views and their parameters, from ``create_augmentation_preview``.

    Returns:
        The grid as an RGB image.
    """
    layout, font, captions = _grid_plan(preview)
    panel = layout.panel
    grid = Image.new("RGB", (layout.width, layout.height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    header = f"simclr visualize-aug: {preview.settings.describe()}, seed {preview.seed}"
    draw.text((layout.margin, layout.margin // 2), header, fill=(20, 20, 20), font=font)
    top = layout.header
    for index, (pair, row_captions) in enumerate(zip(preview.pairs, captions, strict=True)):
        y = top + layout.margin
        for column, panel_image in enumerate(pair_panels(pair, panel)):
            x = layout.margin + column * (panel + layout.margin)
            grid.paste(panel_image, (x, y), panel_image)
            for line_index, text in enumerate(row_captions[column]):
                color = BOX_COLORS[column - 1] if column > 0 and line_index == 0 else (40, 40, 40)
                position = (x, y + panel + 4 + line_index * layout.line_height)
                draw.text(position, text, fill=color, font=font)
        top += layout.row_height(index)
    return grid


def save_grid(preview: AugmentationPreview, path: Path) -> Image.Image:
    """Write the grid as a PNG, atomically; returns the image written.

    Args:
        preview: The views and their parameters, from ``create_augmentation_preview``.
        path: The ``.png`` file to write.

    Raises:
        DataError: When ``path`` does not end in .png or the file cannot be written.
    """
    path = check_png_path(path, flag="--save")
    grid = render_grid(preview)
    write_png(grid, path)
    return grid
