"""Pretrain an encoder on a labelled folder and probe its features beside a random-init baseline.

SimCLR never sees the labels; they are used only afterwards, by the linear probe and the
weighted kNN of ``simclr_cli.probe`` (the functions behind ``simclr probe``), which score the
frozen features on held-out images. The same probe on a randomly initialised backbone is the
baseline that pretraining must beat.

    python examples/pretrain_and_probe.py                    # generated shapes, about a minute
    python examples/pretrain_and_probe.py \\
        --train ../shared/datasets/cifar10/train --val ../shared/datasets/cifar10/val \\
        --backbone resnet18 --image-size 32 --steps 2000 --batch-size 256

``--train`` is a folder with one sub-folder per class (torchvision's ImageFolder layout); with
no ``--val``, a fraction of each class is held out for scoring.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from simclr_cli import PretrainConfig, ProbeConfig, pretrain, probe, read_metadata
from simclr_cli.core.data.synthetic import generate_shapes_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="Labelled folder (default: generated shapes).")
    parser.add_argument("--val", type=Path, help="Labelled validation folder (default: held out).")
    parser.add_argument("--backbone", default="resnet18", help="Any timm model name.")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--images-per-class", type=int, default=60, help="Generated shapes only.")
    parser.add_argument("--out", type=Path, help="Run folder to keep (default: a temporary one).")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        train, val = args.train, args.val
        if train is None:
            # Separate seeds give held-out images of the same six classes.
            train = generate_shapes_dataset(
                Path(scratch) / "train", images_per_class=args.images_per_class, seed=0
            )
            val = generate_shapes_dataset(
                Path(scratch) / "val", images_per_class=max(2, args.images_per_class // 3), seed=1
            )

        # Pretrain without labels: one keyword-only call over a config dataclass.
        result = pretrain(
            config=PretrainConfig(
                data=train,
                out=args.out or Path(scratch) / "run",
                backbone=args.backbone,
                image_size=args.image_size,
                batch_size=args.batch_size,
                max_steps=args.steps,
                workers=0,
            )
        )
        print(f"pretrained {result.steps} steps, final loss {result.final_loss:.3f}")

        # Probe the pretrained encoder, then the same backbone with random weights and the same
        # stem and image size, so that the two rows differ only by pretraining.
        metadata = read_metadata(result.model_path)
        pretrained = probe(config=ProbeConfig(train=train, val=val, model=result.model_path))
        baseline = probe(
            config=ProbeConfig(
                train=train,
                val=val,
                backbone=metadata.backbone,
                stem=metadata.stem,
                image_size=metadata.image_size,
                random_init=True,
            )
        )

        print(f"{pretrained.n_train} training and {pretrained.n_val} validation images")
        print(f"{'encoder':<12} {'linear top1':>12} {'kNN top1':>9}")
        for name, scores in (("simclr", pretrained), ("random init", baseline)):
            print(f"{name:<12} {scores.linear['top1']:>12.3f} {scores.knn['top1']:>9.3f}")


if __name__ == "__main__":
    main()
