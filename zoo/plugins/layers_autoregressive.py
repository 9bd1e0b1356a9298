"""Built-in plugin: autoregressive and coupling flows on vectors (the torch-mnf seed's flows).

- ``maf``: masked autoregressive flow (Papamakarios et al. 2017, https://arxiv.org/abs/1705.07057):
  density in one MADE pass, the inverse in D sequential passes.
- ``iaf``: inverse autoregressive flow (Kingma et al. 2016, https://arxiv.org/abs/1606.04934):
  MAF with the directions swapped (sampling in one pass, density in D).
- ``nsf_autoregressive`` / ``nsf_coupling``: neural spline flows (Durkan et al. 2019,
  https://arxiv.org/abs/1906.04032), rational-quadratic splines with linear (identity) tails.
- ``affine_half``: RealNVP's coupling with separate scale and shift MLPs (Dinh et al. 2016,
  https://arxiv.org/abs/1605.08803), torch-mnf's ``AffineHalfFlow``.
- ``lu_linear``: W = P L U on vectors (Glow's LU 1x1 convolution, https://arxiv.org/abs/1807.03039;
  torch-mnf's vector ``Glow``).

Every layer takes vectors ``(D,)`` and follows the contract of ``zoo.hookspecs.zoo_layers``:
``forward(x) -> (z, logdet)`` is the data-to-latent direction. The MLPs of the couplings and of
the per-dimension spline conditioner are torch-mnf's (``depth`` hidden layers of width
``hidden``, LeakyReLU(0.2)), so the seed's recipes have its parameter counts.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from zoo.conditioning import with_context
from zoo.errors import ContextError, RecipeError, ShapeError
from zoo.hookspecs import hookimpl
from zoo.plugins import _spline
from zoo.plugins._made import MADE, input_degrees
from zoo.plugins.layers_glow import Conv1x1
from zoo.registry import params_schema_of


def vector_features(name: str, shape: Sequence[int]) -> int:
    """D for a per-sample shape (D,); a ShapeError saying what to do otherwise."""
    shape = tuple(shape)
    if len(shape) != 1:
        raise ShapeError(
            f"{name} acts on vectors (D,); got per-sample shape {shape}. Put {{name: flatten}} "
            "before it (an image (C, H, W) becomes (C*H*W,))."
        )
    return shape[0]


def _check_width(name: str, hidden: int, depth: int) -> None:
    if hidden < 1 or depth < 1:
        raise RecipeError(
            f"{name}: hidden and depth must be >= 1, got hidden={hidden!r}, depth={depth!r}"
        )


def _check_spline(name: str, n_bins: int, tail_bound: float) -> None:
    if not 1 <= n_bins < 1 / _spline.MIN_BIN_WIDTH:
        raise RecipeError(
            f"{name}: n_bins must be in [1, {int(1 / _spline.MIN_BIN_WIDTH) - 1}], got {n_bins!r}; "
            "the seeds use 5 to 8"
        )
    if not tail_bound > 0:
        raise RecipeError(
            f"{name}: tail_bound must be > 0, got {tail_bound!r}; the spline acts on "
            "[-tail_bound, tail_bound] and is the identity outside (the seeds use 3)"
        )


def mlp(inputs: int, outputs: int, hidden: int, depth: int) -> nn.Sequential:
    """torch-mnf's MLP: ``depth`` hidden layers of width ``hidden``, LeakyReLU(0.2) between."""
    sizes = [inputs] + [hidden] * depth + [outputs]
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers[:-1])


def _fixed_point(step, start: torch.Tensor, features: int) -> torch.Tensor:
    """Solve v = step(v) for an autoregressive ``step``: after k iterations the features of
    degree < k are exact, so D iterations give the exact solution (and, unrolled, its exact
    gradient)."""
    v = start
    for _ in range(features):
        v = step(v)
    return v


# --- MAF and IAF -------------------------------------------------------------------------------


