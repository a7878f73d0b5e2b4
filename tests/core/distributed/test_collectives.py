"""Numbers that ranks share: rank 0's decision reaches every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from simclr_cli.core.distributed.collectives import broadcast_from_main
from simclr_cli.core.distributed.ranks import SINGLE_PROCESS, RankContext

WORLD_SIZE = 2


def _broadcasting_rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        context = RankContext(
            rank=rank, world_size=WORLD_SIZE, local_rank=rank, local_world_size=WORLD_SIZE
        )
        # Each rank's time budget plans its own total; rank 1's would stop at once.
        planned = 120 if rank == 0 else 7
        (Path(out) / f"rank{rank}.txt").write_text(str(broadcast_from_main(planned, context)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_broadcast_from_main__every_rank_gets_rank_0s_value(tmp_path: Path):
    mp.spawn(_broadcasting_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE)
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(WORLD_SIZE)] == [
        "120",
        "120",
    ]


def test_broadcast_from_main__one_process_keeps_its_value():
    assert broadcast_from_main(7, SINGLE_PROCESS) == 7
    assert not torch.distributed.is_initialized()
