"""Built-in plugin: the basic layers (preprocessing and fixed rearrangements).

``dequantize``, ``normalize`` and ``logit`` are the preamble that maps discrete data
(``0 .. 255``) to the real line, so that a flow's likelihood is the uniform-dequantization bound on
the discrete data (Theis et al. 2016, https://arxiv.org/abs/1511.01844; RealNVP,
https://arxiv.org/abs/1605.08803). ``reverse``, ``permute`` and ``squeeze`` rearrange values and
have log-determinant 0 (Glow, https://arxiv.org/abs/1807.03039).

Every layer follows the contract of ``zoo.hookspecs.zoo_layers``: ``forward(x) -> (y, logdet)``
in the data-to-latent direction, ``inverse(y) -> x``, ``out_shape``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from zoo import distributed
from zoo.errors import RecipeError, ShapeError
from zoo.hookspecs import hookimpl


def _zero_logdet(x: torch.Tensor) -> torch.Tensor:
    """A per-sample log-determinant of 0, on x's device and dtype."""
    return x.new_zeros(x.shape[0])


class Dequantize(nn.Module):
    """Uniform dequantization y = x + u, u ~ U[0, 1) (RealNVP, https://arxiv.org/abs/1605.08803).

    Noise is added in training *and* evaluation: the flow's density of y then lower-bounds the
    probability of the discrete x (the uniform-dequantization bound). ``logdet = 0``; the inverse
    is ``floor(y)`` clamped at 0. ``noise=False`` adds 0.5 instead (deterministic, for debugging).
    """

    examples = [
        {"shape": (4,), "params": {}, "input": "pixels"},
        {"shape": (1, 3, 3), "params": {"noise": False}, "input": "pixels"},
    ]

    def __init__(self, shape: Sequence[int], noise: bool = True):
        super().__init__()
        self.out_shape = tuple(shape)
        self.noise = noise

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.noise:
            return x + 0.5, _zero_logdet(x)
        y = x + distributed.rand_like(x)  # under torchrun: this rank's share of the global draw
        # In float32, x + u rounds up to x + 1 when u is within half an ulp of 1; keep y in
        # [x, x + 1) so that floor(y) == x holds exactly.
        top = x + 1
        y = torch.where(y < top, y, torch.nextafter(top, x))
        return y, _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.floor(y).clamp_min(0)


class Normalize(nn.Module):
    """Affine rescaling y = (x - shift) / scale, logdet = -D log(scale) (RealNVP, arXiv 1605.08803).

    With ``scale=256`` it maps dequantized 8-bit data to [0, 1) (https://arxiv.org/abs/1605.08803).
    """

    examples = [
        {"shape": (3,), "params": {"shift": 0.5, "scale": 2.0}},
        {"shape": (2, 3, 3), "params": {"scale": 256.0}, "input": "pixels"},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "shift": {"type": "number", "default": 0.0},
            "scale": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        },
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        if not scale > 0:
            raise RecipeError(
                f"normalize: scale must be > 0, got {scale!r}; e.g. scale: 256.0 maps 8-bit "
                "pixels to [0, 1)"
            )
        self.out_shape = tuple(shape)
        self.shift = float(shift)
        self.scale = float(scale)
        self._log_scale_total = math.prod(self.out_shape) * math.log(self.scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = (x - self.shift) / self.scale
        return y, x.new_full((x.shape[0],), -self._log_scale_total)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.scale + self.shift


class Logit(nn.Module):
    """Logit with boundary shrinkage: p = alpha + (1 - 2 alpha) x, y = log p - log(1 - p).

    For x in [0, 1] (RealNVP, https://arxiv.org/abs/1605.08803; the SNF MNIST preamble).
    ``logdet = D log(1 - 2 alpha) + sum(-log p - log(1 - p))``.
    """

    examples = [
        {"shape": (4,), "params": {}, "input": "unit_interval"},
        {"shape": (1, 2, 3), "params": {"alpha": 0.05}, "input": "unit_interval"},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "alpha": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5, "default": 1e-6},
        },
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], alpha: float = 1e-6):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise RecipeError(
                f"logit: alpha must be in [0, 0.5), got {alpha!r}; the usual value is 1e-6"
            )
        self.out_shape = tuple(shape)
        self.alpha = float(alpha)
        self._log_shrink_total = math.prod(self.out_shape) * math.log1p(-2 * self.alpha)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        logdet = self._log_shrink_total - (log_p + log_1mp).flatten(1).sum(1)
        return log_p - log_1mp, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


def _check_has_channels(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) < 1:
        raise ShapeError(
            f"{name} needs a per-sample shape with a feature/channel dimension; got {shape}"
        )


