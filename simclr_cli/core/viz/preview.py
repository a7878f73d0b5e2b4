"""``visualize-aug``: the two augmented views of some images, with the parameters drawn for each.

Before hours of compute, a user looks at what the network will see. The views come from
``ViewTransform``, the transform training uses, so the preview cannot drift from training; each
view's ``ViewParams`` become its caption. The same grid (original with both crop boxes, view A,
view B, per image) is drawn in a terminal by ``render_terminal`` or written as a PNG at full
resolution by ``save_grid``.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image, ImageDraw, ImageFont

from ..augment.presets import DEFAULT_COLOR_STRENGTH, resolve_preset
from ..augment.reference import ViewParams, ViewTransform
from ..config import Preset, Protocol, VisualizeConfig
from ..data.files import find_images, load_rgb
from ..errors import DataError, DisplayError, ImageDecodeError, ModelFileError
from ..model.files import atomic_write, read_header, read_metadata
from . import terminal

#: Image size of ``pretrain`` when neither a flag nor a model gives one.
DEFAULT_IMAGE_SIZE = 224
#: Step of the ``+`` and ``-`` keys, and the range of colour strength they stay in.
STRENGTH_STEP = 0.1
STRENGTH_RANGE = (0.0, 2.0)
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
#: Colours of view A's and view B's crop boxes and labels (PNG and 24-bit terminal).
BOX_COLORS = ((240, 130, 20), (30, 140, 240))
#: The same in the 16 standard terminal colours (yellow, blue), understood everywhere.
BOX_ANSI = ("33", "34")
#: Smallest panel side in the PNG: small views are enlarged by a whole factor up to it.
MIN_PANEL_PIXELS = 160
#: Most images tried in a folder to find ``pairs`` readable ones.
MAX_TRIES = 200


@dataclass(frozen=True)
class AugmentationSettings:
    """The augmentation being previewed.

    Attributes:
        preset: ``imagenet`` or ``cifar`` (never ``auto``).
        color_strength: Strength s of the colour distortion.
        image_size: Side of the views in pixels.
        model: The model file these settings came from, if any.
    """

    preset: Preset
    color_strength: float
    image_size: int
    model: Path | None = None

    def describe(self) -> str:
        """One line such as ``preset cifar, colour strength 0.5, 32 px views``."""
        text = (
            f"preset {self.preset.value}, colour strength {_strength(self.color_strength)}, "
            f"{self.image_size} px views"
        )
        return text + (f" (from {self.model.name})" if self.model is not None else "")


@dataclass
class AugmentedPair:
    """One image and its two views.

    Attributes:
        path: The image file.
        image: The decoded image.
        views: Views A and B, uint8 (3, S, S).
        params: The parameters drawn for views A and B.
        seeds: Seeds of the generators that drew views A and B: ``ViewTransform`` with
            ``torch.Generator().manual_seed(seed)`` and the same settings draws them again.
    """

    path: Path
    image: Image.Image
    views: tuple[torch.Tensor, torch.Tensor]
    params: tuple[ViewParams, ViewParams]
    seeds: tuple[int, int] = (0, 0)


@dataclass
class AugmentationPreview:
    """Images, the augmentation settings, and the views drawn for them; redrawable.

    ``draw`` makes new views; ``change_strength`` and ``next_preset`` change the settings and
    draw the same views again (each view has a generator of its own, and the crop and flip are
    drawn first), so the crops stay put and only the colours or the blur change.

    Attributes:
        images: Paths and decoded images, one per pair (a single file repeats).
        settings: The augmentation.
        seed: Seed of the first draw.
        skipped: Files of the folder that could not be decoded and were passed over.
        pairs: The current views.
        draws: How many times new views were drawn.
    """

    images: list[tuple[Path, Image.Image]]
    settings: AugmentationSettings
    seed: int = 0
    skipped: list[Path] = field(default_factory=list)
    pairs: list[AugmentedPair] = field(default_factory=list)
    draws: int = 0

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)
        self._view_seeds = self._new_seeds()
        if not self.pairs:
            self._draw_views()

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: settings, skipped files, and each pair's parameters and seeds."""
        return {
            "preset": self.settings.preset.value,
            "color_strength": self.settings.color_strength,
            "image_size": self.settings.image_size,
            "model": None if self.settings.model is None else str(self.settings.model),
            "seed": self.seed,
            "skipped": [str(path) for path in self.skipped],
            "pairs": [
                {
                    "path": str(pair.path),
                    "views": [params.to_dict() for params in pair.params],
                    "seeds": list(pair.seeds),
                }
                for pair in self.pairs
            ],
        }

    def _new_seeds(self) -> list[int]:
        count = 2 * len(self.images)
        return torch.randint(0, 2**62, (count,), generator=self._generator).tolist()

    def _draw_views(self) -> None:
        self.pairs = []
        for index, (path, image) in enumerate(self.images):
            seeds = (self._view_seeds[2 * index], self._view_seeds[2 * index + 1])
            drawn = []
            for seed in seeds:
                transform = ViewTransform(
                    self.settings.preset,
                    image_size=self.settings.image_size,
                    color_strength=self.settings.color_strength,
                    generator=torch.Generator().manual_seed(seed),
                )
                drawn.append(transform.view(image))
            views = (drawn[0][0], drawn[1][0])
            params = (drawn[0][1], drawn[1][1])
            self.pairs.append(AugmentedPair(path, image, views, params, seeds))

    def draw(self) -> None:
        """Draw new views of the same images."""
        self._view_seeds = self._new_seeds()
        self.draws += 1
        self._draw_views()

    def change_strength(self, delta: float) -> None:
        """Change the colour strength by ``delta`` (kept in [0, 2]) and redraw the same views."""
        low, high = STRENGTH_RANGE
        strength = round(min(high, max(low, self.settings.color_strength + delta)), 2)
        self.settings = AugmentationSettings(
            self.settings.preset, strength, self.settings.image_size, self.settings.model
        )
        self._draw_views()

    def next_preset(self) -> None:
        """Switch between ``imagenet`` and ``cifar`` and redraw the same views."""
        preset = Preset.cifar if self.settings.preset is Preset.imagenet else Preset.imagenet
        self.settings = AugmentationSettings(
            preset, self.settings.color_strength, self.settings.image_size, self.settings.model
        )
        self._draw_views()


