"""Benchmark: zoo's ``glow_mnist_small`` against normflows' Glow of the same size, in one process.

zoo: the recipe's layers (2 levels x 8 steps of actnorm, LU 1x1 convolution, affine coupling of
width 64, Glow's split prior) without the preamble; normflows: ``MultiscaleFlow`` of
``GlowBlock(hidden=64)`` with the same levels and steps (``bench/peers.py`` builds both). Both
get the same batches of 64 embedded MNIST digits in logit space. Measured, interleaved (each
repetition runs both, in alternating order), medians: a training step (loss, backward, Adam),
``log_prob`` of a batch without gradients, and drawing 64 samples. ``--compile`` runs zoo's model
through ``torch.compile`` as ``train.compile: true`` does (zoo.precision.compiled: the training
forward; log_prob without gradients and sampling stay eager).

Prints the table with the ratio zoo / normflows (the target is <= 0.5) and writes
``bench/results/glow_vs_normflows.json``.
Run: ``python bench/glow_vs_normflows.py [--reps 20] [--threads 2] [--compile]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import platform
from pathlib import Path

import torch

# The zoo of this checkout, not whichever one is installed (the script runs from bench/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "glow_vs_normflows.json"


def peers_module():
    spec = importlib.util.spec_from_file_location("bench_peers", HERE / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="zoo's model through torch.compile")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peers = peers_module()
    size = dict(peers.FULL)
    torch.manual_seed(0)
    data = peers.batches("Glow-small", size, 8)
    sides = {"zoo": peers.zoo_side("Glow-small", size, data[0]), "normflows": peers.normflows_side("Glow-small", size)}
    if sides["normflows"] is None:
        raise SystemExit("bench/glow_vs_normflows.py needs normflows: pip install 'zoo-flows[peers]'")
    if args.compile:
        from zoo.precision import compiled

        zoo_side = sides["zoo"]
        fast = compiled(zoo_side.module)
        zoo_side.loss = lambda x: -fast.log_prob(x).mean()
    for side in sides.values():
        side.step(data[0])
    timings = {
        "step_ms": peers.interleaved(sides, lambda s, i: s.step(data[i % len(data)]), args.reps, 3),
        "log_prob_ms": peers.interleaved(sides, lambda s, i: s.log_prob(data[i % len(data)]), args.reps, 2),
        "sample_ms": peers.interleaved(sides, lambda s, i: s.sample(64), args.reps, 2),
    }
    rows = {}
    for key, result in timings.items():
        rows[key] = {name: result[name] for name in sides}
        rows[key]["ratio"] = result["zoo"]["median"] / result["normflows"]["median"]
    report = {
        "what": "glow_mnist_small (no preamble) vs normflows' Glow of the same size, batch 64, medians",
        "parameters": {name: side.parameters for name, side in sides.items()},
        "threads": args.threads, "reps": args.reps, "compile": args.compile,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]},
        "torch": torch.__version__, "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"parameters zoo {sides['zoo'].parameters:,} / normflows {sides['normflows'].parameters:,}; "
          f"{args.threads} threads{'; zoo compiled' if args.compile else ''}")
    print("| measure | zoo ms | normflows ms | zoo / normflows |\n| --- | --- | --- | --- |")
    for key, row in rows.items():
        print(f"| {key[:-3]} | {row['zoo']['median']:.1f} | {row['normflows']['median']:.1f} | {row['ratio']:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
