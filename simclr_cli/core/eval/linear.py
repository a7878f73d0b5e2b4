"""The linear probe: multinomial logistic regression on standardised features, fitted in torch.

The standard measure of a self-supervised representation (SimCLR section 4, "linear evaluation
protocol"): a linear classifier trained on frozen features. Here it is fitted full-batch with
L-BFGS, as scikit-learn's ``LogisticRegression(solver="lbfgs")`` does, minimising

    mean cross-entropy + (l2 / 2) * ||W||^2          (the bias is not penalised)

which is scikit-learn's objective with ``C = 1 / (l2 * N)``. The penalty is chosen on a seeded
held-out slice of the training features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .splits import split_per_class

#: Penalties tried when choosing l2 on the held-out slice (small, as for good features).
DEFAULT_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


@dataclass
class LinearProbe:
    """A fitted probe: standardisation, then a linear map to class scores.

    Attributes:
        mean: (D,) feature means of the training set.
        scale: (D,) feature standard deviations (1 where a feature is constant).
        weight: (C, D) class weights on standardised features.
        bias: (C,) class biases.
        l2: The penalty it was fitted with.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    l2: float

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Class scores (Q, C) of features (Q, D)."""
        standard = (features.to(self.mean) - self.mean) / self.scale
        return standard @ self.weight.T + self.bias


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    l2: float,
    max_iterations: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit multinomial logistic regression full-batch with L-BFGS.

    Args:
        features: (N, D) standardised features, float64 or float32.
        labels: (N,) int64 labels in [0, num_classes).
        num_classes: C.
        l2: Penalty on the weights (not the bias), per the objective in the module docstring.
        max_iterations: L-BFGS iterations at most.

    Returns:
        Weight (C, D) and bias (C,).
    """
    weight = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=features.dtype, requires_grad=True)
    weight.data = weight.data.to(features.device)
    bias.data = bias.data.to(features.device)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iterations,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.T + bias, labels)
        loss = loss + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_linear_probe(
    features: np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    num_classes: int,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LinearProbe:
    """Standardise features, choose the penalty on a held-out slice, and fit on all of them.

    Args:
        features: (N, D) training features.
        labels: (N,) labels.
        num_classes: C.
        l2_grid: Penalties to try; with one value no slice is held out.
        holdout_fraction: Share of each class held out to choose the penalty.
        seed: Seed of the held-out slice.
        device: Where to fit (float64 on CPU for agreement with scikit-learn, float32 on GPUs).

    Returns:
        The probe fitted on every training feature with the chosen penalty.
    """
    device = torch.device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    x = torch.as_tensor(np.asarray(features), dtype=dtype, device=device)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    mean = x.mean(dim=0)
    scale = x.std(dim=0, unbiased=False)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    standard = (x - mean) / scale

    chosen = float(l2_grid[0])
    counts = torch.bincount(y, minlength=num_classes)
    if len(l2_grid) > 1 and int(counts.min()) >= 2:
        kept, held = split_per_class(y.cpu().numpy(), fraction=holdout_fraction, seed=seed)
        kept_t, held_t = torch.as_tensor(kept, device=device), torch.as_tensor(held, device=device)
        best = -1.0
        for l2 in l2_grid:
            weight, bias = fit_logistic_regression(
                standard[kept_t], y[kept_t], num_classes=num_classes, l2=float(l2)
            )
            predicted = (standard[held_t] @ weight.T + bias).argmax(dim=1)
            accuracy = float((predicted == y[held_t]).double().mean())
            # Ties go to the larger penalty, which generalises at least as well.
            if accuracy >= best:
                best, chosen = accuracy, float(l2)
    weight, bias = fit_logistic_regression(standard, y, num_classes=num_classes, l2=chosen)
    return LinearProbe(mean, scale, weight, bias, chosen)
