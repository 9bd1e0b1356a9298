"""Data-parallel training on torch.distributed (DistributedDataParallel): one recipe, N processes.

``torchrun --nproc-per-node N -m zoo run RECIPE`` (or ``zoo run RECIPE --nproc N``, or
``torchrun --nnodes ...`` across machines) starts N copies of ``zoo run``; this module is what
they share. World size, rank and local rank come from torchrun's environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``); without it (one process) every function here is a no-op, so a
single-process run computes exactly what it computed before this module existed.

What N processes compute is what one process computes with the same recipe and seed:

- The recipe's ``batch_size`` is the *global* batch. ``zoo.data_order.EpochBatches`` gives every
  rank the same permutation and its contiguous share of each global batch; a batch size that the
  world size does not divide is refused, so a recipe means one thing on any process count.
- Each rank's step loss is weighted by ``its examples * world / global examples`` before DDP
  averages the gradients over ranks, so the averaged gradient is the global batch mean even for a
  ragged last batch. A rank whose share is empty still joins the all-reduce with a zero loss that
  touches every parameter.
- Per-example noise (``dequantize``'s U[0, 1)) is drawn for the whole global batch by every rank,
  which keeps its share (``rand_like``), so the noise is one process's and the global RNG of every
  rank stays in step; after anything that only rank 0 does with the RNG (pictures, a rank-0
  evaluation) every rank takes rank 0's RNG state.
- Data-dependent initialisation (actnorm) sees the global first batch: a forward pre-hook on
  every layer with ``initialize_from`` all-gathers that layer's input over ranks first.
- Evaluation is sharded (each rank its share of every global evaluation batch) and reduced as
  example-weighted means where a task's metrics are means over examples (``REDUCIBLE_TASKS``);
  other tasks (``classify``: its expected calibration error bins the whole split) are evaluated
  by rank 0 over the whole split, and the result is broadcast.
- Rank 0 alone writes the run folder, logs, pictures, trackers and the report; the other ranks
  get the folder's path by broadcast.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from zoo.errors import RecipeError, TrainingError, ZooError

# Tasks whose evaluation values are all means over examples (NLL, bits/dim, accuracy): a sharded
# evaluation reduces to them exactly as example-weighted means.
REDUCIBLE_TASKS = ("density", "generative_classify", "inverse_problem")


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world())))


def active() -> bool:
    """True in a process of a multi-process run whose process group is up."""
    return world() > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes the run folder and logs."""
    return rank() == 0


# --- set-up --------------------------------------------------------------------------------------


def check_recipe(recipe, processes: int | None = None) -> None:
    """Refuse what cannot mean the same on ``processes`` (default: this run's world) as on one."""
    n = world() if processes is None else int(processes)
    if n <= 1:
        return
    where = getattr(recipe, "where", "the recipe")
    for key in ("batch_size", "eval_batch_size"):
        size = int(recipe.loader[key])
        if size % n:
            down, up = size // n * n, math.ceil(size / n) * n
            raise RecipeError(
                f"{where}: $.dataset.{key}: {size} is the global batch, split across {n} processes, "
                f"and {n} does not divide it; set dataset.{key}={up if not down else down} or "
                f"{up} (or run with a process count that divides {size})")
    from zoo.assemble import energy_target_names

    name = recipe.component("dataset")[0]
    if name in energy_target_names():
        raise RecipeError(
            f"{where}: $.dataset: {name!r} is an energy target, whose batches are drawn by the model "
            "rather than read from data; data-parallel training does not shard those draws. Train it "
            "in one process (without --nproc / torchrun).")


def setup(recipe) -> None:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); no-op in one process."""
    if world() <= 1 or torch.distributed.is_initialized():
        return
    check_recipe(recipe)
    device = str(recipe.train.get("device", "auto"))
    cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if cuda:
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group(
        "nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30),
        **({"device_id": torch.device("cuda", local_rank())} if cuda else {}))


def finished() -> None:
    """After a run that ended well: every rank waits here for rank 0's pictures, metrics.json and
    report, so no rank tears the process group down while another still uses it (gloo aborted a
    rank that left first: "terminate called without an active exception")."""
    if active():
        torch.distributed.barrier()


def teardown() -> None:
    _WRAPPERS.clear()
    if active():
        torch.distributed.destroy_process_group()


def device(picked: torch.device) -> torch.device:
    """The rank's device: ``cuda:LOCAL_RANK`` where the run uses CUDA."""
    if world() > 1 and picked.type == "cuda":
        return torch.device("cuda", local_rank())
    return picked


