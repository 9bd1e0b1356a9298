"""Recipe -> objects: dataset, model (shape carried layer to layer), loss, gradient mode, optimizer.

The loss is paired with its data here (``build_objective``): a data loss needs a data set, a loss
that fits an energy target (``reverse_kl``) needs an energy target (``zoo.data.EnergyTarget``).

Every component is looked up in the registry. A factory is plugin code: what it raises or returns
is checked here, so a broken plugin ends in one PluginError naming the plugin, the component and
the place in the recipe, and a layer that cannot take its input shape in a ShapeError.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Mapping, Sequence

import torch

from zoo.budget import check_budget
from zoo.conditioning import ContextEncoder, encoder_for, is_conditioned, takes_context
from zoo.data import EnergyTarget, FlowDataset
from zoo.errors import ContextError, PluginError, RecipeError, ShapeError, ZooError
from zoo.flow import FlowModel
from zoo.recipe import Recipe, load_recipe
from zoo.registry import PLUGIN_FAILURES, KINDS, Registry, get_registry


def as_recipe(recipe: Recipe | Mapping[str, Any]) -> Recipe:
    """A mapping that is not yet a Recipe (an embedding caller's dict) is validated first."""
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe)


def call_factory(
    recipe: Recipe, kind: str, name: str, where: str, call: Callable[[Callable], Any],
    registry: Registry,
) -> Any:
    """``call(factory)`` for the component ``name`` of ``kind``, with plugin failures turned
    into one PluginError. ZooErrors a factory raises on purpose (bad params) pass through."""
    component = registry.get(kind, name)
    component.check_usable(f"{recipe.where}: {where}")
    try:
        return call(component.factory)
    except ZooError as exc:
        # A factory's own refusal (bad params, a shape it cannot take): say where in the recipe.
        # (A layer's ShapeError gets its input shape added by build_layers.)
        if recipe.where in str(exc) or (kind == "layers" and isinstance(exc, ShapeError)):
            raise
        raise type(exc)(f"{recipe.where}: {where}: {exc}") from exc
    except PLUGIN_FAILURES as exc:
        raise PluginError(
            f"{recipe.where}: {where}: the {KINDS[kind].singular} {name!r} of plugin "
            f"{component.plugin!r} failed: {type(exc).__name__}: {exc}. This is a bug in that "
            "plugin; report it to its authors, or pick another component."
        ) from exc


def _wrong_return(value: Any, recipe: Recipe, kind: str, name: str, where: str,
                  registry: Registry, wanted: str) -> PluginError:
    plugin = registry.get(kind, name).plugin
    return PluginError(
        f"{recipe.where}: {where}: the {KINDS[kind].singular} {name!r} of plugin {plugin!r} "
        f"returned a {type(value).__name__}, not {wanted}. This is a bug in that plugin."
    )


