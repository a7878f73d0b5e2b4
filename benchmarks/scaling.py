"""Scaling efficiency of multi-process pretraining (issue 6).

Efficiency with N ranks = (images/s with N ranks) / (N x images/s with one rank). Throughput is
taken from the run's ``metrics.jsonl`` after the first ``--skip`` steps (start-up, first batches),
as total images over total time of the remaining steps.

On the CPU, one process uses every core while each of N ranks gets 1/N of them, so two
baselines are printed: one process with all the threads (``--cpu-processes 1``, what a user
gets), and one process with the threads of one rank (the resources of one rank; efficiency
against it measures the cost of gathering, global batch norm and gradient averaging). On GPUs
(``--gpus``) each rank has a GPU of its own and the first baseline is the one that matters.

Usage (from the project root; one benchmark at a time on a shared machine):

    flock /tmp/simclr_bench.lock python benchmarks/scaling.py --processes 1 2
    python benchmarks/scaling.py --gpus --processes 1 2 4 8 --backbone resnet50 --image-size 224 \
        --batch-size 512
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from simclr_cli.core.config import PretrainConfig
from simclr_cli.core.train.loop import pretrain

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/datasets/cifar10/train"


def steady_throughput(metrics_file: Path, *, skip: int) -> float:
    """Images per second over the logged steps after the first ``skip``."""
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    steady = [record for record in records if record["step"] > skip]
    if not steady:
        raise SystemExit(f"no steps after the first {skip}; raise --steps")
    # Each record covers one step (log_every=1) of the same global batch.
    return len(steady) / sum(1.0 / record["images_per_second"] for record in steady)


def measure(args: argparse.Namespace, processes: int, out: Path, threads: int | None) -> float:
    """Run a short pretraining on ``processes`` ranks and return its steady images/s."""
    if threads is not None:
        torch.set_num_threads(threads)
    config = PretrainConfig(
        data=args.data,
        out=out,
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        max_steps=args.steps,
        workers=args.workers,
        log_every=1,
        precision=args.precision,
        gpus=processes if args.gpus else None,
        cpu_processes=None if args.gpus else processes,
        force=True,
    )
    pretrain(config=config)
    return steady_throughput(out / "metrics.jsonl", skip=args.skip)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus", action="store_true", help="ranks on GPUs instead of the CPU")
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--skip", type=int, default=4, help="first steps left out")
    parser.add_argument("--workers", type=int, default=0, help="data workers per rank")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    largest = max(args.processes)
    print(
        f"machine: {platform.processor() or platform.machine()}, {cores} cores, torch "
        f"{torch.__version__}; load average before: {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{args.backbone} {args.image_size}px, global batch {args.batch_size}, "
        f"{args.steps} steps (first {args.skip} left out), {args.workers} data workers/rank"
    )
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        if not args.gpus and largest > 1:
            # The resources of one rank of the largest run: its share of the cores.
            label = f"1 process, {max(1, cores // largest)} thread(s)"
            results[label] = measure(args, 1, Path(folder) / "rank", max(1, cores // largest))
            torch.set_num_threads(cores)
        for processes in args.processes:
            results[f"{processes} rank(s)"] = measure(
                args, processes, Path(folder) / f"run{processes}", None
            )
    one = results.get("1 rank(s)")
    share = next((value for key, value in results.items() if "thread" in key), None)
    print("| run | images/s | efficiency vs 1 rank | efficiency vs 1 rank's share |")
    print("| --- | ---: | ---: | ---: |")
    for label, value in results.items():
        count = int(label.split()[0]) if "rank" in label else 1
        versus_one = f"{value / (count * one):.2f}" if one else "-"
        versus_share = f"{value / (count * share):.2f}" if share and "rank" in label else "-"
        print(f"| {label} | {value:.1f} | {versus_one} | {versus_share} |")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
