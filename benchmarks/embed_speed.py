"""Images/s of ``simclr embed`` against a plain timm inference loop on the same model and files.

Both embed the same folder of JPEGs with the same backbone weights, batch size, loader workers
and preprocessing (resize, centre crop, normalise). ``embed`` is the library call
``embed(config=EmbedConfig(..., output=x.npy))``: file resolution, bad-image checks, the
streamed memory-mapped .npy output and the progress callback included. The plain loop is what a
user would write: a ``Dataset`` of ``Image.open(path).convert("RGB")`` and the transform, a
``DataLoader``, ``torch.inference_mode()``, rows collected in a list and ``np.save`` at the end.
The two alternate (A B A B ...); the figure is the median images/s of each and their ratio
(the goal of issue 15: at least 0.9).

``--against index`` times ``simclr index`` (``build_index``: header scan, embedding, float16
rows, paths and index.json written) instead of the plain loop, alternating with ``embed`` on the
same files (the goal of issue 17: index at least 0.9x the images/s of embed).

Sources are synthetic photos (smooth colour fields with edges) at ``--source-size`` px, or the
JPEGs of ``--data``. The model is a freshly initialised SimCLR model of ``--backbone`` (the
weights do not change the speed).

    flock /tmp/simclr_bench.lock python benchmarks/embed_speed.py --images 2000 --rounds 3
    python benchmarks/embed_speed.py --images 64 --rounds 1 --backbone test_resnet   # smoke run
    python benchmarks/embed_speed.py --data ../shared/datasets/cifar10 --images 50000 \
        --image-size 32 --rounds 2 --against index
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
from torch.utils.data import DataLoader, Dataset

from simclr_cli.core._threads import default_workers
from simclr_cli.core.config import EmbedConfig, IndexConfig
from simclr_cli.core.eval.embed import embed, eval_transform_for
from simclr_cli.core.model.files import load_model, save_model
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.retrieval.index import build_index


def make_photos(folder: Path, count: int, side: int, seed: int = 0) -> list[Path]:
    """Write ``count`` synthetic JPEGs (quality 90) of side x side pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    paths = []
    for index in range(count):
        a, b, c = generator.uniform(0, 6.28, 3)
        red = 127 + 120 * np.sin(6 * x + a)
        green = 127 + 120 * np.sin(5 * y + b)
        blue = 127 + 120 * np.sin(4 * (x + y) + c)
        pixels = np.stack([red, green, blue], axis=-1)
        pixels[(x > 0.3) & (x < 0.6) & (y > 0.2) & (y < 0.7)] *= 0.4  # A hard edge.
        path = folder / f"photo_{index:06d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


class PlainFiles(Dataset):
    """What a plain timm loop reads: PIL's RGB decode and the transform."""

    def __init__(self, paths: list[Path], transform):
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("RGB"))


def time_plain(
    model_path: Path, paths: list[Path], out: Path, *, batch: int, workers: int
) -> float:
    """Images/s of the plain loop: load, decode, forward, collect, save."""
    started = time.perf_counter()
    model = load_model(model_path)
    network = model.backbone.eval()
    loader = DataLoader(
        PlainFiles(paths, eval_transform_for(model.metadata)),
        batch_size=batch,
        num_workers=workers,
    )
    rows = []
    with torch.inference_mode():
        for images in loader:
            rows.append(network(images).float().numpy())
    np.save(out, np.concatenate(rows))
    return len(paths) / (time.perf_counter() - started)


def time_embed(model_path: Path, folder: Path, out: Path, *, batch: int, workers: int) -> float:
    """Images/s of ``embed`` to a streamed .npy, model loading and input resolution included."""
    started = time.perf_counter()
    result = embed(
        config=EmbedConfig(
            model=model_path, inputs=[folder], output=out, batch_size=batch, workers=workers
        )
    )
    return len(result.paths) / (time.perf_counter() - started)


