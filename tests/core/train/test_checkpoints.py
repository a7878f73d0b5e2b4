"""Checkpoint files: exact round trips of optimiser and generator states, settings, bad files."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from simclr_cli.core.errors import CheckpointError, DiskFullError
from simclr_cli.core.model.simclr import create_simclr_model
from simclr_cli.core.train import checkpoints as checkpoint_module
from simclr_cli.core.train.checkpoints import (
    TrainingPosition,
    capture_rng_states,
    flatten_optimizer_state,
    pack_rng_states,
    read_checkpoint,
    restore_checkpoint,
    restore_rng_states,
    save_checkpoint,
    settings_differences,
    unflatten_optimizer_state,
    unpack_rng_states,
)
from simclr_cli.core.train.optimizers import create_optimizer


def _trained(optimizer_name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = create_simclr_model(backbone="test_resnet", image_size=32, head="v1")
    optimizer = create_optimizer(
        optimizer_name, [model.backbone, model.head], learning_rate=0.1, weight_decay=1e-4
    )
    for _ in range(2):
        optimizer.zero_grad()
        _, projections = model(torch.randn(4, 3, 32, 32))
        projections.square().mean().backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_flatten_optimizer_state__round_trip_is_exact(name: str):
    _, optimizer = _trained(name)
    original = optimizer.state_dict()
    tensors, structure = flatten_optimizer_state(original)
    assert tensors and all(isinstance(v, torch.Tensor) for v in tensors.values())
    rebuilt = unflatten_optimizer_state(tensors, structure)
    assert rebuilt["param_groups"] == original["param_groups"]
    assert rebuilt["state"].keys() == original["state"].keys()
    for index, values in original["state"].items():
        for key, value in values.items():
            assert torch.equal(rebuilt["state"][index][key], value)


def test_capture_rng_states__restores_every_generator():
    loader_generator = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # Leaves a cached Gaussian in NumPy's state.
    tensors, structure = capture_rng_states(loader_generator)
    assert all(v.dtype == torch.uint8 for v in tensors.values())
    expected = (
        random.random(),
        np.random.standard_normal(),
        torch.rand(3),
        torch.rand(2, generator=loader_generator),
    )
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    loader_generator.manual_seed(9)
    restore_rng_states(tensors, structure, loader_generator)
    assert random.random() == expected[0]
    assert np.random.standard_normal() == expected[1]
    assert torch.equal(torch.rand(3), expected[2])
    assert torch.equal(torch.rand(2, generator=loader_generator), expected[3])


def _states_of_seed(seed: int, loader_generator: torch.Generator):
    """Every generator seeded from ``seed``, captured: what one rank would save."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader_generator.manual_seed(seed)
    np.random.standard_normal()  # Leaves a cached Gaussian in NumPy's state.
    return capture_rng_states(loader_generator)


def _draws(loader_generator: torch.Generator) -> tuple:
    return (
        random.random(),
        float(np.random.standard_normal()),
        torch.rand(3).tolist(),
        torch.rand(2, generator=loader_generator).tolist(),
    )


def test_pack_rng_states__round_trip_is_exact():
    tensors, structure = _states_of_seed(4, torch.Generator())
    blob = pack_rng_states((tensors, structure))
    assert blob.dtype == torch.uint8 and blob.dim() == 1
    unpacked_tensors, unpacked_structure = unpack_rng_states(blob)
    assert unpacked_structure == structure and unpacked_tensors.keys() == tensors.keys()
    assert all(torch.equal(unpacked_tensors[k], v) for k, v in tensors.items())


def test_save_checkpoint__each_rank_restores_its_own_generators(tmp_path: Path):
    model, optimizer = _trained("sgd")
    loader_generator = torch.Generator()
    states, expected = [], []
    for rank in range(3):
        states.append(_states_of_seed(10 + rank, loader_generator))
        expected.append(_draws(loader_generator))
    path = tmp_path / "checkpoint.safetensors"
    position = TrainingPosition(step=4)
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        position=position,
        settings={},
        rank_rng_states=states,
    )
    loaded = read_checkpoint(path)
    assert loaded.rng_world_size == 3
    assert all(v.dtype == torch.uint8 for k, v in loaded.tensors.items() if k.startswith("rng."))
    for rank in (2, 0, 1):
        _states_of_seed(99, loader_generator)
        restore_checkpoint(
            loaded, model=model, optimizer=optimizer, loader_generator=loader_generator, rank=rank
        )
        assert _draws(loader_generator) == expected[rank], rank


