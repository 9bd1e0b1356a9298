"""The training loop: one place for every recipe.

``run(recipe)`` trains with Adam (linear warm-up per batch, optional per-epoch decay, an
optional plateau schedule on the training loss, gradient clipping), evaluates the exact
log-likelihood on the validation split every ``eval_every`` epochs, keeps the best model as
``model.safetensors``, and reports test metrics of that best model. What the run folder holds,
and how it is read back, is ``zoo.runs``'s business.

Energy targets (``zoo.data.EnergyTarget``, loss ``reverse_kl``) go through the same loop: each
step draws ``batch_size`` samples from the model instead of reading data, and evaluation
estimates the free energy ``F = E_q[log q + U]`` (and ``KL(q || p) = F + log Z`` where the target
knows ``log Z``) from the same seeded draws every time, instead of a data NLL. metrics.jsonl
then has ``val_free_energy`` and ``val_kl``, metrics.json ``test_free_energy``, ``test_kl``,
``val_free_energy``, ``val_kl`` and ``log_z`` (nats; ``kl`` and ``log_z`` null where Z is not
finite), and the pictures show the target's exp(-U) beside the learned q
(``zoo.visualize_targets``).

``run.json`` carries the run's ``status``: ``running``, then ``complete``, ``interrupted``
(Ctrl-C: what was saved so far is kept and said) or ``failed`` (e.g. a non-finite loss).
``zoo.checkpoint`` keeps a checkpoint at every epoch end (and every ``train.checkpoint_every``
steps) that ``resume(folder)`` continues from.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

import zoo
from zoo import assemble, checkpoint, distributed, precision, report, runs, tracking
from zoo._atomic import write_json, write_text
from zoo.budget import check_batch, large_allowed
from zoo.data import EnergyTarget, FlowDataset, Placeholders, first_tensor
from zoo.data_order import EpochBatches
from zoo.errors import RecipeError, TrainingError
from zoo.flow import FlowModel
from zoo.recipe import Recipe, load_recipe
from zoo.registry import get_registry
from zoo.tasks import mean_nll, split_item
from zoo.visualize import save_samples
from zoo.visualize_conditional import save_conditional_samples
from zoo.visualize_targets import save_target_plot
from zoo.weights import WEIGHTS_FILE, load_weights, save_weights

RUNS_DIR_ENV = runs.RUNS_DIR_ENV


@dataclass
class RunResult:
    folder: Path
    metrics: dict[str, Any]


# --- helpers, named for what they return ---------------------------------------------------------


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


SMALL_MODEL = 100_000  # parameters; below it one thread is faster even on idle cores (bench/threads.py)


def pick_threads(setting: int | str, model: torch.nn.Module) -> int:
    """The CPU threads for a run: ``setting`` itself, or for ``auto`` the cores that are idle now.

    Measured with bench/threads.py on 2 cores (README, "Threads"): on idle cores 2 threads make
    a step of glow_mnist_small, exact_fc_mnist or maf_mnist 1.5-1.8x faster, but beside another
    torch process they make it 2-5x slower than 1 thread (the threads wait for each other at every
    operation while one of them is descheduled). So ``auto`` takes the cores this process may use
    minus those the 1-minute load average says are busy, and at least one; a model under
    ``SMALL_MODEL`` parameters (realnvp_moons: operations too short to split) always gets one.
    """
    if setting != "auto":
        return int(setting)
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL:
        return 1
    try:
        cores = max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        cores = max(os.cpu_count() or 1, 1)
    try:
        busy = round(os.getloadavg()[0])
    except (AttributeError, OSError):  # no load average on this platform: assume idle
        busy = 0
    idle = (os.cpu_count() or cores) - busy  # the load average counts every core of the machine
    return max(1, min(cores, idle))


def make_loaders(dataset: FlowDataset, recipe: Recipe, seed: int):
    batch, eval_batch = recipe.loader["batch_size"], recipe.loader["eval_batch_size"]
    cap = recipe.train.get("max_eval_examples")

    def capped(split):
        return Subset(split, range(min(len(split), cap))) if cap else split

    order = EpochBatches(len(dataset.train), batch, seed, recipe.train.get("max_steps_per_epoch"),
                         rank=distributed.rank(), world=distributed.world())
    # train.workers, pinned memory on CUDA; under torchrun each rank its shares (zoo.distributed)
    device_type = pick_device(recipe.train.get("device", "auto")).type
    train = distributed.train_loader(dataset.train, order, recipe, seed, device_type)
    val = distributed.eval_loader(capped(dataset.val), eval_batch)
    test = distributed.eval_loader(capped(dataset.test), eval_batch)
    return train, val, test


def initial_batch(loader: DataLoader):
    """The batch a data-dependent initialisation (actnorm) sees: the first of a pass that the
    training order draws for it (``EpochBatches.first_batch``)."""
    indices = loader.batch_sampler.first_batch()
    return loader.collate_fn([loader.dataset[i] for i in indices])


def learning_rate(train: Mapping[str, Any], epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
    """Linear warm-up per batch over ``warmup_epochs``, then ``lr * lr_decay**epoch``
    (a ``train.lr_schedule`` multiplies this by its own factor: ``lr_schedule``)."""
    lr = float(train["lr"]) * float(train.get("lr_decay", 1.0)) ** epoch
    warmup_steps = float(train.get("warmup_epochs", 0)) * steps_per_epoch
    step = epoch * steps_per_epoch + step_in_epoch + 1
    if warmup_steps > 0 and step < warmup_steps:
        lr *= step / warmup_steps
    return lr


class NoSchedule:
    """No ``train.lr_schedule``: the learning rate is ``learning_rate``'s."""

    scale = 1.0

    def observe(self, loss: float) -> None:
        pass


