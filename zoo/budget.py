"""Memory budget: refuse a model, a batch or a sample count that cannot fit, before allocating it.

    check_budget(recipe, shape)        # at assembly, before any layer is built (build_model)
    check_batch(model, batch_size)     # before training or evaluating a built model in batches
    check_sample_count(model, n)       # before `zoo sample -n N`

The estimate, in bytes (``P``: the parameters and buffers; ``A_l``: the output of layer ``l`` for
one sample; ``B``: the batch size):

    building            P
    training            4 P + 3 B sum_l A_l    (weights, gradients and Adam's two moments; autograd
                                                keeps every layer's output, x3 for what the layer
                                                computes inside it)
    inference           P + 4 B max_l A_l      (no graph kept: a few tensors of the largest layer)

``P`` is counted by building each layer on PyTorch's ``meta`` device, which records shapes and
allocates nothing, so ``hidden: 2000000000`` is measured, not attempted. A layer's data-dependent
questions while it is built (``noise.std().item()``) get a placeholder answer; a layer that still
cannot be built there is skipped, its shape taken as unchanged, and the estimate counts the others. The activations count only the
layers' outputs (not, e.g., a coupling network's hidden units), so the estimate is a lower bound:
it refuses what cannot fit, not what might.

The available memory is the smallest of /proc/meminfo's MemAvailable, the cgroup's limit less its
usage and the process's address-space limit less its size (``os.sysconf`` where there is no
/proc); for a model on a CUDA device, that device's free memory. ``train.allow_large: true`` in a
recipe, or ``ZOO_ALLOW_LARGE=1`` in the environment, turns a refusal into a go-ahead.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch.overrides import TorchFunctionMode

from zoo._memory import format_bytes, host_memory_available
from zoo.errors import RecipeError, ZooError
from zoo.recipe._validate import MAX_LAYER_ENTRIES, model_layer_count

ALLOW_ENV = "ZOO_ALLOW_LARGE"
OPTIMIZER_COPIES = 4  # weights, gradients, Adam's exp_avg and exp_avg_sq
AUTOGRAD_FACTOR = 3  # per saved layer output: the output and what the layer computes inside
INFERENCE_FACTOR = 4  # live tensors of the largest layer without a graph: input, output, temporaries
OVERFLOW_BYTES = 2**63  # what a tensor too large for PyTorch to size counts as


@dataclass(frozen=True)
class Estimate:
    """What a model needs, in bytes: ``param_bytes`` (parameters and buffers), and per sample
    ``activation_bytes`` (every layer's output, the input included) and ``peak_bytes`` (the
    largest of them). ``uncounted``: recipe paths of layers whose parameters could not be counted;
    ``largest``: ``(bytes, description)`` of the layer with the most parameter bytes."""

    param_bytes: int
    activation_bytes: int
    peak_bytes: int
    uncounted: tuple[str, ...] = ()
    largest: tuple[int, str] = (0, "")

    def training_bytes(self, batch_size: int) -> int:
        return OPTIMIZER_COPIES * self.param_bytes + AUTOGRAD_FACTOR * batch_size * self.activation_bytes

    def inference_bytes(self, batch_size: int) -> int:
        return self.param_bytes + INFERENCE_FACTOR * batch_size * self.peak_bytes


# --- how much memory there is --------------------------------------------------------------------


def available_memory(device: Any = None) -> int | None:
    """Bytes that can still be allocated on ``device`` (None or "cpu": host memory), or None when
    this machine does not say."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError):  # no CUDA here after all
            return None
    if device.type != "cpu":
        return None  # meta, mps, ...: nothing to compare with
    return host_memory_available()


def large_allowed(recipe: Mapping | None = None) -> bool:
    """``ZOO_ALLOW_LARGE=1`` in the environment, or ``train.allow_large: true`` in the recipe."""
    if os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    train = recipe.get("train") if isinstance(recipe, Mapping) else None
    return isinstance(train, Mapping) and train.get("allow_large") is True


# --- estimates -----------------------------------------------------------------------------------

_STOP = object()  # the layer refuses its input (a ZooError, a ValueError): the real build says why


