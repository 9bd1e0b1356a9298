"""Built-in plugin: the emerging convolution (Hoogeboom, van den Berg & Welling, ICML 2019,
"Emerging Convolutions for Generative Normalizing Flows", https://arxiv.org/abs/1901.11137).

An emerging k x k convolution is built from two square autoregressive convolutions whose
dependencies point to opposite corners; their composition has a full receptive field. As in the
Self Normalizing Flows code (``emerging.Emerging``), the layer is::

    conv1x1 -> AR conv -> flip(H, W) -> AR conv -> flip(H, W)

Each AR conv is 2x2 and causal,
``z[c, p] = sum_{kc, (i, j) in {0,1}^2} K[c, kc, i, j] x[kc, p - (i, j)]``, with the
current-pixel tap lower-triangular in channels and diagonal ``exp(log_diag)`` (never zero).
Density direction: two convolutions, ``logdet = H W (log|det W_1x1| + sum log_diag_1 + sum
log_diag_2)``. Sampling direction: the anti-diagonal wavefront solve shared with Inverse-Flow
(``zoo.kernels``), H + W - 1 parallel steps instead of a per-pixel loop.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from zoo.errors import ShapeError
from zoo.hookspecs import hookimpl
from zoo.kernels import wavefront
from zoo.kernels.inverse_conv import inverse_conv
from zoo.plugins.layers_glow import Conv1x1

AR_KERNEL_SIZE = 2
INIT_SCALE = 0.05  # std of the AR taps times sqrt(C k k): each row of taps sums to ~0.05


class SquareAutoregressiveConv(nn.Module):
    """Causal 2x2 convolution ``z = T(K) x`` (top-left dependencies), lower-triangular centre
    tap with diagonal ``exp(log_diag)``: ``logdet = H W sum(log_diag)``; inverse by wavefront solve.

    ``weight[c, kc, i, j]`` multiplies ``x[kc, h - i, w - j]``; centre entries ``kc >= c`` of
    ``weight`` are masked (the diagonal is ``exp(log_diag)``)."""

    def __init__(self, channels: int, kernel_size: int = AR_KERNEL_SIZE):
        super().__init__()
        k = kernel_size
        # Near the identity. Not the seed's randn / sqrt(C C k k): for C = 1 that gives taps ~0.5,
        # and the inverse (an IIR filter over the image) of such a kernel can grow like
        # 2^(h + w): at 28 x 28 its impulse response reached 1e16, so sampling was garbage even
        # in float64. Off-centre taps summing well below the unit diagonal keep it stable.
        scale = INIT_SCALE / math.sqrt(channels * k * k)
        self.weight = nn.Parameter(scale * torch.randn(channels, channels, k, k))
        self.log_diag = nn.Parameter(torch.zeros(channels))
        self.backend: str | None = None

    def kernel(self) -> torch.Tensor:
        """The full kernel ``K`` (conventions of ``zoo.kernels.wavefront``)."""
        kernel = wavefront.full_kernel(self.weight, unit_diagonal=True)
        diagonal = torch.zeros_like(kernel)
        diagonal[:, :, 0, 0] = torch.diag(torch.expm1(self.log_diag))  # 1 + expm1 = exp
        return kernel + diagonal

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = wavefront.causal_conv(x, self.kernel())
        logdet = x.shape[2] * x.shape[3] * self.log_diag.sum()
        return z, logdet.expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return inverse_conv(z, self.kernel(), unit_diagonal=False, backend=self.backend)


class EmergingConv(nn.Module):
    """Emerging convolution: 1x1 conv + two opposite 2x2 AR convs (arXiv 1901.11137).

    The two autoregressive convolutions (Hoogeboom et al. 2019) point to opposite corners; the
    logdet is exact and the inverse is the anti-diagonal wavefront solve. The 1x1 convolution is
    LU-parameterised (``conv1x1`` with ``lu=True``). Takes no params: the channel count comes from
    the input shape (C, H, W).
    """

    examples = [
        {"shape": (1, 3, 4), "params": {}},
        {"shape": (3, 4, 3), "params": {}},
        {"shape": (2, 2, 5), "params": {}},
    ]

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ShapeError(
                f"emerging_conv needs an image (C, H, W) per sample; got {shape}. Use it on "
                "image data, or reshape the data into (C, H, W)."
            )
        self.out_shape = shape
        self.mix = Conv1x1(shape, lu=True)
        self.top_left = SquareAutoregressiveConv(shape[0])
        self.bottom_right = SquareAutoregressiveConv(shape[0])  # sees the flipped image

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.mix(x)
        x, ld = self.top_left(x)
        logdet = logdet + ld
        x, ld = self.bottom_right(x.flip(2, 3))
        return x.flip(2, 3), logdet + ld

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        z = self.bottom_right.inverse(z.flip(2, 3)).flip(2, 3)
        z = self.top_left.inverse(z)
        return self.mix.inverse(z)


@hookimpl
def zoo_layers():
    return {"emerging_conv": EmergingConv}
