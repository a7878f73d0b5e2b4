"""Fine-tune a simclr model in a plain timm + PyTorch script: no simclr code needed to load it.

A ``model.safetensors`` written by ``simclr pretrain`` keeps the backbone's tensors under the
``backbone.`` prefix, in timm's own names, and its preprocessing in the file's metadata. So a
timm user loads it with ``safetensors.torch.load_file`` into ``timm.create_model(name,
num_classes=0)``, adds a classifier and trains as usual. This script does exactly that:

    python examples/timm_finetune.py                             # pretrains a tiny model first
    python examples/timm_finetune.py --model runs/simclr/model.safetensors \\
        --train ../shared/datasets/cifar10/train --val ../shared/datasets/cifar10/val \\
        --epochs 3 --batch-size 128 --out finetuned.safetensors

``--train`` and ``--val`` are torchvision ``ImageFolder`` folders (one sub-folder per class).
Without ``--model`` a model is pretrained for a few steps on generated shapes, which is the only
place this script uses ``simclr_cli``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def read_preprocessing(path: Path) -> dict:
    """The backbone name, stem and preprocessing stored in the file's metadata (all strings)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return {
        "backbone": metadata["backbone"],
        "stem": metadata["stem"],
        "image_size": int(metadata["image_size"]),
        "crop_fraction": float(metadata.get("crop_fraction", "1.0")),
        "mean": json.loads(metadata["mean"]),
        "std": json.loads(metadata["std"]),
    }


def use_cifar_stem(model: nn.Module) -> None:
    """The CIFAR stem (SimCLR appendix B.9) on a timm ResNet: stride-1 3x3 first conv, no pool.

    Models pretrained on small images (64 px and below) have it; timm has no argument for it,
    so it is these few lines of plain PyTorch.
    """
    if isinstance(model.conv1, nn.Conv2d):
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    else:  # A deep stem (resnet*t, resnet*d) keeps its 3x3 convolutions; only the stride goes.
        model.conv1[0].stride = (1, 1)
    model.maxpool = nn.Identity()


def load_backbone(path: Path) -> tuple[nn.Module, dict]:
    """A timm model without classifier, holding the pretrained backbone, and its preprocessing."""
    preprocessing = read_preprocessing(path)
    model = timm.create_model(preprocessing["backbone"], num_classes=0, pretrained=False)
    if preprocessing["stem"] == "cifar":
        use_cifar_stem(model)
    tensors = load_file(str(path))
    prefix = "backbone."
    backbone = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    # strict=True: every timm tensor must come from the file and every file tensor must be used.
    model.load_state_dict(backbone or tensors, strict=True)
    return model, preprocessing


def create_transforms(preprocessing: dict) -> tuple[transforms.Compose, transforms.Compose]:
    """Training (random crop and flip) and evaluation (resize and centre crop) transforms."""
    size = preprocessing["image_size"]
    normalize = transforms.Normalize(preprocessing["mean"], preprocessing["std"])
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    evaluate = transforms.Compose(
        [
            transforms.Resize(max(size, round(size / preprocessing["crop_fraction"]))),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return train, evaluate


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of ``model`` over ``loader``."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += (model(images).argmax(dim=1) == labels).sum().item()
        total += labels.numel()
    return correct / total


def pretrain_demo_model(
    scratch: Path, backbone: str, *, steps: int, images_per_class: int
) -> tuple[Path, Path, Path]:
    """A few steps of simclr pretraining on generated shapes, and labelled folders of them."""
    from simclr_cli import PretrainConfig, pretrain
    from simclr_cli.core.data.synthetic import generate_shapes_dataset

    train = generate_shapes_dataset(scratch / "train", images_per_class=images_per_class, seed=0)
    val = generate_shapes_dataset(
        scratch / "val", images_per_class=max(2, images_per_class // 3), seed=1
    )
    config = PretrainConfig(
        data=train,
        out=scratch / "run",
        backbone=backbone,
        image_size=32,
        max_steps=steps,
        batch_size=min(32, 6 * images_per_class),
        workers=0,
    )
    return pretrain(config=config).model_path, train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="simclr model.safetensors (default: make one).")
    parser.add_argument("--train", type=Path, help="ImageFolder to fine-tune on.")
    parser.add_argument("--val", type=Path, help="ImageFolder to score on.")
    parser.add_argument("--backbone", default="resnet18", help="Without --model: what to pretrain.")
    parser.add_argument("--pretrain-steps", type=int, default=50, help="Without --model.")
    parser.add_argument("--images-per-class", type=int, default=30, help="Without --model.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, help="Stop after this many steps in all.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="Classifier; the backbone gets 0.1x."
    )
    parser.add_argument("--out", type=Path, help="Write the fine-tuned timm model here.")
    args = parser.parse_args()
    if args.model is not None and (args.train is None or args.val is None):
        parser.error("--model needs --train and --val")

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            args.model, args.train, args.val = pretrain_demo_model(
                Path(scratch),
                args.backbone,
                steps=args.pretrain_steps,
                images_per_class=args.images_per_class,
            )

        # The pretrained backbone as a plain timm model, then a linear classifier on top.
        backbone, preprocessing = load_backbone(args.model)
        train_transform, eval_transform = create_transforms(preprocessing)
        train_set = datasets.ImageFolder(str(args.train), transform=train_transform)
        val_set = datasets.ImageFolder(str(args.val), transform=eval_transform)
        backbone.reset_classifier(len(train_set.classes))
        model = backbone
        print(f"{preprocessing['backbone']} from {args.model}: {len(train_set.classes)} classes")

        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
        val_loader = DataLoader(val_set, batch_size=256)
        print(f"before fine-tuning: val accuracy {accuracy(model, val_loader):.3f}")

        # Plain supervised fine-tuning: a smaller learning rate for the pretrained layers.
        classifier = model.get_classifier()
        classifier_ids = {id(p) for p in classifier.parameters()}
        pretrained = [p for p in model.parameters() if id(p) not in classifier_ids]
        optimizer = torch.optim.AdamW(
            [{"params": pretrained, "lr": args.lr * 0.1}, {"params": classifier.parameters()}],
            lr=args.lr,
        )
        loss_function = nn.CrossEntropyLoss()
        step = 0
        for epoch in range(args.epochs):
            model.train()
            for images, labels in train_loader:
                loss = loss_function(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if args.max_steps is not None and step >= args.max_steps:
                    break
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, step {step}")
            if args.max_steps is not None and step >= args.max_steps:
                break
        print(f"after fine-tuning: val accuracy {accuracy(model, val_loader):.3f}")

        # A plain timm state dict: timm.create_model(name, num_classes=C) loads it (after the
        # CIFAR stem change, for such models).
        if args.out is not None:
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(args.out), metadata={"backbone": preprocessing["backbone"]})
            print(f"saved {args.out}")


if __name__ == "__main__":
    main()
