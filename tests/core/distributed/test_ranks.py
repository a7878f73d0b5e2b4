"""Several ranks, one global batch: equivalence with one process, process plans, bad flags."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from simclr_cli.core.config import PretrainConfig
from simclr_cli.core.distributed import ranks as distributed
from simclr_cli.core.distributed.batch_norm import prepare_model
from simclr_cli.core.distributed.collectives import average_across_ranks
from simclr_cli.core.distributed.ranks import RankContext, plan_processes
from simclr_cli.core.errors import ConfigError
from simclr_cli.core.model.files import read_metadata
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.checkpoints import read_checkpoint
from simclr_cli.core.train.loop import contrastive_step

GLOBAL_BATCH = 8
IMAGE_SIZE = 16
WORLD_SIZE = 2
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


def _tiny_model() -> torch.nn.Module:
    # The same weights in every process: the model is built right after seeding.
    torch.manual_seed(0)
    return create_simclr_model(
        backbone="test_resnet", image_size=IMAGE_SIZE, head="v2", head_output_dim=16
    )


def _fixed_views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (GLOBAL_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def _step_results(network: torch.nn.Module, model: torch.nn.Module, views, context) -> dict:
    """One training step's loss, gradients and batch-norm running statistics."""
    loss = contrastive_step(
        network,
        *views,
        temperature=0.5,
        autocast_context=contextlib.nullcontext(),
        context=context,
    )
    loss.backward()
    results = {f"grad.{name}": p.grad.clone() for name, p in model.named_parameters()}
    results.update(
        {f"buffer.{name}": b.clone() for name, b in model.named_buffers() if "running" in name}
    )
    results["loss"] = torch.tensor([average_across_ranks(loss.item(), context)])
    return results


