"""The checks to run when a GPU is lent: kernel accuracy, inverse-convolution timings, training
steps per second (float32 and bf16 autocast) and sampling time, in one command (< 5 min on a GPU).

Sections (each a key of the JSON):

- ``kernels``: the Triton kernels ``solve``, ``dy``, ``conv``, ``dw`` and the PyTorch twin
  (``zoo.kernels.wavefront``) against the float64 dense reference (``dense_matrix``), max abs and
  relative error per kernel, at tests/test_kernels.py's shapes and at 3x64x64 and 48x8x8;
- ``inverse_conv_timing``: forward+backward ms, batch 64, of Triton, the twin, dense (only where
  its matrix fits: CHW <= 4096, so 3x64x64 is skipped and says so) and plain ``F.conv2d``;
- ``train``: steps per second of ``glow_mnist_small``, ``if_glow_mnist``, ``selfnorm_glow_mnist``
  on the embedded digits, float32 and bf16 (``train.precision: bf16`` through
  ``zoo.precision.step_autocast``, the call of ``zoo run``'s step and evaluation; the dtype the
  model's log-determinant comes out in is recorded);
- ``sampling``: ms per image of ``model.sample`` for the same recipes (float32).

``--cpu-smoke`` runs every section on the CPU at tiny shapes, 2 steps, the Triton kernels through
the interpreter (TRITON_INTERPRET=1, set before triton is imported), so tests/test_gpu_check.py
can run the script end to end. Without CUDA and without ``--cpu-smoke`` it says so, writes a
JSON recording "no CUDA device" and exits 0.

Run: ``python bench/gpu_check.py [--cpu-smoke] [--out bench/results/gpu_check.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "gpu_check.json"

# tests/test_kernels.py's shapes (batch, channels, height, width, kernel size), then the sizes of
# the issue; the smoke run keeps two of the test's and shrinks the large ones.
KERNEL_SHAPES = [
    (1, 1, 3, 5, 2), (7, 3, 4, 3, 2), (2, 4, 5, 4, 3), (7, 1, 4, 6, 3), (1, 3, 2, 2, 3),
    (4, 3, 64, 64, 2), (4, 48, 8, 8, 2),
]
SMOKE_KERNEL_SHAPES = [(1, 1, 3, 5, 2), (2, 4, 5, 4, 3), (2, 3, 6, 6, 2), (1, 8, 3, 3, 2)]
TIMING_SHAPES, TIMING_BATCH = [(3, 32, 32), (3, 64, 64)], 64
SMOKE_TIMING_SHAPES, SMOKE_TIMING_BATCH = [(3, 4, 4), (3, 8, 8)], 2
DENSE_MAX_DIM, SMOKE_DENSE_MAX_DIM = 4096, 64  # CHW above this: the dense matrix is not built
RECIPES = ("glow_mnist_small", "if_glow_mnist", "selfnorm_glow_mnist")
# Smoke: one step per block and width-8 networks (list indices of each recipe's own layers).
SMOKE_OVERRIDES = {
    "glow_mnist_small": ["model.layers.1.repeat=1", "model.layers.4.repeat=1",
                         "model.layers.1.layers.2.hidden=8", "model.layers.4.layers.2.hidden=8"],
    "if_glow_mnist": ["model.layers.1.repeat=1", "model.layers.4.repeat=1",
                      "model.layers.1.layers.3.width=8", "model.layers.2.width=8"],
    "selfnorm_glow_mnist": ["model.layers.1.repeat=1", "model.layers.4.repeat=1",
                            "model.layers.1.layers.2.width=8", "model.layers.4.layers.2.width=8",
                            "model.layers.2.width=8"],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="every section on the CPU, tiny shapes, Triton interpreted")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON to write")
    return parser.parse_args(argv)


ARGS = parse_args()
if ARGS.cpu_smoke:
    os.environ["TRITON_INTERPRET"] = "1"  # read by triton when it is imported: before any import
# This checkout's zoo, not another installed one (a script's sys.path starts at bench/).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def errors(got: torch.Tensor, ref: torch.Tensor) -> dict:
    diff = (got.double() - ref).abs().max().item()
    return {"max_abs": diff, "rel": diff / max(ref.abs().max().item(), 1e-30)}


def random_weight(channels: int, k: int, unit_diagonal: bool, device, seed: int) -> torch.Tensor:
    """Taps ~0.3; without unit diagonal, a diagonal in +-[0.8, 1.6] (as tests/test_kernels.py)."""
    g = torch.Generator().manual_seed(seed)
    weight = 0.3 * torch.randn(channels, channels, k, k, generator=g, dtype=torch.float64)
    if not unit_diagonal:
        diag = 0.8 + 0.8 * torch.rand(channels, generator=g, dtype=torch.float64)
        sign = torch.where(torch.rand(channels, generator=g) < 0.5, -1.0, 1.0).double()
        weight[:, :, 0, 0] += torch.diag(diag * sign)
    return weight.to(device)


def pixel_major(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)


def from_pixel_major(flat: torch.Tensor, shape) -> torch.Tensor:
    b, c, h, w = shape
    return flat.reshape(b, h, w, c).permute(0, 3, 1, 2)


def check_kernels(shapes, device) -> list[dict]:
    """Max abs / relative error of Triton and the twin (float32) against float64 dense."""
    from zoo.kernels import triton_inverse_conv as tk
    from zoo.kernels import wavefront as wf
    from zoo.kernels.inverse_conv import dense_matrix

    rows = []
    for batch, channels, height, width, k in shapes:
        for unit_diagonal in (True, False):
            kernel64 = wf.full_kernel(random_weight(channels, k, unit_diagonal, device, k + channels),
                                      unit_diagonal)
            kernel = kernel64.float()
            gen = torch.Generator().manual_seed(1)
            x64 = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64).to(device)
            g64 = torch.randn(x64.shape, generator=gen, dtype=torch.float64).to(device)
            x, g = x64.float(), g64.float()
            matrix = dense_matrix(kernel64, height, width)
            z_ref = from_pixel_major(torch.linalg.solve_triangular(
                matrix, pixel_major(x64).T, upper=False).T, x64.shape)
            y_ref = from_pixel_major(torch.linalg.solve_triangular(
                matrix.T, pixel_major(g64).T, upper=True).T, x64.shape)
            reference = {
                "solve": z_ref, "dy": y_ref,
                "conv": from_pixel_major((matrix @ pixel_major(x64).T).T, x64.shape),
                "dw": wf.weight_gradient(z_ref, y_ref, k, unit_diagonal),
            }
            del matrix
            twin = {"solve": wf.solve(x, kernel), "dy": wf.solve_transposed(g, kernel),
                    "conv": wf.causal_conv(x, kernel)}
            twin["dw"] = wf.weight_gradient(twin["solve"], twin["dy"], k, unit_diagonal)
            triton = {"solve": tk.solve(x, kernel), "dy": tk.dy(g, kernel), "conv": tk.conv(x, kernel)}
            triton["dw"] = tk.dw(triton["solve"], triton["dy"], k, unit_diagonal)
            for name, ref in reference.items():
                rows.append({
                    "shape": [batch, channels, height, width], "kernel_size": k,
                    "unit_diagonal": unit_diagonal, "kernel": name,
                    "triton": errors(triton[name], ref), "twin": errors(twin[name], ref),
                })
    return rows


def time_inverse_conv(shapes, batch, dense_max_dim, repeats, device) -> list[dict]:
    """Forward+backward ms of the inverse convolution, four ways, k = 2, float32."""
    from zoo.kernels.inverse_conv import dense_inverse_conv, inverse_conv

    rows = []
    for channels, height, width in shapes:
        torch.manual_seed(0)
        x = torch.randn(batch, channels, height, width, device=device, requires_grad=True)
        weight = (0.01 * torch.randn(channels, channels, 2, 2, device=device)).requires_grad_(True)

        def fwd_bwd(fn):
            return lambda: fn().square().sum().backward()

        ways = {
            "triton": fwd_bwd(lambda: inverse_conv(x, weight, True, backend="triton")),
            "twin": fwd_bwd(lambda: inverse_conv(x, weight, True, backend="torch")),
            "conv2d": fwd_bwd(lambda: F.conv2d(F.pad(x, (1, 0, 1, 0)), weight)),
        }
        row: dict = {"shape": [channels, height, width], "batch": batch, "kernel_size": 2, "ms": {}}
        if channels * height * width <= dense_max_dim:
            ways["dense"] = fwd_bwd(lambda: dense_inverse_conv(x, weight, True))
        else:
            row["skipped"] = {"dense": f"CHW {channels * height * width} > {dense_max_dim}: the "
                                       "(CHW x CHW) matrix and identity batch are not built"}
        for name, fn in ways.items():
            row["ms"][name] = median_ms(fn, repeats, device)
        rows.append(row)
    return rows


def recipe_parts(name: str, smoke: bool, device, dtype: str = "float32"):
    """Model (initialized on a first batch), gradient mode, loss, optimizer, loader of a recipe
    (``dtype``: its ``train.precision``)."""
    import zoo
    from zoo import assemble
    from zoo.data import first_tensor

    overrides = (SMOKE_OVERRIDES[name] + ["dataset.batch_size=2"]) if smoke else []
    if dtype != "float32":
        overrides.append(f"train.precision={dtype}")
    recipe = zoo.load_recipe(name, overrides=overrides)
    dataset = assemble.build_dataset(recipe)
    torch.manual_seed(0)
    model = zoo.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits).to(device)
    loader = torch.utils.data.DataLoader(dataset.train, batch_size=recipe.loader["batch_size"],
                                         shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    batches = iter(loader)

    def next_batch():
        nonlocal batches
        try:
            return first_tensor(next(batches)).to(device)
        except StopIteration:
            batches = iter(loader)
            return first_tensor(next(batches)).to(device)

    model.initialize(next_batch())
    mode = assemble.build_gradient_mode(recipe)
    mode.prepare(model)
    loss_fn = assemble.build_objective(recipe, dataset)
    optimizer = assemble.build_optimizer(model, recipe.train)
    return recipe, model, mode, loss_fn, optimizer, next_batch


def time_training(name: str, dtype: str, warmup: int, steps: int, smoke: bool, device) -> dict:
    """Steps per second of one recipe (the training loop's step: loss, backward, clip, step).

    bf16 goes through ``zoo.precision.step_autocast`` with the recipe's ``train.precision``, the
    call ``zoo run``'s step and evaluation make (in the CPU smoke run that is CPU autocast, which
    ``zoo run`` itself refuses at start)."""
    from zoo import precision

    recipe, model, mode, loss_fn, optimizer, next_batch = recipe_parts(name, smoke, device, dtype)
    clip = recipe.train.get("grad_clip_norm")

    def autocast():
        return precision.step_autocast(recipe.train, device)

    def step():
        x = next_batch()
        with autocast():
            loss, _ = mode.loss(model, x, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip), foreach=True)
        optimizer.step()
        return loss.detach()

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    losses = [step() for _ in range(steps)]
    synchronize(device)
    elapsed = time.perf_counter() - start
    with torch.no_grad(), autocast():
        z, logdet = model(next_batch())
    return {
        "recipe": name, "dtype": dtype, "batch": recipe.loader["batch_size"],
        "warmup_steps": warmup, "timed_steps": steps, "steps_per_s": steps / elapsed,
        "last_loss": float(losses[-1]), "latent_dtype": str(z.dtype).removeprefix("torch."),
        "logdet_dtype": str(logdet.dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def time_sampling(name: str, n: int, repeats: int, smoke: bool, device) -> dict:
    """ms per image of ``model.sample(n)`` (float32, initialized but untrained weights)."""
    _, model, *_ = recipe_parts(name, smoke, device)
    model.eval()
    samples = model.sample(n)
    total = median_ms(lambda: model.sample(n), repeats, device)
    return {"recipe": name, "n": n, "ms_per_image": total / n, "ms_per_call": total,
            "samples_finite": bool(torch.isfinite(samples).all())}


def measured(fn, name: str, dtype: str, *args) -> dict:
    """``fn``'s row, or the error a layer raised (bf16 autocast is measured, not made to work)."""
    try:
        return fn(name, dtype, *args)
    except Exception as error:  # noqa: BLE001  (recorded in the report, never hidden)
        return {"recipe": name, "dtype": dtype, "error": f"{type(error).__name__}: {error}"}


