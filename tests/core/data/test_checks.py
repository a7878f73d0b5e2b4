"""Hostile image folders: every kind of bad file is found, skipped and listed, or refused."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simclr_cli.core.data.checks import (
    FAILURE_FIXES,
    BadImage,
    SkippedImages,
    check_image_header,
    classify_decode_failure,
    scan_images,
)
from simclr_cli.core.data.decode import decode_for_training
from simclr_cli.core.data.files import find_images, load_rgb
from simclr_cli.core.errors import DataError, ImageDecodeError
from simclr_cli.core.train.loop import pretrain
from tests.conftest import tiny_config


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that claims a width and height (a decompression bomb when large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _noise_jpeg(size: int = 48) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_check_image_header__zero_byte_file(tmp_path: Path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert check_image_header(path) == "empty file"
    with pytest.raises(ImageDecodeError):
        load_rgb(path)


def test_check_image_header__text_file_named_jpg(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n")
    assert check_image_header(path) == "not an image file"


def test_load_rgb__truncated_jpeg_passes_the_scan_and_fails_at_decode(tmp_path: Path):
    data = _noise_jpeg()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert check_image_header(path) is None
    with pytest.raises(ImageDecodeError, match="truncated"):
        load_rgb(path)


def test_load_rgb__odd_but_valid_images_become_rgb(tmp_path: Path):
    images = {
        "deep.png": Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)),
        "palette.png": Image.new("RGB", (4, 4), "blue").convert("P"),
        "alpha.png": Image.new("RGBA", (4, 4), (0, 0, 255, 128)),
        "gray_alpha.png": Image.new("LA", (4, 4), (10, 200)),
        "cmyk.jpg": Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
        "gray.jpg": Image.new("L", (8, 8), 90),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    assert scan_images(sorted(tmp_path.iterdir()))[1] == []
    for name in images:
        decoded = load_rgb(tmp_path / name)
        assert decoded.mode == "RGB" and decoded.size[0] in (4, 8), name
    red, green, blue = load_rgb(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert red > 200 and green < 60 and blue < 60
    assert load_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (156, 156, 156)


def test_load_rgb__exif_rotated_photo_is_upright(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 8  # Rotate 90 degrees counter-clockwise to display.
    path = tmp_path / "portrait.jpg"
    Image.new("RGB", (10, 4), "red").save(path, exif=exif.tobytes())
    assert load_rgb(path).size == (4, 10)


@pytest.mark.parametrize("side", [100_000, 10_000])
def test_load_rgb__decompression_bomb_is_refused_by_pixel_count(tmp_path: Path, side: int):
    # 10^10 pixels is over Pillow's hard limit; 10^8 is over its warning limit, refused too.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    assert path.stat().st_size < 200
    assert check_image_header(path) is None  # A real PNG header: refused when decoded.
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_rgb(path)


def test_find_images__symlink_loops_end_and_are_reported(tmp_path: Path):
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    found = find_images(tmp_path)
    assert sorted(p.name for p in found) == ["a.jpg", "b.jpg", "dangling.png", "real.png"]
    good, bad = scan_images(found)
    assert [p.name for p in good] == ["real.png"]
    reasons = {Path(item.path).name: item.reason for item in bad}
    assert reasons["a.jpg"] == "symbolic link loop"
    assert reasons["dangling.png"].startswith("file not found")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads files whatever their permissions, so chmod 000 cannot make one unreadable",
)
def test_check_image_header__unreadable_file(tmp_path: Path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        assert check_image_header(path) == "permission denied"
        with pytest.raises(ImageDecodeError, match="permission denied"):
            load_rgb(path)
    finally:
        path.chmod(0o644)


def test_non_utf8_file_names_are_read_listed_and_printable(tmp_path: Path):
    folder = os.fsencode(tmp_path)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "green").save(buffer, format="PNG")
    with open(os.path.join(folder, b"caf\xe9.png"), "wb") as stream:
        stream.write(buffer.getvalue())
    with open(os.path.join(folder, b"\xff\xfe.jpg"), "wb") as stream:
        stream.write(b"not an image")
    good, bad = scan_images(find_images(tmp_path))
    assert len(good) == 1 and load_rgb(good[0]).getpixel((0, 0))[1] > 100
    assert len(bad) == 1
    skipped = SkippedImages(tmp_path / "skipped.txt")
    assert skipped.record(bad) == 1
    assert os.path.join(folder, b"\xff\xfe.jpg") in (tmp_path / "skipped.txt").read_bytes()
    message = str(ImageDecodeError(bad[0].path, bad[0].reason))
    assert "\\xff\\xfe.jpg" in message
    message.encode("utf-8")  # Printable: no lone surrogates.


def test_skipped_images__lists_each_file_once_and_fail_policy_raises(tmp_path: Path):
    skipped = SkippedImages(tmp_path / "skipped.txt")
    bad = [BadImage("/data/x.jpg", "empty file")]
    assert skipped.record(bad) == 1 and skipped.record(bad) == 1
    assert (tmp_path / "skipped.txt").read_text() == "/data/x.jpg\tempty file\n"
    again = SkippedImages(tmp_path / "skipped.txt")  # A resumed run keeps the list.
    again.record(bad)
    assert (tmp_path / "skipped.txt").read_text().count("x.jpg") == 1
    with pytest.raises(ImageDecodeError, match="--on-bad-image fail"):
        SkippedImages(tmp_path / "other.txt", fail=True).record(bad)


def _hostile_folder(root: Path) -> Path:
    root.mkdir()
    for index in range(10):
        Image.new("RGB", (32, 32), (index * 20, 90, 0)).save(root / f"good_{index}.png")
    (root / "zero.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("hello")
    data = _noise_jpeg()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    return root


def test_pretrain__hostile_folder_trains_and_lists_every_bad_file(tmp_path: Path):
    data = _hostile_folder(tmp_path / "data")
    out = tmp_path / "run"
    # 12 files pass the scan; batches of 6 over one epoch meet every one of them.
    result = pretrain(config=tiny_config(data, out, batch_size=6, max_steps=2))
    assert result.steps == 2 and result.skipped_images == 5
    listed = dict(line.split("\t") for line in (out / "skipped.txt").read_text().splitlines())
    names = {Path(path).name: reason for path, reason in listed.items()}
    assert names.keys() == {"zero.jpg", "text.jpg", "loop.jpg", "truncated.jpg", "bomb.png"}
    assert "decompression bomb" in names["bomb.png"]


def test_pretrain__fail_policy_refuses_bad_files_before_training(tmp_path: Path):
    data = _hostile_folder(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"3 files .* are not readable images.*zero\.jpg"):
        pretrain(config=tiny_config(data, out, batch_size=6, on_bad_image="fail"))
    assert not out.exists()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (FileNotFoundError(2, "No such file"), "missing"),
        (PermissionError(13, "Permission denied"), "permission"),
        (OSError("image file is truncated (74 bytes not processed)"), "truncated"),
        (OSError("Truncated File Read"), "truncated"),
        (OSError("broken data stream when reading image file"), "truncated"),
        (
            Image.DecompressionBombError("Image size (3600000000 pixels) exceeds limit"),
            "too_many_pixels",
        ),
        (OSError("cannot write mode I;16S as PNG"), "unsupported"),
        (SyntaxError("bad Huffman table"), "damaged"),
    ],
)
def test_classify_decode_failure__each_kind_has_our_reason_and_its_fix(
    error: BaseException, kind: str
):
    failure = classify_decode_failure(error, limit=89_478_485)
    assert failure.kind == kind and failure.fix == FAILURE_FIXES[kind]
    assert "DOS attack" not in failure.reason and "convert it to JPEG or PNG" not in failure.fix


def test_classify_decode_failure__empty_and_text_files(tmp_path: Path):
    empty, text = tmp_path / "empty.jpg", tmp_path / "text.jpg"
    empty.write_bytes(b"")
    text.write_text("hello")
    for path, kind in ((empty, "empty"), (text, "not_image")):
        with pytest.raises(ImageDecodeError) as caught:
            load_rgb(path)
        assert caught.value.kind == kind and caught.value.fix == FAILURE_FIXES[kind]


def test_load_rgb__png_bomb_message_names_the_size_and_the_switch(tmp_path: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(60000, 60000))
    with pytest.raises(ImageDecodeError) as caught:
        load_rgb(path)
    message = str(caught.value)
    assert "60000 x 60000 pixels" in message and "SIMCLR_MAX_IMAGE_PIXELS" in message
    assert "convert it to JPEG or PNG" not in message and caught.value.kind == "too_many_pixels"


def test_load_rgb__the_switch_is_the_only_pixel_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_noise_jpeg(48))
    # Pillow's own guard set far below the image: SIMCLR_MAX_IMAGE_PIXELS=0 still reads it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setenv("SIMCLR_MAX_IMAGE_PIXELS", "0")
    assert load_rgb(path).size == (48, 48)
    assert Image.MAX_IMAGE_PIXELS == 100
    monkeypatch.setenv("SIMCLR_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageDecodeError, match="48 x 48 pixels"):
        load_rgb(path)


def test_decode_for_training__jpeg_draft_path_checks_the_pixel_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_noise_jpeg(48))
    monkeypatch.setenv("SIMCLR_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageDecodeError) as caught:
        decode_for_training(path, max_short_side=16)
    assert caught.value.kind == "too_many_pixels"
    monkeypatch.setenv("SIMCLR_MAX_IMAGE_PIXELS", "3000")
    assert decode_for_training(path, max_short_side=16).shape == (3, 16, 16)
