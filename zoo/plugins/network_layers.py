"""Built-in plugin: the plain (non-Bayesian) network layers a LeNet needs.

``conv2d``, ``max_pool2d``, ``relu``, ``flatten``, ``linear`` and ``scale``, each the PyTorch module
of the same name (PyTorch's default initialisation, as torch-mnf's LeNet) built from the per-sample
input shape, with ``out_shape`` set, following the contract of
``zoo.hookspecs.zoo_network_layers``. Their recipe parameters come from the signatures.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from zoo.errors import RecipeError
from zoo.hookspecs import hookimpl
from zoo.plugins._network_shapes import conv_out_shape, flat_features, image_shape


def _positive(value: int, param: str, layer: str) -> int:
    if value < 1:
        raise RecipeError(f"network layer {layer!r}: {param} must be >= 1, got {value}")
    return value


class Conv2d(nn.Conv2d):
    """2-D convolution with a square kernel, y = W * x + b (LeCun et al. 1998)."""

    def __init__(self, shape: Sequence[int], out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        _positive(out_channels, "out_channels", "conv2d")
        out_shape = conv_out_shape(shape, out_channels, kernel_size, stride, padding, "conv2d")
        super().__init__(shape[0], out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.out_shape = out_shape


class MaxPool2d(nn.MaxPool2d):
    """2-D max pooling over square windows (stride defaults to the window size)."""

    def __init__(self, shape: Sequence[int], kernel_size: int = 2, stride: int | None = None,
                 padding: int = 0):
        stride = kernel_size if stride is None else stride
        channels = image_shape(shape, "max_pool2d")[0]
        if 2 * padding > kernel_size:
            raise RecipeError(f"network layer 'max_pool2d': padding must be at most half of "
                              f"kernel_size, got padding {padding} for kernel_size {kernel_size}")
        out_shape = conv_out_shape(shape, channels, kernel_size, stride, padding, "max_pool2d")
        super().__init__(kernel_size, stride=stride, padding=padding)
        self.out_shape = out_shape


class ReLU(nn.ReLU):
    """Rectified linear unit, y = max(x, 0), element-wise."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.out_shape = tuple(shape)


class Flatten(nn.Flatten):
    """Flattens each sample to a vector of C*H*W features (keeps the batch dimension)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.out_shape = (math.prod(shape),)


class Linear(nn.Linear):
    """Affine map y = W x + b of flat inputs."""

    def __init__(self, shape: Sequence[int], out_features: int, bias: bool = True):
        _positive(out_features, "out_features", "linear")
        super().__init__(flat_features(shape, "linear"), out_features, bias=bias)
        self.out_shape = (out_features,)


class Scale(nn.Module):
    """Fixed rescaling y = factor * x (e.g. 1/255 to map 8-bit pixels to [0, 1], as ToTensor)."""

    def __init__(self, shape: Sequence[int], factor: float = 1 / 255):
        super().__init__()
        if not math.isfinite(factor) or factor == 0:
            raise RecipeError(f"network layer 'scale': factor must be finite and non-zero, got {factor}")
        self.factor = factor
        self.out_shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@hookimpl
def zoo_network_layers():
    return {
        "conv2d": Conv2d,
        "max_pool2d": MaxPool2d,
        "relu": ReLU,
        "flatten": Flatten,
        "linear": Linear,
        "scale": Scale,
    }
