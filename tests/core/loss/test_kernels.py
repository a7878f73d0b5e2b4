"""The fast NT-Xent paths against the dense reference: values, gradients, and memory.

The Triton kernels run on the GPU when there is one, else on the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``), so the same kernel code is checked in CI without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


# Projection widths of a wide head: one slice of the sum over D (64) and one gradient block
# (128), several of each, and 200, a multiple of neither.
WIDE_DIMS = [128, 200, 256, 512, 1024, 2048]


@pytest.mark.parametrize("d", WIDE_DIMS)
def test_fused__wide_projection_matches_reference(monkeypatch, fused_device, d):
    # The kernels tile D: rows and columns are summed in slices and the gradients written in
    # blocks, each of which must reach every dimension (through the rows and the columns).
    torch.manual_seed(d)
    n = 6
    z = torch.randn(2 * n, d, device=fused_device)
    positive, own = pairs_index(n, fused_device)
    expected = loss_and_gradients("reference", monkeypatch, z, None, positive, own, 0.1)
    actual = loss_and_gradients("fused", monkeypatch, z, None, positive, own, 0.1)
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-4, atol=1e-6)
    assert (actual[1].abs().sum(dim=0) > 0).all(), "every dimension must receive a gradient"


def test_fused__wide_projection_rows_slice_of_columns(monkeypatch, fused_device):
    # Rows and columns differ (the distributed case) and span several tiles of 64, with D = 200.
    torch.manual_seed(4)
    n = 40
    z = torch.randn(2 * n, 200, device=fused_device)
    positive, own = pairs_index(n, fused_device)
    rows = slice(7, 77)
    expected = loss_and_gradients("reference", monkeypatch, z, rows, positive[rows], own[rows], 0.2)
    actual = loss_and_gradients("fused", monkeypatch, z, rows, positive[rows], own[rows], 0.2)
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(actual[1], expected[1], rtol=1e-4, atol=1e-6)


# Compiles the three kernels for a CUDA target without a GPU (Triton ships ptxas) and prints the
# shared memory each asks for. Run in a fresh process: under TRITON_INTERPRET=1 the kernels are
# interpreted functions, which cannot be compiled.
COMPILE_SCRIPT = """
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from simclr_cli.core.loss.kernels import _triton

dim = int(sys.argv[1])
settings = {
    **_triton._launch_settings(dim),
    "BLOCK_D": _triton._gradient_block_dims(dim),
    "UPCAST": False,
    "INPUT_PRECISION": "ieee",
}
shared = {}
for target in sys.argv[2:]:
    arch, dtype = target.split(":")
    for kernel in (
        _triton._forward_kernel, _triton._backward_rows_kernel, _triton._backward_columns_kernel
    ):
        constants = {name: settings[name] for name in kernel.arg_names if name in settings}
        types = {}
        for name in kernel.arg_names:
            if name in constants:
                types[name] = "constexpr"
            elif name in ("rows_pointer", "columns_pointer"):
                types[name] = "*" + dtype
            elif name in ("positive_pointer", "self_pointer"):
                types[name] = "*i64"
            elif name.endswith("_pointer"):
                types[name] = "*fp32"
            elif name in ("scale", "gradient_scale"):
                types[name] = "fp32"
            else:
                types[name] = "i32"
        source = ASTSource(fn=kernel, signature=types, constexprs=constants)
        compiled = triton.compile(source, target=GPUTarget("cuda", int(arch), 32))
        shared[f"sm_{arch} {dtype} {kernel.__name__}"] = compiled.metadata.shared
print(json.dumps(shared))
"""


@pytest.mark.slow
@needs_triton
def test_fused__shared_memory_bounded_whatever_the_dim(tmp_path):
    # The shared memory a kernel needs is fixed when it is compiled, and a launch that needs more
    # than the GPU has fails. Tiles of the whole D needed 256 KiB at D = 512 (80 KiB at D = 128 on
    # sm_75). With D tiled, D = 2048 needs what D = 128 does, within the 64 KiB of a T4 (sm_75) in
    # float32 and on an H100 (sm_90) in bfloat16 (sm_80 in float32, the most, asks 64 KiB).
    completed = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT, "2048", "75:fp32", "90:bf16"],
        capture_output=True,
        text=True,
        env={**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    shared = json.loads(completed.stdout.strip().splitlines()[-1])
    assert len(shared) == 6
    too_large = {kernel: size for kernel, size in shared.items() if size > 64 * 1024}
    assert not too_large, f"kernels above 64 KiB of shared memory: {too_large}"


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
@pytest.mark.gpu
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
