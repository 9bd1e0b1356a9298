"""Benchmark: data-parallel training steps per second with 1 and N processes (zoo.distributed).

For each recipe, ``zoo run`` trains a short budget (one epoch of ``--steps`` steps, the recipe's
global ``batch_size``) as one process and as N processes under torchrun (``zoo run --nproc N``),
and reads the run's ``ms_per_batch`` (rank 0's step: loss, backward with DDP's all-reduce,
clipping, Adam; the first step left out). The global batch is the same in every row, so the
speed-up is ``ms(1) / ms(N)`` and the efficiency ``speed-up / N``. On CPU, each process has one
thread (``train.threads=1``); the one-process row with N threads is shown beside it, since that
is what one process on the same cores can do instead. On CUDA (where present) each rank has
one GPU.

The machine may be shared: the load average before and after is recorded. Prints a table and
writes ``bench/results/ddp_scaling.json``.
Run: ``python bench/ddp_scaling.py [--recipes glow_mnist_small realnvp_moons] [--steps 30] [--nproc 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "ddp_scaling.json"


def timed_run(recipe: str, processes: int, threads: int, steps: int, device: str) -> dict:
    """One short ``zoo run``; its ms per step and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        overrides = ["train.epochs=1", f"train.max_steps_per_epoch={steps}", "train.max_eval_examples=64",
                     "train.n_samples=4", "train.warmup_epochs=0", f"train.threads={threads}",
                     f"train.device={device}"]
        command = [sys.executable, "-m", "zoo", "run", recipe, *overrides, "--out", str(out), "--no-progress"]
        if processes > 1:
            command += ["--nproc", str(processes)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=tmp)
        wall = time.perf_counter() - started
        metrics = json.loads((out / "metrics.json").read_text())
    ms = metrics["ms_per_batch"]
    return {"recipe": recipe, "processes": processes, "threads_per_process": threads, "device": device,
            "ms_per_step": ms, "steps_per_s": 1000.0 / ms, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["glow_mnist_small", "realnvp_moons"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        top = args.nproc if device == "cpu" else min(args.nproc, torch.cuda.device_count())
        for recipe in args.recipes:
            base = timed_run(recipe, 1, 1, args.steps, device)
            group = [base]
            if device == "cpu" and top > 1:
                group.append(timed_run(recipe, 1, top, args.steps, device))
            for n in range(2, top + 1):
                group.append(timed_run(recipe, n, 1, args.steps, device))
            for row in group:
                row["speedup"] = base["ms_per_step"] / row["ms_per_step"]
                row["efficiency"] = row["speedup"] / row["processes"]
            rows += group
    result = {
        "benchmark": "ddp_scaling",
        "command": "python bench/ddp_scaling.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "rows": rows,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'recipe':<18} {'device':<6} {'procs':>5} {'threads':>7} {'ms/step':>8} {'steps/s':>8} "
          f"{'speed-up':>8} {'effic.':>6}")
    for r in rows:
        print(f"{r['recipe']:<18} {r['device']:<6} {r['processes']:>5} {r['threads_per_process']:>7} "
              f"{r['ms_per_step']:>8.2f} {r['steps_per_s']:>8.1f} {r['speedup']:>8.2f} {r['efficiency']:>6.2f}")
    print(f"load average before {load_before[0]:.2f}, after {result['loadavg_after'][0]:.2f}; "
          f"written to {RESULTS}")


if __name__ == "__main__":
    main()
