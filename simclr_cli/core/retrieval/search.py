"""Nearest neighbours in an index: exact blocked cosine search in torch, FAISS for big indexes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._runtime import resolve_device
from ..config import SearchConfig
from ..data.files import ImageSource
from ..data.shards import ShardMember, source_of
from ..errors import DataError
from ..model.files import load_model
from ..progress import ProgressCallback, null_progress
from . import _faiss
from .index import SearchIndex, check_model, embed_files, load_index

#: Rows of the index compared with the queries at a time: bounds the (Q, B) score block.
BLOCK_ROWS = 16384
#: Queries compared with the index at a time.
QUERY_BLOCK = 1024


@dataclass(frozen=True)
class Neighbour:
    """One image found for a query.

    Attributes:
        row: Its row in the index.
        path: Its file.
        similarity: Cosine similarity to the query, in [-1, 1].
    """

    row: int
    path: str
    similarity: float


@dataclass
class QueryResult:
    """The neighbours of one query, most similar first.

    Attributes:
        query: The query as given.
        row: Its row when the query is a file already in the index (left out of its neighbours).
        neighbours: Up to ``top_k`` images.
    """

    query: Path
    row: int | None
    neighbours: list[Neighbour]


@dataclass
class SearchResult:
    """What ``search_index`` found.

    Attributes:
        index: The index searched.
        queries: One result per query, in the order given.
        top_k: Neighbours asked for per query.
        method: ``exact`` or ``faiss``.
    """

    index: SearchIndex
    queries: list[QueryResult]
    top_k: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``--json``."""
        return {
            "index": str(self.index.folder),
            "model_sha256": self.index.model_sha256,
            "top_k": self.top_k,
            "method": self.method,
            "queries": [
                {
                    "query": str(result.query),
                    "in_index": result.row is not None,
                    "neighbours": [
                        {"path": n.path, "similarity": round(n.similarity, 6)}
                        for n in result.neighbours
                    ],
                }
                for result in self.queries
            ],
        }


