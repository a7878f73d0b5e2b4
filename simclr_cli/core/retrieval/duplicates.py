"""Near duplicates and outliers of an index.

Two images are near duplicates when the cosine similarity of their rows is at least the
threshold; groups are the connected components of those pairs (union-find), so a chain of
near duplicates is one group. Outliers are the images least similar to their nearest neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import DuplicatesConfig
from ..progress import ProgressCallback, ProgressEvent, null_progress
from . import _faiss
from .index import SearchIndex, load_index
from .search import nearest_rows

#: Side of the square tiles of the similarity matrix computed at a time (a 64 MB float32 tile).
TILE = 4096


class UnionFind:
    """Disjoint sets of ``0 .. count - 1`` with path halving and union by size."""

    def __init__(self, count: int) -> None:
        self.parent = list(range(count))
        self.size = [1] * count

    def find(self, item: int) -> int:
        """The representative of ``item``'s set."""
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, first: int, second: int) -> None:
        """Join the sets of ``first`` and ``second``."""
        first, second = self.find(first), self.find(second)
        if first == second:
            return
        if self.size[first] < self.size[second]:
            first, second = second, first
        self.parent[second] = first
        self.size[first] += self.size[second]


def connected_groups(count: int, firsts: np.ndarray, seconds: np.ndarray) -> list[list[int]]:
    """The connected components of two or more members of a graph given as edge lists.

    Args:
        count: Number of nodes.
        firsts: Array (E,) of one end of each edge.
        seconds: Array (E,) of the other end.

    Returns:
        Each component's members in ascending order; biggest component first, ties by their
        first member.
    """
    sets = UnionFind(count)
    for first, second in zip(firsts.tolist(), seconds.tolist(), strict=True):
        sets.union(first, second)
    members: dict[int, list[int]] = {}
    for item in sorted(set(firsts.tolist()) | set(seconds.tolist())):
        members.setdefault(sets.find(item), []).append(item)
    groups = [group for group in members.values() if len(group) > 1]
    return sorted(groups, key=lambda group: (-len(group), group[0]))