class PlateauSchedule:
    """Reduce the learning rate when the training loss stops improving (``lr_schedule: plateau``).

    PyTorch's ``ReduceLROnPlateau`` (mode ``min``, relative threshold), stepped on the training
    loss after every optimizer step, as the BNAF seed steps it (kamenbliznashki ``bnaf.py``:
    ``scheduler.step(loss)`` each step). A step improves when ``loss < best * (1 - threshold)``;
    after more than ``patience`` steps in a row without improvement, ``scale *= factor`` (never
    below ``min_lr / lr``), and the next ``cooldown`` steps do not count. The learning rate of a
    step is ``learning_rate(...) * scale``, so the schedule composes with warm-up and
    ``lr_decay`` by multiplication.
    """

    def __init__(self, lr: float, factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0, name: str = "plateau"):
        self.lr, self.factor, self.patience = float(lr), float(factor), int(patience)
        self.threshold, self.cooldown, self.min_lr = float(threshold), int(cooldown), float(min_lr)
        self.scale, self.best, self.bad_steps, self.cooling = 1.0, math.inf, 0, 0
        self.reductions = 0

    def observe(self, loss: float) -> None:
        if loss < self.best * (1.0 - self.threshold):
            self.best, self.bad_steps = loss, 0
        else:
            self.bad_steps += 1
        if self.cooling > 0:
            self.cooling -= 1
            self.bad_steps = 0
        if self.bad_steps > self.patience:
            reduced = max(self.scale * self.factor, self.min_lr / self.lr)
            if (self.scale - reduced) * self.lr > 1e-8:  # ReduceLROnPlateau's eps
                self.scale = reduced
                self.reductions += 1
            self.cooling, self.bad_steps = self.cooldown, 0


def lr_schedule(train: Mapping[str, Any]) -> NoSchedule | PlateauSchedule:
    """The schedule ``train.lr_schedule`` names (absent or null: none)."""
    settings = train.get("lr_schedule")
    if not settings:
        return NoSchedule()
    return PlateauSchedule(float(train["lr"]), **settings)  # the schema admits plateau only


