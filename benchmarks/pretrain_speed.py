"""Whole-process images/s of ``simclr pretrain`` against a plain lightly SimCLR loop.

Both train resnet18 (ImageNet stem) at 32 px with the CIFAR augmentations, batch 256, for 2
epochs of a seeded 10,000-image subset of CIFAR-10's training images, built as a folder of
symbolic links in a temporary folder. lightly's loop is its documented SimCLR recipe
(``SimCLRTransform``, ``LightlyDataset``, ``DataLoader(num_workers=1)``, SGD, fp32), run as a
separate process; the two alternate. Images/s = images trained on / wall time of the process.

``--against limit`` compares with the model-only limit instead: ``train_step.py`` (forward,
loss, backward and update on random tensors, no data, no start-up) at the same batch, run in its
own process right before or after each of ours, best of its precision and layout variants (bf16
ones only on CPUs with native bf16). The ratio of each round is ours over the limit measured
next to it, so a machine whose speed drifts between rounds compares like with like.

    flock /tmp/simclr_bench.lock python benchmarks/pretrain_speed.py --rounds 1
    python benchmarks/pretrain_speed.py --against limit --epochs 6 --rounds 3
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

DATA = Path(__file__).resolve().parents[1] / "../shared/datasets/cifar10/train"

LIGHTLY_LOOP = """
import sys, torch, torchvision
from torch import nn
from lightly.data import LightlyDataset
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform

class SimCLR(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(512, 512, 128)

    def forward(self, x):
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

torch.manual_seed(0)
resnet = torchvision.models.resnet18()
model = SimCLR(nn.Sequential(*list(resnet.children())[:-1]))
transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
dataset = LightlyDataset(sys.argv[1], transform=transform)
loader = torch.utils.data.DataLoader(
    dataset, batch_size=256, shuffle=True, drop_last=True, num_workers=1
)
criterion = NTXentLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
for epoch in range(int(sys.argv[2])):
    for (x0, x1), _, _ in loader:
        loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
"""


def build_subset(root: Path, count: int, seed: int, into: Path) -> Path:
    paths = sorted(root.resolve().rglob("*.jpg"))
    chosen = random.Random(seed).sample(paths, count)
    folder = into / "images"
    folder.mkdir()
    for number, path in enumerate(chosen):
        (folder / f"{number:05d}.jpg").symlink_to(path)
    return folder


def run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def model_only_limit(batch_size: int, steps: int) -> float:
    """Best images/s of ``train_step.py``'s variants at 32 px and this batch, in a new process."""
    # bf16 is emulated (10x slower) on CPUs without native bf16: the limit there is fp32's.
    from simclr_cli.core._runtime import cpu_has_native_bf16

    variants = "bf16,bf16+channels_last" if cpu_has_native_bf16() else "fp32,fp32+channels_last"
    script = Path(__file__).resolve().parent / "train_step.py"
    command = [sys.executable, str(script), "--image-size", "32", "--batch-size", str(batch_size)]
    command += ["--steps", str(steps), "--warmup", "2", "--configs", variants]
    finished = subprocess.run(command, check=True, capture_output=True, text=True)
    records = [json.loads(line) for line in finished.stdout.splitlines() if line.startswith("{")]
    return max(record["images_per_second"] for record in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", default="", help="Extra flags for simclr pretrain.")
    parser.add_argument(
        "--against", choices=("lightly", "limit"), default="lightly", help="What to compare with."
    )
    parser.add_argument("--limit-steps", type=int, default=10, help="Timed steps of the limit.")
    args = parser.parse_args()
    trained = args.epochs * (args.images // 256) * 256
    with tempfile.TemporaryDirectory() as temp:
        subset = build_subset(args.data, args.images, args.seed, Path(temp))
        ours = [
            sys.executable,
            "-m",
            "simclr_cli",
            "pretrain",
            str(subset),
            "--out",
            str(Path(temp) / "run"),
            "--force",
            "--quiet",
            "--backbone",
            "resnet18",
            "--stem",
            "imagenet",
            "--image-size",
            "32",
            "--preset",
            "cifar",
            "--batch-size",
            "256",
            "--epochs",
            str(args.epochs),
            *args.extra.split(),
        ]
        if args.against == "limit":
            compare_with_limit(ours, trained=trained, rounds=args.rounds, steps=args.limit_steps)
            return
        lightly = [sys.executable, "-c", LIGHTLY_LOOP, str(subset), str(args.epochs)]
        results: dict[str, list[float]] = {"simclr": [], "lightly": []}
        for round_ in range(args.rounds):
            order = [("simclr", ours), ("lightly", lightly)]
            for name, command in order if round_ % 2 == 0 else order[::-1]:
                seconds = run(command)
                results[name].append(round(trained / seconds, 1))
                print(
                    json.dumps(
                        {
                            "run": name,
                            "round": round_,
                            "seconds": round(seconds, 1),
                            "images_per_second": results[name][-1],
                        }
                    ),
                    flush=True,
                )
    best = {name: max(values) for name, values in results.items()}
    print(
        json.dumps(
            {
                "images_per_second": results,
                "best": best,
                "ratio": round(best["simclr"] / best["lightly"], 2),
            }
        )
    )


def compare_with_limit(ours: list[str], *, trained: int, rounds: int, steps: int) -> None:
    """Alternate our whole process and the model-only limit; print each round's ratio."""
    ratios = []
    for round_ in range(rounds):
        first_ours = round_ % 2 == 0
        if not first_ours:
            limit = model_only_limit(256, steps)
        whole = trained / run(ours)
        if first_ours:
            limit = model_only_limit(256, steps)
        ratios.append(whole / limit)
        record = {"round": round_, "whole_process": round(whole, 1), "limit": round(limit, 1)}
        print(json.dumps({**record, "ratio": round(ratios[-1], 3)}), flush=True)
    print(
        json.dumps(
            {
                "ratios": [round(r, 3) for r in ratios],
                "median": round(sorted(ratios)[len(ratios) // 2], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
