"""Decoding training images: the short-side bound, draft-mode JPEGs, EXIF, edge-padded stacks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simclr_cli.core.data.decode import decode_for_training, source_side_bound, stack_images
from simclr_cli.core.data.files import load_rgb


def smooth_photo(path: Path, width: int, height: int, **save: object) -> Path:
    """A smooth colour gradient saved as an image, so resampling differences stay small."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    Image.fromarray(array.astype(np.uint8)).save(path, **save)
    return path


def test_source_side_bound__grows_with_image_size():
    assert source_side_bound(32) == 48
    assert source_side_bound(224) == 336


def test_decode_for_training__jpeg_draft_bounds_short_side_and_matches_full_decode(
    tmp_path: Path,
):
    path = smooth_photo(tmp_path / "big.jpg", 800, 600, quality=95)
    image = decode_for_training(path, max_short_side=100)
    assert image.dtype == torch.uint8 and image.shape == (3, 100, 133)
    # The same size made from a full decode, resized by Pillow.
    full = load_rgb(path).resize((133, 100), Image.Resampling.BILINEAR)
    expected = torch.from_numpy(np.array(full)).permute(2, 0, 1)
    assert (image.float() - expected.float()).abs().mean() < 2.0


def test_decode_for_training__small_images_and_other_formats_are_kept_as_they_are(
    tmp_path: Path,
):
    png = smooth_photo(tmp_path / "small.png", 40, 30)
    image = decode_for_training(png, max_short_side=48)
    assert image.shape == (3, 30, 40)
    expected = torch.from_numpy(np.array(Image.open(png).convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(image, expected)


def test_decode_for_training__exif_rotation_is_applied(tmp_path: Path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
    smooth_photo(path, 400, 200, exif=exif.tobytes())
    assert decode_for_training(path, max_short_side=100).shape == (3, 200, 100)


def test_stack_images__pads_smaller_images_with_their_edge_pixels():
    small = torch.arange(12, dtype=torch.uint8).view(3, 2, 2)
    large = torch.zeros(3, 3, 4, dtype=torch.uint8)
    batch, sizes = stack_images([small, large])
    assert batch.shape == (2, 3, 3, 4)
    assert sizes.tolist() == [[2, 2], [3, 4]]
    assert torch.equal(batch[0, :, :2, :2], small)
    assert torch.equal(batch[0, :, 2, :2], small[:, 1, :])  # Bottom row repeated.
    assert torch.equal(batch[0, :, :2, 3], small[:, :, 1])  # Right column repeated.
