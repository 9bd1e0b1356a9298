"""Benchmark: zoo's flows beside normflows', zuko's and nflows' at matched sizes.

Models (parameter counts are printed, because the libraries' networks differ in detail):

- the 2-D flows of ``bench/toy_flows.py`` on moons (batch 256, 8 layers, conditioners 64 wide
  with 2 hidden layers): ``RealNVP``, ``MAF``, ``NSF-AR`` (autoregressive rational-quadratic
  splines, 8 bins), ``NSF-CL`` (coupling splines) and ``BNAF`` (zoo only: no peer has one);
- ``Glow-small``: recipe ``glow_mnist_small`` without its preamble (2 levels x 8 steps of
  actnorm, LU 1x1 convolution, affine coupling of width 64) on the embedded MNIST digits in logit
  space, batch 64. normflows: ``MultiscaleFlow`` of ``GlowBlock`` s (its README's Glow) with a
  learned per-channel prior per level; nflows: ``MultiscaleCompositeTransform`` of ``ActNorm``,
  ``OneByOneConvolution`` (LU-parameterised) and ``AffineCouplingTransform`` with the same
  conv3x3-conv1x1-zero-init conv3x3 network; zuko has no image flows (a dash).

Where a peer's own builder fixes a residual network (normflows' and nflows' splines), the
benchmark gives it the plain 2-hidden-layer network instead, from the same library, so that the
sizes match; the JSON records every count.

Measured per model and library: a training step (loss, backward, Adam), ``log_prob`` of a batch
without gradients, sampling (1000 points; 64 images), all as medians over interleaved repetitions
(each repetition runs every library once, in a rotating order, so load on the shared machine
falls on all alike); and peak memory of a training step: the rise of the process's peak resident
set (``VmHWM`` after the step, reset through ``/proc/self/clear_refs`` and ``malloc_trim`` before
it, minus ``VmRSS`` before), in MB. Resident memory, not tracemalloc: tracemalloc does not see
torch's tensor allocations. Each model runs in its own process (one subprocess per comparison),
so one library's imports and caches do not tax another model.

Prints a table, writes ``bench/results/peers.json`` and a bar chart ``bench/results/peers.png``
(matplotlib, from the ``bench`` extra). Needs the peers (``pip install 'zoo-flows[peers]'``;
nflows with ``--no-deps``); a missing peer or model gets a dash.
Run: ``python bench/peers.py [--models ...] [--reps 100] [--threads 1] [--smoke]``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

# The zoo of this checkout, not whichever one is installed (the script runs from bench/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("RealNVP", "MAF", "NSF-AR", "NSF-CL", "BNAF", "Glow-small")
SIDES = ("zoo", "normflows", "zuko", "nflows")
PEERS = SIDES[1:]
METRICS = {  # key: (column title, unit)
    "step_ms": ("training step", "ms"),
    "log_prob_ms": ("log_prob", "ms"),
    "sample_ms": ("sampling", "ms"),
    "peak_mb": ("peak memory of a step", "MB"),
}
RESULTS = Path(__file__).parent / "results" / "peers.json"

FULL = {"layers": 8, "hidden": 64, "bins": 8, "batch": 256, "samples": 1000,
        "glow_levels_steps": 8, "glow_hidden": 64, "glow_batch": 64, "glow_samples": 64,
        "reps": 100, "glow_reps": 15, "warmup": 5}
# --smoke: tiny sizes, to check that everything runs (the test), not to measure.
SMOKE = {"layers": 2, "hidden": 8, "bins": 4, "batch": 32, "samples": 50,
         "glow_levels_steps": 1, "glow_hidden": 8, "glow_batch": 8, "glow_samples": 4,
         "reps": 3, "glow_reps": 3, "warmup": 1}


class Side:
    """One library's model: its training loss, its log-density and its sampler."""

    def __init__(self, module: nn.Module, loss: Callable[[torch.Tensor], torch.Tensor],
                 log_prob: Callable[[torch.Tensor], torch.Tensor], sample: Callable[[int], Any]):
        self.module, self.loss, self.log_density, self.draw = module, loss, log_prob, sample
        params = [p for p in module.parameters() if p.requires_grad]
        self.parameters = sum(p.numel() for p in params)
        self.optimizer = torch.optim.Adam(params, lr=1e-4, fused=True)

    def step(self, x: torch.Tensor) -> None:
        self.module.train()
        loss = self.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> None:
        self.module.eval()
        self.log_density(x)

    @torch.no_grad()
    def sample(self, n: int) -> None:
        self.module.eval()
        self.draw(n)


