"""core/retrieval/duplicates.py: pairs, connected groups and outliers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simclr_cli.core.config import DuplicatesConfig
from simclr_cli.core.errors import ConfigError
from simclr_cli.core.retrieval.duplicates import (
    UnionFind,
    connected_groups,
    find_duplicates,
    similar_pairs,
)
from simclr_cli.core.retrieval.index import normalize_rows
from tests.core.retrieval.helpers import make_index


def clustered_rows() -> np.ndarray:
    """Rows 0-2 near one direction, rows 5-6 near another, the rest spread out."""
    generator = np.random.default_rng(0)
    rows = generator.normal(size=(12, 32))
    rows[1] = rows[0] + 0.05 * generator.normal(size=32)
    rows[2] = rows[1] + 0.05 * generator.normal(size=32)
    rows[6] = rows[5] + 0.05 * generator.normal(size=32)
    return rows


def test_union_find__joins_chains():
    sets = UnionFind(5)
    sets.union(0, 1)
    sets.union(1, 2)
    assert sets.find(2) == sets.find(0) != sets.find(3)


def test_connected_groups__biggest_first():
    groups = connected_groups(8, np.array([5, 0, 1, 6]), np.array([6, 1, 2, 7]))
    assert groups == [[0, 1, 2], [5, 6, 7]]
    groups = connected_groups(8, np.array([6, 0, 5]), np.array([7, 1, 7]))
    assert groups == [[5, 6, 7], [0, 1]]


def test_similar_pairs__tiles_match_the_full_matrix():
    rows = normalize_rows(clustered_rows())
    first, second, value, nearest, nearest_row = similar_pairs(rows, threshold=0.5, tile=5)
    full = rows @ rows.T
    np.fill_diagonal(full, -np.inf)
    expected = {(i, j) for i in range(12) for j in range(i + 1, 12) if full[i, j] >= 0.5}
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == expected
    np.testing.assert_allclose(nearest, full.max(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(nearest_row, full.argmax(axis=1))
    np.testing.assert_allclose(value, full[first, second], rtol=1e-5)


def test_find_duplicates__groups_and_outliers(tmp_path: Path):
    names = make_index(tmp_path, clustered_rows())
    result = find_duplicates(
        config=DuplicatesConfig(index=tmp_path / "ix", threshold=0.9, outliers=2)
    )
    assert result.groups[0][0].path == names[0]
    assert [len(group) for group in result.groups] == [3, 2]
    assert result.groups[0][0].similarity == 1.0 and result.duplicate_images == 3
    assert len(result.outliers) == 2
    assert all(o.path not in names[:3] + names[5:7] for o in result.outliers)
    document = result.to_dict()
    assert document["pairs"] == result.pairs and len(document["groups"]) == 2


def test_find_duplicates__faiss_path_finds_the_same_groups(tmp_path: Path):
    pytest.importorskip("faiss")
    generator = np.random.default_rng(3)
    rows = generator.normal(size=(400, 16))
    rows[10] = rows[20] + 0.01
    rows[30] = rows[40] + 0.01
    make_index(tmp_path, rows, faiss_min_images=100)
    config = DuplicatesConfig(index=tmp_path / "ix", threshold=0.99, outliers=3)
    fast = find_duplicates(config=config)
    config.exact = True
    exact = find_duplicates(config=config)
    assert fast.method == "faiss" and exact.method == "exact"
    rows_of = [[m.row for m in group] for group in fast.groups]
    assert rows_of == [[m.row for m in group] for group in exact.groups] == [[10, 20], [30, 40]]
    assert len(fast.outliers) == 3


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5])
def test_find_duplicates__threshold_outside_0_1(tmp_path: Path, threshold: float):
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        find_duplicates(config=DuplicatesConfig(index=tmp_path, threshold=threshold))
