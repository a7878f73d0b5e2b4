"""Training checkpoints: everything needed to continue a run exactly, in one safetensors file.

``RUN/checkpoint.safetensors`` holds tensors and string metadata, never a pickle:

- ``model.*``: the model's ``state_dict`` (backbone and head, batch-norm statistics included);
- ``optimizer.<param index>.<name>``: the optimiser's per-parameter state (momentum buffers,
  Adam moments); its non-tensor values and the parameter groups are JSON in ``optimizer``;
- ``rng.*``: every random number generator of rank 0 (of the only process) as bytes
  (``uint8``): torch on the CPU and on the CUDA device in use, NumPy's and Python's global
  generators (the global torch generator also draws the batched augmentations), and the
  DataLoader's generator (which seeds the data workers); their scalar parts are JSON in ``rng``;
- ``rng.rank<R>.*``: the same for each further rank R of a multi-process run, gathered to rank 0
  when it saves, their scalar parts under ``ranks`` in ``rng`` (with ``world_size``). Each rank
  restores its own, so ranks keep drawing different augmentations after ``--resume``. A run
  resumes with the number of processes it was started with (``world_size`` is one of the
  compared settings); a checkpoint of an earlier simclr, which kept rank 0's states only, leaves
  the other ranks' generators as freshly seeded (``Checkpoint.rng_states_of``);
- metadata ``position`` (step, epoch, batches of the epoch consumed, counters) and ``settings``
  (the resolved configuration, compared on resume);
- metadata ``scaler``: the fp16 loss scaler's state as JSON (its scale and growth counter; ``{}``
  when no scaler is enabled).

The learning rate is computed from the step alone (``optim.learning_rate_at``), and the order of
each epoch from the seed and the epoch (``sampler.ResumableRandomSampler``), so no scheduler or
sampler object needs saving beyond the position.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_write
from ..errors import CheckpointError, ModelFileError
from ..model.files import read_header, software_versions

#: Value of the ``format`` metadata key of checkpoints (model files use ``simclr-cli``).
CHECKPOINT_FORMAT = "simclr-cli-checkpoint"
#: Version of the checkpoint layout; bumped when it changes incompatibly.
CHECKPOINT_VERSION = "1"
#: Settings that may differ between a run and its resumption. Workers, device and logging do not
#: change what is learned; precision and the learning rate are the remedies the divergence guard
#: suggests, so a run stopped by it can continue with them changed.
RESUMABLE_CHANGES = frozenset(
    {
        "out",
        "force",
        "resume",
        "workers",
        "device",
        "log_every",
        "checkpoint_every",
        "on_bad_image",
        "precision",
        "learning_rate",
        "loggers",
    }
)

#: Generator states of one process: ``uint8`` tensors keyed ``rng.<name>``, and JSON scalars.
RngStates = tuple[dict[str, torch.Tensor], dict[str, Any]]


@dataclass
class TrainingPosition:
    """Where a run stands: the counters a resumed run continues from.

    Attributes:
        step: Optimiser steps taken (skipped non-finite steps included).
        epoch: The epoch in progress, from 0.
        batches_in_epoch: Batches of ``epoch`` already consumed.
        images_seen: Images trained on.
        skipped_images: Images dropped because they could not be read.
        nonfinite_steps: Steps whose update was skipped for a non-finite loss or gradient.
        scaler_skipped_steps: Steps whose update the fp16 loss scaler skipped (its scaled
            gradients overflowed while the loss was finite).
    """

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    images_seen: int = 0
    skipped_images: int = 0
    nonfinite_steps: int = 0
    scaler_skipped_steps: int = 0


@dataclass
class Checkpoint:
    """A checkpoint read from disk.

    Attributes:
        path: The file.
        position: Where the run stood.
        settings: The resolved configuration the run was started with.
        tensors: Every tensor of the file, by key.
        optimizer_structure: The JSON part of the optimiser's state.
        rng_structure: The JSON part of the random number generators' states.
        scaler_state: The fp16 loss scaler's ``state_dict`` (empty without a scaler).
    """

    path: Path
    position: TrainingPosition
    settings: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)
    optimizer_structure: dict[str, Any] = field(repr=False)
    rng_structure: dict[str, Any] = field(repr=False)
    scaler_state: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rng_world_size(self) -> int:
        """How many ranks' generator states the file holds (1 from an earlier simclr)."""
        return int(self.rng_structure.get("world_size", 1))

    def rng_states_of(self, rank: int) -> RngStates | None:
        """The generator states that ``rank`` saved, or None when the file has none for it.

        Args:
            rank: The rank, 0 for a single process.
        """
        if rank >= self.rng_world_size:
            return None
        prefix = _rank_prefix(rank)
        tensors = {
            "rng." + key[len(prefix) :]: value
            for key, value in self.tensors.items()
            if key.startswith(prefix) and (rank or not key.startswith("rng.rank"))
        }
        if rank == 0:
            structure = {k: v for k, v in self.rng_structure.items() if k in ("numpy", "python")}
        else:
            structure = self.rng_structure["ranks"][str(rank)]
        return tensors, structure


