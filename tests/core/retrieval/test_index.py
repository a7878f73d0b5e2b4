"""core/retrieval/index.py: building, updating and reading an index folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_cli.core.config import IndexConfig
from simclr_cli.core.errors import (
    ConfigError,
    DataError,
    RunFolderError,
    SearchIndexError,
)
from simclr_cli.core.model.files import save_model
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.progress import ProgressEvent
from simclr_cli.core.retrieval.index import (
    EMBEDDINGS_FILE,
    META_FILE,
    PATHS_FILE,
    build_index,
    collect_images,
    load_index,
)
from tests.conftest import TINY_BACKBONE


class EmbedCounter:
    """A progress callback that counts the images embedded (the ``index`` task's total)."""

    def __init__(self) -> None:
        self.embedded = 0

    def __call__(self, event: ProgressEvent) -> None:
        if event.task == "index" and event.kind == "end":
            self.embedded += event.completed


def copy_images(source: Path, target: Path, count: int) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in source.rglob("*.png"))[:count]
    copies = []
    for number, path in enumerate(paths):
        copy = target / f"{number:02d}.png"
        shutil.copy(path, copy)
        copies.append(copy)
    return copies


@pytest.fixture
def images(shapes_dir: Path, tmp_path: Path) -> Path:
    copy_images(shapes_dir, tmp_path / "images", 6)
    return tmp_path / "images"


def test_build_index__writes_unit_rows_paths_and_model(trained_model, images, tmp_path):
    build = build_index(
        config=IndexConfig(model=trained_model, inputs=[images], out=tmp_path / "ix")
    )
    index = load_index(tmp_path / "ix")
    assert build.embedded == 6 and len(index) == 6
    assert index.embeddings.dtype == np.float16
    norms = np.linalg.norm(np.asarray(index.embeddings, np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    record = index.records[0]
    assert record.path == os.path.abspath(images / "00.png") and record.width == 32
    meta = json.loads((tmp_path / "ix" / META_FILE).read_text())
    assert meta["model"]["sha256"] == index.model_sha256 and len(index.model_sha256) == 64
    assert meta["preprocessing"]["image_size"] == 32 and meta["faiss"] is None


def test_build_index__float32_is_kept_on_update(trained_model, images, tmp_path):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out, dtype="float32"))
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out, update=True))
    assert load_index(out).embeddings.dtype == np.float32


def test_build_index__update_embeds_only_new_and_changed_files(trained_model, images, tmp_path):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))
    before = load_index(out)
    kept_row = np.array(before.embeddings[1])
    (images / "00.png").unlink()  # removed
    Image.new("RGB", (32, 32), (200, 10, 10)).save(images / "new.png")  # added
    changed = images / "02.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(changed)
    os.utime(changed, (1, 1))  # changed (size and mtime)
    counter = EmbedCounter()
    build = build_index(
        config=IndexConfig(model=trained_model, inputs=[images], out=out, update=True),
        progress=counter,
    )
    assert counter.embedded == 2 and build.embedded == 2
    assert build.kept == 4 and build.dropped == 2
    after = load_index(out)
    names = [Path(record.path).name for record in after.records]
    assert names == ["01.png", "02.png", "03.png", "04.png", "05.png", "new.png"]
    np.testing.assert_array_equal(after.embeddings[0], kept_row)


def test_build_index__update_refuses_another_model(trained_model, images, tmp_path):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))
    other = tmp_path / "other.safetensors"
    save_model(other, create_simclr_model(backbone=TINY_BACKBONE, image_size=32))
    before = (out / EMBEDDINGS_FILE).read_bytes()
    with pytest.raises(SearchIndexError, match=r"made by another model.*--force"):
        build_index(config=IndexConfig(model=other, inputs=[images], out=out, update=True))
    assert (out / EMBEDDINGS_FILE).read_bytes() == before
    build = build_index(config=IndexConfig(model=other, inputs=[images], out=out, force=True))
    assert load_index(out).model_sha256 == build.index.model_sha256 != ""


def test_build_index__existing_index_needs_update_or_force(trained_model, images, tmp_path):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))
    with pytest.raises(RunFolderError, match=r"--update .* or --force"):
        build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))