def print_tables(report: dict) -> None:
    print(f"device: {report['device']}  mode: {report['mode']}")
    print("\nkernels vs float64 dense (relative error; max abs in brackets)")
    print(f"{'shape':>16} {'k':>2} {'unit':>5} {'kernel':>6} {'triton':>22} {'twin':>22}")
    for r in report["kernels"]:
        shape = "x".join(map(str, r["shape"]))
        cells = [f"{r[w]['rel']:.1e} [{r[w]['max_abs']:.1e}]" for w in ("triton", "twin")]
        print(f"{shape:>16} {r['kernel_size']:>2} {str(r['unit_diagonal']):>5} {r['kernel']:>6} "
              f"{cells[0]:>22} {cells[1]:>22}")
    print("\ninverse convolution forward+backward, ms (median)")
    for r in report["inverse_conv_timing"]:
        shape = "x".join(map(str, r["shape"]))
        cells = "  ".join(f"{k} {v:.3f}" for k, v in r["ms"].items())
        skipped = "  ".join(f"{k} skipped ({v})" for k, v in r.get("skipped", {}).items())
        print(f"  {shape} batch {r['batch']}: {cells}  {skipped}")
    print("\ntraining steps per second")
    for r in report["train"]:
        if "error" in r:
            print(f"  {r['recipe']:>20} {r['dtype']:>8}: failed: {r['error'][:100]}")
            continue
        print(f"  {r['recipe']:>20} {r['dtype']:>8} batch {r['batch']:>3}: {r['steps_per_s']:8.2f} "
              f"steps/s  loss {r['last_loss']:.2f}  log-det {r['logdet_dtype']}")
    print("\nsampling")
    for r in report["sampling"]:
        print(f"  {r['recipe']:>20} n {r['n']:>3}: {r['ms_per_image']:.3f} ms per image")


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {out}")


