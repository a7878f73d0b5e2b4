"""The optional FAISS path (``pip install simclr-cli[faiss]``): an inverted-file index for big
indexes, where exact search of every query against every row gets slow.

faiss is imported only here and only when used; without it every search is exact (blocked
matrix products in torch, ``search.py``), so nothing requires it.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write

FAISS_FILE = "faiss.index"
#: Inverted lists probed per query: recall near 0.99 of exact search on clustered data, at a
#: small share of its work (see benchmarks/search.py).
DEFAULT_PROBES = 32
#: Rows FAISS trains its coarse quantiser on, per list.
TRAINING_ROWS_PER_LIST = 64


def available() -> bool:
    """Whether faiss can be imported."""
    return importlib.util.find_spec("faiss") is not None


def list_count(rows: int) -> int:
    """Inverted lists for ``rows`` vectors: about 4 sqrt(N), FAISS's usual advice."""
    return max(1, min(rows // TRAINING_ROWS_PER_LIST, int(4 * math.sqrt(rows))))


def create_faiss_index(embeddings: np.ndarray, *, seed: int = 0) -> Any:
    """An inner-product IVF-Flat index of unit rows (inner product is cosine similarity).

    Args:
        embeddings: Rows (N, D) of unit length.
        seed: Seed of the training sample.

    Returns:
        A trained ``faiss.IndexIVFFlat`` holding every row, with ``DEFAULT_PROBES`` probes.
    """
    import faiss

    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    count, dimension = rows.shape
    lists = list_count(count)
    quantizer = faiss.IndexFlatIP(dimension)
    index = faiss.IndexIVFFlat(quantizer, dimension, lists, faiss.METRIC_INNER_PRODUCT)
    sample = min(count, lists * TRAINING_ROWS_PER_LIST)
    chosen = np.random.default_rng(seed).choice(count, size=sample, replace=False)
    index.train(rows[np.sort(chosen)])
    index.add(rows)
    index.nprobe = min(lists, DEFAULT_PROBES)
    return index


def write_faiss_index(folder: Path, embeddings: np.ndarray) -> dict[str, Any]:
    """Build and write ``faiss.index`` atomically; returns its entry of index.json."""
    import faiss

    index = create_faiss_index(embeddings)
    atomic_write(Path(folder) / FAISS_FILE, lambda temporary: faiss.write_index(index, temporary))
    return {"file": FAISS_FILE, "kind": "IVFFlat", "lists": index.nlist, "probes": index.nprobe}


def read_faiss_index(path: Path) -> Any:
    """Read a FAISS index file (FAISS's own binary format, not a pickle)."""
    import faiss

    return faiss.read_index(str(path))


def faiss_search(index: Any, queries: np.ndarray, *, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` rows of highest inner product with each query (approximate).

    Args:
        index: From ``read_faiss_index`` or ``create_faiss_index``.
        queries: Array (Q, D), float32, unit rows.
        top_k: Neighbours per query.

    Returns:
        Similarities (Q, top_k) and row numbers (Q, top_k); -1 rows where fewer were found.
    """
    similarities, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), top_k)
    return similarities, rows


def faiss_range_pairs(
    index: Any, embeddings: np.ndarray, *, threshold: float, block_rows: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows (i < j) whose inner product is at least ``threshold`` (approximate).

    Returns:
        Arrays of the first rows, second rows and similarities, one entry per pair.
    """
    firsts, seconds, values = [], [], []
    # range_search keeps similarities above its radius; nextafter makes "at least" exact.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    for start in range(0, embeddings.shape[0], block_rows):
        block = np.ascontiguousarray(embeddings[start : start + block_rows], dtype=np.float32)
        limits, similarities, rows = index.range_search(block, radius)
        query_rows = np.repeat(
            np.arange(start, start + block.shape[0]), np.diff(limits).astype(np.int64)
        )
        # Both directions are kept: a probe can find j from i and miss i from j.
        keep = rows != query_rows
        firsts.append(np.minimum(query_rows[keep], rows[keep]))
        seconds.append(np.maximum(query_rows[keep], rows[keep]))
        values.append(similarities[keep])
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    first, second, value = np.concatenate(firsts), np.concatenate(seconds), np.concatenate(values)
    _, unique = np.unique(first * embeddings.shape[0] + second, return_index=True)
    return first[unique], second[unique], value[unique]
