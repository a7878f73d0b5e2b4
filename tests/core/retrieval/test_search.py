"""core/retrieval/search.py: exact blocked search, the FAISS path and queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simclr_cli.core.config import IndexConfig, SearchConfig
from simclr_cli.core.errors import ConfigError, DataError, SearchIndexError
from simclr_cli.core.model.files import save_model
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.retrieval.index import build_index, normalize_rows
from simclr_cli.core.retrieval.search import exact_search, search_index
from tests.conftest import TINY_BACKBONE
from tests.core.retrieval.helpers import make_index


def brute_force(queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ rows.T), axis=1, kind="stable")[:, :k]


def test_exact_search__blocks_give_the_brute_force_answer():
    generator = np.random.default_rng(0)
    rows = normalize_rows(generator.normal(size=(103, 8)))
    queries = normalize_rows(generator.normal(size=(5, 8)))
    scores, found = exact_search(queries, rows, top_k=7, block_rows=10)
    np.testing.assert_array_equal(found, brute_force(queries, rows, 7))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_exact_search__float16_rows_and_excluded_self():
    generator = np.random.default_rng(1)
    rows = normalize_rows(generator.normal(size=(20, 4)))
    exclude = np.array([3, -1])
    scores, found = exact_search(
        rows[[3, 4]], rows.astype(np.float16), top_k=25, exclude=exclude, block_rows=6
    )
    assert found.shape == (2, 19)  # one row fewer than N: the first query's own row is left out
    assert 3 not in found[0] and found[1, 0] == 4 and scores[1, 0] == pytest.approx(1, abs=1e-3)


def test_search_index__query_in_the_index_uses_its_row(tmp_path: Path):
    rows = np.eye(4, 6) + 0.01
    rows[1] = rows[0] + 0.1  # row 1 is row 0's nearest
    names = make_index(tmp_path, rows)
    result = search_index(config=SearchConfig(index=tmp_path / "ix", queries=[names[0]], top_k=2))
    neighbours = result.queries[0].neighbours
    assert result.method == "exact" and result.queries[0].row == 0
    assert [n.path for n in neighbours] == [names[1], neighbours[1].path]
    assert names[0] not in [n.path for n in neighbours]


def test_search_index__faiss_path_agrees_with_exact(tmp_path: Path):
    pytest.importorskip("faiss")
    generator = np.random.default_rng(2)
    rows = generator.normal(size=(300, 16))
    names = make_index(tmp_path, rows, faiss_min_images=100)
    assert (tmp_path / "ix" / "faiss.index").is_file()
    config = SearchConfig(index=tmp_path / "ix", queries=[Path(n) for n in names[:5]], top_k=3)
    fast = search_index(config=config)
    config.exact = True
    exact = search_index(config=config)
    assert fast.method == "faiss" and exact.method == "exact"
    agree = [
        f.neighbours[0].path == e.neighbours[0].path
        for f, e in zip(fast.queries, exact.queries, strict=True)
    ]
    assert sum(agree) >= 4


def test_search_index__top_k_must_be_positive(tmp_path: Path):
    with pytest.raises(ConfigError, match="--top-k"):
        search_index(config=SearchConfig(index=tmp_path, queries=[tmp_path], top_k=0))


def test_search_index__missing_query_is_one_line(tmp_path: Path):
    make_index(tmp_path, np.eye(3))
    with pytest.raises(DataError, match="does not exist and is not in index"):
        search_index(config=SearchConfig(index=tmp_path / "ix", queries=[tmp_path / "x.png"]))


@pytest.fixture
def built(trained_model: Path, shapes_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[shapes_dir / "circle"], out=out))
    return out


def test_search_index__new_image_is_embedded_like_the_index(built, shapes_dir):
    # A file of another class folder is not in the index: it is embedded with the model.
    query = sorted((shapes_dir / "square").iterdir())[0]
    result = search_index(config=SearchConfig(index=built, queries=[query], top_k=3))
    assert result.queries[0].row is None and len(result.queries[0].neighbours) == 3
    # The same file given as an indexed path gives the same similarities.
    indexed = sorted((shapes_dir / "circle").iterdir())[0]
    by_row = search_index(config=SearchConfig(index=built, queries=[indexed], top_k=3))
    copy = built.parent / "copy.png"
    copy.write_bytes(indexed.read_bytes())
    by_file = search_index(config=SearchConfig(index=built, queries=[copy], top_k=4))
    assert by_file.queries[0].neighbours[0].path == str(indexed.absolute())
    assert by_file.queries[0].neighbours[0].similarity == pytest.approx(1, abs=5e-3)
    assert by_row.queries[0].neighbours[0].path == by_file.queries[0].neighbours[1].path


def test_search_index__another_model_is_refused(built, shapes_dir, tmp_path):
    other = tmp_path / "other.safetensors"
    save_model(other, create_simclr_model(backbone=TINY_BACKBONE, image_size=32))
    query = sorted((shapes_dir / "square").iterdir())[0]
    with pytest.raises(SearchIndexError, match="made by another model"):
        search_index(config=SearchConfig(index=built, queries=[query], model=other))


def test_search_index__query_that_is_not_an_image(built, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: not an image file"):
        search_index(config=SearchConfig(index=built, queries=[text]))
