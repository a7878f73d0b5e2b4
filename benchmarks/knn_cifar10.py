"""Foundation benchmark: does a few minutes of CPU pretraining beat random initialisation?

Pretrains resnet18 at 32 px on the CIFAR-10 train folder with `simclr pretrain` (labels ignored),
then scores weighted kNN (k=200, t=0.1) on `val/` with train features as the labelled bank, for
the pretrained backbone and for the same backbone randomly initialised.

    python benchmarks/knn_cifar10.py --data ../shared/datasets/cifar10 --steps 300
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from simclr_cli.core.demo import knn_evaluate
from simclr_cli.core.model.files import load_model
from simclr_cli.core.model.simclr import create_simclr_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/cifar10"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--extra", default="", help="Further `simclr pretrain` flags.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "run"
        command = [
            sys.executable,
            "-m",
            "simclr_cli",
            "pretrain",
            str(args.data / "train"),
            "--out",
            str(out),
            "--backbone",
            "resnet18",
            "--image-size",
            "32",
            "--batch-size",
            str(args.batch_size),
            "--max-steps",
            str(args.steps),
            "--quiet",
            *shlex.split(args.extra),
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - started
        model = load_model(out / "model.safetensors")
        torch.manual_seed(0)
        random_model = create_simclr_model(
            backbone="resnet18",
            stem=model.metadata.stem,
            image_size=32,
            metadata={"crop_fraction": model.metadata.crop_fraction},
        )
        folders = {"train_dir": args.data / "train", "val_dir": args.data / "val", "k": 200}
        pretrained = knn_evaluate(model, **folders)
        baseline = knn_evaluate(random_model, **folders)

    shown = " ".join(shlex.quote(part) for part in ["simclr", *command[3:]])
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"command: {shown}")
    print(f"pretraining wall time: {wall:.0f} s (process start to saved model)")
    print(
        f"kNN top-1 on val/: pretrained {pretrained['top1']:.4f}, "
        f"random init {baseline['top1']:.4f}"
    )


if __name__ == "__main__":
    main()
