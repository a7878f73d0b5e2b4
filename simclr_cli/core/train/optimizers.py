"""Optimisers and the learning-rate schedule of SimCLR pretraining.

LARS (You et al. 2017, "Large Batch Training of Convolutional Networks") is the paper's
optimiser; as in the paper, biases and batch-norm parameters are excluded from both weight decay
and the layer-wise adaptation. The schedule is a linear warm-up followed by cosine decay to 0,
computed from the step alone so that a resumed or re-planned run lands on the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..choices import LRScaling, OptimizerName

#: Base learning rate of each optimiser for each scaling, before scaling with the batch size:
#: the peak is base * batch / 256 (linear) or base * sqrt(batch) (sqrt), as the paper's flags mean
#: (SimCLR appendix B.1: 0.3 linear, 0.075 sqrt for LARS). The sqrt bases of SGD and AdamW are their
#: linear bases over 16, so that both scalings give the same rate at batch 256.
BASE_LEARNING_RATE = {
    LRScaling.linear: {
        OptimizerName.lars: 0.3,
        OptimizerName.sgd: 0.06,
        OptimizerName.adamw: 1e-3,
    },
    LRScaling.sqrt: {
        OptimizerName.lars: 0.075,
        OptimizerName.sgd: 0.06 / 16,
        OptimizerName.adamw: 1e-3 / 16,
    },
}
#: Weight decay of each optimiser (the paper: 1e-6 with LARS).
DEFAULT_WEIGHT_DECAY = {
    OptimizerName.lars: 1e-6,
    OptimizerName.sgd: 5e-4,
    OptimizerName.adamw: 1e-4,
}


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling.

    For every parameter group with ``lars_adapt=True`` the update is scaled by the trust ratio
    ``eta * ||w|| / ||g + weight_decay * w||``; groups with ``lars_adapt=False`` (biases and
    norms) get plain momentum SGD without weight decay.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        momentum: Momentum factor.
        weight_decay: L2 penalty for adapted groups.
        eta: Trust coefficient (0.001 in the reference implementation).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 1e-3,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_adapt": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                update = parameter.grad
                if group["lars_adapt"]:
                    update = update.add(parameter, alpha=group["weight_decay"])
                    weight_norm = torch.linalg.vector_norm(parameter)
                    update_norm = torch.linalg.vector_norm(update)
                    ratio = torch.where(
                        (weight_norm > 0) & (update_norm > 0),
                        group["eta"] * weight_norm / update_norm,
                        torch.ones_like(weight_norm),
                    )
                    update = update * ratio
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                parameter.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def split_decay_groups(
    modules: Iterable[nn.Module],
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into those with weight decay (weights) and without (biases, norms).

    Returns:
        Parameters of matrices and convolutions, then parameters of dimension 0 or 1.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return decay, no_decay


def scaled_learning_rate(
    optimizer: OptimizerName, *, batch_size: int, base: float | None, scaling: LRScaling
) -> float:
    """The peak learning rate for a global batch size (SimCLR appendix B.1).

    ``linear``: base * batch / 256; ``sqrt``: base * sqrt(batch), so that ``--lr 0.075`` with
    LARS gives 1.2 at batch 256 as in the paper. Without a base, the optimiser's base for the
    scaling (``BASE_LEARNING_RATE``).

    Args:
        optimizer: The optimiser, whose default base is used when ``base`` is None.
        batch_size: The global batch size (all ranks and micro-batches together).
        base: The ``--lr`` flag, or None for the default.
        scaling: ``linear`` or ``sqrt``.

    Returns:
        The learning rate after warm-up.
    """
    optimizer, scaling = OptimizerName(optimizer), LRScaling(scaling)
    if base is None:
        base = BASE_LEARNING_RATE[scaling][optimizer]
    if scaling is LRScaling.sqrt:
        return base * math.sqrt(batch_size)
    return base * batch_size / 256


def create_optimizer(
    name: OptimizerName | str,
    modules: Iterable[nn.Module],
    *,
    learning_rate: float,
    weight_decay: float | None = None,
) -> torch.optim.Optimizer:
    """Create the optimiser with biases and norms excluded from weight decay.

    Args:
        name: ``lars``, ``sgd`` or ``adamw``.
        modules: The modules to train (backbone and head).
        learning_rate: The peak learning rate, already scaled.
        weight_decay: Weight decay; the optimiser's default when None.

    Returns:
        The optimiser; every group starts at ``learning_rate``.
    """
    name = OptimizerName(name)
    decay_value = DEFAULT_WEIGHT_DECAY[name] if weight_decay is None else weight_decay
    decay, no_decay = split_decay_groups(modules)
    groups = [
        {"params": decay, "weight_decay": decay_value, "lars_adapt": True},
        {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False},
    ]
    if name is OptimizerName.lars:
        return LARS(groups, lr=learning_rate, weight_decay=decay_value)
    for group in groups:
        group.pop("lars_adapt")
    if name is OptimizerName.sgd:
        return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=learning_rate)
