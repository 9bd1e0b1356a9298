"""Run tracking beside metrics.jsonl: TensorBoard and Weights & Biases, as ``train.log`` asks.

The training loop always writes ``metrics.jsonl`` (one line per evaluation). A recipe's
``train.log: [tensorboard, wandb]`` adds trackers, each an optional extra
(``pip install 'zoo-flows[tensorboard]'``, ``'zoo-flows[wandb]'``); a missing one is refused
before anything is built. Every tracker gets, with the epoch as its step:

- at each evaluation: the record's numbers as scalars (``train/loss``, ``val/nll``,
  ``val/bpd``, ``train/lr``...), a histogram per layer of that layer's log-determinant over
  one validation batch (``logdet/03_affine_coupling``: the SNF seed's ``verbose``), and the
  sample pictures the run has written under ``samples/`` since the last evaluation;
- at the end: the test metrics of metrics.json (scalars; wandb's run summary too) and the
  final pictures.

TensorBoard writes event files into the run folder's ``tensorboard/`` (``tensorboard --logdir
RUN``); wandb keeps its files in the run folder's ``wandb/`` (``WANDB_MODE=offline`` works
without an account; ``WANDB_PROJECT`` names the project, default ``zoo``). The recipe is
logged as text (TensorBoard) or as the run's config (wandb).

The histogram pass runs under its own seeded RNG (``torch.random.fork_rng``), so switching a
tracker on leaves the training's random stream, and so its result, unchanged.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import re
import weakref
from pathlib import Path
from typing import Any, Mapping

import torch

from zoo import runs
from zoo.errors import TrackingError, ZooError
from zoo.flow import factors_out

TRACKERS = ("tensorboard", "wandb")
MODULES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # what each tracker imports
HISTOGRAM_SEED = 0
_OPEN: dict[int, "Trackers"] = {}  # id(run state) -> its open trackers


def requested(recipe: Mapping[str, Any]) -> list[str]:
    return list(recipe.get("train", {}).get("log") or [])


def check_extras(recipe: Mapping[str, Any]) -> None:
    """Refuse, before anything is built, trackers whose extra is not installed (naming the pip
    command)."""
    for name in requested(recipe):
        if importlib.util.find_spec(MODULES[name]) is None:
            raise missing_extra(recipe, name)


def missing_extra(recipe: Mapping[str, Any], name: str) -> TrackingError:
    where = getattr(recipe, "where", "the recipe")
    return TrackingError(
        f"{where}: $.train.log names {name}, which is not installed. Install it with "
        f"`pip install 'zoo-flows[{name}]'`, or remove {name} from train.log."
    )


# --- the calls of the training loop --------------------------------------------------------------


def start(state) -> None:
    """Open the trackers of a run (``state``: the loop's RunState); none when train.log is empty.
    They close at ``finish``, or when the run state is dropped (a failed or interrupted run),
    then with a non-zero exit code for wandb."""
    if id(state) in _OPEN or not requested(state.recipe):
        return
    trackers = Trackers(state.recipe, state.folder)
    _OPEN[id(state)] = trackers
    # Not at interpreter exit: wandb's own exit hook ends the runs still open then.
    weakref.finalize(state, _close, id(state), state.info).atexit = False


def on_validation(state, record: Mapping[str, Any], loader) -> None:
    """Log one evaluation's record, the per-layer log-determinants and the new pictures."""
    if not requested(state.recipe):
        return
    start(state)
    trackers, step = _OPEN[id(state)], int(record["epoch"])
    trackers.pictures(state.folder, step)  # first: they belong to earlier epochs (wandb's steps only rise)
    trackers.scalars(scalar_tags(record), step)
    # an energy target has no data batch to run forward, a classifier no log-determinants
    if not state.fits_energy and getattr(state.task, "model_kind", "flow") == "flow":
        item = first_item(loader)
        if item is not None:
            from zoo.tasks import context_of, split_item

            x, y = split_item(item, state.device)
            names = [name for _, name, _ in state.recipe.layers()]
            with state.model.given(context_of(state.model, y)):  # a conditional flow's labels
                trackers.histograms(layer_logdets(state.model, x, names), step)


def finish(state, metrics: Mapping[str, Any]) -> None:
    """Log the test metrics and the final pictures, and close the trackers."""
    trackers = _OPEN.get(id(state))
    if trackers is None:
        return
    step = int(metrics.get("epochs") or 0)
    trackers.pictures(state.folder, step)
    trackers.scalars(final_tags(metrics), step)
    trackers.summary({k: v for k, v in metrics.items() if _is_number(v)})
    _close(id(state), {"status": "complete"})


def _close(key: int, info: Mapping[str, Any]) -> None:
    trackers = _OPEN.pop(key, None)
    if trackers is not None:
        trackers.close(failed=info.get("status") != "complete")


# --- what is logged ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation record's numbers under tracker tags: ``train_loss`` -> ``train/loss``,
    ``val_nll`` -> ``val/nll``, ``lr`` -> ``train/lr`` (epoch, time and flags are not scalars)."""
    tags = {}
    for key, value in record.items():
        if key in ("epoch", "time", "best") or not _is_number(value):
            continue
        prefix, _, rest = key.partition("_")
        tags[f"{prefix}/{rest}" if prefix in ("train", "val", "test") and rest else f"train/{key}"] = float(value)
    return tags


def final_tags(metrics: Mapping[str, Any]) -> dict[str, float]:
    """metrics.json's test numbers (``test/nll``, ``test/bpd``...) and timings (``time/...``)."""
    tags = {}
    for key, value in metrics.items():
        if not _is_number(value):
            continue
        if key.startswith("test_") and key != "test_examples":
            tags[f"test/{key[5:]}"] = float(value)
        elif key.startswith("ms_per_"):
            tags[f"time/{key}"] = float(value)
    return tags


def first_item(loader):
    """The first batch of a (validation) loader as the loader gives it (``(x,)`` or ``(x, y)``),
    drawn without touching the global RNG: creating a DataLoader iterator draws a seed from it."""
    with torch.random.fork_rng(devices=[]):
        for item in loader:
            return item
    return None


@torch.no_grad()
def layer_logdets(model, x: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Each layer's log-determinant per sample, ``{"03_affine_coupling": (batch,)}``, from one
    forward pass of the model in eval mode, under its own seeded RNG (dequantization noise).

    The pass is the model's own (hooks on ``model.layers``; a factoring layer's ``factor`` is
    wrapped for the pass, since the model calls it instead of ``forward``)."""
    layers = list(model.layers)
    names = names if names is not None and len(names) == len(layers) else [type(m).__name__ for m in layers]
    width = len(str(max(len(layers) - 1, 0)))
    keys = [f"{i:0{width}d}_{name}" for i, name in enumerate(names)]
    captured: dict[str, torch.Tensor] = {}
    handles, wrapped = [], []
    for key, layer in zip(keys, layers):
        if factors_out(layer):
            layer.factor = _capturing_factor(layer.factor, key, captured)
            wrapped.append(layer)
        else:
            handles.append(layer.register_forward_hook(_capturing_hook(key, captured)))
    was_training = model.training
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(HISTOGRAM_SEED)
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
        for layer in wrapped:
            del layer.factor  # the instance attribute: the class's method shows again
    n = x.shape[0]
    return {key: torch.broadcast_to(captured[key].detach().float(), (n,)).cpu() for key in keys if key in captured}


def _capturing_hook(key: str, captured: dict):
    def hook(module, args, output):
        captured[key] = output[1]
    return hook


def _capturing_factor(factor, key: str, captured: dict):
    def wrapped(*args, **kwargs):
        y, z, logdet = factor(*args, **kwargs)
        captured[key] = logdet
        return y, z, logdet
    return wrapped


def picture_step(name: str, default: int) -> int:
    """The epoch a sample picture belongs to: ``epoch0005.png`` -> 5, ``final_density.png`` -> the
    last epoch."""
    match = re.match(r"epoch(\d+)", name)
    return int(match.group(1)) if match else default


def picture_tag(name: str) -> str:
    """The tag of a picture, the same at every epoch: ``epoch0005_density.png`` and
    ``final_density.png`` -> ``samples/density``; an image grid ``epoch0005.png`` -> ``samples/grid``."""
    stem = Path(name).stem
    match = re.match(r"(epoch\d+|final)_?(.*)$", stem)
    if match:
        stem = match.group(2) or "grid"
    return f"samples/{stem}"


# --- the trackers --------------------------------------------------------------------------------


class Trackers:
    """The trackers a recipe names, written to together."""

    def __init__(self, recipe: Mapping[str, Any], folder: Path):
        self.sinks = []
        self.logged: dict[str, bytes] = {}  # picture name -> its bytes when logged
        try:
            for name in requested(recipe):
                self.sinks.append(SINKS[name](recipe, Path(folder)))
        except BaseException:
            self.close(failed=True)
            raise

    def scalars(self, tags: Mapping[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.scalars(tags, step)

    def histograms(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        finite = {f"logdet/{k}": v[torch.isfinite(v)].numpy() for k, v in values.items()}
        finite = {k: v for k, v in finite.items() if v.size}
        for sink in self.sinks:
            sink.histograms(finite, step)

    def pictures(self, folder: Path, step: int) -> None:
        """The sample pictures written (or rewritten) since the last call."""
        from PIL import Image

        new = [(name, data) for name, data in runs.read_pictures(folder) if self.logged.get(name) != data]
        for name, data in new:
            self.logged[name] = data
            try:
                image = Image.open(io.BytesIO(data))
                image.load()
            except Exception:  # noqa: BLE001 - a damaged file is not logged; the run goes on
                continue
            image = image.convert("RGB") if image.mode not in ("L", "RGB") else image
            for sink in self.sinks:
                sink.picture(picture_tag(name), image, picture_step(name, step))

    def summary(self, values: Mapping[str, float]) -> None:
        for sink in self.sinks:
            sink.summary(values)

    def close(self, failed: bool = False) -> None:
        for sink in self.sinks:
            sink.close(failed)
        self.sinks = []


class TensorBoardSink:
    """Event files in ``RUN/tensorboard/`` through torch's SummaryWriter."""

    def __init__(self, recipe: Mapping[str, Any], folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise missing_extra(recipe, "tensorboard") from exc
        logdir = folder / "tensorboard"
        if logdir.is_dir() and not logdir.is_symlink():  # a replaced (--overwrite) run's events
            for stale in logdir.glob("events.out.tfevents.*"):
                stale.unlink(missing_ok=True)
        self.writer = SummaryWriter(log_dir=str(logdir))
        self.writer.add_text("recipe", _recipe_markdown(recipe), 0)

    def scalars(self, tags, step):
        for tag, value in tags.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def histograms(self, values, step):
        for tag, array in values.items():
            self.writer.add_histogram(tag, array, step)
        self.writer.flush()

    def picture(self, tag, image, step):
        import numpy as np

        array = np.asarray(image)
        self.writer.add_image(tag, array, step, dataformats="HW" if array.ndim == 2 else "HWC")
        self.writer.flush()

    def summary(self, values):
        pass  # the test scalars are already logged

    def close(self, failed):
        self.writer.close()


class WandbSink:
    """A Weights & Biases run with its files in ``RUN/wandb/`` (``WANDB_MODE=offline`` needs no
    account); the recipe is its config."""

    def __init__(self, recipe: Mapping[str, Any], folder: Path):
        try:
            import wandb
        except ImportError as exc:
            raise missing_extra(recipe, "wandb") from exc
        self.wandb = wandb
        (folder / "wandb").mkdir(exist_ok=True)
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "zoo", name=folder.name, dir=str(folder),
                config=dict(recipe), settings=wandb.Settings(console="off"),
            )
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001 - wandb's own errors (no API key, no network)
            raise TrackingError(
                f"{getattr(recipe, 'where', 'the recipe')}: $.train.log: wandb could not start a run "
                f"({type(exc).__name__}: {exc}). Log in (`wandb login` or WANDB_API_KEY), or set "
                "WANDB_MODE=offline to keep the run on this machine (`wandb sync` uploads it later)."
            ) from exc

    def scalars(self, tags, step):
        self.run.log(dict(tags), step=step)

    def histograms(self, values, step):
        self.run.log({tag: self.wandb.Histogram(array) for tag, array in values.items()}, step=step)

    def picture(self, tag, image, step):
        self.run.log({tag: self.wandb.Image(image)}, step=step)

    def summary(self, values):
        self.run.summary.update({k: v if math.isfinite(v) else str(v) for k, v in values.items()})

    def close(self, failed):
        self.run.finish(exit_code=1 if failed else 0)


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink}


def _recipe_markdown(recipe: Mapping[str, Any]) -> str:
    """The resolved recipe as a code block (TensorBoard renders text as Markdown)."""
    text = recipe.to_yaml() if hasattr(recipe, "to_yaml") else str(dict(recipe))
    return "\n".join("    " + line for line in text.splitlines())
