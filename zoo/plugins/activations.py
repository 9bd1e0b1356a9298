"""Built-in plugin: element-wise invertible activations, usable as flow layers on any shape.

The activations of Self Normalizing Flows (Keller et al. 2021, https://arxiv.org/abs/2011.07248,
``snf/layers/activations.py``): ``smooth_leaky_relu``, ``leaky_relu``, ``learnable_leaky_relu``,
``smooth_tanh``, ``spline_activation`` (rational-quadratic spline, Durkan et al. 2019,
https://arxiv.org/abs/1906.04032), ``identity``; plus ``selu`` (Klambauer et al. 2017,
https://arxiv.org/abs/1706.02515).

An element-wise map y_i = f(x_i) has a diagonal Jacobian, so every layer here returns
``logdet = sum_i log f'(x_i)`` summed over all elements of a sample (shape ``(batch,)``).
Activations without a closed-form inverse are inverted by a safeguarded Newton iteration
(``newton_inverse``) that converges to the working precision.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from zoo.errors import RecipeError, ShapeError, ZooError
from zoo.hookspecs import hookimpl
from zoo.plugins import _spline


class ActivationRangeError(ZooError):
    """An activation's inverse got a value outside the activation's range."""


def _sum_per_sample(values: torch.Tensor) -> torch.Tensor:
    """(batch, ...) -> (batch,), summing every element of a sample."""
    return values.reshape(values.shape[0], -1).sum(dim=1)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) to full precision: max(x, 0) + log1p(e^-|x|).

    ``F.softplus`` returns x itself above its threshold (20), an error of ~2e-9 that would keep
    the Newton inverses from reaching float64 precision.
    """
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


# --- the Newton inverse ------------------------------------------------------------------------

MAX_NEWTON_ITERATIONS = 100


def newton_inverse(
    f: Callable[[torch.Tensor], torch.Tensor],
    f_prime: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    start: torch.Tensor,
    max_iterations: int = MAX_NEWTON_ITERATIONS,
) -> torch.Tensor:
    """Solve f(x) = y element-wise for an increasing f, given a bracket lower <= x <= upper.

    Newton steps x <- x - (f(x) - y) / f'(x), vectorised; the bracket shrinks to the side of the
    root each iterate proves, and a step that would leave it is replaced by bisection, so the
    iteration converges from any start (plain Newton can cycle on S-shaped maps like tanh).
    It stops once every step is within a few ulp of x, or after ``max_iterations`` (bisection
    alone halves the bracket each time, so 100 covers any float64 bracket).

    The loop runs without autograd; one last Newton step is taken with it, which gives the
    implicit-function gradient dx/dy = 1 / f'(x) without back-propagating through the loop.
    """
    eps = torch.finfo(y.dtype).eps
    with torch.no_grad():
        lower, upper = lower.clone(), upper.clone()
        x = start.clamp(lower, upper)
        for _ in range(max_iterations):
            residual = f(x) - y
            # f is increasing: a positive residual means the root is to the left of x.
            upper = torch.where(residual > 0, x, upper)
            lower = torch.where(residual < 0, x, lower)
            step = residual / f_prime(x)
            tolerance = 4 * eps * (1 + x.abs())
            converged = (step.abs() <= tolerance) | (upper - lower <= tolerance) | (residual == 0)
            candidate = x - step
            outside = ((candidate <= lower) | (candidate >= upper)) & ~converged
            candidate = torch.where(outside, 0.5 * (lower + upper), candidate)
            x = torch.where(residual == 0, x, candidate)
            if bool(converged.all()):
                break
    x = x.detach()
    return x - (f(x) - y) / f_prime(x)


# --- smooth activations inverted by Newton --------------------------------------------------------