# --- zoo ---------------------------------------------------------------------------------------


def zoo_layers(model: str, size: dict) -> list:
    if model == "Glow-small":
        step = {"repeat": size["glow_levels_steps"], "layers": [
            {"name": "actnorm"}, {"name": "conv1x1", "lu": True},
            {"name": "affine_coupling", "hidden": size["glow_hidden"]}]}
        return [{"name": "squeeze"}, step, {"name": "split"}, {"name": "squeeze"}, step]
    hidden, bins = size["hidden"], size["bins"]
    layer = {
        "RealNVP": {"name": "affine_coupling", "hidden": hidden},
        "MAF": {"name": "maf", "hidden": hidden, "depth": 2},
        "NSF-AR": {"name": "nsf_autoregressive", "n_bins": bins, "hidden": hidden, "depth": 2},
        "NSF-CL": {"name": "nsf_coupling", "n_bins": bins, "hidden": hidden, "depth": 2, "both_halves": False},
        "BNAF": {"name": "bnaf", "hidden": hidden, "n_hidden": 1},  # 2 hidden layers
    }[model]
    return [{"repeat": size["layers"] - 1, "layers": [layer, {"name": "reverse"}]}, layer]


def zoo_side(model: str, size: dict, first: torch.Tensor) -> Side:
    import zoo
    from zoo import assemble

    image = model == "Glow-small"
    recipe = zoo.load_recipe({
        "name": "bench_" + model.lower().replace("-", "_"),
        "dataset": {"name": "mnist" if image else "moons", "batch_size": len(first)},
        "model": {"layers": zoo_layers(model, size)},
    })
    flow = zoo.build_model(recipe, shape=tuple(first.shape[1:]))
    flow.initialize(first)
    mode, loss_fn = assemble.build_gradient_mode(recipe), assemble.build_loss(recipe)
    mode.prepare(flow)
    side = Side(flow, lambda x: mode.loss(flow, x, loss_fn)[0], flow.log_prob, lambda n: flow.sample(n))
    side.optimizer = assemble.build_optimizer(flow, {**recipe.train, "lr": 1e-4})  # zoo's own Adam
    return side


# --- normflows ---------------------------------------------------------------------------------


class _ConvNet(nn.Module):
    """Glow's coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3, callable
    as nflows calls it (``net(x, context)``)."""

    def __init__(self, cin: int, cout: int, hidden: int):
        super().__init__()
        last = nn.Conv2d(hidden, cout, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Conv2d(cin, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last)

    def forward(self, x, context=None):
        return self.net(x)


class _MLP(nn.Module):
    """2 hidden layers of ReLU units, callable as the spline couplings call it."""

    def __init__(self, cin: int, cout: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, cout))

    def forward(self, x, context=None):
        return self.net(x)


