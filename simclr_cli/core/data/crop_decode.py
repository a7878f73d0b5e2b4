"""Crop-aware decoding of large photos: each view is cut from the full-resolution source.

The bounded decode of ``decode.py`` keeps a short side of 1.5x the view size, so that a RAM
cache of small sources stays small. On a 12-megapixel photo that throws away most of the
detail before the crop: an 8% crop of the 336 px decode is a ~95 px patch enlarged 2.3x to a
224 px view, where the paper (and torchvision's ``RandomResizedCrop``) cut the box out of the
full-resolution photo and shrink it. Here each view's crop box is drawn in the source's own
pixels first (the header gives its size), and the JPEG is decoded at the smallest DCT draft scale
(1/1, 1/2, 1/4, 1/8) at which every box of the image still has at least the view's pixels on
both sides; the boxes are then cut and resized with Pillow's antialiased bilinear filter, the
filter torchvision's PIL path uses. The colour, blur and flip stay on the training device
(``augment/batched.py``), as in the fast SSL loaders: crop at decode, colour on the device.

The boxes themselves come from the recipe's sampler (``augment.crop_at_decode`` draws them and
calls ``decode_crops`` here); this module only decodes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from PIL import Image

from ..errors import ImageDecodeError
from .files import ImageSource, load_rgb, max_image_pixels, open_source

#: The DCT scales of libjpeg's draft mode, as denominators, largest first.
DRAFT_DENOMINATORS = (8, 4, 2, 1)
#: EXIF orientation tag, and Pillow's transposition that displays each orientation.
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Orientations whose display axes are the stored ones swapped.
_SWAPPED = frozenset({5, 6, 7, 8})
#: Whether the display x and y axes run against the stored ones (for the draft's partial block).
_REVERSED = {
    2: (True, False),
    3: (True, True),
    4: (False, True),
    5: (False, False),
    6: (True, False),
    7: (True, True),
    8: (False, True),
}
_JPEG_MODES = ("RGB", "L", "CMYK", "YCbCr")


@dataclass
class CutViews:
    """The views of one image cut at decode, before colour, blur and flip.

    Attributes:
        views: uint8 (V, 3, S, S), one per crop box.
        crops: int64 (V, 4): top, left, height and width of each box in source pixels.
        source_size: Height and width of the source as displayed (EXIF orientation applied).
        denominator: The draft scale the source was decoded at (2 for 1/2); 1 for a full decode.
    """

    views: torch.Tensor
    crops: torch.Tensor
    source_size: tuple[int, int]
    denominator: int


@dataclass
class CutBatch:
    """The views of a batch's large images, cut at decode (``ImageBatch.cut``).

    Attributes:
        views: uint8 (P, 2, 3, S, S): views a and b of P images, cropped and resized, not yet
            flipped or coloured.
        rows: int64 (P,): the images' rows in the ``ImageBatch``.
        crops: int64 (P, 2, 4): the boxes of views a and b in source pixels.
        source_sizes: int64 (P, 2): height and width of the full-resolution sources.
    """

    views: torch.Tensor
    rows: torch.Tensor
    crops: torch.Tensor
    source_sizes: torch.Tensor

    def __len__(self) -> int:
        return self.rows.shape[0]


def read_source_size(path: ImageSource) -> tuple[int, int] | None:
    """Height and width of an image as displayed, from its header; None when unreadable.

    An unreadable header, or one over the pixel limit (``files.max_image_pixels``), is left for
    the decoder to report with its precise reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image_file = Image.open(open_source(path))
        with image_file as image:
            width, height = image.size
            orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    limit = max_image_pixels()
    if limit and width * height > limit:
        return None
    return (width, height) if orientation in _SWAPPED else (height, width)


def draft_denominator(crops: torch.Tensor, *, image_size: int) -> int:
    """The largest draft denominator d at which every box still has S pixels on both sides.

    Args:
        crops: int64 (V, 4): boxes (top, left, height, width) in source pixels.
        image_size: Side S of the views.

    Returns:
        8, 4, 2 or 1: the coarsest DCT scale 1/d with min(height, width) / d >= S for all boxes
        (1 when even the full resolution is smaller: such a view is enlarged, as torchvision's).
    """
    shortest = int(crops[:, 2:].min()) if len(crops) else 0
    for denominator in DRAFT_DENOMINATORS:
        if shortest / denominator >= image_size:
            return denominator
    return 1


