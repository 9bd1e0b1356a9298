"""Self Normalizing Flows, Table 1 on a short budget: every Table-1 recipe trained on the same data
for the same number of steps, then test NLL (nats, bits/dim), ms per training batch, and ms per
sample (through the learned inverse R where a model has one, and through the exact inverse: cold, as
after a weight update, and warm).

    python bench/snf_table1.py                  # embedded digits (or full MNIST if present)
    python bench/snf_table1.py --steps 200 --epochs 3 --only selfnorm_fc_mnist exact_fc_mnist

Expected relations (the paper's): self-normalized within about 1% NLL of exact at equal budget
(both converge to the same optimum; on a short budget the gap reflects speed of learning);
self-normalized faster per batch; SNF sampling much faster than exact-inverse sampling.
Writes bench/results/snf_table1.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [
    "exact_fc_mnist", "selfnorm_fc_mnist",
    "exact_cnn_mnist", "selfnorm_cnn_mnist", "emerging_cnn_mnist", "exponential_cnn_mnist",
    "conv1x1_glow_mnist", "selfnorm_glow_mnist",
]


def time_sampling(folder, n: int, exact_inverse: bool) -> tuple[float, float]:
    """ms per sample (cold, warm): cold is the first call on a freshly loaded model, which pays
    whatever an exact inverse must factorise after the weights change (as after every training
    step); warm reuses those caches."""
    from zoo.train import load_run

    _, model = load_run(folder)
    times = []
    for _ in range(2):
        torch.manual_seed(0)
        started = time.perf_counter()
        model.sample(n, exact_inverse=exact_inverse)
        times.append(1000 * (time.perf_counter() - started) / n)
    return times[0], times[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="training batches per epoch")
    parser.add_argument("--eval-examples", type=int, default=500)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "snf_table1.json"))
    args = parser.parse_args(argv)

    import zoo
    from zoo.train import load_run

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    work = ROOT / "bench" / "results" / "runs"
    for name in args.only or RECIPES:
        overrides = [
            f"train.epochs={args.epochs}", f"train.max_steps_per_epoch={args.steps}",
            f"train.max_eval_examples={args.eval_examples}", "train.warmup_epochs=0",
            f"train.n_samples={args.samples}", "train.eval_every=1",
        ]
        recipe = zoo.load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides=overrides)
        print(f"== {name}", file=sys.stderr, flush=True)
        result = zoo.run(recipe, out=work / name, progress=False, log=lambda *a: print(*a, file=sys.stderr))
        _, model = load_run(result.folder)
        has_r = any(hasattr(m, "fast_inverse") for m in model.modules())
        fast = time_sampling(result.folder, args.samples, exact_inverse=False) if has_r else (None, None)
        exact = time_sampling(result.folder, args.samples, exact_inverse=True)
        rows.append({
            "recipe": name,
            "test_nll": result.metrics["test_nll"],
            "test_bpd": result.metrics["test_bpd"],
            "ms_per_batch": result.metrics["ms_per_batch"],
            "ms_per_sample_fast": fast[0],
            "ms_per_sample_exact_cold": exact[0],
            "ms_per_sample_exact_warm": exact[1],
            "parameters": result.metrics["parameters"],
        })

    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "budget": {"epochs": args.epochs, "steps_per_epoch": args.steps, "eval_examples": args.eval_examples},
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    def fmt(v, spec):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    print("| recipe | test NLL (nats) | bits/dim | ms/batch | ms/sample via R | ms/sample exact, cold / warm |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| `{r['recipe']}` | {fmt(r['test_nll'], '.1f')} | {fmt(r['test_bpd'], '.3f')} | "
              f"{fmt(r['ms_per_batch'], '.1f')} | {fmt(r['ms_per_sample_fast'], '.2f')} | "
              f"{fmt(r['ms_per_sample_exact_cold'], '.2f')} / {fmt(r['ms_per_sample_exact_warm'], '.2f')} |")
    print(f"\n{report['date']}, {report['machine']}; budget {report['budget']}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