def normflows_glow(size: dict) -> nn.Module:
    import normflows as nf

    levels, steps, hidden = 2, size["glow_levels_steps"], size["glow_hidden"]
    flows, merges, q0 = [], [], []
    for i in range(levels):  # level 0 is the deepest (normflows lists flows latent -> data)
        channels = 2 ** (levels + 1 - i)  # 8 at 7x7, 4 at 14x14
        flows.append([nf.flows.GlowBlock(channels, hidden, split_mode="channel", scale=True)
                      for _ in range(steps)] + [nf.flows.Squeeze()])
        side = 28 // 2 ** (levels - i)
        latent = (channels if i == 0 else channels // 2, side, side)
        if i > 0:
            merges.append(nf.flows.Merge())
        q0.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def normflows_side(model: str, size: dict) -> Side | None:
    try:
        import normflows as nf
        from normflows.flows.neural_spline.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressive
        from normflows.flows.neural_spline.coupling import PiecewiseRationalQuadraticCoupling
        from normflows.utils.masks import create_alternating_binary_mask
    except ImportError:
        return None
    if model == "BNAF":
        return None
    if model == "Glow-small":
        flow = normflows_glow(size)
        return Side(flow, flow.forward_kld, lambda x: flow.log_prob(x, None), lambda n: flow.sample(n))
    hidden, bins, layers = size["hidden"], size["bins"], size["layers"]

    def layer(i: int) -> list:
        swap = nf.flows.Permute(2, mode="swap")
        if model == "RealNVP":
            return [nf.flows.AffineCouplingBlock(nf.nets.MLP([1, hidden, hidden, 2], init_zeros=True)), swap]
        if model == "MAF":
            return [nf.flows.MaskedAffineAutoregressive(2, hidden, num_blocks=1, use_residual_blocks=False), swap]
        if model == "NSF-AR":
            spline = nf.flows.AutoregressiveRationalQuadraticSpline(2, 1, hidden, num_bins=bins)
            spline.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(  # plain, not residual
                features=2, hidden_features=hidden, num_bins=bins, tails="linear", tail_bound=3,
                num_blocks=1, use_residual_blocks=False, init_identity=True)
            return [spline, swap]
        spline = nf.flows.CoupledRationalQuadraticSpline(2, 1, hidden, num_bins=bins, reverse_mask=i % 2 == 1)
        spline.prqct = PiecewiseRationalQuadraticCoupling(
            mask=create_alternating_binary_mask(2, even=i % 2 == 1), num_bins=bins, tails="linear",
            tail_bound=3.0, apply_unconditional_transform=True,
            transform_net_create_fn=lambda cin, cout: _MLP(cin, cout, hidden))
        return [spline]

    flow = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(2, trainable=False),
                              flows=[f for i in range(layers) for f in layer(i)])
    return Side(flow, flow.forward_kld, flow.log_prob, lambda n: flow.sample(n))


# --- zuko --------------------------------------------------------------------------------------


def zuko_side(model: str, size: dict) -> Side | None:
    try:
        import zuko
    except ImportError:
        return None
    hidden, layers, bins = (size["hidden"],) * 2, size["layers"], size["bins"]
    build = {
        "RealNVP": lambda: zuko.flows.RealNVP(2, transforms=layers, hidden_features=hidden),
        "MAF": lambda: zuko.flows.MAF(2, transforms=layers, hidden_features=hidden),
        "NSF-AR": lambda: zuko.flows.NSF(2, transforms=layers, bins=bins, hidden_features=hidden),
        "NSF-CL": lambda: zuko.flows.NSF(2, transforms=layers, bins=bins, passes=2, hidden_features=hidden),
    }.get(model)
    if build is None:
        return None
    flow = build()
    return Side(flow, lambda x: -flow().log_prob(x).mean(), lambda x: flow().log_prob(x),
                lambda n: flow().sample((n,)))


# --- nflows ------------------------------------------------------------------------------------


def nflows_glow(size: dict):
    from nflows import distributions, flows, transforms
    from nflows.utils import create_mid_split_binary_mask

    steps, hidden = size["glow_levels_steps"], size["glow_hidden"]
    multiscale = transforms.MultiscaleCompositeTransform(num_transforms=2, split_dim=1)
    c, h, w = 1, 28, 28
    for _ in range(2):
        squeeze = transforms.SqueezeTransform()
        c, h, w = squeeze.get_output_shape(c, h, w)
        level = [squeeze] + [transforms.CompositeTransform([
            transforms.ActNorm(c), transforms.OneByOneConvolution(c),
            transforms.AffineCouplingTransform(create_mid_split_binary_mask(c),
                                               lambda cin, cout: _ConvNet(cin, cout, hidden)),
        ]) for _ in range(steps)]
        shape = multiscale.add_transform(transforms.CompositeTransform(level), (c, h, w))
        if shape:
            c, h, w = shape
    return flows.Flow(multiscale, distributions.StandardNormal((784,)))