def threads(count: int, setting: Any) -> int:
    """``train.threads: auto`` shares the idle cores among the processes of this node."""
    if world() > 1 and setting == "auto":
        return max(1, count // max(local_world(), 1))
    return count


def _collective_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --- small collectives ---------------------------------------------------------------------------


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The elementwise sum over ranks (float64 on the collective's device)."""
    out = values.detach().to(_collective_device(), torch.float64).clone()
    torch.distributed.all_reduce(out)
    return out


def all_sizes(n: int) -> list[int]:
    """Every rank's ``n``, in rank order."""
    mine = torch.tensor([n], dtype=torch.int64, device=_collective_device())
    every = [torch.zeros_like(mine) for _ in range(world())]
    torch.distributed.all_gather(every, mine)
    return [int(t) for t in every]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` of every rank, concatenated in rank order (uneven sizes allowed)."""
    sizes = all_sizes(x.shape[0])
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    torch.distributed.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def broadcast_bytes(data: bytes | None) -> bytes:
    """Rank 0's ``data`` on every rank (JSON text, a path: never pickles)."""
    where = _collective_device()
    length = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64, device=where)
    torch.distributed.broadcast(length, 0)
    buffer = torch.zeros(int(length), dtype=torch.uint8, device=where)
    if is_main() and data:
        buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    torch.distributed.broadcast(buffer, 0)
    return bytes(buffer.cpu().tolist())


def shared_folder(create: Callable[[], Path]) -> Path:
    """Rank 0 creates the run folder; the others get its path. A failure on rank 0 (its own
    ZooError, said there) ends the other ranks with a ZooError pointing at it."""
    if not active():
        return create()
    folder, failure = None, None
    if is_main():
        try:
            folder = create()
        except (ZooError, OSError) as exc:  # said by rank 0; the others stop with a pointer
            failure = exc
    text = broadcast_bytes(str(folder).encode() if folder is not None else b"")
    if failure is not None:
        raise failure
    if not text:
        raise TrainingError("rank 0 could not create the run folder; its message says why")
    return Path(text.decode())


def sync_rng(devices: list[torch.device] | None = None) -> None:
    """Every rank takes rank 0's global RNG state (CPU, and the CUDA device in use)."""
    if not active():
        return
    state = torch.get_rng_state()
    state_on = state.to(_collective_device())
    torch.distributed.broadcast(state_on, 0)
    torch.set_rng_state(state_on.cpu())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_state = torch.cuda.get_rng_state().to(_collective_device())
        torch.distributed.broadcast(cuda_state, 0)
        torch.cuda.set_rng_state(cuda_state.cpu())


def broadcast_model(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (the best weights, loaded there)."""
    if not active():
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        with torch.no_grad():
            if tensor.device == _collective_device():
                torch.distributed.broadcast(tensor.data, 0)
            else:
                moved = tensor.data.to(_collective_device())
                torch.distributed.broadcast(moved, 0)
                tensor.data.copy_(moved)


# --- a rank's share of the global batch ------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """This rank's rows ``start .. start + size`` of a global batch of ``total`` examples."""

    start: int
    size: int
    total: int


_SHARE: Share | None = None


@contextlib.contextmanager
def sharing(share: Share | None) -> Iterator[None]:
    global _SHARE
    before, _SHARE = _SHARE, share
    try:
        yield
    finally:
        _SHARE = before


def share_of(sizes: list[int]) -> Share:
    me = rank()
    return Share(sum(sizes[:me]), sizes[me], sum(sizes))


def rand_like(x: torch.Tensor) -> torch.Tensor:
    """``torch.rand_like(x)`` for a batch ``x``; inside a data-parallel step, this rank's rows of
    the draw for the whole global batch, so the noise is the one a single process draws and every
    rank's RNG advances alike."""
    share = _SHARE
    if share is None or x.dim() == 0 or x.shape[0] != share.size or share.size == share.total:
        return torch.rand_like(x)
    whole = torch.rand((share.total, *x.shape[1:]), dtype=x.dtype, device=x.device)
    return whole[share.start: share.start + share.size]


_LAST_TOTAL: int | None = None  # the global batch of the latest data-parallel step


def batch_examples(x: torch.Tensor) -> int:
    """The examples of the global batch a training step just took (``x``'s own in one process):
    what the epoch's mean training loss weights a step by."""
    return _LAST_TOTAL if active() and _LAST_TOTAL is not None else x.shape[0]


# --- the training step ---------------------------------------------------------------------------


class StepLoss(nn.Module):
    """The module DDP wraps: its forward is the task's step loss, the flow a submodule, so DDP
    sees every call that makes gradients. With ``empty`` (a rank with no examples in this global
    batch) it is a zero that still reaches every parameter, so the rank joins the all-reduce."""

    def __init__(self, model: nn.Module, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x, y, mode, loss_fn, empty: bool = False):
        if empty:
            zero = sum(p.sum() for p in self.model.parameters() if p.requires_grad)
            return zero * 0.0, {}
        return self.task.step_loss(self.model, x, y, mode, loss_fn)


_WRAPPERS: WeakKeyDictionary = WeakKeyDictionary()


def _wrapper(state):
    wrapped = _WRAPPERS.get(state.model)
    if wrapped is None:
        from torch.nn.parallel import DistributedDataParallel

        ids = [state.device.index] if state.device.type == "cuda" else None
        # broadcast_buffers off: zoo's buffers are constants or follow from the parameters
        # (actnorm's flag, masks, spectral-norm vectors), the same on every rank; one collective less
        wrapped = DistributedDataParallel(StepLoss(state.model, state.task), device_ids=ids,
                                          broadcast_buffers=False)
        _WRAPPERS[state.model] = wrapped
    return wrapped


def step_loss(state, x, y, mode, loss_fn):
    """The training step's ``(loss, logs)``. In one process, the task's. Under DDP, a loss whose
    backward gives this rank's weighted gradient (DDP averages them into the global batch mean)
    and whose value is the global batch's mean loss, the same on every rank (logged, checked for
    finiteness, seen by the plateau schedule)."""
    if not active():
        return state.task.step_loss(state.model, x, y, mode, loss_fn)
    global _LAST_TOTAL
    sizes = all_sizes(x.shape[0])
    share = share_of(sizes)
    _LAST_TOTAL = share.total
    with sharing(share):
        loss, logs = _wrapper(state)(x, y, mode, loss_fn, empty=share.size == 0)
    weighted = loss * (share.size * world() / share.total)
    mean = all_sum(weighted.reshape(1))[0].to(weighted.device, weighted.dtype) / world()
    if 0 in sizes:  # that rank drew no noise this step: all continue from rank 0's RNG
        sync_rng()
    return weighted + (mean - weighted).detach(), logs


# --- data-dependent initialisation ----------------------------------------------------------------


def _has_data_init(module: nn.Module) -> bool:
    return callable(getattr(module, "initialize_from", None)) and hasattr(module, "initialized")


def initialize(task, model: nn.Module, x, y, first_sizes: list[int] | None = None) -> None:
    """``task.initialize`` on the global first batch: each layer with ``initialize_from``
    (actnorm) is initialised from its input gathered over every rank, as one process sees it."""
    if not active():
        return task.initialize(model, x, y)

    def pre_hook(module, args):
        if module.training and not bool(module.initialized) and args:
            module.initialize_from(gather_rows(args[0]))

    hooks = [m.register_forward_pre_hook(pre_hook) for m in model.modules() if _has_data_init(m)]
    try:
        with sharing(share_of(all_sizes(x.shape[0]))):
            task.initialize(model, x, y)
    finally:
        for hook in hooks:
            hook.remove()


# --- loaders -------------------------------------------------------------------------------------


class SeededLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers' base seed comes from its own seeded generator, and which still
    takes the one global int64 per pass that a DataLoader without a generator takes, so the
    global RNG (dequantization noise) and the results do not depend on the worker count."""

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()
        return super().__iter__()


class ShardedLoader:
    """An evaluation split as this rank's shares of consecutive global batches, each yielded
    inside its ``sharing`` (so per-example noise is the single process's)."""

    def __init__(self, loader, shares: list[Share], whole):
        self.loader, self.shares = loader, shares
        self.whole = whole  # the split as one process reads it (a rank-0 evaluation)
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for item, share in zip(self.loader, self.shares):
            with sharing(share):
                yield item


def eval_loader(split, batch_size: int):
    """A split's evaluation loader: under DDP this rank's shares of every global batch."""
    from torch.utils.data import DataLoader

    if not active():
        return DataLoader(split, batch_size=batch_size)
    from zoo.data_order import share

    batches, shares = [], []
    for start in range(0, len(split), batch_size):
        batch = list(range(start, min(start + batch_size, len(split))))
        parts = [share(batch, r, world()) for r in range(world())]  # the training order's rule
        if parts[rank()]:
            batches.append(parts[rank()])
            shares.append(share_of([len(part) for part in parts]))
    return ShardedLoader(DataLoader(split, batch_sampler=batches), shares,
                         DataLoader(split, batch_size=batch_size))


def collate_allowing_empty(dataset, collate):
    """A collate that gives an empty share a batch of zero rows of the split's structure (so the
    rank's step still runs and joins the all-reduce) instead of failing on an empty list."""

    def wrapped(items):
        if items:
            return collate(items)
        one = collate([dataset[0]])
        return _empty_like(one)

    return wrapped


def _empty_like(item):
    if isinstance(item, torch.Tensor):
        return item[:0]
    if isinstance(item, (list, tuple)):
        return type(item)(_empty_like(i) for i in item)
    return item


class _OnePassPerEpoch(torch.utils.data.Sampler):
    """``order`` started at the first batch asked for: a worker DataLoader calls ``iter`` on its
    sampler twice when it starts (and drops the first), which would cost EpochBatches a pass."""

    def __init__(self, order):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        yield from self.order

    def __getattr__(self, name):  # first_batch, state, set_state, ...: the order's own
        if name == "order":
            raise AttributeError(name)
        return getattr(self.order, name)


def train_loader(dataset, order, recipe, seed: int, device_type: str):
    """The training loader: ``order`` (an EpochBatches) as its batch sampler; ``train.workers``
    worker processes (persistent; their base seed from a generator seeded by the run's seed),
    pinned memory on CUDA."""
    from torch.utils.data import DataLoader
    from torch.utils.data._utils.collate import default_collate

    workers = int(recipe.train.get("workers", 0))
    collate = collate_allowing_empty(dataset, default_collate) if world() > 1 else default_collate
    pin = device_type == "cuda"
    if workers == 0:  # exactly the loader a single process always had
        kwargs = {"collate_fn": collate} if world() > 1 else {}
        return DataLoader(dataset, batch_sampler=order, pin_memory=pin, **kwargs)
    generator = torch.Generator().manual_seed(int(seed) + 1_000_003 * (1 + rank()))
    return SeededLoader(dataset, batch_sampler=_OnePassPerEpoch(order), num_workers=workers, persistent_workers=True,
                        generator=generator, pin_memory=pin, collate_fn=collate)


# --- evaluation ----------------------------------------------------------------------------------


def evaluate(task, model, loader, device):
    """``task.evaluate`` of a split: sharded and reduced for ``REDUCIBLE_TASKS``; else rank 0
    evaluates the whole split (the loader's ``whole``) and every rank gets the result."""
    if not active():
        return task.evaluate(model, loader, device)
    from zoo.tasks import Evaluation

    if getattr(task, "name", None) in REDUCIBLE_TASKS:
        local = task.evaluate(model, loader, device)
        keys = sorted(k for k, v in local.values.items() if isinstance(v, (int, float)))
        sums = all_sum(torch.tensor([local.examples, local.score * local.examples,
                                     *[float(local.values[k]) * local.examples for k in keys]]))
        examples = int(sums[0])
        values = dict(local.values)
        values.update({k: float(sums[2 + i]) / max(examples, 1) for i, k in enumerate(keys)})
        score = float(sums[1]) / max(examples, 1)
        sync_rng()  # a rank whose last share was empty drew less noise
        return Evaluation(score, values, _line(task, values, model), examples)
    result = None
    if is_main():
        result = task.evaluate(model, getattr(loader, "whole", loader), device)
        text = json.dumps({"score": result.score, "values": result.values, "line": result.line,
                           "examples": result.examples}).encode()
    else:
        text = None
    shared = json.loads(broadcast_bytes(text).decode())
    sync_rng()
    if result is not None:
        return result
    return Evaluation(shared["score"], shared["values"], shared["line"], shared["examples"])


def _line(task, values: dict[str, Any], model) -> str:
    """The log line of a reduced evaluation (every REDUCIBLE_TASKS one has an NLL), as the task's
    own reads (``zoo.tasks.nll_line``, and generative_classify's accuracy after it)."""
    from zoo.tasks import nll_line

    line = nll_line(values["nll"], values["bpd"], len(getattr(model, "shape", ())) == 3)
    if "accuracy" in values:
        line += f", accuracy {values['accuracy']:.4f}"
    return line


# --- zoo run --nproc N -----------------------------------------------------------------------------


def launch(recipe, processes: int, argv: list[str]) -> int:
    """``zoo run ... --nproc N``: the same command under torchrun on this machine
    (``python -m torch.distributed.run --standalone --nproc-per-node N -m zoo run ...``, the
    arguments minus ``--nproc``); its exit status."""
    import subprocess
    import sys

    if processes < 1:
        raise RecipeError(f"--nproc {processes}: give a number of processes >= 1")
    if world() > 1:
        raise RecipeError("--nproc starts torchrun, and this is already one of its processes; "
                          "leave out --nproc under torchrun")
    check_recipe(recipe, processes)  # refused here, once, rather than by every rank
    forward, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            forward.append(token)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", "-m", "zoo", *forward]
    return subprocess.call(command)