class _MaskedAffine(nn.Module):
    """Shared by MAF and IAF: a MADE giving a log-scale s and a shift t per feature."""

    takes_context = True

    def __init__(self, name, shape, hidden, depth, ordering, seed, residual_blocks, identity_init,
                 context_features=0):
        super().__init__()
        self.features = vector_features(name, shape)
        self.out_shape = tuple(shape)
        self.context_features = int(context_features)
        self.made = MADE(self.features, 2, hidden, depth, ordering, seed, residual_blocks,
                         identity_init, self.context_features)

    def scale_shift(self, v: torch.Tensor, context: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.made(v, context)
        return out[:, 0], out[:, 1]


class MAF(_MaskedAffine):
    """Masked autoregressive flow z_i = x_i exp(s_i(x_<i)) + t_i(x_<i) (MAF, arXiv 1705.07057).

    (s, t) come from one MADE pass over x (``hidden`` x ``depth``, ReLU, optional residual
    blocks), so the density is one pass, ``logdet = sum s``; the inverse
    x_i = (z_i - t_i) exp(-s_i) needs D sequential passes. (The paper writes the same map as
    z = (x - mu) exp(-alpha); this is the seeds' form.) ``ordering`` (natural, reversed, or
    random with ``seed``) is the autoregressive order; ``identity_init`` zeroes the MADE's output
    layer so the layer starts as the identity. torch-mnf's MAF is MADE(24, 24, 24).
    """

    examples = [
        {"shape": (2,), "params": {"hidden": 8}},
        {"shape": (4,), "params": {"hidden": 8, "depth": 2, "ordering": "random", "seed": 1}},
        {"shape": (3,), "params": {"hidden": 6, "depth": 1, "residual_blocks": 1,
                                   "identity_init": True}},
    ]

    def __init__(
        self,
        shape: Sequence[int],
        hidden: int = 24,
        depth: int = 3,
        ordering: Literal["natural", "reversed", "random"] = "natural",
        seed: int | None = None,
        residual_blocks: int = 0,
        identity_init: bool = False,
        context_features: int = 0,
    ):
        super().__init__("maf", shape, hidden, depth, ordering, seed, residual_blocks, identity_init,
                         context_features)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.scale_shift(x, context)
        return x * torch.exp(s) + t, s.sum(1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        def step(x):
            s, t = self.scale_shift(x, context)
            return (z - t) * torch.exp(-s)

        return _fixed_point(step, torch.zeros_like(z), self.features)


class IAF(_MaskedAffine):
    """Inverse autoregressive flow x = z exp(s(z)) + t(z), MADE on z (IAF, arXiv 1606.04934).

    MAF with the directions swapped: sampling (``inverse``) is one MADE pass, the density
    direction z_i = (x_i - t_i(z_<i)) exp(-s_i(z_<i)) needs D sequential passes;
    ``logdet = -sum s(z)``. Parameters as ``maf``.
    """

    examples = MAF.examples[:2]

    def __init__(
        self,
        shape: Sequence[int],
        hidden: int = 24,
        depth: int = 3,
        ordering: Literal["natural", "reversed", "random"] = "natural",
        seed: int | None = None,
        residual_blocks: int = 0,
        identity_init: bool = False,
        context_features: int = 0,
    ):
        super().__init__("iaf", shape, hidden, depth, ordering, seed, residual_blocks, identity_init,
                         context_features)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        def step(z):
            s, t = self.scale_shift(z, context)
            return (x - t) * torch.exp(-s)

        z = _fixed_point(step, torch.zeros_like(x), self.features)
        s, _ = self.scale_shift(z, context)
        return z, -s.sum(1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        s, t = self.scale_shift(z, context)
        return z * torch.exp(s) + t


# --- neural spline flows -----------------------------------------------------------------------


class PerDimensionConditioner(nn.Module):
    """torch-mnf's NSF_AR conditioner: feature k of the order gets MLP_k(x of features 0..k-1);
    the first gets a learned constant (init U(-1/2, 1/2)). Output (batch, D, P)."""

    def __init__(self, features: int, outputs: int, hidden: int, depth: int, degrees: torch.Tensor):
        super().__init__()
        self.register_buffer("order", torch.argsort(degrees))  # order[k]: the feature of degree k
        self.first = nn.Parameter(torch.empty(outputs).uniform_(-0.5, 0.5))
        self.nets = nn.ModuleList(mlp(k, outputs, hidden, depth) for k in range(1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ordered = x.index_select(1, self.order)
        outs = [self.first.expand(x.shape[0], -1)]
        outs += [net(ordered[:, :k]) for k, net in enumerate(self.nets, start=1)]
        by_degree = torch.stack(outs, dim=1)
        return by_degree.index_select(1, torch.argsort(self.order))


class NSFAutoregressive(nn.Module):
    """Autoregressive RQ spline z_i = RQS(x_i; theta_i(x_<i)), K bins on [-B, B] (NSF, arXiv 1906.04032).

    Each feature's spline has K widths, K heights and K - 1 inner knot slopes (3K - 1 numbers)
    from the conditioner; outside [-B, B] it is the identity (linear tails, slope 1 at +-B).
    ``logdet = sum log dz_i/dx_i``; the inverse takes D sequential passes.
    ``conditioner: made`` is one MADE (``hidden`` x ``depth``, ReLU, ``residual_blocks``: NSF's
    own; ``identity_init`` zeroes its output layer); ``per_dimension`` is torch-mnf's NSF_AR (one
    LeakyReLU MLP per feature). Conditional with the ``made`` conditioner only.
    """

    takes_context = True

    examples = [
        {"shape": (2,), "params": {"n_bins": 4, "hidden": 8}},
        {"shape": (3,), "params": {"n_bins": 3, "hidden": 6, "tail_bound": 1.5,
                                   "ordering": "random", "seed": 2, "residual_blocks": 1}},
        {"shape": (3,), "params": {"n_bins": 5, "hidden": 6, "conditioner": "per_dimension"},
         "context": False},
    ]

    def __init__(
        self,
        shape: Sequence[int],
        n_bins: int = 5,
        tail_bound: float = 3.0,
        hidden: int = 8,
        depth: int = 3,
        conditioner: Literal["made", "per_dimension"] = "made",
        ordering: Literal["natural", "reversed", "random"] = "natural",
        seed: int | None = None,
        residual_blocks: int = 0,
        identity_init: bool = False,
        context_features: int = 0,
    ):
        super().__init__()
        self.features = vector_features("nsf_autoregressive", shape)
        self.context_features = int(context_features)
        self.out_shape = tuple(shape)
        _check_spline("nsf_autoregressive", n_bins, tail_bound)
        _check_width("nsf_autoregressive", hidden, depth)
        self.n_bins, self.tail_bound = int(n_bins), float(tail_bound)
        size = _spline.raw_size(self.n_bins)
        self.made: MADE | None = None
        self.per_dimension: PerDimensionConditioner | None = None
        if conditioner == "made":
            self.made = MADE(self.features, size, hidden, depth, ordering, seed, residual_blocks,
                             identity_init, self.context_features)
        elif conditioner == "per_dimension":
            if self.context_features:
                raise ContextError("nsf_autoregressive: conditioner 'per_dimension' (torch-mnf's "
                                   "NSF_AR) takes no context; use conditioner: made in a "
                                   "conditional recipe, or context: false on this layer")
            degrees = input_degrees(self.features, ordering, seed)
            self.per_dimension = PerDimensionConditioner(self.features, size, hidden, depth, degrees)
        else:
            raise RecipeError(
                f"nsf_autoregressive: conditioner must be 'made' or 'per_dimension', got {conditioner!r}"
            )

    def spline_numbers(self, v: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioner's (batch, D, 3K - 1) unnormalised spline numbers for input v."""
        if self.made is not None:
            return self.made(v, context).transpose(1, 2)
        return self.per_dimension(v)

    def _tables(self, v: torch.Tensor, context: torch.Tensor | None = None):
        return _spline.knot_tables(self.spline_numbers(v, context), self.n_bins, self.tail_bound)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_derivative = _spline.rq_spline_forward(x, *self._tables(x, context), self.tail_bound)
        return z, log_derivative.sum(1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        def step(x):
            return _spline.rq_spline_inverse(z, *self._tables(x, context), self.tail_bound)

        return _fixed_point(step, torch.zeros_like(z), self.features)


class NSFCoupling(nn.Module):
    """Coupling RQ spline: z_b = RQS(x_b; f1(x_a)), then z_a = RQS(x_a; f2(z_b)) (NSF, arXiv 1906.04032).

    x_a is the first D // 2 features, x_b the rest; f1, f2 are MLPs (``hidden`` x ``depth``,
    LeakyReLU(0.2)) giving 3K - 1 spline numbers per feature; K bins on [-B, B], identity tails.
    ``both_halves`` (torch-mnf's NSF_CL, the default) transforms both halves, each conditioned on
    the other; ``false`` transforms x_b only. ``logdet = sum log dz/dx``. Conditional: both
    networks also see the context (appended to their input).
    """

    takes_context = True

    examples = [
        {"shape": (2,), "params": {"n_bins": 4, "hidden": 8}},
        {"shape": (5,), "params": {"n_bins": 3, "hidden": 6, "tail_bound": 1.5}},
        {"shape": (4,), "params": {"n_bins": 5, "hidden": 6, "both_halves": False}},
    ]

    def __init__(
        self,
        shape: Sequence[int],
        n_bins: int = 5,
        tail_bound: float = 3.0,
        hidden: int = 8,
        depth: int = 3,
        both_halves: bool = True,
        context_features: int = 0,
    ):
        super().__init__()
        features = vector_features("nsf_coupling", shape)
        if features < 2:
            raise ShapeError(
                f"nsf_coupling splits the features in two, so it needs D >= 2; got shape {tuple(shape)}"
            )
        _check_spline("nsf_coupling", n_bins, tail_bound)
        _check_width("nsf_coupling", hidden, depth)
        self.out_shape = tuple(shape)
        self.n_bins, self.tail_bound = int(n_bins), float(tail_bound)
        self.first = features // 2
        self.second = features - self.first
        size = _spline.raw_size(self.n_bins)
        self.context_features = k = int(context_features)
        self.f1 = mlp(self.first + k, size * self.second, hidden, depth)
        self.f2 = mlp(self.second + k, size * self.first, hidden, depth) if both_halves else None

    def _spline(self, net, condition, v, inverse: bool, context=None):
        raw = net(with_context(condition, context)).reshape(v.shape[0], v.shape[1], -1)
        tables = _spline.knot_tables(raw, self.n_bins, self.tail_bound)
        if inverse:
            return _spline.rq_spline_inverse(v, *tables, self.tail_bound)
        out, log_derivative = _spline.rq_spline_forward(v, *tables, self.tail_bound)
        return out, log_derivative.sum(1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, : self.first], x[:, self.first :]
        b, logdet = self._spline(self.f1, a, b, False, context)
        if self.f2 is not None:
            a, logdet_a = self._spline(self.f2, b, a, False, context)
            logdet = logdet + logdet_a
        return torch.cat([a, b], dim=1), logdet

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        a, b = z[:, : self.first], z[:, self.first :]
        if self.f2 is not None:
            a = self._spline(self.f2, b, a, True, context)
        b = self._spline(self.f1, a, b, True, context)
        return torch.cat([a, b], dim=1)


# --- affine coupling with separate nets, and the LU linear layer -------------------------------


class AffineHalf(nn.Module):
    """RealNVP coupling z_b = x_b exp(s(x_a)) + t(x_a), separate s and t MLPs (arXiv 1605.08803).

    torch-mnf's AffineHalfFlow: x_a is the first D // 2 features (the last D - D // 2 with
    ``parity``), s and t MLPs of ``depth`` hidden layers of width ``hidden``, LeakyReLU(0.2);
    ``logdet = sum s``. ``scale: false`` gives NICE's additive coupling (arXiv 1410.8516).
    """

    examples = [
        {"shape": (2,), "params": {"hidden": 8}},
        {"shape": (5,), "params": {"hidden": 6, "parity": True}},
        {"shape": (4,), "params": {"hidden": 6, "depth": 1, "scale": False}},
    ]

    def __init__(
        self, shape: Sequence[int], hidden: int = 24, depth: int = 3, parity: bool = False,
        scale: bool = True,
    ):
        super().__init__()
        features = vector_features("affine_half", shape)
        if features < 2:
            raise ShapeError(
                f"affine_half splits the features in two, so it needs D >= 2; got shape {tuple(shape)}"
            )
        _check_width("affine_half", hidden, depth)
        self.out_shape = tuple(shape)
        self.parity = bool(parity)
        self.first = features // 2
        kept, changed = self.first, features - self.first
        if self.parity:
            kept, changed = changed, kept
        self.s_net = mlp(kept, changed, hidden, depth) if scale else None
        self.t_net = mlp(kept, changed, hidden, depth)

    def _halves(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = v[:, : self.first], v[:, self.first :]
        return (b, a) if self.parity else (a, b)

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([changed, kept] if self.parity else [kept, changed], dim=1)

    def _s_t(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t_net(kept)
        s = self.s_net(kept) if self.s_net is not None else torch.zeros_like(t)
        return s, t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, changed = self._halves(x)
        s, t = self._s_t(kept)
        return self._join(kept, changed * torch.exp(s) + t), s.sum(1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        kept, changed = self._halves(z)
        s, t = self._s_t(kept)
        return self._join(kept, (changed - t) * torch.exp(-s))


class LULinear(Conv1x1):
    """Invertible linear map z = W x, W = P L (U + diag(sign exp(log_s))) (Glow, arXiv 1807.03039).

    The vector analogue of ``conv1x1`` with ``lu: true`` (torch-mnf's vector ``Glow``): W starts as
    a random orthogonal matrix, P and the signs are fixed buffers, L unit lower and U strictly
    upper are learned; ``logdet = sum log_s``. The inverse is two triangular solves.
    """

    examples = [{"shape": (2,), "params": {}}, {"shape": (5,), "params": {}}]

    def __init__(self, shape: Sequence[int]):
        vector_features("lu_linear", shape)
        super().__init__(shape, lu=True)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        lower = self.lower * self.lower_mask + self.identity
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        columns = self.permutation.T @ z.T  # W x = z  <=>  L U x = P^T z
        columns = torch.linalg.solve_triangular(lower, columns, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, columns, upper=True).T


def _with_bounds(factory, **bounds):
    """A parameter schema derived from the signature, with the bounds the recipe validator checks."""
    schema = params_schema_of(factory, "layers")
    for name, limits in bounds.items():
        schema["properties"][name].update(limits)
    factory.params_schema = schema
    return factory


_NET = {"hidden": {"minimum": 1}, "depth": {"minimum": 1}}
_SPLINE = {"n_bins": {"minimum": 1, "maximum": 999}, "tail_bound": {"exclusiveMinimum": 0}}
for _factory in (MAF, IAF):
    _with_bounds(_factory, residual_blocks={"minimum": 0}, **_NET)
_with_bounds(NSFAutoregressive, residual_blocks={"minimum": 0}, **_NET, **_SPLINE)
_with_bounds(NSFCoupling, **_NET, **_SPLINE)
_with_bounds(AffineHalf, **_NET)


@hookimpl
def zoo_layers():
    return {
        "maf": MAF,
        "iaf": IAF,
        "nsf_autoregressive": NSFAutoregressive,
        "nsf_coupling": NSFCoupling,
        "affine_half": AffineHalf,
        "lu_linear": LULinear,
    }
