"""Built-in plugin: block neural autoregressive flow (``bnaf``).

De Cao, Titov, Aziz, "Block Neural Autoregressive Flow", UAI 2019, https://arxiv.org/abs/1904.04676;
as in the kamenbliznashki/normalizing_flows seed (``bnaf.py``).

The flow is one monotone network x -> z: masked linear layers whose weights are block
lower-triangular (D x D blocks; block (i, j) maps the units of feature j to those of feature i),
with tanh between them. The diagonal blocks are positive (``exp`` of the free weight) and the
strictly lower blocks free, so z_i depends only on x_1..x_i and increases with x_i: the Jacobian
is lower triangular with a positive diagonal, and

    log|det dz/dx| = sum_i log (dz_i/dx_i),

where dz_i/dx_i is the product of the diagonal blocks of every layer's Jacobian (a 1 x a, a x a,
..., a x 1 chain, a = hidden / D units per feature). Products are carried in log space: a
linear layer's diagonal block contributes log w (weight normalised: w = g v / |v| per row, so
log w = log g + W - 1/2 log |v|^2 on the diagonal blocks), tanh contributes
log(1 - tanh^2 h) = 2 (log 2 - h - softplus(-2 h)), and a matrix product of two such blocks is a
log-sum-exp.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import RecipeError, ShapeError
from zoo.hookspecs import hookimpl
from zoo.plugins.layers_autoregressive import vector_features

LOG_2 = math.log(2.0)
EXPANSIONS = 64  # bracket doublings in the bisection: |x| up to 2**64


class BlockMaskedLinear(nn.Module):
    """h' = W h + b with W block lower-triangular (D x D blocks of ``out_per`` x ``in_per``),
    positive diagonal blocks and weight normalisation per row (De Cao et al. 2019, eq. 9-10)."""

    def __init__(self, features: int, in_per: int, out_per: int):
        super().__init__()
        self.features, self.in_per, self.out_per = features, in_per, out_per
        rows, cols = features * out_per, features * in_per
        row_block = torch.arange(rows) // out_per
        col_block = torch.arange(cols) // in_per
        self.register_buffer("diagonal", (row_block[:, None] == col_block[None, :]).float())
        self.register_buffer("below", (row_block[:, None] > col_block[None, :]).float())
        weight = torch.zeros(rows, cols)  # the blocks above the diagonal stay 0 (masked out)
        bias = torch.empty(rows)
        for i in range(features):  # kaiming-uniform on the allowed blocks of each block row
            fan_in = (i + 1) * in_per
            bound = 1.0 / math.sqrt(fan_in)
            rows_i = slice(i * out_per, (i + 1) * out_per)
            nn.init.uniform_(weight[rows_i, :fan_in], -bound, bound)
            nn.init.uniform_(bias[rows_i], -bound, bound)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.log_gain = nn.Parameter(torch.rand(rows, 1).clamp_min(1e-3).log())

    def weight_and_log_diagonal(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense weight and the log of its diagonal blocks, ``(D, out_per, in_per)``."""
        v = torch.exp(self.weight) * self.diagonal + self.weight * self.below
        log_norm_sq = torch.log(v.square().sum(1, keepdim=True))
        w = torch.exp(self.log_gain - 0.5 * log_norm_sq) * v
        log_w = self.log_gain + self.weight - 0.5 * log_norm_sq
        d, o, a = self.features, self.out_per, self.in_per
        blocks = log_w.reshape(d, o, d, a)
        index = torch.arange(d, device=log_w.device)
        return w, blocks[index, :, index, :]

    def forward(self, h: torch.Tensor, log_jacobian: torch.Tensor):
        """``(W h + b, log of the new diagonal blocks)``; ``log_jacobian`` is ``(B, D, in_per)``
        (the diagonal blocks d h_i / d x_i so far) and the result ``(B, D, out_per)``."""
        w, log_diagonal = self.weight_and_log_diagonal()
        out = F.linear(h, w, self.bias)
        composed = torch.logsumexp(log_diagonal[None] + log_jacobian[:, :, None, :], dim=-1)
        return out, composed


def log_tanh_derivative(h: torch.Tensor) -> torch.Tensor:
    """log(1 - tanh(h)^2), stable for large |h|."""
    return 2.0 * (LOG_2 - h - F.softplus(-2.0 * h))


