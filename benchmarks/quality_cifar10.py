"""Quality benchmark (issue 4): our time-budgeted SimCLR against lightly's recipe on CIFAR-10.

    python benchmarks/quality_cifar10.py                  # 265 s each, appends to RESULTS.md
    python benchmarks/quality_cifar10.py --budget 10m --data ../shared/datasets/cifar10

1. Builds a seeded 10,000-image subset of ``DATA/train`` as symbolic links in a temporary folder
   (class sub-folders kept, so the same folder serves the probes; nothing is copied).
2. Pretrains, one after the other, each in its own process:
   - ours: ``simclr pretrain SUBSET --image-size 32 --time-budget BUDGET`` and nothing else;
   - lightly's documented recipe: timm resnet18, ``SimCLRTransform`` without blur, batch 256,
     SGD lr 0.06 (momentum 0.9, weight decay 5e-4), NT-Xent temperature 0.5, trained
     until the same wall-clock budget ends (``--lightly-epochs`` caps its epochs).
3. Probes each encoder and two random baselines on ``DATA/val``: scikit-learn's
   ``StandardScaler`` + ``LogisticRegression(C=0.1)`` on features of the subset (the reference
   protocol of the issue), and ``simclr probe``'s own linear probe and weighted kNN on the same
   features.
4. Appends a table (machine, commands, wall times, accuracies) to ``benchmarks/RESULTS.md``.

Needs the ``bench`` extra (``pip install -e ".[bench]"``: lightly and scikit-learn). Run it under
``flock /tmp/simclr_bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import this checkout's simclr_cli, as the pretraining subprocess (run from ROOT) does.
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar10"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def build_subset(train_dir: Path, out: Path, *, size: int, seed: int) -> Path:
    """Link a seeded random ``size``-image subset of ``train_dir`` into ``out/<class>/``."""
    paths = sorted(p for p in train_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        sys.exit(f"no images under {train_dir}; give the CIFAR-10 folder with --data")
    chosen = random.Random(seed).sample(paths, min(size, len(paths)))
    for path in chosen:
        folder = out / path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / path.name).symlink_to(path.resolve())
    return out


def run_lightly_recipe(subset: Path, weights_out: Path, *, epochs: int, seconds: float) -> None:
    """lightly's SimCLR recipe (docs example, plain PyTorch loop); saves the timm backbone."""
    import timm
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from safetensors.torch import save_file
    from torchvision.datasets import ImageFolder

    from simclr_cli.core._threads import use_idle_cores

    started = time.perf_counter()
    # The same thread choice as ours, so that a loaded machine slows both runs alike.
    use_idle_cores(torch.device("cpu"))
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", num_classes=0, pretrained=False)
    head = SimCLRProjectionHead(512, 512, 128)
    transform = SimCLRTransform(input_size=32, gaussian_blur=0.0)
    dataset = ImageFolder(str(subset), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=256, shuffle=True, drop_last=True, num_workers=1
    )
    criterion = NTXentLoss(temperature=0.5)
    parameters = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.06, momentum=0.9, weight_decay=5e-4)
    steps, images, stopped = 0, 0, False
    for _ in range(epochs):
        for (view_a, view_b), _labels in loader:
            z_a = head(backbone(view_a))
            z_b = head(backbone(view_b))
            loss = criterion(z_a, z_b)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            images += view_a.shape[0]
            if time.perf_counter() - started > seconds:
                stopped = True
                break
        if stopped:
            break
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(weights_out))
    elapsed = time.perf_counter() - started
    print(json.dumps({"steps": steps, "images": images, "seconds": elapsed, "stopped": stopped}))


def features_of(backbone, paths, *, metadata):
    from simclr_cli.core.eval.embed import extract_features

    return extract_features(backbone, paths, metadata=metadata, batch_size=256)


