"""A 2-D map of embeddings with image thumbnails: ``simclr embed ... --map map.png``.

The embeddings (N, D) are projected to (N, 2), by PCA (the two leading principal components,
from an SVD of the centred rows) or by t-SNE (van der Maaten and Hinton, 2008; scikit-learn's,
when installed). Each image is then drawn as a thumbnail at its point, over axes with ticks, so
that similar images visibly sit together. When the images come from several sub-folders (class
folders, typically) each thumbnail gets a frame in its folder's colour and a legend names them.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from .._io import check_png_path, write_png
from ..data.files import ImageSource, open_source
from ..data.shards import ShardMember, source_of
from ..errors import ConfigError, DataError
from ..progress import ProgressCallback, ProgressEvent, null_progress
from .plots import (
    AXIS_COLOR,
    BACKGROUND,
    GRID_COLOR,
    TEXT_COLOR,
    format_tick,
    load_font,
    nice_ticks,
)

#: Frame colours of up to 20 folders (the "tab20" palette, darker shades first).
FOLDER_COLORS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip
#: Fewest images for which ``auto`` picks t-SNE; below it the neighbourhoods are too small.
TSNE_MIN_IMAGES = 50


class MapMethod(str, enum.Enum):
    """How embeddings are projected to 2-D."""

    auto = "auto"
    pca = "pca"
    tsne = "tsne"


@dataclass
class EmbeddingMap:
    """A projected set of embeddings and its picture.

    Attributes:
        coordinates: Array (N, 2), float32, one point per image.
        method: The projection used (``pca`` or ``tsne``).
        image: The rendered map (RGB).
        labels: Folder name of each image (used for the frame colours).
    """

    coordinates: np.ndarray
    method: str
    image: Image.Image
    labels: list[str]


def sklearn_available() -> bool:
    """Whether scikit-learn can be imported (for t-SNE)."""
    return importlib.util.find_spec("sklearn") is not None


def resolve_map_method(method: MapMethod | str, *, count: int) -> MapMethod:
    """Turn ``auto`` into ``tsne`` (scikit-learn installed, enough images) or ``pca``.

    Raises:
        ConfigError: When t-SNE is asked for without scikit-learn, or for fewer than 5 images.
    """
    method = MapMethod(method)
    if method is MapMethod.auto:
        return MapMethod.tsne if sklearn_available() and count >= TSNE_MIN_IMAGES else MapMethod.pca
    if method is MapMethod.tsne:
        if not sklearn_available():
            raise ConfigError(
                "--map-method tsne needs scikit-learn: pip install scikit-learn, or use "
                "--map-method pca",
                flag="--map-method",
            )
        if count < 5:
            raise ConfigError(
                f"--map-method tsne needs at least 5 images, got {count}; use --map-method pca",
                flag="--map-method",
            )
    return method


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """Project rows onto their two leading principal components.

    Args:
        embeddings: Array (N, D).

    Returns:
        Array (N, 2), float32; each component's sign is fixed so that its largest loading is
        positive, which makes the map the same from run to run. With a single image, (1, 2) zeros.
    """
    rows = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    centred = rows - rows.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    components = right[:2]
    if components.shape[0] < 2:  # Fewer than two rows or one dimension: pad with zeros.
        components = torch.cat([components, torch.zeros(2 - components.shape[0], rows.shape[1])])
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * torch.where(signs == 0, 1.0, signs)
    return (centred @ components.T).float().numpy()


def tsne_2d(embeddings: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """t-SNE of the rows (scikit-learn), on cosine distances as the embeddings are compared.

    Returns:
        Array (N, 2), float32.
    """
    from sklearn.manifold import TSNE

    count = embeddings.shape[0]
    tsne = TSNE(
        n_components=2,
        perplexity=float(min(30.0, max(2.0, (count - 1) / 3))),
        metric="cosine",
        init="pca",
        random_state=seed,
    )
    return tsne.fit_transform(np.asarray(embeddings, dtype=np.float32)).astype(np.float32)


def project_2d(
    embeddings: np.ndarray, *, method: MapMethod | str = MapMethod.auto, seed: int = 0
) -> tuple[np.ndarray, MapMethod]:
    """Project embeddings (N, D) to (N, 2) by ``method``; returns the points and the method used."""
    used = resolve_map_method(method, count=embeddings.shape[0])
    points = tsne_2d(embeddings, seed=seed) if used is MapMethod.tsne else pca_2d(embeddings)
    return points, used


def folder_labels(paths: Sequence[ImageSource]) -> list[str]:
    """The parent folder name of each path (what a class folder layout calls its label).

    For a member of a tar shard, the folder of its name inside the shard.
    """
    return [
        Path(p.name).parent.name if isinstance(p, ShardMember) else Path(str(p)).parent.name
        for p in paths
    ]


def load_thumbnail(path: ImageSource | str, size: int) -> Image.Image:
    """The image shrunk to fit a ``size`` square (aspect ratio kept).

    Args:
        path: An image file, a shard member, or the name of one (``shard.tar:cat/0001.jpg``,
            as an index lists it).
        size: Side of the square in pixels.
    """
    source = source_of(path) if isinstance(path, (str, os.PathLike)) else path
    with Image.open(open_source(source)) as opened:
        opened.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster.
        image = ImageOps.exif_transpose(opened).convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        return image


def render_embedding_map(
    paths: Sequence[ImageSource],
    coordinates: np.ndarray,
    *,
    title: str,
    axis_name: str = "component",
    size: int = 1600,
    thumbnail_size: int | None = None,
    labels: Sequence[str] | None = None,
    progress: ProgressCallback = null_progress,
) -> Image.Image:
    """Draw each image as a thumbnail at its 2-D point, over axes with ticks and a title.

    Args:
        paths: The images, in the order of the rows of ``coordinates``.
        coordinates: Array (N, 2).
        title: Heading of the picture.
        axis_name: Axis labels are ``{axis_name} 1`` and ``{axis_name} 2``.
        size: Side of the square plot area in pixels.
        thumbnail_size: Side of each thumbnail; default shrinks from 64 px as N grows.
        labels: A label per image; with 2 to 20 distinct labels, frames and a legend show them.
        progress: One unit per thumbnail drawn.

    Returns:
        The map as an RGB image of (size + margins) pixels.
    """
    count = len(paths)
    if thumbnail_size is None:
        # About a tenth of the area covered by thumbnails whatever the count, within 16-64 px.
        thumbnail_size = int(min(64, max(16, size * math.sqrt(0.1 / max(count, 1)))))
    distinct = sorted(set(labels)) if labels is not None else []
    colors = (
        {label: FOLDER_COLORS[i] for i, label in enumerate(distinct)}
        if 2 <= len(distinct) <= len(FOLDER_COLORS)
        else {}
    )
    font, title_font = load_font(max(12, size // 80)), load_font(max(16, size // 55))
    margin_left, margin_top, margin_bottom = size // 10, size // 14, size // 12
    margin_right = size // 5 if colors else size // 30
    image = Image.new(
        "RGB", (margin_left + size + margin_right, margin_top + size + margin_bottom), BACKGROUND
    )
    draw = ImageDraw.Draw(image)
    draw.text(
        (image.width / 2, margin_top // 3), title, fill=TEXT_COLOR, font=title_font, anchor="mt"
    )

    # Axes: the points' range plus half a thumbnail, so that no thumbnail leaves the plot.
    points = np.asarray(coordinates, dtype=np.float64).reshape(count, 2)
    low, high = (
        points.min(axis=0) if count else np.zeros(2),
        points.max(axis=0) if count else np.ones(2),
    )
    span = np.where(high - low > 0, high - low, 1.0)
    pad = span * (thumbnail_size / 2 + 12) / (size - thumbnail_size - 24)
    low, high = low - pad, high + pad
    plot = (margin_left, margin_top, margin_left + size, margin_top + size)

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (
            plot[0] + (x - low[0]) / (high[0] - low[0]) * size,
            plot[3] - (y - low[1]) / (high[1] - low[1]) * size,
        )

    for axis in (0, 1):
        ticks = [t for t in nice_ticks(low[axis], high[axis], 6) if low[axis] <= t <= high[axis]]
        for tick in ticks:
            label = format_tick(tick, ticks)
            if axis == 0:
                x, _ = to_pixel(tick, low[1])
                draw.line([(x, plot[1]), (x, plot[3])], fill=GRID_COLOR, width=1)
                draw.line([(x, plot[3]), (x, plot[3] + 6)], fill=AXIS_COLOR, width=2)
                draw.text((x, plot[3] + 10), label, fill=TEXT_COLOR, font=font, anchor="mt")
            else:
                _, y = to_pixel(low[0], tick)
                draw.line([(plot[0], y), (plot[2], y)], fill=GRID_COLOR, width=1)
                draw.line([(plot[0] - 6, y), (plot[0], y)], fill=AXIS_COLOR, width=2)
                draw.text((plot[0] - 10, y), label, fill=TEXT_COLOR, font=font, anchor="rm")
    draw.text(
        ((plot[0] + plot[2]) / 2, image.height - margin_bottom // 4),
        f"{axis_name} 1",
        fill=TEXT_COLOR,
        font=font,
        anchor="md",
    )
    draw.text(
        (margin_left // 6, margin_top - 8),
        f"{axis_name} 2",
        fill=TEXT_COLOR,
        font=font,
        anchor="ld",
    )

    # Thumbnails in a seeded random order, so that no folder is always drawn on top.
    order = np.random.default_rng(0).permutation(count)
    frame = 2 if colors else 1
    progress(ProgressEvent("start", "map", total=count))
    for done, index in enumerate(order, start=1):
        thumbnail = load_thumbnail(paths[index], thumbnail_size)
        x, y = to_pixel(*points[index])
        left, top = round(x - thumbnail.width / 2), round(y - thumbnail.height / 2)
        color = (
            colors.get(labels[index], AXIS_COLOR) if colors and labels is not None else AXIS_COLOR
        )
        draw.rectangle(
            [
                left - frame,
                top - frame,
                left + thumbnail.width + frame - 1,
                top + thumbnail.height + frame - 1,
            ],
            fill=color,
        )
        image.paste(thumbnail, (left, top))
        progress(ProgressEvent("advance", "map", total=count, completed=done))
    progress(ProgressEvent("end", "map", total=count, completed=count))
    draw.rectangle(plot, outline=AXIS_COLOR, width=2)

    # The legend: one colour swatch per folder, right of the plot.
    if colors:
        x, y = plot[2] + 20, plot[1]
        line = max(18, size // 60)
        for label, color in colors.items():
            draw.rectangle([x, y, x + line - 4, y + line - 4], fill=color)
            draw.text(
                (x + line + 4, y + (line - 4) / 2), label, fill=TEXT_COLOR, font=font, anchor="lm"
            )
            y += line + 6
    return image


def create_embedding_map(
    paths: Sequence[ImageSource],
    embeddings: np.ndarray,
    *,
    method: MapMethod | str = MapMethod.auto,
    size: int = 1600,
    seed: int = 0,
    title: str | None = None,
    progress: ProgressCallback = null_progress,
) -> EmbeddingMap:
    """Project embeddings to 2-D and draw the images at their points.

    Args:
        paths: Image files, one per row of ``embeddings``.
        embeddings: Array (N, D).
        method: ``pca``, ``tsne`` or ``auto`` (t-SNE with scikit-learn and at least 50 images).
        size: Side of the plot area in pixels.
        seed: Seed of t-SNE.
        title: Heading; a default names the count and the method.
        progress: One unit per thumbnail drawn.

    Returns:
        The points, the method used and the picture.

    Raises:
        DataError: When there is no image or the counts of paths and rows differ.
        ConfigError: When t-SNE is asked for but cannot run.
    """
    embeddings = np.asarray(embeddings)
    if len(paths) == 0 or embeddings.ndim != 2 or embeddings.shape[0] != len(paths):
        raise DataError(
            f"a map needs one embedding per image, got {len(paths)} images and an array of "
            f"shape {tuple(embeddings.shape)}"
        )
    coordinates, used = project_2d(embeddings, method=method, seed=seed)
    labels = folder_labels(paths)
    name = "t-SNE" if used is MapMethod.tsne else "PCA"
    picture = render_embedding_map(
        paths,
        coordinates,
        title=title or f"{len(paths)} images · {name} of their embeddings",
        axis_name="t-SNE" if used is MapMethod.tsne else "principal component",
        size=size,
        labels=labels,
        progress=progress,
    )
    return EmbeddingMap(coordinates, used.value, picture, labels)


def save_embedding_map(
    paths: Sequence[ImageSource],
    embeddings: np.ndarray,
    path: Path,
    *,
    method: MapMethod | str = MapMethod.auto,
    size: int = 1600,
    seed: int = 0,
    progress: ProgressCallback = null_progress,
) -> EmbeddingMap:
    """``create_embedding_map`` and write the picture as a PNG, atomically.

    Args:
        paths: The N image files, in the order of ``embeddings``.
        embeddings: Their embeddings (N, D).
        path: The ``.png`` file to write.
        method: ``pca``, ``tsne`` or ``auto`` (t-SNE when scikit-learn is installed).
        size: Side of the square picture in pixels.
        seed: Seed of t-SNE.
        progress: Callback for progress events.

    Returns:
        The map: the picture and the 2-D coordinates (N, 2).

    Raises:
        DataError: When ``path`` does not end in .png or cannot be written.
    """
    path = check_png_path(path, flag="--map")
    result = create_embedding_map(
        paths, embeddings, method=method, size=size, seed=seed, progress=progress
    )
    # Not optimised: a map of thousands of thumbnails compresses slowly and is written once.
    write_png(result.image, path, optimize=False)
    return result
