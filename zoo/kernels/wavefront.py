"""PyTorch twin of the inverse-convolution kernels: the anti-diagonal wavefront solver.

Inverse-Flow (Nagar & Varma, arXiv 2410.14634) and emerging convolutions (Hoogeboom et al.,
arXiv 1901.11137) both need the inverse of a *causal* ("masked") k x k convolution.

Kernel convention, shared by every module of ``zoo.kernels``: a full kernel ``K`` has shape
``(C, C, k, k)`` and is indexed by the **offset** of the input pixel, so that::

    x[b, c, h, w] = sum_{kc, i, j} K[c, kc, i, j] * z[b, kc, h - i, w - j]      (1)

with out-of-range pixels zero ("top-left" orientation: a pixel depends on pixels above and to
the left of it). The centre tap ``K[:, :, 0, 0]`` is lower-triangular in channels with a nonzero
diagonal (entries with ``kc > c`` are ignored), so with pixels in raster order and the channels
in order inside each pixel, dx/dz is lower-triangular: ``T(K)`` is invertible with
``log|det| = H W sum_c log|K[c, c, 0, 0]|``.

A layer's learnable ``weight`` has the same shape; ``full_kernel`` turns it into ``K``:
with ``unit_diagonal`` (Inverse-Flow) the centre diagonal is an implicit 1 and only ``kc < c``
is learnable at the centre; without it (emerging conv) ``kc <= c`` is.

Solving ``T(K) z = x`` (forward substitution): pixels on the anti-diagonal ``d = h + w`` depend
only on earlier diagonals, so the solve takes ``H + W - 1`` sequential steps, each parallel over
the pixels of the diagonal, the batch and the channels. Folding the centre tap's inverse
``L^-1`` into the other taps once per call makes every step one gather and one matmul::

    z_p = L^-1 x_p - sum_{o != 0} (L^-1 K_o) z_{p - o}                          (2)

The transposed system ``T^T y = g`` (the backward pass, ``dL/dx = T^-T dL/dz``) runs the same
recurrence on the spatially flipped image with channel-transposed taps (back-substitution over the
diagonals in reverse order). The weight gradient of ``z = T(K)^-1 x`` is
``dL/dK[c, kc, i, j] = -sum_{b, p} y[b, c, p] z[b, kc, p - (i, j)]`` with ``y = T^-T dL/dz``: minus
the ordinary convolution weight gradient (input ``z``, output gradient ``y``), masked to the
learnable taps.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F


# --- the kernel convention ----------------------------------------------------------------------


def learnable_mask(
    channels: int, kernel_size: int, unit_diagonal: bool, device=None, dtype=None
) -> torch.Tensor:
    """1 for the taps of ``weight`` that enter ``K``, 0 for the masked centre-tap entries.

    Centre tap (offset (0, 0)): ``kc < c`` with ``unit_diagonal``, ``kc <= c`` without."""
    mask = torch.ones(channels, channels, kernel_size, kernel_size, device=device, dtype=dtype)
    mask[:, :, 0, 0] = torch.tril(
        torch.ones(channels, channels, device=device, dtype=dtype), -1 if unit_diagonal else 0
    )
    return mask


def full_kernel(weight: torch.Tensor, unit_diagonal: bool) -> torch.Tensor:
    """The kernel ``K`` of (1) from a layer weight: masked, plus the implicit unit diagonal.

    Differentiable (plain tensor ops), so layers can use it in their autograd graphs."""
    channels, _, k, _ = weight.shape
    kernel = weight * learnable_mask(channels, k, unit_diagonal, weight.device, weight.dtype)
    if unit_diagonal:
        centre = torch.zeros_like(kernel)
        centre[:, :, 0, 0] = torch.eye(channels, device=weight.device, dtype=weight.dtype)
        kernel = kernel + centre
    return kernel


def centre_inverse(kernel: torch.Tensor) -> torch.Tensor:
    """``L^-1`` of the lower-triangular centre tap ``L = tril(K[:, :, 0, 0])`` (C x C)."""
    lower = torch.tril(kernel[:, :, 0, 0])
    eye = torch.eye(lower.shape[0], device=kernel.device, dtype=kernel.dtype)
    return torch.linalg.solve_triangular(lower, eye, upper=False)


def log_abs_det(kernel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``log|det T(K)| = H W sum_c log|K[c, c, 0, 0]|`` (a scalar)."""
    return height * width * torch.diagonal(kernel[:, :, 0, 0]).abs().log().sum()


# --- the plain causal convolution (sampling direction of Inverse-Flow) --------------------------