# Optimiser state <-> tensors plus JSON.


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise CheckpointError(f"cannot store optimiser value of type {type(value).__name__}")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def flatten_optimizer_state(
    state_dict: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict`` into tensors and a JSON-able structure.

    Args:
        state_dict: ``optimizer.state_dict()``.

    Returns:
        Tensors keyed ``optimizer.<param index>.<name>``, and the rest (non-tensor state values
        and the parameter groups) as plain JSON values.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = _to_json(value)
    structure = {
        "indices": [int(i) for i in state_dict["state"]],
        "scalars": scalars,
        "param_groups": _to_json(state_dict["param_groups"]),
    }
    return tensors, structure


def unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], structure: dict[str, Any]
) -> dict[str, Any]:
    """Rebuild the ``state_dict`` that ``flatten_optimizer_state`` split."""
    state: dict[int, dict[str, Any]] = {index: {} for index in structure["indices"]}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state[int(index)][name] = value
    for index, values in structure["scalars"].items():
        state[int(index)].update(_from_json(values))
    return {"state": state, "param_groups": _from_json(structure["param_groups"])}


# Random number generators <-> uint8 tensors plus JSON.


def _bytes_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).copy())


def capture_rng_states(loader_generator: torch.Generator | None = None) -> RngStates:
    """Every random number generator's state, as ``uint8`` tensors and JSON scalars.

    The CUDA state is that of the current device, the one this process trains on (reading the
    others would open a context on each GPU from every rank).
    """
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        index = torch.cuda.current_device()
        tensors[f"rng.torch_cuda.{index}"] = torch.cuda.get_rng_state(index).cpu()
    # The default (legacy) form is this tuple; numpy's stub types the call as the dict form.
    numpy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    name, keys, position, has_gauss, cached_gaussian = numpy_state
    tensors["rng.numpy"] = _bytes_tensor(keys)
    version, python_state, gauss_next = random.getstate()
    tensors["rng.python"] = _bytes_tensor(np.array(python_state, dtype=np.uint32))
    if loader_generator is not None:
        tensors["rng.loader"] = loader_generator.get_state()
    structure = {
        "numpy": [name, int(position), int(has_gauss), float(cached_gaussian)],
        "python": [version, gauss_next],
    }
    return tensors, structure


def restore_rng_states(
    tensors: dict[str, torch.Tensor],
    structure: dict[str, Any],
    loader_generator: torch.Generator | None = None,
) -> None:
    """Set every random number generator back to the state ``capture_rng_states`` saved.

    The CUDA state is restored on the current device when the file has one for a device of
    that index; a run moved between a CPU and a GPU machine continues with fresh CUDA
    generators.
    """
    torch.set_rng_state(tensors["rng.torch_cpu"])
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        if f"rng.torch_cuda.{index}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.torch_cuda.{index}"], index)
    name, position, has_gauss, cached_gaussian = structure["numpy"]
    keys = tensors["rng.numpy"].numpy().view(np.uint32)
    np.random.set_state((name, keys, position, has_gauss, cached_gaussian))
    version, gauss_next = structure["python"]
    python_state = tuple(int(v) for v in tensors["rng.python"].numpy().view(np.uint32))
    random.setstate((version, python_state, gauss_next))
    if loader_generator is not None and "rng.loader" in tensors:
        loader_generator.set_state(tensors["rng.loader"])


def pack_rng_states(states: RngStates) -> torch.Tensor:
    """One process's generator states as one ``uint8`` tensor, to send to rank 0.

    Layout: 8 bytes (little-endian length of the JSON header), the JSON header (the scalars
    and, per tensor, its key and byte count), then the tensors' bytes in the header's order.
    """
    tensors, structure = states
    keys = sorted(tensors)
    header = {"structure": structure, "tensors": [[k, tensors[k].numel()] for k in keys]}
    encoded = json.dumps(header).encode()
    length = torch.tensor(list(len(encoded).to_bytes(8, "little")), dtype=torch.uint8)
    text = torch.frombuffer(bytearray(encoded), dtype=torch.uint8)
    parts = [tensors[k].reshape(-1).to(torch.uint8) for k in keys]
    return torch.cat([length, text, *parts])


def unpack_rng_states(blob: torch.Tensor) -> RngStates:
    """The states that ``pack_rng_states`` packed."""
    raw = blob.numpy().tobytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length].decode())
    offset = 8 + length
    tensors = {}
    for key, count in header["tensors"]:
        tensors[key] = blob[offset : offset + count].clone()
        offset += count
    return tensors, header["structure"]


def _rank_prefix(rank: int) -> str:
    return "rng." if rank == 0 else f"rng.rank{rank}."


