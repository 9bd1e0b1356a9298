"""Benchmark: where ``glow_mnist_small``'s training step goes, and what its coupling networks cost.

Three measurements, one process, one thread by default (``--threads``):

1. **The step, and what its coupling networks cost.** zoo's Glow-small (the model of
   ``bench/glow_vs_normflows.py``), median training step as zoo runs it, interleaved in two
   pairs: against the networks' last convolution through oneDNN (``F.conv2d``) instead of zoo's
   matrix-product form (``zoo/plugins/_few_outputs_conv.py``), which is that lever's gain; and
   against every network replaced by a stand-in that returns its (zero) output at no cost,
   which leaves the rest of the step: actnorm, the 1x1 convolutions, the couplings'
   arithmetic, the split prior and Adam.
2. **One coupling network, four ways** (forward and backward, at the shapes the model feeds it,
   found by hooks): NCHW; channels-last through oneDNN; zoo's (channels-last, the last 3x3
   convolution as one product to 9 Cout planes and nine shifted adds where 9 Cout <= width);
   and the first 3x3 convolution as a product too (an im2col only 9 Cin wide), which zoo does
   not use. Each way is checked against ``F.conv2d`` in float64 (the output and every gradient)
   before it is timed.
3. **The matmul bound.** The networks' floating-point operations in a step (each product's
   forward, weight gradient and input gradient) over the rate of this CPU's matmul at the model's
   largest product: what the networks would cost at the matmul's speed with nothing else.

Prints the tables and writes ``bench/results/coupling_net.json``.
Run: ``python bench/coupling_net.py [--reps 10] [--threads 1]`` (``--smoke``: tiny sizes, to check
that it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "coupling_net.json"
# The zoo of this checkout, not whichever one is installed; bench/peers.py builds the model.
sys.path[:0] = [str(HERE), str(HERE.parent)]

import peers  # noqa: E402
from zoo.plugins._few_outputs_conv import add_shifted, few_outputs_conv3x3, shifted_copies  # noqa: E402


def medians(timings: dict) -> dict[str, float]:
    """{name: median ms} of a ``peers.interleaved`` result."""
    return {name: round(timing["median"], 3) for name, timing in timings.items()}


# --- a 3x3 convolution from few channels as a product (measured, not used by zoo) ----------------


class FewInputsConv(torch.autograd.Function):
    """3x3 convolution (padding 1) from few channels: an im2col only 9 Cin wide (channel-planar)
    and one product whose result is the channels-last output. zoo does not use it: the network's
    first convolution is no faster this way in the model (the table's "matmul, both" column)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        n, cin, h, w = x.shape
        cols = shifted_copies(x.permute(1, 0, 2, 3), 1).reshape(9 * cin, -1)
        flat_weight = weight.permute(2, 3, 1, 0).reshape(9 * cin, -1)
        y = torch.addmm(bias, cols.t(), flat_weight)
        ctx.save_for_backward(cols, flat_weight)
        ctx.dims = (n, cin, h, w)
        return y.view(n, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        cols, flat_weight = ctx.saved_tensors
        n, cin, h, w = ctx.dims
        g = grad.permute(0, 2, 3, 1).reshape(n * h * w, -1)
        grad_weight = torch.mm(cols, g).view(3, 3, cin, -1).permute(3, 2, 0, 1)
        grad_cols = torch.mm(flat_weight, g.t()).view(9, cin, n, h, w)
        grad_x = add_shifted(grad.new_zeros(cin, n, h, w), grad_cols, -1)
        return grad_x.permute(1, 0, 2, 3), grad_weight, g.sum(0)


# --- one coupling network, four ways ------------------------------------------------------------


def network_weights(cin, width, cout, dtype, generator):
    def draw(*shape):
        return (torch.randn(*shape, generator=generator, dtype=dtype) * 0.1).requires_grad_()
    return [draw(width, cin, 3, 3), draw(width), draw(width, width, 1, 1), draw(width),
            draw(cout, width, 3, 3), draw(cout)]


def run_network(way: str, x, weights):
    w1, b1, w2, b2, w3, b3 = weights
    if way == "nchw":
        x = x.contiguous()  # oneDNN keeps the layout it is given, so NCHW must be asked for
        h = F.relu(F.conv2d(x, w1, b1, padding=1))
        return F.conv2d(F.relu(F.conv2d(h, w2, b2)), w3, b3, padding=1)
    x = x.contiguous(memory_format=torch.channels_last)
    first = FewInputsConv.apply(x, w1, b1) if way == "matmul" else F.conv2d(x, w1, b1, padding=1)
    hidden = F.relu(F.conv2d(F.relu(first), w2, b2))
    if way == "nhwc":
        return F.conv2d(hidden, w3, b3, padding=1)
    return few_outputs_conv3x3(hidden, w3, b3)  # what zoo runs on the CPU where 9 Cout <= width


WAYS = ("nchw", "nhwc", "zoo", "matmul")


def exactness(shape, width, cout) -> dict[str, float]:
    """Largest difference from F.conv2d (NCHW) in float64 over the output and every gradient."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, *shape, generator=generator, dtype=torch.float64)
    weights = network_weights(shape[0], width, cout, torch.float64, generator)
    upstream = torch.randn(2, cout, *shape[1:], generator=generator, dtype=torch.float64)
    results = {}
    for way in WAYS:
        xi = x.clone().requires_grad_()
        y = run_network(way, xi, weights)
        grads = torch.autograd.grad(y, [xi, *weights], upstream)
        results[way] = [y.detach(), *grads]
    return {way: max((a - b).abs().max().item() for a, b in zip(results[way], results["nchw"]))
            for way in WAYS}


def time_network(batch, shape, width, cout, reps) -> dict[str, float]:
    """Median ms of forward and backward of the network, each way, interleaved."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weights = network_weights(shape[0], width, cout, torch.float32, generator)
    upstream = torch.randn(batch, cout, *shape[1:], generator=generator)
    # peers.interleaved: the ways take turns in an order that rotates every repetition
    return medians(peers.interleaved({way: way for way in WAYS},
                                     lambda way, i: run_network(way, x, weights).backward(upstream), reps, 2))


# --- the step, with and without its coupling networks ------------------------------------------


def coupling_networks(model):
    from zoo.plugins.layers_glow import CouplingNet
    return [m for m in model.modules() if isinstance(m, CouplingNet)]


def network_shapes(model, first) -> list[tuple[tuple[int, ...], int, int]]:
    """(input shape per sample, width, output channels) of each coupling network, by hooks."""
    shapes, hooks = [], []
    for net in coupling_networks(model):
        width, cout = net[0].out_channels, net[-1].layer.out_channels
        hooks.append(net.register_forward_pre_hook(
            lambda module, args, width=width, cout=cout: shapes.append((tuple(args[0].shape[1:]), width, cout))))
    with torch.no_grad():
        model.eval()
        model(first)
    for hook in hooks:
        hook.remove()
    return shapes


def stand_in(net):
    """A forward that returns the network's output at initialisation (zeros) at no cost, still
    connected to a parameter so that backward and Adam run as before."""
    cout, bias = net[-1].layer.out_channels, net[-1].layer.bias

    def forward(x):
        return x.new_zeros((x.shape[0], cout) + tuple(x.shape[2:])) + 0.0 * bias.view(1, -1, 1, 1)
    return forward


def step_breakdown(side, batch, reps) -> dict[str, float]:
    """Two interleaved pairs: zoo against its last convolutions by oneDNN, and zoo against the
    networks' stand-ins. Pairs, not one rotation of three: in a rotation each variant always
    follows the same one, and the step right after the stand-ins' was up to 10% off."""
    import zoo.plugins._few_outputs_conv as few_outputs

    nets, pays_off = coupling_networks(side.module), few_outputs.pays_off

    def step_as(variant, i):
        # Switching is 16 attribute writes, microseconds inside a step of 150 ms.
        few_outputs.pays_off = pays_off if variant == "zoo" else (lambda x, weight: False)
        for net in nets:
            if variant == "without networks":
                net.forward = stand_in(net)
            else:
                net.__dict__.pop("forward", None)  # the class's forward again
        side.step(batch)

    def pair(*variants):
        return medians(peers.interleaved({variant: variant for variant in variants}, step_as, reps, 2))

    try:
        lever, networks = pair("zoo", "last convolution by oneDNN"), pair("zoo", "without networks")
    finally:
        few_outputs.pays_off = pays_off
        for net in nets:
            net.__dict__.pop("forward", None)
    cost = networks["zoo"] - networks["without networks"]
    return {"step_ms": networks["zoo"], "without_networks_ms": networks["without networks"],
            "networks_ms": round(cost, 3), "networks_share": round(cost / networks["zoo"], 3),
            "step_beside_onednn_ms": lever["zoo"], "last_conv_onednn_ms": lever["last convolution by oneDNN"]}


# --- the matmul bound ---------------------------------------------------------------------------


def network_flops(batch, shape, width, cout) -> int:
    """Floating-point operations of one network's forward and backward: every product's forward,
    its weight gradient and its input gradient (the first convolution's included: its input is
    the coupling's other half, which needs the gradient)."""
    positions = batch * shape[1] * shape[2]
    macs = positions * (9 * shape[0] * width + width * width + 9 * width * cout)
    return 2 * 3 * macs


def matmul_rate(rows, width, reps) -> float:
    """GFLOP/s of a (rows x width) @ (width x width) product, the model's largest."""
    a, b = torch.randn(rows, width), torch.randn(width, width)
    ms = peers.interleaved({"matmul": None}, lambda _, i: a @ b, reps, 2)["matmul"]["median"]
    return 2 * rows * width * width / ms / 1e6


# --- main --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = dict(peers.SMOKE if args.smoke else peers.FULL)
    reps = 2 if args.smoke else args.reps
    torch.manual_seed(0)
    batch = peers.batches("Glow-small", size, 1)[0]
    side = peers.zoo_side("Glow-small", size, batch)

    breakdown = step_breakdown(side, batch, reps)
    print(f"\nzoo Glow-small, batch {len(batch)}, {args.threads} thread(s), median of {reps} (ms)\n")
    print("| pair | zoo's step | the other | difference |")
    print("| --- | --- | --- | --- |")
    print(f"| last convolutions by oneDNN | {breakdown['step_beside_onednn_ms']:.1f} | "
          f"{breakdown['last_conv_onednn_ms']:.1f} | "
          f"{breakdown['last_conv_onednn_ms'] - breakdown['step_beside_onednn_ms']:+.1f} |")
    print(f"| without the coupling networks | {breakdown['step_ms']:.1f} | "
          f"{breakdown['without_networks_ms']:.1f} | {breakdown['networks_ms']:.1f} "
          f"({breakdown['networks_share']:.0%} of the step: the networks) |")

    every = network_shapes(side.module, batch)
    distinct = sorted(set(every), key=lambda s: -s[0][1])  # the largest image first
    counts = {shape: every.count(shape) for shape in distinct}
    networks = []
    print("\n| network input | width | out | count | NCHW | NHWC, oneDNN | zoo | matmul, both | largest float64 error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape, width, cout in distinct:
        ms = time_network(len(batch), shape, width, cout, reps)
        error = exactness(shape, width, cout)
        networks.append({"input": list(shape), "width": width, "out": cout, "count": counts[(shape, width, cout)],
                         "ms": ms, "float64_error": error,
                         "flops": network_flops(len(batch), shape, width, cout)})
        print(f"| {'x'.join(map(str, shape))} | {width} | {cout} | {counts[(shape, width, cout)]} | "
              f"{ms['nchw']:.2f} | {ms['nhwc']:.2f} | {ms['zoo']:.2f} | {ms['matmul']:.2f} | "
              f"{max(error.values()):.1e} |")

    largest = networks[0]
    rows = len(batch) * largest["input"][1] * largest["input"][2]
    rate = matmul_rate(rows, largest["width"], reps * 5)
    step_flops = sum(n["flops"] * n["count"] for n in networks)
    as_measured = sum(n["ms"]["zoo"] * n["count"] for n in networks)
    bound = {"step_gflop": round(step_flops / 1e9, 3), "matmul_gflops": round(rate, 1),
             "networks_at_matmul_rate_ms": round(step_flops / rate / 1e6, 2),
             "networks_zoo_ms": round(as_measured, 2),
             "step_at_matmul_rate_ms": round(breakdown["without_networks_ms"] + step_flops / rate / 1e6, 2)}
    print(f"\nThe networks' products: {bound['step_gflop']:.2f} GFLOP a step; this CPU's {rows} x "
          f"{largest['width']} x {largest['width']} matmul: {rate:.0f} GFLOP/s, so "
          f"{bound['networks_at_matmul_rate_ms']:.1f} ms at that rate against "
          f"{bound['networks_zoo_ms']:.1f} ms measured (zoo's way, the networks alone); a step with "
          f"the networks at matmul speed: {bound['step_at_matmul_rate_ms']:.1f} ms.")

    report = {
        "benchmark": "coupling_net", "smoke": args.smoke, "threads": args.threads, "reps": reps,
        "batch": len(batch), "torch": torch.__version__, "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
        "step": breakdown, "networks": networks, "bound": bound,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
