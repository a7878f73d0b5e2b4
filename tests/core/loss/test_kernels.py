"""The fast NT-Xent paths against the dense reference: values, gradients, and memory.

The Triton kernels run on the GPU when there is one, else on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``), so the same kernel code is checked in CI without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from simclr_cli.core.errors import ConfigError
from simclr_cli.core.loss import kernels
from simclr_cli.core.loss.kernels import _chunked
from simclr_cli.core.loss.kernels._triton_env import interpreting
from simclr_cli.core.loss.nt_xent import nt_xent_loss, nt_xent_rows, resolve_implementation

CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not kernels.triton_available(), reason="Triton is not installed")
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

# (pairs N, dimension D, temperature): N = 1 (no negatives), odd N, D not a power of two, and
# more columns than one tile of the Triton kernels (64).
CASES = [(1, 3, 0.5), (5, 7, 0.05), (37, 130, 1.0), (8, 16, 0.2)]


@pytest.fixture(scope="module")
def fused_device():
    """Where the Triton kernels run: CUDA, or the CPU through the interpreter."""
    if CUDA:
        yield "cuda"
        return
    if not kernels.triton_available():
        pytest.skip("Triton is not installed")
    if not interpreting():
        pytest.skip("no GPU, and TRITON_INTERPRET=1 was not set before Triton was imported")
    yield "cpu"


def pairs_index(n: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(2 * n, device=device)
    return (index + n) % (2 * n), index


def loss_and_gradients(
    implementation: str,
    monkeypatch: pytest.MonkeyPatch,
    rows: torch.Tensor,
    columns: torch.Tensor | None,
    positive: torch.Tensor,
    own: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient with respect to the un-normalised leaf, through nt_xent_rows.

    With ``columns`` None the rows are the columns (the single-device case); otherwise the rows
    are ``rows[slice]`` of the same leaf as the columns (the distributed case).
    """
    monkeypatch.setenv("SIMCLR_NT_XENT", implementation)
    leaf = rows.detach().clone().requires_grad_()
    if columns is None:
        loss = nt_xent_rows(leaf, leaf, positive, own, temperature=temperature)
    else:
        loss = nt_xent_rows(leaf[columns], leaf, positive, own, temperature=temperature)
    loss.backward()
    return loss.detach(), leaf.grad


