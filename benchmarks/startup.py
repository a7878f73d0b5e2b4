"""Start-up on big folders: from the command's start to the first training step, cold and warm.

Generates nested folders of tiny JPEGs (``DIR/NNN/MMM/IMG_NNNNNNN.jpg``, 1,000 files a folder;
10k and 100k files by default, 1M with ``--million``: about 4 GB on a file system with 4 KiB
blocks, and several minutes to write), then, per size:

- the file index alone, in this process: listing and header scan cold (empty cache folder) and
  warm (the same cache folder again), and the index's bytes per file;
- ``simclr pretrain`` as a user runs it, twice (cold: a new ``SIMCLR_CACHE_DIR``; warm: the same
  one): the seconds from the process's start to the first line of ``metrics.jsonl`` (written after
  the first step, with ``--log-every 1``), and the resident memory of the main process and of each
  loader worker, sampled every 0.2 s: the peak of the main process, and each worker's unique
  (private) memory when first seen and at the end of the epoch (copy-on-read growth shows there).

"Cold" empties the index cache, not the operating system's page cache (which needs root): on a
machine whose page cache cannot hold the folder's metadata the cold figures are higher.

    python benchmarks/startup.py --sizes 10000                 # a quick check
    flock /tmp/simclr_bench.lock python benchmarks/startup.py   # 10k and 100k
    flock /tmp/simclr_bench.lock python benchmarks/startup.py --million --max-steps 200

Goals (issue 15) on the 2-core machine: 1M files ready in under 60 s cold and 5 s warm; under 100
bytes of index a file; worker memory flat over an epoch.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from simclr_cli.core.data.index import SETTLE_NANOSECONDS, index_training_images

FILES_PER_FOLDER = 1000
FOLDERS_PER_PARENT = 100
VARIANTS = 16
REPOSITORY = Path(__file__).resolve().parents[1]


def tiny_jpegs(count: int = VARIANTS, side: int = 16) -> list[bytes]:
    """A few different tiny noise JPEGs, written round-robin (their content does not matter)."""
    generator = np.random.default_rng(0)
    blobs = []
    for _ in range(count):
        pixels = generator.integers(0, 256, (side, side, 3), dtype=np.uint8)
        stream = io.BytesIO()
        Image.fromarray(pixels).save(stream, format="JPEG", quality=75)
        blobs.append(stream.getvalue())
    return blobs


def generate(root: Path, count: int) -> Path:
    """``count`` tiny JPEGs under ``root`` in nested folders; reused when already complete."""
    marker = root / f".complete-{count}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    blobs = tiny_jpegs()
    started = time.perf_counter()
    for number in range(count):
        folder, _ = divmod(number, FILES_PER_FOLDER)
        parent, child = divmod(folder, FOLDERS_PER_PARENT)
        directory = root / f"{parent:03d}" / f"{child:03d}"
        if number % FILES_PER_FOLDER == 0:
            directory.mkdir(parents=True, exist_ok=True)
        (directory / f"IMG_{number:07d}.jpg").write_bytes(blobs[number % VARIANTS])
    marker.write_text("")  # Hidden: not an image, and not listed.
    print(f"generated {count:,} files in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return root


def wait_until_settled(root: Path) -> None:
    """Wait until the newest folder is older than the index's settle window (else not cached)."""
    newest = max(os.stat(folder).st_mtime_ns for folder, _, _ in os.walk(root))
    remaining = (newest + SETTLE_NANOSECONDS - time.time_ns()) / 1e9
    if remaining > 0:
        time.sleep(remaining + 0.1)


def index_alone(root: Path, cache: Path) -> dict[str, float]:
    """Seconds of the listing and scan, cold then warm, and the index's bytes per file."""
    os.environ["SIMCLR_CACHE_DIR"] = str(cache)
    started = time.perf_counter()
    cold = index_training_images(root)
    cold_seconds = time.perf_counter() - started
    started = time.perf_counter()
    warm = index_training_images(root)
    warm_seconds = time.perf_counter() - started
    if not warm.cached:
        print("warning: the second index was not loaded from the cache", file=sys.stderr)
    return {
        "index_cold_s": cold_seconds,
        "index_warm_s": warm_seconds,
        "index_bytes_per_file": cold.images.nbytes / len(cold.images),
    }


