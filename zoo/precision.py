"""How a training step computes, beyond what it computes: ``train.precision``,
``train.checkpoint_grads`` and ``train.compile``.

``precision: bf16``
    bfloat16 autocast (CUDA only) around the layers' arithmetic in the training step and in
    evaluation (``autocast``). ``FlowModel`` keeps the sum of the log-determinants and the base
    log-density in float32 (each layer's log-det is cast before it is added), so the loss is
    float32. On a CPU it is refused at start: CPU autocast runs bfloat16 slower than float32 here.
``checkpoint_grads: true``
    Activation checkpointing per flow step (``FlowModel.checkpoint_steps``, set by
    ``configure``): the training forward keeps each step's input and recomputes the step's
    activations in the backward pass (``torch.utils.checkpoint``, non-reentrant, RNG state
    replayed, so dequantization noise is drawn again identically). A step is one copy of a
    ``repeat:`` block (Glow's actnorm + 1x1 conv + coupling); a layer outside any repeat block
    is a step of its own. Layers that change a buffer in their training forward (conv_exp's
    power iteration) see, when recomputed, the buffers the forward saw (``checkpoint_segment``).
``compile: true``
    ``torch.compile`` of the model's training forward (``compiled``); evaluation and sampling
    stay eager. Refused at start where it cannot work (no C++ compiler for a CPU run, no Triton
    for a CUDA run, a Python that dynamo does not support).

``check`` runs before anything is built or written, so a refused setting leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from zoo.errors import RecipeError, TrainingError

LOW_PRECISION = (torch.bfloat16, torch.float16)


# --- refusals at start ---------------------------------------------------------------------------


def check(recipe, device: torch.device) -> None:
    """Refuse a ``train.precision`` / ``compile`` / ``checkpoint_grads`` that cannot run on
    ``device``, naming the recipe key and the fix (before anything is built or written)."""
    train = recipe.train
    where = recipe.where
    if train.get("precision", "float32") == "bf16" and device.type != "cuda":
        raise RecipeError(
            f"{where}: $.train.precision: bf16 runs on CUDA only (bfloat16 autocast), and this run's "
            f"device is {device}. Set train.precision=float32 (the default) for a CPU run, or run "
            "where CUDA is available (train.device=cuda)."
        )
    if (train.get("compile") or train.get("checkpoint_grads")) and recipe.task[0] == "classify":
        key = "compile" if train.get("compile") else "checkpoint_grads"
        raise RecipeError(
            f"{where}: $.train.{key}: applies to flows (FlowModel), and this recipe's task "
            f"`classify` trains a classifier. Remove train.{key}."
        )
    if train.get("compile") and train.get("checkpoint_grads"):
        raise RecipeError(
            f"{where}: $.train.compile: torch.compile and train.checkpoint_grads together are not "
            "supported (dynamo cannot trace the per-step checkpoint with the context that replays "
            "the buffers a step changed). Keep one of them: train.compile=false or "
            "train.checkpoint_grads=false."
        )
    if train.get("compile"):
        problem = compile_problem(device)
        if problem:
            raise RecipeError(f"{where}: $.train.compile: torch.compile cannot run here: {problem}. "
                              "Set train.compile=false (the default) to train eagerly.")


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work for ``device`` on this machine, or None."""
    import torch._dynamo  # only when compile is asked for: it imports sympy (about a second)

    if not torch._dynamo.is_dynamo_supported():
        import sys

        return f"dynamo does not support Python {sys.version.split()[0]} in torch {torch.__version__}"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401  (inductor's CUDA code generator)
        except ImportError:
            return "inductor's CUDA backend needs Triton (pip install triton)"
        return None
    if device.type != "cpu":
        return f"zoo compiles for cpu and cuda only, not {device.type}"
    compiler = os.environ.get("CXX") or "g++"  # what inductor's C++ backend calls
    if shutil.which(compiler) is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        return (f"inductor's CPU backend needs a C++ compiler and none was found ({compiler}, c++, "
                "clang++ on PATH, or CXX); install one (e.g. apt-get install g++)")
    return None


# --- bf16 ----------------------------------------------------------------------------------------


def autocast(precision: str, device_type: str):
    """The context of a training step's (and an evaluation's) forward pass: bfloat16 autocast
    for ``precision == "bf16"`` on ``device_type``, else nothing. ``check`` keeps bf16 off the
    CPU in runs; tests pass ``"cpu"`` here to exercise the same code on CPU autocast."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return nullcontext()


def step_autocast(train: Mapping[str, Any], device: torch.device):
    """``autocast`` for a run's ``train`` settings and device."""
    return autocast(train.get("precision", "float32"), device.type)


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype log-determinants are summed in: float32 for bfloat16/half inputs, else x's."""
    return torch.float32 if x.dtype in LOW_PRECISION else x.dtype


@contextmanager
def full_precision(device_type: str):
    """Autocast off within the block (the base log-density under bf16 runs in float32)."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            yield True
    else:
        yield False


# --- activation checkpointing -------------------------------------------------------------------


def step_segments(recipe) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` over the model's layers: one per flow step.

    The recipe's layer paths say which block each layer came from; a repeat copy starts where a
    block's first entry (``...layers[0]``) comes again. A layer outside any repeat block is a
    segment of its own."""
    segments: list[tuple[int, int]] = []
    previous_parent = None
    for index, (path, _name, _params) in enumerate(recipe.layers()):
        parent, _, last = path.rpartition(".layers[")
        in_block = parent != "$.model" and parent.startswith("$.model")
        starts = not in_block or parent != previous_parent or last == "0]"
        if starts or not segments:
            segments.append((index, index + 1))
        else:
            segments[-1] = (segments[-1][0], index + 1)
        previous_parent = parent if in_block else None
    return segments


def configure(model: nn.Module, recipe) -> None:
    """Set up a run's model for ``train.checkpoint_grads`` and ``train.compile`` (both off by
    default: then the model is left as it is)."""
    train = recipe.train
    if train.get("checkpoint_grads"):
        segments = step_segments(recipe)
        if segments and segments[-1][1] != len(model.layers):
            raise RecipeError(f"{recipe.where}: $.train.checkpoint_grads: the recipe's layers "
                              f"({segments[-1][1]}) do not match the model's ({len(model.layers)})")
        model.checkpoint_steps = segments
    if train.get("compile"):
        compiled(model)


def _stateful_buffers(modules: Sequence[nn.Module]) -> list[tuple[dict, str, torch.Tensor]]:
    return [(m._buffers, name, b) for layer in modules for m in layer.modules()
            for name, b in m._buffers.items() if b is not None]


class _Replay:
    """The recompute context of one checkpointed segment: its buffers as the forward found them.

    Buffers a layer updates in its training forward (conv_exp's power-iteration vectors) would
    otherwise be updated a second time by the recomputation, which would then compute other
    values than the forward did (and checkpointing would change the gradients). The forward's
    starting values are kept for the buffers the forward changed (seen by their version
    counters); during the recomputation the module holds a copy of them, and gets its own
    tensors back afterwards. Rebinding, not copying in place, so no saved tensor's version
    changes."""

    def __init__(self, modules: Sequence[nn.Module]):
        self.before = [(owner, name, b, b._version, b.clone()) for owner, name, b in _stateful_buffers(modules)]
        self.changed: list[tuple[dict, str, torch.Tensor]] = []

    def forward_done(self) -> None:
        self.changed = [(owner, name, old) for owner, name, b, version, old in self.before
                        if b._version != version]
        self.before = []  # the unchanged copies are dropped now, not at backward

    @contextmanager
    def recompute(self):
        current = [(owner, name, owner[name]) for owner, name, _ in self.changed]
        for owner, name, old in self.changed:
            owner[name] = old.clone()  # a fresh copy: a second backward recomputes again
        try:
            yield
        finally:
            for owner, name, tensor in current:
                owner[name] = tensor


def checkpoint_segment(fn: Callable, modules: Sequence[nn.Module], *args):
    """``fn(*args)`` under non-reentrant activation checkpointing, with the RNG state and, for
    the recomputation, the buffers of ``modules`` replayed (``_Replay``)."""
    from torch.utils.checkpoint import checkpoint

    replay = _Replay(modules)
    out = checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True,
                     context_fn=lambda: (nullcontext(), replay.recompute()))
    replay.forward_done()
    return out