def _strength(value: float) -> str:
    # "1.0" rather than "1", but "0.55" as given.
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def resolve_settings(config: VisualizeConfig) -> AugmentationSettings:
    """Combine flags, the model's metadata and the defaults of ``pretrain``, in that order.

    Raises:
        ModelFileError: When the model file is not a simclr model or lacks augmentation metadata.
    """
    preset, strength, size = config.preset, config.color_strength, config.image_size
    if config.model is not None:
        metadata = read_metadata(config.model)
        raw = read_header(config.model).get("__metadata__") or {}
        missing = [key for key in ("preset", "color_strength", "image_size") if key not in raw]
        if missing or metadata.preset not in (Preset.imagenet.value, Preset.cifar.value):
            raise ModelFileError(
                f"{config.model} records no augmentation settings (missing "
                f"{', '.join(missing) or 'preset'}); give --preset, --color-strength and "
                "--image-size instead of --model"
            )
        preset = preset or Preset(metadata.preset)
        strength = metadata.color_strength if strength is None else strength
        size = metadata.image_size if size is None else size
    size = DEFAULT_IMAGE_SIZE if size is None else size
    resolved = resolve_preset(preset or Preset.auto, image_size=size)
    strength = DEFAULT_COLOR_STRENGTH[resolved] if strength is None else strength
    return AugmentationSettings(resolved, float(strength), int(size), config.model)


