"""Monotonic rational-quadratic splines with identity tails (the math only, no parameters).

Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", 2019,
https://arxiv.org/abs/1906.04032 (section 3.1 and appendix A).

On [-B, B] the spline passes through K + 1 knots (x_k, y_k), x_0 = y_0 = -B and x_K = y_K = B,
with positive derivatives d_k at the knots. Inside bin k, with xi = (x - x_k) / w_k,
s_k = h_k / w_k (w_k, h_k the bin's width and height):

    y = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]

    dy/dx = s_k^2 [d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2]
            / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]^2

Outside [-B, B] the map is the identity (log-derivative 0): NSF's "linear tails"; with d_0 = d_K = 1 the spline
joins the tails with a continuous derivative. The inverse solves a quadratic for xi in closed
form (appendix A), using the root formula that has no cancellation.

Numerical care, where nflows went wrong:
- every element is evaluated through the spline with its input clamped into [-B, B] and the
  tails are then chosen by ``torch.where``: no boolean indexing, so batches entirely in the tails
  (or entirely inside) work, and the unused branch stays finite, so gradients stay finite;
- bin indices are clamped into [0, K - 1], so points exactly at -B, B or a knot are valid;
- the discriminant is clamped at 0 (it is >= 0 in exact arithmetic; rounding can make it -0.0001
  ulp) and xi is clamped into [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(DERIVATIVE_OFFSET) + MIN_DERIVATIVE == 1: an unnormalised derivative of 0 means slope 1.
DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def knots(unnormalized: torch.Tensor, tail_bound: float, min_size: float) -> torch.Tensor:
    """K + 1 increasing knot positions from -B to B out of K unnormalised bin sizes (last dim).

    Bin sizes are ``min_size + (1 - K min_size) softmax(unnormalized)`` of the interval 2B; the
    end knots are set to exactly -B and B so the spline meets its tails without a gap.
    """
    n_bins = unnormalized.shape[-1]
    if min_size * n_bins >= 1.0:
        raise ValueError(f"min bin size {min_size} is too large for {n_bins} bins")
    sizes = min_size + (1.0 - min_size * n_bins) * torch.softmax(unnormalized, dim=-1)
    cumulative = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    positions = tail_bound * (2.0 * cumulative - 1.0)
    # Pin the ends exactly (cumsum rounding would leave them a few ulp away from +-B).
    positions = torch.cat(
        [
            torch.full_like(positions[..., :1], -tail_bound),
            positions[..., 1:-1],
            torch.full_like(positions[..., :1], tail_bound),
        ],
        dim=-1,
    )
    return positions


def knot_derivatives(unnormalized_inner: torch.Tensor) -> torch.Tensor:
    """K + 1 positive knot derivatives: ``MIN_DERIVATIVE + softplus(u + offset)`` inside, 1 at
    both ends (to match the identity tails). ``u = 0`` gives slope 1."""
    inner = MIN_DERIVATIVE + F.softplus(unnormalized_inner + DERIVATIVE_OFFSET)
    # Built from the leading shape, not sliced from `inner`: with one bin there are no inner
    # knots, and a slice of an empty last dim would give no end slopes either.
    one = inner.new_ones(*inner.shape[:-1], 1)
    return torch.cat([one, inner, one], dim=-1)


def _bin_index(knot_positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index k in [0, K - 1] of the bin [p_k, p_{k+1}] holding each value (values in [-B, B])."""
    inner = knot_positions[..., 1:-1]
    index = (values[..., None] >= inner).sum(dim=-1, keepdim=True)
    return index.clamp_(0, knot_positions.shape[-1] - 2)