def _kilobytes(path: Path, keys: tuple[str, ...]) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    total = 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in keys:
            total += int(value.split()[0])
    return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def run_pretrain(
    root: Path, cache: Path, run: Path, *, workers: int, batch: int, max_steps: int | None
) -> dict[str, float | list[float] | None]:
    """One ``simclr pretrain``: seconds to the first step and memory of its processes (MB)."""
    command = [
        sys.executable, "-m", "simclr_cli", "pretrain", str(root), "--out", str(run),
        "--backbone", "test_resnet", "--image-size", "32", "--batch-size", str(batch),
        "--workers", str(workers), "--cache", "off", "--log-every", "1", "--device", "cpu",
        "--quiet",
    ]  # fmt: skip
    command += ["--epochs", "1"] if max_steps is None else ["--max-steps", str(max_steps)]
    environment = {**os.environ, "SIMCLR_CACHE_DIR": str(cache), "PYTHONPATH": str(REPOSITORY)}
    metrics = run / "metrics.jsonl"
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL)
    first_step = None
    main_peak = 0
    workers_first: dict[int, int] = {}
    workers_last: dict[int, int] = {}
    while process.poll() is None:
        if first_step is None and metrics.exists() and metrics.stat().st_size > 0:
            first_step = time.perf_counter() - started
        main_peak = max(main_peak, _kilobytes(Path(f"/proc/{process.pid}/status"), ("VmRSS",)))
        for child in _children(process.pid):
            unique = _kilobytes(
                Path(f"/proc/{child}/smaps_rollup"), ("Private_Clean", "Private_Dirty")
            )
            if unique:
                workers_first.setdefault(child, unique)
                workers_last[child] = unique
        time.sleep(0.2)
    if process.returncode != 0:
        raise SystemExit(f"pretrain failed (exit {process.returncode}): {' '.join(command)}")
    if first_step is None and metrics.exists():
        first_step = time.perf_counter() - started  # The run ended between two polls.
    return {
        "first_step_s": first_step,
        "total_s": time.perf_counter() - started,
        "main_peak_rss_mb": main_peak / 1024,
        "worker_unique_first_mb": [workers_first[pid] / 1024 for pid in sorted(workers_first)],
        "worker_unique_last_mb": [workers_last[pid] / 1024 for pid in sorted(workers_last)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--million", action="store_true", help="add 1,000,000 files (~4 GB)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "simclr_startup")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=None, help="default: one epoch")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes + ([1_000_000] if args.million else [])))
    rows = []
    for size in sizes:
        root = generate(args.data / f"files-{size}", size)
        wait_until_settled(root)
        with tempfile.TemporaryDirectory(prefix="simclr_startup_") as scratch:
            scratch_path = Path(scratch)
            row: dict[str, object] = {"files": size}
            row.update(index_alone(root, scratch_path / "index-cache"))
            print(json.dumps(row), file=sys.stderr)  # What is done so far, should a run hang.
            cache = scratch_path / "cache"
            for kind in ("cold", "warm"):
                result = run_pretrain(
                    root,
                    cache,
                    scratch_path / f"run-{kind}",
                    workers=args.workers,
                    batch=args.batch_size,
                    max_steps=args.max_steps,
                )
                row.update({f"{kind}_{key}": value for key, value in result.items()})
                print(json.dumps({"files": size, kind: result}), file=sys.stderr)
        rows.append(row)
        print(json.dumps(row))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| files | index cold | index warm | bytes/file | first step cold | warm "
          "| main peak RSS | worker unique first -> last |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        workers = ", ".join(
            f"{first:.0f} -> {last:.0f} MB"
            for first, last in zip(
                row["warm_worker_unique_first_mb"], row["warm_worker_unique_last_mb"], strict=True
            )
        )
        print(
            f"| {row['files']:,} | {row['index_cold_s']:.2f} s | {row['index_warm_s']:.2f} s "
            f"| {row['index_bytes_per_file']:.0f} | {row['cold_first_step_s']:.1f} s "
            f"| {row['warm_first_step_s']:.1f} s | {row['warm_main_peak_rss_mb']:.0f} MB "
            f"| {workers} |"
        )


if __name__ == "__main__":
    main()
