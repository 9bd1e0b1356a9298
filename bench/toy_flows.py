"""Benchmark: zoo's 2-D flows beside zuko's and normflows' at the same sizes, on moons.

Models, 8 layers each, conditioners 64 units wide with 2 hidden layers where the library lets
one say so (parameter counts are printed, because the libraries' networks differ in detail):

- ``RealNVP``: affine couplings (zoo ``affine_coupling`` + ``reverse``; zuko ``RealNVP``;
  normflows ``AffineCouplingBlock`` + ``Permute(swap)``, its README's RealNVP);
- ``MAF``: masked affine autoregressive (zoo ``maf``; zuko ``MAF``; normflows
  ``MaskedAffineAutoregressive`` without residual blocks);
- ``NSF-AR``: autoregressive rational-quadratic splines, 8 bins (zoo ``nsf_autoregressive``;
  zuko ``NSF``; normflows ``AutoregressiveRationalQuadraticSpline``, one residual block);
- ``NSF-CL``: coupling splines, 8 bins, one half per layer (zoo ``nsf_coupling`` with
  ``both_halves: false``; zuko ``NSF(passes=2)``, its documented coupling form; normflows
  ``CoupledRationalQuadraticSpline``, one residual block). In 2-D a coupling layer and an
  autoregressive one do the same work: each transforms one feature given the other;
- ``BNAF``: block neural autoregressive flow (zoo ``bnaf``, 2 hidden layers of 64); neither
  peer has one, so theirs are dashes.

Each side trains with its library's usual step (zoo: its gradient mode ``exact`` and loss
``nll``, as ``zoo.train`` runs them; zuko: ``-flow().log_prob(x).mean()``; normflows:
``model.forward_kld(x)``), all with the same fused Adam, on the same batches of 256 moons
points. Steps are interleaved (one step of each side in turn, repeated), so load on the shared
machine falls on every side alike; the table shows medians. Sampling is the time to draw 1000
samples without gradients (normflows' ``sample`` also returns their log-density; zoo's BNAF
inverts by bisection, so its sampling is slow by construction).

Prints a table and writes ``bench/results/toy_flows.json``. Needs the peers
(``pip install 'zoo-flows[peers]'``); a missing peer gets dashes.
Run: ``python bench/toy_flows.py [--steps 300] [--sample-reps 15] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch

import zoo
from zoo import assemble
from zoo.data import first_tensor

MODELS = ("RealNVP", "MAF", "NSF-AR", "NSF-CL", "BNAF")
SIDES = ("zoo", "zuko", "normflows")
LAYERS, HIDDEN, BINS, BATCH, SAMPLES = 8, 64, 8, 256, 1000
RESULTS = Path(__file__).parent / "results" / "toy_flows.json"


class Side:
    """One library's model: its training step and its sampler."""

    def __init__(self, module: torch.nn.Module, nll: Callable[[torch.Tensor], torch.Tensor],
                 sample: Callable[[int], torch.Tensor]):
        self.module, self.nll, self.draw = module, nll, sample
        params = [p for p in module.parameters() if p.requires_grad]
        self.parameters = sum(p.numel() for p in params)
        self.optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)

    def step(self, x: torch.Tensor) -> float:
        loss = self.nll(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def sample(self) -> None:
        self.draw(SAMPLES)


# --- the three libraries ---------------------------------------------------------------------------


def zoo_layers(model: str) -> list:
    between = {"name": "reverse"}
    layer = {
        "RealNVP": {"name": "affine_coupling", "hidden": HIDDEN},
        "MAF": {"name": "maf", "hidden": HIDDEN, "depth": 2},
        "NSF-AR": {"name": "nsf_autoregressive", "n_bins": BINS, "hidden": HIDDEN, "depth": 2},
        "NSF-CL": {"name": "nsf_coupling", "n_bins": BINS, "hidden": HIDDEN, "depth": 2, "both_halves": False},
        "BNAF": {"name": "bnaf", "hidden": HIDDEN, "n_hidden": 1},  # 2 hidden layers of 64
    }[model]
    return [{"repeat": LAYERS - 1, "layers": [layer, between]}, layer]


def zoo_side(model: str, first: torch.Tensor) -> Side:
    recipe = zoo.load_recipe({
        "name": f"bench_{model.lower().replace('-', '_')}",
        "dataset": {"name": "moons", "batch_size": BATCH},
        "model": {"layers": zoo_layers(model)},
    })
    flow = zoo.build_model(recipe, shape=(2,))
    flow.initialize(first)
    mode, loss_fn = assemble.build_gradient_mode(recipe), assemble.build_loss(recipe)
    mode.prepare(flow)
    side = Side(flow, lambda x: mode.loss(flow, x, loss_fn)[0], lambda n: flow.sample(n))
    side.optimizer = assemble.build_optimizer(flow, recipe.train)  # zoo's own (fused Adam)
    return side


def zuko_side(model: str) -> Side | None:
    try:
        import zuko
    except ImportError:
        return None
    hidden = (HIDDEN, HIDDEN)
    build = {
        "RealNVP": lambda: zuko.flows.RealNVP(2, transforms=LAYERS, hidden_features=hidden),
        "MAF": lambda: zuko.flows.MAF(2, transforms=LAYERS, hidden_features=hidden),
        "NSF-AR": lambda: zuko.flows.NSF(2, transforms=LAYERS, bins=BINS, hidden_features=hidden),
        "NSF-CL": lambda: zuko.flows.NSF(2, transforms=LAYERS, bins=BINS, passes=2, hidden_features=hidden),
    }.get(model)
    if build is None:
        return None
    flow = build()
    return Side(flow, lambda x: -flow().log_prob(x).mean(), lambda n: flow().sample((n,)))


def normflows_side(model: str) -> Side | None:
    try:
        import normflows as nf
    except ImportError:
        return None

    def layer(i: int) -> list:
        if model == "RealNVP":
            net = nf.nets.MLP([1, HIDDEN, HIDDEN, 2], init_zeros=True)
            return [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(2, mode="swap")]
        if model == "MAF":
            return [nf.flows.MaskedAffineAutoregressive(2, HIDDEN, num_blocks=1, use_residual_blocks=False),
                    nf.flows.Permute(2, mode="swap")]
        if model == "NSF-AR":
            return [nf.flows.AutoregressiveRationalQuadraticSpline(2, 1, HIDDEN, num_bins=BINS),
                    nf.flows.Permute(2, mode="swap")]
        return [nf.flows.CoupledRationalQuadraticSpline(2, 1, HIDDEN, num_bins=BINS, reverse_mask=i % 2 == 1)]

    if model == "BNAF":
        return None
    flows = [f for i in range(LAYERS) for f in layer(i)]
    flow = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(2, trainable=False), flows=flows)
    return Side(flow, flow.forward_kld, lambda n: flow.sample(n))


