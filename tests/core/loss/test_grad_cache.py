"""Gradient caching gives the gradients of the un-split batch."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from simclr_cli.core.distributed import ranks as distributed
from simclr_cli.core.distributed.batch_norm import prepare_model
from simclr_cli.core.distributed.collectives import average_across_ranks
from simclr_cli.core.distributed.ranks import RankContext
from simclr_cli.core.loss.nt_xent import nt_xent_loss
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train.loop import contrastive_step


class DropoutModel(nn.Module):
    """A small model without batch norm but with dropout, returning (features, projections)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(32, 16)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        return features, self.head(self.dropout(features))


def gradients(
    model: nn.Module, views_a: torch.Tensor, views_b: torch.Tensor, accumulate: int, seed: int
) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = contrastive_step(
        model,
        views_a,
        views_b,
        temperature=0.2,
        autocast_context=contextlib.nullcontext(),
        accumulate=accumulate,
    )
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_gradients(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("accumulate", [2, 4, 3])
def test_cached_contrastive_loss__same_gradients_as_whole_batch(accumulate: int):
    # In evaluation mode batch norm normalises with its running statistics, so a micro-batch's
    # outputs do not depend on the rest of the batch and the comparison is exact. (In training
    # mode the statistics are per micro-batch, which changes the outputs themselves.)
    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", image_size=16, head="v2").eval()
    views_a, views_b = torch.randn(12, 3, 16, 16), torch.randn(12, 3, 16, 16)
    whole_loss, whole = gradients(model, views_a, views_b, accumulate=1, seed=0)
    cached_loss, cached = gradients(model, views_a, views_b, accumulate=accumulate, seed=0)
    assert cached_loss == pytest.approx(whole_loss, rel=1e-6)
    assert_same_gradients(whole, cached)


def test_cached_contrastive_loss__replays_dropout_masks():
    # Training mode without batch norm: the replay must draw the same dropout masks as the
    # first pass, or the cached gradients belong to different projections.
    torch.manual_seed(0)
    model = DropoutModel().train()
    views_a, views_b = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    # The whole batch in one pass draws one mask for 16 rows; the cached path draws it per
    # micro-batch, so compare with the same model fed micro-batch by micro-batch: the losses
    # must agree with the gradients computed from them, which fails if masks differ.
    cached_loss, cached = gradients(model, views_a, views_b, accumulate=2, seed=5)
    torch.manual_seed(5)
    projections_a, projections_b = [], []
    for chunk_a, chunk_b in zip(views_a.chunk(2), views_b.chunk(2), strict=True):
        _, projections = model(torch.cat([chunk_a, chunk_b]))
        a, b = projections.chunk(2)
        projections_a.append(a)
        projections_b.append(b)
    model.zero_grad(set_to_none=True)
    loss = nt_xent_loss(torch.cat(projections_a), torch.cat(projections_b), temperature=0.2)
    loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert cached_loss == pytest.approx(loss.item(), rel=1e-6)
    assert_same_gradients(expected, cached)


def test_cached_contrastive_loss__one_running_statistics_update_per_micro_batch():
    torch.manual_seed(0)
    model = create_simclr_model(backbone="test_resnet", image_size=16, head="v2").train()
    reference = copy.deepcopy(model)
    views_a, views_b = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    loss = contrastive_step(
        model,
        views_a,
        views_b,
        temperature=0.5,
        autocast_context=contextlib.nullcontext(),
        accumulate=2,
    )
    loss.backward()
    with torch.no_grad():
        for chunk_a, chunk_b in zip(views_a.chunk(2), views_b.chunk(2), strict=True):
            reference(torch.cat([chunk_a, chunk_b]))
    for (name, buffer), expected in zip(model.named_buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(buffer, expected, msg=name)


def test_cached_contrastive_loss__loss_scale_reaches_the_cached_gradients():
    # A loss scaler back-propagates scale x loss: the replay must multiply its cached gradients
    # by the incoming gradient, or fp16 loss scaling would not reach the parameters.
    torch.manual_seed(0)
    model = DropoutModel().eval()
    views_a, views_b = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    _, plain = gradients(model, views_a, views_b, accumulate=2, seed=0)
    model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = contrastive_step(
        model,
        views_a,
        views_b,
        temperature=0.2,
        autocast_context=contextlib.nullcontext(),
        accumulate=2,
    )
    scaler.scale(loss).backward()
    scaled = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert_same_gradients({name: 1024.0 * grad for name, grad in plain.items()}, scaled)


# Two gloo ranks with --accumulate: each rank holds half of a global batch of 8 and splits it
# into 2 micro-batches of 2 images (4 views).
GLOBAL_BATCH, IMAGE_SIZE, WORLD_SIZE, ACCUMULATE = 8, 16, 2, 2


def _tiny_model() -> nn.Module:
    # The same weights in every process: the model is built right after seeding.
    torch.manual_seed(0)
    return create_simclr_model(
        backbone="test_resnet", image_size=IMAGE_SIZE, head="v2", head_output_dim=16
    )


def _global_views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (GLOBAL_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def _rank_rows(rank: int) -> slice:
    share = GLOBAL_BATCH // WORLD_SIZE
    return slice(rank * share, (rank + 1) * share)


def _interleaved_rows() -> torch.Tensor:
    """The global batch reordered so that one process's micro-batch k holds every rank's k-th.

    Micro-batch k of the 2-rank job is the k-th micro-batch of each rank; global batch norm
    normalises it with statistics over those images. One process whose micro-batch k holds the
    same images normalises with the same statistics, which makes the comparison exact with batch
    norm in training mode (the loss does not depend on the order of the pairs).
    """
    share = GLOBAL_BATCH // WORLD_SIZE
    micro = share // ACCUMULATE
    order = [
        rank * share + k * micro + i
        for k in range(ACCUMULATE)
        for rank in range(WORLD_SIZE)
        for i in range(micro)
    ]
    return torch.tensor(order)


def _step_gradients(
    network: nn.Module, model: nn.Module, views, *, accumulate: int, context
) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = contrastive_step(
        network,
        *views,
        temperature=0.5,
        autocast_context=contextlib.nullcontext(),
        accumulate=accumulate,
        context=context,
    )
    loss.backward()
    results = {f"grad.{name}": p.grad.clone() for name, p in model.named_parameters()}
    results.update(
        {f"buffer.{name}": b.clone() for name, b in model.named_buffers() if "running" in name}
    )
    results["loss"] = torch.tensor([average_across_ranks(loss.item(), context)])
    return results


# Unannotated: DDP checks real annotations, and this module's are strings.
def _counting_hook(reduced, bucket):  # type: ignore[no-untyped-def]
    """DDP's all-reduce, counted: DDP calls it once per bucket, the last bucket once per
    all-reduce of the gradients (buckets are rebuilt after the first step, so their number may
    change)."""
    if bucket.is_last():
        reduced.append(bucket.index())
    return default_hooks.allreduce_hook(None, bucket)


def _accumulating_rank(rank: int, init_file: str, out: str) -> None:
    """One rank of the 2-process job: gradient caching in eval and training mode."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        context = RankContext(
            rank=rank, world_size=WORLD_SIZE, local_rank=rank, local_world_size=WORLD_SIZE
        )
        views_a, views_b = _global_views()
        views = (views_a[_rank_rows(rank)], views_b[_rank_rows(rank)])
        for mode in ("eval", "train"):
            model = _tiny_model().train(mode == "train")
            network = prepare_model(
                model, context, device=torch.device("cpu"), sync_batch_norm=True
            )
            # Count the gradient all-reduces (see _counting_hook).
            reduced: list[int] = []
            network.register_comm_hook(reduced, _counting_hook)
            results = _step_gradients(network, model, views, accumulate=ACCUMULATE, context=context)
            accumulated_reductions = len(reduced)
            # Then a step without micro-batches (after, so as not to move the statistics first).
            reduced.clear()
            _step_gradients(network, model, views, accumulate=1, context=context)
            results["reductions"] = torch.tensor([len(reduced), accumulated_reductions])
            if rank == 0:
                save_file(results, str(Path(out) / f"{mode}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_accumulating_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2-rank steps with --accumulate 2, run once for the tests below."""
    out = tmp_path_factory.mktemp("accumulating_ranks")
    mp.spawn(_accumulating_rank, args=(str(out / "init"), str(out)), nprocs=WORLD_SIZE)
    return out


def _assert_same_step(actual: dict, expected: dict) -> None:
    assert expected["loss"].item() > 0
    # The comparison is not between zeros (timm zero-initialises the last norm of each block,
    # so some gradients are zero at the first step, but most are not).
    gradients = [name for name in expected if name.startswith("grad.")]
    nonzero = [name for name in gradients if expected[name].abs().max() > 0]
    assert len(nonzero) > 0.6 * len(gradients)
    for name, value in expected.items():
        # Float sums in another order: tolerance relative to the tensor's scale.
        scale = value.abs().max().item()
        torch.testing.assert_close(
            actual[name], value, rtol=1e-4, atol=1e-5 * scale + 1e-8, msg=name
        )


@pytest.mark.slow
def test_cached_contrastive_loss__two_ranks_give_the_whole_batch_gradients(
    two_accumulating_ranks: Path,
):
    # Batch norm in evaluation mode normalises each view alone, so 2 ranks x 2 micro-batches
    # must give the gradients of one process with the whole global batch in one pass.
    model = _tiny_model().eval()
    expected = _step_gradients(
        model, model, _global_views(), accumulate=1, context=distributed.SINGLE_PROCESS
    )
    actual = load_file(str(two_accumulating_ranks / "eval.safetensors"))
    _assert_same_step(actual, expected)


@pytest.mark.slow
def test_cached_contrastive_loss__two_ranks_with_global_batch_norm(two_accumulating_ranks: Path):
    # In training mode global batch norm takes each micro-batch's statistics over every rank's
    # micro-batch: the step is one process's with --accumulate 2 and the same micro-batches.
    model = _tiny_model().train()
    views_a, views_b = _global_views()
    order = _interleaved_rows()
    expected = _step_gradients(
        model,
        model,
        (views_a[order], views_b[order]),
        accumulate=ACCUMULATE,
        context=distributed.SINGLE_PROCESS,
    )
    actual = load_file(str(two_accumulating_ranks / "train.safetensors"))
    _assert_same_step(actual, expected)


@pytest.mark.slow
def test_cached_contrastive_loss__one_gradient_all_reduce_per_step(two_accumulating_ranks: Path):
    # The micro-batches but the last run under no_sync: DDP reduces as many buckets for a step
    # of 2 micro-batches as for a step of one pass, not twice as many.
    for mode in ("eval", "train"):
        plain, accumulated = load_file(str(two_accumulating_ranks / f"{mode}.safetensors"))[
            "reductions"
        ].tolist()
        assert plain >= 1 and accumulated == plain
