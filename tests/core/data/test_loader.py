"""The training data pipeline: the RAM cache, streaming and the data-wait gauge."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from simclr_cli.core.augment.crop_at_decode import CropAtDecode, view_seed
from simclr_cli.core.augment.recipe import create_recipe
from simclr_cli.core.data.decode import decode_for_training
from simclr_cli.core.data.index import FileIndex
from simclr_cli.core.data.loader import DataWaitGauge, TrainImageLoader
from simclr_cli.core.data.sampler import ResumableRandomSampler
from simclr_cli.core.progress import ProgressEvent
from tests.core.data.test_crop_decode import textured_photo
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


def _cutting_loader(paths: list[Path], cache: str, **changes: object) -> TrainImageLoader:
    recipe = create_recipe("cifar", image_size=32)
    settings: dict[str, object] = {
        "image_size": 32,
        "batch_size": 2,
        "workers": 0,
        "cache": cache,
        "generator": torch.Generator().manual_seed(0),
        "cutter": CropAtDecode(recipe),
        "seed_of": lambda epoch, index: view_seed(7, epoch=epoch, index=index),
    }
    settings.update(changes)
    return TrainImageLoader(paths, **settings)  # type: ignore[arg-type]


def _photo_folder(root: Path) -> list[Path]:
    # Two photos larger than 3 x 32 px (cut at decode) and two small images (bounded decode).
    root.mkdir()
    large = [textured_photo(root / f"large{i}.jpg", 260 + 20 * i, 200) for i in range(2)]
    small = [smooth_photo(root / f"small{i}.jpg", 60, 50) for i in range(2)]
    return sorted(large + small)


def test_train_image_loader__cache_off_cuts_large_photos_with_seeds_of_epoch_and_image(
    tmp_path: Path,
):
    paths = _photo_folder(tmp_path / "images")
    sampler = ResumableRandomSampler(len(paths), seed=3)
    loader = _cutting_loader(paths, "off", sampler=sampler)
    cutter = CropAtDecode(create_recipe("cifar", image_size=32))
    views: dict[tuple[int, int], torch.Tensor] = {}
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for batch in loader:
            rows = [] if batch.cut is None else batch.cut.rows.tolist()
            for row, index in enumerate(batch.indices.tolist()):
                path = paths[index]
                assert (row in rows) == path.name.startswith("large")
                expected = cutter(path, seed=view_seed(7, epoch=epoch, index=index))
                if row in rows:
                    assert batch.cut is not None
                    piece = rows.index(row)
                    assert torch.equal(batch.cut.views[piece], expected.views)
                    assert torch.equal(batch.cut.crops[piece], expected.crops)
                    views[(epoch, index)] = batch.cut.views[piece]
                else:
                    height, width = batch.sizes[row].tolist()
                    assert torch.equal(batch.images[row, :, :height, :width], expected)
    # New boxes every epoch.
    large = [index for index, path in enumerate(paths) if path.name.startswith("large")]
    assert all(not torch.equal(views[(0, index)], views[(1, index)]) for index in large)
    # A resumed epoch (from its first or its second batch) cuts the same views: the seeds do
    # not depend on the batch or on what was skipped.
    checked = 0
    for consumed in (0, 2):
        resumed = ResumableRandomSampler(len(paths), seed=3)
        resumed.resume_at(1, consumed)
        for batch in _cutting_loader(paths, "off", sampler=resumed):
            rows = [] if batch.cut is None else batch.cut.rows.tolist()
            for piece, row in enumerate(rows):
                assert batch.cut is not None
                assert torch.equal(batch.cut.views[piece], views[(1, int(batch.indices[row]))])
                checked += 1
    assert checked >= len(large)


def test_train_image_loader__cache_ram_keeps_the_bounded_decode_of_every_image(tmp_path: Path):
    paths = _photo_folder(tmp_path / "images")
    loader = _cutting_loader(paths, "ram")
    for _ in range(2):
        images, _ = collect(loader)
        for index, image in images.items():
            assert torch.equal(image, decode_for_training(paths[index], max_short_side=48))
    assert loader.cached
    assert all(batch.cut is None for batch in loader)


def test_train_image_loader__auto_stops_caching_at_the_first_cut_view(tmp_path: Path):
    paths = _photo_folder(tmp_path / "images")
    events: list[ProgressEvent] = []
    loader = _cutting_loader(paths, "auto", progress=events.append, cache_budget=10**9)
    for _ in range(2):
        assert any(batch.cut is not None for batch in loader)
    assert not loader.cached and loader.cache is None
    notices = [event.text for event in events if event.kind == "message"]
    assert len(notices) == 1 and "larger than 96 px are cut at decode" in notices[0]
    # A folder of small images only is cached as before.
    small = _cutting_loader(sorted(paths)[2:], "auto", cache_budget=10**9)
    list(small)
    assert small.cached
