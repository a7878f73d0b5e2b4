"""Helpers of ``benchmarks/gpu_check.sh``: its folder of photos, and pretraining with figures.

    python benchmarks/gpu_check.py images FOLDER --count 2560
    python benchmarks/gpu_check.py pretrain LABEL -- DATA --out RUN --max-steps 40 ...

``images`` writes JPEG photos of 256-512 px a side (random aspect ratios): smooth colour fields,
a few shapes and pixel noise, so that decoding costs about what it costs for a photo.

``pretrain`` runs ``simclr pretrain ... --json`` in this process (one GPU trains in the calling
process), then prints the figures of the run: images/s and data wait over the whole run and over
the windows of ``metrics.jsonl`` after the first (which includes starting the workers and the
first steps' kernel selection), and the peak GPU memory that PyTorch allocated and reserved. Its
exit status is the command's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_image(job: tuple[Path, int, int]) -> None:
    """One photo-like JPEG, ``folder/image_<index>.jpg``, from its own seeded generator."""
    folder, index, seed = job
    rng = np.random.default_rng([seed, index])
    width, height = (int(side) for side in rng.integers(256, 513, size=2))
    # A coarse grid of random colours, upsampled smoothly: the large areas of a photo.
    coarse = rng.integers(0, 256, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    image = Image.fromarray(coarse.astype(np.uint8), "RGB").resize(
        (width, height), Image.Resampling.BICUBIC
    )
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.3) * min(width, height)
        fill = tuple(int(channel) for channel in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
            points = [(x + radius * np.cos(a), y + radius * np.sin(a)) for a in angles]
            draw.polygon(points, fill=fill)
    # Pixel noise: the fine texture that makes photos dearer to decode than flat drawings.
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 10, size=(height, width, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(
        folder / f"image_{index:05d}.jpg", quality=90
    )


def make_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(write_image, [(folder, index, seed) for index in range(count)], chunksize=32))
    sizes = [Image.open(path).size for path in sorted(folder.glob("*.jpg"))[:200]]
    print(
        f"{count} JPEG photos in {folder}, {min(min(size) for size in sizes)}-"
        f"{max(max(size) for size in sizes)} px a side (quality 90)"
    )


def window_figures(metrics: Path) -> tuple[float | None, float | None]:
    """Mean images/s and data wait over the logged windows after the first."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    windows = [record for record in records if "images_per_second" in record][1:]
    if not windows:
        return None, None
    return (
        statistics.mean(record["images_per_second"] for record in windows),
        statistics.mean(record["data_wait"] for record in windows),
    )


def run_pretrain(label: str, arguments: list[str]) -> int:
    import torch

    from simclr_cli.cli.app import app

    command = ["pretrain", *arguments, "--json"]
    print(f"{label}: simclr {' '.join(command)}", flush=True)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app(args=command, prog_name="simclr")
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
    sys.stderr.write(err.getvalue())
    results = [line for line in out.getvalue().splitlines() if line.startswith("{")]
    if status != 0 or not results:
        said = [line.strip() for line in err.getvalue().splitlines() if line.strip()]
        print(f"{label}: FAILED (exit {status}): {said[-1] if said else 'no message'}", flush=True)
        return status or 1
    result = json.loads(results[-1])
    later_speed, later_wait = window_figures(Path(result["run_dir"]) / "metrics.jsonl")
    later = "after the first log window"
    speed = f"  images/s: {result['images_per_second']:.0f} over the run"
    wait = f"  data wait: {result['data_wait']:.1%} over the run"
    if later_speed is not None:
        speed += f", {later_speed:.0f} {later}"
        wait += f", {later_wait:.1%} {later}"
    memory = "  peak GPU memory: n/a (no CUDA)"
    if cuda:
        memory = (
            f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
            f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved"
        )
    lines = [
        f"{label}: {result['steps']} steps, {result['images_seen']} images",
        speed,
        wait,
        memory,
        f"  final loss {result['final_loss']:.4f}, non-finite steps {result['nonfinite_steps']}, "
        f"{result['seconds']:.1f} s in the loop, {result['total_seconds']:.1f} s in all",
        f"  result: {json.dumps(result)}",
    ]
    print("\n".join(lines), flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    images = commands.add_parser("images", help="Write a folder of JPEG photos.")
    images.add_argument("folder", type=Path)
    images.add_argument("--count", type=int, default=2560)
    images.add_argument("--seed", type=int, default=0)
    pretrain = commands.add_parser("pretrain", help="simclr pretrain, then its figures.")
    pretrain.add_argument("label")
    pretrain.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "images":
        make_images(args.folder, args.count, args.seed)
        return
    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    sys.exit(run_pretrain(args.label, arguments))


if __name__ == "__main__":
    main()