@pytest.mark.parametrize(("n", "d", "temperature"), CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked__matches_reference(monkeypatch, n, d, temperature, dtype):
    torch.manual_seed(n + d)
    z = torch.randn(2 * n, d, dtype=dtype)
    positive, own = pairs_index(n)
    # Blocks of 3 rows, so that several blocks and a ragged last one are exercised.
    monkeypatch.setattr(_chunked, "BLOCK_BYTES", 3 * 2 * n * z.element_size())
    expected = loss_and_gradients("reference", monkeypatch, z, None, positive, own, temperature)
    actual = loss_and_gradients("chunked", monkeypatch, z, None, positive, own, temperature)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(actual[0], expected[0], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(actual[1], expected[1], rtol=tolerance, atol=tolerance)


def test_chunked__very_low_temperature_stays_finite(monkeypatch):
    # Below MIN_TEMPERATURE_FOR_FIXED_SHIFT the forward subtracts each row's maximum instead.
    torch.manual_seed(0)
    z = torch.randn(12, 9)
    positive, own = pairs_index(6)
    expected = loss_and_gradients("reference", monkeypatch, z, None, positive, own, 0.005)
    actual = loss_and_gradients("chunked", monkeypatch, z, None, positive, own, 0.005)
    assert torch.isfinite(actual[0]) and torch.isfinite(actual[1]).all()
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("implementation", ["chunked", "fused"])
def test_rows_slice_of_columns__matches_reference(monkeypatch, request, implementation):
    # The distributed case: a rank's rows are a slice of the gathered columns, and gradients
    # reach the leaf both through the rows and through the columns.
    device = request.getfixturevalue("fused_device") if implementation == "fused" else "cpu"
    torch.manual_seed(1)
    n = 9
    z = torch.randn(2 * n, 20, device=device)
    positive, own = pairs_index(n, device)
    rows = slice(4, 13)
    expected = loss_and_gradients("reference", monkeypatch, z, rows, positive[rows], own[rows], 0.3)
    actual = loss_and_gradients(
        implementation, monkeypatch, z, rows, positive[rows], own[rows], 0.3
    )
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-5, atol=1e-6)
    assert actual[1][:4].abs().sum() > 0, "columns outside the rows must receive gradients"


@pytest.mark.parametrize(("n", "d", "temperature"), CASES)
def test_fused__matches_reference_float32(monkeypatch, fused_device, n, d, temperature):
    torch.manual_seed(n + d)
    z = torch.randn(2 * n, d, device=fused_device)
    positive, own = pairs_index(n, fused_device)
    expected = loss_and_gradients("reference", monkeypatch, z, None, positive, own, temperature)
    actual = loss_and_gradients("fused", monkeypatch, z, None, positive, own, temperature)
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("implementation", ["chunked", "fused"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision__close_to_reference(monkeypatch, request, implementation, dtype):
    device = request.getfixturevalue("fused_device") if implementation == "fused" else "cpu"
    torch.manual_seed(2)
    n = 21
    z = torch.randn(2 * n, 40, device=device).to(dtype)
    positive, own = pairs_index(n, device)
    expected = loss_and_gradients("reference", monkeypatch, z, None, positive, own, 0.1)
    actual = loss_and_gradients(implementation, monkeypatch, z, None, positive, own, 0.1)
    assert actual[0].dtype == torch.float32 and actual[1].dtype == dtype
    # The chunked path computes in float32 like the reference; the kernels multiply the rounded
    # normalised embeddings, so they differ by about the precision of the format, times 1 / t.
    # Gradients are rounded to the input format in both, so they agree to its precision.
    tolerance = 1e-5 if implementation == "chunked" else 0.02
    torch.testing.assert_close(actual[0], expected[0], rtol=tolerance, atol=tolerance)
    gradient_tolerance = 0.01 if implementation == "chunked" else 0.05
    torch.testing.assert_close(
        actual[1].float(), expected[1].float(), rtol=gradient_tolerance, atol=1e-3
    )


def test_chunked__saves_no_matrix_of_similarities(monkeypatch):
    # What autograd keeps for the backward: the dense reference keeps (2N, 2N) matrices, the
    # chunked path only the (2N, D) inputs and (2N,) vectors.
    n, d = 256, 16
    z = torch.randn(2 * n, d, requires_grad=True)

    def saved_elements(implementation: str) -> int:
        monkeypatch.setenv("SIMCLR_NT_XENT", implementation)
        sizes: list[int] = []

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            nt_xent_loss(z[:n], z[n:], temperature=0.5)
        return max(sizes)

    assert saved_elements("reference") >= (2 * n) ** 2
    assert saved_elements("chunked") <= 2 * n * d


def test_resolve_implementation__auto_is_chunked_on_cpu(monkeypatch):
    monkeypatch.delenv("SIMCLR_NT_XENT", raising=False)
    assert resolve_implementation(torch.zeros(2, 2)) == "chunked"
    monkeypatch.setenv("SIMCLR_NT_XENT", "Reference")
    assert resolve_implementation(torch.zeros(2, 2)) == "reference"


def test_resolve_implementation__unknown_value_raises(monkeypatch):
    monkeypatch.setenv("SIMCLR_NT_XENT", "fast")
    with pytest.raises(ConfigError, match="SIMCLR_NT_XENT='fast' is not one of"):
        nt_xent_loss(torch.randn(3, 4), torch.randn(3, 4))


def test_resolve_implementation__fused_where_it_cannot_run_raises(monkeypatch):
    monkeypatch.setenv("SIMCLR_NT_XENT", "fused")
    with pytest.raises(ConfigError, match="needs Triton"):
        resolve_implementation(torch.zeros(2, 2, dtype=torch.float64))
    if not CUDA:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(ConfigError, match="needs Triton"):
            resolve_implementation(torch.zeros(2, 2))


@needs_cuda
@needs_triton
def test_resolve_implementation__auto_is_fused_on_cuda(monkeypatch):
    monkeypatch.delenv("SIMCLR_NT_XENT", raising=False)
    assert resolve_implementation(torch.zeros(2, 2, device="cuda")) == "fused"
    assert resolve_implementation(torch.zeros(2, 2, device="cuda", dtype=torch.float64)) == (
        "chunked"
    )


@needs_cuda
@needs_triton
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused__large_batch_on_gpu_matches_reference(monkeypatch, dtype):
    torch.manual_seed(3)
    n = 2500
    z = torch.randn(2 * n, 128, device="cuda").to(dtype)
    positive, own = pairs_index(n, "cuda")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    expected = loss_and_gradients("reference", monkeypatch, z, None, positive, own, 0.1)
    actual = loss_and_gradients("fused", monkeypatch, z, None, positive, own, 0.1)
    tolerance = 1e-5 if dtype == torch.float32 else 0.02
    torch.testing.assert_close(actual[0], expected[0], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(
        actual[1].float(), expected[1].float(), rtol=tolerance * 4, atol=tolerance / 100
    )