@torch.no_grad()
def evaluate(model: FlowModel, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Exact mean NLL (nats) over a split, and bits/dim; layers run their exact (eval) paths."""
    nll, count = mean_nll(model, loader, device)  # refuses an energy target's split
    return {"nll": nll, "bpd": nll / (model.dim * math.log(2)), "examples": count}


def refuse_energy_split(loader: DataLoader) -> None:
    """An energy target's split has no data to score: a RecipeError saying where its scores are."""
    if _is_placeholders(getattr(loader, "dataset", None)):
        raise RecipeError(
            "this model fits an energy target, which has no data to score: its free energy and "
            "KL estimates are in the run folder's metrics.json (test_free_energy, test_kl)"
        )


def _is_placeholders(split) -> bool:
    while isinstance(split, Subset):
        split = split.dataset
    return isinstance(split, Placeholders)


def evaluation_seed(seed: int, split: str) -> int:
    """The seed of an energy target's estimate on ``split``: the same draws at every evaluation
    (so epochs compare), other draws for val and test."""
    return (int(seed) * 1_000_003 + {"val": 1, "test": 2}[split]) % 2**63


@torch.no_grad()
def evaluate_energy(model: FlowModel, loader: DataLoader, loss_fn, target: EnergyTarget,
                    device: torch.device, seed: int) -> dict[str, float | None]:
    """The free energy F = mean of log q(x) + U(x) over as many samples of q as the split has
    (nats), and KL(q || p) = F + log Z when the target knows log Z; exact (eval) paths."""
    model.eval()
    total, count = 0.0, 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for item in loader:
            x = first_tensor(item).to(device)
            total += loss_fn(model, x).double().sum().item()
            count += x.shape[0]
    model.train()
    free_energy = total / max(count, 1)
    log_z = target.log_normalizer
    kl = free_energy + log_z if log_z is not None and math.isfinite(free_energy) else None
    return {"free_energy": free_energy, "kl": kl, "examples": count}


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def plugins_used(recipe: Recipe) -> dict[str, dict[str, str]]:
    """The plugins (with versions) that register the components a recipe names."""
    registry = get_registry()
    by_name = {p.name: p for p in registry.plugins}
    used = {}
    for kind, name in recipe.components():
        if kind == "layers" and not registry.has(kind, name):
            kind = "network_layers"  # a classifier's layer
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
    """One progress bar for the whole run on stderr (tqdm), so its ETA is the run's, not the
    epoch's; the description says which epoch it is in."""

    def __init__(self, total: int, epochs: int, enabled: bool, initial: int = 0):
        self.bar, self.epochs = None, epochs
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, leave=False, dynamic_ncols=True, file=sys.stderr)

    def epoch(self, index: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"epoch {index + 1}/{self.epochs}", refresh=False)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class RunState:
    """What the loop carries from step to step and epoch to epoch."""

    recipe: Recipe
    folder: Path
    info: dict[str, Any]
    model: FlowModel
    dataset: FlowDataset
    device: torch.device
    loss_fn: Any = None
    task: Any = None  # the recipe's task (zoo.tasks)
    best_score: float = math.inf  # the validation NLL, or free energy for an energy target
    best_val: dict[str, Any] = field(default_factory=dict)  # the best evaluation's values
    best_epoch: int | None = None
    batch_times: list[float] = field(default_factory=list)
    skipped: int = 0
    resumed: Any = None  # the zoo.checkpoint.Checkpoint a resumed run continues from
    checkpoints: Any = None  # the loop's zoo.checkpoint.Keeper

    def set_status(self, status: str, **extra) -> None:
        self.info.update(status=status, **extra)
        if not distributed.is_main():  # rank 0 alone writes the run folder
            return
        runs.write_info(self.folder, self.info)

    def save_model(self) -> None:
        if not distributed.is_main():
            return
        digest = save_weights(self.model, self.folder / WEIGHTS_FILE, weights_metadata(self.recipe, self.model))
        self.info["weights_sha256"] = digest
        runs.write_info(self.folder, self.info)

    def saved_so_far(self) -> str:
        if self.best_epoch is None:
            return f"no model was saved yet (the first evaluation saves one); the run folder is {self.folder}"
        return f"the best model so far (epoch {self.best_epoch}) is in {self.folder / WEIGHTS_FILE}"

    @property
    def fits_energy(self) -> bool:
        return isinstance(self.dataset, EnergyTarget)

    def save_pictures(self, tag: str, nll: float | None = None) -> Path | None:
        """Sample grids or a density plot (``zoo.visualize``; its title gives the recipe, the
        test ``nll`` and the best epoch); for an energy target, the target beside the learned q
        (``zoo.visualize_targets``)."""
        if not distributed.is_main():
            return None
        if self.fits_energy:
            return save_target_plot(self.model, self.loss_fn, self.dataset,
                                    self.folder / "samples" / f"{tag}_target.png",
                                    name=self.recipe.component("dataset")[0])
        if getattr(self.task, "model_kind", "flow") != "flow":
            return None  # a classifier's pictures are its task's outputs
        if getattr(self.model, "conditional", False):
            return save_conditional_samples(self.model, self.folder, tag, self.recipe.train, self.dataset,
                                            title=self.recipe["name"])
        return save_samples(self.model, self.folder, tag, self.recipe.train, self.dataset,
                            title=self.recipe["name"], nll=nll, epoch=self.best_epoch)


