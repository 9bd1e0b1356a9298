"""Built-in plugin (the "kernel plugin"): Inverse-Flow's inverse convolution layers.

Inverse-Flow (Nagar & Varma, AISTATS 2025, https://arxiv.org/abs/2410.14634) uses the *inverse*
of a masked k x k convolution ``T(W)`` with a unit diagonal in the density direction and the
plain convolution for sampling::

    x = T(W) z:  x[c, h, w] = z[c, h, w] + sum_{kc, i, j} W[c, kc, i, j] z[kc, h - i, w - j]

(offset (0, 0) only for ``kc < c``). ``T(W)`` is unit lower-triangular, so ``log|det| = 0``.
The density direction ``z = T(W)^-1 x`` is the anti-diagonal wavefront solve of
``zoo.kernels`` (Triton on CUDA, its PyTorch twin on CPU), with the parallel backward of the
paper (``dL/dx = T^-T dL/dz`` by back-substitution, ``dL/dW = -corr(z, dL/dx)``).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from zoo.errors import RecipeError, ShapeError
from zoo.hookspecs import hookimpl
from zoo.kernels.inverse_conv import causal_conv, inverse_conv

ORIENTATIONS = ("tl", "tr", "bl", "br")
# Spatial dims to flip so that the top-left causal operator points to each corner.
_FLIP_DIMS = {"tl": (), "tr": (3,), "bl": (2,), "br": (2, 3)}
INIT_SCALE = 0.01  # taps start small: the layer starts near the identity, as in the seed


def _check_image(name: str, shape: tuple[int, ...]) -> int:
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeError(
            f"{name} needs an image (C, H, W) per sample; got {shape}. Put it after image data "
            "or reshape the data into (C, H, W)."
        )
    return shape[0]


class InverseConv(nn.Module):
    """Inverse of a masked k x k convolution with unit diagonal (Inverse-Flow, arXiv 2410.14634).

    ``forward(x) = T(W)^-1 x`` (wavefront solve), ``inverse(z) = T(W) z`` (one convolution),
    ``logdet = 0``. ``orientation`` picks the corner the dependencies point to: ``tl`` (pixels
    depend on those above-left), ``tr``, ``bl``, ``br`` (the input and output are flipped).
    ``weight[c, kc, i, j]`` multiplies the input at offset (-i, -j) (see ``zoo.kernels.wavefront``);
    its centre-tap entries with ``kc >= c`` are masked (unused, zero gradient).
    """

    examples = [
        {"shape": (1, 3, 4), "params": {"kernel_size": 2}},
        {"shape": (3, 3, 4), "params": {"kernel_size": 3}},
        {"shape": (3, 4, 3), "params": {"kernel_size": 2, "orientation": "br"}},
        {"shape": (2, 3, 2), "params": {"kernel_size": 2, "orientation": "tr"}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "kernel_size": {"type": "integer", "minimum": 1, "default": 2},
            "orientation": {"enum": list(ORIENTATIONS), "default": "tl"},
        },
        "additionalProperties": False,
    }

    def __init__(
        self,
        shape: Sequence[int],
        kernel_size: int = 2,
        orientation: Literal["tl", "tr", "bl", "br"] = "tl",
    ):
        super().__init__()
        shape = tuple(shape)
        channels = _check_image("inverse_conv", shape)
        if orientation not in ORIENTATIONS:
            raise RecipeError(
                f"inverse_conv: param orientation must be one of {ORIENTATIONS}; "
                f"got {orientation!r}"
            )
        self.out_shape = shape
        self.kernel_size = kernel_size
        self.orientation = orientation
        self._flip = _FLIP_DIMS[orientation]
        self.backend: str | None = None  # None: Triton on CUDA, the PyTorch twin on CPU
        taps = torch.randn(channels, channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(INIT_SCALE * taps)

    def _oriented(self, t: torch.Tensor) -> torch.Tensor:
        return t.flip(self._flip) if self._flip else t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = inverse_conv(self._oriented(x), self.weight, unit_diagonal=True, backend=self.backend)
        return self._oriented(z), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        x = causal_conv(self._oriented(z), self.weight, unit_diagonal=True, backend=self.backend)
        return self._oriented(x)


class InverseConvUnit(nn.Module):
    """Four inverse convolutions, orientations TL, TR, BL, BR (Inverse-Flow, arXiv 2410.14634).

    The seed's ``Inv_FlowUnit``: every pixel ends up depending on every other; ``logdet = 0``.
    """

    examples = [
        {"shape": (1, 3, 4), "params": {"kernel_size": 2}},
        {"shape": (3, 3, 2), "params": {"kernel_size": 3}},
    ]
    params_schema = {
        "type": "object",
        "properties": {"kernel_size": {"type": "integer", "minimum": 1, "default": 2}},
        "additionalProperties": False,
    }

    def __init__(self, shape: Sequence[int], kernel_size: int = 2):
        super().__init__()
        shape = tuple(shape)
        _check_image("inverse_conv_unit", shape)
        self.out_shape = shape
        self.convs = nn.ModuleList(InverseConv(shape, kernel_size, o) for o in ORIENTATIONS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.convs:
            x, _ = conv(x)
        return x, x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for conv in reversed(self.convs):
            z = conv.inverse(z)
        return z


@hookimpl
def zoo_layers():
    return {"inverse_conv": InverseConv, "inverse_conv_unit": InverseConvUnit}