# --- timing ----------------------------------------------------------------------------------------


def moons_batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` batches of 256 points of zoo's moons (noise 0.05), the same for every side."""
    split = assemble.build_dataset({"name": "moons_data", "dataset": {"name": "moons", "n_train": n * BATCH},
                                    "model": {"layers": [{"name": "reverse"}]}}).train
    points = torch.stack([first_tensor(split[i]) for i in range(len(split))])  # items are (x, which moon)
    generator = torch.Generator().manual_seed(seed)
    return list(points[torch.randperm(len(points), generator=generator)].split(BATCH))


def interleaved(sides: dict[str, Side], work: Callable[[Side, int], None], reps: int, warmup: int) -> dict:
    """Median and quartiles (ms) of ``work(side, i)`` per side, the sides taking turns."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(warmup + reps):
        for name, side in sides.items():
            start = time.perf_counter()
            work(side, i)
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - start))
    out = {}
    for name, values in times.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        out[name] = {"median": statistics.median(values), "q1": q1, "q3": q3}
    return out


def bench_model(model: str, batches: list[torch.Tensor], steps: int, sample_reps: int) -> dict:
    torch.manual_seed(0)
    sides = {"zoo": zoo_side(model, batches[0]), "zuko": zuko_side(model), "normflows": normflows_side(model)}
    present = {name: side for name, side in sides.items() if side is not None}
    step = interleaved(present, lambda side, i: side.step(batches[i % len(batches)]), steps, warmup=10)
    sample = interleaved(present, lambda side, i: side.sample(), sample_reps, warmup=2)
    row = {}
    for name in SIDES:
        side = sides[name]
        row[name] = None if side is None else {
            "parameters": side.parameters,
            "step_ms": step[name]["median"], "step_ms_q1": step[name]["q1"], "step_ms_q3": step[name]["q3"],
            "sample_ms_per_1000": sample[name]["median"],
            "sample_ms_q1": sample[name]["q1"], "sample_ms_q3": sample[name]["q3"],
        }
    for key in ("step_ms", "sample_ms_per_1000"):
        peers = [row[p][key] for p in ("zuko", "normflows") if row[p] is not None]
        row[f"zoo_over_fastest_peer_{key}"] = row["zoo"][key] / min(peers) if peers else None
    return row


def table(results: dict) -> str:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    head = ("| model | params zoo / zuko / normflows | ms per step zoo / zuko / normflows | zoo / fastest peer "
            "| ms per 1000 samples zoo / zuko / normflows | zoo / fastest peer |")
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for model, row in results.items():
        get = lambda key, fmt: " / ".join(cell(row[s][key] if row[s] else None, fmt) for s in SIDES)
        lines.append(
            f"| {model} | {get('parameters', ',')} | {get('step_ms', '.2f')} | "
            f"{cell(row['zoo_over_fastest_peer_step_ms'], '.2f')} | {get('sample_ms_per_1000', '.1f')} | "
            f"{cell(row['zoo_over_fastest_peer_sample_ms_per_1000'], '.2f')} |"
        )
    return "\n".join(lines)


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per side and model")
    parser.add_argument("--sample-reps", type=int, default=15, help="timed draws of 1000 samples per side")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (OMP)")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = moons_batches(64)
    results = {}
    for model in args.models:
        results[model] = bench_model(model, batches, args.steps, args.sample_reps)
        print(f"{model}: done", flush=True)
    report = {
        "what": "median ms per training step (batch 256, moons) and per 1000 samples; 8 layers, hidden 64",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": args.threads,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "versions": {"zoo": zoo.__version__, "torch": torch.__version__, "zuko": version("zuko"),
                     "normflows": version("normflows")},
        "steps": args.steps, "sample_reps": args.sample_reps, "batch": BATCH, "layers": LAYERS,
        "hidden": HIDDEN, "bins": BINS,
        "note": "one process, sides interleaved; the machine is shared, so single numbers are noisy "
                "(the quartiles are in the JSON)",
        "models": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