def similar_pairs(
    embeddings: np.ndarray,
    *,
    threshold: float,
    tile: int = TILE,
    progress: ProgressCallback = null_progress,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows at least ``threshold`` similar, and each row's nearest neighbour, exactly.

    Only the tiles on and above the diagonal of the (N, N) similarity matrix are computed; each
    is used for both of its rows' and columns' nearest neighbours.

    Args:
        embeddings: Array (N, D) of unit rows.
        threshold: Smallest cosine similarity of a pair.
        tile: Side of the tiles.
        progress: Progress callback: a ``compare`` task of one unit per row tile.

    Returns:
        First rows (P,), second rows (P,) (first < second), their similarities (P,), and per
        row the similarity (N,) and row (N,) of its nearest other row (-inf and -1 for N = 1).
    """
    count = embeddings.shape[0]
    nearest = torch.full((count,), -torch.inf)
    nearest_row = torch.full((count,), -1, dtype=torch.long)
    firsts, seconds, values = [], [], []
    starts = list(range(0, count, tile))
    progress(ProgressEvent("start", "compare", total=len(starts)))
    for done, start in enumerate(starts, 1):
        rows = torch.from_numpy(np.array(embeddings[start : start + tile], np.float32))
        for column_start in range(start, count, tile):
            columns = torch.from_numpy(
                np.array(embeddings[column_start : column_start + tile], np.float32)
            )
            scores = rows @ columns.T  # (r, c)
            if column_start == start:
                # A diagonal tile: a row is not its own neighbour, and the pairs below the
                # diagonal are those above it again, so each pair is kept once.
                scores.fill_diagonal_(-torch.inf)
                above = torch.ones_like(scores, dtype=torch.bool).triu(diagonal=1)
                scores_upper = torch.where(above, scores, torch.tensor(-torch.inf))
            else:
                scores_upper = scores
            best, where = scores.max(dim=1)
            better = best > nearest[start : start + rows.shape[0]]
            nearest[start : start + rows.shape[0]][better] = best[better]
            nearest_row[start : start + rows.shape[0]][better] = where[better] + column_start
            best, where = scores.max(dim=0)
            span = slice(column_start, column_start + columns.shape[0])
            better = best > nearest[span]
            nearest[span][better] = best[better]
            nearest_row[span][better] = where[better] + start
            hits = torch.nonzero(scores_upper >= threshold)
            if hits.numel():
                firsts.append(hits[:, 0].numpy() + start)
                seconds.append(hits[:, 1].numpy() + column_start)
                values.append(scores_upper[hits[:, 0], hits[:, 1]].numpy())
        progress(ProgressEvent("advance", "compare", total=len(starts), completed=done))
    progress(ProgressEvent("end", "compare", total=len(starts), completed=len(starts)))
    if firsts:
        first, second, value = (
            np.concatenate(firsts),
            np.concatenate(seconds),
            np.concatenate(values),
        )
    else:
        first = second = np.zeros(0, np.int64)
        value = np.zeros(0, np.float32)
    return first, second, value, nearest.numpy(), nearest_row.numpy()


@dataclass(frozen=True)
class Member:
    """One image of a group of near duplicates.

    Attributes:
        row: Its row in the index.
        path: Its file.
        similarity: Cosine similarity to the group's first image (1 for the first itself).
    """

    row: int
    path: str
    similarity: float


@dataclass(frozen=True)
class Outlier:
    """An image far from every other.

    Attributes:
        row: Its row in the index.
        path: Its file.
        nearest_similarity: Cosine similarity to its nearest other image.
        nearest_path: That image.
    """

    row: int
    path: str
    nearest_similarity: float
    nearest_path: str


@dataclass
class DuplicatesResult:
    """What ``find_duplicates`` found.

    Attributes:
        index: The index examined.
        threshold: Smallest similarity of a pair.
        pairs: Pairs of images at least ``threshold`` similar.
        groups: Groups of near duplicates, biggest first; each starts with its first file in
            index order, the rest by similarity to it.
        outliers: The images least similar to their nearest neighbour, least first.
        method: ``exact`` or ``faiss``.
    """

    index: SearchIndex
    threshold: float
    pairs: int
    groups: list[list[Member]]
    outliers: list[Outlier]
    method: str

    @property
    def duplicate_images(self) -> int:
        """Images that could be removed: all but one of each group."""
        return sum(len(group) - 1 for group in self.groups)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``--json``."""
        return {
            "index": str(self.index.folder),
            "images": len(self.index),
            "threshold": self.threshold,
            "method": self.method,
            "pairs": self.pairs,
            "duplicate_images": self.duplicate_images,
            "groups": [
                [{"path": m.path, "similarity": round(m.similarity, 6)} for m in group]
                for group in self.groups
            ],
            "outliers": [
                {
                    "path": o.path,
                    "nearest_similarity": round(o.nearest_similarity, 6),
                    "nearest_path": o.nearest_path,
                }
                for o in self.outliers
            ],
        }


def _members(index: SearchIndex, rows: list[int]) -> list[Member]:
    vectors = np.asarray(index.embeddings[rows], dtype=np.float32)
    similarities = vectors @ vectors[0]
    order = [0, *sorted(range(1, len(rows)), key=lambda i: (-similarities[i], rows[i]))]
    return [
        Member(
            row=rows[i],
            path=index.records[rows[i]].path,
            similarity=1.0 if i == 0 else float(similarities[i]),
        )
        for i in order
    ]


def find_duplicates(
    *, config: DuplicatesConfig, progress: ProgressCallback = null_progress
) -> DuplicatesResult:
    """Group the near duplicates of an index, and list its outliers.

    Args:
        config: Index folder, threshold and options.
        progress: Progress callback (a ``compare`` task for exact comparison).

    Returns:
        The groups, biggest first, and the outliers.

    Raises:
        ConfigError: For a threshold outside (0, 1] or a negative ``outliers``.
        SearchIndexError: When the index is missing, damaged or empty.
    """
    config.validate()
    index = load_index(config.index)
    embeddings = index.embeddings
    faiss_file = index.faiss_file()
    use_faiss = (
        not config.exact and faiss_file is not None and faiss_file.is_file() and _faiss.available()
    )
    if use_faiss:
        assert faiss_file is not None  # Checked just above.
        found = _faiss.read_faiss_index(faiss_file)
        first, second, _ = _faiss.faiss_range_pairs(found, embeddings, threshold=config.threshold)
        method = "faiss"
    else:
        first, second, _, nearest, nearest_row = similar_pairs(
            embeddings, threshold=config.threshold, progress=progress
        )
        method = "exact"
    groups = [_members(index, rows) for rows in connected_groups(len(index), first, second)]
    outliers: list[Outlier] = []
    if config.outliers and len(index) > 1:
        if use_faiss:
            everything = np.arange(len(index))
            scores, rows, _ = nearest_rows(index, embeddings, top_k=1, exclude=everything)
            nearest, nearest_row = scores[:, 0], rows[:, 0]
        order = np.argsort(nearest, kind="stable")[: config.outliers]
        outliers = [
            Outlier(
                row=int(row),
                path=index.records[int(row)].path,
                nearest_similarity=float(nearest[row]),
                nearest_path=index.records[int(nearest_row[row])].path
                if nearest_row[row] >= 0
                else "",
            )
            for row in order
        ]
    return DuplicatesResult(
        index=index,
        threshold=config.threshold,
        pairs=int(first.shape[0]),
        groups=groups,
        outliers=outliers,
        method=method,
    )
