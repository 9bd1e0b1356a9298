"""Benchmark: what ``train.checkpoint_grads: true`` saves in memory and costs in time.

For each recipe (default ``glow_mnist_small``, 2 levels x 8 steps, coupling width 64) and batch
size, a fresh child process per setting (plain, checkpointed) builds the model as ``zoo run``
does (``zoo.precision.configure``), initialises it on a first batch and runs training steps
(loss, backward, clipping, Adam). Measured per setting:

- ``saved_mb``: the bytes autograd keeps for the backward pass of one step (every tensor packed
  by ``torch.autograd.graph.saved_tensors_hooks`` outside the checkpointed steps: what stays
  alive between forward and backward);
- ``peak_rss_mb``: the child's peak resident memory during the steps above what it held before
  them (``resource.getrusage``, a high-water mark; allocator caching included);
- ``ms_per_step``: median wall time of a step (the recomputation's cost).

Prints a table and writes ``bench/results/checkpoint_grads.json`` (with ``os.getloadavg()``).
Run: ``python bench/checkpoint_grads.py [--recipes glow_mnist_small] [--batches 64 256]
[--steps 5] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's zoo
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_steps.py

from _steps import timed_steps  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "checkpoint_grads.json"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(name: str, batch: int, checkpointed: bool, steps: int, threads: int) -> dict:
    """One setting, in this (child) process."""
    import zoo
    from zoo import assemble, precision
    from zoo.data import first_tensor

    torch.set_num_threads(threads)
    overrides = [f"dataset.batch_size={batch}", f"train.checkpoint_grads={str(checkpointed).lower()}"]
    recipe = zoo.load_recipe(name, overrides=overrides)
    dataset = assemble.build_dataset(recipe)
    torch.manual_seed(0)
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits)
    precision.configure(model, recipe)
    data = torch.stack([first_tensor(dataset.train[i]) for i in range(batch)])
    model.initialize(data)
    mode = assemble.build_gradient_mode(recipe)
    mode.prepare(model)
    loss_fn = assemble.build_objective(recipe, dataset)
    optimizer = assemble.build_optimizer(model, recipe.train)
    clip = recipe.train.get("grad_clip_norm")

    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = mode.loss(model, data, loss_fn)
    del loss
    before = peak_rss_mb()
    times, loss = timed_steps(model, mode, data, loss_fn, optimizer, clip, steps)
    return {
        "recipe": name, "batch": batch, "checkpoint_grads": checkpointed,
        "segments": len(model.checkpoint_steps or []), "saved_mb": saved[0] / 2**20,
        "peak_rss_mb": peak_rss_mb() - before, "rss_before_mb": before,
        "ms_per_step": statistics.median(times[1:] or times), "last_loss": float(loss),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=["glow_mnist_small"])
    parser.add_argument("--batches", nargs="*", type=int, default=[64, 256])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # name batch checkpointed
    args = parser.parse_args(argv)
    if args.child:
        name, batch, flag = args.child
        print(json.dumps(measure(name, int(batch), flag == "1", args.steps, args.threads)))
        return 0
    rows = []
    for name in args.recipes:
        for batch in args.batches:
            for flag in ("0", "1"):  # a fresh process each: peak RSS is a high-water mark
                load = os.getloadavg()[0]
                done = subprocess.run([sys.executable, __file__, "--child", name, str(batch), flag,
                                       "--steps", str(args.steps), "--threads", str(args.threads)],
                                      capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["load"] = load
                rows.append(row)
    report = {
        "what": "train.checkpoint_grads: saved activations, peak RSS and step time, plain vs checkpointed",
        "threads": args.threads, "steps": args.steps, "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| recipe | batch | checkpoint_grads | saved for backward MB | peak RSS above start MB | ms per step | load |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['recipe']} | {r['batch']} | {str(r['checkpoint_grads']).lower()} | {r['saved_mb']:.1f} | "
              f"{r['peak_rss_mb']:.1f} | {r['ms_per_step']:.1f} | {r['load']:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
