"""The inverse-convolution kernels: Triton (interpreter) vs the PyTorch twin vs the dense reference.

Triton runs on the CPU through its interpreter (tests/conftest.py sets TRITON_INTERPRET=1 before
anything imports triton), so shapes stay tiny.
"""

from __future__ import annotations

import pytest
import torch

from zoo.errors import ZooError
from zoo.kernels import triton_inverse_conv as tk
from zoo.kernels import wavefront as wf
from zoo.kernels.inverse_conv import (
    KernelBackendError,
    causal_conv,
    dense_inverse_conv,
    dense_matrix,
    inverse_conv,
    resolve_backend,
)

# (batch, channels, height, width, kernel size): 1 and 3+ channels, non-square, k = 2 and 3.
SHAPES = [
    (1, 1, 3, 5, 2),
    (7, 3, 4, 3, 2),
    (2, 4, 5, 4, 3),
    (7, 1, 4, 6, 3),
    (1, 3, 2, 2, 3),  # kernel larger than the image
]


def random_kernel(channels, k, unit_diagonal, dtype, seed=0):
    """Random weight: taps ~0.3; without unit diagonal, a diagonal in +-[0.8, 1.6]."""
    g = torch.Generator().manual_seed(seed)
    weight = 0.3 * torch.randn(channels, channels, k, k, generator=g, dtype=dtype)
    if not unit_diagonal:
        diag = 0.8 + 0.8 * torch.rand(channels, generator=g, dtype=dtype)
        sign = torch.where(torch.rand(channels, generator=g) < 0.5, -1.0, 1.0).to(dtype)
        weight[:, :, 0, 0] += torch.diag(diag * sign)
    # Garbage in the masked centre entries: every implementation must ignore it.
    weight[:, :, 0, 0] += torch.triu(torch.full((channels, channels), 5.0, dtype=dtype), 1)
    return weight


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def nan_like(t):
    return torch.full_like(t, float("nan"))


@pytest.mark.slow
@pytest.mark.parametrize("unit_diagonal", [True, False])
@pytest.mark.parametrize("batch,channels,height,width,k", SHAPES)
def test_triton_twin_dense_agree(batch, channels, height, width, k, unit_diagonal):
    weight = random_kernel(channels, k, unit_diagonal, torch.float64, seed=k + channels)
    kernel64 = wf.full_kernel(weight, unit_diagonal)
    kernel = kernel64.float()
    x64 = torch.randn(batch, channels, height, width, dtype=torch.float64)
    g64 = torch.randn_like(x64)
    x, g = x64.float(), g64.float()

    # Dense float64 references: z = M^-1 x, y = M^-T g, x = M z, dW = -corr(z, y) on learnable taps.
    matrix = dense_matrix(kernel64, height, width)
    z_ref = torch.linalg.solve_triangular(matrix, _pixel_major(x64).T, upper=False).T
    y_ref = torch.linalg.solve_triangular(matrix.T, _pixel_major(g64).T, upper=True).T
    z_ref, y_ref = _from_pixel_major(z_ref, x64.shape), _from_pixel_major(y_ref, x64.shape)
    conv_ref = _from_pixel_major((matrix @ _pixel_major(x64).T).T, x64.shape)
    dw_ref = wf.weight_gradient(z_ref, y_ref, k, unit_diagonal)

    twin = {
        "solve": wf.solve(x, kernel),
        "dy": wf.solve_transposed(g, kernel),
        "conv": wf.causal_conv(x, kernel),
    }
    twin["dw"] = wf.weight_gradient(twin["solve"], twin["dy"], k, unit_diagonal)
    triton = {}
    for samples_per_program in (None, 1):  # interpreter default (all in one) and the GPU layout
        spp = samples_per_program
        triton["solve"] = tk.solve(x, kernel, out=nan_like(x), samples_per_program=spp)
        triton["dy"] = tk.dy(g, kernel, out=nan_like(g), samples_per_program=spp)
        for name in ("solve", "dy"):
            assert not torch.isnan(triton[name]).any(), f"{name}: an output element was not written"
    triton["conv"] = tk.conv(x, kernel, out=nan_like(x))
    triton["dw"] = tk.dw(triton["solve"], triton["dy"], k, unit_diagonal, out=nan_like(kernel))
    reference = {"solve": z_ref, "dy": y_ref, "conv": conv_ref, "dw": dw_ref}
    for name, ref in reference.items():
        assert not torch.isnan(triton[name]).any(), f"{name}: an output element was not written"
        assert rel_err(twin[name].double(), ref) < 1e-5, f"twin {name}"
        assert rel_err(triton[name].double(), ref) < 1e-5, f"triton {name}"


