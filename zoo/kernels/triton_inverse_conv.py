"""Triton kernels of the inverse convolution (Inverse-Flow, arXiv 2410.14634): solve, conv, dy, dw.

Conventions (full kernel ``K`` of shape (C, C, k, k), offset-indexed, centre tap lower-triangular)
are those of ``zoo.kernels.wavefront``, the PyTorch twin these kernels must match:

- ``solve(x, K)``: ``z = T(K)^-1 x``, forward substitution over anti-diagonals, eq. (2) there;
- ``dy(g, K)``: ``y = T(K)^-T g``, back-substitution over the diagonals in reverse order;
- ``conv(z, K)``: ``x = T(K) z``, the plain causal convolution (sampling direction);
- ``dw(z, y, k, unit_diagonal)``: ``-sum_{b,p} y[b,c,p] z[b,kc,p-(i,j)]`` on the learnable taps.

Triton is imported lazily (on first use), so zoo imports where it is absent. On CPU tensors the
kernels run only under the interpreter (``TRITON_INTERPRET=1`` set before triton is imported).
Each solve program owns one sample and loops over its diagonals itself (one launch per call, not
one per diagonal as the seed's CUDA code does).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from zoo.kernels.wavefront import centre_inverse


MIN_DOT = 16  # smallest tile side tl.dot accepts


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@lru_cache(maxsize=1)
def _kernels():
    """Compile-on-demand definitions (importing triton here keeps it optional)."""
    import triton
    import triton.language as tl

    @triton.jit
    def wavefront_kernel(
        src_ptr, dst_ptr, coef_x_ptr, coef_nbr_ptr, B, C, H, W,
        K: tl.constexpr, TRANSPOSED: tl.constexpr, BLOCK_B: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        """dst_p = coef_x src_p - sum_{o != 0} coef_nbr[:, :, o] dst_{p -+ o}, BLOCK_B samples.

        Not transposed: diagonals d = 0 .. H+W-2, neighbours at p - o (forward substitution).
        Transposed: diagonals in reverse, neighbours at p + o (back-substitution for T^-T).
        Rows of a tile: (sample, pixel of the diagonal); columns: channels. The channel mixing of
        each tap is one [rows, C] x [C, C] product."""
        hw = H * W
        rows = tl.arange(0, BLOCK_B * BLOCK_P)
        b = tl.program_id(0) * BLOCK_B + rows // BLOCK_P
        lane_p = rows % BLOCK_P
        lane_c = tl.arange(0, BLOCK_C)
        c_ok = lane_c < C
        channel_at = (b * C)[:, None] * hw + lane_c[None, :] * hw  # [rows, C]
        # Coefficient tiles are read transposed, [kc, c] = coef[c, kc], so z @ tile mixes channels.
        coef_at = lane_c[None, :] * C + lane_c[:, None]
        coef_ok = c_ok[:, None] & c_ok[None, :]
        for step in range(0, H + W - 1):
            if TRANSPOSED:
                d = H + W - 2 - step
            else:
                d = step
            h = tl.maximum(d - W + 1, 0) + lane_p
            w = d - h
            p_ok = (b < B) & (h < H) & (w >= 0)
            xv = tl.load(src_ptr + channel_at + (h * W + w)[:, None],
                         mask=p_ok[:, None] & c_ok[None, :], other=0.0)
            cx = tl.load(coef_x_ptr + coef_at, mask=coef_ok, other=0.0)
            acc = tl.dot(xv, cx, input_precision="ieee", out_dtype=dst_ptr.dtype.element_ty)
            for o in tl.static_range(1, K * K):
                if TRANSPOSED:
                    hh = h + o // K
                    ww = w + o % K
                else:
                    hh = h - o // K
                    ww = w - o % K
                ok = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                # Only earlier diagonals are read here: finished, see the barrier below.
                zv = tl.load(dst_ptr + channel_at + (hh * W + ww)[:, None],
                             mask=ok[:, None] & c_ok[None, :], other=0.0)
                cn = tl.load(coef_nbr_ptr + coef_at * (K * K) + o, mask=coef_ok, other=0.0)
                acc -= tl.dot(zv, cn, input_precision="ieee", out_dtype=dst_ptr.dtype.element_ty)
            tl.store(dst_ptr + channel_at + (h * W + w)[:, None], acc,
                     mask=p_ok[:, None] & c_ok[None, :])
            # The next diagonal's lanes load what other lanes of this program just stored (pixel
            # (h, w) reads (h-1, w), held by another lane). debug_barrier is a CTA-wide barrier
            # (__syncthreads on GPU) that also makes those global stores visible to the whole
            # block, so every load of diagonal d+1 sees diagonal d finished. Nothing stored on
            # d+1 was read before (reads only touch earlier diagonals): no write-after-read race.
            # Samples never read each other, so programs need no ordering between them.
            # (The interpreter runs lanes in lockstep, so tests cannot catch a missing barrier.)
            tl.debug_barrier()

    @triton.jit
    def conv_kernel(
        z_ptr, k_ptr, x_ptr, C, H, W,
        K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        """x[c, p] = sum_{kc, o} K[c, kc, o] z[kc, p - o]; one program per (sample, pixel block)."""
        b = tl.program_id(0)
        hw = H * W
        p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        lane_c = tl.arange(0, BLOCK_C)
        p_ok = p < hw
        c_ok = lane_c < C
        h = p // W
        w = p % W
        channel_at = (b * C + lane_c[None, :]) * hw
        coef_at = lane_c[None, :] * C + lane_c[:, None]  # [kc, c] = K[c, kc]
        coef_ok = c_ok[:, None] & c_ok[None, :]
        acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=x_ptr.dtype.element_ty)
        for o in tl.static_range(0, K * K):
            hh = h - o // K
            ww = w - o % K
            ok = p_ok & (hh >= 0) & (ww >= 0)
            zv = tl.load(z_ptr + channel_at + (hh * W + ww)[:, None],
                         mask=ok[:, None] & c_ok[None, :], other=0.0)
            kv = tl.load(k_ptr + coef_at * (K * K) + o, mask=coef_ok, other=0.0)
            acc += tl.dot(zv, kv, input_precision="ieee", out_dtype=x_ptr.dtype.element_ty)
        tl.store(x_ptr + channel_at + p[:, None], acc, mask=p_ok[:, None] & c_ok[None, :])

    @triton.jit
    def dw_kernel(
        z_ptr, y_ptr, out_ptr, B, C, H, W,
        K: tl.constexpr, UNIT_DIAGONAL: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr,
    ):
        """out[c, kc, o] = -sum_{b, p} y[b, c, p] z[b, kc, p - o], zero on masked centre taps.

        One program per offset o, reducing over (sample, pixel) in blocks of BLOCK_N as
        [C, N] x [N, C] products: no atomics, so the result is deterministic."""
        o = tl.program_id(0)
        i = o // K
        j = o % K
        hw = H * W
        lane_n = tl.arange(0, BLOCK_N)
        lane_c = tl.arange(0, BLOCK_C)
        c_ok = lane_c < C
        acc = tl.zeros((BLOCK_C, BLOCK_C), dtype=out_ptr.dtype.element_ty)
        for start in range(0, B * hw, BLOCK_N):
            n = start + lane_n
            n_ok = n < B * hw
            b = n // hw
            p = n % hw
            hh = p // W - i
            ww = p % W - j
            ok = n_ok & (hh >= 0) & (ww >= 0)
            channel_at = (b[:, None] * C + lane_c[None, :]) * hw  # [N, C]
            zv = tl.load(z_ptr + channel_at + (hh * W + ww)[:, None],
                         mask=ok[:, None] & c_ok[None, :], other=0.0)
            yv = tl.load(y_ptr + channel_at + p[:, None],
                         mask=n_ok[:, None] & c_ok[None, :], other=0.0)
            acc += tl.dot(tl.trans(yv), zv, input_precision="ieee",
                          out_dtype=out_ptr.dtype.element_ty)
        # Centre tap: only kc < c (unit diagonal) or kc <= c is a learnable weight.
        c_row = lane_c[:, None]
        kc_col = lane_c[None, :]
        if UNIT_DIAGONAL:
            learnable = (o != 0) | (kc_col < c_row)
        else:
            learnable = (o != 0) | (kc_col <= c_row)
        total = tl.where(learnable, -acc, 0.0)
        tl.store(out_ptr + (c_row * C + kc_col) * (K * K) + o, total,
                 mask=c_ok[:, None] & c_ok[None, :])

    return wavefront_kernel, conv_kernel, dw_kernel


def _output(like: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is None:
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    if out.shape != like.shape or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous tensor of shape {tuple(like.shape)}")
    return out


def _channel_block(channels: int) -> int:
    return max(MIN_DOT, _next_power_of_2(channels))  # tl.dot needs every dimension >= 16


def default_samples_per_program(x: torch.Tensor) -> int:
    """Samples one solve program handles. On a GPU one per program (programs run in parallel);
    under the CPU interpreter, programs run one after another, so all samples go in one."""
    return 1 if x.is_cuda else _next_power_of_2(x.shape[0])


def _wavefront(src, coef_x, coef_nbr, transposed: bool, out, samples_per_program):
    batch, channels, height, width = src.shape
    k = coef_nbr.shape[-1]
    dst = _output(src, out)
    block_b = samples_per_program or default_samples_per_program(src)
    block_p = _next_power_of_2(min(height, width))
    block_p = max(block_p, -(-MIN_DOT // block_b))  # tile rows block_b * block_p >= 16
    wavefront_kernel, _, _ = _kernels()
    wavefront_kernel[(-(-batch // block_b),)](
        src.contiguous(), dst, coef_x.contiguous(), coef_nbr.contiguous(),
        batch, channels, height, width,
        K=k, TRANSPOSED=transposed, BLOCK_B=block_b, BLOCK_P=block_p,
        BLOCK_C=_channel_block(channels),
    )
    return dst


def solve(
    x: torch.Tensor,
    kernel: torch.Tensor,
    out: torch.Tensor | None = None,
    samples_per_program: int | None = None,
) -> torch.Tensor:
    """``z = T(K)^-1 x`` (B, C, H, W). Coefficients ``L^-1`` and ``L^-1 K_o`` are folded once."""
    inverse = centre_inverse(kernel)
    coef_nbr = torch.einsum("cm,mkij->ckij", inverse, kernel)
    return _wavefront(x, inverse, coef_nbr, False, out, samples_per_program)


def dy(
    g: torch.Tensor,
    kernel: torch.Tensor,
    out: torch.Tensor | None = None,
    samples_per_program: int | None = None,
) -> torch.Tensor:
    """``y = T(K)^-T g``: ``y_q = L^-T g_q - sum_o (L^-T K_o^T) y_{q+o}``, diagonals reversed."""
    inverse_t = centre_inverse(kernel).T
    coef_nbr = torch.einsum("cm,kmij->ckij", inverse_t, kernel)
    return _wavefront(g, inverse_t, coef_nbr, True, out, samples_per_program)


def conv(z: torch.Tensor, kernel: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x = T(K) z``, the causal convolution (centre tap entries ``kc > c`` ignored)."""
    batch, channels, height, width = z.shape
    k = kernel.shape[-1]
    kernel = kernel.clone()
    kernel[:, :, 0, 0] = torch.tril(kernel[:, :, 0, 0])
    x = _output(z, out)
    block_p = min(128, max(MIN_DOT, _next_power_of_2(height * width)))
    _, conv_kernel, _ = _kernels()
    grid = (batch, -(-height * width // block_p))
    conv_kernel[grid](
        z.contiguous(), kernel.contiguous(), x, channels, height, width,
        K=k, BLOCK_P=block_p, BLOCK_C=_channel_block(channels),
    )
    return x


def dw(
    z: torch.Tensor,
    y: torch.Tensor,
    kernel_size: int,
    unit_diagonal: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """dL/dweight of ``z = T(K)^-1 x`` given ``z`` and ``y = T^-T dL/dz``: ``-corr(z, y)`` on the
    learnable taps, 0 on the masked ones. Shape (C, C, k, k)."""
    batch, channels, height, width = z.shape
    k = kernel_size
    shape = (channels, channels, k, k)
    if out is None:
        out = torch.empty(shape, device=z.device, dtype=z.dtype)
    elif out.shape != shape or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous tensor of shape {shape}")
    _, _, dw_kernel = _kernels()
    dw_kernel[(k * k,)](
        z.contiguous(), y.contiguous(), out, batch, channels, height, width,
        K=k, UNIT_DIAGONAL=unit_diagonal,
        BLOCK_N=min(256, max(MIN_DOT, _next_power_of_2(batch * height * width))),
        BLOCK_C=_channel_block(channels),
    )
    return out