def time_index(
    model_path: Path,
    folder: Path,
    out: Path,
    *,
    batch: int,
    workers: int,
    flip_invariant: bool = False,
) -> float:
    """Images/s of ``index`` into a fresh folder, model loading and the header scan included."""
    started = time.perf_counter()
    build = build_index(
        config=IndexConfig(
            model=model_path,
            inputs=[folder],
            out=out,
            force=True,
            batch_size=batch,
            workers=workers,
            faiss_min_images=0,
            flip_invariant=flip_invariant,
        )
    )
    return len(build.index) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--source-size", type=int, default=512)
    parser.add_argument("--data", type=Path, help="A folder of JPEGs instead of synthetic ones.")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--stem", default="auto", help="auto (CIFAR stem at 64 px and below), imagenet or cifar"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--against",
        choices=("plain", "index"),
        default="plain",
        help="what embed is compared with: a plain timm loop, or simclr index",
    )
    parser.add_argument(
        "--flip-invariant", action="store_true", help="with --against index: index --flip-invariant"
    )
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="embed_speed_") as temporary:
        root = Path(temporary)
        if arguments.data is not None:
            paths = sorted(arguments.data.rglob("*.jpg"))[: arguments.images]
            folder = root / "links"
            folder.mkdir()
            for index, path in enumerate(paths):
                (folder / f"{index:06d}.jpg").symlink_to(path.resolve())
            paths = sorted(folder.iterdir())
        else:
            folder = root / "photos"
            paths = make_photos(folder, arguments.images, arguments.source_size)
        model = create_simclr_model(
            backbone=arguments.backbone, stem=arguments.stem, image_size=arguments.image_size
        )
        model_path = root / "model.safetensors"
        save_model(model_path, model)
        common = {"batch": arguments.batch_size, "workers": arguments.workers}
        embed_speeds, plain_speeds = [], []
        for round_index in range(arguments.rounds):
            embed_speeds.append(time_embed(model_path, folder, root / "a.npy", **common))
            if arguments.against == "index":
                plain_speeds.append(
                    time_index(
                        model_path,
                        folder,
                        root / "ix",
                        flip_invariant=arguments.flip_invariant,
                        **common,
                    )
                )
            else:
                plain_speeds.append(time_plain(model_path, paths, root / "b.npy", **common))
            print(
                f"round {round_index + 1}: embed {embed_speeds[-1]:.1f} img/s, "
                f"{arguments.against} {plain_speeds[-1]:.1f} img/s",
                flush=True,
            )
        first = np.load(root / "a.npy")
        if arguments.against == "index" and arguments.flip_invariant:
            agree = True  # Mirror-averaged rows differ from embed's by design.
        elif arguments.against == "index":
            # The index stores unit rows in float16 (in its own path order).
            second = np.load(root / "ix" / "embeddings.npy").astype(np.float32)
            first = first / np.linalg.norm(first, axis=1, keepdims=True)
            agree = bool(np.allclose(np.sort(first.sum(1)), np.sort(second.sum(1)), atol=5e-2))
        else:
            second = np.load(root / "b.npy")
            agree = bool(np.allclose(first, second, rtol=1e-4, atol=1e-4))
    embed_median = statistics.median(embed_speeds)
    plain_median = statistics.median(plain_speeds)
    summary = {
        "images": len(paths),
        "source_size": None if arguments.data is not None else arguments.source_size,
        "backbone": arguments.backbone,
        "image_size": arguments.image_size,
        "stem": arguments.stem,
        "flip_invariant": arguments.flip_invariant,
        "batch_size": arguments.batch_size,
        "workers": arguments.workers,
        "embed_images_per_second": round(embed_median, 1),
        f"{arguments.against}_images_per_second": round(plain_median, 1),
        # embed against the plain loop; index against embed.
        "ratio": round(
            plain_median / embed_median
            if arguments.against == "index"
            else embed_median / plain_median,
            3,
        ),
        "same_rows": agree,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
