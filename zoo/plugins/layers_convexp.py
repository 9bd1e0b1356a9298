"""Built-in plugin: the convolution exponential ``conv_exp``.

Hoogeboom, Garcia Satorras, Tomczak, Welling, "The Convolution Exponential and Generalized
Sylvester Flows", 2020, https://arxiv.org/abs/2006.01910, in the form Self Normalizing Flows
uses for its "Conv. Exponential 9-layer" model (``snf/layers/convexp``).

A 3x3 convolution (padding 1) is a linear map M on (C, H, W). Its matrix exponential is
invertible for any kernel, with inverse exp(-M), and det exp(M) = exp(trace M), where the trace
of the convolution matrix is H W times the trace of the kernel's centre tap. exp(M) x is the
series sum_i M^i x / i!, i.e. repeated convolutions; it converges fast when the operator norm of
M is below 1, which spectral normalisation of the kernel keeps it near.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import RecipeError, ShapeError, TrainingError
from zoo.hookspecs import hookimpl

MAX_SERIES_TERMS = 100


def conv_exp_series(
    x: torch.Tensor, kernel: torch.Tensor, min_terms: int, until_converged: bool
) -> torch.Tensor:
    """exp(M) x = x + M x + M^2 x / 2! + ..., M the 3x3 convolution (padding 1) with ``kernel``.

    Exactly ``min_terms`` terms, or with ``until_converged`` at least that many and then on until
    the last term is below the float rounding of the sum (``max|term| <= eps max|sum|`` over the
    batch: terms shrink monotonically once i exceeds the norm of M, so the rest cannot matter).
    """
    result, term = x, x
    eps = torch.finfo(x.dtype).eps
    for i in range(1, MAX_SERIES_TERMS + 1):
        term = F.conv2d(term, kernel, padding=1) / i
        result = result + term
        if i < min_terms:
            continue
        if not until_converged:
            return result
        with torch.no_grad():
            if term.abs().max() <= eps * result.abs().max():
                return result
    raise TrainingError(
        f"conv_exp: the exponential series did not converge in {MAX_SERIES_TERMS} terms, so the "
        "kernel's operator norm is far above its spectral-norm estimate. Lower `coeff` (0.9 is "
        "the usual value) or train a few more steps in training mode to refresh the estimate."
    )


class ChannelMixing(nn.Module):
    """Invertible 1x1 convolution y = W x at every position of a (C, H, W) input.

    ``plain``: W a free C x C matrix, initially a random orthogonal one (QR of a Gaussian);
    ``logdet = H W log|det W|``. ``householder``: W = prod_k (I - 2 v_k v_k^T / |v_k|^2), an
    orthogonal matrix (logdet 0, inverse W^T) with ``reflections`` vectors v_k; the seed uses it
    (64 reflections) for C > 64, where a dense slogdet per step gets expensive.
    """

    def __init__(self, channels: int, positions: int, kind: str, reflections: int = 64):
        super().__init__()
        self.kind = kind
        self.positions = positions
        if kind == "plain":
            orthogonal = torch.linalg.qr(torch.randn(channels, channels))[0]
            self.weight = nn.Parameter(orthogonal.contiguous())  # QR returns a column-major view
        else:
            self.reflection_vectors = nn.Parameter(torch.randn(reflections, channels))

    def matrix(self) -> torch.Tensor:
        if self.kind == "plain":
            return self.weight
        vectors = self.reflection_vectors
        channels = vectors.shape[1]
        q = torch.eye(channels, dtype=vectors.dtype, device=vectors.device)
        for v in vectors:
            q = q - (2.0 / v.dot(v)) * torch.outer(q @ v, v)  # q (I - 2 v v^T / v^T v)
        return q

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.matrix()
        y = F.conv2d(x, w[:, :, None, None])
        if self.kind == "plain":
            logdet = self.positions * torch.linalg.slogdet(w)[1]
        else:
            logdet = w.new_zeros(())
        return y, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w = self.matrix()
        w_inv = torch.linalg.inv(w) if self.kind == "plain" else w.T
        return F.conv2d(y, w_inv[:, :, None, None])


class ConvExp(nn.Module):
    """Convolution exponential z = exp(M) W (x + b_pre) + b_post (Hoogeboom et al., 2006.01910).

    M is a spectrally normalised 3x3 convolution (padding 1) with kernel K: M uses
    K / max(1, sigma / coeff), sigma the power-iteration estimate of the operator norm of the
    convolution on (C, H, W). W is an invertible 1x1 convolution (``channel_mixing``),
    b_pre and b_post per-position biases. ``logdet = H W trace(M centre tap) + logdet(W)``;
    the inverse is x = W^-1 exp(-M) (z - b_post) - b_pre.

    The norm estimate: buffers ``spectral_u``, ``spectral_v`` hold the power-iteration vectors,
    and sigma = <u, M_K v> is computed from them. A training-mode forward first takes one power
    iteration step (updating the buffers) and then builds M; every other call (the inverse, and
    eval-mode forwards) uses the stored vectors without updating them. So M depends only on the
    parameters and buffers, forward and inverse use the same M, and an eval forward is a
    deterministic function of x. The estimate is refined by 20 power iterations at construction.

    Series length: ``terms_train`` terms in training mode (the seed's 6, for speed: the output is
    then exp(M) up to a term of order sigma^7 / 7!), and in eval mode at least ``terms_eval`` and
    then until the terms fall below float rounding, so inverse(forward(x)) == x to the working
    precision. The same rule holds for the inverse in each mode.
    """

    examples = [
        {"shape": (2, 4, 4), "params": {}},
        {"shape": (3, 3, 5), "params": {"coeff": 0.5}},
        {"shape": (3, 3, 3), "params": {"channel_mixing": "householder", "reflections": 3}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "coeff": {"type": "number", "exclusiveMinimum": 0, "maximum": 4, "default": 0.9},
            "terms_train": {"type": "integer", "minimum": 1, "maximum": 50, "default": 6},
            "terms_eval": {"type": "integer", "minimum": 1, "maximum": 50, "default": 13},
            "channel_mixing": {"enum": ["auto", "plain", "householder"], "default": "auto"},
            "reflections": {"type": "integer", "minimum": 1, "default": 64},
        },
        "additionalProperties": False,
    }
    initial_power_iterations = 20
    householder_above_channels = 64  # "auto" picks Householder above this many channels (seed)

    def __init__(
        self,
        shape: Sequence[int],
        coeff: float = 0.9,
        terms_train: int = 6,
        terms_eval: int = 13,
        channel_mixing: Literal["auto", "plain", "householder"] = "auto",
        reflections: int = 64,
    ):
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3:
            raise ShapeError(
                f"conv_exp needs an image (C, H, W) per sample; got {shape}. Reshape the data "
                "into (C, H, W), or use a dense layer for vectors."
            )
        if not 0 < coeff <= 4:
            raise RecipeError(
                f"conv_exp: coeff must be in (0, 4], got {coeff!r}; it bounds the operator norm "
                "of the convolution (the seed uses 0.9)"
            )
        if terms_train < 1 or terms_eval < 1:
            raise RecipeError(
                f"conv_exp: terms_train and terms_eval must be >= 1, got {terms_train!r} and "
                f"{terms_eval!r} (the seed uses 6 and 13)"
            )
        if channel_mixing not in ("auto", "plain", "householder"):
            raise RecipeError(
                f"conv_exp: channel_mixing must be 'auto', 'plain' or 'householder', got "
                f"{channel_mixing!r}"
            )
        channels, height, width = shape
        self.out_shape = shape
        self.coeff = float(coeff)
        self.terms_train = int(terms_train)
        self.terms_eval = int(terms_eval)
        self._positions = height * width
        if channel_mixing == "auto":
            big = channels > self.householder_above_channels
            channel_mixing = "householder" if big else "plain"
        self.mixing = ChannelMixing(channels, self._positions, channel_mixing, reflections)

        self.kernel = nn.Parameter(torch.randn(channels, channels, 3, 3) / (channels * 9))
        self.pre_bias = nn.Parameter(torch.zeros(shape))
        self.post_bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("spectral_u", F.normalize(torch.randn(shape).flatten(), dim=0))
        self.register_buffer("spectral_v", F.normalize(torch.randn(shape).flatten(), dim=0))
        for _ in range(self.initial_power_iterations):
            self.power_iteration()

    # -- the spectrally normalised kernel ------------------------------------------------------

    @torch.no_grad()
    def power_iteration(self) -> None:
        """One step v <- M^T u / |M^T u|, u <- M v / |M v|, in place on the buffers."""
        shape = (1, *self.out_shape)
        v = F.conv_transpose2d(self.spectral_u.view(shape), self.kernel, padding=1)
        self.spectral_v.copy_(F.normalize(v.flatten(), dim=0, eps=1e-12))
        u = F.conv2d(self.spectral_v.view(shape), self.kernel, padding=1)
        self.spectral_u.copy_(F.normalize(u.flatten(), dim=0, eps=1e-12))

    def spectral_norm_estimate(self) -> torch.Tensor:
        """sigma = <u, K * v> from the stored vectors (differentiable in K)."""
        # Clones: the graph must not hold the buffers that the next training forward updates in
        # place, or a second forward before backward() would break autograd.
        u, v = self.spectral_u.clone(), self.spectral_v.clone()
        kv = F.conv2d(v.view(1, *self.out_shape), self.kernel, padding=1)
        return torch.dot(u, kv.flatten())

    def normalized_kernel(self) -> torch.Tensor:
        """K / max(1, sigma / coeff): rescaled only when the estimate exceeds ``coeff``."""
        sigma = self.spectral_norm_estimate()
        return self.kernel / torch.clamp(sigma / self.coeff, min=1.0)

    # -- the flow ------------------------------------------------------------------------------

    def _series(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        if self.training:
            return conv_exp_series(x, kernel, self.terms_train, until_converged=False)
        return conv_exp_series(x, kernel, self.terms_eval, until_converged=True)

    def _check_shape(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.out_shape:
            raise ShapeError(
                f"conv_exp was built for per-sample shape {self.out_shape} (its biases and "
                f"spectral norm are per position) but got {tuple(x.shape[1:])}"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_shape(x)
        if self.training:
            self.power_iteration()
        kernel = self.normalized_kernel()
        mixed, mixing_logdet = self.mixing(x + self.pre_bias)
        z = self._series(mixed, kernel) + self.post_bias
        trace = torch.diagonal(kernel[:, :, 1, 1]).sum()
        logdet = self._positions * trace + mixing_logdet
        return z, logdet.expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        self._check_shape(z)
        kernel = self.normalized_kernel()
        mixed = self._series(z - self.post_bias, -kernel)
        return self.mixing.inverse(mixed) - self.pre_bias


@hookimpl
def zoo_layers():
    return {"conv_exp": ConvExp}
