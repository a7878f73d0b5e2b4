"""Index folders of given rows, without a model: for search and duplicates tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simclr_cli.core.retrieval.index import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ImageRecord,
    normalize_rows,
    write_index,
)


def make_index(folder: Path, rows: np.ndarray, *, faiss_min_images: int = 0) -> list[str]:
    """Write an index of ``rows`` (N, D), normalised, for files ``folder/images/NNNN.png``."""
    names = [str(folder / "images" / f"{number:04d}.png") for number in range(rows.shape[0])]
    records = [ImageRecord(path=n, width=8, height=8, mtime=0.0, size=0) for n in names]
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dtype": "float32",
        "projection": False,
        "model": {"path": str(folder / "model.safetensors"), "sha256": "0" * 64},
    }
    write_index(
        folder / "ix",
        embeddings=normalize_rows(rows),
        records=records,
        meta=meta,
        faiss_min_images=faiss_min_images,
    )
    return names
