"""NT-Xent side by side with lightly's NTXentLoss: time, peak extra memory, agreement.

Every measurement runs in a fresh process (so one implementation's allocations cannot lower or
raise another's peak), and the implementations alternate within each round, so that load from
other work on the machine falls on all of them alike. Each process builds the same inputs from
the same seed, runs a small warm-up, resets its peak memory and then times forward + backward.

CPU (default): N = 4096 pairs of D = 128 float32 projections, i.e. a 8192 x 8192 similarity.
Peak extra memory is the rise of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs after the warm-up) over its resident set before the loss.

GPU (``--device cuda``, or ``auto`` with a GPU): N from 4096 up to 65536 pairs (``--gpu-pairs``),
2N from 8192 up to 131072 views; lightly, a dense ``torch.compile``d loss and the chunked path
against the fused Triton kernels; memory from ``torch.cuda.max_memory_allocated`` over what the
inputs take; out-of-memory is reported as such. ``--dim`` sets D (the kernels tile it, so wide
projections such as 2048 are a fair question of fused against chunked).

Needs the ``bench`` extra (``pip install -e ".[bench]"``, which brings lightly); without lightly
installed it is left out, with a note. Run from the repository root, alone on the machine::

    flock /tmp/simclr_bench.lock python benchmarks/nt_xent.py
    flock /tmp/simclr_bench.lock python benchmarks/nt_xent.py --device cuda
    python benchmarks/nt_xent.py --device cuda --dim 2048 --gpu-pairs 8192 \\
        --implementations chunked,fused
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CPU_IMPLEMENTATIONS = ("lightly", "reference", "chunked")
GPU_IMPLEMENTATIONS = ("lightly", "compiled", "chunked", "fused")
GPU_PAIRS = (4096, 16384, 32768, 65536)


def make_inputs(pairs: int, dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2 * pairs, dim, generator=generator).to(device)
    # A shared component makes the pairs similar, as trained projections are.
    z[pairs:] = 0.7 * z[:pairs] + 0.3 * z[pairs:]
    return z[:pairs].clone(), z[pairs:].clone()


def create_loss(name: str, temperature: float):
    """The loss function of an implementation, taking (z_a, z_b) un-normalised."""
    if name == "lightly":
        from lightly.loss import NTXentLoss

        return NTXentLoss(temperature=temperature)
    from simclr_cli.core.loss.nt_xent import nt_xent_loss, nt_xent_rows_reference

    if name == "compiled":

        def dense(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
            n = z_a.shape[0]
            columns = torch.cat([z_a, z_b])
            index = torch.arange(2 * n, device=z_a.device)
            return nt_xent_rows_reference(
                columns, columns, (index + n) % (2 * n), index, temperature=temperature
            )

        return torch.compile(dense)
    os.environ["SIMCLR_NT_XENT"] = name
    return lambda z_a, z_b: nt_xent_loss(z_a, z_b, temperature=temperature)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(args: argparse.Namespace) -> dict:
    """One process, one implementation: time, peak extra memory, loss and gradients."""
    device = args.device
    loss_function = create_loss(args.child, args.temperature)
    # Warm up on a small problem (and on the full one on a GPU, where compilation and autotuning
    # would otherwise be timed), so libraries are loaded and kernels built.
    warm_a, warm_b = make_inputs(64, args.dim, device)
    if device == "cuda":
        warm_a, warm_b = make_inputs(args.pairs, args.dim, device)
    warm_a.requires_grad_()
    warm_b.requires_grad_()
    loss_function(warm_a, warm_b).backward()
    del warm_a, warm_b
    z_a, z_b = make_inputs(args.pairs, args.dim, device)
    times = []
    peak_extra = None
    for repeat in range(args.inner):
        a = z_a.clone().requires_grad_()
        b = z_b.clone().requires_grad_()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            _reset_peak_rss()
            before = _status_kib("VmRSS") * 1024
        started = time.perf_counter()
        loss = loss_function(a, b)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        if repeat == 0:
            if device == "cuda":
                peak_extra = torch.cuda.max_memory_allocated() - before
            else:
                peak_extra = _status_kib("VmHWM") * 1024 - before
    gradient = torch.cat([a.grad, b.grad]).float().cpu()
    torch.save({"loss": loss.detach().float().cpu(), "gradient": gradient}, args.result)
    return {"times": times, "peak_extra_bytes": peak_extra}


def run_child(name: str, args: argparse.Namespace, pairs: int, result: Path) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        "--device",
        args.device,
        "--pairs",
        str(pairs),
        "--dim",
        str(args.dim),
        "--temperature",
        str(args.temperature),
        "--inner",
        str(args.inner),
        "--result",
        str(result),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if completed.returncode != 0:
        out_of_memory = "out of memory" in completed.stderr.lower()
        last_line = (completed.stderr.strip().splitlines() or ["failed"])[-1][-300:]
        return {"error": "out of memory" if out_of_memory else last_line}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def float64_reference(pairs: int, dim: int, temperature: float) -> tuple[float, torch.Tensor]:
    from simclr_cli.core.loss.nt_xent import nt_xent_loss

    z_a, z_b = make_inputs(pairs, dim, "cpu")
    a = z_a.double().requires_grad_()
    b = z_b.double().requires_grad_()
    os.environ["SIMCLR_NT_XENT"] = "chunked"
    loss = nt_xent_loss(a, b, temperature=temperature)
    loss.backward()
    return loss.item(), torch.cat([a.grad, b.grad])


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference relative to the largest gradient (gradients are ~1 / (2N t))."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def compare(args: argparse.Namespace, names: tuple[str, ...], pairs: int) -> list[dict]:
    """Rounds of fresh processes, implementations alternating; returns a row per name."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as folder:
        results = {name: Path(folder) / f"{name}.pt" for name in names}
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                runs[name].append(run_child(name, args, pairs, results[name]))
                print(
                    f"  {2 * pairs} views, round {round_index + 1}, {name}: {runs[name][-1]}",
                    file=sys.stderr,
                )
        outputs = {
            name: torch.load(path, weights_only=True)
            for name, path in results.items()
            if path.exists() and "error" not in runs[name][-1]
        }
    reference_loss, reference_gradient = (None, None)
    if args.device == "cpu":
        reference_loss, reference_gradient = float64_reference(pairs, args.dim, args.temperature)
    rows = []
    for name in names:
        good = [run for run in runs[name] if "error" not in run]
        row: dict = {"implementation": name, "views": 2 * pairs}
        if not good:
            row["error"] = runs[name][-1]["error"]
            rows.append(row)
            continue
        # The best time of each process (after its warm-up), then the median over processes.
        row["seconds"] = statistics.median(min(run["times"]) for run in good)
        row["seconds_all"] = [round(min(run["times"]), 3) for run in good]
        row["peak_extra_mib"] = statistics.median(run["peak_extra_bytes"] for run in good) / 2**20
        output = outputs.get(name)
        if output is not None and "lightly" in outputs:
            row["loss_diff_lightly"] = abs(output["loss"] - outputs["lightly"]["loss"]).item()
            row["grad_diff_lightly"] = relative_difference(
                output["gradient"], outputs["lightly"]["gradient"]
            )
        if output is not None and reference_loss is not None:
            row["loss_diff_float64"] = abs(output["loss"].double() - reference_loss).item()
            row["grad_diff_float64"] = relative_difference(
                output["gradient"].double(), reference_gradient
            )
        rows.append(row)
    return rows