def load_images(
    source: Path, *, count: int, seed: int
) -> tuple[list[tuple[Path, Image.Image]], list[Path]]:
    """Decode the images to preview: ``count`` seeded picks from a folder, or one file repeated.

    Args:
        source: An image file or a folder (searched recursively).
        count: How many images (pairs) to return.
        seed: Seed of the pick.

    Returns:
        ``count`` (path, image) pairs (fewer if the folder has fewer images), and the files that
        were passed over because they could not be decoded.

    Raises:
        DataError: When the path is missing, the folder holds no images, or none decodes.
        ImageDecodeError: When a single file given is not a readable image.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist; give an image file or a folder of images")
    if source.is_file():
        image = load_rgb(source)
        return [(source, image)] * count, []
    paths = find_images(source)
    order = random.Random(seed).sample(paths, len(paths))
    chosen: list[tuple[Path, Image.Image]] = []
    skipped: list[Path] = []
    for path in order[:MAX_TRIES]:
        try:
            chosen.append((path, load_rgb(path)))
        except ImageDecodeError:
            skipped.append(path)
        if len(chosen) == count:
            break
    if not chosen:
        raise DataError(
            f"none of the {len(skipped)} images tried in {source} could be decoded; "
            "check the files (for example with an image viewer)"
        )
    return chosen, skipped


def create_augmentation_preview(*, config: VisualizeConfig) -> AugmentationPreview:
    """Load the images and draw their views: the core call behind ``simclr visualize-aug``.

    Args:
        config: Input, number of pairs, augmentation settings or model, seed.

    Returns:
        The preview, ready to render or save.

    Raises:
        ConfigError, DataError, ImageDecodeError, ModelFileError: On bad input.
    """
    config.validate()
    settings = resolve_settings(config)
    images, skipped = load_images(config.input, count=config.pairs, seed=config.seed)
    return AugmentationPreview(images=images, settings=settings, seed=config.seed, skipped=skipped)


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
    """File name, size, and which box is which view."""
    width, height = pair.image.size
    return [pair.path.name, f"{width}x{height} px", "boxes: A and B"]


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
    """The original fitted into a transparent ``side`` x ``side`` square with both crop boxes."""
    width, height = pair.image.size
    scale = side / max(width, height)
    fitted = (max(1, round(width * scale)), max(1, round(height * scale)))
    panel = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    offset = ((side - fitted[0]) // 2, (side - fitted[1]) // 2)
    panel.paste(_resize(pair.image, fitted).convert("RGBA"), offset)
    draw = ImageDraw.Draw(panel)
    line = max(1, side // 100)
    for params, color in zip(pair.params, BOX_COLORS, strict=True):
        top, left, crop_height, crop_width = params.crop
        box = [
            offset[0] + math.floor(left * scale),
            offset[1] + math.floor(top * scale),
            offset[0] + math.ceil((left + crop_width) * scale) - 1,
            offset[1] + math.ceil((top + crop_height) * scale) - 1,
        ]
        draw.rectangle(box, outline=(*color, 255), width=line)
    return panel


def view_panel(view: torch.Tensor, side: int) -> Image.Image:
    """A uint8 view (3, S, S) as a ``side`` x ``side`` RGBA image."""
    return _resize(_to_pil(view), (side, side)).convert("RGBA")


def pair_panels(pair: AugmentedPair, side: int) -> list[Image.Image]:
    """The three panels of one row: original with boxes, view A, view B."""
    return [original_panel(pair, side)] + [view_panel(view, side) for view in pair.views]


# ---------------------------------------------------------------------------------------------
# The terminal.


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

    items = [original_caption_items(pair)]
    items += [
        view_caption_items(params, label=label, preset=preset)
        for params, label in zip(pair.params, "AB", strict=True)
    ]
    return [flow(column, fits) for column in items]


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
# The PNG.


def panel_pixels(image_size: int) -> int:
    """Side of a panel in the PNG: the view size, enlarged by a whole factor to >= 160 px."""
    return image_size * max(1, math.ceil(MIN_PANEL_PIXELS / image_size))


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

    rows = []
    for pair in preview.pairs:
        items = [original_caption_items(pair)]
        items += [
            view_caption_items(params, label=label, preset=preview.settings.preset)
            for params, label in zip(pair.params, "AB", strict=True)
        ]
        rows.append([flow(column, fits) for column in items])
    return rows


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


def _file_mode() -> int:
    # The mode a newly created file gets from the user's umask, which can only be read by
    # setting it.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_grid(preview: AugmentationPreview, path: Path) -> Image.Image:
    """Write the grid as a PNG, atomically; returns the image written.

    Args:
        preview: The views and their parameters, from ``create_augmentation_preview``.
        path: The ``.png`` file to write.

    Raises:
        DataError: When the file cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"--save {path}: give a file name ending in .png")
    grid = render_grid(preview)
    try:
        atomic_write(path, lambda temporary: grid.save(temporary, format="PNG", optimize=True))
        # The temporary file behind the atomic write is private (0600); a picture is not.
        os.chmod(path, _file_mode())
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None
    return grid


# ---------------------------------------------------------------------------------------------
# Interactive mode.

#: Where ``s`` saves in interactive mode when no ``--save`` was given.
DEFAULT_SAVE_PATH = Path("visualize-aug.png")


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
        return f"colour strength {_strength(preview.settings.color_strength)}"
    if key in ("-", "_"):
        preview.change_strength(-STRENGTH_STEP)
        return f"colour strength {_strength(preview.settings.color_strength)}"
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
    from .interactive import CLEAR, run_key_loop

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
