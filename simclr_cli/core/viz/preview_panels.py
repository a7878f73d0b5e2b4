"""The pieces of the ``visualize-aug`` grid shared by the terminal and the PNG.

Captions (the drawn parameters as short phrases, wrapped to a width) and square panels (the
decoded source with both crop boxes, and the two views), the same words and pictures in the
terminal (``preview_terminal``) and in the PNG (``preview_png``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from PIL import Image, ImageDraw

from ..augment.reference import ViewParams
from ..choices import Preset
from .preview import AugmentedPair

#: Colours of view A's and view B's crop boxes and labels (PNG and 24-bit terminal).
BOX_COLORS = ((240, 130, 20), (30, 140, 240))
#: Smallest panel side in the PNG: small views are enlarged by a whole factor up to it.
MIN_PANEL_PIXELS = 160


# ---------------------------------------------------------------------------------------------
# Captions: the same words in the terminal and in the PNG.


def view_caption_items(params: ViewParams, *, label: str, preset: Preset) -> list[str]:
    """The parameters of one view as short phrases, the first naming the view.

    Example: ``["view A", "crop 61%: 27x25 at 4,3", "flipped", "brightness 1.21", ...]``.
    """
    top, left, height, width = params.crop
    items = [f"view {label}", f"crop {params.crop_scale:.0%}: {width}x{height} at {left},{top}"]
    items.append("flipped" if params.flip else "not flipped")
    if params.color_jitter:
        items += [
            f"brightness {params.brightness:.2f}",
            f"contrast {params.contrast:.2f}",
            f"saturation {params.saturation:.2f}",
            f"hue {params.hue:+.2f}",
        ]
    else:
        items.append("no colour jitter")
    items.append("grayscale" if params.grayscale else "no grayscale")
    if preset is Preset.imagenet:
        items.append(
            "no blur" if params.blur_sigma is None else f"blur sigma {params.blur_sigma:.2f}"
        )
    return items


def original_caption_items(pair: AugmentedPair) -> list[str]:
    """File name, the size training decodes it to, and which box is which view."""
    height, width = pair.source.shape[-2:]
    source_height, source_width = pair.params[0].source_size
    if (source_height, source_width) != (height, width):
        # The views were cut at decode from the full-resolution photo.
        return [
            pair.path.name,
            f"{source_width}x{source_height} px, cut at decode",
            "boxes: A and B",
        ]
    return [pair.path.name, f"decoded {width}x{height} px", "boxes: A and B"]


def flow(items: list[str], fits: Callable[[str], bool]) -> list[str]:
    """Pack phrases into lines, joined by ", ", starting a new line where the next would not fit.

    The first phrase (the label) stands on a line of its own. A phrase too long for a line is
    cut short with "...".
    """
    lines = [_shorten(items[0], fits)] if items else []
    current = ""
    rest = items[1:]
    for index, item in enumerate(rest):
        # Room is kept for the comma that ends a line when more phrases follow.
        comma = "," if index < len(rest) - 1 else ""

        def fits_with_comma(text: str, comma: str = comma) -> bool:
            return fits(text + comma)

        candidate = f"{current}, {item}" if current else item
        if fits_with_comma(candidate):
            current = candidate
        else:
            if current:
                lines.append(current + ",")
            current = _shorten(item, fits_with_comma)
    if current:
        lines.append(current)
    return lines


def _shorten(text: str, fits: Callable[[str], bool]) -> str:
    if fits(text):
        return text
    while text and not fits(text + "..."):
        text = text[:-1]
    return text + "..."


# ---------------------------------------------------------------------------------------------
# Pictures: the original with its crop boxes, and the views, fitted into square panels.


def _to_pil(view: torch.Tensor) -> Image.Image:
    return Image.fromarray(view.permute(1, 2, 0).contiguous().numpy())


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # Enlarging keeps the pixels square and sharp, as the network sees them; shrinking averages.
    if size[0] >= image.width and size[1] >= image.height:
        return image.resize(size, Image.Resampling.NEAREST)
    return image.resize(size, Image.Resampling.BOX)


def original_panel(pair: AugmentedPair, side: int) -> Image.Image:
    """The decoded source fitted into a transparent square of ``side`` with both crop boxes."""
    height, width = pair.source.shape[-2:]
    scale = side / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    panel = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    offset = ((side - fitted[0]) // 2, (side - fitted[1]) // 2)
    panel.paste(_resize(_to_pil(pair.source), fitted).convert("RGBA"), offset)
    draw = ImageDraw.Draw(panel)
    line = max(1, side // 100)
    for params, color in zip(pair.params, BOX_COLORS, strict=True):
        top, left, crop_height, crop_width = params.crop
        # Boxes are in pixels of the source they were cut from (the full-resolution photo for
        # views cut at decode), which the shown source may be a reduction of.
        source_width = params.source_size[1]
        box_scale = scale if source_width == width else scale * width / source_width
        box = [
            offset[0] + math.floor(left * box_scale),
            offset[1] + math.floor(top * box_scale),
            offset[0] + math.ceil((left + crop_width) * box_scale) - 1,
            offset[1] + math.ceil((top + crop_height) * box_scale) - 1,
        ]
        draw.rectangle(box, outline=(*color, 255), width=line)
    return panel


def view_panel(view: torch.Tensor, side: int) -> Image.Image:
    """A uint8 view (3, S, S) as a ``side`` x ``side`` RGBA image."""
    return _resize(_to_pil(view), (side, side)).convert("RGBA")


def pair_panels(pair: AugmentedPair, side: int) -> list[Image.Image]:
    """The three panels of one row: original with boxes, view A, view B."""
    return [original_panel(pair, side)] + [view_panel(view, side) for view in pair.views]


def panel_pixels(image_size: int) -> int:
    """Side of a panel in the PNG: the view size, enlarged by a whole factor to >= 160 px."""
    return image_size * max(1, math.ceil(MIN_PANEL_PIXELS / image_size))


def pair_caption_items(pair: AugmentedPair, preset: Preset) -> list[list[str]]:
    """The phrases of one row's three captions: the original's, view A's and view B's."""
    items = [original_caption_items(pair)]
    items += [
        view_caption_items(params, label=label, preset=preset)
        for params, label in zip(pair.params, "AB", strict=True)
    ]
    return items
