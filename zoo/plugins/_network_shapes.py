"""Shape checks shared by the network layers (``network_layers``, ``layers_mnf``): each names the
layer and says what to put before it, so a recipe's wrong layer order is one clear ShapeError."""

from __future__ import annotations

from typing import Sequence

from zoo.errors import ShapeError


def image_shape(shape: Sequence[int], layer: str) -> tuple[int, int, int]:
    """``shape`` as ``(channels, height, width)``, or a ShapeError naming ``layer``."""
    shape = tuple(shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ShapeError(
            f"network layer {layer!r} takes images (channels, height, width), got shape {shape}; "
            "it must come before any flatten or linear layer"
        )
    return shape  # type: ignore[return-value]


def flat_features(shape: Sequence[int], layer: str) -> int:
    """The feature count of a flat ``(features,)`` shape, or a ShapeError naming ``layer``."""
    shape = tuple(shape)
    if len(shape) != 1 or shape[0] < 1:
        raise ShapeError(
            f"network layer {layer!r} takes flat (features,) inputs, got shape {shape}; "
            "put a {name: flatten} before it"
        )
    return shape[0]


def window_out(size: int, kernel: int, stride: int, padding: int, layer: str, what: str) -> int:
    """The output length of a sliding window (convolution or pooling) along one axis."""
    if kernel < 1 or stride < 1 or padding < 0:
        raise ShapeError(f"network layer {layer!r}: kernel_size and stride must be >= 1 and "
                         f"padding >= 0, got {kernel}, {stride}, {padding}")
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ShapeError(
            f"network layer {layer!r}: a {kernel}-wide window does not fit the {what} {size} "
            f"(padding {padding}); use a smaller kernel_size or more padding, or fewer pooling "
            "layers before it"
        )
    return out


def conv_out_shape(shape: Sequence[int], channels: int, kernel: int, stride: int, padding: int,
                   layer: str) -> tuple[int, int, int]:
    """The per-sample output shape of a square-kernel 2-D convolution or pooling layer."""
    _, height, width = image_shape(shape, layer)
    return (
        channels,
        window_out(height, kernel, stride, padding, layer, "height"),
        window_out(width, kernel, stride, padding, layer, "width"),
    )