# --- the loop ------------------------------------------------------------------------------------


def run(
    recipe: Recipe | Mapping[str, Any] | str | os.PathLike,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    log=print,
    overwrite: bool = False,
    resuming: checkpoint.Checkpoint | None = None,
) -> RunResult:
    """Train and evaluate a recipe; return the run folder and the final test metrics.

    ``out`` is the run folder (default ``runs/<name>-<time>``); an existing run there is
    replaced only with ``overwrite=True``. ``resuming``: see ``resume``.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if out is not None and resuming is None:
        runs.check_output_folder(out, overwrite)  # before anything is built
    tracking.check_extras(recipe)  # a tracker in train.log that is not installed, before building
    distributed.setup(recipe)  # under torchrun: the process group (a batch the ranks do not split is refused)
    if not distributed.is_main():
        progress, log = False, _quiet
    threads = torch.get_num_threads()  # the run picks its own (train.threads); a caller's stays
    try:
        state = start(recipe, out, overwrite, log, resuming)
        train_loader, val_loader, test_loader = make_loaders(state.dataset, recipe, int(recipe.train["seed"]))
        try:
            fit(state, train_loader, val_loader, progress, log)
        except KeyboardInterrupt:
            state.set_status("interrupted", ended=_now())
            log(f"interrupted: {state.saved_so_far()}")
            raise
        except BaseException:
            state.set_status("failed", ended=_now())
            raise
        result = finish(state, test_loader, log)
        distributed.finished()  # under torchrun: every rank leaves together
        return result
    finally:
        torch.set_num_threads(threads)
        distributed.teardown()


def resume(folder: str | os.PathLike, progress: bool = True, log=print) -> RunResult:
    """Continue a stopped run from its checkpoint (``zoo.checkpoint``): on CPU it ends with the
    weights and metrics.jsonl records of a run never stopped. Refused (a ZooError saying why and
    what to do) for a complete run, an edited recipe, another zoo version, or a missing, damaged
    or mismatched checkpoint."""
    recipe, point = checkpoint.open_for_resume(folder)
    return run(recipe, out=point.folder, progress=progress, log=log, resuming=point)


def start(recipe: Recipe, out, overwrite: bool, log, resuming=None) -> RunState:
    """Seed, build the data and the model, create the run folder with recipe.yaml and run.json
    (``resuming``: the run's own folder and run.json, put back to the checkpoint's moment)."""
    torch.manual_seed(int(recipe.train["seed"]))
    device = distributed.device(pick_device(recipe.train.get("device", "auto")))
    precision.check(recipe, device)  # bf16 off CUDA, compile without a compiler: before building
    dataset = assemble.build_dataset(recipe)
    if dataset.notice:
        log(f"note: {dataset.notice}")
    task = assemble.build_task(recipe)
    labels = assemble.label_facts(dataset, recipe.component("dataset")[0])
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits, labels=labels).to(device)
    task.check(recipe, dataset)
    for batch, training in ((recipe.loader["batch_size"], True), (recipe.loader["eval_batch_size"], False)):
        check_batch(model, batch, training=training, allow_large=large_allowed(recipe),
                    where=f"{recipe.where}: $.dataset.batch_size")
    threads = None
    if device.type == "cpu":
        threads = pick_threads(recipe.train.get("threads", "auto"), model)
        threads = distributed.threads(threads, recipe.train.get("threads", "auto"))
        torch.set_num_threads(threads)
    loss_fn = assemble.build_objective(recipe, dataset)  # refuses a loss on the wrong kind of data
    precision.configure(model, recipe)  # train.checkpoint_grads, train.compile
    if resuming is not None:
        resumed = RunState(recipe, resuming.folder, resuming.info, model, dataset, device, loss_fn, task=task,
                           resumed=resuming)
        return checkpoint.resumed_state(resumed, threads, log)
    folder = distributed.shared_folder(lambda: runs.create_run_folder(recipe["name"], out, overwrite))
    if distributed.is_main():
        write_text(folder / runs.RECIPE_FILE, recipe.to_yaml())
    info = {
        "zoo_version": zoo.__version__,
        "recipe_sha256": recipe.sha256,
        "input_shape": list(dataset.shape),
        "n_bits": dataset.n_bits,
        "device": str(device),
        "threads": threads,
        "started": _now(),
        "plugins": plugins_used(recipe),
        "status": "running",
        "weights_sha256": None,
        "task": recipe.task[0],
        # what the labels were, so a conditional model or classifier builds without its data
        "labels": {k: labels[k] for k in ("kind", "names", "shape", "prior")} if labels["kind"] else None,
    }
    if distributed.world() > 1:
        info["processes"] = distributed.world()
    if distributed.is_main():
        runs.write_info(folder, info)
    log(f"run folder: {folder}")
    log(f"model: {sum(p.numel() for p in model.parameters()):,} parameters, data {tuple(dataset.shape)}")
    return RunState(recipe, folder, info, model, dataset, device, loss_fn, task=task)


def fit(state: RunState, train_loader: DataLoader, val_loader: DataLoader, progress: bool, log) -> None:
    """Every epoch: the training steps, then (every ``eval_every``) validation and the best model."""
    train_cfg, model = state.recipe.train, state.model
    if distributed.is_main():
        tracking.start(state)  # train.log's trackers (none by default)
    if state.resumed is None:  # a resumed run's weights come from its checkpoint
        # data-dependent init (under torchrun: on the global first batch)
        distributed.initialize(state.task, model, *split_item(initial_batch(train_loader), state.device))
    mode = assemble.build_gradient_mode(state.recipe)
    mode.prepare(model)
    loss_fn = state.loss_fn
    optimizer = assemble.build_optimizer(model, train_cfg)
    schedule = lr_schedule(train_cfg)
    steps = len(train_loader)  # the sampler caps it at train.max_steps_per_epoch
    epochs = int(train_cfg["epochs"])
    keeper = state.checkpoints = checkpoint.Keeper(state, optimizer, schedule, train_loader, steps, epochs, log)
    bar = Progress(epochs * steps, epochs, progress, initial=keeper.done)
    try:
        model.train()
        for epoch in range(keeper.start_epoch, epochs):
            bar.epoch(epoch)
            train_loss = train_epoch(state, train_loader, steps, epoch, mode, loss_fn, optimizer,
                                     schedule, bar)
            last = epoch + 1 == epochs
            if (epoch + 1) % int(train_cfg.get("eval_every", 1)) == 0 or last:
                validate(state, val_loader, epoch, train_loss, optimizer.param_groups[0]["lr"], log)
            every = train_cfg.get("sample_every")
            if every and (epoch + 1) % int(every) == 0 and not last:
                state.save_pictures(f"epoch{epoch + 1:04d}")
                distributed.sync_rng()  # rank 0 drew them: every rank goes on from its RNG
            keeper.epoch_end(epoch)
    finally:
        bar.close()
        keeper.close()


def train_epoch(state: RunState, loader: DataLoader, steps: int, epoch: int, mode, loss_fn,
                optimizer, schedule, bar: Progress) -> float:
    """One epoch of steps; the mean training loss over its examples."""
    train_cfg, model = state.recipe.train, state.model
    clip = train_cfg.get("grad_clip_norm")
    first, total, seen = state.checkpoints.epoch_start(epoch)  # a resumed epoch starts part-way
    for step, item in enumerate(state.checkpoints.batches(loader), start=first):
        if step >= steps:
            break
        x, y = split_item(item, state.device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train_cfg, epoch, step, steps) * schedule.scale
        started = time.perf_counter()
        with precision.step_autocast(train_cfg, state.device):  # train.precision
            loss, _logs = distributed.step_loss(state, x, y, mode, loss_fn)  # under torchrun: DDP
        if not torch.isfinite(loss):
            if train_cfg.get("on_nonfinite", "stop") != "skip":
                raise TrainingError(
                    f"{state.recipe.where}: the training loss became {loss.item()} at epoch {epoch + 1}, "
                    f"batch {step + 1}. Lower train.lr, set train.grad_clip_norm, or set "
                    f"train.on_nonfinite=skip to skip such batches. {state.saved_so_far().capitalize()}."
                )
            state.skipped += 1
            optimizer.zero_grad(set_to_none=True)
            bar.update(loss=float("nan"))
            state.checkpoints.after_step(epoch, step + 1, total, seen)
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip), foreach=True)
        optimizer.step()
        if state.device.type == "cuda":
            torch.cuda.synchronize()
        state.batch_times.append(time.perf_counter() - started)
        value = loss.item()
        schedule.observe(value)
        examples = distributed.batch_examples(x)  # the global batch's under torchrun
        total += value * examples
        seen += examples
        bar.update(loss=value)
        state.checkpoints.after_step(epoch, step + 1, total, seen)
    return total / max(seen, 1)


def validate(state: RunState, loader: DataLoader, epoch: int, train_loss: float, lr: float, log) -> None:
    """Validation NLL (or free energy); a better model is saved (and run.json records its sha256)."""
    if state.fits_energy:
        val = evaluate_energy(state.model, loader, state.loss_fn, state.dataset, state.device,
                              evaluation_seed(int(state.recipe.train["seed"]), "val"))
        score, values = val["free_energy"], {"val_free_energy": val["free_energy"], "val_kl": val["kl"]}
        kl = f", KL {val['kl']:.4f}" if val["kl"] is not None else ""
        line = f"val free energy {val['free_energy']:.4f} nats{kl}"
    else:
        with precision.step_autocast(state.recipe.train, state.device):
            val = distributed.evaluate(state.task, state.model, loader, state.device)
        score, values, line = val.score, {f"val_{k}": v for k, v in val.values.items()}, f"val {val.line}"
    improved = score < state.best_score
    if improved:
        state.best_score, state.best_val, state.best_epoch = score, values, epoch + 1
        state.save_model()
    record = {"epoch": epoch + 1, "train_loss": train_loss, **values, "lr": lr, "time": time.time(),
              "best": improved}
    if distributed.is_main():
        append_jsonl(state.folder / "metrics.jsonl", record)
        tracking.on_validation(state, record, loader)
    distributed.sync_rng()  # after rank 0's tracker forward
    log(f"epoch {epoch + 1}: train loss {train_loss:.4f}, {line}" + (" *" if improved else ""))


def finish(state: RunState, test_loader: DataLoader, log) -> RunResult:
    """Test metrics of the best model, the final samples, metrics.json; status complete."""
    recipe, model, train_cfg = state.recipe, state.model, state.recipe.train
    score = "free energy" if state.fits_energy else "NLL"
    if state.best_epoch is None:  # no finite validation score: keep the last weights, say so
        log(f"note: no evaluation gave a finite validation {score}; the last weights are kept")
        state.save_model()
    if distributed.is_main():
        load_weights(model, state.folder / WEIGHTS_FILE)
    distributed.broadcast_model(model)  # the best weights on every rank
    n_samples = int(train_cfg.get("n_samples", 64))
    if state.fits_energy:
        test = evaluate_energy(model, test_loader, state.loss_fn, state.dataset, state.device,
                               evaluation_seed(int(train_cfg["seed"]), "test"))
        log_z = state.dataset.log_normalizer
        scores = {"test_free_energy": test["free_energy"], "test_kl": test["kl"],
                  "val_free_energy": state.best_val.get("val_free_energy"),
                  "val_kl": state.best_val.get("val_kl"), "log_z": log_z}
        sample_started = time.perf_counter()
        with torch.no_grad():
            model.eval()
            state.loss_fn.draw(model, n_samples, device=state.device)
            model.train()
        sample_time = time.perf_counter() - sample_started
        state.save_pictures("final")
    else:
        with precision.step_autocast(train_cfg, state.device):
            evaluation = distributed.evaluate(state.task, model, test_loader, state.device)
        test = {**evaluation.values, "examples": evaluation.examples}
        scores = {f"test_{k}": v for k, v in evaluation.values.items()}
        if not distributed.is_main():  # pictures, outputs, metrics.json, the report: rank 0's
            return RunResult(state.folder, scores)
        if "bpd" in evaluation.values and not state.dataset.is_image:
            scores["test_bpd"] = None
        scores.update({k: v for k, v in state.best_val.items() if k != "val_bpd" or state.dataset.is_image})
        sample_started = time.perf_counter()
        drawn = state.save_pictures("final", nll=test.get("nll"))
        sample_time = time.perf_counter() - sample_started if drawn is not None else None
        scores.update(state.task.outputs(model, state.dataset, state.folder, recipe, log))
    metrics = {
        **scores,
        "best_epoch": state.best_epoch,
        "epochs": int(train_cfg["epochs"]),
        "test_examples": test["examples"],
        "ms_per_batch": 1000 * _mean(state.batch_times[1:] or state.batch_times),
        "ms_per_sample": 1000 * sample_time / max(n_samples, 1) if sample_time is not None else None,
        "skipped_batches": state.skipped,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dataset": recipe.component("dataset")[0],
        "recipe_sha256": recipe.sha256,
    }
    write_json(state.folder / runs.METRICS_FILE, metrics)
    state.set_status("complete", ended=_now())
    checkpoint.discard(state)  # after "complete": a kill between leaves a run that says so
    if state.fits_energy:
        line = f"test free energy {test['free_energy']:.4f} nats"
        if test["kl"] is not None:
            line += f", KL(q || p) {test['kl']:.4f} nats"
    else:
        line = f"test {evaluation.line}"
    log(f"{line} (best epoch {state.best_epoch}); run folder: {state.folder}")
    tracking.finish(state, metrics)
    report.write_after_run(state, log)
    return RunResult(state.folder, metrics)


def _quiet(*args, **kwargs) -> None:
    """``log`` of the ranks other than 0."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def load_run(folder: str | os.PathLike) -> tuple[Recipe, FlowModel]:
    """The recipe and trained model (eval mode) of a run folder, with every check of
    ``zoo.runs.load_folder`` (the one loader)."""
    return runs.load_folder(folder)
