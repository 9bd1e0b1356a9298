"""Benchmark: where ``train.compile: true`` pays off: compile time against the step time saved.

For each recipe (default ``realnvp_moons``, ``glow_mnist_small``) a fresh child process per
setting (eager, compiled) builds the model as ``zoo run`` does (``zoo.precision.configure``),
initialises it and runs training steps (loss, backward, clipping, Adam) on one batch size, so no
recompilation for a new shape. Measured: the first step (for compiled: tracing and inductor's
C++ compilation included; the inductor cache is a fresh folder per child, so it is a cold
compile), the median of the later steps, and from both the number of steps after which
compiling has paid for itself.

Prints a table and writes ``bench/results/compile.json`` (with ``os.getloadavg()``).
Run: ``python bench/compile.py [--recipes ...] [--steps 20] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's zoo
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_steps.py

from _steps import timed_steps  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "compile.json"


def measure(name: str, compiled: bool, steps: int, threads: int) -> dict:
    import zoo
    from zoo import assemble, precision
    from zoo.data import first_tensor

    torch.set_num_threads(threads)
    recipe = zoo.load_recipe(name, overrides=[f"train.compile={str(compiled).lower()}"])
    dataset = assemble.build_dataset(recipe)
    torch.manual_seed(0)
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits)
    batch = recipe.loader["batch_size"]
    data = torch.stack([first_tensor(dataset.train[i]) for i in range(batch)])
    precision.configure(model, recipe)  # before the initialisation, as zoo run does
    model.initialize(data)
    mode = assemble.build_gradient_mode(recipe)
    mode.prepare(model)
    loss_fn = assemble.build_objective(recipe, dataset)
    optimizer = assemble.build_optimizer(model, recipe.train)
    clip = recipe.train.get("grad_clip_norm")
    times, loss = timed_steps(model, mode, data, loss_fn, optimizer, clip, steps)
    return {"recipe": name, "compile": compiled, "batch": batch, "first_step_ms": times[0],
            "ms_per_step": statistics.median(times[1:]), "last_loss": float(loss),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=["realnvp_moons", "glow_mnist_small"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # name compiled
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1] == "1", args.steps, args.threads)))
        return 0
    rows = []
    for name in args.recipes:
        pair = {}
        for flag in ("0", "1"):
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as cache:  # a cold inductor cache
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                done = subprocess.run([sys.executable, __file__, "--child", name, flag, "--steps",
                                       str(args.steps), "--threads", str(args.threads)],
                                      capture_output=True, text=True, check=True, env=env)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["load"] = load
            pair[flag] = row
            rows.append(row)
        eager, fast = pair["0"], pair["1"]
        saved = eager["ms_per_step"] - fast["ms_per_step"]
        extra = fast["first_step_ms"] - eager["first_step_ms"]
        fast["speedup"] = eager["ms_per_step"] / fast["ms_per_step"]
        fast["break_even_steps"] = math.ceil(extra / saved) if saved > 0 else None
    report = {"what": "train.compile: first step (cold compile) and later steps, eager vs compiled",
              "threads": args.threads, "steps": args.steps, "torch": torch.__version__,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| recipe | batch | compile | first step ms | later steps ms (median) | speed-up | pays off after | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        even = r.get("break_even_steps")
        even = "-" if not r["compile"] else (f"{even} steps" if even else "never")
        print(f"| {r['recipe']} | {r['batch']} | {str(r['compile']).lower()} | {r['first_step_ms']:.0f} | "
              f"{r['ms_per_step']:.1f} | {speedup} | {even} | {r['load']:.2f} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