# The file.


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    position: TrainingPosition,
    settings: dict[str, Any],
    loader_generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rank_rng_states: list[RngStates] | None = None,
) -> None:
    """Write a checkpoint atomically: a crash or a full disk leaves the previous one intact.

    Args:
        path: Destination, normally ``RUN/checkpoint.safetensors``.
        model: The model being trained.
        optimizer: Its optimiser.
        position: Counters of the run.
        settings: The resolved configuration, compared when resuming.
        loader_generator: The DataLoader's generator.
        scaler: The fp16 loss scaler; a disabled one (or none) saves ``{}``.
        rank_rng_states: Every rank's generator states, rank 0 first (from
            ``capture_rng_states`` in each rank); None captures this process's, for a single
            process.

    Raises:
        DiskFullError: When the disk fills up during the write (the old file is kept).
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optimizer_tensors, optimizer_structure = flatten_optimizer_state(optimizer.state_dict())
    if rank_rng_states is None:
        rank_rng_states = [capture_rng_states(loader_generator)]
    tensors.update(optimizer_tensors)
    rng_structure: dict[str, Any] = {**rank_rng_states[0][1], "world_size": len(rank_rng_states)}
    for rank, (rng_tensors, structure) in enumerate(rank_rng_states):
        prefix = _rank_prefix(rank)
        tensors.update({prefix + k[len("rng.") :]: v for k, v in rng_tensors.items()})
        if rank:
            rng_structure.setdefault("ranks", {})[str(rank)] = structure
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "position": json.dumps(dataclasses.asdict(position)),
        "settings": json.dumps(settings, sort_keys=True),
        "optimizer": json.dumps(optimizer_structure),
        "rng": json.dumps(rng_structure),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None else {}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **software_versions(),
    }
    atomic_write(Path(path), lambda temporary: save_file(tensors, temporary, metadata=metadata))


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and check a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: When the file is not a readable simclr checkpoint.
    """
    path = Path(path)
    fix = "delete it or add --force to start the run again"
    try:
        raw = read_header(path).get("__metadata__") or {}
    except ModelFileError as error:
        raise CheckpointError(f"cannot resume from {path}: {error}; {fix}") from None
    if raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a simclr checkpoint; {fix}")
    if raw.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {raw.get('format_version')}, this simclr reads "
            f"{CHECKPOINT_VERSION}; resume with the version that wrote it, or {fix}"
        )
    try:
        position = TrainingPosition(**json.loads(raw["position"]))
        settings = json.loads(raw["settings"])
        optimizer_structure = json.loads(raw["optimizer"])
        rng_structure = json.loads(raw["rng"])
        scaler_state = json.loads(raw.get("scaler", "{}"))
        tensors = load_file(str(path))
    except (KeyError, TypeError, json.JSONDecodeError, SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is damaged ({error}); {fix}") from None
    return Checkpoint(
        path, position, settings, tensors, optimizer_structure, rng_structure, scaler_state
    )


def restore_checkpoint(
    checkpoint: Checkpoint,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader_generator: torch.Generator | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rank: int = 0,
) -> TrainingPosition:
    """Load a checkpoint in place: model, optimiser, generators, loss scaler; return its position.

    Call it last before the training loop: it sets the global random number generators, which
    building the model and the data loader would otherwise move on. Each rank restores the
    generators it saved; a rank the file has none for (``Checkpoint.rng_states_of``) keeps its
    own, freshly seeded ones. The scaler's state is
    restored when both the checkpoint and this run train in fp16; a run resumed in fp16 from
    another precision starts with a fresh scale.

    Raises:
        CheckpointError: When the tensors do not fit the model or the optimiser.
    """
    tensors = checkpoint.tensors
    model_tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_tensors, strict=True)
        optimizer.load_state_dict(
            unflatten_optimizer_state(tensors, checkpoint.optimizer_structure)
        )
    except (RuntimeError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[-1].strip() if str(error).strip() else error
        raise CheckpointError(
            f"{checkpoint.path} does not fit this model ({first}); add --force to start again"
        ) from None
    states = checkpoint.rng_states_of(rank)
    if states is not None:
        restore_rng_states(*states, loader_generator=loader_generator)
    if scaler is not None and scaler.is_enabled() and checkpoint.scaler_state:
        scaler.load_state_dict(checkpoint.scaler_state)
    return dataclasses.replace(checkpoint.position)


# Resuming: comparing settings (the run folder finds the checkpoint, see run_folder.py).


def settings_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings that differ between a checkpoint and the current run, as ``key a -> b``.

    Settings in ``RESUMABLE_CHANGES`` are left out.
    """
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        before, after = saved.get(key), current.get(key)
        if before != after:
            differences.append(f"{key} {json.dumps(before)} -> {json.dumps(after)}")
    return differences


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Settings that a resumed run changes on purpose (precision, learning rate), as text."""
    keys = ("precision", "learning_rate")
    return [f"{k} {saved.get(k)} -> {current.get(k)}" for k in keys if saved.get(k) != current[k]]