class SmoothLeakyReLU(nn.Module):
    """Smooth leaky ReLU y = alpha x + (1 - alpha) softplus(x) (SNF, arXiv 2011.07248).

    ``logdet = sum log(alpha + (1 - alpha) sigmoid(x))``; the slope goes from alpha (x -> -inf)
    to 1 (x -> +inf). The inverse is Newton's method inside the bracket
    g^-1(y - (1 - alpha) log 2) <= x <= g^-1(y), g(x) = max(x, alpha x), which holds because
    max(x, 0) <= softplus(x) <= max(x, 0) + log 2. Starting at the upper end of the bracket,
    Newton on this convex increasing map descends monotonically to the root.
    """

    examples = [
        {"shape": (4,), "params": {}},
        {"shape": (2, 3, 3), "params": {"alpha": 0.1}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.3},
        },
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], alpha: float = 0.3):
        super().__init__()
        if not 0 < alpha <= 1:
            raise RecipeError(
                f"smooth_leaky_relu: alpha must be in (0, 1], got {alpha!r}; it is the slope for "
                "x -> -inf (the seed uses 0.3)"
            )
        self.out_shape = tuple(shape)
        self.alpha = float(alpha)

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x + (1 - self.alpha) * _softplus(x)

    def _f_prime(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha + (1 - self.alpha) * torch.sigmoid(x)

    def _g_inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of g(x) = max(x, alpha x)."""
        return torch.where(y >= 0, y, y / self.alpha)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._f(x), _sum_per_sample(torch.log(self._f_prime(x)))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        upper = self._g_inverse(y)
        lower = self._g_inverse(y - (1 - self.alpha) * math.log(2.0))
        return newton_inverse(self._f, self._f_prime, y, lower, upper, start=upper)


class SmoothTanh(nn.Module):
    """Smooth tanh y = tanh(alpha x) + beta x (SNF, arXiv 2011.07248).

    ``logdet = sum log(beta + alpha / cosh^2(alpha x))``. Invertible when beta > 0 and
    alpha + beta > 0 (the slope lies between beta and alpha + beta). The inverse is a
    safeguarded Newton iteration inside (y - 1) / beta <= x <= (y + 1) / beta (|tanh| <= 1),
    started at y / (alpha + beta), the inverse of the slope at 0.
    """

    examples = [
        {"shape": (5,), "params": {}},
        {"shape": (2, 2, 3), "params": {"alpha": 2.0, "beta": 0.5}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "alpha": {"type": "number", "default": 1.0},
            "beta": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
        },
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], alpha: float = 1.0, beta: float = 0.1):
        super().__init__()
        if not (beta > 0 and alpha + beta > 0):
            raise RecipeError(
                f"smooth_tanh: needs beta > 0 and alpha + beta > 0 to be invertible, got "
                f"alpha={alpha!r}, beta={beta!r}; the seed uses alpha 1.0, beta 0.1"
            )
        self.out_shape = tuple(shape)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x) + self.beta * x

    def _f_prime(self, x: torch.Tensor) -> torch.Tensor:
        # 1 - tanh^2 instead of 1 / cosh^2: cosh overflows for |alpha x| > ~710.
        return self.beta + self.alpha * (1 - torch.tanh(self.alpha * x).square())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._f(x), _sum_per_sample(torch.log(self._f_prime(x)))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        lower, upper = (y - 1) / self.beta, (y + 1) / self.beta
        start = y / (self.alpha + self.beta)
        return newton_inverse(self._f, self._f_prime, y, lower, upper, start=start)


# --- piecewise activations with closed-form inverses ----------------------------------------------


class LeakyReLU(nn.Module):
    """Leaky ReLU y = x (x >= 0), s x (x < 0); ``logdet = (number of x < 0) log s``."""

    examples = [
        {"shape": (4,), "params": {}},
        {"shape": (2, 3, 3), "params": {"negative_slope": 0.5}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "negative_slope": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
        },
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], negative_slope: float = 0.1):
        super().__init__()
        if not negative_slope > 0:
            raise RecipeError(
                f"leaky_relu: negative_slope must be > 0 to be invertible, got "
                f"{negative_slope!r}; the seed uses 0.1"
            )
        self.out_shape = tuple(shape)
        self.negative_slope = float(negative_slope)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        negative = x < 0
        y = torch.where(negative, self.negative_slope * x, x)
        logdet = _sum_per_sample(negative.to(x.dtype)) * math.log(self.negative_slope)
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(y < 0, y / self.negative_slope, y)


class LearnableLeakyReLU(nn.Module):
    """Leaky ReLU with a learned slope s = sigmoid(a) + 1/2 in (1/2, 3/2), a starting at 0 (s = 1).

    One scalar ``a`` for the whole layer, as in the seed (``LearnableLeakyRelu``,
    ``alpha_logit = zeros([1])``), so the layer starts as the identity.
    ``logdet = (number of x < 0) log s``.
    """

    examples = [
        {"shape": (4,), "params": {}},
        {"shape": (2, 3, 3), "params": {}},
    ]

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.out_shape = tuple(shape)
        self.slope_logit = nn.Parameter(torch.zeros(()))

    def slope(self) -> torch.Tensor:
        return torch.sigmoid(self.slope_logit) + 0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slope = self.slope()
        negative = x < 0
        y = torch.where(negative, slope * x, x)
        logdet = _sum_per_sample(negative.to(x.dtype)) * torch.log(slope)
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(y < 0, y / self.slope(), y)


class SELU(nn.Module):
    """SELU y = lambda x (x > 0), lambda a (e^x - 1) (x <= 0) (Klambauer et al., arXiv 1706.02515).

    ``logdet = sum log lambda`` over x >= 0 plus ``sum (log(lambda a) + x)`` over x < 0. At
    x = 0 SELU has no derivative (left slope lambda a = 1.7581, right slope lambda = 1.0507);
    the layer takes the right-hand one, log lambda, there and its forward picks the x >= 0 branch,
    so autograd through the layer agrees with its logdet on every torch version (torch's own
    ``selu`` has answered either slope at 0, depending on the version). Its range is (-lambda a, inf) = (-1.7581, inf), so the inverse, ``x = y / lambda`` (y > 0) and
    ``log1p(y / (lambda a))`` (y <= 0), is defined only there: below it the inverse raises, and
    at exactly -lambda a (what x < -37 rounds to in float64) it returns -inf. Put selu where the
    layers after it cannot produce values <= -1.7581 on the way back (not last before a Gaussian
    base).
    """

    examples = [
        {"shape": (4,), "params": {}},
        {"shape": (2, 3, 3), "params": {}},
    ]
    scale = 1.0507009873554804934193349852946  # lambda
    alpha = 1.6732632423543772848170429916717  # a

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.out_shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x = 0 takes the linear branch (the right-hand slope), so the gradient there never
        # depends on how a torch version differentiates clamp at its bound.
        linear = x >= 0
        # Clamp the unused branch: expm1 of a large x is inf, and where() would turn its zero
        # gradient into NaN.
        negative_branch = self.scale * self.alpha * torch.expm1(x.clamp(max=0))
        y = torch.where(linear, self.scale * x, negative_branch)
        log_slope = torch.where(
            linear,
            torch.full_like(x, math.log(self.scale)),
            math.log(self.scale * self.alpha) + x,
        )
        return y, _sum_per_sample(log_slope)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        floor = -self.scale * self.alpha
        if bool((y < floor).any()):
            raise ActivationRangeError(
                f"selu: inverse got {y.min().item():.6g}, but SELU's outputs are > {floor:.6g}. "
                "The layers after selu produced a value it cannot have made; put selu earlier in "
                "the stack, or use smooth_leaky_relu, whose range is all of R."
            )
        # Clamp the unused branch so log1p never sees <= -1 (torch.where evaluates both).
        negative_branch = torch.log1p(y.clamp(max=0) / (self.scale * self.alpha))
        return torch.where(y > 0, y / self.scale, negative_branch)


class Identity(nn.Module):
    """The identity y = x, logdet 0 (a placeholder activation, as in the seed)."""

    examples = [
        {"shape": (3,), "params": {}},
        {"shape": (1, 2, 2), "params": {}},
    ]

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.out_shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y


# --- spline --------------------------------------------------------------------------------------


class SplineActivation(nn.Module):
    """Element-wise monotonic rational-quadratic spline, identity outside [-B, B] (NSF, 1906.04032).

    ``n_bins`` bins on [-tail_bound, tail_bound] with learned widths, heights and inner knot
    derivatives (the formulas are in ``zoo.plugins._spline``); ``logdet = sum log dy/dx``.
    With ``per_element`` (the default, the seed's ``individual_weights=True`` used by its CNN
    experiments) each input element has its own spline; otherwise one spline is shared.

    Initialisation: every unnormalised parameter is ``randn * 0.01`` as in the seed, and the knot
    derivatives are offset so that an unnormalised 0 means slope 1. The end derivatives are fixed
    at 1 (the identity tails join smoothly); unlike the seed, whose inner derivatives start at
    softplus(0) = 0.69, the inner ones start at ~1 too, so the layer starts near the identity.
    """

    examples = [
        {"shape": (4,), "params": {"n_bins": 5, "tail_bound": 2.0}},
        {"shape": (2, 3, 3), "params": {"n_bins": 4, "tail_bound": 1.5}},
        {"shape": (3,), "params": {"per_element": False, "tail_bound": 1.0}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "n_bins": {"type": "integer", "minimum": 1, "maximum": 999, "default": 5},
            "tail_bound": {"type": "number", "exclusiveMinimum": 0, "default": 10.0},
            "per_element": {"type": "boolean", "default": True},
        },
        "additionalProperties": False,
    }
    init_scale = 0.01

    def __init__(
        self,
        shape: Sequence[int],
        n_bins: int = 5,
        tail_bound: float = 10.0,
        per_element: bool = True,
    ):
        super().__init__()
        if not 1 <= n_bins < 1 / _spline.MIN_BIN_WIDTH:
            raise RecipeError(
                f"spline_activation: n_bins must be in [1, {int(1 / _spline.MIN_BIN_WIDTH) - 1}], "
                f"got {n_bins!r}; the seeds use 5 to 10"
            )
        if not tail_bound > 0:
            raise RecipeError(
                f"spline_activation: tail_bound must be > 0, got {tail_bound!r}; the spline acts "
                "on [-tail_bound, tail_bound] (the seeds use 10 to 30)"
            )
        self.out_shape = tuple(shape)
        self.n_bins = int(n_bins)
        self.tail_bound = float(tail_bound)
        self.per_element = bool(per_element)
        param_shape = self.out_shape if self.per_element else ()
        def small_random(*size: int) -> nn.Parameter:
            return nn.Parameter(self.init_scale * torch.randn(*size))

        self.unnormalized_widths = small_random(*param_shape, n_bins)
        self.unnormalized_heights = small_random(*param_shape, n_bins)
        self.unnormalized_derivatives = small_random(*param_shape, n_bins - 1)

    def spline_knots(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Knot positions, values and derivatives, each ``(*shape, n_bins + 1)`` (or shared)."""
        xs = _spline.knots(self.unnormalized_widths, self.tail_bound, _spline.MIN_BIN_WIDTH)
        ys = _spline.knots(self.unnormalized_heights, self.tail_bound, _spline.MIN_BIN_HEIGHT)
        ds = _spline.knot_derivatives(self.unnormalized_derivatives)
        return xs, ys, ds

    def _check_shape(self, x: torch.Tensor) -> None:
        if self.per_element and tuple(x.shape[1:]) != self.out_shape:
            raise ShapeError(
                f"spline_activation was built for per-sample shape {self.out_shape} (one spline "
                f"per element) but got {tuple(x.shape[1:])}; build it for this shape or set "
                "per_element: false"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_shape(x)
        y, log_derivative = _spline.rq_spline_forward(x, *self.spline_knots(), self.tail_bound)
        return y, _sum_per_sample(log_derivative)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check_shape(y)
        return _spline.rq_spline_inverse(y, *self.spline_knots(), self.tail_bound)


@hookimpl
def zoo_layers():
    return {
        "smooth_leaky_relu": SmoothLeakyReLU,
        "leaky_relu": LeakyReLU,
        "learnable_leaky_relu": LearnableLeakyReLU,
        "spline_activation": SplineActivation,
        "selu": SELU,
        "smooth_tanh": SmoothTanh,
        "identity": Identity,
    }
