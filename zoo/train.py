"""The training loop: one place for every recipe.

``run(recipe)`` trains with Adam (linear warm-up per batch, optional per-epoch decay, gradient
clipping), evaluates the exact log-likelihood on the validation split every ``eval_every``
epochs, keeps the best model as ``model.safetensors``, and reports test metrics of that best
model. A run folder holds:

    recipe.yaml         the fully resolved recipe
    run.json            zoo version, recipe sha256, data shape, device, plugins
    model.safetensors   the best model by validation likelihood
    metrics.jsonl       one line per evaluation
    metrics.json        final test metrics (NLL in nats, bits/dim for images, timing)
    samples/*.png       sample grids (images) or density plots (2-D data)
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, Subset

import zoo
from zoo import assemble
from zoo.data import FlowDataset, first_tensor
from zoo.errors import TrainingError, WeightsError
from zoo.flow import FlowModel
from zoo.recipe import Recipe, load_recipe
from zoo.registry import get_registry
from zoo.visualize import save_samples
from zoo.weights import WEIGHTS_FILE, load_weights, save_weights

RUNS_DIR_ENV = "ZOO_RUNS_DIR"


@dataclass
class RunResult:
    folder: Path
    metrics: dict[str, Any]


# --- helpers, named for what they return ---------------------------------------------------------


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def new_run_folder(recipe: Mapping[str, Any], out: str | os.PathLike | None) -> Path:
    if out is not None:
        folder = Path(out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(os.environ.get(RUNS_DIR_ENV, "runs")) / f"{recipe['name']}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_loaders(dataset: FlowDataset, recipe: Recipe, seed: int):
    batch, eval_batch = recipe.loader["batch_size"], recipe.loader["eval_batch_size"]
    cap = recipe.train.get("max_eval_examples")

    def capped(split):
        return Subset(split, range(min(len(split), cap))) if cap else split

    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(dataset.train, batch_size=batch, shuffle=True, drop_last=False, generator=generator)
    val = DataLoader(capped(dataset.val), batch_size=eval_batch)
    test = DataLoader(capped(dataset.test), batch_size=eval_batch)
    return train, val, test


def learning_rate(train: Mapping[str, Any], epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    """Linear warm-up per batch over ``warmup_epochs``, then ``lr * lr_decay**epoch``."""
    lr = float(train["lr"]) * float(train.get("lr_decay", 1.0)) ** epoch
    warmup_steps = float(train.get("warmup_epochs", 0)) * steps_per_epoch
    step = epoch * steps_per_epoch + step_in_epoch + 1
    if warmup_steps > 0 and step < warmup_steps:
        lr *= step / warmup_steps
    return lr


@torch.no_grad()
def evaluate(model: FlowModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Exact mean NLL (nats) over a split, and bits/dim; layers run their exact (eval) paths."""
    model.eval()
    total, count = 0.0, 0
    for item in loader:
        x = first_tensor(item).to(device)
        total += (-model.log_prob(x)).double().sum().item()
        count += x.shape[0]
    model.train()
    nll = total / max(count, 1)
    return {"nll": nll, "bpd": nll / (model.dim * math.log(2)), "examples": count}


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and a rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plugins_used(recipe: Recipe) -> dict[str, dict[str, str]]:
    """The plugins (with versions) that register the components a recipe names."""
    registry = get_registry()
    by_name = {p.name: p for p in registry.plugins}
    used = {}
    for kind, name in recipe.components():
        plugin = by_name[registry.get(kind, name).plugin]
        used[plugin.name] = {"distribution": plugin.distribution, "version": plugin.version}
    return dict(sorted(used.items()))


def weights_metadata(recipe: Recipe, model: FlowModel) -> dict[str, Any]:
    return {
        "zoo_version": zoo.__version__,
        "recipe_sha256": recipe.sha256,
        "input_shape": list(model.shape),
        "n_bits": model.n_bits,
    }