def nflows_side(model: str, size: dict) -> Side | None:
    try:
        from nflows import distributions, flows, transforms
        from nflows.utils import create_alternating_binary_mask
    except ImportError:
        return None
    if model == "BNAF":
        return None
    if model == "Glow-small":
        flow = nflows_glow(size)
        return Side(flow, lambda x: -flow.log_prob(x).mean(), flow.log_prob, flow.sample)
    hidden, bins, layers = size["hidden"], size["bins"], size["layers"]

    def layer(i: int) -> list:
        mask = create_alternating_binary_mask(2, even=i % 2 == 1)
        if model == "RealNVP":
            return [transforms.AffineCouplingTransform(mask, lambda cin, cout: _MLP(cin, cout, hidden))]
        if model == "MAF":
            return [transforms.MaskedAffineAutoregressiveTransform(2, hidden, num_blocks=1,
                                                                   use_residual_blocks=False),
                    transforms.ReversePermutation(2)]
        if model == "NSF-AR":
            return [transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                2, hidden, num_bins=bins, tails="linear", tail_bound=3.0, num_blocks=1,
                use_residual_blocks=False), transforms.ReversePermutation(2)]
        return [transforms.PiecewiseRationalQuadraticCouplingTransform(
            mask, lambda cin, cout: _MLP(cin, cout, hidden), num_bins=bins, tails="linear", tail_bound=3.0,
            apply_unconditional_transform=True)]

    transform = transforms.CompositeTransform([t for i in range(layers) for t in layer(i)])
    flow = flows.Flow(transform, distributions.StandardNormal((2,)))
    return Side(flow, lambda x: -flow.log_prob(x).mean(), flow.log_prob, flow.sample)


BUILDERS = {"normflows": normflows_side, "zuko": zuko_side, "nflows": nflows_side}


# --- data and measurement ----------------------------------------------------------------------


def batches(model: str, size: dict, n: int) -> list[torch.Tensor]:
    """``n`` batches, the same for every library: zoo's moons, or the embedded MNIST digits
    dequantized and in logit space (what zoo's preamble computes)."""
    from zoo import assemble
    from zoo.data import first_tensor

    image = model == "Glow-small"
    batch = size["glow_batch" if image else "batch"]
    recipe = {"name": "bench_data", "model": {"layers": [{"name": "reverse"}]},
              "dataset": {"name": "mnist", "batch_size": batch} if image
              else {"name": "moons", "n_train": n * batch}}
    split = assemble.build_dataset(recipe).train
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(split), generator=generator)[: n * batch].tolist()
    points = torch.stack([first_tensor(split[i]) for i in chosen]).float()
    if image:
        alpha = 1e-6
        u = alpha + (1 - 2 * alpha) * (points + torch.rand(points.shape, generator=generator)) / 256
        points = torch.log(u) - torch.log1p(-u)
    return list(points.split(batch))


