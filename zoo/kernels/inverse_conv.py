"""The inverse of a causal convolution as one autograd function, on a chosen backend.

``inverse_conv(x, weight, unit_diagonal)`` returns ``z = T(K)^-1 x`` with ``K =
full_kernel(weight, unit_diagonal)`` (conventions in ``zoo.kernels.wavefront``; Inverse-Flow,
arXiv 2410.14634). Forward = the wavefront solve; backward = ``dL/dx = T^-T dL/dz`` (the
back-substitution, "dy") and ``dL/dweight = -corr(z, dL/dx)`` on the learnable taps ("dw").

Backends: ``"triton"`` (``zoo.kernels.triton_inverse_conv``) and ``"torch"`` (the PyTorch twin).
``backend=None`` picks Triton for CUDA tensors when Triton is importable, the twin otherwise.
Forcing ``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1`` set before Triton is imported.

``dense_inverse_conv`` is the float64 reference: the explicit (CHW x CHW) matrix of ``T(K)``
(pixel-major, channels in order inside a pixel, where it is lower-triangular), built by one
batched convolution of the identity, and ``torch.linalg.solve_triangular``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from zoo.errors import KernelBackendError  # noqa: F401  (re-exported: its old home)
from zoo.kernels import wavefront

Backend = Literal["triton", "torch"]
BACKENDS = ("triton", "torch")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it is never imported here)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(x: torch.Tensor, backend: str | None) -> Backend:
    """The backend for ``x``: the requested one (checked), or the default for its device."""
    if backend is None:
        return "triton" if x.is_cuda and triton_available() else "torch"
    if backend not in BACKENDS:
        raise KernelBackendError(
            f"zoo.kernels.inverse_conv: unknown backend {backend!r}; use one of {BACKENDS} or None."
        )
    if backend == "triton":
        if not triton_available():
            raise KernelBackendError(
                "zoo.kernels.inverse_conv: backend 'triton' needs the triton package; install it "
                "(pip install triton) or use backend='torch'."
            )
        if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise KernelBackendError(
                "zoo.kernels.inverse_conv: backend 'triton' on CPU tensors needs the Triton "
                "interpreter: set TRITON_INTERPRET=1 before triton is imported, or use "
                "backend='torch'."
            )
    return backend  # type: ignore[return-value]


def _ops(backend: Backend):
    """(solve, solve_transposed, weight_gradient) of a backend."""
    if backend == "triton":
        from zoo.kernels import triton_inverse_conv as tk

        return tk.solve, tk.dy, tk.dw
    return wavefront.solve, wavefront.solve_transposed, wavefront.weight_gradient


class InverseConvFunction(torch.autograd.Function):
    """``z = T(full_kernel(weight))^-1 x`` with the parallel backward of Inverse-Flow."""

    @staticmethod
    def forward(ctx, x, weight, unit_diagonal: bool, backend: Backend):
        solve, _, _ = _ops(backend)
        kernel = wavefront.full_kernel(weight, unit_diagonal)
        z = solve(x.contiguous(), kernel)
        ctx.save_for_backward(z, kernel)
        ctx.unit_diagonal = unit_diagonal
        ctx.backend = backend
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):
        z, kernel = ctx.saved_tensors
        _, solve_transposed, weight_gradient = _ops(ctx.backend)
        grad_x = solve_transposed(grad_z.contiguous(), kernel)  # T^-T dL/dz
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = weight_gradient(z, grad_x, kernel.shape[-1], ctx.unit_diagonal)
        return grad_x, grad_weight, None, None


def inverse_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    unit_diagonal: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """``z = T(K)^-1 x`` for ``x`` (B, C, H, W), ``weight`` (C, C, k, k); differentiable in both."""
    return InverseConvFunction.apply(x, weight, unit_diagonal, resolve_backend(x, backend))


def causal_conv(
    z: torch.Tensor, weight: torch.Tensor, unit_diagonal: bool = True, backend: str | None = None
) -> torch.Tensor:
    """``x = T(K) z`` (the sampling direction): one convolution. Differentiable with the twin;
    the Triton ``conv`` kernel is forward-only (sampling needs no gradient)."""
    kernel = wavefront.full_kernel(weight, unit_diagonal)
    if resolve_backend(z, backend) == "triton" and not torch.is_grad_enabled():
        from zoo.kernels import triton_inverse_conv as tk

        return tk.conv(z.contiguous(), kernel)
    return wavefront.causal_conv(z, kernel)


# --- the float64 dense reference ----------------------------------------------------------------


def dense_matrix(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The (HWC x HWC) matrix of ``T(K)`` in pixel-major order (row/column ``p * C + c``),
    lower-triangular. Built by one batched convolution of the identity: column n = T e_n."""
    channels = kernel.shape[0]
    n = channels * height * width
    eye = torch.eye(n, device=kernel.device, dtype=kernel.dtype)
    # Basis vector n is pixel n // C, channel n % C: reshape as (n, H, W, C), then to NCHW.
    basis = eye.view(n, height, width, channels).permute(0, 3, 1, 2)
    columns = wavefront.causal_conv(basis, kernel)  # (n, C, H, W)
    return columns.permute(0, 2, 3, 1).reshape(n, n).T


def dense_solve(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``z = M^-1 x`` with ``M`` from ``dense_matrix``, by ``solve_triangular``."""
    batch, channels, height, width = x.shape
    rhs = x.permute(0, 2, 3, 1).reshape(batch, -1).T
    z = torch.linalg.solve_triangular(matrix, rhs, upper=False)
    return z.T.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def dense_inverse_conv(x: torch.Tensor, weight: torch.Tensor, unit_diagonal: bool = True):
    """Reference ``z = T(K)^-1 x`` through the explicit matrix (use float64; differentiable)."""
    kernel = wavefront.full_kernel(weight, unit_diagonal)
    return dense_solve(x, dense_matrix(kernel, x.shape[2], x.shape[3]))
