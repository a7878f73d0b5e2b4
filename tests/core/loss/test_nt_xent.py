"""NT-Xent against a literal NumPy transcription of the paper's Algorithm 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simclr_cli.core.loss.nt_xent import nt_xent_loss, nt_xent_rows


def algorithm1_loss(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> float:
    """Algorithm 1 of Chen et al. 2020, loop for loop: views 2k-1 and 2k are a pair."""
    n = z_a.shape[0]
    z = np.empty((2 * n, z_a.shape[1]))
    z[0::2], z[1::2] = z_a, z_b  # z_{2k-1} = view a of image k, z_{2k} = view b.

    def sim(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))

    def pair_loss(i: int, j: int) -> float:
        numerator = np.exp(sim(z[i], z[j]) / temperature)
        denominator = sum(np.exp(sim(z[i], z[k]) / temperature) for k in range(2 * n) if k != i)
        return -np.log(numerator / denominator)

    total = sum(pair_loss(2 * k, 2 * k + 1) + pair_loss(2 * k + 1, 2 * k) for k in range(n))
    return total / (2 * n)


def numeric_gradient(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> np.ndarray:
    """Central differences of Algorithm 1 with respect to z_a."""
    gradient = np.zeros_like(z_a)
    step = 1e-6
    for index in np.ndindex(z_a.shape):
        plus, minus = z_a.copy(), z_a.copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (
            algorithm1_loss(plus, z_b, temperature) - algorithm1_loss(minus, z_b, temperature)
        ) / (2 * step)
    return gradient


@pytest.mark.parametrize(("n", "d", "temperature"), [(1, 3, 0.5), (4, 5, 0.1), (3, 8, 1.0)])
def test_nt_xent_loss__matches_algorithm1_value_and_gradient(n: int, d: int, temperature: float):
    rng = np.random.default_rng(n * 100 + d)
    z_a, z_b = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    a = torch.tensor(z_a, requires_grad=True)
    b = torch.tensor(z_b, requires_grad=True)
    loss = nt_xent_loss(a, b, temperature=temperature)
    loss.backward()
    assert loss.item() == pytest.approx(algorithm1_loss(z_a, z_b, temperature), rel=1e-9)
    np.testing.assert_allclose(
        a.grad.numpy(), numeric_gradient(z_a, z_b, temperature), rtol=1e-5, atol=1e-7
    )


def test_nt_xent_loss__perfect_pairs_give_low_loss():
    z = torch.eye(4)
    aligned = nt_xent_loss(z, z, temperature=0.1)
    shuffled = nt_xent_loss(z, z.roll(1, dims=0), temperature=0.1)
    assert aligned.item() < 0.01 < shuffled.item()


def test_nt_xent_loss__bf16_inputs_give_float32_loss():
    z_a, z_b = torch.randn(6, 16), torch.randn(6, 16)
    loss = nt_xent_loss(z_a.bfloat16(), z_b.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(nt_xent_loss(z_a, z_b).item(), abs=0.02)


def test_nt_xent_loss__mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        nt_xent_loss(torch.randn(4, 8), torch.randn(5, 8))


def test_nt_xent_rows__rows_slice_gives_mean_of_their_losses():
    # A rank of a distributed job holds a slice of the rows; the mean over all slices (weighted
    # by their sizes) is the full loss.
    torch.manual_seed(0)
    n = 5
    z = torch.randn(2 * n, 7, dtype=torch.float64)
    index = torch.arange(2 * n)
    positive = (index + n) % (2 * n)
    full = nt_xent_rows(z, z, positive, index, temperature=0.3)
    first = nt_xent_rows(z[:3], z, positive[:3], index[:3], temperature=0.3)
    rest = nt_xent_rows(z[3:], z, positive[3:], index[3:], temperature=0.3)
    assert full.item() == pytest.approx((3 * first.item() + 7 * rest.item()) / 10, rel=1e-12)
