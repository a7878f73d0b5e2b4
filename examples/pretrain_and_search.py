"""Pretrain an encoder on a folder, embed it, and find the nearest neighbours of a query image.

The same functions the `simclr` command line calls, from Python:

    python examples/pretrain_and_search.py                     # on generated shapes
    python examples/pretrain_and_search.py --data ./photos --image-size 96 --steps 500
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from simclr_cli import PretrainConfig, embed, load_model, pretrain
from simclr_cli.core.data.files import find_images
from simclr_cli.core.data.synthetic import generate_shapes_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="Folder of images (default: generated shapes).")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--neighbours", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or generate_shapes_dataset(Path(scratch) / "shapes", images_per_class=20)
        # Pretrain: one keyword-only call over a config dataclass.
        result = pretrain(
            config=PretrainConfig(
                data=data,
                out=Path(scratch) / "run",
                backbone=args.backbone,
                image_size=args.image_size,
                batch_size=args.batch_size,
                max_steps=args.steps,
                workers=0,
            )
        )
        print(f"trained {result.steps} steps, final loss {result.final_loss:.3f}")

        # Embed every image and rank them by cosine similarity to the first one.
        model = load_model(result.model_path)
        paths = find_images(Path(data))
        features = embed(model, paths)  # Files, PIL images or a tensor batch.
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        similarity = features @ features[0]
        nearest = np.argsort(-similarity)[1 : args.neighbours + 1]
        print(f"query: {paths[0]}")
        for index in nearest:
            print(f"  {similarity[index]:.3f}  {paths[index]}")


if __name__ == "__main__":
    main()
