"""Benchmark: the inverse of a causal convolution (Inverse-Flow, arXiv 2410.14634), four ways.

For each image shape, batch 64 (``--quick``: batch 16, fewer shapes and repeats), float32:

- ``dense``: the (CHW x CHW) matrix built by one batched convolution of the identity, then
  ``solve_triangular``. A training step pays the build each time the weights change, so its
  forward+backward is build + solve + their backward.
- ``loop``: forward substitution pixel by pixel in Python (only small images: it is slow).
- ``wavefront``: the PyTorch twin, H + W - 1 anti-diagonal steps (``zoo.kernels.wavefront``).
- ``conv``: plain ``F.conv2d`` of the same shape, forward+backward: the floor.
- ``triton``: the Triton kernels, when CUDA is available.

Times are medians in milliseconds. Prints a table and writes ``bench/results/inverse_conv.json``.
Run: ``python bench/inverse_conv.py [--quick] [--kernel-size 2] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.kernels import wavefront
from zoo.kernels.inverse_conv import dense_matrix, dense_solve, inverse_conv, triton_available

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64), (12, 16, 16), (48, 8, 8)]
QUICK_SHAPES = [(1, 28, 28), (3, 32, 32), (12, 16, 16)]
DENSE_MAX_DIM = 4096  # CHW above this, the matrix (and the identity batch) take >= 0.6 GB each
LOOP_MAX_PIXELS = 28 * 28
RESULTS = Path(__file__).parent / "results" / "inverse_conv.json"


def median_ms(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def loop_solve(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Forward substitution one pixel at a time, raster order (the baseline being avoided)."""
    _, _, height, width = x.shape
    k = kernel.shape[-1]
    inverse = wavefront.centre_inverse(kernel)
    z: dict[tuple[int, int], torch.Tensor] = {}  # pixel -> (B, C); no in-place writes (autograd)
    for h in range(height):
        for w in range(width):
            r = x[:, :, h, w]
            for i in range(min(k, h + 1)):
                for j in range(min(k, w + 1)):
                    if (i, j) != (0, 0):
                        r = r - z[h - i, w - j] @ kernel[:, :, i, j].T
            z[h, w] = r @ inverse.T
    rows = [torch.stack([z[h, w] for w in range(width)], -1) for h in range(height)]
    return torch.stack(rows, -2)


def bench_shape(shape, batch, k, repeats, device) -> dict:
    channels, height, width = shape
    torch.manual_seed(0)
    x = torch.randn(batch, *shape, device=device)
    weight = (0.01 * torch.randn(channels, channels, k, k, device=device)).requires_grad_(True)
    x_grad = x.clone().requires_grad_(True)
    row: dict = {"shape": list(shape), "batch": batch, "kernel_size": k}

    def wave_solve():
        with torch.no_grad():
            inverse_conv(x, weight, backend="torch")

    def wave_fb():
        inverse_conv(x_grad, weight, backend="torch").sum().backward()

    def conv_fb():
        F.conv2d(F.pad(x_grad, (k - 1, 0, k - 1, 0)), weight).sum().backward()

    row["wavefront_solve_ms"] = median_ms(wave_solve, repeats, device)
    row["wavefront_fwd_bwd_ms"] = median_ms(wave_fb, repeats, device)
    row["conv_fwd_bwd_ms"] = median_ms(conv_fb, repeats, device)

    n = channels * height * width
    if n <= DENSE_MAX_DIM:
        kernel = wavefront.full_kernel(weight.detach(), True)
        matrix = dense_matrix(kernel, height, width)

        def dense_build():
            with torch.no_grad():
                dense_matrix(kernel, height, width)

        def dense_only_solve():
            with torch.no_grad():
                dense_solve(x, matrix)

        def dense_fb():
            m = dense_matrix(wavefront.full_kernel(weight, True), height, width)
            dense_solve(x_grad, m).sum().backward()

        dense_repeats = max(2, repeats // 3)
        row["dense_build_ms"] = median_ms(dense_build, dense_repeats, device)
        row["dense_solve_ms"] = median_ms(dense_only_solve, dense_repeats, device)
        row["dense_fwd_bwd_ms"] = median_ms(dense_fb, dense_repeats, device)
    else:
        gigabytes = n * n * 4 / 1e9
        row["dense_skipped"] = f"CHW = {n} > {DENSE_MAX_DIM}: the matrix is {gigabytes:.1f} GB"

    if height * width <= LOOP_MAX_PIXELS:
        kernel = wavefront.full_kernel(weight.detach(), True)

        def loop_only_solve():
            loop_solve(x, kernel)

        def loop_fb():
            loop_solve(x_grad, wavefront.full_kernel(weight, True)).sum().backward()

        row["loop_solve_ms"] = median_ms(loop_only_solve, 2, device)
        row["loop_fwd_bwd_ms"] = median_ms(loop_fb, 1, device)

    if device.type == "cuda" and triton_available():

        def triton_solve():
            with torch.no_grad():
                inverse_conv(x, weight, backend="triton")

        def triton_fb():
            inverse_conv(x_grad, weight, backend="triton").sum().backward()

        row["triton_solve_ms"] = median_ms(triton_solve, repeats, device)
        row["triton_fwd_bwd_ms"] = median_ms(triton_fb, repeats, device)
    return row


COLUMNS = [
    ("dense_build_ms", "dense build"),
    ("dense_solve_ms", "dense solve"),
    ("dense_fwd_bwd_ms", "dense f+b"),
    ("loop_solve_ms", "loop solve"),
    ("loop_fwd_bwd_ms", "loop f+b"),
    ("wavefront_solve_ms", "wave solve"),
    ("wavefront_fwd_bwd_ms", "wave f+b"),
    ("conv_fwd_bwd_ms", "conv f+b"),
    ("triton_solve_ms", "triton solve"),
    ("triton_fwd_bwd_ms", "triton f+b"),
]


def print_table(rows) -> None:
    header = f"{'shape':>10} " + " ".join(f"{title:>12}" for _, title in COLUMNS)
    print(header)
    for row in rows:
        shape = "x".join(map(str, row["shape"]))
        cells = [f"{row[key]:12.2f}" if key in row else f"{'-':>12}" for key, _ in COLUMNS]
        print(f"{shape:>10} " + " ".join(cells))
    for row in rows:
        if "dense_fwd_bwd_ms" in row:
            shape = "x".join(map(str, row["shape"]))
            print(
                f"{shape}: wavefront f+b is "
                f"{row['dense_fwd_bwd_ms'] / row['wavefront_fwd_bwd_ms']:.1f}x faster than dense, "
                f"{row['wavefront_fwd_bwd_ms'] / row['conv_fwd_bwd_ms']:.1f}x the plain conv f+b"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 16, 3 shapes, few repeats")
    parser.add_argument("--kernel-size", type=int, default=2)
    # One thread by default: on a shared machine, OpenMP threads of small ops wait on each other
    # (a batch-16 conv took 100 ms with 2 threads under load, 1 ms with one).
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch, shapes, repeats = (16, QUICK_SHAPES, 3) if args.quick else (64, SHAPES, 9)
    rows = [bench_shape(s, batch, args.kernel_size, repeats, device) for s in shapes]
    print_table(rows)
    result = {
        "benchmark": "inverse_conv",
        "quick": args.quick,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