def refuse_uninitialized(modules: Sequence[nn.Module]) -> None:
    """Data-dependent initialisation inside a checkpointed step would run again when it is
    recomputed; zoo initialises before training, so this is a caller that skipped it."""
    for layer in modules:
        for m in layer.modules():
            flag = m._buffers.get("initialized") if hasattr(m, "_buffers") else None
            if flag is not None and flag.numel() == 1 and not bool(flag):
                raise TrainingError(
                    f"train.checkpoint_grads: layer {type(m).__name__} is not initialised yet "
                    "(its data-dependent initialisation would run again in the recomputation); "
                    "call model.initialize(x) on a first batch before training"
                )


# --- torch.compile -------------------------------------------------------------------------------


def compiled(model: nn.Module) -> nn.Module:
    """The model with its training forward (``FlowModel._forward`` in train mode with gradients:
    not the no-grad data-dependent initialisation) compiled by
    ``torch.compile``; evaluation, sampling and the weights are untouched. Returns the model."""
    if not hasattr(model, "_compiled_forward"):
        raise TypeError(f"train.compile compiles a FlowModel's forward, not a {type(model).__name__}")
    model._compiled_forward = torch.compile(model._forward_layers, dynamic=False)
    return model


def in_float32(fn: Callable, *args):
    """``fn(*args)`` in float32 with autocast off, where autocast is on (else as it is).

    For custom autograd Functions whose hand-written backward mixes saved float32 weights with
    the bfloat16 gradients autocast would give their outputs (the self-normalized layers): they
    run in float32 under ``train.precision: bf16``, the rest of the model in bfloat16."""
    tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if tensor is None or not torch.is_autocast_enabled(tensor.device.type):
        return fn(*args)
    args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in LOW_PRECISION else a for a in args)
    with torch.autocast(tensor.device.type, enabled=False):
        return fn(*args)
