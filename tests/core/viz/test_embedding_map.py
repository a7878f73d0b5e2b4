"""The 2-D map of embeddings: projections and thumbnails placed at their points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_cli.core.errors import ConfigError, DataError
from simclr_cli.core.viz import embedding_map
from simclr_cli.core.viz.embedding_map import (
    MapMethod,
    create_embedding_map,
    pca_2d,
    project_2d,
    resolve_map_method,
    save_embedding_map,
)


def solid_images(folder: Path, colour: tuple[int, int, int], count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        paths.append(path)
    return paths


def test_pca_2d__finds_the_direction_of_largest_spread():
    rng = np.random.default_rng(0)
    direction = np.array([3.0, 4.0, 0.0]) / 5.0
    rows = np.outer(np.linspace(-5, 5, 20), direction) + 0.01 * rng.normal(size=(20, 3))
    points = pca_2d(rows)
    assert points.shape == (20, 2) and points.dtype == np.float32
    assert points[:, 0].std() > 100 * points[:, 1].std()
    # The sign is fixed, so the same rows give the same map.
    np.testing.assert_allclose(points, pca_2d(rows[::1].copy()))


def test_pca_2d__single_image_is_the_origin():
    assert pca_2d(np.ones((1, 8))).tolist() == [[0.0, 0.0]]


def test_resolve_map_method__auto_and_missing_scikit_learn(monkeypatch):
    monkeypatch.setattr(embedding_map, "sklearn_available", lambda: True)
    assert resolve_map_method("auto", count=10) is MapMethod.pca
    assert resolve_map_method("auto", count=500) is MapMethod.tsne
    with pytest.raises(ConfigError, match="at least 5"):
        resolve_map_method("tsne", count=3)
    monkeypatch.setattr(embedding_map, "sklearn_available", lambda: False)
    assert resolve_map_method("auto", count=500) is MapMethod.pca
    with pytest.raises(ConfigError, match="pip install scikit-learn"):
        resolve_map_method("tsne", count=500)


def test_project_2d__tsne_gives_one_point_per_row():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    # Two groups pointing in different directions (t-SNE runs on cosine distances).
    directions = np.eye(16)[[0] * 8 + [1] * 8] * 5.0
    rows = directions + rng.normal(0, 0.3, (16, 16))
    points, used = project_2d(rows, method="tsne")
    assert used is MapMethod.tsne and points.shape == (16, 2)
    # The two clusters stay apart: each point is nearer its own cluster's centre.
    centres = np.stack([points[:8].mean(0), points[8:].mean(0)])
    nearest = np.linalg.norm(points[:, None] - centres[None], axis=2).argmin(axis=1)
    assert nearest.tolist() == [0] * 8 + [1] * 8


def test_create_embedding_map__different_images_land_apart(tmp_path: Path):
    red = solid_images(tmp_path / "red", (230, 20, 20), 3)
    blue = solid_images(tmp_path / "blue", (20, 20, 230), 3)
    # Red images embed at one end of the first axis, blue ones at the other.
    embeddings = np.array(
        [[10.0, 0.1 * i, 0.0] for i in range(3)] + [[-10.0, 0.1 * i, 0.0] for i in range(3)]
    )
    result = create_embedding_map(red + blue, embeddings, method="pca", size=400)
    assert result.method == "pca" and result.coordinates.shape == (6, 2)
    assert result.labels == ["red"] * 3 + ["blue"] * 3
    pixels = np.asarray(result.image).astype(int)

    def centre_x(colour):
        mask = np.abs(pixels - np.array(colour)).max(axis=2) < 10
        assert mask.sum() > 3 * 16 * 16  # thumbnails are drawn, not just dots
        return np.nonzero(mask)[1].mean()

    assert abs(centre_x((230, 20, 20)) - centre_x((20, 20, 230))) > 400 / 2


def test_save_embedding_map__writes_a_png(tmp_path: Path):
    paths = solid_images(tmp_path / "a", (200, 200, 0), 2) + solid_images(
        tmp_path / "b", (0, 200, 200), 2
    )
    out = tmp_path / "map.png"
    save_embedding_map(paths, np.eye(4), out, method="pca", size=300)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 10  # not blank


def test_save_embedding_map__bad_input_is_refused(tmp_path: Path):
    paths = solid_images(tmp_path / "a", (0, 0, 0), 2)
    with pytest.raises(DataError, match=r"\.png"):
        save_embedding_map(paths, np.eye(2), tmp_path / "map.jpg")
    with pytest.raises(DataError, match="one embedding per image"):
        save_embedding_map(paths, np.eye(3), tmp_path / "map.png")
    assert not (tmp_path / "map.png").exists()