def interleaved(sides: dict[str, Side], work: Callable[[Side, int], None], reps: int, warmup: int) -> dict:
    """Median and quartiles (ms) of ``work(side, i)`` per library, the libraries taking turns in
    an order that rotates every repetition."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(warmup + reps):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            work(sides[name], i)
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - start))
    out = {}
    for name, values in times.items():
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
        out[name] = {"median": statistics.median(values), "q1": q1, "q3": q3}
    return out


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_step_mb(side: Side, x: torch.Tensor) -> float | None:
    """The rise of the peak resident set during one training step, MB (None off Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the step's pages count
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current resident set
    except OSError:
        return None
    before = _status_kb("VmRSS")
    side.step(x)
    peak = _status_kb("VmHWM")
    return None if before is None or peak is None else (peak - before) / 1024


def measure(model: str, size: dict, sides_wanted: list[str]) -> dict:
    """Every library's numbers for one model, in this process."""
    torch.manual_seed(0)
    data = batches(model, size, 8)
    sides: dict[str, Side | None] = {}
    for name in SIDES:
        if name not in sides_wanted:
            sides[name] = None
        elif name == "zoo":
            sides[name] = zoo_side(model, size, data[0])
        else:
            sides[name] = BUILDERS[name](model, size)
    present = {name: side for name, side in sides.items() if side is not None}
    image = model == "Glow-small"
    reps, warmup = size["glow_reps" if image else "reps"], size["warmup"]
    n_samples = size["glow_samples" if image else "samples"]
    for side in present.values():  # data-dependent initialisation (actnorm) and first-call costs
        side.step(data[0])
    memory = {name: peak_step_mb(side, data[1]) for name, side in present.items()}
    timings = {
        "step_ms": interleaved(present, lambda s, i: s.step(data[i % len(data)]), reps, warmup),
        "log_prob_ms": interleaved(present, lambda s, i: s.log_prob(data[i % len(data)]), reps, warmup),
        "sample_ms": interleaved(present, lambda s, i: s.sample(n_samples), max(reps // 3, 3), 1),
    }
    row: dict[str, Any] = {}
    for name in SIDES:
        if sides[name] is None:
            row[name] = None
            continue
        row[name] = {"parameters": sides[name].parameters, "peak_mb": memory[name]}
        for key, result in timings.items():
            row[name][key] = result[name]["median"]
            row[name][key + "_q1"], row[name][key + "_q3"] = result[name]["q1"], result[name]["q3"]
    row["ratios"] = ratios(row)
    return row


def ratios(row: dict) -> dict:
    """zoo / peer for every metric and peer (None where either is missing)."""
    out = {}
    for peer in PEERS:
        for key in METRICS:
            mine, theirs = (row.get("zoo") or {}).get(key), (row.get(peer) or {}).get(key)
            out[f"zoo/{peer} {key}"] = mine / theirs if mine is not None and theirs else None
    return out


# --- the parent: one process per model, then the report ----------------------------------------


def run_child(models: list[str], args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--threads", str(args.threads),
               "--sides", *args.sides, "--models", *models] + (["--smoke"] if args.smoke else [])
    if args.reps:
        command += ["--reps", str(args.reps)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if done.returncode != 0:
        raise SystemExit(f"bench/peers.py: the process for {models} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: dict) -> str:
    head = ("| model | parameters zoo / normflows / zuko / nflows | " + " | ".join(
        f"{title} ({unit}) zoo / normflows / zuko / nflows" for title, unit in METRICS.values())
        + " | step ratio zoo / peer |")
    lines = [head, "|" + " --- |" * (2 + len(METRICS) + 1)]
    for model, row in results.items():
        def get(key, fmt):
            return " / ".join(cell(row[s][key] if row.get(s) else None, fmt) for s in SIDES)
        steps = " / ".join(cell(row["ratios"][f"zoo/{p} step_ms"], ".2f") for p in PEERS)
        lines.append(f"| {model} | {get('parameters', ',')} | {get('step_ms', '.2f')} | "
                     f"{get('log_prob_ms', '.2f')} | {get('sample_ms', '.1f')} | {get('peak_mb', '.1f')} | "
                     f"{steps} |")
    return "\n".join(lines)


def bar_chart(results: dict, path: Path) -> bool:
    """One panel per metric, a group of bars per model, one bar per library (log scale)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(results)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8))
    width = 0.8 / len(SIDES)
    for ax, (key, (title, unit)) in zip(axes, METRICS.items()):
        for k, side in enumerate(SIDES):
            values = [(results[m].get(side) or {}).get(key) for m in models]
            xs = [i + (k - 1.5) * width for i, v in enumerate(values) if v]
            ax.bar(xs, [v for v in values if v], width, label=side)
        ax.set_yscale("log")
        ax.set_xticks(range(len(models)), models, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{title} ({unit})", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle("zoo and its peers (medians; lower is better; a missing bar: no such model)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sides", nargs="*", default=list(SIDES), choices=SIDES,
                        help="the libraries to run (the others get dashes)")
    parser.add_argument("--reps", type=int, default=0, help="timed repetitions (default: 100; Glow 15)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes in one process: checks, not numbers")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON (the PNG goes beside it)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = dict(SMOKE if args.smoke else FULL)
    if args.reps:
        size["reps"] = size["glow_reps"] = args.reps
    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps({m: measure(m, size, args.sides) for m in args.models}))
        return 0
    results: dict = {}
    groups = [args.models] if args.smoke else [[m] for m in args.models]  # smoke: one process
    for models in groups:
        results.update(run_child(models, args))
        print(f"{', '.join(models)}: done", flush=True)
    report = {
        "what": "medians over interleaved repetitions: ms per training step, per log_prob of a batch, "
                "per draw of samples; MB of peak resident-set rise in a training step",
        "sizes": size, "smoke": args.smoke,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": args.threads},
        "versions": {name: version(dist) for name, dist in
                     (("zoo", "zoo-flows"), ("torch", "torch"), ("normflows", "normflows"),
                      ("zuko", "zuko"), ("nflows", "nflows"))},
        "memory": "VmHWM after one training step minus VmRSS before it (reset by /proc/self/clear_refs)",
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    png = args.out.with_suffix(".png")
    print(f"wrote {args.out}" + (f" and {png}" if bar_chart(results, png) else " (no matplotlib: no chart)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
