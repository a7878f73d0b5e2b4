"""A procedurally generated image set for the demo and the tests: no download needed.

Each class is a shape (circle, square, triangle, cross, ring, stripes) drawn at a random place,
size and angle, in random colours on a noisy gradient background. Colour carries no class
information, so a model must learn shape to classify well, which is what SimCLR's colour
distortion teaches.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: The classes, in label order.
SHAPES = ("circle", "square", "triangle", "cross", "ring", "stripes")


def _colour(rng: np.random.Generator, lightness: float) -> tuple[int, int, int]:
    hue, saturation = rng.random(), 0.4 + 0.6 * rng.random()
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, saturation)
    return int(red * 255), int(green * 255), int(blue * 255)


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list[tuple]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * i / sides),
            cy + radius * math.sin(angle + 2 * math.pi * i / sides),
        )
        for i in range(sides)
    ]


def render_shape(shape: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """Draw one image of a class.

    Args:
        shape: One of ``SHAPES``.
        rng: Random generator for position, size, angle and colours.
        size: Side of the output in pixels.

    Returns:
        An RGB image of ``size`` x ``size``.
    """
    scale = 4  # Draw large and shrink, for smooth edges.
    side = size * scale
    dark = rng.random() < 0.5
    background = _colour(rng, 0.25 if dark else 0.75)
    foreground = _colour(rng, 0.75 if dark else 0.25)
    # A gradient plus noise, so that the background is texture rather than a flat colour.
    ramp = np.linspace(-1, 1, side)[None, :, None] * rng.uniform(-30, 30, size=(1, 1, 3))
    noise = rng.normal(0, 12, size=(side // 8, side // 8, 3)).repeat(8, 0).repeat(8, 1)
    pixels = np.clip(np.array(background)[None, None, :] + ramp + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    radius = side * rng.uniform(0.2, 0.34)
    cx = side / 2 + rng.uniform(-1, 1) * (side / 2 - radius)
    cy = side / 2 + rng.uniform(-1, 1) * (side / 2 - radius)
    angle = rng.uniform(0, 2 * math.pi)
    width = max(2, int(radius * 0.35))
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=foreground)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius * 1.15, 4, angle), fill=foreground)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius * 1.25, 3, angle), fill=foreground)
    elif shape == "cross":
        for offset in (0.0, math.pi / 2):
            dx, dy = math.cos(angle + offset) * radius, math.sin(angle + offset) * radius
            draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=foreground, width=width)
    elif shape == "ring":
        draw.ellipse(
            [cx - radius, cy - radius, cx + radius, cy + radius], outline=foreground, width=width
        )
    elif shape == "stripes":
        dx, dy = math.cos(angle), math.sin(angle)
        for k in range(-4, 5):
            ox, oy = -dy * k * side / 8, dx * k * side / 8
            draw.line(
                [
                    cx + ox - dx * side,
                    cy + oy - dy * side,
                    cx + ox + dx * side,
                    cy + oy + dy * side,
                ],
                fill=foreground,
                width=max(2, side // 24),
            )
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    image = image.filter(ImageFilter.GaussianBlur(radius=scale * 0.3))
    return image.resize((size, size), Image.Resampling.LANCZOS)


def generate_shapes_dataset(
    root: Path,
    *,
    images_per_class: int = 100,
    size: int = 32,
    seed: int = 0,
    classes: tuple[str, ...] = SHAPES,
) -> Path:
    """Write an image-folder dataset: ``root/<class>/<class>_00000.png``.

    Args:
        root: Folder to create (parents too).
        images_per_class: Images written for each class.
        size: Side of each image in pixels.
        seed: Seed of the generator; the same seed writes the same images.
        classes: Which shapes to draw.

    Returns:
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for shape in classes:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(images_per_class):
            render_shape(shape, rng, size).save(folder / f"{shape}_{index:05d}.png")
    return root