def _pixel_major(t):
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)


def _from_pixel_major(flat, shape):
    b, c, h, w = shape
    return flat.reshape(b, h, w, c).permute(0, 3, 1, 2)


def test_dense_matrix_is_lower_triangular_with_unit_diagonal():
    kernel = wf.full_kernel(random_kernel(3, 2, True, torch.float64), True)
    matrix = dense_matrix(kernel, 3, 4)
    assert torch.equal(matrix, torch.tril(matrix))
    assert torch.equal(torch.diagonal(matrix), torch.ones(36, dtype=torch.float64))


@pytest.mark.parametrize("unit_diagonal", [True, False])
@pytest.mark.parametrize("k", [2, 3])
def test_gradcheck_twin(k, unit_diagonal):
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    weight = random_kernel(3, k, unit_diagonal, torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, w: inverse_conv(a, w, unit_diagonal, backend="torch"), (x, weight), fast_mode=True
    )


def test_gradcheck_twin_full_jacobian():
    """Slow mode (every Jacobian entry), on a smaller shape than the fast-mode checks."""
    x = torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = random_kernel(2, 2, True, torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, w: inverse_conv(a, w, True, backend="torch"), (x, weight))


def test_gradcheck_triton_float64():
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    weight = random_kernel(2, 2, True, torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, w: inverse_conv(a, w, True, backend="triton"), (x, weight), fast_mode=True
    )


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradients_match_dense_autograd(backend):
    """Backward (dy, dw) equals autograd through the float64 dense solve."""
    x = torch.randn(3, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = random_kernel(3, 3, True, torch.float64).requires_grad_(True)
    upstream = torch.randn(3, 3, 4, 5, dtype=torch.float64)
    z = inverse_conv(x, weight, True, backend=backend)
    got = torch.autograd.grad((z * upstream).sum(), (x, weight))
    want = torch.autograd.grad((dense_inverse_conv(x, weight, True) * upstream).sum(), (x, weight))
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-10
    centre = got[1][:, :, 0, 0]
    assert torch.equal(centre, torch.tril(centre, -1)), "masked centre taps must get zero gradient"


def test_solve_inverts_causal_conv_for_both_backends():
    weight = random_kernel(3, 2, False, torch.float64)
    z = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    x = causal_conv(z, weight, unit_diagonal=False, backend="torch")
    for backend in ("torch", "triton"):
        assert torch.allclose(inverse_conv(x, weight, False, backend=backend), z, atol=1e-12)
    with torch.no_grad():
        assert torch.allclose(causal_conv(z, weight, False, backend="triton"), x, atol=1e-12)


def test_backend_choice_and_errors(monkeypatch):
    x = torch.zeros(1, 1, 2, 2)
    assert resolve_backend(x, None) == "torch"  # CPU tensors default to the twin
    assert resolve_backend(x, "triton") == "triton"  # allowed here: TRITON_INTERPRET=1
    with pytest.raises(KernelBackendError, match="unknown backend"):
        resolve_backend(x, "cuda")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ZooError, match="TRITON_INTERPRET=1"):
        resolve_backend(x, "triton")