def evaluate(name: str, backbone, metadata, subset: Path, val_dir: Path) -> dict[str, float]:
    """sklearn LogisticRegression(C=0.1) on standardised features, plus our probe and kNN."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from simclr_cli.core._threads import idle_cores, use_idle_cores
    from simclr_cli.core.data.files import find_labeled_images
    from simclr_cli.core.eval.knn import knn_accuracy, topk_accuracy
    from simclr_cli.core.eval.linear import fit_linear_probe

    started = time.perf_counter()
    use_idle_cores(torch.device("cpu"))
    train_paths, train_labels, classes = find_labeled_images(subset)
    val_paths, val_labels, _ = find_labeled_images(val_dir)
    train_x = features_of(backbone, train_paths, metadata=metadata)
    val_x = features_of(backbone, val_paths, metadata=metadata)
    scaler = StandardScaler().fit(train_x)
    with threadpool_limits(idle_cores()):
        reference = LogisticRegression(C=0.1, max_iter=1000).fit(
            scaler.transform(train_x), train_labels
        )
    sklearn_top1 = float(reference.score(scaler.transform(val_x), val_labels))
    probe = fit_linear_probe(train_x, train_labels, num_classes=len(classes))
    scores = probe.scores(torch.from_numpy(val_x))
    labels = torch.tensor(val_labels)
    knn = knn_accuracy(
        torch.from_numpy(train_x),
        torch.tensor(train_labels),
        torch.from_numpy(val_x),
        labels,
        num_classes=len(classes),
    )
    result = {
        "sklearn_top1": sklearn_top1,
        "linear_top1": topk_accuracy(scores, labels, 1),
        "knn_top1": knn["top1"],
        "probe_seconds": time.perf_counter() - started,
        "n_train": len(train_paths),
        "n_val": int(np.asarray(val_labels).shape[0]),
    }
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def timed(command: list[str], log: Path) -> tuple[float, str]:
    """Run a command, return its wall time and stdout; stop the benchmark if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}; load average {load:.1f} at start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--budget", default="265s", help="our --time-budget and lightly's cap")
    parser.add_argument("--subset-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--lightly-epochs",
        type=int,
        default=1000,
        help="epochs of lightly's recipe; the default lets the budget stop it, so both get "
        "the same time (its docs train 5 on their example)",
    )
    parser.add_argument("--skip-lightly", action="store_true")
    parser.add_argument(
        "--extra",
        default="",
        help="more flags for our pretrain (for smoke tests), e.g. '--workers 0'",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--save-model", type=Path, help="keep our model.safetensors here")
    parser.add_argument(
        "--lightly-worker", nargs=2, metavar=("SUBSET", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    from simclr_cli.core._io import parse_duration

    seconds = parse_duration(args.budget)
    if args.lightly_worker:
        subset, out = (Path(p) for p in args.lightly_worker)
        run_lightly_recipe(subset, out, epochs=args.lightly_epochs, seconds=seconds)
        return

    import torch

    from simclr_cli.core.model.files import load_model
    from simclr_cli.core.model.simclr import create_simclr_model

    header = machine()
    with tempfile.TemporaryDirectory(prefix="simclr-quality-") as temporary:
        work = Path(temporary)
        subset = build_subset(
            args.data / "train", work / "subset", size=args.subset_size, seed=args.seed
        )
        val_dir = args.data / "val"
        rows: list[tuple[str, str, str, dict]] = []

        # Ours: the data, the image size and the budget, nothing else.
        ours_command = [
            sys.executable, "-m", "simclr_cli", "pretrain", str(subset), "--image-size", "32",
            "--time-budget", args.budget, "--out", str(work / "ours"), "--quiet",
            *args.extra.split(),
        ]  # fmt: skip
        ours_wall, ours_out = timed(ours_command, work / "ours.log")
        print(f"ours: {ours_wall:.0f}s · {ours_out.strip()}", flush=True)
        ours = load_model(work / "ours" / "model.safetensors")
        if args.save_model is not None:
            shutil.copyfile(work / "ours" / "model.safetensors", args.save_model)
        rows.append(
            (
                "simclr (ours)",
                f"simclr pretrain SUBSET --image-size 32 --time-budget {args.budget} "
                f"{args.extra}".strip(),
                f"{ours_wall:.0f} s, {ours.metadata.steps} steps, {ours.metadata.images_seen} img",
                evaluate("ours", ours.backbone, ours.metadata, subset, val_dir),
            )
        )

        # lightly's recipe, in its own process.
        if not args.skip_lightly:
            weights = work / "lightly_resnet18.safetensors"
            lightly_command = [
                sys.executable, str(Path(__file__).resolve()), "--budget", args.budget,
                "--lightly-epochs", str(args.lightly_epochs),
                "--lightly-worker", str(subset), str(weights),
            ]  # fmt: skip
            lightly_wall, lightly_out = timed(lightly_command, work / "lightly.log")
            info = json.loads(lightly_out.strip().splitlines()[-1])
            print(f"lightly: {lightly_wall:.0f}s · {info}", flush=True)
            lightly_model = create_simclr_model(
                backbone="resnet18", stem="imagenet", image_size=32, init_weights=weights,
                metadata={"crop_fraction": 1.0},
            )  # fmt: skip
            stopped = ", stopped at the budget" if info["stopped"] else ""
            rows.append(
                (
                    "lightly recipe",
                    f"timm resnet18, SimCLRTransform(32, no blur), batch 256, SGD 0.06, "
                    f"t=0.5, {args.lightly_epochs} epochs{stopped}",
                    f"{lightly_wall:.0f} s, {info['steps']} steps, {info['images']} img",
                    evaluate("lightly", lightly_model.eval().backbone, lightly_model.metadata,
                             subset, val_dir),
                )
            )  # fmt: skip

        # Random baselines: our backbone factory (same stem as the run) and plain timm.
        torch.manual_seed(args.seed)
        ours_random = create_simclr_model(
            backbone="resnet18", stem=ours.metadata.stem, image_size=32,
            metadata={"crop_fraction": 1.0},
        ).eval()  # fmt: skip
        rows.append(
            (
                "random init (ours)",
                f"resnet18, {ours.metadata.stem} stem, create_simclr_model",
                "-",
                evaluate("random-ours", ours_random.backbone, ours_random.metadata, subset,
                         val_dir),
            )
        )  # fmt: skip
        import timm

        torch.manual_seed(args.seed)
        timm_random = timm.create_model("resnet18", num_classes=0).eval()
        rows.append(
            (
                "random init (timm)",
                "timm resnet18, zero-initialised last norms",
                "-",
                evaluate("random-timm", timm_random, ours_random.metadata, subset, val_dir),
            )
        )

    write_results(args, header, rows)


def write_results(args, header: str, rows) -> None:
    """Append the table to RESULTS.md under the issue's section heading."""
    lines = []
    if not args.results.exists() or "## Quality (issue 4)" not in args.results.read_text():
        lines += ["", "## Quality (issue 4)"]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [
        "",
        f"### {stamp}: {args.subset_size}-image seeded subset (seed {args.seed}) of "
        f"`{args.data}/train`, probed on `{args.data}/val`, budget {args.budget}",
        "",
        f"Machine: {header}.",
        "Command: `python benchmarks/quality_cifar10.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| encoder | how | pretraining wall time | sklearn LR(C=0.1) top-1 | "
        "simclr probe linear top-1 | kNN top-1 (k=200) |",
        "|---|---|---|---|---|---|",
    ]
    for name, how, wall, result in rows:
        lines.append(
            f"| {name} | {how} | {wall} | **{result['sklearn_top1']:.3f}** | "
            f"{result['linear_top1']:.3f} | {result['knn_top1']:.3f} |"
        )
    lines.append("")
    with open(args.results, "a", encoding="utf-8") as stream:
        if not args.results.exists() or args.results.stat().st_size == 0:
            stream.write("# Benchmark results\n")
        stream.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
