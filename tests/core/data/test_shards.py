"""WebDataset tar shards: writing, indexing, damaged input, the order over ranks and workers."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset

from simclr_cli.core.config import ShardConfig
from simclr_cli.core.data.decode import decode_for_training
from simclr_cli.core.data.loader import TrainImageLoader
from simclr_cli.core.data.shards import (
    CLASSES_FILE,
    ShardEpochSampler,
    expand_shards,
    index_shards,
    is_shard_input,
    shard_labels,
    source_of,
    split_key,
    write_shards,
)
from simclr_cli.core.data.synthetic import generate_shapes_dataset
from simclr_cli.core.errors import DataError
from simclr_cli.core.train.loop import pretrain
from tests.conftest import tiny_config

CLASSES = ("circle", "square", "stripes")


def make_shards(root: Path, *, per_class: int = 8, shard_size: str = "12KB", labels: bool = True):
    """A folder of 32 px shapes written as several shards; returns the folder and the result."""
    images = generate_shapes_dataset(
        root / "images", images_per_class=per_class, size=32, seed=0, classes=CLASSES
    )
    config = ShardConfig(data=images, out=root / "shards", shard_size=shard_size, labels=labels)
    return images, write_shards(config=config)


def add_member(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def test_write_shards__round_trip_with_labels_and_class_names(tmp_path: Path):
    images, result = make_shards(tmp_path)
    assert result.images == 24 and len(result.shards) > 1
    assert json.loads((result.out / CLASSES_FILE).read_text()) == list(CLASSES)
    # webdataset's own reader sees every sample with its class index.
    samples = list(webdataset.WebDataset(result.pattern, shardshuffle=False))
    assert len(samples) == 24
    by_key = {sample["__key__"]: int(sample["cls"]) for sample in samples}
    assert by_key["square/square_00003"] == CLASSES.index("square")
    # Our index finds the same members, with the same labels and class names.
    index, bad = index_shards(result.pattern)
    assert bad == [] and len(index) == 24
    labels, classes = shard_labels(index, result.pattern)
    assert classes == list(CLASSES)
    for position in range(len(index)):
        folder = index.name(position).split("/")[0]
        assert classes[labels[position]] == folder
    # A member decodes to the same pixels as its source file.
    member = index[0]
    source = images / member.name
    expected = decode_for_training(source, max_short_side=48)
    assert torch.equal(decode_for_training(member, max_short_side=48), expected)


def test_write_shards__never_overwrites(tmp_path: Path):
    _, result = make_shards(tmp_path)
    before = {path: path.stat().st_mtime_ns for path in result.shards}
    config = ShardConfig(data=tmp_path / "images", out=result.out)
    with pytest.raises(DataError, match="already holds shards"):
        write_shards(config=config)
    assert {path: path.stat().st_mtime_ns for path in result.shards} == before


def test_shard_labels__first_folder_without_cls_members(tmp_path: Path):
    _, result = make_shards(tmp_path, labels=False)
    index, _ = index_shards(result.out)
    assert (index.labels == -1).all()
    labels, classes = shard_labels(index, result.out)
    assert classes == list(CLASSES) and sorted(set(labels)) == [0, 1, 2]


def test_is_shard_input__patterns_tars_and_folders(tmp_path: Path):
    images, result = make_shards(tmp_path)
    assert is_shard_input(result.pattern)
    assert is_shard_input(result.shards[0])
    assert is_shard_input(result.out)
    assert is_shard_input(tmp_path / "missing.tar")
    assert not is_shard_input(images)
    assert not is_shard_input(images / "circle")


def test_expand_shards__pattern_that_matches_nothing_is_one_line(tmp_path: Path):
    with pytest.raises(DataError) as caught:
        expand_shards(str(tmp_path / "shard-{000000..000009}.tar"))
    assert "matches no file" in str(caught.value) and "\n" not in str(caught.value)


def test_expand_shards__missing_shards_of_a_pattern_are_listed(tmp_path: Path):
    _, result = make_shards(tmp_path)
    last = len(result.shards) - 1
    pattern = str(result.out / f"shard-{{000000..{last + 2:06d}}}.tar")
    found, missing = expand_shards(pattern)
    assert found == result.shards
    assert [item.reason for item in missing] == ["shard not found"] * 2


def test_index_shards__truncated_tar_and_non_image_member_are_skipped_and_listed(tmp_path: Path):
    _, result = make_shards(tmp_path, shard_size="1MB")
    (good_shard,) = result.shards
    payload = good_shard.read_bytes()
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "a-0.tar").write_bytes(payload)
    # A shard cut in the middle of its data (a copy that did not finish).
    (folder / "a-1.tar").write_bytes(payload[: len(payload) // 2 + 100])
    # A shard with a text file named .jpg and a sample without any image.
    with tarfile.open(folder / "a-2.tar", "w") as archive:
        add_member(archive, "notes/readme.jpg", b"this is not a picture")
        add_member(archive, "notes/caption.txt", b"a caption")
        image = (tmp_path / "images" / "circle" / "circle_00000.png").read_bytes()
        add_member(archive, "circle/extra.png", image)
    index, bad = index_shards(str(folder / "a-{0..2}.tar"))
    reasons = {item.path: item.reason for item in bad}
    assert reasons[f"{folder / 'a-2.tar'}:notes/readme.jpg"] == "not an image file"
    assert "no image" in reasons[f"{folder / 'a-2.tar'}:notes/caption"]
    assert any(path.startswith(str(folder / "a-1.tar")) for path in reasons)
    # Everything before the damage is kept: all of a-0, part of a-1, the good image of a-2.
    counts = index.counts()
    assert counts[0] == 24 and 0 < counts[1] < 24 and counts[2] == 1
    decode_for_training(index[len(index) - 1], max_short_side=48)


def test_index_shards__nothing_usable_is_refused_in_one_line(tmp_path: Path):
    with tarfile.open(tmp_path / "only.tar", "w") as archive:
        add_member(archive, "a/b.jpg", b"text")
    with pytest.raises(DataError) as caught:
        index_shards(tmp_path / "only.tar")
    assert "no readable image" in str(caught.value) and "\n" not in str(caught.value)


def test_split_key__webdataset_convention():
    assert split_key("cat/0001.jpg") == ("cat/0001", "jpg")
    assert split_key("a/b.seg.png") == ("a/b", "seg.png")
    assert split_key("plain") == ("plain", "")


def epoch_members(counts: list[int], *, seed: int, epoch: int, world: int) -> list[list[int]]:
    orders = []
    for rank in range(world):
        sampler = ShardEpochSampler(counts, seed=seed, rank=rank, world_size=world, window=5)
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    return orders


def test_shard_epoch_sampler__ranks_share_every_member_once_per_epoch():
    counts = [7, 3, 9, 5, 8]  # 32 members
    for epoch in range(3):
        orders = epoch_members(counts, seed=4, epoch=epoch, world=2)
        assert [len(order) for order in orders] == [16, 16]
        assert sorted(orders[0] + orders[1]) == list(range(32))


def test_shard_epoch_sampler__shard_order_follows_the_seed():
    counts = [4] * 12
    first = ShardEpochSampler(counts, seed=1)
    assert first.shard_order(0) == ShardEpochSampler(counts, seed=1).shard_order(0)
    assert first.shard_order(0) != ShardEpochSampler(counts, seed=2).shard_order(0)
    assert first.shard_order(0) != first.shard_order(1)
    assert epoch_members(counts, seed=1, epoch=2, world=2) == epoch_members(
        counts, seed=1, epoch=2, world=2
    )
    # A rank reads whole runs of shards: its first members come from the first shard in order.
    sampler = ShardEpochSampler(counts, seed=1, window=1)
    start = 4 * first.shard_order(0)[0]
    assert set(sampler.order(0)[:4]) == set(range(start, start + 4))


def test_shard_epoch_sampler__resume_skips_exactly_the_consumed_members():
    sampler = ShardEpochSampler([6, 6, 6], seed=0)
    full = sampler.order(1)
    sampler.resume_at(1, 8)
    assert list(sampler) == full[8:]


def test_train_image_loader__two_ranks_two_workers_cover_every_member_once(tmp_path: Path):
    _, result = make_shards(tmp_path, per_class=8)  # 24 members over several shards
    index, _ = index_shards(result.pattern)
    seen: list[int] = []
    for rank in range(2):
        sampler = ShardEpochSampler(index.counts(), seed=0, rank=rank, world_size=2, window=4)
        loader = TrainImageLoader(
            index,
            image_size=32,
            batch_size=4,
            workers=2,
            cache="off",
            generator=torch.Generator().manual_seed(rank),
            sampler=sampler,
        )
        sampler.set_epoch(1)
        for batch in loader:
            assert len(batch) == 4
            seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(24))


@pytest.mark.slow
def test_pretrain__on_shards_with_a_damaged_member(tmp_path: Path):
    _, result = make_shards(tmp_path, shard_size="1MB")
    with tarfile.open(tmp_path / "shards" / "extra.tar", "w") as archive:
        add_member(archive, "x/broken.jpg", b"not an image")
    config = tiny_config(result.out, tmp_path / "run", max_steps=3, cache="off")
    run = pretrain(config=config)
    assert run.steps == 3 and np.isfinite(run.final_loss)
    listed = (run.run_dir / "skipped.txt").read_text()
    assert "extra.tar:x/broken.jpg\tnot an image file" in listed


def test_source_of__member_names_read_back_as_members(tmp_path: Path):
    make_shards(tmp_path)
    index, _ = index_shards(tmp_path / "shards")
    member = index[3]
    assert source_of(str(member)) == member
    assert source_of(f"{member.shard}:no/such.png") == Path(f"{member.shard}:no/such.png")
    assert source_of(tmp_path / "photo.jpg") == tmp_path / "photo.jpg"