class Progress:
    """A one-line progress bar on stderr (tqdm when available)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --- the loop ------------------------------------------------------------------------------------


def run(
    recipe: Recipe | Mapping[str, Any] | str | os.PathLike,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    log=print,
) -> RunResult:
    """Train and evaluate a recipe; return the run folder and the final test metrics."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    train_cfg = recipe["train"]
    seed = int(train_cfg.get("seed", 0))
    torch.manual_seed(seed)
    device = pick_device(train_cfg.get("device", "auto"))

    dataset = assemble.build_dataset(recipe)
    if dataset.notice:
        log(f"note: {dataset.notice}")
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits).to(device)
    loss_fn = assemble.build_loss(recipe)
    mode = assemble.build_gradient_mode(recipe)
    train_loader, val_loader, test_loader = make_loaders(dataset, recipe, seed)

    folder = new_run_folder(recipe, out)
    write_text(folder / "recipe.yaml", recipe.to_yaml())
    write_json(
        folder / "run.json",
        {
            "zoo_version": zoo.__version__,
            "recipe_sha256": recipe.sha256,
            "input_shape": list(dataset.shape),
            "n_bits": dataset.n_bits,
            "device": str(device),
            "started": datetime.now().isoformat(timespec="seconds"),
            "plugins": plugins_used(recipe),
        },
    )
    metrics_log = folder / "metrics.jsonl"
    metrics_log.unlink(missing_ok=True)
    log(f"run folder: {folder}")
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, data {tuple(dataset.shape)}")

    model.initialize(first_tensor(next(iter(train_loader))).to(device))  # data-dependent init
    mode.prepare(model)
    optimizer = assemble.build_optimizer(model, train_cfg)
    max_steps = train_cfg.get("max_steps_per_epoch")
    steps_per_epoch = min(len(train_loader), max_steps) if max_steps else len(train_loader)
    on_nonfinite = train_cfg.get("on_nonfinite", "stop")
    clip = train_cfg.get("grad_clip_norm")

    best = {"nll": math.inf, "epoch": None}
    batch_times: list[float] = []
    skipped = 0
    model.train()
    for epoch in range(int(train_cfg["epochs"])):
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{train_cfg['epochs']}", progress)
        epoch_loss, seen = 0.0, 0
        for step, item in enumerate(train_loader):
            if step >= steps_per_epoch:
                break
            x = first_tensor(item).to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(train_cfg, epoch, step, steps_per_epoch)
            started = time.perf_counter()
            loss, logs = mode.loss(model, x, loss_fn)
            if not torch.isfinite(loss):
                if on_nonfinite == "skip":
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    bar.update(loss=float("nan"))
                    continue
                bar.close()
                raise TrainingError(
                    f"{getattr(recipe, 'path', None) or recipe['name']}: the training loss became "
                    f"{loss.item()} at epoch {epoch + 1}, batch {step + 1}. Lower train.lr, set "
                    "train.grad_clip_norm, or set train.on_nonfinite=skip to skip such batches. "
                    f"The best model so far is in {folder}."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            batch_times.append(time.perf_counter() - started)
            epoch_loss += loss.item() * x.shape[0]
            seen += x.shape[0]
            bar.update(loss=loss.item())
        bar.close()

        last_epoch = epoch + 1 == int(train_cfg["epochs"])
        if (epoch + 1) % int(train_cfg.get("eval_every", 1)) == 0 or last_epoch:
            val = evaluate(model, val_loader, device)
            record = {"epoch": epoch + 1, "train_loss": epoch_loss / max(seen, 1), "val_nll": val["nll"],
                      "val_bpd": val["bpd"], "time": time.time()}
            improved = val["nll"] < best["nll"]
            if improved:
                best = {"nll": val["nll"], "epoch": epoch + 1}
                save_weights(model, folder / WEIGHTS_FILE, weights_metadata(recipe, model))
            record["best"] = improved
            append_jsonl(metrics_log, record)
            log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, val NLL {val['nll']:.4f} nats"
                + (f" ({val['bpd']:.4f} bits/dim)" if dataset.is_image else "") + (" *" if improved else ""))
        every = train_cfg.get("sample_every")
        if every and (epoch + 1) % int(every) == 0 and not last_epoch:
            save_samples(model, folder, f"epoch{epoch + 1:04d}", train_cfg, dataset)

    if best["epoch"] is None:  # no finite validation NLL: keep the last weights, say so
        save_weights(model, folder / WEIGHTS_FILE, weights_metadata(recipe, model))
    load_weights(model, folder / WEIGHTS_FILE)
    test = evaluate(model, test_loader, device)
    sample_started = time.perf_counter()
    save_samples(model, folder, "final", train_cfg, dataset)
    n_samples = int(train_cfg.get("n_samples", 64))
    metrics = {
        "test_nll": test["nll"],
        "test_bpd": test["bpd"] if dataset.is_image else None,
        "val_nll": best["nll"] if math.isfinite(best["nll"]) else None,
        "best_epoch": best["epoch"],
        "epochs": int(train_cfg["epochs"]),
        "test_examples": test["examples"],
        "ms_per_batch": 1000 * _mean(batch_times[1:] or batch_times),
        "ms_per_sample": 1000 * (time.perf_counter() - sample_started) / max(n_samples, 1),
        "skipped_batches": skipped,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dataset": assemble.dataset_params(recipe)[0],
        "recipe_sha256": recipe.sha256,
    }
    write_json(folder / "metrics.json", metrics)
    line = f"test NLL {test['nll']:.4f} nats"
    if dataset.is_image:
        line += f", {test['bpd']:.4f} bits/dim"
    log(f"{line} (best epoch {best['epoch']}); run folder: {folder}")
    return RunResult(folder, metrics)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# --- run folders ---------------------------------------------------------------------------------


def load_run(folder: str | os.PathLike) -> tuple[Recipe, FlowModel]:
    """The recipe and trained model (eval mode) of a run folder."""
    folder = Path(folder)
    recipe_path = folder / "recipe.yaml"
    if not recipe_path.is_file():
        raise WeightsError(
            f"{folder}: not a run folder (no recipe.yaml). Pass the folder that `zoo run` printed."
        )
    recipe = load_recipe(recipe_path)
    info_path = folder / "run.json"
    shape = n_bits = None
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        shape, n_bits = info.get("input_shape"), info.get("n_bits")
    model = assemble.build_model(recipe, shape=shape, n_bits=n_bits)
    load_weights(model, folder / WEIGHTS_FILE)
    model.eval()
    return recipe, model
