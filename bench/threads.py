"""Benchmark: zoo's training step at train.threads auto / 1 / 2, alone and beside a competing
torch process on the same cores.

For each recipe (default ``glow_mnist_small`` and ``realnvp_moons``) one process builds the
recipe's model, data, gradient mode and optimizer as ``zoo run`` does, and times training steps
(loss, backward, gradient clipping, Adam) in blocks of ``--steps``; the thread settings take
turns block by block (``torch.set_num_threads`` between blocks), so that a change of load falls
on every setting alike. ``auto`` is what ``zoo.train.pick_threads`` chooses for the model.

Two conditions: ``quiet`` (nothing else started by the benchmark; other users of the machine
are not controlled, so the load average is recorded) and ``contended``: a second process runs
2-thread 512 x 512 float32 matrix products non-stop on the same cores, as another torch job
with torch's default threads would (``--competitor-threads`` changes that).

Prints a table (median ms per step and the quartiles) and writes ``bench/results/threads.json``.
Run: ``python bench/threads.py [--recipes ...] [--steps 10] [--blocks 6]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# The zoo of this checkout, not whichever one is installed (the script runs from bench/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results" / "threads.json"
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
SETTINGS = ("auto", "1", "2")

COMPETITOR = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(512, 512)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ a)
"""


def trainer(name: str):
    """A function running one of ``zoo run``'s training steps on the recipe, and its model."""
    import zoo
    from zoo import assemble
    from zoo.data import first_tensor

    recipe = zoo.load_recipe(RECIPES_DIR / f"{name}.yaml")
    dataset = assemble.build_dataset(recipe)
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits)
    batch = recipe.loader["batch_size"]
    data = torch.stack([first_tensor(dataset.train[i]) for i in range(min(len(dataset.train), 8 * batch))])
    batches = list(data.split(batch))
    model.initialize(batches[0])
    mode, loss_fn = assemble.build_gradient_mode(recipe), assemble.build_loss(recipe)
    mode.prepare(model)
    optimizer = assemble.build_optimizer(model, recipe.train)
    clip = recipe.train.get("grad_clip_norm")
    model.train()

    def step(i: int) -> None:
        loss = mode.loss(model, batches[i % len(batches)], loss_fn)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip), foreach=True)
        optimizer.step()

    return step, model


def measure(name: str, steps: int, blocks: int) -> dict:
    from zoo.train import pick_threads

    step, model = trainer(name)
    threads = {setting: pick_threads(setting if setting == "auto" else int(setting), model)
               for setting in SETTINGS}
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for setting in SETTINGS:  # warm-up: first-call costs of each thread count
        torch.set_num_threads(threads[setting])
        step(0)
    for block in range(blocks):
        order = SETTINGS[block % 3:] + SETTINGS[: block % 3]
        for setting in order:
            torch.set_num_threads(threads[setting])
            for i in range(steps):
                start = time.perf_counter()
                step(i)
                times[setting].append(1e3 * (time.perf_counter() - start))
    out = {"parameters": sum(p.numel() for p in model.parameters()), "auto_threads": threads["auto"]}
    for setting, values in times.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        out[setting] = {"threads": threads[setting], "median_ms": median, "q1_ms": q1, "q3_ms": q3}
    return out


def start_competitor(threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(threads)], stdout=subprocess.PIPE,
                            text=True, env=env)
    proc.stdout.readline()  # "ready": torch imported, the loop about to run
    time.sleep(1.0)
    return proc


def run_child(name: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name,
               "--steps", str(args.steps), "--blocks", str(args.blocks)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/threads.py: {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    lines = ["| recipe | parameters | condition | auto (threads) | 1 thread | 2 threads |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, conditions in results.items():
        for condition, row in conditions.items():
            cells = [f"{row[s]['median_ms']:.1f} ({row[s]['q1_ms']:.0f}-{row[s]['q3_ms']:.0f})" for s in SETTINGS]
            cells[0] += f" [{row['auto_threads']}]"
            lines.append(f"| {name} | {row['parameters']:,} | {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", default=["glow_mnist_small", "realnvp_moons"])
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--blocks", type=int, default=6, help="blocks per setting (they take turns)")
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--conditions", nargs="*", default=["quiet", "contended"], choices=["quiet", "contended"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.blocks)))
        return 0
    results: dict = {name: {} for name in args.recipes}
    loads = {}
    for condition in args.conditions:
        competitor = start_competitor(args.competitor_threads) if condition == "contended" else None
        try:
            loads[condition] = os.getloadavg()[0]
            for name in args.recipes:
                results[name][condition] = run_child(name, args)
                print(f"{name} {condition}: done", flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    report = {
        "what": "median ms per training step (quartiles) at train.threads auto / 1 / 2",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "torch": torch.__version__, "steps_per_block": args.steps, "blocks": args.blocks,
        "competitor": f"a process of {args.competitor_threads}-thread 512x512 matmuls",
        "load_average_at_start": loads, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