def render(rows: list[dict]) -> str:
    baseline = {row["views"]: row for row in rows if row["implementation"] == "lightly"}
    lines = [
        "| 2N | implementation | fwd+bwd s (median) | vs lightly | peak extra MiB "
        "| vs lightly | loss diff (lightly / fp64) | grad diff, relative (lightly / fp64) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['views']} | {row['implementation']} | {row['error']} | | | | | |")
            continue
        base = baseline.get(row["views"])
        speed = memory = "n/a"
        if base is not None and "seconds" in base:
            speed = f"{base['seconds'] / row['seconds']:.2f}x faster"
            memory = f"{row['peak_extra_mib'] / max(base['peak_extra_mib'], 1e-9):.3f}x"
        differences = [
            " / ".join(
                f"{row[key]:.1e}" if key in row else "-"
                for key in (f"{kind}_diff_lightly", f"{kind}_diff_float64")
            )
            for kind in ("loss", "grad")
        ]
        lines.append(
            f"| {row['views']} | {row['implementation']} | {row['seconds']:.3f} "
            f"{row['seconds_all']} | {speed} | {row['peak_extra_mib']:.1f} | {memory} "
            f"| {differences[0]} | {differences[1]} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}"
    )
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--pairs", type=int, default=4096, help="N (CPU); 2N views.")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=5, help="Processes per implementation.")
    parser.add_argument("--inner", type=int, default=2, help="Timed runs per process.")
    parser.add_argument("--implementations", default=None, help="Comma-separated subset.")
    parser.add_argument(
        "--gpu-pairs",
        default=",".join(str(pairs) for pairs in GPU_PAIRS),
        help="Comma-separated N (pairs) of the GPU section; 2N views each.",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child is not None:
        print(json.dumps(measure(args)))
        return
    print(f"Machine: {machine()}")
    print(f"Command: {' '.join([Path(sys.executable).name, *sys.argv])}\n", flush=True)
    defaults = CPU_IMPLEMENTATIONS if args.device == "cpu" else GPU_IMPLEMENTATIONS
    names = tuple(args.implementations.split(",")) if args.implementations else defaults
    if "lightly" in names and importlib.util.find_spec("lightly") is None:
        names = tuple(name for name in names if name != "lightly")
        print("lightly is not installed (pip install -e '.[bench]'): left out.\n", flush=True)
    if args.device == "cpu":
        print(f"CPU, N = {args.pairs} pairs, D = {args.dim}, float32, t = {args.temperature}\n")
        rows = compare(args, names, args.pairs)
    else:
        print(f"GPU, D = {args.dim}, float32, t = {args.temperature}\n", flush=True)
        rows = []
        for pairs in (int(text) for text in args.gpu_pairs.split(",")):
            rows += compare(args, names, pairs)
    print(render(rows))
    # Out of memory in some cells is a result; nothing measured at all is a failure.
    if all("error" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