def test_restore_checkpoint__rank_missing_from_an_earlier_checkpoint_keeps_its_generators(
    tmp_path: Path,
):
    # A checkpoint of one process's states, as an earlier simclr wrote for every run.
    model, optimizer = _trained("sgd")
    loader_generator = torch.Generator()
    _states_of_seed(1, loader_generator)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(
        path,
        model=model,
        optimizer=optimizer,
        position=TrainingPosition(step=2),
        settings={},
        loader_generator=loader_generator,
    )
    loaded = read_checkpoint(path)
    assert loaded.rng_world_size == 1 and loaded.rng_states_of(1) is None
    _states_of_seed(7, loader_generator)
    expected = _draws(loader_generator)
    _states_of_seed(7, loader_generator)
    restore_checkpoint(
        loaded, model=model, optimizer=optimizer, loader_generator=loader_generator, rank=1
    )
    assert _draws(loader_generator) == expected


def test_settings_differences__another_number_of_processes_is_refused():
    # Resuming with another world size is refused (each rank's generators belong to its rank).
    assert settings_differences({"world_size": 2}, {"world_size": 4}) == ["world_size 2 -> 4"]


def test_save_checkpoint__restores_model_optimizer_and_position(tmp_path: Path):
    model, optimizer = _trained("lars")
    path = tmp_path / "checkpoint.safetensors"
    position = TrainingPosition(step=7, epoch=2, batches_in_epoch=1, images_seen=56)
    save_checkpoint(path, model=model, optimizer=optimizer, position=position, settings={"a": 1})
    fresh_model, fresh_optimizer = _trained("lars", seed=1)
    loaded = read_checkpoint(path)
    assert loaded.settings == {"a": 1}
    restored = restore_checkpoint(loaded, model=fresh_model, optimizer=fresh_optimizer)
    assert restored == position
    for key, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[key], value), key
    state, fresh_state = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    for index in state:
        assert torch.equal(state[index]["momentum_buffer"], fresh_state[index]["momentum_buffer"])


def test_save_checkpoint__keeps_the_fp16_loss_scale_as_json(tmp_path: Path):
    model, optimizer = _trained("sgd")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    scaler.scale(torch.ones(()))  # The scale tensor exists once the scaler is first used.
    path = tmp_path / "checkpoint.safetensors"
    position = TrainingPosition(step=3, scaler_skipped_steps=2)
    save_checkpoint(
        path, model=model, optimizer=optimizer, position=position, settings={}, scaler=scaler
    )
    loaded = read_checkpoint(path)
    assert loaded.scaler_state["scale"] == 1024.0
    assert not any(key.startswith("scaler") for key in loaded.tensors)
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    restored = restore_checkpoint(loaded, model=model, optimizer=optimizer, scaler=fresh)
    assert fresh.get_scale() == 1024.0 and restored.scaler_skipped_steps == 2
    # A run resumed in fp32 (scaler disabled) ignores the saved scale; one resumed in fp16 from
    # an fp32 checkpoint (no scale saved) starts a fresh one.
    restore_checkpoint(
        loaded, model=model, optimizer=optimizer, scaler=torch.amp.GradScaler("cpu", enabled=False)
    )
    save_checkpoint(path, model=model, optimizer=optimizer, position=position, settings={})
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    restore_checkpoint(read_checkpoint(path), model=model, optimizer=optimizer, scaler=fresh)
    assert fresh.get_scale() == 2.0**16


def test_save_checkpoint__full_disk_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    model, optimizer = _trained("sgd")
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(
        path, model=model, optimizer=optimizer, position=TrainingPosition(step=1), settings={}
    )
    before = path.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(DiskFullError, match=r"previous checkpoint\.safetensors is intact"):
        save_checkpoint(
            path, model=model, optimizer=optimizer, position=TrainingPosition(step=2), settings={}
        )
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_read_checkpoint__hostile_files_raise_checkpoint_error(tmp_path: Path, trained_model: Path):
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot resume"):
        read_checkpoint(path)
    path.write_bytes(trained_model.read_bytes())  # A model file is not a checkpoint.
    with pytest.raises(CheckpointError, match="not a simclr checkpoint"):
        read_checkpoint(path)
    save_file(
        {"x": torch.zeros(1)},
        str(path),
        metadata={"format": "simclr-cli-checkpoint", "format_version": "1"},
    )
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(path)


def test_settings_differences__lists_changes_but_allows_remedies():
    saved = {"batch_size": 8, "seed": 0, "workers": 0, "precision": "bf16", "learning_rate": 0.3}
    current = {"batch_size": 16, "seed": 0, "workers": 4, "precision": "fp32", "learning_rate": 0.1}
    assert settings_differences(saved, current) == ["batch_size 8 -> 16"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_capture_rng_states__restores_cuda_generators():
    torch.cuda.manual_seed_all(4)
    torch.rand(1, device="cuda")
    tensors, structure = capture_rng_states()
    assert any(key.startswith("rng.torch_cuda.") for key in tensors)
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed_all(9)
    restore_rng_states(tensors, structure)
    assert torch.equal(torch.rand(3, device="cuda"), expected)
