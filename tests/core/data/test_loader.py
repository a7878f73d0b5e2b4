"""The training data pipeline: the RAM cache, streaming and the data-wait gauge."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from simclr_cli.core.data.index import FileIndex
from simclr_cli.core.data.loader import DataWaitGauge, TrainImageLoader
from simclr_cli.core.progress import ProgressEvent
from tests.core.data.test_decode import smooth_photo


def make_folder(root: Path, count: int, *, broken: int = 0) -> list[Path]:
    root.mkdir()
    paths = [smooth_photo(root / f"{i:02d}.jpg", 40 + i, 36) for i in range(count)]
    for i in range(broken):
        bad = root / f"broken{i}.jpg"
        bad.write_bytes(b"not a jpeg")
        paths.append(bad)
    return sorted(paths)


def collect(loader: TrainImageLoader) -> tuple[dict[int, torch.Tensor], int]:
    """One epoch: each image by dataset index (padding removed), and the skipped count."""
    images: dict[int, torch.Tensor] = {}
    skipped = 0
    for batch in loader:
        skipped += batch.skipped
        for row, index in enumerate(batch.indices.tolist()):
            height, width = batch.sizes[row].tolist()
            images[index] = batch.images[row, :, :height, :width].clone()
    return images, skipped


def test_train_image_loader__second_epoch_comes_from_ram_with_the_same_pixels(tmp_path: Path):
    paths = make_folder(tmp_path / "images", 10, broken=2)
    loader = TrainImageLoader(
        paths,
        image_size=32,
        batch_size=4,
        workers=0,
        cache="ram",
        generator=torch.Generator().manual_seed(0),
    )
    first, first_skipped = collect(loader)
    assert loader.cached
    # Nothing is decoded any more: the files can go.
    for path in paths:
        path.unlink()
    second, second_skipped = collect(loader)
    assert sorted(first) == sorted(second) and len(first) == 10
    for index, image in first.items():
        assert torch.equal(second[index], image)
        assert image.shape == (3, 36, 40 + int(paths[index].stem))
    # Broken files are dropped and counted in every epoch, streamed or cached.
    assert first_skipped == second_skipped == 2


def test_train_image_loader__auto_falls_back_to_streaming_with_one_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SIMCLR_CACHE_BUDGET", "100")  # Bytes: nothing fits.
    paths = make_folder(tmp_path / "images", 8)
    events: list[ProgressEvent] = []
    loader = TrainImageLoader(
        paths,
        image_size=32,
        batch_size=4,
        workers=0,
        cache="auto",
        generator=torch.Generator().manual_seed(0),
        progress=events.append,
    )
    collect(loader)
    collect(loader)
    messages = [event.text for event in events if event.kind == "message"]
    assert len(messages) == 1 and "streaming" in messages[0] and "--cache" in messages[0]
    assert not loader.cached


def test_train_image_loader__cache_off_never_caches(tmp_path: Path):
    paths = make_folder(tmp_path / "images", 8)
    loader = TrainImageLoader(
        paths,
        image_size=32,
        batch_size=4,
        workers=0,
        cache="off",
        generator=torch.Generator().manual_seed(0),
    )
    collect(loader)
    assert not loader.cached and loader.cache is None


def test_train_image_loader__workers_get_the_paths_as_flat_arrays(tmp_path: Path):
    # A list of Path objects would be copied page by page into each worker as it is read.
    paths = make_folder(tmp_path / "images", 4)
    loader = TrainImageLoader(
        paths,
        image_size=32,
        batch_size=2,
        workers=1,
        cache="off",
        generator=torch.Generator().manual_seed(0),
    )
    dataset = loader._create_loader().dataset
    assert isinstance(loader.paths, FileIndex) and isinstance(dataset.paths, FileIndex)
    assert list(dataset.paths) == paths
    images, skipped = collect(loader)
    assert sorted(images) == [0, 1, 2, 3] and skipped == 0


def test_data_wait_gauge__measures_waiting_and_hints_once(monkeypatch: pytest.MonkeyPatch):
    # A clock that only the batch source moves: each batch "takes" 0.02 s to arrive.
    clock = {"now": 0.0}
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])

    def slow():
        for item in range(3):
            clock["now"] += 0.02
            yield item

    gauge = DataWaitGauge()
    assert list(gauge.timed(slow())) == [0, 1, 2]
    assert gauge.take_seconds() == pytest.approx(0.06)
    assert gauge.take_seconds() == 0.0
    assert gauge.hint(0.1, workers=1, cached=False) is None
    hint = gauge.hint(0.5, workers=1, cached=False)
    assert hint is not None and "50%" in hint and "--workers" in hint
    assert gauge.hint(0.9, workers=1, cached=False) is None
