"""Crop-aware decoding: views cut from a draft-scale decode equal crops of the full decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simclr_cli.core.data.crop_decode import (
    decode_crops,
    draft_denominator,
    read_source_size,
)
from simclr_cli.core.data.files import load_rgb
from simclr_cli.core.errors import ImageDecodeError

#: Mean absolute difference, in levels of 255, allowed between a view cut from a draft-scale
#: decode and the same box cut from the full decode. libjpeg's DCT scaling (and its chroma
#: handling at a reduced scale) is not Pillow's bilinear filter: on these photos, made hard on
#: purpose (31 px stripes, rings and a 4:2:0-subsampled checkerboard of hard edges), the mean
#: difference measured 1.6-2.3 levels at 1/2 and 1/4 (single pixels up to 40 at the edges),
#: while a box off by one draft pixel measured 13-24 levels. 3.0 is 1.3x the worst measured
#: and still 4x below an offset of one draft pixel.
DRAFT_MEAN_TOLERANCE = 3.0
#: Without a draft scale (1/1) the only difference is none: the same filter on the same pixels.
FULL_TOLERANCE = 0.0


def textured_photo(path: Path, width: int, height: int, *, exif_orientation: int = 1) -> Path:
    """A JPEG (quality 90) of fine stripes, rings and hard edges, where blur and offsets show."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 127 + 60 * np.sin(x / 5.0) + 60 * np.cos(y / 9.0)
    green = 127 + 100 * np.sin(np.hypot(x - width / 3, y - height / 2) / 6.0)
    blue = np.where(((x // 37) + (y // 29)) % 2 == 0, 40.0, 215.0)
    pixels = np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    if exif_orientation != 1:
        exif[0x0112] = exif_orientation
    image.save(path, quality=90, exif=exif.tobytes())
    return path


def reference_views(image: Image.Image, crops: torch.Tensor, image_size: int) -> torch.Tensor:
    """The boxes cut from the full decode and resized with the same filter: uint8 (V, 3, S, S)."""
    views = []
    for top, left, height, width in crops.tolist():
        view = image.resize(
            (image_size, image_size),
            Image.Resampling.BILINEAR,
            box=(left, top, left + width, top + height),
            reducing_gap=None,
        )
        views.append(torch.from_numpy(np.array(view)).permute(2, 0, 1))
    return torch.stack(views)


def test_draft_denominator__coarsest_scale_that_keeps_the_view_pixels():
    def boxes(*sides: tuple[int, int]) -> torch.Tensor:
        return torch.tensor([(0, 0, h, w) for h, w in sides], dtype=torch.int64)

    assert draft_denominator(boxes((1800, 2000)), image_size=224) == 8  # 225 px at 1/8
    assert draft_denominator(boxes((1791, 2000)), image_size=224) == 4  # 223.9 px at 1/8
    assert draft_denominator(boxes((900, 1000), (2000, 2000)), image_size=224) == 4
    assert draft_denominator(boxes((447, 1000)), image_size=224) == 1  # 223.5 px at 1/2
    assert draft_denominator(boxes((448, 600)), image_size=224) == 2
    assert draft_denominator(boxes((100, 120)), image_size=224) == 1  # enlarged in any case


@pytest.mark.parametrize(
    ("crop", "denominator"),
    [((40, 64, 1200, 1100), 4), ((300, 500, 500, 460), 2), ((10, 20, 300, 280), 1)],
)
def test_decode_crops__views_equal_crops_of_the_full_decode(
    tmp_path: Path, crop: tuple[int, int, int, int], denominator: int
):
    path = textured_photo(tmp_path / "photo.jpg", 1600, 1300)
    crops = torch.tensor([crop], dtype=torch.int64)
    cut = decode_crops(path, crops, image_size=224, source_size=(1300, 1600))
    assert cut.denominator == denominator
    assert cut.views.shape == (1, 3, 224, 224) and cut.views.dtype == torch.uint8
    expected = reference_views(load_rgb(path), crops, 224)
    difference = (cut.views.float() - expected.float()).abs().mean()
    tolerance = FULL_TOLERANCE if denominator == 1 else DRAFT_MEAN_TOLERANCE
    assert difference <= tolerance
    # A box shifted by one draft pixel is much further off: the tolerance catches offsets.
    if denominator > 1:
        shifted = crops + torch.tensor([0, denominator, 0, 0])
        off = (reference_views(load_rgb(path), shifted, 224).float() - cut.views.float()).abs()
        assert off.mean() > 2 * DRAFT_MEAN_TOLERANCE


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_decode_crops__exif_orientation_is_applied_before_the_boxes(
    tmp_path: Path, orientation: int
):
    path = textured_photo(tmp_path / "rotated.jpg", 1203, 905, exif_orientation=orientation)
    full = load_rgb(path)  # Transposed to its displayed orientation.
    source_size = read_source_size(path)
    assert source_size == (full.height, full.width)
    crops = torch.tensor([(17, 33, 800, 780), (100, 50, 500, 470)], dtype=torch.int64)
    cut = decode_crops(path, crops, image_size=96, source_size=source_size)
    assert cut.denominator == 4  # 470 / 4 >= 96
    expected = reference_views(full, crops, 96)
    assert (cut.views.float() - expected.float()).abs().mean() <= DRAFT_MEAN_TOLERANCE


def test_decode_crops__other_formats_are_decoded_in_full(tmp_path: Path):
    path = tmp_path / "photo.png"
    Image.open(textured_photo(tmp_path / "photo.jpg", 700, 500)).save(path)
    crops = torch.tensor([(5, 9, 400, 420)], dtype=torch.int64)
    cut = decode_crops(path, crops, image_size=64, source_size=(500, 700))
    assert cut.denominator == 1
    assert torch.equal(cut.views, reference_views(load_rgb(path), crops, 64))


def test_decode_crops__damaged_file_raises_our_error(tmp_path: Path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg at all")
    assert read_source_size(path) is None
    with pytest.raises(ImageDecodeError, match="not an image file"):
        decode_crops(path, torch.tensor([(0, 0, 10, 10)]), image_size=8, source_size=(10, 10))
