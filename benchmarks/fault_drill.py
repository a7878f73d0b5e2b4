"""Fault drill: kill a pretraining run with SIGKILL three times, resume it, compare the weights.

The same `simclr pretrain` command (with ``--resume``) is started, killed with SIGKILL at a
random moment, and started again, three times; the fourth start runs to the end. Its
``model.safetensors`` is compared tensor by tensor with an uninterrupted run of the same
settings. Deterministic settings (``--seed``, ``--workers 0``, CPU) must give bitwise-equal
weights. Also times a checkpoint save of a few backbones.

    flock /tmp/simclr_bench.lock python benchmarks/fault_drill.py
    flock /tmp/simclr_bench.lock python benchmarks/fault_drill.py --backbone resnet10t --kills 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from simclr_cli.core.data.synthetic import generate_shapes_dataset
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.checkpoints import TrainingPosition, read_checkpoint, save_checkpoint
from simclr_cli.core.train.optimizers import create_optimizer

ROOT = Path(__file__).resolve().parents[1]


def pretrain_command(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simclr_cli",
        "pretrain",
        str(data),
        "--out",
        str(out),
        "--backbone",
        args.backbone,
        "--image-size",
        "32",
        "--batch-size",
        str(args.batch_size),
        "--max-steps",
        str(args.steps),
        "--workers",
        "0",
        "--seed",
        "7",
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--log-every",
        "1",
        "--quiet",
    ]


def last_logged_step(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError, KeyError):
            steps.append(json.loads(line)["step"])
    return max(steps, default=0)


def checkpoint_step(out: Path) -> int | None:
    path = out / "checkpoint.safetensors"
    return read_checkpoint(path).position.step if path.exists() else None


def compare(path: Path, reference: Path) -> dict[str, object]:
    actual, expected = load_file(str(path)), load_file(str(reference))
    equal = sum(torch.equal(actual[k], expected[k]) for k in expected)
    largest = max(
        (actual[k].double() - expected[k].double()).abs().max().item()
        for k in expected
        if actual[k].is_floating_point()
    )
    return {
        "tensors": len(expected),
        "bitwise_equal": equal,
        "max_abs_diff": largest,
        "same_keys": actual.keys() == expected.keys(),
    }


def drill(args: argparse.Namespace, work: Path) -> dict[str, object]:
    data = generate_shapes_dataset(
        work / "data", images_per_class=args.images_per_class, size=32, seed=0
    )
    reference_out, drill_out = work / "reference", work / "drill"
    started = time.perf_counter()
    subprocess.run(pretrain_command(data, reference_out, args), cwd=ROOT, check=True)
    reference_seconds = time.perf_counter() - started
    print(f"reference run: {reference_seconds:.1f} s", flush=True)

    # Kill points: a random step of the run, then a random moment within the next steps (in a
    # step, a checkpoint write or the start-up), so that kills land anywhere.
    rng = random.Random(args.seed)
    targets = sorted(rng.sample(range(2, args.steps), args.kills))
    kills = []
    command = [*pretrain_command(data, drill_out, args), "--resume"]
    for attempt, target in enumerate(targets):
        before = checkpoint_step(drill_out)
        jitter = rng.uniform(0.0, args.jitter)
        process = subprocess.Popen(command, cwd=ROOT)
        started = time.perf_counter()
        while process.poll() is None and last_logged_step(drill_out) < target:
            time.sleep(0.02)
        time.sleep(jitter)
        process.kill()  # SIGKILL: no handler, no checkpoint, as a crash or an OOM kill.
        process.wait()
        after = checkpoint_step(drill_out)
        logged = last_logged_step(drill_out)
        kills.append(
            {
                "attempt": attempt + 1,
                "target_step": target,
                "jitter_s": round(jitter, 2),
                "killed_after_s": round(time.perf_counter() - started, 1),
                "exit_code": process.returncode,
                "checkpoint_before": before,
                "checkpoint_after": after,
                "last_logged_step": logged,
                "steps_lost": logged - (after or 0),
            }
        )
        print(json.dumps(kills[-1]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    final_seconds = time.perf_counter() - started
    return {
        "backbone": args.backbone,
        "images": len(list((data).rglob("*.png"))),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "checkpoint_every": args.checkpoint_every,
        "reference_seconds": round(reference_seconds, 1),
        "final_resume_seconds": round(final_seconds, 1),
        "kills": kills,
        "comparison": compare(drill_out / "model.safetensors", reference_out / "model.safetensors"),
    }


def time_checkpoint_saves(backbones: list[str], work: Path) -> list[dict[str, object]]:
    rows = []
    for name in backbones:
        model = create_simclr_model(backbone=name, image_size=32)
        optimizer = create_optimizer("lars", [model.backbone, model.head], learning_rate=0.1)
        model(torch.randn(4, 3, 32, 32))[1].sum().backward()
        optimizer.step()  # Creates the momentum buffers.
        path = work / f"{name}.safetensors"
        times = []
        for _ in range(3):
            started = time.perf_counter()
            save_checkpoint(
                path, model=model, optimizer=optimizer, position=TrainingPosition(), settings={}
            )
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        read_checkpoint(path)
        rows.append(
            {
                "backbone": name,
                "megabytes": round(path.stat().st_size / 2**20, 1),
                "save_seconds_best_of_3": round(min(times), 3),
                "read_seconds": round(time.perf_counter() - started, 3),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--images-per-class", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--checkpoint-every", default="5")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill points.")
    parser.add_argument(
        "--jitter", type=float, default=1.5, help="Largest random delay after the target step."
    )
    parser.add_argument("--save-backbones", default="resnet18,resnet50")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        results = {"drill": drill(args, work)}
        backbones = [name for name in args.save_backbones.split(",") if name]
        results["checkpoint_saves"] = time_checkpoint_saves(backbones, work)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