def main() -> int:
    smoke = ARGS.cpu_smoke
    report: dict = {
        "torch": torch.__version__, "python": platform.python_version(),
        "mode": "cpu-smoke" if smoke else "gpu",
    }
    if not smoke and not torch.cuda.is_available():
        report.update(status="no CUDA device", device=None)
        print("gpu_check: no CUDA device here; nothing measured (use --cpu-smoke to check the "
              "script on the CPU).")
        write(report, ARGS.out)
        return 0
    device = torch.device("cpu" if smoke else "cuda")
    report["device"] = "cpu" if smoke else torch.cuda.get_device_name(0)
    try:
        import triton

        report["triton"] = triton.__version__
    except ImportError:
        report["triton"] = None
    started = time.perf_counter()
    report["kernels"] = check_kernels(SMOKE_KERNEL_SHAPES if smoke else KERNEL_SHAPES, device)
    report["inverse_conv_timing"] = time_inverse_conv(
        SMOKE_TIMING_SHAPES if smoke else TIMING_SHAPES,
        SMOKE_TIMING_BATCH if smoke else TIMING_BATCH,
        SMOKE_DENSE_MAX_DIM if smoke else DENSE_MAX_DIM, 2 if smoke else 20, device)
    warmup, steps = (1, 2) if smoke else (5, 20)
    report["train"] = [measured(time_training, name, dtype, warmup, steps, smoke, device)
                       for name in RECIPES for dtype in ("float32", "bf16")]
    report["sampling"] = [time_sampling(name, 2 if smoke else 64, 2 if smoke else 5, smoke, device)
                          for name in RECIPES]
    report["status"] = "ok"
    report["seconds"] = time.perf_counter() - started
    print_tables(report)
    write(report, ARGS.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
