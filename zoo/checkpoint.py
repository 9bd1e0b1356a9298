"""Checkpoints: a run that stops (SIGKILL, a scheduler's pre-emption, Ctrl-C) continues where it
stopped, and ends as if it never had.

Every ``train.checkpoint_every`` training batches (null: none within an epoch) and at every epoch
end (after validation and the epoch's pictures) the loop writes ``checkpoint.safetensors`` in the
run folder through ``zoo._atomic`` (a temporary ``.checkpoint.safetensors.zoo-tmp-*`` renamed over
the previous one: a kill mid-write leaves the previous checkpoint whole, and a leftover that the
resume deletes). ``zoo run --resume RUN`` (``zoo.train.resume``) rebuilds the run from its
recipe.yaml and continues from the checkpoint; on CPU the resumed run ends with the same weights,
bit for bit, and the same metrics.jsonl records (but ``time``) as a run never stopped. The file is
removed when the run completes, so a complete run refuses ``--resume``.

The file, format 1 (no pickle: tensors, and one JSON document as header metadata):

    model.<name>             the model's state dict now
    best.<name>              the best model so far (model.safetensors then); none before the first evaluation
    optimizer.<i>.<key>      the optimizer's per-parameter state, ``i`` the index of the trainable parameter
    rng.torch, rng.cuda.<d>  torch's CPU generator, and each CUDA device's
    rng.epoch_torch          a mid-epoch checkpoint: torch's CPU generator when the epoch began (the
                             DataLoader draws its workers' base seed from it then)
    order.epoch_start        the data order's generator when the epoch began (``EpochBatches.state()``)
    timing.batch_times       seconds of every step so far (metrics.json's ms_per_batch)

    __metadata__["zoo_checkpoint"]: {format, zoo_version, recipe_sha256, written, epoch (0-based,
    the epoch to continue in), step (its batches done), global_step, steps_per_epoch, epochs,
    running {total, seen} (the epoch's training-loss sums), schedule (the lr schedule's fields),
    best {score, epoch, values, weights_sha256}, skipped, metrics_bytes (metrics.jsonl's length
    then; resume cuts the file back to it), optimizer {param_groups, scalars}, rng {python, numpy,
    cuda_devices}}

A SIGINT or SIGTERM during training asks for a checkpoint at the next step boundary; the run then
stops with status ``interrupted`` and a message naming ``zoo run --resume RUN``. A second SIGINT
stops at once, as Ctrl-C did before.

Test hook, for zoo's tests only (never set it otherwise): ``ZOO_TEST_KILL_AT`` = ``step:K`` SIGKILLs
the process after training batch K of the run (counted from 1 over all epochs; after that batch's
checkpoint when one is due), ``epoch:E`` after epoch E's end checkpoint, ``checkpoint:N`` in the
middle of writing this process's N-th checkpoint (half of its temporary file written, named as
``zoo._atomic`` names it); ``term:K`` sends the process a SIGTERM after batch K (a pre-emption).
"""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo import distributed, runs
from zoo._atomic import TEMP_MARK, remove_stale_temporaries, write_bytes
from zoo.errors import WeightsError, ZooError
from zoo.weights import WEIGHTS_FILE, check_fits, save_weights

CHECKPOINT_FILE = runs.CHECKPOINT_FILE
FORMAT = 1
META_KEY = "zoo_checkpoint"
KILL_ENV = "ZOO_TEST_KILL_AT"
MAX_META_BYTES = 16 * 2**20  # the JSON document: a few KiB, the generators' states most of it
STOP_SIGNALS = ("SIGINT", "SIGTERM")


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class Checkpoint:
    """A checkpoint read back (``load_checkpoint``), with the run folder's run.json."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    lock: FolderLock | None = None  # held from the resume's checks on

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def epoch(self) -> int:
        return self.meta["epoch"]

    @property
    def step(self) -> int:
        return self.meta["step"]

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix.`` without it."""
        start = prefix + "."
        return {k[len(start):]: v for k, v in self.tensors.items() if k.startswith(start)}


class FolderLock:
    """An exclusive lock on a run folder while one process trains in it: ``flock`` on the folder
    itself (no file added), released when the process ends, even by SIGKILL."""

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.close()


