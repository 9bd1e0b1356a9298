"""Benchmark: zoo's ``glow_mnist_small`` against normflows' Glow of the same size, in one process.

zoo: the recipe's layers (2 levels x 8 steps of actnorm, LU 1x1 convolution, affine coupling of
width 64, Glow's split prior) without the preamble; normflows: ``MultiscaleFlow`` of
``GlowBlock(hidden=64)`` with the same levels and steps (``bench/peers.py`` builds both). Both
get the same batches of 64 embedded MNIST digits in logit space. Measured, interleaved (each
repetition runs both, in alternating order), medians: a training step (loss, backward, Adam),
``log_prob`` of a batch without gradients, and drawing 64 samples. ``--onednn-last-conv`` runs
the coupling networks' last convolutions through ``F.conv2d`` instead of zoo's product form
(``zoo/plugins/_few_outputs_conv.py``): that lever's gain is the difference. ``--compile`` runs
zoo's model through ``torch.compile`` as ``train.compile: true`` does (zoo.precision.compiled:
the training forward; log_prob without gradients and sampling stay eager).

Each measurement runs in ``--processes`` fresh processes (default 3: single processes on an idle
machine have given normflows' step anywhere from 212 to 252 ms), and the table gives the median
over processes with the range of the per-process ratios. Prints the table with the ratio zoo / normflows (the target is
<= 0.5) and writes ``bench/results/glow_vs_normflows.json``.
Run: ``python bench/glow_vs_normflows.py [--reps 20] [--threads 2] [--processes 3] [--compile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "glow_vs_normflows.json"
# The zoo of this checkout, not whichever one is installed; bench/peers.py builds both models.
sys.path[:0] = [str(HERE), str(HERE.parent)]

import peers  # noqa: E402


MEASURES = ("step_ms", "log_prob_ms", "sample_ms")


def measure(args) -> dict:
    """One process's interleaved medians: {measure: {"zoo": {...}, "normflows": {...}}}, and the
    parameter counts."""
    torch.set_num_threads(args.threads)
    if args.onednn_last_conv:
        import zoo.plugins._few_outputs_conv as few_outputs

        few_outputs.pays_off = lambda x, weight: False
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
    return {"results": {key: {name: result[name] for name in sides} for key, result in timings.items()},
            "parameters": {name: side.parameters for name, side in sides.items()}}


def in_processes(args, argv) -> list[dict]:
    """``measure`` in ``args.processes`` fresh processes, one after another: a step's time moves
    from one process to the next (where the allocator places the buffers), so one process's
    ratio is one draw."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.processes):
            out = Path(folder) / f"{index}.json"
            subprocess.run([sys.executable, __file__, *argv, "--child", str(out)], check=True)
            runs.append(json.loads(out.read_text()))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes, each measured in full")
    parser.add_argument("--compile", action="store_true", help="zoo's model through torch.compile")
    parser.add_argument("--onednn-last-conv", action="store_true",
                        help="zoo's last 3x3 convolutions by F.conv2d, not the product form (that lever off)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.child:
        args.child.write_text(json.dumps(measure(args)))
        return 0
    runs = in_processes(args, argv)
    rows = {}
    for key in MEASURES:
        per_process = {name: [run["results"][key][name]["median"] for run in runs] for name in ("zoo", "normflows")}
        ratios = [z / n for z, n in zip(per_process["zoo"], per_process["normflows"])]
        rows[key] = {**{name: {"median": statistics.median(values), "per_process": values}
                        for name, values in per_process.items()},
                     "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}
    parameters = runs[0]["parameters"]
    report = {
        "what": "glow_mnist_small (no preamble) vs normflows' Glow of the same size, batch 64, medians "
                "over processes of each process's interleaved medians",
        "parameters": parameters, "threads": args.threads, "reps": args.reps, "processes": args.processes,
        "compile": args.compile, "onednn_last_conv": args.onednn_last_conv,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]},
        "torch": torch.__version__, "results": rows, "runs": [run["results"] for run in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"parameters zoo {parameters['zoo']:,} / normflows {parameters['normflows']:,}; "
          f"{args.threads} threads; {args.processes} processes x {args.reps} repetitions"
          f"{'; zoo compiled' if args.compile else ''}"
          f"{'; last convolutions by oneDNN' if args.onednn_last_conv else ''}")
    print("| measure | zoo ms | normflows ms | zoo / normflows | range over processes |\n| --- | --- | --- | --- | --- |")
    for key, row in rows.items():
        low, high = row["ratio_range"]
        print(f"| {key[:-3]} | {row['zoo']['median']:.1f} | {row['normflows']['median']:.1f} | "
              f"{row['ratio']:.2f} | {low:.2f}-{high:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