def decode_crops(
    path: ImageSource, crops: torch.Tensor, *, image_size: int, source_size: tuple[int, int]
) -> CutViews:
    """Decode an image at the coarsest sufficient draft scale and cut and resize its boxes.

    Plain JPEGs (any EXIF orientation) are decoded in draft mode at ``draft_denominator`` and
    transposed to their displayed orientation; other files are decoded in full by ``load_rgb``.
    Each box, mapped to the decoded pixels (fractional coordinates kept), is resized to S x S
    by Pillow's antialiased bilinear filter.

    Args:
        path: The image file.
        crops: int64 (V, 4): boxes (top, left, height, width) in pixels of the displayed source.
        image_size: Side S of the views.
        source_size: Height and width of the displayed source (``read_source_size``).

    Returns:
        The views, uint8 (V, 3, S, S), with their boxes and the scale decoded at.

    Raises:
        ImageDecodeError: When the file is not an image or is damaged.
    """
    decoded = _decode_draft(path, crops, image_size=image_size, source_size=source_size)
    if decoded is None:
        image, denominator, pad = load_rgb(path), 1, (0, 0)
        if (image.height, image.width) != tuple(source_size):
            raise ImageDecodeError(path, "the image's size differs from its header's")
    else:
        image, denominator, pad = decoded
    views = torch.empty(len(crops), 3, image_size, image_size, dtype=torch.uint8)
    pad_x, pad_y = pad
    for view, (top, left, height, width) in zip(views, crops.tolist(), strict=True):
        box = (
            (left + pad_x) / denominator,
            (top + pad_y) / denominator,
            (left + width + pad_x) / denominator,
            (top + height + pad_y) / denominator,
        )
        resized = image.resize(
            (image_size, image_size), Image.Resampling.BILINEAR, box=box, reducing_gap=None
        )
        array = torch.frombuffer(bytearray(resized.tobytes()), dtype=torch.uint8)
        view.copy_(array.view(image_size, image_size, 3).permute(2, 0, 1))
    return CutViews(views, crops.clone(), (int(source_size[0]), int(source_size[1])), denominator)


def _decode_draft(
    path: ImageSource, crops: torch.Tensor, *, image_size: int, source_size: tuple[int, int]
) -> tuple[Image.Image, int, tuple[int, int]] | None:
    """A JPEG decoded at the draft scale for ``crops``, displayed; None for other files.

    Returns:
        The RGB image, the denominator d, and the offsets (x, y) in source pixels to add to
        displayed coordinates before dividing by d: on an axis the orientation reverses, the
        draft's partial last block of pixels comes first.
    """
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            # Over the limit is refused below, by load_rgb, with its message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image_file = Image.open(open_source(path))
        with image_file as image:
            if image.format != "JPEG" or image.mode not in _JPEG_MODES:
                return None
            if limit and image.width * image.height > limit:
                return None
            orientation = image.getexif().get(_ORIENTATION_TAG, 1)
            orientation = orientation if orientation in _TRANSPOSE else 1
            width, height = image.size
            shown = (width, height) if orientation in _SWAPPED else (height, width)
            if shown != tuple(source_size):
                return None
            wanted = draft_denominator(crops, image_size=image_size)
            if wanted > 1:
                image.draft("RGB", (width // wanted, height // wanted))
            denominator = _denominator_of(image.size, (width, height))
            if denominator is None:
                return None
            image.load()
            decoded: Image.Image = image if image.mode == "RGB" else image.convert("RGB")
            if orientation != 1:
                decoded = decoded.transpose(_TRANSPOSE[orientation])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # load_rgb gives the precise message.
    reversed_x, reversed_y = _REVERSED.get(orientation, (False, False))
    shown_height, shown_width = source_size
    pad_x = math.ceil(shown_width / denominator) * denominator - shown_width if reversed_x else 0
    pad_y = math.ceil(shown_height / denominator) * denominator - shown_height if reversed_y else 0
    return decoded, denominator, (pad_x, pad_y)


def _denominator_of(scaled: tuple[int, int], full: tuple[int, int]) -> int | None:
    # libjpeg's scaled sizes are ceil(full / d); any other size is not a draft scale we know.
    for denominator in DRAFT_DENOMINATORS:
        if all(s == math.ceil(f / denominator) for s, f in zip(scaled, full, strict=True)):
            return denominator
    return None