def test_build_index__update_and_force_together_is_a_usage_error(trained_model, images, tmp_path):
    config = IndexConfig(
        model=trained_model, inputs=[images], out=tmp_path, update=True, force=True
    )
    with pytest.raises(ConfigError, match="one of them"):
        build_index(config=config)


def test_build_index__bad_image_is_skipped_and_listed(trained_model, images, tmp_path):
    # As `embed` does: in a big collection some file is always unreadable.
    (images / "broken.png").write_bytes(b"not a png")
    build = build_index(
        config=IndexConfig(model=trained_model, inputs=[images], out=tmp_path / "ix")
    )
    assert [Path(bad.path).name for bad in build.skipped] == ["broken.png"]
    assert len(build.index) == 6 and build.embedded == 6


def test_build_index__no_readable_image_writes_nothing(trained_model, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "ix"
    with pytest.raises(DataError, match=r"none of the 1 images could be read .*broken\.png"):
        config = IndexConfig(model=trained_model, inputs=[tmp_path / "broken.png"], out=out)
        build_index(config=config)
    assert not out.exists() or not any(out.iterdir())


def test_collect_images__absolute_without_repeats(images):
    sources, missing = collect_images([images, images / "01.png"])
    assert len(sources) == 6 and all(Path(source).is_absolute() for source in sources)
    assert missing == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / META_FILE).write_text("{not json"), "damaged"),
        (lambda folder: (folder / META_FILE).unlink(), "not an index folder"),
        (lambda folder: (folder / PATHS_FILE).write_text('{"path": "a"}\n'), "damaged"),
        (lambda folder: (folder / EMBEDDINGS_FILE).write_bytes(b"junk"), "damaged"),
    ],
)
def test_load_index__damaged_folder_is_one_line(trained_model, images, tmp_path, damage, message):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))
    damage(out)
    with pytest.raises(SearchIndexError, match=message) as caught:
        load_index(out)
    assert "\n" not in str(caught.value)
    assert "simclr index MODEL IMAGES --out" in str(caught.value)


def test_load_index__empty_index_is_refused(trained_model, images, tmp_path):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))
    meta = json.loads((out / META_FILE).read_text())
    meta["count"] = 0
    (out / META_FILE).write_text(json.dumps(meta))
    (out / PATHS_FILE).write_text("")
    np.save(out / EMBEDDINGS_FILE, np.zeros((0, meta["dimension"]), np.float16))
    with pytest.raises(SearchIndexError, match="holds no images"):
        load_index(out)


def test_load_index__missing_folder(tmp_path):
    with pytest.raises(SearchIndexError, match="does not exist; build one"):
        load_index(tmp_path / "nope")


def test_build_index__flip_invariant_gives_a_mirrored_copy_the_same_row(
    trained_model, images, tmp_path
):
    original = sorted(images.iterdir())[0]
    with Image.open(original) as opened:
        opened.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images / "mirrored.png")
    rows = {}
    for flip_invariant in (False, True):
        out = tmp_path / f"ix-{flip_invariant}"
        config = IndexConfig(
            model=trained_model,
            inputs=[images],
            out=out,
            dtype="float32",
            flip_invariant=flip_invariant,
        )
        index = build_index(config=config).index
        assert json.loads((out / META_FILE).read_text())["flip_invariant"] is flip_invariant
        first, second = index.row_of(original), index.row_of(images / "mirrored.png")
        rows[flip_invariant] = (index.embeddings[first], index.embeddings[second])
    # Without the option the 2-step model tells the mirror image apart; with it, it cannot.
    assert not np.allclose(*rows[False], atol=1e-3)
    np.testing.assert_allclose(*rows[True], atol=1e-5)


def test_build_index__update_refuses_another_flip_setting(trained_model, images, tmp_path):
    out = tmp_path / "ix"
    build_index(config=IndexConfig(model=trained_model, inputs=[images], out=out))
    again = IndexConfig(
        model=trained_model, inputs=[images], out=out, update=True, flip_invariant=True
    )
    with pytest.raises(SearchIndexError, match="without --flip-invariant"):
        build_index(config=again)