def estimate_recipe(recipe, shape: Sequence[int], registry=None, context_features: int = 0) -> Estimate:
    """The estimate of a recipe's model on inputs of per-sample ``shape``, built on ``meta``
    (conditional layers with ``context_features`` inputs more, as assembly builds them).

    Refuses (RecipeError) more than MAX_LAYER_ENTRIES layers before expanding the repeat blocks.
    Layers the registry does not know or that refuse their input end the count: building the
    model for real reports them with their place in the recipe.
    """
    from zoo.registry import get_registry

    count = model_layer_count(recipe)
    if count > MAX_LAYER_ENTRIES:
        raise RecipeError(
            f"{_where(recipe)}: $.model.layers: the model has {count:,} layers once its repeat "
            f"blocks are multiplied out; zoo builds at most {MAX_LAYER_ENTRIES:,}. Lower the "
            "`repeat:` counts."
        )
    registry = registry or get_registry()
    element = torch.tensor([], dtype=torch.get_default_dtype()).element_size()
    shape = tuple(shape)
    act = math.prod(shape) * element
    param_bytes, activation_bytes, peak = 0, act, act
    uncounted: list[str] = []
    largest: tuple[int, str] = (0, "")
    built: dict[tuple, Any] = {}  # a repeat block builds the same layer on the same shape again
    flags = recipe.layer_conditioning()
    for index, (path, name, params) in enumerate(recipe.layers()):
        if not registry.has("layers", name) or registry.get("layers", name).error:
            break
        if (context_features and flags[index] is not False
                and getattr(registry.get("layers", name).factory, "takes_context", False)):
            params = {**params, "context_features": int(context_features)}
        key = (name, shape, json.dumps(params, sort_keys=True, default=repr))
        if key not in built:
            built[key] = _meta_layer(registry.get("layers", name).factory, shape, params)
        result = built[key]
        if result is _STOP:
            break
        if result is None:  # not countable: its shape taken as unchanged
            uncounted.append(path)
            activation_bytes += act
            continue
        nbytes, shape = result
        param_bytes += nbytes
        if nbytes > largest[0]:
            size = ("more than PyTorch can size" if nbytes >= OVERFLOW_BYTES
                    else format_bytes(nbytes))
            largest = (nbytes, f"{path} ({name!r}, {size} of parameters)")
        act = math.prod(shape) * element
        activation_bytes += act
        peak = max(peak, act)
    return Estimate(param_bytes, activation_bytes, peak, tuple(uncounted), largest)


class _Unanswerable(Exception):
    """A layer asked for more values of meta tensors than a construction plausibly needs."""


class _MetaScalars(TorchFunctionMode):
    """Answers the data-dependent questions a layer asks while it is built on ``meta`` --
    ``t.item()``, ``bool(t)``, ``float(t)``, ``int(t)`` -- with a placeholder 1, so its
    construction goes on and its parameters can be counted (a layer that scales its initial
    noise by ``noise.std().item()`` builds). A loop that waits for a meta value to converge
    would never end: past ``MAX_ANSWERS`` the layer is given up as not countable."""

    MAX_ANSWERS = 1000
    _SCALAR: ClassVar[dict] = {torch.Tensor.item: None, torch.Tensor.__bool__: True,
               torch.Tensor.__float__: 1.0, torch.Tensor.__int__: 1, torch.Tensor.__index__: 1}

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._SCALAR and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            self.answers += 1
            if self.answers > self.MAX_ANSWERS:
                raise _Unanswerable(f"more than {self.MAX_ANSWERS} values of meta tensors asked for")
            answer = self._SCALAR[func]
            if answer is None:  # .item(): a number of the tensor's kind
                dtype = args[0].dtype
                return True if dtype == torch.bool else 1.0 if dtype.is_floating_point else 1
            return answer
        return func(*args, **(kwargs or {}))


def _meta_layer(factory, shape: tuple, params: dict) -> Any:
    """``(parameter bytes, out_shape)`` of one layer built on the meta device; None when it cannot
    be built there; _STOP when it refuses the shape or its parameters."""
    try:
        with warnings.catch_warnings(), torch.device("meta"), _MetaScalars():
            warnings.simplefilter("ignore")
            layer = factory(shape, **params)
        if not isinstance(layer, torch.nn.Module):
            return _STOP
        out_shape = tuple(int(size) for size in getattr(layer, "out_shape", shape))
    except (ZooError, ValueError):
        return _STOP
    except Exception as exc:  # noqa: BLE001 - plugin code that cannot run on meta: not countable
        if "overflow" in str(exc).lower():  # "Storage size calculation overflowed": past 2**63 bytes
            return OVERFLOW_BYTES, shape
        return None
    return _tensor_bytes(layer), out_shape


