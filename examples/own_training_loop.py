"""SimCLR in your own PyTorch training loop: simclr's loss and augmentations, your loop.

Everything here is plain PyTorch except three pieces taken from ``simclr_cli``:

- ``create_view_transform``: the paper's random view (crop, flip, colour jitter, grayscale,
  blur), a per-image transform from a PIL image to a normalised tensor (3, S, S);
- or ``BatchAugmenter`` (``--batched``): the same augmentation for a whole uint8 batch at once,
  on the training device, which is how ``simclr pretrain`` feeds a GPU;
- ``nt_xent_loss``: the contrastive loss of two batches of projections (N, D).

The backbone comes from ``create_backbone`` (any timm model) and the head is ``ProjectionHead``.

    python examples/own_training_loop.py                      # generated shapes
    python examples/own_training_loop.py --data ../shared/datasets/cifar10/train \\
        --backbone resnet18 --image-size 32 --batch-size 256 --steps 500 --batched \\
        --out backbone.safetensors

``--data`` is a torchvision ``ImageFolder`` (one sub-folder per class; the labels are ignored).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms.v2 import functional as TF

from simclr_cli import (
    BatchAugmenter,
    ProjectionHead,
    create_backbone,
    create_view_transform,
    nt_xent_loss,
)
from simclr_cli.core.data.decode import stack_images
from simclr_cli.core.data.synthetic import generate_shapes_dataset


class TwoViews:
    """Wraps a random transform so that a dataset returns two independent views of each image."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image), self.transform(image)


def per_image_loader(root: Path, image_size: int, batch_size: int) -> DataLoader:
    """Batches of view pairs ((B, 3, S, S), (B, 3, S, S)) made image by image by the workers."""
    views = TwoViews(create_view_transform("auto", image_size=image_size))
    dataset = datasets.ImageFolder(str(root), transform=views)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)


def batched_loader(root: Path, batch_size: int) -> DataLoader:
    """Batches of uint8 images (B, 3, H, W) and their sizes (B, 2), for ``BatchAugmenter``."""
    dataset = datasets.ImageFolder(str(root), transform=TF.pil_to_tensor)

    def collate(items):
        # Images of different sizes are edge-padded to the largest; the sizes keep the truth.
        return stack_images([image for image, _ in items])

    return DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ImageFolder (default: generated shapes).")
    parser.add_argument("--backbone", default="resnet18", help="Any timm model name.")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--images-per-class", type=int, default=20, help="Generated shapes only.")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--batched", action="store_true", help="Augment whole batches at once.")
    parser.add_argument("--out", type=Path, help="Save the backbone's weights (safetensors).")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or generate_shapes_dataset(
            Path(scratch) / "shapes", images_per_class=args.images_per_class
        )

        # Model: a timm backbone f(.) and SimCLR's projection head g(.).
        backbone, stem = create_backbone(args.backbone, image_size=args.image_size)
        features = backbone.num_features
        head = ProjectionHead(features, features, 128, num_layers=2)
        model = nn.Sequential(backbone, head).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-6)
        print(f"{args.backbone} ({stem.value} stem), {features} features, on {device}")

        # Data: two random views of every image, image by image or batch by batch.
        if args.batched:
            loader = batched_loader(data, args.batch_size)
            augment = BatchAugmenter("auto", image_size=args.image_size, device=device)
        else:
            loader = per_image_loader(data, args.image_size, args.batch_size)
        if len(loader) == 0:
            parser.error(f"{data} has fewer images than --batch-size {args.batch_size}")

        # The loop: views -> projections z_a, z_b (N, 128) -> NT-Xent -> step.
        step = 0
        model.train()
        while step < args.steps:
            for batch in loader:
                if args.batched:
                    view_a, view_b = augment(*batch)
                else:
                    (view_a, view_b), _labels = batch
                    view_a, view_b = view_a.to(device), view_b.to(device)
                loss = nt_xent_loss(model(view_a), model(view_b), temperature=args.temperature)
                if not math.isfinite(loss.item()):
                    raise SystemExit(f"the loss is {loss.item()} at step {step}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                print(f"step {step}: loss {loss.item():.4f}")
                if step == args.steps:
                    break

        # The backbone's weights in timm's names, for timm.create_model(name, num_classes=0).
        if args.out is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
            save_file(
                state, str(args.out), metadata={"backbone": args.backbone, "stem": stem.value}
            )
            print(f"saved {args.out}")


if __name__ == "__main__":
    main()