def _gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[..., index] element-wise; the table (``(*shape, K + 1)`` or ``(K + 1,)``) broadcasts
    over the leading dims of the index (an expanded view: no copy per sample)."""
    table = table.expand(*index.shape[:-1], table.shape[-1])
    return torch.gather(table, -1, index)[..., 0]


def _bin_parameters(xs, ys, ds, index):
    x_k, x_k1 = _gather(xs, index), _gather(xs, index + 1)
    y_k, y_k1 = _gather(ys, index), _gather(ys, index + 1)
    d_k, d_k1 = _gather(ds, index), _gather(ds, index + 1)
    width, height = x_k1 - x_k, y_k1 - y_k
    return x_k, y_k, width, height, d_k, d_k1


def rq_spline_forward(
    x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, ds: torch.Tensor, tail_bound: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, log dy/dx)`` element-wise.

    ``xs``, ``ys``, ``ds`` (knot positions, values, derivatives; last dim K + 1) broadcast
    against ``x[..., None]``: one spline per element, or one shared by all.
    """
    inside = (x >= -tail_bound) & (x <= tail_bound)
    xc = x.clamp(-tail_bound, tail_bound)
    index = _bin_index(xs, xc)
    x_k, y_k, width, height, d_k, d_k1 = _bin_parameters(xs, ys, ds, index)
    slope = height / width
    xi = ((xc - x_k) / width).clamp(0.0, 1.0)
    xi_1m = xi * (1.0 - xi)
    denominator = slope + (d_k1 + d_k - 2.0 * slope) * xi_1m
    y = y_k + height * (slope * xi.square() + d_k * xi_1m) / denominator
    log_derivative = (
        2.0 * torch.log(slope)
        + torch.log(d_k1 * xi.square() + 2.0 * slope * xi_1m + d_k * (1.0 - xi).square())
        - 2.0 * torch.log(denominator)
    )
    return torch.where(inside, y, x), torch.where(inside, log_derivative, torch.zeros_like(x))


def rq_spline_inverse(
    y: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, ds: torch.Tensor, tail_bound: float
) -> torch.Tensor:
    """x with ``rq_spline_forward(x)[0] == y``, in closed form.

    With dy = y - y_k and c_k = d_{k+1} + d_k - 2 s_k, xi solves ``a xi^2 + b xi + c = 0`` where
    ``a = h_k (s_k - d_k) + dy c_k``, ``b = h_k d_k - dy c_k``, ``c = -s_k dy``; the root in
    [0, 1] is ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` (the denominator is < 0: b > 0 at dy = 0 and
    b^2 - 4ac > 0 elsewhere), which avoids the cancellation of the textbook formula.
    """
    inside = (y >= -tail_bound) & (y <= tail_bound)
    yc = y.clamp(-tail_bound, tail_bound)
    index = _bin_index(ys, yc)
    x_k, y_k, width, height, d_k, d_k1 = _bin_parameters(xs, ys, ds, index)
    slope = height / width
    dy = yc - y_k
    curvature = d_k1 + d_k - 2.0 * slope
    a = height * (slope - d_k) + dy * curvature
    b = height * d_k - dy * curvature
    c = -slope * dy
    discriminant = (b.square() - 4.0 * a * c).clamp(min=0.0)
    xi = (2.0 * c / (-b - torch.sqrt(discriminant))).clamp(0.0, 1.0)
    return torch.where(inside, x_k + xi * width, y)


def raw_size(n_bins: int) -> int:
    """How many unnormalised numbers one spline takes: K widths, K heights, K - 1 inner slopes."""
    return 3 * n_bins - 1


def knot_tables(
    raw: torch.Tensor, n_bins: int, tail_bound: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Knot positions, values and derivatives (each ``(..., K + 1)``) out of ``raw`` of shape
    ``(..., 3K - 1)``, laid out as [K widths | K heights | K - 1 inner derivatives]: the output
    of a conditioner network (NSF's autoregressive and coupling layers)."""
    widths, heights, slopes = raw.split([n_bins, n_bins, n_bins - 1], dim=-1)
    return (
        knots(widths, tail_bound, MIN_BIN_WIDTH),
        knots(heights, tail_bound, MIN_BIN_HEIGHT),
        knot_derivatives(slopes),
    )
