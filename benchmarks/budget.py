"""Does ``--time-budget`` hold? Wall time of whole ``simclr`` processes against their budget.

    python benchmarks/budget.py --budget 60s --runs 10                # pretrain on CIFAR-10
    python benchmarks/budget.py --budget 265s --runs 3
    python benchmarks/budget.py --demo --budget 90s --budget 45s      # simclr demo: time and gain

Pretraining runs ``simclr pretrain SUBSET --image-size 32 --time-budget B`` (a seeded
10,000-image subset of ``DATA/train`` as symbolic links) as a fresh process each time and measures
the process's wall time from before it is started to after it exits. The goal of issue 16: every
run between 99% and 100% of its budget. The images/s column is the whole process's: images
trained on over that wall time (compare it with ``train_step.py``'s model-only limit).
``--demo`` runs ``simclr demo --time-budget B --json`` and reports its training time, whole wall
time and the kNN gain over random init. Prints a markdown table with the machine's CPU flags.
Run nothing else heavy meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10"
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")


def cpu_description() -> str:
    """The CPU's model name and the flags that decide its speed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    present = [flag for flag in FLAGS_OF_INTEREST if flag in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(present) or 'none of interest'}"


def build_subset(train_dir: Path, out: Path, *, size: int, seed: int) -> Path:
    """Link a seeded ``size``-image subset of ``train_dir`` into ``out/<class>/``."""
    paths = sorted(p for p in train_dir.rglob("*.jpg"))
    if not paths:
        sys.exit(f"no images under {train_dir}; give the CIFAR-10 folder with --data")
    for path in random.Random(seed).sample(paths, min(size, len(paths))):
        folder = out / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())
    return out


def simclr_command() -> list[str]:
    """This checkout's command line, as a user's shell would start it."""
    return [sys.executable, "-m", "simclr_cli"]


def timed_run(command: list[str]) -> tuple[float, str]:
    """Run a command; return its wall time (start to exit) and its standard output."""
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-2000:]}")
    return seconds, finished.stdout


def parse_seconds(text: str) -> float:
    """``60s``, ``4m25s``, ``90`` -> seconds (the benchmark's own flags only)."""
    total, number = 0.0, ""
    for character in text.strip():
        if character.isdigit() or character == ".":
            number += character
        else:
            total += float(number) * {"h": 3600, "m": 60, "s": 1}[character]
            number = ""
    return total + (float(number) if number else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", action="append", help="Budgets to try (repeat the flag).")
    parser.add_argument("--runs", type=int, default=3, help="Runs per budget.")
    parser.add_argument("--subset", type=int, default=10_000)
    parser.add_argument("--demo", action="store_true", help="Time simclr demo instead.")
    args = parser.parse_args()
    budgets = [parse_seconds(text) for text in (args.budget or ["60s"])]
    print(f"Machine: {cpu_description()}\n")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if args.demo:
            print("| budget | training s | whole command s | kNN top-1 | random init | gain |")
            print("|---|---|---|---|---|---|")
        else:
            subset = build_subset(args.data / "train", folder / "subset", size=args.subset, seed=0)
            print(
                "| budget | run | process wall s | share of budget | steps | "
                "images/s (whole process) | within 99-100% |"
            )
            print("|---|---|---|---|---|---|---|")
        for budget in budgets:
            for run in range(args.runs):
                out = folder / f"run-{budget:g}-{run}"
                if args.demo:
                    command = [
                        *simclr_command(),
                        "demo",
                        "--out",
                        str(out),
                        "--json",
                        "--time-budget",
                        f"{budget:g}s",
                    ]
                    seconds, stdout = timed_run(command)
                    result = json.loads(stdout)
                    ours, base = result["pretrained"]["top1"], result["random_init"]["top1"]
                    print(
                        f"| {budget:g} s | {result['pretrain']['total_seconds']:.1f} | "
                        f"{seconds:.1f} | {ours:.3f} | {base:.3f} | {ours - base:+.3f} |",
                        flush=True,
                    )
                    continue
                command = [
                    *simclr_command(),
                    "pretrain",
                    str(subset),
                    "--image-size",
                    "32",
                    "--time-budget",
                    f"{budget:g}s",
                    "--out",
                    str(out),
                    "--json",
                ]
                seconds, stdout = timed_run(command)
                result = json.loads(stdout)
                share = seconds / budget
                ok = "yes" if 0.99 <= share <= 1.0 else "no"
                print(
                    f"| {budget:g} s | {run + 1} | {seconds:.2f} | {share:.2%} | "
                    f"{result['steps']} | {result['images_seen'] / seconds:.1f} | {ok} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
