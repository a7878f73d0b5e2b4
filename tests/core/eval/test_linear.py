"""The torch linear probe against scikit-learn's LogisticRegression."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simclr_cli.core.eval.linear import fit_linear_probe

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _blobs(seed: int, n_per_class: int, classes: int = 5, dim: int = 24):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 0.9
    x = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return x.astype(np.float32), y


def _accuracy(probe, x, y) -> float:
    scores = probe.scores(torch.from_numpy(x))
    return float((scores.argmax(1).numpy() == y).mean())


def test_fit_linear_probe__agrees_with_sklearn_at_the_same_penalty():
    train_x, train_y = _blobs(0, 80)
    # Held-out points from the same centres as the training points (same seed, more of them).
    full_x, full_y = _blobs(0, 480)
    order = np.random.default_rng(1).permutation(len(full_y))
    val_x, val_y = full_x[order[:1000]], full_y[order[:1000]]
    l2 = 1e-2
    probe = fit_linear_probe(train_x, train_y, num_classes=5, l2_grid=(l2,))
    scaler = StandardScaler().fit(train_x)
    reference = LogisticRegression(C=1.0 / (l2 * len(train_y)), max_iter=5000).fit(
        scaler.transform(train_x), train_y
    )
    ours = _accuracy(probe, val_x, val_y)
    theirs = reference.score(scaler.transform(val_x), val_y)
    assert abs(ours - theirs) <= 0.01, (ours, theirs)
    # The same objective gives (nearly) the same predictions, not just the same accuracy.
    same = (
        probe.scores(torch.from_numpy(val_x)).argmax(1).numpy()
        == reference.predict(scaler.transform(val_x))
    ).mean()
    assert same >= 0.99


def test_fit_linear_probe__chosen_penalty_agrees_with_sklearn_c_01():
    full_x, full_y = _blobs(3, 300)
    order = np.random.default_rng(0).permutation(len(full_y))
    train, val = order[:600], order[600:]
    probe = fit_linear_probe(full_x[train], full_y[train], num_classes=5, seed=0)
    scaler = StandardScaler().fit(full_x[train])
    reference = LogisticRegression(C=0.1, max_iter=5000).fit(
        scaler.transform(full_x[train]), full_y[train]
    )
    ours = _accuracy(probe, full_x[val], full_y[val])
    theirs = reference.score(scaler.transform(full_x[val]), full_y[val])
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_fit_linear_probe__constant_feature_does_not_divide_by_zero():
    x, y = _blobs(2, 20)
    x[:, 0] = 3.0
    probe = fit_linear_probe(x, y, num_classes=5, l2_grid=(1e-3,))
    assert torch.isfinite(probe.weight).all() and probe.scale[0] == 1.0
