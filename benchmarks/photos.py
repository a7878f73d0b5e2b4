"""Full-resolution photos: sharpness and speed of crop-aware decoding (issue 15, item 2).

Makes a folder of synthetic high-detail photos (fine textures, rings and hard edges at
4000 x 3000 and 6000 x 4000, JPEG quality 90) and measures, for 224 px views:

(a) sharpness: the mean gradient magnitude of our views (``CropAtDecode``: boxes drawn in the
    photo's pixels, decoded at the coarsest sufficient draft scale, cut and resized) against
    torchvision's ``RandomResizedCrop`` of the same boxes from the full-resolution decode
    (``v2.functional.resized_crop``, antialiased bilinear), and of the old path (the bounded
    336 px decode, the same boxes scaled to it). Goal: ours within 5% of torchvision's.
(b) pairs per second on one core (``torch.set_num_threads(1)``, one process) of decode + crop +
    the batched augmentation (``BatchAugmenter`` on the cut views) against lightly's
    ``SimCLRTransform`` (PIL decode of the full photo + its transform) on the same files, in
    alternating rounds. lightly is optional: without it only ours is reported. Goal: 2x.

    python benchmarks/photos.py --photos 16 --out /tmp/photos
    python benchmarks/photos.py --photos 2 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.augment.crop_at_decode import CropAtDecode
from simclr_cli.core.data.crop_decode import CutViews
from simclr_cli.core.data.decode import decode_for_training, source_side_bound
from simclr_cli.core.data.files import load_rgb
from simclr_cli.core.data.loader import collate_images

#: Photo sizes (width, height), alternating.
PHOTO_SIZES = ((4000, 3000), (6000, 4000))


def make_photos(root: Path, count: int, *, seed: int = 0) -> list[Path]:
    """``count`` synthetic photos: textures, rings and edges with fine detail, JPEG quality 90."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for number in range(count):
        width, height = PHOTO_SIZES[number % len(PHOTO_SIZES)]
        path = root / f"photo{number:03d}_{width}x{height}.jpg"
        if not path.exists():
            y, x = np.mgrid[0:height, 0:width].astype(np.float32)
            period = rng.uniform(3.0, 9.0, size=3)
            centre = rng.uniform(0, 1, size=2) * (width, height)
            red = 127 + 70 * np.sin(x / period[0]) * np.cos(y / period[1])
            green = 127 + 100 * np.sin(np.hypot(x - centre[0], y - centre[1]) / period[2])
            blue = np.where(((x // 53) + (y // 41)) % 2 == 0, 30.0, 225.0).astype(np.float32)
            noise = rng.normal(0, 12, size=(height, width)).astype(np.float32)
            pixels = np.stack([red + noise, green, blue + noise], axis=-1)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def gradient_magnitude(views: torch.Tensor) -> float:
    """Mean gradient magnitude of uint8 views (V, 3, S, S), in levels per pixel."""
    gray = views.float().mean(dim=1)
    dx = gray[:, :, 1:] - gray[:, :, :-1]
    dy = gray[:, 1:, :] - gray[:, :-1, :]
    return float(torch.sqrt(dx[:, :-1, :] ** 2 + dy[:, :, :-1] ** 2).mean())


def sharpness(paths: list[Path], cutter: CropAtDecode, *, views_per_photo: int) -> dict:
    """Gradient magnitude of ours, torchvision's and the old path on the same boxes."""
    size = cutter.image_size
    ours, reference, bounded = [], [], []
    for path in paths:
        full = TF.pil_to_tensor(load_rgb(path))
        small = decode_for_training(path, max_short_side=source_side_bound(size))
        ratio = small.shape[-1] / full.shape[-1]
        for seed in range(views_per_photo // 2):
            cut = cutter(path, seed=seed)
            assert isinstance(cut, CutViews)
            ours.append(cut.views)
            for top, left, height, width in cut.crops.tolist():
                reference.append(
                    TF.resized_crop(full, top, left, height, width, [size, size], antialias=True)
                )
                box = [round(v * ratio) for v in (top, left, height, width)]
                bounded.append(TF.resized_crop(small, *box, [size, size], antialias=True))
    figures = {
        "ours": gradient_magnitude(torch.cat(ours)),
        "torchvision_full_resolution": gradient_magnitude(torch.stack(reference)),
        "bounded_decode": gradient_magnitude(torch.stack(bounded)),
    }
    figures["ours_vs_torchvision"] = figures["ours"] / figures["torchvision_full_resolution"]
    figures["bounded_vs_torchvision"] = (
        figures["bounded_decode"] / figures["torchvision_full_resolution"]
    )
    return figures


def time_ours(
    paths: list[Path], cutter: CropAtDecode, augmenter: BatchAugmenter, seed: int
) -> float:
    """Seconds for decode + crop + batched augmentation of one pair per photo."""
    started = time.perf_counter()
    samples = [(index, cutter(path, seed=seed + index)) for index, path in enumerate(paths)]
    batch = collate_images(samples)
    augmenter(batch.images, batch.sizes, cut=batch.cut)
    return time.perf_counter() - started


def time_lightly(paths: list[Path], transform: object) -> float:
    """Seconds for lightly's pipeline: PIL decode of each photo and its two-view transform."""
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            transform(image.convert("RGB"))  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="folder of photos (kept)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--views", type=int, default=8, help="views per photo for sharpness")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.out or Path(tempfile.mkdtemp(prefix="simclr_photos_"))
    paths = make_photos(root, args.photos)
    augmenter = BatchAugmenter("imagenet", image_size=args.image_size, generator=None)
    cutter = CropAtDecode(augmenter.recipe)
    results: dict = {"photos": len(paths), "folder": str(root), "image_size": args.image_size}
    results["sharpness"] = sharpness(paths, cutter, views_per_photo=args.views)
    try:
        from lightly.transforms import SimCLRTransform  # type: ignore[import-not-found]

        lightly = SimCLRTransform(input_size=args.image_size)
    except ImportError:
        lightly = None
        results["lightly"] = "not installed: only ours is timed"
    ours_times, lightly_times = [], []
    for round_number in range(args.rounds):
        ours_times.append(time_ours(paths, cutter, augmenter, seed=1000 * round_number))
        if lightly is not None:
            lightly_times.append(time_lightly(paths, lightly))
    results["ours_pairs_per_second_per_core"] = len(paths) / statistics.median(ours_times)
    if lightly_times:
        lightly_rate = len(paths) / statistics.median(lightly_times)
        results["lightly_pairs_per_second_per_core"] = lightly_rate
        results["speedup"] = results["ours_pairs_per_second_per_core"] / lightly_rate
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