def _equivalence_rank(rank: int, init_file: str, out: str) -> None:
    """One rank of the 2-process step: its share of the fixed views, SyncBN on and off."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        context = RankContext(
            rank=rank, world_size=WORLD_SIZE, local_rank=rank, local_world_size=WORLD_SIZE
        )
        share = GLOBAL_BATCH // WORLD_SIZE
        views_a, views_b = _fixed_views()
        views = (
            views_a[rank * share : (rank + 1) * share],
            views_b[rank * share : (rank + 1) * share],
        )
        for sync in (True, False):
            model = _tiny_model()
            network = prepare_model(
                model, context, device=torch.device("cpu"), sync_batch_norm=sync
            )
            results = _step_results(network, model, views, context)
            if rank == 0:
                save_file(results, str(Path(out) / f"sync_{sync}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-process step, run once for the tests below."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_equivalence_rank, args=(str(out / "init"), str(out)), nprocs=WORLD_SIZE)
    return out


@pytest.mark.slow
def test_two_ranks__same_loss_and_gradients_as_one_process(two_rank_results: Path):
    model = _tiny_model()
    expected = _step_results(model, model, _fixed_views(), distributed.SINGLE_PROCESS)
    actual = load_file(str(two_rank_results / "sync_True.safetensors"))
    assert set(actual) == set(expected)
    assert expected["loss"].item() > 0
    # The comparison is not between zeros (timm zero-initialises the last norm of each block,
    # so some gradients are zero at the first step, but most are not).
    nonzero = [name for name, value in expected.items() if value.abs().max() > 0]
    assert len(nonzero) > 0.6 * len(expected)
    for name, value in expected.items():
        # Float sums in another order: tolerance relative to the tensor's scale.
        scale = value.abs().max().item()
        torch.testing.assert_close(
            actual[name], value, rtol=1e-4, atol=1e-5 * scale + 1e-8, msg=name
        )


@pytest.mark.slow
def test_two_ranks__without_sync_batch_norm_gradients_differ(two_rank_results: Path):
    # The check above can fail: per-rank batch norm statistics change the step.
    model = _tiny_model()
    expected = _step_results(model, model, _fixed_views(), distributed.SINGLE_PROCESS)
    actual = load_file(str(two_rank_results / "sync_False.safetensors"))
    difference = max(
        (actual[name] - value).abs().max().item()
        for name, value in expected.items()
        if name.startswith("grad.")
    )
    assert difference > 1e-3


def _config(**changes: object) -> PretrainConfig:
    settings: dict[str, object] = {"data": Path("images"), "batch_size": 8}
    return PretrainConfig(**{**settings, **changes})


@pytest.fixture
def outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_plan_processes__one_process_by_default(outside_torchrun: None):
    plan = plan_processes(_config(device="cpu"))
    assert (plan.world_size, plan.processes, plan.launch, plan.backend) == (1, 1, False, "gloo")


def test_plan_processes__cpu_processes_launch_gloo_ranks(outside_torchrun: None):
    plan = plan_processes(_config(cpu_processes=2))
    assert (plan.world_size, plan.processes, plan.launch) == (2, 2, True)
    assert plan.backend == "gloo" and plan.device.value == "cpu"


def test_plan_processes__one_cpu_process_trains_here(outside_torchrun: None):
    plan = plan_processes(_config(cpu_processes=1))
    assert plan.world_size == 1 and not plan.launch


def test_plan_processes__gpus_and_cpu_processes_together_are_refused(outside_torchrun: None):
    with pytest.raises(ConfigError, match="cannot be used together"):
        plan_processes(_config(gpus=2, cpu_processes=2))


def test_plan_processes__gpus_without_cuda_are_refused(
    outside_torchrun: None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="needs CUDA GPUs"):
        plan_processes(_config(gpus="all"))


def test_plan_processes__more_gpus_than_visible_are_refused(
    outside_torchrun: None, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="more GPUs than the 2 visible"):
        plan_processes(_config(gpus=4))
    plan = plan_processes(_config(gpus="all"))
    assert plan.processes == 2 and plan.backend == "nccl" and plan.launch


def test_plan_processes__batch_must_split_evenly(outside_torchrun: None):
    with pytest.raises(ConfigError, match=r"does not split evenly over 3 processes.*6 or 9"):
        plan_processes(_config(cpu_processes=3))


def test_plan_processes__under_torchrun_joins_the_job(monkeypatch: pytest.MonkeyPatch):
    environment = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for name, value in {**environment, "MASTER_ADDR": "localhost"}.items():
        monkeypatch.setenv(name, value)
    plan = plan_processes(_config(device="cpu"))
    assert plan.world_size == 4 and not plan.launch
    assert not distributed.is_main_process()
    with pytest.raises(ConfigError, match="does not split evenly over 4"):
        plan_processes(_config(device="cpu", batch_size=6))
    with pytest.raises(ConfigError, match="leave --cpu-processes out under torchrun"):
        plan_processes(_config(cpu_processes=8))


def test_config__gpus_takes_a_number_or_all():
    assert _config(gpus="all").gpus == "all"
    assert _config(gpus="2").gpus == 2
    with pytest.raises(ConfigError, match="number or all"):
        _config(gpus="two")
    with pytest.raises(ConfigError, match="--cpu-processes must be positive"):
        _config(cpu_processes=0).validate()


# Two machines, simulated: two torchrun launchers on this one (gloo, a free port).

REPO = Path(__file__).resolve().parents[3]
TORCHRUN = Path(sys.executable).with_name("torchrun")
#: A tiny run in global batches of 8 (4 a rank); one thread a rank, as in both simulations.
MULTI_NODE_FLAGS = [
    "--backbone",
    "test_resnet",
    "--image-size",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--log-every",
    "1",
    "--seed",
    "0",
    "--quiet",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment() -> dict[str, str]:
    # Both simulations give each rank one thread, so their arithmetic is the same.
    variables = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    return {**variables, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _start_nodes(tmp_path: Path, args: list[str], name: str) -> list[subprocess.Popen]:
    """Two launchers of one job, as on two machines: `torchrun --nnodes 2 ... -m simclr_cli`."""
    port = _free_port()
    nodes = []
    for node in range(2):
        command = [str(TORCHRUN), "--nnodes", "2", "--nproc-per-node", "1"]
        command += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        command += ["--rdzv-id", name, "-m", "simclr_cli", *args]
        log = tmp_path / f"{name}-node{node}.log"
        nodes.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=_environment(),
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return nodes


def _wait(nodes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [node.wait(timeout=max(0.1, deadline - time.monotonic())) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                _kill_tree(node.pid)
                node.wait()


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (torchrun starts its ranks in sessions of their own)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The name (field 2) is in parentheses and may hold spaces; the parent comes after.
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, of in parents.items() if of == parent]
        found += kids
        frontier += kids
    return found


def _kill_tree(pid: int) -> None:
    """A machine that dies: its launcher and its ranks, at once."""
    for member in [pid, *_children(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _rank_of_node(node: subprocess.Popen) -> int | None:
    for child in _children(node.pid):
        with contextlib.suppress(OSError):
            variables = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            for variable in variables:
                if variable.startswith(b"RANK="):
                    return int(variable[len(b"RANK=") :])
    return None


def _losses(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(record["step"], record["loss"]) for record in records if "loss" in record]


@pytest.mark.slow
def test_torchrun_two_nodes__train_the_model_of_two_cpu_processes(shapes_dir: Path, tmp_path: Path):
    flags = [*MULTI_NODE_FLAGS, "--max-steps", "4"]
    nodes_out, local_out = tmp_path / "nodes", tmp_path / "local"
    nodes = _start_nodes(
        tmp_path, ["pretrain", str(shapes_dir), "--out", str(nodes_out), *flags], "nodes"
    )
    codes = _wait(nodes, timeout=240)
    logs = "".join(path.read_text() for path in sorted(tmp_path.glob("*.log")))
    assert codes == [0, 0], logs[-3000:]
    command = [sys.executable, "-m", "simclr_cli", "pretrain", str(shapes_dir)]
    local = subprocess.run(
        [*command, "--out", str(local_out), *flags, "--cpu-processes", "2"],
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        timeout=240,
    )
    assert local.returncode == 0, local.stderr.decode()[-3000:]
    # Rank 0 alone wrote the folder; the same steps, the same losses, the same weights.
    assert (nodes_out / "model.safetensors").exists()
    assert _losses(nodes_out) == _losses(local_out) and len(_losses(nodes_out)) == 4
    nodes_model = load_file(str(nodes_out / "model.safetensors"))
    local_model = load_file(str(local_out / "model.safetensors"))
    assert nodes_model.keys() == local_model.keys()
    assert all(torch.equal(nodes_model[k], local_model[k]) for k in local_model)


@pytest.mark.slow
def test_torchrun_two_nodes__a_dead_node_stops_the_other_and_both_resume(
    shapes_dir: Path, tmp_path: Path
):
    out = tmp_path / "run"
    args = ["pretrain", str(shapes_dir), "--out", str(out), *MULTI_NODE_FLAGS]
    args += ["--max-steps", "16", "--checkpoint-every", "2"]
    nodes = _start_nodes(tmp_path, args, "first")
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
            assert all(node.poll() is None for node in nodes), "a node ended before its checkpoint"
            time.sleep(0.05)
        # The machine of rank 1 dies; rank 0's must stop by itself, with one clear line.
        victim = next(node for node in nodes if _rank_of_node(node) == 1)
        _kill_tree(victim.pid)
        survivor = next(node for node in nodes if node is not victim)
        started = time.monotonic()
        code = survivor.wait(timeout=90)
    finally:
        _wait(nodes, timeout=1)
    assert code != 0 and time.monotonic() - started < 90
    survivor_log = (tmp_path / f"first-node{nodes.index(survivor)}.log").read_text()
    assert "lost contact with another process of the job" in survivor_log, survivor_log[-3000:]
    assert not (out / "model.safetensors").exists()
    saved = read_checkpoint(out / "checkpoint.safetensors").position.step
    assert saved >= 2
    # The same command with --resume on both machines continues the job from the checkpoint.
    resumed = _start_nodes(tmp_path, [*args, "--resume"], "resumed")
    codes = _wait(resumed, timeout=240)
    logs = "".join(path.read_text() for path in sorted(tmp_path.glob("resumed-*.log")))
    assert codes == [0, 0], logs[-3000:]
    assert read_metadata(out / "model.safetensors").steps == 16
    assert [step for step, _ in _losses(out)] == list(range(1, 17))
