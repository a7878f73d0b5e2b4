"""The training data pipeline: the RAM cache (per rank shard), streaming, the data-wait gauge."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from simclr_cli.core.augment.crop_at_decode import CropAtDecode, view_seed
from simclr_cli.core.augment.recipe import create_recipe
from simclr_cli.core.data import loader as loader_module
from simclr_cli.core.data.decode import decode_for_training
from simclr_cli.core.data.index import FileIndex
from simclr_cli.core.data.loader import (
    DataWaitGauge,
    TrainImageLoader,
    cache_budget_bytes,
    machine_cache_budget_bytes,
)
from simclr_cli.core.data.sampler import ResumableRandomSampler
from simclr_cli.core.distributed.launcher import launch_pretrain
from simclr_cli.core.progress import ProgressEvent
from simclr_cli.core.train.loop import pretrain
from tests.conftest import tiny_config
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


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every file the loader decodes (with no workers, decoding runs in this process)."""
    decoded: list[Path] = []
    real_decode = loader_module.decode_for_training

    def counting_decode(path: Path, *, max_short_side: int) -> torch.Tensor:
        decoded.append(Path(path))
        return real_decode(path, max_short_side=max_short_side)

    monkeypatch.setattr(loader_module, "decode_for_training", counting_decode)
    return decoded


def rank_loader(paths: list[Path], sampler: ResumableRandomSampler, cache: str) -> TrainImageLoader:
    return TrainImageLoader(
        paths,
        image_size=32,
        batch_size=3,
        workers=0,
        cache=cache,
        generator=torch.Generator().manual_seed(0),
        sampler=sampler,
    )


def test_train_image_loader__one_epoch_fills_the_cache_although_the_last_batch_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    decoded = count_decodes(monkeypatch)
    paths = make_folder(tmp_path / "images", 11)
    loader = rank_loader(paths, ResumableRandomSampler(11, seed=0), "ram")
    first, _ = collect(loader)
    # 3 batches of 3 are trained on; the 2 images left out are decoded after them, once.
    assert len(first) == 9 and loader.cached
    assert sorted(decoded) == sorted(paths)
    for path in paths:
        path.unlink()
    loader.sampler.set_epoch(1)
    second, _ = collect(loader)
    assert len(second) == 9 and len(decoded) == 11


@pytest.mark.parametrize("cache", ["ram", "auto"])
def test_train_image_loader__each_rank_caches_its_shard_complete_after_one_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str
):
    decoded = count_decodes(monkeypatch)
    paths = make_folder(tmp_path / "images", 11)
    samplers = [ResumableRandomSampler(11, seed=1, rank=rank, world_size=2) for rank in (0, 1)]
    loaders = [rank_loader(paths, sampler, cache) for sampler in samplers]
    one_process = rank_loader(paths, ResumableRandomSampler(11, seed=1), "ram")
    collect(one_process)
    decoded.clear()
    # Epoch 1: each rank trains on one batch of its 5 or 6 images and caches all of them.
    shards = []
    for loader in loaders:
        before = len(decoded)
        first, _ = collect(loader)
        shards.append(set(decoded[before:]))
        assert len(first) == 3 and loader.cached
        assert shards[-1] == {paths[i] for i in loader.sampler.shard()}
    # Together the ranks decoded every image once and hold the data set once.
    assert len(decoded) == 11 and set(decoded) == set(paths)
    assert sum(loader.cache_bytes for loader in loaders) == one_process.cache_bytes
    # Later epochs read no file.
    for path in paths:
        path.unlink()
    for epoch in (1, 2):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
            images, _ = collect(loader)
            assert len(images) == 3
    assert len(decoded) == 11


def test_train_image_loader__resumed_epoch_completes_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    decoded = count_decodes(monkeypatch)
    paths = make_folder(tmp_path / "images", 12)
    sampler = ResumableRandomSampler(12, seed=2, rank=1, world_size=2)
    loader = rank_loader(paths, sampler, "ram")
    sampler.resume_at(4, 3)  # The first batch of epoch 4 was trained on before the stop.
    sampler.set_epoch(4)
    images, _ = collect(loader)
    assert sorted(images) == sorted(sampler.order(4)[3:])
    assert loader.cached and sorted(decoded) == sorted(paths[i] for i in sampler.shard())


def test_cache_budget_bytes__the_machine_budget_is_shared_by_its_ranks(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("SIMCLR_CACHE_BUDGET", raising=False)
    monkeypatch.setattr(loader_module, "available_memory_bytes", lambda: 8_000_000_000)
    assert machine_cache_budget_bytes() == 4_000_000_000
    assert cache_budget_bytes() == 4_000_000_000
    assert cache_budget_bytes(local_world_size=4) == 1_000_000_000
    monkeypatch.setenv("SIMCLR_CACHE_BUDGET", "3e9")
    assert cache_budget_bytes(local_world_size=2) == 1_500_000_000
    monkeypatch.setattr(loader_module, "available_memory_bytes", lambda: None)
    monkeypatch.delenv("SIMCLR_CACHE_BUDGET")
    assert cache_budget_bytes(local_world_size=2) == 1024**3


def _pretrain_counting_decodes(*, config, progress):
    """A rank that pretrains and writes the files it decoded to ``decoded-RANK.txt``."""
    import os

    decoded: list[str] = []
    real_decode = loader_module.decode_for_training

    def counting_decode(path: Path, *, max_short_side: int) -> torch.Tensor:
        decoded.append(str(path))
        return real_decode(path, max_short_side=max_short_side)

    loader_module.decode_for_training = counting_decode  # A fresh process: nothing to restore.
    result = pretrain(config=config, progress=progress)
    rank = os.environ["RANK"]
    (Path(config.out).parent / f"decoded-{rank}.txt").write_text("\n".join(decoded))
    return result


@pytest.mark.slow
def test_pretrain__two_ranks_decode_each_image_once_over_three_epochs(
    shapes_dir: Path, tmp_path: Path
):
    # 24 images, 4 per rank and step: 3 steps per epoch, 9 steps are 3 epochs.
    config = tiny_config(shapes_dir, tmp_path / "run", max_steps=9, cache="ram")
    result = launch_pretrain(
        _pretrain_counting_decodes, config=config, progress=lambda event: None, processes=2
    )
    assert result.steps == 9
    decoded = [(tmp_path / f"decoded-{rank}.txt").read_text().splitlines() for rank in (0, 1)]
    # Each rank decoded its half once, in epoch 1; epochs 2 and 3 came from RAM.
    assert [len(files) for files in decoded] == [12, 12]
    assert len(set(decoded[0] + decoded[1])) == 24
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    one_image = 3 * 32 * 32
    assert records[-1]["cache_bytes"] == 24 * one_image


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