def _tensor_bytes(module: torch.nn.Module) -> int:
    tensors = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def estimate_model(model: torch.nn.Module) -> Estimate:
    """The estimate of a built model (a FlowModel: its ``shapes``, else its layers' ``out_shape``)."""
    element = _element_size(model)
    shapes = getattr(model, "shapes", None)
    if not shapes:
        shape = tuple(getattr(model, "shape", ()))
        shapes = [shape]
        for layer in getattr(model, "layers", ()):
            shape = tuple(getattr(layer, "out_shape", shape))
            shapes.append(shape)
    sizes = [math.prod(shape) * element for shape in shapes]
    return Estimate(_tensor_bytes(model), sum(sizes), max(sizes))


# --- checks --------------------------------------------------------------------------------------


def check_budget(recipe, shape: Sequence[int], registry=None, *, training: bool = False,
                 context_features: int = 0) -> Estimate:
    """Refuse (RecipeError) a recipe whose model cannot be built here, before building it.

    ``training=False`` (what ``build_model`` asks): the weights plus the inference activations of
    one evaluation batch; ``training=True``: the training footprint at the training batch size.
    Returns the estimate.
    """
    estimate = estimate_recipe(recipe, shape, registry, context_features)
    loader = recipe.loader
    batch = loader["batch_size"] if training else loader["eval_batch_size"]
    need = estimate.training_bytes(batch) if training else estimate.inference_bytes(batch)
    what = (f"to train with batch_size {batch}" if training
            else f"to build and evaluate with batches of {batch}")
    _refuse_past(need, available_memory(), estimate, _where(recipe), what, large_allowed(recipe),
                 fix="lower the layers' widths, their number or the batch size",
                 override=f"set train.allow_large=true or the environment variable {ALLOW_ENV}=1")
    return estimate


def check_batch(model: torch.nn.Module, batch_size: int, *, training: bool = True,
                allow_large: bool = False, where: str = "the model") -> Estimate:
    """Refuse (RecipeError) running a built ``model`` on batches of ``batch_size`` when it cannot
    fit beside the model (its parameters are allocated already; training adds their gradients and
    Adam's moments)."""
    _check_count(batch_size, "batch_size", where)
    estimate = estimate_model(model)
    extra = (OPTIMIZER_COPIES - 1) * estimate.param_bytes if training else 0
    per_batch = (AUTOGRAD_FACTOR * estimate.activation_bytes if training
                 else INFERENCE_FACTOR * estimate.peak_bytes)
    need = extra + batch_size * per_batch
    what = f"{'to train' if training else 'to evaluate'} with batch_size {batch_size}"
    _refuse_past(need, available_memory(_device_of(model)), estimate, where, what,
                 allow_large or large_allowed(), fix="lower the batch size")
    return estimate


def check_sample_count(model: torch.nn.Module, n: int, *, allow_large: bool = False,
                       where: str = "zoo sample") -> Estimate:
    """Refuse (RecipeError) drawing ``n`` samples at once from a built ``model`` when they cannot
    fit (inference through the largest layer, and the samples kept)."""
    _check_count(n, "the number of samples (-n)", where)
    estimate = estimate_model(model)
    shape = tuple(getattr(model, "shape", ()))
    sample_bytes = math.prod(shape) * _element_size(model) if shape else estimate.peak_bytes
    need = n * (INFERENCE_FACTOR * estimate.peak_bytes + sample_bytes)
    _refuse_past(need, available_memory(_device_of(model)), estimate, where,
                 f"to draw {n:,} samples at once", allow_large or large_allowed(),
                 fix="draw fewer samples (-n)")
    return estimate


def _check_count(n: Any, what: str, where: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RecipeError(f"{where}: {what} must be a whole number of at least 1, got {n!r}")


def _element_size(model: torch.nn.Module) -> int:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.get_default_dtype()
    return torch.tensor([], dtype=dtype).element_size()


def _device_of(model: torch.nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def _where(recipe: Any) -> str:
    where = getattr(recipe, "where", None)
    return where if isinstance(where, str) else "<recipe>"


def _refuse_past(need: int, available: int | None, estimate: Estimate, where: str, what: str,
                 allowed: bool, fix: str, override: str = f"set the environment variable {ALLOW_ENV}=1") -> None:
    if available is None or need <= available or allowed:
        return
    parts = [f"{format_bytes(estimate.param_bytes)} of parameters"]
    if estimate.largest[1]:
        parts.append(f"the largest layer is {estimate.largest[1]}")
    if estimate.uncounted:
        parts.append(f"{len(estimate.uncounted)} layers not counted")
    raise RecipeError(
        f"{where}: {what} needs at least {format_bytes(need)} of memory ({'; '.join(parts)}), but "
        f"{format_bytes(available)} is available. Make it smaller ({fix}); or, to try anyway, "
        f"{override}."
    )