def lock_folder(folder: Path) -> FolderLock | None:
    """The folder's lock, refused (a ZooError) while another process holds it; None where the
    platform or filesystem has no such locks (then nothing guards against two processes). Under
    torchrun rank 0 holds it for the whole run; the other ranks write nothing there."""
    if not distributed.is_main():
        return None
    try:
        import fcntl
    except ImportError:  # not on POSIX
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ZooError(
            f"{folder}: another process is training this run now. Let it finish, or stop it (a SIGTERM "
            f"writes a checkpoint first), then `{resume_command(folder)}`."
        ) from None
    except OSError:  # e.g. a filesystem without locks
        os.close(fd)
        return None
    return FolderLock(fd)


def describe(epoch: int, step: int, steps: int) -> str:
    """A checkpoint's position in words (``epoch`` 0-based, ``step`` batches of it done)."""
    if step == 0:
        return f"after epoch {epoch}"
    if step == steps:
        return f"at the end of epoch {epoch + 1}'s steps, before its validation"
    return f"at epoch {epoch + 1}, step {step} of {steps}"


def resume_command(folder: Path) -> str:
    return f"zoo run --resume {folder}"


def restart_command(folder: Path) -> str:
    """The command that starts a run again in its own folder, from its recipe."""
    return f"zoo run {folder / runs.RECIPE_FILE} --out {folder} --overwrite"


