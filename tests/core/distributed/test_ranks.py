"""Several ranks, one global batch: equivalence with one process, process plans, bad flags."""

from __future__ import annotations

import contextlib
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
from simclr_cli.core.model.simclr import create_simclr_model
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
