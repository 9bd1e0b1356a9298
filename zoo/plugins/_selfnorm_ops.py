"""The math of self-normalizing layers (Keller et al. 2021, https://arxiv.org/abs/2011.07248).

A self-normalizing layer has a weight W (``z = W x + b``) and a learned approximate inverse R
(``x ~ R (z - b)``). Its training gradient replaces the costly gradient of ``log|det W|``, which
is ``W^{-T}``, by ``R^T``, and averages the two views of the mixture objective (paper eq. 3)::

    L = 1/2 L_f + 1/2 L_g + lambda * sum_k ||g_k(f_k(h_k)) - h_k||^2

so that, with ``g = dL/dz`` of the loss, ``gx = W^T g`` (the exact input gradient) and ``s`` the
weight the loss puts on the layer's log-determinant (``s = -1`` for the batch-mean NLL)::

    dL/dW = 1/2 ( sum_b g_b x_b^T   + s * R^T (.) m )
    dL/dR = 1/2 (-sum_b gx_b z_b^T  - s * W^T (.) m )          (z = W x, without bias)
    dL/db = sum_b g_b                                          (full, not halved)
    dL/dx = W^T g                                              (exact)

For a convolution, "transpose" is the flipped, channel-transposed kernel
(``flip_kernel(K) = K.flip(2, 3).transpose(0, 1)``: the kernel of the adjoint convolution) and
``m`` counts how often each kernel tap appears in the convolution matrix (1 for FC); the
log-determinant gradient of one tap is the sum of ``W^{-T}`` over those ``m`` places, which
``R^T`` approximates by ``m`` times the matching tap of ``flip_kernel(R)``.

``s`` is read from the gradient reaching the (zero) log-determinant the layer reports, so any
loss that weights log-determinants (the batch mean, a sum, a weighted NLL) gets the right scale.
The data terms use ``torch.nn.grad.conv2d_weight`` / ``conv2d_input`` (the seed's C++ extension
wrapped cuDNN entry points that modern PyTorch no longer has).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight


def flip_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel of the adjoint convolution: ``K.flip(2, 3).transpose(0, 1)`` (Wᵀ for FC)."""
    return kernel.flip(2, 3).transpose(0, 1)


_TAP_COUNTS: dict[tuple, torch.Tensor] = {}


def tap_counts(
    image_shape: tuple[int, int, int], kernel_shape: tuple[int, ...], padding: int,
    device: torch.device, dtype: torch.dtype,
) -> torch.Tensor:
    """m: how many times each tap of a kernel appears in the convolution matrix, shape of the kernel.

    ``m = conv2d_weight(1, ·, 1)``: the number of (output, input) pixel pairs a tap connects, e.g.
    784 / 756 / 729 at the centre / edge / corner taps of a 3x3, pad-1 kernel on 28x28. Computed
    once per shape and cached (it depends on nothing else).
    """
    key = (tuple(image_shape), tuple(kernel_shape), int(padding), str(device), dtype)
    counts = _TAP_COUNTS.get(key)
    if counts is None:
        ones = torch.ones(1, *image_shape, device=device, dtype=dtype)
        counts = conv2d_weight(ones, kernel_shape, ones, padding=padding)
        _TAP_COUNTS[key] = counts
    return counts


def logdet_weight(grad_logdet: torch.Tensor | None) -> float:
    """s = sum over the batch of dL/d(logdet_b): the weight of log|det W| in the loss (-1 for the
    batch-mean NLL). A Python number, so it scales tensors without extra (D, D) passes (one device
    sync per layer and step on GPU)."""
    return 0.0 if grad_logdet is None else float(grad_logdet.sum())