def dataset_params(recipe: Recipe | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    return as_recipe(recipe).component("dataset")


def build_dataset(recipe: Recipe | Mapping[str, Any], registry: Registry | None = None) -> FlowDataset:
    """The recipe's dataset, built by its plugin."""
    recipe, registry = as_recipe(recipe), registry or get_registry()
    name, params = recipe.component("dataset")
    dataset = call_factory(recipe, "datasets", name, "$.dataset", lambda f: f(**params), registry)
    if not isinstance(dataset, FlowDataset):
        raise _wrong_return(dataset, recipe, "datasets", name, "$.dataset", registry,
                            "a zoo.data.FlowDataset")
    return dataset


def data_shape(
    recipe: Recipe | Mapping[str, Any], registry: Registry | None = None
) -> tuple[tuple[int, ...], int | None]:
    """The per-sample shape and bits of the recipe's data, without loading it when the dataset
    factory can tell (``factory.data_shape(**params) -> (shape, n_bits)``)."""
    recipe, registry = as_recipe(recipe), registry or get_registry()
    name, params = recipe.component("dataset")
    factory = registry.get("datasets", name).factory
    if not hasattr(factory, "data_shape"):
        dataset = build_dataset(recipe, registry)
        return tuple(dataset.shape), dataset.n_bits
    shape, n_bits = call_factory(
        recipe, "datasets", name, "$.dataset", lambda f: f.data_shape(**params), registry
    )
    return tuple(shape), n_bits


def label_facts(dataset: FlowDataset, name: str = "") -> dict[str, Any]:
    """What a data set's labels are, for a conditional model: ``kind`` ("class", "attributes",
    "observed" or None), ``names``, ``shape``; plus ``dataset`` and the data set's own ``fix``
    (where label files go) for messages. run.json keeps the first three."""
    kind = dataset.label_kind
    names = dataset.classes if kind == "class" else dataset.attributes if kind == "attributes" else None
    shape = (list(dataset.observed) if kind == "observed" else
             [len(names)] if kind == "attributes" else None)
    prior = None
    if kind == "class":  # the training classes' frequencies: p(y) of a generative classifier
        from zoo.data import split_labels

        labels = split_labels(dataset.train)
        if labels is not None and len(labels):
            counts = torch.bincount(labels.long(), minlength=len(names)).double()
            prior = (counts / counts.sum()).tolist()
    return {"kind": kind, "names": list(names) if names is not None else None, "shape": shape,
            "prior": prior, "dataset": name, "fix": dataset.info.get("labels_fix")}


def dataset_label_facts(recipe: Recipe, registry: Registry) -> dict[str, Any]:
    """``label_facts`` of the recipe's data set (built: labels come with the data)."""
    return label_facts(build_dataset(recipe, registry), recipe.component("dataset")[0])


def build_context(recipe: Recipe, labels: Mapping[str, Any] | None, registry: Registry) -> ContextEncoder | None:
    """The ContextEncoder of a conditional recipe (None for an unconditional one)."""
    if recipe.context is None:
        return None
    facts = dict(labels) if labels is not None else dataset_label_facts(recipe, registry)
    facts.setdefault("dataset", recipe.component("dataset")[0])
    return encoder_for(recipe.context, facts, recipe.where)


def check_conditioning(recipe: Recipe, registry: Registry) -> None:
    """Validation's conditioning rules, for a recipe loaded without validation: the first broken
    one as a ContextError (a validated recipe passes them already)."""
    from zoo.recipe._marks import json_path
    from zoo.recipe._validate import conditioning_problems

    for problem in conditioning_problems(recipe, registry):
        raise ContextError(f"{recipe.where}: {json_path(problem.path)}: {problem.message}")


def conditionable_layers(registry: Registry) -> list[str]:
    return sorted(c.name for c in registry.components("layers") if takes_context(c.factory))


def build_layers(
    recipe: Recipe | Mapping[str, Any], shape: Sequence[int], registry: Registry | None = None,
    context_features: int = 0,
) -> list[torch.nn.Module]:
    """Instantiate the recipe's layers in order, carrying the per-sample shape from one to the next.

    With ``context_features`` (a conditional recipe), each layer whose factory ``takes_context``
    is built with it, unless its entry says ``conditioned: false``; an entry saying
    ``conditioned: true`` of a layer that cannot take a context is a ContextError."""
    recipe, registry = as_recipe(recipe), registry or get_registry()
    check_conditioning(recipe, registry)
    layers: list[torch.nn.Module] = []
    shape = tuple(shape)
    flags = recipe.layer_conditioning()
    for index, (path, name, params) in enumerate(recipe.layers()):
        where = f"{path} (layer {index}, {name!r})"
        if not registry.has("layers", name) and registry.has("network_layers", name):
            raise RecipeError(f"{recipe.where}: {where}: {name!r} is a network layer of classifiers, "
                              "not an invertible flow layer; it belongs in a recipe with task: classify")
        extra = _layer_context(recipe, registry, name, where, flags[index], context_features)
        try:
            layer = call_factory(
                recipe, "layers", name, where, lambda f: f(shape, **params, **extra), registry
            )
        except PluginError as exc:
            if not isinstance(exc.__cause__, ValueError):
                raise
            # The contract lets a layer refuse a shape with ValueError.
            raise ShapeError(
                f"{recipe.where}: {where} cannot take input shape {shape}: {exc.__cause__}"
            ) from exc.__cause__
        except ShapeError as exc:
            raise ShapeError(f"{recipe.where}: {where} cannot take input shape {shape}: {exc}") from exc
        if not isinstance(layer, torch.nn.Module):
            raise _wrong_return(layer, recipe, "layers", name, where, registry, "a torch.nn.Module")
        shape = tuple(getattr(layer, "out_shape", shape))
        layers.append(layer)
    return layers


def _layer_context(recipe: Recipe, registry: Registry, name: str, where: str, flag: bool | None,
                   context_features: int) -> dict[str, int]:
    """The ``context_features`` keyword a layer is built with (none for an unconditional one).
    Whether ``conditioned:`` makes sense is validation's (``check_conditioning``)."""
    can = takes_context(registry.get("layers", name).factory)
    if context_features and can and flag is not False:
        return {"context_features": int(context_features)}
    return {}


def build_base(recipe: Recipe, latent_shape: Sequence[int], registry: Registry,
               context_features: int = 0) -> torch.nn.Module:
    """The base distribution, built by its plugin for the latent shape (conditional when the
    recipe is and the base ``takes_context``)."""
    name, params = recipe.component("base")
    can = takes_context(registry.get("bases", name).factory)
    extra = {"context_features": int(context_features)} if context_features and can else {}
    base = call_factory(
        recipe, "bases", name, "$.model.base", lambda f: f(tuple(latent_shape), **params, **extra),
        registry,
    )
    if not isinstance(base, torch.nn.Module):
        raise _wrong_return(base, recipe, "bases", name, "$.model.base", registry, "a torch.nn.Module")
    for method in ("log_prob", "sample"):
        if not callable(getattr(base, method, None)):
            raise PluginError(
                f"{recipe.where}: $.model.base: the base distribution {name!r} has no {method}(); "
                "a base needs log_prob(z) and sample(shape, temperature, device, dtype)."
            )
    return base


def build_model(
    recipe: Recipe | Mapping[str, Any],
    shape: Sequence[int] | None = None,
    n_bits: int | None = None,
    registry: Registry | None = None,
    labels: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """The untrained model of a recipe: a FlowModel, or the classifier of a ``classify`` task.
    ``shape`` defaults to the dataset's sample shape; ``labels`` (``label_facts``) describe the
    data set's labels for a conditional recipe (default: read from the data set)."""
    recipe, registry = as_recipe(recipe), registry or get_registry()
    task = build_task(recipe, registry)
    if shape is None:
        shape, n_bits = data_shape(recipe, registry)
    if getattr(task, "model_kind", "flow") == "classifier":
        return task.build_model(recipe, tuple(shape), n_bits, registry,
                                labels if labels is not None else dataset_label_facts(recipe, registry))
    context = build_context(recipe, labels, registry)
    features = context.features if context is not None else 0
    # before any layer allocates (estimated on `meta`)
    check_budget(recipe, shape, registry, context_features=features)
    layers = build_layers(recipe, shape, registry, context_features=features)
    model = FlowModel(layers, shape, n_bits=n_bits, context=context)
    if model.latent_dim != math.prod(model.out_shape) + _factored_dims(model):
        raise ShapeError(
            f"{recipe.where}: the layers change the number of dimensions "
            f"({math.prod(shape)} in, {math.prod(model.out_shape) + _factored_dims(model)} out); "
            "a flow must keep it"
        )
    model.base = build_base(recipe, model.latent_shape, registry, context_features=features)
    if context is not None and not any(is_conditioned(m) for m in (*model.layers, model.base)):
        raise ContextError(
            f"{recipe.where}: $.context: the recipe is conditional, but none of its layers nor its "
            f"base takes the context. Layers that can: {', '.join(conditionable_layers(registry))}; "
            "bases that can: " + ", ".join(sorted(c.name for c in registry.components("bases")
                                                 if takes_context(c.factory)))
        )
    return model


def build_task(recipe: Recipe | Mapping[str, Any], registry: Registry | None = None):
    """The recipe's task (``zoo.tasks``), built by its plugin; ``density`` by default."""
    recipe, registry = as_recipe(recipe), registry or get_registry()
    if "task" not in recipe:  # the default needs no plugin (a registry may hold only a plugin's own)
        from zoo.plugins.tasks import density

        return density()
    name, params = recipe.task
    return call_factory(recipe, "tasks", name, "$.task", lambda f: f(**params), registry)


def _factored_dims(model: FlowModel) -> int:
    return sum(math.prod(layer.factored_shape) for layer in model.layers if hasattr(layer, "factored_shape"))


def build_loss(recipe: Recipe | Mapping[str, Any], registry: Registry | None = None):
    recipe, registry = as_recipe(recipe), registry or get_registry()
    name, params = recipe.component("loss")
    loss = call_factory(recipe, "losses", name, "$.loss", lambda f: f(**params), registry)
    if not callable(loss):
        raise _wrong_return(loss, recipe, "losses", name, "$.loss", registry, "a callable loss(model, x)")
    return loss


def energy_target_names(registry: Registry | None = None) -> list[str]:
    """The registered datasets that are energy targets (factory attribute ``energy_target``)."""
    registry = registry or get_registry()
    return sorted(c.name for c in registry.components("datasets")
                  if getattr(c.factory, "energy_target", False))


def build_objective(recipe: Recipe | Mapping[str, Any], dataset: FlowDataset,
                    registry: Registry | None = None):
    """The recipe's loss, checked against the dataset it trains on.

    A loss that fits energy targets (``loss.fits == "energy"``, e.g. ``reverse_kl``) is given its
    target (``loss.bind(target, where)``) and refuses a data set; every other loss fits data and
    refuses an energy target, which has none. Either refusal is a RecipeError naming the recipe.
    """
    recipe, registry = as_recipe(recipe), registry or get_registry()
    loss = build_loss(recipe, registry)
    loss_name, dataset_name = recipe.component("loss")[0], recipe.component("dataset")[0]
    is_target = isinstance(dataset, EnergyTarget)
    targets = ", ".join(energy_target_names(registry)) or "none registered"
    if getattr(loss, "fits", "data") == "energy":
        if not is_target:
            raise RecipeError(
                f"{recipe.where}: $.loss: {loss_name!r} fits an energy target (a density known by "
                f"its energy U(x); registered: {targets}), but $.dataset {dataset_name!r} is a data "
                "set. Use loss: nll to fit the data, or an energy target as the dataset."
            )
        call_factory(recipe, "losses", loss_name, "$.loss",
                     lambda _: loss.bind(dataset, f"{recipe.where}: $.loss"), registry)
    elif is_target:
        raise RecipeError(
            f"{recipe.where}: $.loss: {loss_name!r} fits data, but $.dataset {dataset_name!r} is an "
            "energy target: it gives an energy U(x) and no data. Use loss: reverse_kl (with "
            "direction: forward for flows without a differentiable inverse, like bnaf)."
        )
    return loss


def build_gradient_mode(recipe: Recipe | Mapping[str, Any], registry: Registry | None = None):
    recipe, registry = as_recipe(recipe), registry or get_registry()
    name, params = recipe.component("gradient_mode")
    mode = call_factory(recipe, "gradient_modes", name, "$.gradient_mode", lambda f: f(**params), registry)
    if not all(callable(getattr(mode, method, None)) for method in ("prepare", "loss")):
        raise _wrong_return(mode, recipe, "gradient_modes", name, "$.gradient_mode", registry,
                            "an object with prepare(model) and loss(model, x, loss_fn)")
    return mode


def _unwrapped(method):
    """The function under torch's dynamo wrapper (``functools.wraps`` keeps it), else ``method``."""
    return getattr(method, "__wrapped__", method)


def _dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


class _Adam(torch.optim.Adam):
    """``torch.optim.Adam`` whose first calls do not import ``torch._dynamo``.

    torch wraps ``add_param_group`` and ``zero_grad`` (``torch._disable_dynamo``) and ``step``
    (``_use_grad_for_differentiable``) in code that imports ``torch._dynamo`` on the first call
    (1-1.5 s, sympy and triton included), only so that a ``torch.compile`` trace skips them or
    breaks its graph there. No trace can run before ``torch._dynamo`` is imported, so until it
    is, the unwrapped methods do the same work; once it is, torch's own wrappers run."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if _dynamo_loaded():
            return super().add_param_group(param_group)
        return _unwrapped(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if _dynamo_loaded():
            return super().zero_grad(set_to_none)
        return _unwrapped(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    def step(self, closure=None):
        if _dynamo_loaded():
            return super().step(closure)
        # What _use_grad_for_differentiable does outside a trace (its graph breaks are no-ops).
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return _unwrapped(torch.optim.Adam.step)(self, closure)

    # Checkpoints (zoo.checkpoint) read and write the state; torch wraps these two the same way.
    def state_dict(self) -> dict[str, Any]:
        if _dynamo_loaded():
            return super().state_dict()
        return _unwrapped(torch.optim.Optimizer.state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if _dynamo_loaded():
            return super().load_state_dict(state_dict)
        return _unwrapped(torch.optim.Optimizer.load_state_dict)(self, state_dict)


def build_optimizer(model: torch.nn.Module, train: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam over every trainable parameter (the seeds all use Adam)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ZooError("the model has no trainable parameters: add a layer with weights to the recipe")
    settings = dict(
        lr=float(train["lr"]),
        betas=tuple(train.get("betas", (0.9, 0.999))),
        weight_decay=float(train.get("weight_decay", 0.0)),
    )
    # The fused kernel does one pass over each parameter (plain Adam does several): on CPU it
    # cuts the optimizer step of a 4096 x 4096 layer from ~80 to ~13 ms.
    if all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        return _Adam(params, fused=True, **settings)
    return _Adam(params, **settings)
