"""Augmentation throughput: two SimCLR views per image, uint8 in, normalised float out.

Compares, on one CPU core (``torch.set_num_threads(1)``, one process), the batched
augmentation used by ``simclr pretrain`` (``simclr_cli.core.augment.batched``), the per-image
torchvision v2 reference (``simclr_cli.core.augment.reference.ViewTransform``) and lightly's
``SimCLRTransform`` on PIL images, in alternating order. Sources are CIFAR-10 training images,
used as they are (32 x 32) for 32 px views and resized to ``--source-size`` for 224 px views
(what the RAM cache holds for a photo folder). The conversion to PIL for lightly is not timed.

    flock /tmp/simclr_bench.lock python benchmarks/datapipe.py --image-size 32
    flock /tmp/simclr_bench.lock python benchmarks/datapipe.py --image-size 224

On a machine shared with other jobs, ``--clock cpu`` times by CPU time instead of wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.augment.reference import ViewTransform
from simclr_cli.core.data.decode import decode_for_training

DATA = Path(__file__).resolve().parents[1] / "../shared/datasets/cifar10/train"
#: The clock of every timing: wall time by default; ``--clock cpu`` takes the process's CPU time
#: instead, which on a machine shared with other jobs leaves out the time spent waiting for a
#: core (all timed code runs on one thread).
clock = time.perf_counter


def load_sources(root: Path, count: int, side: int) -> torch.Tensor:
    paths = sorted(root.rglob("*.jpg"))
    paths = paths[:: max(1, len(paths) // count)]
    images = []
    for path in paths[:count]:
        image = decode_for_training(path, max_short_side=1024)
        if side != image.shape[-1]:
            pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((side, side))
            image = torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()
        images.append(image)
    return torch.stack(images)


def time_batched(images: torch.Tensor, preset: str, image_size: int, batch: int) -> float:
    augment = BatchAugmenter(
        preset, image_size=image_size, generator=torch.Generator().manual_seed(0)
    )
    sizes = torch.tensor(images.shape[-2:]).repeat(len(images), 1)
    started = clock()
    for start in range(0, len(images), batch):
        augment(images[start : start + batch], sizes[start : start + batch])
    return len(images) / (clock() - started)


def time_reference(images: torch.Tensor, preset: str, image_size: int) -> float:
    transform = ViewTransform(preset, image_size=image_size)
    started = clock()
    for image in images:
        transform(image), transform(image)
    return len(images) / (clock() - started)


def time_kornia(images: torch.Tensor, preset: str, image_size: int, batch: int) -> float:
    import kornia.augmentation as K

    strength = 0.5 if preset == "cifar" else 1.0
    steps = [
        K.RandomResizedCrop((image_size, image_size), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength, p=0.8),
        K.RandomGrayscale(p=0.2),
    ]
    if preset != "cifar":
        kernel = max(3, int(0.1 * image_size)) | 1
        steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5))
    steps.append(
        K.Normalize(torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))
    )
    augment = K.AugmentationSequential(*steps)
    started = clock()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            floats = images[start : start + batch].float() / 255
            augment(floats), augment(floats)
    return len(images) / (clock() - started)


def time_lightly(pil_images: list, preset: str, image_size: int) -> float:
    from lightly.transforms import SimCLRTransform

    cifar = preset == "cifar"
    transform = SimCLRTransform(
        input_size=image_size,
        cj_strength=0.5 if cifar else 1.0,
        gaussian_blur=0.0 if cifar else 0.5,
    )
    started = clock()
    for image in pil_images:
        transform(image)
    return len(pil_images) / (clock() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=256, help="Source side for > 64 px.")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="cpu: for a shared machine."
    )
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(1)
    small = args.image_size <= 64
    preset = "cifar" if small else "imagenet"
    count = args.images or (1024 if small else 128)
    batch = 256 if small else 64
    images = load_sources(args.data, count, 32 if small else args.source_size)
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    results: dict[str, list[float]] = {"batched": [], "reference": [], "lightly": [], "kornia": []}
    time_batched(images[:batch], preset, args.image_size, batch)  # Warm-up.
    for round_ in range(args.rounds):
        runs = [
            ("batched", lambda: time_batched(images, preset, args.image_size, batch)),
            ("reference", lambda: time_reference(images[: count // 4], preset, args.image_size)),
            ("lightly", lambda: time_lightly(pil_images, preset, args.image_size)),
            ("kornia", lambda: time_kornia(images[: count // 2], preset, args.image_size, batch)),
        ]
        for name, run in runs if round_ % 2 == 0 else runs[::-1]:
            results[name].append(run())
    summary = {name: round(statistics.median(values), 1) for name, values in results.items()}
    print(
        json.dumps(
            {
                "image_size": args.image_size,
                "clock": args.clock,
                "preset": preset,
                "source": list(images.shape[-2:]),
                "images": count,
                "pairs_per_second_per_core": summary,
                "batched_vs_lightly": round(summary["batched"] / summary["lightly"], 2),
                "runs": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