def exact_search(
    queries: np.ndarray,
    embeddings: np.ndarray,
    *,
    top_k: int,
    exclude: np.ndarray | None = None,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` rows of highest cosine similarity with each query, exactly.

    The index is read ``block_rows`` rows at a time (it may be a memory map of float16 rows),
    scored against a block of queries with one matrix product, and each block's best are merged
    into the running best.

    Args:
        queries: Array (Q, D) of unit rows.
        embeddings: Array (N, D) of unit rows, float16 or float32.
        top_k: Neighbours per query; at most N (less one where a row is excluded).
        exclude: Array (Q,) of one row per query to leave out (the query itself), -1 for none.
        block_rows: Index rows scored at a time.

    Returns:
        Similarities (Q, k) in descending order and their rows (Q, k), k = min(top_k, ...).
    """
    count = embeddings.shape[0]
    excluded = exclude is not None and bool((exclude >= 0).any())
    k = max(0, min(top_k, count - (1 if excluded else 0)))
    all_scores, all_rows = [], []
    for query_start in range(0, queries.shape[0], QUERY_BLOCK):
        block_queries = torch.from_numpy(
            np.ascontiguousarray(queries[query_start : query_start + QUERY_BLOCK], np.float32)
        )
        skip = None if exclude is None else exclude[query_start : query_start + QUERY_BLOCK]
        best_scores = torch.full((block_queries.shape[0], 0), -torch.inf)
        best_rows = torch.zeros((block_queries.shape[0], 0), dtype=torch.long)
        for start in range(0, count, block_rows):
            rows = torch.from_numpy(np.array(embeddings[start : start + block_rows], np.float32))
            scores = block_queries @ rows.T  # (q, b)
            if skip is not None:
                inside = (skip >= start) & (skip < start + rows.shape[0])
                positions = np.nonzero(inside)[0]
                scores[positions, skip[positions] - start] = -torch.inf
            keep = min(k, scores.shape[1])
            top_scores, top_rows = scores.topk(keep, dim=1)
            merged_scores = torch.cat([best_scores, top_scores], dim=1)
            merged_rows = torch.cat([best_rows, top_rows + start], dim=1)
            best_scores, order = merged_scores.topk(min(k, merged_scores.shape[1]), dim=1)
            best_rows = merged_rows.gather(1, order)
        all_scores.append(best_scores.numpy())
        all_rows.append(best_rows.numpy())
    if not all_scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(all_scores), np.concatenate(all_rows)


def nearest_rows(
    index: SearchIndex,
    queries: np.ndarray,
    *,
    top_k: int,
    exclude: np.ndarray,
    exact: bool = False,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Search an index with FAISS when it has a FAISS index (and faiss imports), else exactly.

    Args:
        index: The index.
        queries: Array (Q, D) of unit rows.
        top_k: Neighbours per query.
        exclude: Array (Q,) of the row to leave out per query, -1 for none.
        exact: Search exactly whatever the index has.

    Returns:
        Similarities (Q, k), rows (Q, k) (-1 where FAISS found fewer), and the method used.
    """
    faiss_file = index.faiss_file()
    if not exact and faiss_file is not None and faiss_file.is_file() and _faiss.available():
        found = _faiss.read_faiss_index(faiss_file)
        # One more than asked, so that the query itself can be dropped.
        scores, rows = _faiss.faiss_search(found, queries, top_k=top_k + 1)
        for position, row in enumerate(exclude):
            if row >= 0:
                hit = rows[position] == row
                scores[position][hit], rows[position][hit] = -np.inf, -1
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1), "faiss"
    scores, rows = exact_search(queries, index.embeddings, top_k=top_k, exclude=exclude)
    return scores, rows, "exact"


def _query_rows(
    index: SearchIndex, config: SearchConfig
) -> tuple[list[int | None], list[ImageSource]]:
    # A query already in the index uses its stored row; any other must be an image file (or a
    # member of a tar shard, named as embed names it).
    rows: list[int | None] = []
    to_embed: list[ImageSource] = []
    for query in config.queries:
        row = index.row_of(query)
        rows.append(row)
        if row is not None:
            continue
        source = source_of(query)
        if isinstance(source, ShardMember):
            to_embed.append(source)
            continue
        if query.is_dir():
            raise DataError(f"query {query} is a folder; give image files or paths in the index")
        if not query.exists():
            raise DataError(
                f"query {query} does not exist and is not in index {index.folder}; check the path"
            )
        to_embed.append(query)
    return rows, to_embed


def search_index(
    *, config: SearchConfig, progress: ProgressCallback = null_progress
) -> SearchResult:
    """Find the nearest images of each query in an index.

    Queries already in the index use their stored rows (and are left out of their own
    neighbours); other files are embedded with the index's model and preprocessing, after the
    model file's sha256 is checked against the index's.

    Args:
        config: Index folder, queries and options.
        progress: Progress callback: one ``embed queries`` task when some queries are embedded.

    Returns:
        The neighbours of every query.

    Raises:
        SearchIndexError: When the index is missing, damaged or empty, or the model is not the
            index's.
        DataError: When a query is missing or not an image.
    """
    config.validate()
    index = load_index(config.index)
    rows, to_embed = _query_rows(index, config)
    dimension = index.embeddings.shape[1]
    queries = np.zeros((len(rows), dimension), dtype=np.float32)
    if to_embed:
        model_path = config.model if config.model is not None else index.model_path
        check_model(index, model_path)
        device = resolve_device(config.device)
        model = load_model(model_path, device=device)
        embedded = embed_files(
            model,
            to_embed,
            projection=index.projection,
            flip_invariant=index.flip_invariant,
            batch_size=config.batch_size,
            device=device,
            progress=progress,
            task="embed queries",
        )
        iterator = iter(embedded)
        for position, row in enumerate(rows):
            if row is None:
                queries[position] = next(iterator)
    for position, row in enumerate(rows):
        if row is not None:
            queries[position] = np.asarray(index.embeddings[row], dtype=np.float32)
    exclude = np.array([-1 if row is None else row for row in rows], dtype=np.int64)
    scores, found, method = nearest_rows(
        index, queries, top_k=config.top_k, exclude=exclude, exact=config.exact
    )
    results = []
    for position, query in enumerate(config.queries):
        neighbours = [
            Neighbour(row=int(row), path=index.records[int(row)].path, similarity=float(score))
            for score, row in zip(scores[position], found[position], strict=True)
            if row >= 0
        ]
        results.append(QueryResult(query=query, row=rows[position], neighbours=neighbours))
    return SearchResult(index=index, queries=results, top_k=config.top_k, method=method)