class SelfNormLinear(torch.autograd.Function):
    """``(z, logdet, recon) = (x Wᵀ + b, 0, ||x - R W x||^2)`` with the self-normalized gradient.

    ``recon`` (per sample) is computed only with ``with_recon`` (else an empty tensor): fusing the
    layer-wise reconstruction loss into this function reuses ``W x`` and merges its gradients into
    the same two weight products, 6 matrix products per step instead of 9. With ``r2 = 2 w (x̂ - x)``
    (``w`` the loss weight of each sample's recon, ``x̂ = R W x``)::

        dW = (g/2 + r2 R)ᵀ x + s/2 Rᵀ        dR = (r2 - gx/2)ᵀ (W x) - s/2 Wᵀ

    The scalars ride on the small (batch, D) factors or on in-place updates, so no extra
    full-size (D, D) temporaries are made; dR is built as dRᵀ and returned transposed, which
    matches the column-major layout the layer keeps R in (no transposed (D, D) pass at all).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, inverse_weight, with_recon: bool):
        wx = x @ weight.t()
        z = wx + bias if bias is not None else wx
        residual = recon = None
        if with_recon:
            residual = wx @ inverse_weight.t() - x  # x̂ - x
            recon = residual.pow(2).sum(1)
        ctx.with_recon = with_recon
        ctx.save_for_backward(x, weight, bias, inverse_weight, wx, residual)
        return z, x.new_zeros(x.shape[0]), recon if with_recon else x.new_zeros(0)

    @staticmethod
    def backward(ctx, grad_z, grad_logdet, grad_recon):
        x, weight, bias, inverse_weight, wx, residual = ctx.saved_tensors
        half_s = 0.5 * logdet_weight(grad_logdet)
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        # exact input gradient Wᵀ g (the reconstruction loss sees a detached input)
        grad_x = grad_z @ weight
        r2 = 2 * grad_recon.unsqueeze(1) * residual if ctx.with_recon else None
        grad_w = grad_r = grad_b = None
        if need_w:
            left = 0.5 * grad_z if r2 is None else torch.addmm(grad_z, r2, inverse_weight, beta=0.5)
            grad_w = (left.t() @ x).add_(inverse_weight.t(), alpha=half_s)
        if need_r:  # computed as dRᵀ, so that W is added without a transposed pass
            left = -0.5 * grad_x if r2 is None else r2.sub(grad_x, alpha=0.5)
            grad_r = (wx.t() @ left).sub_(weight, alpha=half_s).t()
        if bias is not None and need_b:
            grad_b = grad_z.sum(0)
        return grad_x if need_x else None, grad_w, grad_b, grad_r, None


class SelfNormConv2d(torch.autograd.Function):
    """``(z, logdet) = (conv2d(x, W, b, padding), 0)`` with the self-normalized gradient (module doc)."""

    @staticmethod
    def forward(ctx, x, weight, bias, inverse_weight, padding: int):
        z = F.conv2d(x, weight, bias, padding=padding)
        ctx.padding = padding
        ctx.save_for_backward(x, weight, bias, inverse_weight, z)
        return z, x.new_zeros(x.shape[0])

    @staticmethod
    def backward(ctx, grad_z, grad_logdet):
        x, weight, bias, inverse_weight, z = ctx.saved_tensors
        p = ctx.padding
        s = logdet_weight(grad_logdet)
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        grad_x = grad_w = grad_r = grad_b = None
        if need_x or need_r:
            grad_x = conv2d_input(x.shape, weight, grad_z, padding=p)
        if need_w or need_r:
            m = tap_counts(tuple(x.shape[1:]), tuple(weight.shape), p, x.device, x.dtype)
        if need_w:
            data = conv2d_weight(x, weight.shape, grad_z, padding=p)
            grad_w = 0.5 * (data + s * flip_kernel(inverse_weight) * m)
        if need_r:
            z_nobias = z - bias.view(1, -1, 1, 1) if bias is not None else z
            data = conv2d_weight(z_nobias, inverse_weight.shape, -grad_x, padding=p)
            grad_r = 0.5 * (data - s * flip_kernel(weight * m))
        if bias is not None and need_b:
            grad_b = grad_z.sum((0, 2, 3))
        return grad_x if need_x else None, grad_w, grad_b, grad_r, None


def conv_matrix(weight: torch.Tensor, image_shape: tuple[int, int, int], padding: int) -> torch.Tensor:
    """The dense (CHW x CHW) matrix M of ``x -> conv2d(x, W, padding)`` on flattened images.

    One batched convolution of the identity: row j of the result is ``M e_j``, i.e. column j of M.
    Differentiable in W, so ``slogdet(conv_matrix(W))`` carries the exact gradient.
    """
    dim = image_shape[0] * image_shape[1] * image_shape[2]
    eye = torch.eye(dim, device=weight.device, dtype=weight.dtype).reshape(dim, *image_shape)
    return F.conv2d(eye, weight, padding=padding).reshape(dim, dim).t()