# --- writing -------------------------------------------------------------------------------------


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    kill_now: bool = False) -> Path:
    """Write the checkpoint file atomically (``kill_now``: the test hook's kill mid-write)."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                metadata={META_KEY: json.dumps(meta)})
    path = folder / CHECKPOINT_FILE
    if kill_now:
        # What a SIGKILL inside zoo._atomic.write_bytes leaves: part of its temporary file.
        fd, _tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", dir=folder)
        os.write(fd, data[: len(data) // 2])
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return write_bytes(path, data)


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every generator a run draws from: torch's (CPU, each CUDA device), numpy's, Python's."""
    tensors = {"rng.torch": torch.get_rng_state()}
    devices = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
            devices += 1
    version, internal, gauss = random.getstate()
    meta: dict[str, Any] = {"python": [version, list(internal), gauss], "cuda_devices": devices}
    try:
        import numpy
    except ImportError:  # numpy is optional for zoo itself
        pass
    else:
        name, keys, pos, has_gauss, cached = numpy.random.get_state()
        meta["numpy"] = {"name": name, "keys": keys.tolist(), "pos": int(pos),
                         "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return tensors, meta


def set_rng_state(checkpoint: Checkpoint) -> None:
    torch.set_rng_state(checkpoint.tensors["rng.torch"])
    cuda = [checkpoint.tensors[f"rng.cuda.{i}"] for i in range(checkpoint.meta["rng"]["cuda_devices"])]
    if cuda and torch.cuda.is_available():
        for index, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    version, internal, gauss = checkpoint.meta["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = checkpoint.meta["rng"].get("numpy")
    if saved is not None:
        import numpy

        numpy.random.set_state((saved["name"], numpy.array(saved["keys"], dtype=numpy.uint32),
                                saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's state: tensors by parameter index, the rest (param groups) as JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
              for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint) -> None:
    saved = checkpoint.meta["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in checkpoint.group("optimizer").items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    for index, values in saved["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    current = optimizer.param_groups
    if len(saved["param_groups"]) != len(current):
        raise WeightsError(f"{checkpoint.path}: the optimizer state has {len(saved['param_groups'])} "
                           f"parameter groups, the run's optimizer {len(current)}; start the run again.")
    # JSON made the tuples (betas) lists: back to what the optimizer was built with
    groups = [{k: tuple(v) if isinstance(current[i].get(k), tuple) else v for k, v in group.items()}
              for i, group in enumerate(saved["param_groups"])]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{checkpoint.path}: the optimizer state does not fit the run's optimizer "
                           f"({exc}); start the run again.") from None


def truncate_log(path: Path, length: int, checkpoint: Path) -> None:
    """Cut metrics.jsonl back to its length at the checkpoint (a kill may have left records
    after it, or half a line)."""
    size = path.stat().st_size if path.is_file() else 0
    if size < length:
        raise WeightsError(
            f"{path}: {size:,} bytes, shorter than the {length:,} it had when {checkpoint.name} was "
            "written; the run folder was edited. Restore the file, or start the run again "
            f"(`{restart_command(path.parent)}`)."
        )
    if size > length:
        with open(path, "r+b") as f:
            f.truncate(length)
            f.flush()
            os.fsync(f.fileno())


# --- the loop's side ------------------------------------------------------------------------------


@dataclass
class Position:
    """Where the loop is: ``step`` batches of epoch ``epoch`` (0-based) done, and that epoch's
    training-loss sums."""

    epoch: int
    step: int
    total: float = 0.0
    seen: int = 0


class Keeper:
    """The training loop's checkpoints: written when due (``after_step``, ``epoch_end``), read back
    into a resumed run (``restore``), and the SIGINT / SIGTERM handlers that ask for one.

    ``save`` is the one place that writes (for data-parallel training: rank 0 only)."""

    def __init__(self, state, optimizer, schedule, loader, steps: int, epochs: int, log=print):
        self.state, self.optimizer, self.schedule, self.log = state, optimizer, schedule, log
        self.sampler = loader.batch_sampler  # zoo.data_order.EpochBatches
        self.steps, self.epochs = int(steps), int(epochs)
        every = state.recipe.train.get("checkpoint_every")
        self.every = int(every) if every else None
        self.start_epoch, self.start_step, self.start_sums = 0, 0, (0.0, 0)
        self._epoch_order: torch.Tensor | None = None
        self._epoch_rng: torch.Tensor | None = None
        self._pending: Checkpoint | None = None  # generators to set once the resumed epoch's iterator exists
        self._best: tuple[str | None, dict[str, torch.Tensor]] = (None, {})
        self.written = 0
        self.stop: int | None = None  # the signal that asked for a stop
        self._kill = _kill_point()
        # the folder is this process's until it ends (a resume took the lock in its checks)
        self.lock = state.resumed.lock if state.resumed is not None else lock_folder(state.folder)
        if state.resumed is not None:
            restore(self, state.resumed)
        self._handlers = self._install()

    @property
    def done(self) -> int:
        """Training batches done when the loop (re)starts: where the progress bar starts."""
        return self.start_epoch * self.steps + self.start_step

    # the loop calls these

    def epoch_start(self, epoch: int) -> tuple[int, float, int]:
        """Before the epoch's first batch: ``(first step, loss total, examples seen)``, not
        ``(0, 0.0, 0)`` for the epoch a checkpoint stopped in."""
        self._epoch_order = self.sampler.state().clone()
        pending = self._pending
        self._epoch_rng = pending.tensors["rng.epoch_torch"] if pending is not None else torch.get_rng_state()
        if epoch == self.start_epoch and self.start_step:
            return self.start_step, *self.start_sums
        return 0, 0.0, 0

    def batches(self, loader):
        """The epoch's batches: ``loader`` itself, or for the epoch a mid-epoch checkpoint stopped
        in, its iterator made under the epoch's first generator state, then the checkpoint's."""
        return loader if self._pending is None else self._resumed(loader)

    def _resumed(self, loader):
        checkpoint, self._pending = self._pending, None
        torch.set_rng_state(checkpoint.tensors["rng.epoch_torch"])
        iterator = iter(loader)  # draws the workers' base seed as the epoch's start did
        set_rng_state(checkpoint)
        yield from iterator

    def after_step(self, epoch: int, done: int, total: float, seen: int) -> None:
        global_step = epoch * self.steps + done
        if self._kill == ("term", global_step):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        self._agree_on_stop()
        if self.stop is not None or (self.every and global_step % self.every == 0):
            self.save(Position(epoch, done, total, seen))
        self._maybe_kill("step", global_step)
        if self.stop is not None:
            self._interrupt(epoch, done)

    def epoch_end(self, epoch: int) -> None:
        self._agree_on_stop()
        self.save(Position(epoch + 1, 0))
        self._maybe_kill("epoch", epoch + 1)
        if self.stop is not None:
            self._interrupt(epoch + 1, 0)

    def close(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._handlers = {}

    # writing

    def save(self, position: Position) -> Path | None:
        """Write the checkpoint of ``position`` and note it in run.json (rank 0 alone: every
        rank holds the same model, optimizer, generators and data order)."""
        state = self.state
        if not distributed.is_main():
            return None
        tensors = {f"model.{k}": v for k, v in state.model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in self._best_tensors().items()})
        optimizer_tensors, optimizer_meta = optimizer_state(self.optimizer)
        tensors.update(optimizer_tensors)
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        mid_epoch = position.step > 0
        tensors["order.epoch_start"] = self._epoch_order if mid_epoch else self.sampler.state()
        if mid_epoch:
            tensors["rng.epoch_torch"] = self._epoch_rng
        tensors["timing.batch_times"] = torch.tensor(state.batch_times, dtype=torch.float64)
        log = state.folder / "metrics.jsonl"
        global_step = position.epoch * self.steps + position.step
        meta = {
            "format": FORMAT,
            "zoo_version": zoo.__version__,
            "recipe_sha256": state.recipe.sha256,
            "written": datetime.now().isoformat(timespec="seconds"),
            "epoch": position.epoch,
            "step": position.step,
            "global_step": global_step,
            "steps_per_epoch": self.steps,
            "epochs": self.epochs,
            "running": {"total": position.total, "seen": position.seen},
            "schedule": dict(vars(self.schedule)),
            "best": {"score": state.best_score, "epoch": state.best_epoch, "values": state.best_val,
                     "weights_sha256": state.info.get("weights_sha256")},
            "skipped": state.skipped,
            "metrics_bytes": log.stat().st_size if log.is_file() else 0,
            "optimizer": optimizer_meta,
            "rng": rng_meta,
        }
        self.written += 1
        path = save_checkpoint(state.folder, tensors, meta, kill_now=self._kill == ("checkpoint", self.written))
        state.info["checkpoint"] = {"epoch": position.epoch, "step": position.step, "global_step": global_step}
        runs.write_info(state.folder, state.info)
        return path

    def _best_tensors(self) -> dict[str, torch.Tensor]:
        """model.safetensors' tensors (the best model so far), read again only when it changed."""
        from safetensors.torch import load_file

        digest = self.state.info.get("weights_sha256")
        if digest is None:
            return {}
        if self._best[0] != digest:
            self._best = (digest, load_file(str(self.state.folder / WEIGHTS_FILE), device="cpu"))
        return self._best[1]

    # stopping

    def _install(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be set there; a caller's thread keeps its own
        previous = {}
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue  # not on this platform, or ignored on purpose (nohup): left alone
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum, frame) -> None:
        # Nothing is printed here: the signal may arrive while the progress bar writes stderr.
        if self.stop is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.stop = signum

    def _agree_on_stop(self) -> None:
        """Under torchrun a signal reaches the ranks at different moments: every rank stops at the
        first step boundary where any has been asked to (one all-reduce), so none waits alone
        in a collective."""
        if not distributed.active():
            return
        asked = torch.tensor([0.0 if self.stop is None else float(self.stop)])
        stop = int(distributed.all_sum(asked.clamp(max=1.0)).item())
        if stop and self.stop is None:
            self.stop = int(signal.SIGTERM)

    def _interrupt(self, epoch: int, step: int) -> None:
        folder = self.state.folder
        message = (f"{signal.Signals(self.stop).name}: stopped {describe(epoch, step, self.steps)} with a "
                   f"checkpoint in {folder / CHECKPOINT_FILE}; continue with `{resume_command(folder)}`")
        self.log(message)
        raise Interrupted(message, self.stop)

    def _maybe_kill(self, kind: str, count: int) -> None:
        if self._kill == (kind, count):
            os.kill(os.getpid(), signal.SIGKILL)


def _kill_point() -> tuple[str, int] | None:
    text = os.environ.get(KILL_ENV, "").strip()
    if not text:
        return None
    kind, _, count = text.partition(":")
    if kind not in ("step", "epoch", "checkpoint", "term") or not count.isdigit():
        raise ZooError(f"{KILL_ENV}={text!r}: a test hook, step:K, epoch:E, checkpoint:N or term:K; unset it")
    return kind, int(count)


def restore(keeper: Keeper, checkpoint: Checkpoint) -> None:
    """Put a resumed run where the checkpoint was: model, optimizer, schedule, best model, data
    order; the generators are set last (now, or once the epoch's iterator exists)."""
    state, meta = keeper.state, checkpoint.meta
    state.model.load_state_dict(checkpoint.group("model"))
    load_optimizer_state(keeper.optimizer, checkpoint)
    for key, value in meta["schedule"].items():
        if hasattr(keeper.schedule, key):
            setattr(keeper.schedule, key, value)
    best = meta["best"]
    state.best_score, state.best_epoch, state.best_val = best["score"], best["epoch"], dict(best["values"])
    state.skipped = meta["skipped"]
    state.batch_times = checkpoint.tensors["timing.batch_times"].tolist()
    keeper._best = (state.info.get("weights_sha256"), checkpoint.group("best"))
    keeper.sampler.set_state(checkpoint.tensors["order.epoch_start"], skip=checkpoint.step)
    keeper.start_epoch, keeper.start_step = checkpoint.epoch, checkpoint.step
    keeper.start_sums = (meta["running"]["total"], meta["running"]["seen"])
    # what is loaded need not stay in memory twice (the best model stays in keeper._best)
    checkpoint.tensors = {k: v for k, v in checkpoint.tensors.items() if k.startswith("rng.")}
    if checkpoint.step:
        keeper._pending = checkpoint
    else:
        set_rng_state(checkpoint)


# --- reading and resuming ------------------------------------------------------------------------


def load_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """The checkpoint of a run folder, its JSON checked; a WeightsError naming the file when it is
    missing, not safetensors, truncated or not one zoo wrote."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    path = folder / CHECKPOINT_FILE
    if not path.is_file() or path.is_symlink():
        raise WeightsError(
            f"{folder}: no checkpoint ({CHECKPOINT_FILE}) to resume from: the run stopped before its "
            f"first one (they are written every train.checkpoint_every steps and at each epoch end). "
            f"Start it again: `{restart_command(folder)}`."
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            text = (f.metadata() or {}).get(META_KEY)
            if text is None:
                raise WeightsError(f"{path}: a safetensors file, but not a zoo checkpoint (no "
                                   f"{META_KEY!r} metadata). Remove it, or start the run again.")
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(
            f"{path}: not a readable checkpoint ({exc}); the file is corrupt or truncated. Start the "
            f"run again: `{restart_command(folder)}`."
        ) from None
    return Checkpoint(path, _checked_meta(text, path, tensors), tensors)


def _checked_meta(text: str, path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    def damaged(what: str) -> WeightsError:
        return WeightsError(f"{path}: {what}; the checkpoint is damaged. Start the run again: "
                            f"`{restart_command(path.parent)}`.")

    if len(text) > MAX_META_BYTES or runs._nesting_depth(text) > runs.MAX_JSON_DEPTH:
        raise damaged("its metadata is larger or deeper than a checkpoint's")
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise damaged("its metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise damaged("its metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: checkpoint format {meta.get('format')!r}, but this zoo reads "
                           f"format {FORMAT}; resume with the zoo that wrote it ({meta.get('zoo_version')}).")
    integers = ("epoch", "step", "global_step", "steps_per_epoch", "epochs", "skipped", "metrics_bytes")
    for key in integers:
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise damaged(f"`{key}` is {value!r}, not a count")
    if meta["step"] > meta["steps_per_epoch"] or meta["epoch"] > meta["epochs"]:
        raise damaged(f"its position (epoch {meta['epoch']}, step {meta['step']}) is past the run's end")
    for key, kind in (("running", dict), ("schedule", dict), ("best", dict), ("optimizer", dict),
                      ("rng", dict), ("recipe_sha256", str), ("zoo_version", str)):
        if not isinstance(meta.get(key), kind):
            raise damaged(f"`{key}` is missing or not a {kind.__name__}")
    best, rng, optimizer = meta["best"], meta["rng"], meta["optimizer"]
    if not isinstance(best.get("values"), dict) or not isinstance(best.get("score"), (int, float)):
        raise damaged("`best` lacks its score or values")
    python = rng.get("python")
    if (not isinstance(python, list) or len(python) != 3 or not isinstance(python[1], list)
            or not isinstance(rng.get("cuda_devices"), int)):
        raise damaged("`rng` lacks Python's generator state")
    if not isinstance(optimizer.get("param_groups"), list) or not isinstance(optimizer.get("scalars"), dict):
        raise damaged("`optimizer` lacks its param groups")
    needed = ["rng.torch", "order.epoch_start", "timing.batch_times"] + (["rng.epoch_torch"] if meta["step"] else [])
    needed += [f"rng.cuda.{i}" for i in range(rng["cuda_devices"])]
    missing = [k for k in needed if k not in tensors]
    if missing:
        raise damaged(f"tensors {missing} are missing")
    return meta


def open_for_resume(folder: str | os.PathLike, registry=None):
    """``(recipe, checkpoint)`` of a run folder to resume; every refusal (a ZooError naming the
    folder and the fix) before anything is built."""
    text = os.fspath(folder)
    folder = Path(text).expanduser()
    if not folder.is_dir():
        runs.refuse_missing_run_folder(text)
        raise WeightsError(f"no such run folder: {text}. Pass the folder that `zoo run` printed.")
    config = runs.folder_config(folder)
    lock = lock_folder(folder) if config["kind"] == "run" else None
    if config["kind"] != "run":
        raise WeightsError(f"{folder}: a pulled model, not a run folder; there is no training to resume.")
    info = runs.read_json(config["where"])
    if config.get("status") == "complete":
        raise ZooError(
            f"{folder}: the run is already complete; there is nothing to resume. Its results are in "
            f"{folder / runs.METRICS_FILE}; to train longer, start a new run with more train.epochs "
            f"(`zoo run {folder / runs.RECIPE_FILE} train.epochs=N --out NEW_FOLDER`)."
        )
    if config["zoo_version"] != zoo.__version__:
        raise ZooError(
            f"{folder}: the run was trained with zoo {config['zoo_version']}, this is zoo "
            f"{zoo.__version__}; a resumed run is only the same run with the same zoo. Resume it with "
            f"zoo {config['zoo_version']} (pip install zoo-flows=={config['zoo_version']}), or start it again."
        )
    runs.check_plugins(config, str(folder), registry)
    recipe = runs.checked_recipe(folder, config, registry)
    if distributed.is_main():  # the folder is rank 0's
        remove_stale_temporaries(folder)  # e.g. a checkpoint half-written when the run was killed
    checkpoint = load_checkpoint(folder)
    meta = checkpoint.meta
    if meta["recipe_sha256"] != recipe.sha256:
        raise WeightsError(
            f"{checkpoint.path}: written for recipe {meta['recipe_sha256'][:12]}..., but "
            f"{folder / runs.RECIPE_FILE} is {recipe.sha256[:12]}...; the files come from different runs. "
            f"Start the run again: `{restart_command(folder)}`."
        )
    if meta["zoo_version"] != zoo.__version__:
        raise ZooError(f"{checkpoint.path}: written by zoo {meta['zoo_version']}, this is zoo "
                       f"{zoo.__version__}; resume with zoo {meta['zoo_version']}, or start the run again.")
    checkpoint.info, checkpoint.lock = info, lock
    return recipe, checkpoint


def resumed_state(state, threads, log):
    """A RunState built from the recipe (``zoo.train.start``) made the checkpoint's: every tensor
    checked against the model first; then the folder is put back to the checkpoint's moment
    (metrics.jsonl cut back, model.safetensors = the checkpoint's best model) and run.json says
    it is running again."""
    from zoo.data_order import EpochBatches
    from zoo.train import weights_metadata

    checkpoint, folder, model = state.resumed, state.folder, state.model
    meta = checkpoint.meta
    fix = f"Start the run again: `{restart_command(folder)}`."
    check_fits(model.state_dict(), checkpoint.group("model"), checkpoint.path, fix)
    best = checkpoint.group("best")
    if best:
        check_fits(model.state_dict(), best, checkpoint.path, fix)
    _check_optimizer(model, checkpoint, fix)
    train = state.recipe.train
    steps = EpochBatches(len(state.dataset.train), state.recipe.loader["batch_size"], 0,
                         train.get("max_steps_per_epoch")).steps
    if steps != meta["steps_per_epoch"] or int(train["epochs"]) != meta["epochs"]:
        raise WeightsError(
            f"{checkpoint.path}: written for {meta['epochs']} epochs of {meta['steps_per_epoch']} steps, "
            f"but the run now has {train['epochs']} of {steps} (its data changed size?). {fix}"
        )
    if distributed.is_main():  # under torchrun the other ranks leave the folder to rank 0
        truncate_log(folder / "metrics.jsonl", meta["metrics_bytes"], checkpoint.path)
        weights = folder / WEIGHTS_FILE
        if best:
            state.info["weights_sha256"] = save_weights(best, weights, weights_metadata(state.recipe, model))
        else:
            weights.unlink(missing_ok=True)  # written after the checkpoint: the replay writes it again
            state.info["weights_sha256"] = None
    recorded = state.info.get("threads")
    if (state.device.type == "cpu" and train.get("threads", "auto") == "auto" and isinstance(recorded, int)
            and recorded > 0 and recorded != threads):
        # Another thread count splits sums differently: the run keeps the arithmetic it began with.
        log(f"note: {recorded} threads, as the run began with (the same arithmetic as before)")
        threads = recorded
        torch.set_num_threads(threads)
    now = datetime.now().isoformat(timespec="seconds")
    state.info.update(status="running", device=str(state.device), threads=threads,
                      resumed=[*state.info.get("resumed", []), now])
    state.info.pop("ended", None)
    if distributed.is_main():
        runs.write_info(folder, state.info)
    log(f"run folder: {folder}")
    log(f"resuming {describe(checkpoint.epoch, checkpoint.step, meta['steps_per_epoch'])} "
        f"(checkpoint of {meta['written']})")
    return state


def _check_optimizer(model, checkpoint: Checkpoint, fix: str) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = checkpoint.meta["optimizer"]["param_groups"]
    counted = sum(len(g.get("params", [])) for g in groups if isinstance(g, dict))
    if counted != len(params):
        raise WeightsError(f"{checkpoint.path}: the optimizer state is for {counted} parameters, the "
                           f"model has {len(params)}. {fix}")
    for key, value in checkpoint.group("optimizer").items():
        index = key.partition(".")[0]
        if not index.isdigit() or int(index) >= len(params):
            raise WeightsError(f"{checkpoint.path}: optimizer.{key} names no parameter of the model. {fix}")
        param = params[int(index)]
        if value.dim() > 0 and value.shape != param.shape:
            raise WeightsError(f"{checkpoint.path}: optimizer.{key} has shape {tuple(value.shape)}, its "
                               f"parameter {tuple(param.shape)}. {fix}")


def discard(state) -> None:
    """A complete run needs no checkpoint: removed (so ``--resume`` says it is complete)."""
    if not distributed.is_main():
        return
    (state.folder / CHECKPOINT_FILE).unlink(missing_ok=True)
    if state.info.get("checkpoint") is not None:
        state.info["checkpoint"] = None
        runs.write_info(state.folder, state.info)
    lock = getattr(state.checkpoints, "lock", None)
    if lock is not None:
        lock.close()


def check_resume_arguments(args) -> None:
    """``zoo run --resume RUN`` continues the run as recorded: a RECIPE, overrides, --out or
    --overwrite beside it are refused, not ignored."""
    given = [f"RECIPE {args.recipe!r}"] if args.recipe is not None else []
    given += [f"override {o!r}" for o in args.overrides]
    given += ["--out"] * (args.out is not None) + ["--overwrite"] * bool(args.overwrite)
    if given:
        raise ZooError(
            f"zoo run --resume {args.resume}: continues the run exactly as its recipe.yaml and checkpoint "
            f"say, so it takes no {', '.join(given)}. To train differently, start a new run: "
            f"`zoo run {Path(args.resume) / runs.RECIPE_FILE} key=value --out NEW_FOLDER`."
        )