def causal_conv(z: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``x = T(K) z`` of (1) by one ``F.conv2d``: pad top/left by k-1, correlate with the flipped
    kernel (``conv2d`` indexes taps from the window's corner, (1) by the offset)."""
    k = kernel.shape[-1]
    centre = torch.tril(kernel[:, :, 0, 0])  # entries kc > c are not part of the operator
    kernel = torch.cat([centre.unsqueeze(-1), kernel.flatten(2)[:, :, 1:]], dim=2)
    kernel = kernel.view(kernel.shape[0], kernel.shape[1], k, k)
    return F.conv2d(F.pad(z, (k - 1, 0, k - 1, 0)), kernel.flip(2, 3))


def kernel_correlation(z: torch.Tensor, y: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``G[c, kc, i, j] = sum_{b, h, w} y[b, c, h, w] z[b, kc, h - i, w - j]``: the weight gradient
    of (1) for output gradient ``y`` (offset-indexed), by the standard conv weight gradient."""
    k = kernel_size
    padded = F.pad(z, (k - 1, 0, k - 1, 0))
    shape = (y.shape[1], z.shape[1], k, k)
    return torch.nn.grad.conv2d_weight(padded, shape, y).flip(2, 3)


def weight_gradient(
    z: torch.Tensor, y: torch.Tensor, kernel_size: int, unit_diagonal: bool
) -> torch.Tensor:
    """dL/dweight of ``z = T(K)^-1 x``: ``-G`` (``kernel_correlation`` of ``z`` and
    ``y = T^-T dL/dz``), zero on the masked centre-tap entries."""
    grad = kernel_correlation(z, y, kernel_size)
    mask = learnable_mask(grad.shape[0], kernel_size, unit_diagonal, grad.device, grad.dtype)
    return -grad * mask


# --- the wavefront solve ------------------------------------------------------------------------


@dataclass(frozen=True)
class DiagonalPlan:
    """Index tables of the anti-diagonal order of an H x W image, for kernel size k.

    Pixels are renumbered diagonal by diagonal (``order[n]`` = raster index of the n-th), so
    each diagonal is a contiguous slice ``bounds[d]`` of a (B, HW + 1, C) buffer whose last row
    stays zero. ``neighbours[n * (k*k - 1) + o - 1]`` is the buffer row of pixel n's neighbour at
    offset o (raster over (i, j), (0, 0) excluded), or HW (the zero row) when out of range.
    """

    order: torch.Tensor
    raster_of_diagonal: torch.Tensor
    bounds: tuple[tuple[int, int], ...]
    neighbours: torch.Tensor


@lru_cache(maxsize=64)
def diagonal_plan(height: int, width: int, kernel_size: int, device: torch.device) -> DiagonalPlan:
    """The ``DiagonalPlan`` of one image size (cached: it depends on the shape only)."""
    hh, ww = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    diag = (hh + ww).flatten()
    # Stable sort by diagonal; inside a diagonal pixels go by increasing h.
    order = torch.argsort(diag * height + hh.flatten())
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel())
    counts = torch.bincount(diag, minlength=height + width - 1).tolist()
    starts = [0]
    for count in counts:
        starts.append(starts[-1] + count)
    bounds = tuple((starts[d], starts[d + 1]) for d in range(len(counts)))
    offsets = [(i, j) for i in range(kernel_size) for j in range(kernel_size) if (i, j) != (0, 0)]
    h_of, w_of = hh.flatten()[order], ww.flatten()[order]
    columns = []
    for i, j in offsets:
        h2, w2 = h_of - i, w_of - j
        inside = (h2 >= 0) & (w2 >= 0)
        raster = (h2.clamp(min=0) * width + w2.clamp(min=0)).long()
        columns.append(torch.where(inside, position[raster], height * width))
    n = height * width
    neighbours = torch.stack(columns, 1) if columns else torch.zeros(n, 0, dtype=torch.long)
    return DiagonalPlan(
        order=order.to(device),
        raster_of_diagonal=position.to(device),
        bounds=bounds,
        neighbours=neighbours.reshape(-1).contiguous().to(device),
    )


def _substitute(x: torch.Tensor, coef_x: torch.Tensor, coef_nbr: torch.Tensor) -> torch.Tensor:
    """Solve ``z_p = coef_x x_p - sum_{o != 0} coef_nbr[:, :, o] z_{p - o}`` over diagonals.

    ``coef_nbr`` is (C, C, k, k); its centre tap is ignored."""
    batch, channels, height, width = x.shape
    k = coef_nbr.shape[-1]
    taps = k * k - 1
    n = height * width
    plan = diagonal_plan(height, width, k, x.device)
    # Channels last, pixels in diagonal order: one diagonal = one contiguous slice of rows.
    rows = x.flatten(2).transpose(1, 2).index_select(1, plan.order)
    buffer = x.new_empty(batch, n + 1, channels)
    buffer[:, n] = 0
    buffer[:, :n] = rows @ coef_x.T
    if taps:
        # (taps * C_in, C_out), row (o, kc) matching a gathered window viewed as (.., o, kc).
        mixing = coef_nbr.flatten(2)[:, :, 1:].permute(2, 1, 0).reshape(taps * channels, channels)
        for start, stop in plan.bounds[1:]:  # diagonal 0 (pixel (0, 0)) has no neighbours
            window = buffer.index_select(1, plan.neighbours[start * taps : stop * taps])
            buffer[:, start:stop] -= window.view(batch, stop - start, taps * channels) @ mixing
    z = buffer[:, :n].index_select(1, plan.raster_of_diagonal)
    return z.transpose(1, 2).reshape(batch, channels, height, width)


def solve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``z = T(K)^-1 x`` by forward substitution over anti-diagonals, eq. (2)."""
    inverse = centre_inverse(kernel)
    coef_nbr = torch.einsum("cm,mkij->ckij", inverse, kernel)
    return _substitute(x, inverse, coef_nbr)


def solve_transposed(g: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``y = T(K)^-T g`` by back-substitution: ``T^T`` is the anti-causal convolution with
    channel-transposed taps, i.e. the causal one on the flipped image, centre ``L^T``."""
    inverse_t = centre_inverse(kernel).T  # (L^T)^-1
    coef_nbr = torch.einsum("cm,kmij->ckij", inverse_t, kernel)  # L^-T K_o^T
    return _substitute(g.flip(2, 3), inverse_t, coef_nbr).flip(2, 3)
