"""Quality and speed of `simclr index`, `search` and `duplicates`.

Quality (needs a model and a labelled folder such as CIFAR-10's):

- planted duplicates: a sample of the folder plus, for some of its images, one altered copy each
  (re-encoded at another JPEG quality, resized, cropped by 5-10 %, flipped or colour-shifted);
  precision and recall of the pairs ``duplicates`` finds at each threshold, against the planted
  pairs;
- kNN label agreement: the share of the top-10 ``search`` neighbours of each image that share its
  class, for the model and for a randomly initialised backbone of the same architecture.

Speed (synthetic): exact blocked search of Q queries against N x 512 unit rows (float16, as an
index stores them) and the FAISS IVF path beside it: queries per second and memory.

Prints markdown tables and the CPU's vector flags. Real sizes (the lead runs them):

    python benchmarks/search.py --model runs/cifar/model.safetensors \
        --data /work/shared/datasets/cifar10/train --images 50000 --planted 2000 \
        --speed-rows 1000000 --speed-queries 10000

A tiny run to check that it works: ``--images 300 --planted 60 --speed-rows 20000
--speed-queries 100``.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from simclr_cli.core.config import DEFAULT_DUPLICATE_THRESHOLD, IndexConfig
from simclr_cli.core.data.files import find_labeled_images
from simclr_cli.core.model.files import load_model, save_model
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.retrieval import _faiss
from simclr_cli.core.retrieval.duplicates import similar_pairs
from simclr_cli.core.retrieval.index import build_index, normalize_rows
from simclr_cli.core.retrieval.search import exact_search

THRESHOLDS = (0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
ALTERATIONS = ("jpeg", "resize", "crop", "flip", "color")


def cpu_flags() -> str:
    """The vector extensions the CPU announces (what the speed figures depend on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if "flags" in line), []
    )
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return " ".join(flag for flag in wanted if flag in flags) or "none of avx2/avx512/amx"


def alter(image: Image.Image, kind: str, rng: random.Random) -> Image.Image:
    """One altered copy of ``image``: what a near duplicate looks like in a photo collection."""
    width, height = image.size
    if kind == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.choice((30, 50, 70, 90)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if kind == "resize":
        scale = rng.choice((0.75, 1.5, 2.0))
        return image.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)
    if kind == "crop":
        cut = rng.uniform(0.05, 0.10)
        dx, dy = round(width * cut), round(height * cut)
        left, top = rng.randint(0, dx), rng.randint(0, dy)
        return image.crop((left, top, width - (dx - left), height - (dy - top)))
    if kind == "flip":
        return ImageOps.mirror(image)
    shifted = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Color(shifted).enhance(rng.uniform(0.8, 1.2))


def plant(sample: list[Path], count: int, folder: Path, seed: int) -> list[tuple[Path, Path, str]]:
    """Write one altered copy of ``count`` sampled images; returns (original, copy, kind)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    planted = []
    for number, original in enumerate(rng.sample(sample, count)):
        kind = ALTERATIONS[number % len(ALTERATIONS)]
        with Image.open(original) as opened:
            copy = alter(opened.convert("RGB"), kind, rng)
        target = folder / f"{number:05d}-{kind}.png"
        copy.save(target)
        planted.append((original, target, kind))
    return planted


def duplicate_quality(
    model: Path,
    data: Path,
    *,
    images: int,
    planted: int,
    seed: int,
    work: Path,
    flip_invariant: bool = False,
) -> tuple[list[str], list[tuple[Path, int]]]:
    """Precision and recall of the planted pairs per threshold; returns table lines."""
    paths, labels, _ = find_labeled_images(data)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(paths)), min(images, len(paths))))
    sample = [paths[i] for i in chosen]
    copies = plant(sample, min(planted, len(sample)), work / "planted", seed)
    start = time.perf_counter()
    build = build_index(
        config=IndexConfig(
            model=model,
            inputs=sample + [copy for _, copy, _ in copies],
            out=work / "index",
            force=True,
            faiss_min_images=0,
            flip_invariant=flip_invariant,
        )
    )
    seconds = time.perf_counter() - start
    index = build.index
    truth = {
        tuple(sorted((index.row_of(original), index.row_of(copy)))) for original, copy, _ in copies
    }
    kinds = {
        tuple(sorted((index.row_of(original), index.row_of(copy)))): kind
        for original, copy, kind in copies
    }
    first, second, value, _, _ = similar_pairs(index.embeddings, threshold=min(THRESHOLDS))
    lines = [
        f"Planted duplicates: {len(sample)} images of {data} + {len(copies)} altered copies "
        f"({', '.join(ALTERATIONS)}), model {model}"
        f"{', --flip-invariant' if flip_invariant else ''}; indexed at "
        f"{len(index) / seconds:.0f} images/s",
        "",
        "| threshold | pairs found | precision | recall | "
        + " | ".join(f"recall {k}" for k in ALTERATIONS)
        + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in ALTERATIONS) + " |",
    ]
    for threshold in THRESHOLDS:
        keep = value >= threshold
        found = set(zip(first[keep].tolist(), second[keep].tolist(), strict=True))
        hits = found & truth
        precision = len(hits) / len(found) if found else 1.0
        recall = len(hits) / len(truth)
        per_kind = []
        for kind in ALTERATIONS:
            of_kind = {pair for pair in truth if kinds[pair] == kind}
            per_kind.append(f"{len(of_kind & hits) / max(1, len(of_kind)):.3f}")
        marker = " (default)" if threshold == DEFAULT_DUPLICATE_THRESHOLD else ""
        lines.append(
            f"| {threshold:g}{marker} | {len(found)} | {precision:.3f} | {recall:.3f} | "
            + " | ".join(per_kind)
            + " |"
        )
    sample_labels = [(path, labels[i]) for path, i in zip(sample, chosen, strict=True)]
    return lines, sample_labels


def knn_agreement(model: Path, sample: list[tuple[Path, int]], *, work: Path, k: int = 10) -> float:
    """Share of each image's top-k neighbours (itself left out) that share its class."""
    out = work / f"knn-{model.stem}"
    index = build_index(
        config=IndexConfig(
            model=model, inputs=[p for p, _ in sample], out=out, force=True, faiss_min_images=0
        )
    ).index
    label_of = {os.path.abspath(path): label for path, label in sample}
    labels = np.array([label_of[record.path] for record in index.records])
    queries = np.asarray(index.embeddings, dtype=np.float32)
    _, found = exact_search(queries, index.embeddings, top_k=k, exclude=np.arange(len(index)))
    return float((labels[found] == labels[:, None]).mean())


