"""A 3x3 convolution (padding 1) to few output channels: one matrix product and nine shifted adds.

Glow's zero-initialised last layer maps the coupling network's wide hidden state (64 channels or
more) to a few outputs (the scale and shift of the other half: 4 at MNIST's first level). oneDNN
runs that convolution at a quarter to a third of this CPU's matmul rate (37 GFLOP/s forward
against 155 for a 64-wide product, one thread). Written as products it is cheap: with W_k the
(Cout x Cin) weight of tap k = (dy, dx),

    planes_k = W_k x            (one (9 Cout x Cin) @ (Cin x N H W) product, 9 Cout wide)
    y[i, j] = b + sum_k planes_k[i + dy, j + dx]   (nine shifted adds of Cout-channel maps)

and the backward pass is the adjoint shifts of the output gradient, then two products. The sums
are the convolution's own, in another order: float64 agrees with ``F.conv2d`` to rounding. It
pays only where 9 Cout is at most Cin (the planes are then no wider than the input), on the
CPU (cuDNN has no such gap) and eager; ``bench/coupling_net.py`` measures it beside oneDNN.
"""

from __future__ import annotations

import torch

# The nine taps (dy, dx) of a 3x3 kernel in the weight's row-major order.
TAPS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def pays_off(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the matrix-product form is the faster way for this input and 3x3 weight. Not
    under ``torch.compile`` (``train.compile``): traced, the nine shifted adds made a compiled
    Glow step 1.9x slower than eager (bench/glow_vs_normflows.py --compile). Not under autocast
    either, whose casts ``F.conv2d`` gets and a custom Function's products would not."""
    out_channels, in_channels = weight.shape[:2]
    return (x.device.type == "cpu" and x.dim() == 4 and 9 * out_channels <= in_channels
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu"))


def _overlap(offset: int, size: int) -> tuple[slice, slice]:
    """(target, source) ranges along an axis of ``size`` for target[i] = source[i + offset]."""
    lo, hi = max(0, -offset), min(size, size - offset)
    return slice(lo, hi), slice(lo + offset, hi + offset)


def _tap_windows(height: int, width: int, sign: int):
    """For each tap k: (k, target window, source window) with target[i, j] = source[i + sign dy_k,
    j + sign dx_k], the windows as (..., rows, cols) indices of an (..., H, W) tensor."""
    for k, (dy, dx) in enumerate(TAPS):
        (rows, source_rows), (cols, source_cols) = _overlap(sign * dy, height), _overlap(sign * dx, width)
        yield k, (..., rows, cols), (..., source_rows, source_cols)


def add_shifted(out: torch.Tensor, planes: torch.Tensor, sign: int) -> torch.Tensor:
    """out[..., i, j] += sum_k planes[k][..., i + sign dy_k, j + sign dx_k] (zero outside), in place.
    ``planes`` is (9, ..., H, W) and ``out`` (..., H, W)."""
    for k, target, source in _tap_windows(*out.shape[-2:], sign):
        out[target] += planes[k][source]
    return out


def shifted_copies(x: torch.Tensor, sign: int) -> torch.Tensor:
    """copies[k][..., i, j] = x[..., i + sign dy_k, j + sign dx_k] (zero outside): (..., H, W) to
    (9, ..., H, W). The adjoint of ``add_shifted`` with the opposite sign."""
    copies = x.new_zeros((len(TAPS),) + tuple(x.shape))
    for k, target, source in _tap_windows(*x.shape[-2:], sign):
        copies[k][target] = x[source]
    return copies


class _FewOutputsConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        batch, in_channels, height, width = x.shape
        out_channels = weight.shape[0]
        rows = x.permute(0, 2, 3, 1).reshape(-1, in_channels)  # a view when x is channels-last
        taps_weight = weight.permute(2, 3, 0, 1).reshape(len(TAPS) * out_channels, in_channels)
        planes = torch.mm(taps_weight, rows.t()).view(len(TAPS), out_channels, batch, height, width)
        # The output is a fresh NCHW tensor (not a view), so callers may change it in place.
        y = x.new_empty((batch, out_channels, height, width))
        by_channel = y.permute(1, 0, 2, 3)
        by_channel.copy_(bias.view(-1, 1, 1, 1).expand_as(by_channel))
        add_shifted(by_channel, planes, 1)
        ctx.save_for_backward(rows, taps_weight)
        ctx.image = (batch, in_channels, height, width)
        return y

    @staticmethod
    def backward(ctx, grad):
        rows, taps_weight = ctx.saved_tensors
        batch, in_channels, height, width = ctx.image
        out_channels = taps_weight.shape[0] // len(TAPS)
        by_channel = grad.permute(1, 0, 2, 3)
        grad_planes = shifted_copies(by_channel, -1).reshape(len(TAPS) * out_channels, -1)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # channels-last, as the hidden state it flows back into
            grad_x = torch.mm(grad_planes.t(), taps_weight).view(batch, height, width, in_channels)
            grad_x = grad_x.permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.mm(grad_planes, rows).view(3, 3, out_channels, in_channels).permute(2, 3, 0, 1)
        if ctx.needs_input_grad[2]:
            grad_bias = by_channel.sum((1, 2, 3))
        return grad_x, grad_weight, grad_bias


def few_outputs_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 ``weight`` of few output channels."""
    return _FewOutputsConv3x3.apply(x, weight, bias)
