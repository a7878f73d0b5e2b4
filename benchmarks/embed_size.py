"""Embedding at a larger size than training: probe one model at several embedding sizes.

    python benchmarks/embed_size.py MODEL --sizes 32,40,48,64 --train TRAIN --val VAL

Writes a copy of ``MODEL`` per size whose metadata says that size (the weights are the same), and
runs ``simclr probe`` on each (linear probe and kNN, features of ``TRAIN`` scored on ``VAL``), so
every command that embeds with the model would embed at that size. One of the candidates of
issue 16 ("embedding at a larger size than training, record the cost"): the probe's wall time is
printed beside the accuracies. Run nothing else heavy meanwhile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--sizes", default="32,40,48,64")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path, required=True)
    args = parser.parse_args()
    with safe_open(str(args.model), "pt") as source:
        metadata = source.metadata()
        tensors = {key: source.get_tensor(key) for key in source.keys()}  # noqa: SIM118 (no __iter__)
    print(f"{args.model}: trained at {metadata.get('image_size')} px\n")
    print("| embedding size | linear top-1 | kNN top-1 | probe wall s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        for size in (int(text) for text in args.sizes.split(",")):
            copy = Path(temporary) / f"at_{size}.safetensors"
            save_file(tensors, str(copy), metadata={**metadata, "image_size": json.dumps(size)})
            command = [sys.executable, "-m", "simclr_cli", "probe", str(copy)]
            command += ["--train", str(args.train), "--val", str(args.val), "--json"]
            started = time.perf_counter()
            finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if finished.returncode != 0:
                sys.exit(f"simclr probe failed at {size} px:\n{finished.stderr[-2000:]}")
            result = json.loads(finished.stdout)
            linear, knn = result["linear"]["top1"], result["knn"]["top1"]
            print(f"| {size} px | {linear:.3f} | {knn:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
