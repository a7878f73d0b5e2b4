"""Which training size learns most in a time budget: the measurements behind ``--image-size auto``.

For each budget and each size, ``simclr pretrain TRAIN --image-size S --time-budget B`` (nothing
else), then ``simclr probe`` of the model on held-out images (linear probe and kNN top-1). A
row ``auto`` runs without ``--image-size`` and reports the size the plan chose, so the rule can
be read against the table.

Data: generated shapes (``simclr demo``'s six classes) drawn at ``--source-size`` px, a second
set beside CIFAR-10 so the rule is not tuned to one folder; with ``--cifar DIR`` a seeded subset of
``DIR/train`` probed on ``DIR/val`` instead.

    python benchmarks/image_size.py --budgets 60s 180s --sizes 32 64 128 --auto
    python benchmarks/image_size.py --cifar ../shared/datasets/cifar10 --budgets 265s --sizes 64
    python benchmarks/image_size.py --budgets 10s --sizes 32 --per-class 20   # smoke run
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search import cpu_flags  # noqa: E402  (benchmarks/search.py, beside this script)

from simclr_cli.core.data.synthetic import generate_shapes_dataset  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def cifar_subset(data: Path, out: Path, *, size: int, seed: int) -> tuple[Path, Path]:
    """Link a seeded ``size``-image subset of ``data/train`` into ``out``; val is ``data/val``."""
    paths = sorted(p for p in (data / "train").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in random.Random(seed).sample(paths, min(size, len(paths))):
        folder = out / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())
    return out, data / "val"


def run(command: list[str]) -> str:
    """Run one of our commands; stop the benchmark with its stderr if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return done.stdout


def one_run(train: Path, val: Path, out: Path, *, budget: str, size: int | None) -> dict:
    """Pretrain with a budget (and a size, or auto), then probe; returns the row's figures."""
    simclr = [sys.executable, "-m", "simclr_cli"]
    sizing = [] if size is None else ["--image-size", str(size)]
    started = time.perf_counter()
    pretrain = [*simclr, "pretrain", str(train), *sizing, "--time-budget", budget]
    pretrained = json.loads(run([*pretrain, "--out", str(out), "--json"]))
    wall = time.perf_counter() - started
    plan = tomllib.loads((out / "config.toml").read_text())["plan"]
    probe = [*simclr, "probe", str(out / "model.safetensors"), "--train", str(train)]
    probed = json.loads(run([*probe, "--val", str(val), "--json"]))
    return {
        "size": plan["image_size"],
        "steps": pretrained["steps"],
        "wall": wall,
        "linear": probed["linear"]["top1"],
        "knn": probed["knn"]["top1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", default=["60s", "180s"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--auto", action="store_true", help="also run without --image-size")
    parser.add_argument("--source-size", type=int, default=160, help="side of the shapes")
    parser.add_argument("--per-class", type=int, default=200, help="shapes per class (train)")
    parser.add_argument("--cifar", type=Path, help="CIFAR-10 folder (train/, val/) instead")
    parser.add_argument("--subset", type=int, default=10_000, help="CIFAR training images")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simclr-image-size-") as folder:
        work = Path(folder)
        if arguments.cifar is not None:
            train, val = cifar_subset(
                arguments.cifar, work / "train", size=arguments.subset, seed=arguments.seed
            )
            data = f"CIFAR-10: {arguments.subset} images of train/ (seed {arguments.seed}), val/"
        else:
            train = generate_shapes_dataset(
                work / "train",
                images_per_class=arguments.per_class,
                size=arguments.source_size,
                seed=arguments.seed,
            )
            val = generate_shapes_dataset(
                work / "val",
                images_per_class=max(1, arguments.per_class // 2),
                size=arguments.source_size,
                seed=arguments.seed + 1,
            )
            data = (
                f"shapes at {arguments.source_size} px: {6 * arguments.per_class} train, "
                f"{6 * max(1, arguments.per_class // 2)} val"
            )
        print(f"Data: {data}; CPU flags: {cpu_flags()}\n", flush=True)
        print("| budget | --image-size | trained at | steps | wall s | linear top-1 | kNN top-1 |")
        print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
        for budget in arguments.budgets:
            sizes: list[int | None] = list(arguments.sizes)
            if arguments.auto:
                sizes.append(None)
            for size in sizes:
                name = "auto" if size is None else str(size)
                row = one_run(train, val, work / f"run-{budget}-{name}", budget=budget, size=size)
                print(
                    f"| {budget} | {name} | {row['size']} px | {row['steps']} | "
                    f"{row['wall']:.0f} | {row['linear']:.3f} | {row['knn']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
