"""What a training step costs besides the model: the optimiser, the finiteness check, augmentation.

    python benchmarks/step_parts.py                       # resnet18, 32 px, batch 256
    python benchmarks/step_parts.py --image-size 64 --batch-size 128

Times, on random gradients and random uint8 images, the parts of ``simclr pretrain``'s loop that
``train_step.py``'s model-only limit does not have or does differently: ``LARS.step`` (the
default optimiser; ``train_step.py`` uses SGD), SGD with Nesterov momentum, the check that the
loss and every gradient are finite, and the two augmented views of a batch made on the main
process. Prints milliseconds per call; compare them with the model's step time from
``train_step.py``. Run nothing else heavy meanwhile.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from simclr_cli.core._amp import parameters_are_finite
from simclr_cli.core.augment.batched import BatchAugmenter
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.optimizers import create_optimizer


def milliseconds(work: Callable[[], object], calls: int) -> float:
    """Mean milliseconds of ``work`` over ``calls`` calls, after two warm-up calls."""
    work()
    work()
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_simclr_model(
        backbone="resnet18", stem="imagenet", image_size=args.image_size, head="v2", metadata={}
    )
    parameters = list(model.parameters())
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    for name in ("lars", "sgd"):
        optimizer = create_optimizer(name, [model.backbone, model.head], learning_rate=0.1)
        print(f"{name} step: {milliseconds(optimizer.step, args.calls):.1f} ms", flush=True)
    loss = torch.tensor(1.0)
    check = milliseconds(lambda: parameters_are_finite(loss, parameters), args.calls)
    print(f"finiteness check: {check:.1f} ms", flush=True)
    augmenter = BatchAugmenter(
        "cifar" if args.image_size <= 64 else "imagenet",
        image_size=args.image_size,
        generator=torch.Generator().manual_seed(0),
        memory_format=torch.channels_last,
    )
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    sizes = torch.full((args.batch_size, 2), args.image_size)
    augment = milliseconds(lambda: augmenter(images, sizes), args.calls)
    print(f"augmentation, 2 x {args.batch_size} views: {augment:.1f} ms", flush=True)
    print(f"parameters: {sum(p.numel() for p in parameters):,}")


if __name__ == "__main__":
    main()