class BNAF(nn.Module):
    """Block neural autoregressive flow: masked block-triangular MLP with tanh (arXiv 1904.04676).

    z = W_L tanh(... tanh(W_1 x + b_1) ...) + b_L with ``n_hidden`` hidden-to-hidden layers of
    width ``hidden`` (a multiple of D; default 50 D), W_l block lower-triangular with positive
    weight-normalised diagonal blocks; logdet = sum_i log dz_i/dx_i from the log-sum-exp product
    of the diagonal blocks. ``residual: gated`` gives z = s f(x) + (1 - s) x, s = sigmoid(a)
    learned. The inverse solves each z_i by bisection in x_i (monotone), to float precision.
    """

    examples = [
        {"shape": (2,), "params": {"hidden": 4, "n_hidden": 1}},
        {"shape": (3,), "params": {"hidden": 6, "n_hidden": 0, "residual": "gated"}},
        {"shape": (2,), "params": {"hidden": 6, "n_hidden": 2}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "hidden": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                       "default": None},
            "n_hidden": {"type": "integer", "minimum": 0, "default": 3},
            "residual": {"enum": ["none", "gated"], "default": "none"},
        },
        "additionalProperties": False,
    }

    def __init__(
        self,
        shape: Sequence[int],
        hidden: int | None = None,
        n_hidden: int = 3,
        residual: Literal["none", "gated"] = "none",
    ):
        super().__init__()
        d = vector_features("bnaf", shape)
        hidden = 50 * d if hidden is None else int(hidden)
        if hidden < 1 or hidden % d:
            raise ShapeError(
                f"bnaf: hidden ({hidden}) must be a positive multiple of the dimension D = {d} "
                f"(each feature gets hidden / D units); e.g. hidden: {max(1, round(hidden / d)) * d}"
            )
        if n_hidden < 0:
            raise RecipeError(f"bnaf: n_hidden must be >= 0, got {n_hidden!r}")
        if residual not in ("none", "gated"):
            raise RecipeError(f"bnaf: residual must be 'none' or 'gated', got {residual!r}")
        self.features = d
        self.out_shape = (d,)
        per = hidden // d
        sizes = [1] + [per] * (n_hidden + 1) + [1]
        self.linears = nn.ModuleList(
            BlockMaskedLinear(d, a, b) for a, b in zip(sizes, sizes[1:])
        )
        self.gate = nn.Parameter(torch.zeros(())) if residual == "gated" else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        log_jacobian = x.new_zeros(x.shape[0], self.features, 1)
        for index, linear in enumerate(self.linears):
            h, log_jacobian = linear(h, log_jacobian)
            if index + 1 < len(self.linears):
                log_jacobian = log_jacobian + log_tanh_derivative(h).reshape(log_jacobian.shape)
                h = torch.tanh(h)
        log_diagonal = log_jacobian[:, :, 0]  # log dz_i/dx_i of the network
        if self.gate is None:
            return h, log_diagonal.sum(1)
        # z = s f + (1 - s) x: dz_i/dx_i = s f_ii + (1 - s), in log space
        log_s, log_1ms = F.logsigmoid(self.gate), F.logsigmoid(-self.gate)
        z = torch.exp(log_s) * h + torch.exp(log_1ms) * x
        return z, torch.logaddexp(log_s + log_diagonal, log_1ms).sum(1)

    def _values(self, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """``forward(x)[0]`` from the layers' dense weights, without the log-Jacobian (the
        bisection needs only values; the log-sum-exp products cost ~20x the values)."""
        h = x
        for index, (linear, w) in enumerate(zip(self.linears, weights)):
            h = F.linear(h, w, linear.bias)
            if index + 1 < len(self.linears):
                h = torch.tanh(h)
        if self.gate is None:
            return h
        s = torch.sigmoid(self.gate)
        return s * h + (1 - s) * x

    @torch.no_grad()
    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x with forward(x) == z, feature by feature (z_i depends on x_1..x_i and increases
        with x_i): bracket x_i by doubling, then bisect to the dtype's precision.

        Without the residual gate the network is bounded (tanh saturates), so a z_i outside its
        range has no preimage; the bisection then returns the end of the widest bracket."""
        x = torch.zeros_like(z)
        eps = torch.finfo(z.dtype).eps
        weights = [linear.weight_and_log_diagonal()[0] for linear in self.linears]

        def output(i: int, value: torch.Tensor) -> torch.Tensor:
            trial = x.clone()
            trial[:, i] = value
            return self._values(trial, weights)[:, i]

        for i in range(self.features):
            target = z[:, i]
            lo, hi = -torch.ones_like(target), torch.ones_like(target)
            for _ in range(EXPANSIONS):
                low_ok, high_ok = output(i, lo) <= target, output(i, hi) >= target
                if bool(low_ok.all() and high_ok.all()):
                    break
                lo = torch.where(low_ok, lo, 2 * lo)
                hi = torch.where(high_ok, hi, 2 * hi)
            for _ in range(64 + 60):  # halves a 2**65 bracket down to the last bits
                mid = 0.5 * (lo + hi)
                below = output(i, mid) < target
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
                if bool(((hi - lo) <= 2 * eps * (1 + mid.abs())).all()):
                    break
            x[:, i] = 0.5 * (lo + hi)
        return x


@hookimpl
def zoo_layers():
    return {"bnaf": BNAF}