def random_init_copy(model: Path, work: Path) -> Path:
    """A randomly initialised model of the same backbone and preprocessing."""
    trained = load_model(model)
    metadata = trained.metadata
    fresh = create_simclr_model(
        backbone=metadata.backbone,
        stem=metadata.stem,
        image_size=metadata.image_size,
        head=metadata.head_version,
        head_output_dim=metadata.head_output_dim,
        metadata={
            "mean": metadata.mean,
            "std": metadata.std,
            "crop_fraction": metadata.crop_fraction,
        },
    )
    path = work / "random-init.safetensors"
    save_model(path, fresh)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(rows: int, queries: int, dimension: int, top_k: int, seed: int) -> list[str]:
    """Queries per second of exact search and of FAISS IVF on synthetic unit rows."""
    generator = np.random.default_rng(seed)
    # Clustered rows (as real embeddings are), so that IVF's lists mean something.
    centres = generator.normal(size=(max(1, rows // 1000), dimension)).astype(np.float32)
    data = np.empty((rows, dimension), dtype=np.float16)
    for start in range(0, rows, 100_000):
        count = min(100_000, rows - start)
        points = centres[generator.integers(0, len(centres), count)]
        points += 0.5 * generator.normal(size=(count, dimension)).astype(np.float32)
        data[start : start + count] = normalize_rows(points)
    asked = normalize_rows(
        data[generator.integers(0, rows, queries)].astype(np.float32)
        + 0.05 * generator.normal(size=(queries, dimension)).astype(np.float32)
    )
    lines = [
        f"Search speed: {queries} queries against {rows} x {dimension} float16 rows "
        f"({data.nbytes / 2**20:.0f} MiB), top {top_k}; CPU flags: {cpu_flags()}",
        "",
        "| method | build s | queries/s | recall@10 vs exact | peak RSS MiB |",
        "| --- | --- | --- | --- | --- |",
    ]
    start = time.perf_counter()
    _, exact_rows = exact_search(asked, data, top_k=top_k)
    exact_seconds = time.perf_counter() - start
    lines.append(
        f"| exact (torch, blocked) | 0 | {queries / exact_seconds:.1f} | 1.000 | "
        f"{peak_rss_mb():.0f} |"
    )
    if _faiss.available():
        start = time.perf_counter()
        index = _faiss.create_faiss_index(data)
        built = time.perf_counter() - start
        start = time.perf_counter()
        _, faiss_rows = _faiss.faiss_search(index, asked, top_k=top_k)
        faiss_seconds = time.perf_counter() - start
        recall = np.mean(
            [len(set(a) & set(b)) / top_k for a, b in zip(faiss_rows, exact_rows, strict=True)]
        )
        lines.append(
            f"| faiss IVFFlat ({index.nlist} lists, {index.nprobe} probes) | {built:.1f} | "
            f"{queries / faiss_seconds:.1f} | {recall:.3f} | {peak_rss_mb():.0f} |"
        )
    else:
        lines.append("| faiss | - | not installed (pip install simclr-cli[faiss]) | - | - |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model.safetensors; without it, speed only")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10" / "train",
    )
    parser.add_argument("--images", type=int, default=10_000, help="images sampled from --data")
    parser.add_argument("--planted", type=int, default=1_000, help="altered copies planted")
    parser.add_argument("--speed-rows", type=int, default=1_000_000)
    parser.add_argument("--speed-queries", type=int, default=10_000)
    parser.add_argument("--dimension", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--flip-invariant",
        choices=("off", "on", "both"),
        default="both",
        help="index the planted set with `--flip-invariant`, without, or both (two tables)",
    )
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="simclr-search-bench-") as folder:
        work = Path(folder)
        if arguments.model is not None:
            variants = {"off": (False,), "on": (True,), "both": (False, True)}
            for flip_invariant in variants[arguments.flip_invariant]:
                lines, sample = duplicate_quality(
                    arguments.model,
                    arguments.data,
                    images=arguments.images,
                    planted=arguments.planted,
                    seed=arguments.seed,
                    work=work,
                    flip_invariant=flip_invariant,
                )
                print("\n".join(lines) + "\n", flush=True)
            trained = knn_agreement(arguments.model, sample, work=work)
            random_init = knn_agreement(random_init_copy(arguments.model, work), sample, work=work)
            print("| encoder | top-10 kNN label agreement |\n| --- | --- |")
            print(f"| {arguments.model} | {trained:.3f} |\n| random init | {random_init:.3f} |\n")
        if not arguments.skip_speed:
            lines = speed(
                arguments.speed_rows,
                arguments.speed_queries,
                arguments.dimension,
                10,
                arguments.seed,
            )
            print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