class Reverse(nn.Module):
    """Reverse the order of the features/channels (dim 1); logdet 0 (RealNVP, arXiv 1605.08803)."""

    examples = [{"shape": (5,), "params": {}}, {"shape": (3, 2, 2), "params": {}}]

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.out_shape = tuple(shape)
        _check_has_channels("reverse", self.out_shape)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flip(1), _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(1)


class Permute(nn.Module):
    """Fixed random permutation of the features/channels (dim 1); logdet 0 (Glow, arXiv 1807.03039).

    The permutation is a buffer, so it is saved with the weights and moved with ``.to()``.
    ``seed=None`` draws it from torch's global generator (seeded by the run), so each copy inside
    a ``repeat`` block gets its own permutation; an integer seed fixes it.
    """

    examples = [{"shape": (5,), "params": {"seed": 3}}, {"shape": (4, 2, 2), "params": {}}]

    def __init__(self, shape: Sequence[int], seed: int | None = None):
        super().__init__()
        self.out_shape = tuple(shape)
        _check_has_channels("permute", self.out_shape)
        n = self.out_shape[0]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        perm = torch.randperm(n, generator=generator)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.index_select(1, self.perm), _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.index_select(1, self.inverse_perm)


class Squeeze(nn.Module):
    """Space-to-depth: (C, H, W) -> (C f^2, H/f, W/f), logdet 0 (RealNVP/Glow, arXiv 1605.08803).

    Each f x f block of pixels becomes f^2 channels: reshape to (B, C, H/f, f, W/f, f), then
    permute to (B, C, f, f, H/f, W/f).
    """

    examples = [{"shape": (1, 4, 4), "params": {}}, {"shape": (2, 2, 6), "params": {}}]
    params_schema = {
        "type": "object",
        "properties": {"factor": {"type": "integer", "minimum": 1, "default": 2}},
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], factor: int = 2):
        super().__init__()
        shape = tuple(shape)
        if factor < 1:
            raise RecipeError(f"squeeze: factor must be >= 1, got {factor!r}")
        if len(shape) != 3:
            raise ShapeError(
                f"squeeze needs an image shape (C, H, W); got {shape}. Put squeeze only on images."
            )
        c, h, w = shape
        if h % factor or w % factor:
            raise ShapeError(
                f"squeeze (factor {factor}) needs H and W divisible by {factor}; got (C, H, W) = "
                f"{shape}. Pad or crop the images to a multiple of {factor} (e.g. MNIST 28x28 "
                f"squeezes twice to 7x7, not three times), or use a smaller factor."
            )
        self.factor = factor
        self.in_shape = shape
        self.out_shape = (c * factor * factor, h // factor, w // factor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.factor
        b, (c, h, w) = x.shape[0], self.in_shape
        if _channels_last(x):  # the same values, kept in the layout they came in
            y = x.permute(0, 2, 3, 1).reshape(b, h // f, f, w // f, f, c).permute(0, 1, 3, 5, 2, 4)
            return y.reshape(b, h // f, w // f, -1).permute(0, 3, 1, 2), _zero_logdet(x)
        y = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, *self.out_shape), _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        f = self.factor
        b, (c, h, w) = y.shape[0], self.in_shape
        if _channels_last(y):
            x = y.permute(0, 2, 3, 1).reshape(b, h // f, w // f, c, f, f).permute(0, 1, 4, 2, 5, 3)
            return x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        x = y.reshape(b, c, f, f, h // f, w // f).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c, h, w)


def _channels_last(x: torch.Tensor) -> bool:
    """True for a batch of images stored channels-last (NHWC: the channel is the innermost
    dimension; a channel slice of such a batch too), so that squeeze keeps that layout rather than
    convert it back. One channel is NCHW and NHWC at once: it stays NCHW."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and x.shape[2] * x.shape[3] > 1


class Flatten(nn.Module):
    """Flatten each sample to a vector, e.g. (1, 28, 28) -> (784,), for fully connected layers.

    A reshape: ``logdet = 0``; the inverse restores the input shape.
    """

    examples = [{"shape": (1, 2, 3), "params": {}}, {"shape": (4,), "params": {}}]

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.in_shape = tuple(shape)
        self.out_shape = (math.prod(self.in_shape),)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.reshape(x.shape[0], -1), _zero_logdet(x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], *self.in_shape)


@hookimpl
def zoo_layers():
    return {
        "flatten": Flatten,
        "dequantize": Dequantize,
        "normalize": Normalize,
        "logit": Logit,
        "reverse": Reverse,
        "permute": Permute,
        "squeeze": Squeeze,
    }
