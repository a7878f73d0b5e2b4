"""Time one SimCLR training step of resnet18 under precision, memory-format and compile options.

Decides what ``--precision auto``, ``channels_last`` and ``--compile`` do on the CPU (issue 8).
Each configuration runs a few warm-up steps (compilation included) and then times ``--steps``
steps of forward + NT-Xent + backward + SGD update on random views.

    flock /tmp/simclr_bench.lock python benchmarks/train_step.py --image-size 32 --batch-size 128
    flock /tmp/simclr_bench.lock python benchmarks/train_step.py --image-size 224 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from simclr_cli.core.loss.nt_xent import nt_xent_loss
from simclr_cli.core.model.simclr import create_simclr_model


def time_steps(*, image_size, batch_size, bf16, channels_last, compile_model, steps, warmup):
    torch.manual_seed(0)
    model = create_simclr_model(
        backbone="resnet18", stem="imagenet", image_size=image_size, head="v2", metadata={}
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    views = torch.randn(2 * batch_size, 3, image_size, image_size)
    if channels_last:
        views = views.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, projections = forward(views)
        z_a, z_b = projections.float().chunk(2)
        loss = nt_xent_loss(z_a, z_b, temperature=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    return {
        "step_seconds": round(seconds, 4),
        "warmup_seconds": round(warmup_seconds, 1),
        "images_per_second": round(batch_size / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--configs",
        default="fp32,bf16,bf16+channels_last,bf16+compile",
        help="Comma-separated variants: precision plus optional +channels_last and +compile.",
    )
    args = parser.parse_args()
    for variant in args.configs.split(","):
        parts = variant.split("+")
        result = time_steps(
            image_size=args.image_size,
            batch_size=args.batch_size,
            bf16=parts[0] == "bf16",
            channels_last="channels_last" in parts,
            compile_model="compile" in parts,
            steps=args.steps,
            warmup=args.warmup,
        )
        record = {"image_size": args.image_size, "batch_size": args.batch_size, "variant": variant}
        print(json.dumps({**record, **result}), flush=True)


if __name__ == "__main__":
    main()
