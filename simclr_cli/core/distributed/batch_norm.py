"""Global batch norm, and the wrapper that trains a model on several ranks.

Batch norm statistics are taken over the global batch (the paper's global BN): on CUDA with
PyTorch's ``SyncBatchNorm`` (through timm, which also converts ``BatchNormAct2d``), on the CPU
with ``GlobalBatchNorm``, the readable reference that PyTorch lacks for CPU tensors.
``SIMCLR_SYNC_BN=reference`` uses the reference on CUDA too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from timm.layers import convert_sync_batchnorm
from torch import nn

from .. import _env
from .collectives import all_reduce_with_gradient
from .ranks import RankContext


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are taken over the batches of all ranks.

    The reference implementation, written with differentiable all-reduces so that autograd
    derives the backward: the mean and the (biased) variance are two-pass sums over every rank's
    samples, and the running statistics are updated as ``nn.BatchNorm`` does (unbiased
    variance). In evaluation, or with one process, it is ordinary batch norm. Works for inputs
    (N, C) and (N, C, ...).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions, got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise (N, C, ...) with statistics over every rank's N in training."""
        self._check_input_dim(input)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        values = input.float()
        count = torch.tensor([input.numel() / input.shape[1]], device=input.device)
        sums = all_reduce_with_gradient(torch.cat([values.sum(dims), count]))
        total = sums[-1].detach()
        mean = sums[:-1] / total
        centered = values - mean.view(shape)
        variance = all_reduce_with_gradient((centered * centered).sum(dims)) / total
        output = centered * torch.rsqrt(variance + self.eps).view(shape)
        # A scale without a shift (the v2 head's last layer) has weight and no bias.
        if self.weight is not None:
            output = output * self.weight.view(shape)
        if self.bias is not None:
            output = output + self.bias.view(shape)
        # With track_running_stats the three buffers exist; the checks name them for the types.
        if (
            self.track_running_stats
            and self.running_mean is not None
            and self.running_var is not None
            and self.num_batches_tracked is not None
        ):
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum
                if momentum is None:
                    momentum = 1.0 / float(self.num_batches_tracked)
                unbiased = variance * total / (total - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return output.to(input.dtype)


class GlobalBatchNormAct(GlobalBatchNorm):
    """``GlobalBatchNorm`` followed by the dropout and activation of timm's ``BatchNormAct2d``."""

    # Copied from the converted ``BatchNormAct2d``.
    drop: nn.Module
    act: nn.Module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise over all ranks, then apply ``drop`` and ``act``."""
        return self.act(self.drop(super().forward(input)))


def _convert_to_global_batch_norm(module: nn.Module) -> nn.Module:
    converted = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, nn.SyncBatchNorm)
    ):
        with_activation = hasattr(module, "act") and hasattr(module, "drop")
        kind = GlobalBatchNormAct if with_activation else GlobalBatchNorm
        converted = kind(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if with_activation:
            converted.act = module.act
            converted.drop = module.drop
        # The same parameters and buffers, so that the optimiser and the saved file see them.
        if module.affine:
            converted.weight = module.weight
            converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
    for name, child in module.named_children():
        if not (converted is not module and name in ("act", "drop")):
            converted.add_module(name, _convert_to_global_batch_norm(child))
    return converted


def convert_sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every batch norm of ``model`` take its statistics over all ranks.

    Args:
        model: The model; its batch norm layers are replaced in place (parameters kept).
        device: Where it trains: CUDA uses PyTorch's fused ``SyncBatchNorm`` (via timm, which
            also handles ``BatchNormAct2d``), the CPU uses ``GlobalBatchNorm``.

    Returns:
        The model (a new object only if ``model`` itself is a batch norm).
    """
    if device.type == "cuda" and not _env.sync_batch_norm_reference():
        return convert_sync_batchnorm(model)
    return _convert_to_global_batch_norm(model)


def prepare_model(
    model: nn.Module, context: RankContext, *, device: torch.device, sync_batch_norm: bool
) -> nn.Module:
    """Wrap a model for training on several ranks; the model itself on one.

    Args:
        model: The model, already on ``device``. Its batch norm layers are converted in place
            when ``sync_batch_norm``; save it (not the wrapper) afterwards.
        context: This rank's place in the job.
        device: The rank's device.
        sync_batch_norm: Take batch norm statistics over the global batch.

    Returns:
        The module to call in the training step: ``DistributedDataParallel``, which starts from
        rank 0's weights and averages the gradients over ranks.
    """
    if not context.distributed:
        return model
    if sync_batch_norm:
        model = convert_sync_batch_norm(model, device)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[context.local_rank] if device.type == "cuda" else None
    )


def gradient_sync_deferral(
    network: nn.Module,
) -> Callable[[], contextlib.AbstractContextManager] | None:
    """What defers the gradient all-reduce of ``network``'s backward passes, if anything does.

    Gradient caching back-propagates K micro-batches per step: all but the last run inside this
    context, so that ``DistributedDataParallel`` sums their gradients locally and all-reduces
    once per step instead of K times.

    Args:
        network: From ``prepare_model``, possibly compiled (``torch.compile`` keeps the wrapped
            module in ``_orig_mod``).

    Returns:
        ``DistributedDataParallel.no_sync`` of the wrapper; None for a model on one process.
    """
    wrapped = getattr(network, "_orig_mod", network)
    if isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped.no_sync
    return None
