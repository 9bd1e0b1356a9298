"""The resolved recipe (``Recipe``): its normal form, its parts, its sha256 and its YAML."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from zoo.errors import RecipeError
from zoo.recipe import _validate as validation
from zoo.recipe._marks import json_path, recipe_resolvers
from zoo.recipe._validate import LAYER_ENTRY_KEYS, LOADER_KEYS

TOP_LEVEL_ORDER = (
    "name", "description", "paper", "tags", "license",
    "task", "dataset", "context", "model", "loss", "gradient_mode", "train", "hub",
)
DEFAULT_BATCH_SIZE = 100


class Recipe(dict):
    """A resolved, validated recipe: plain JSON data in the normal form (see ``zoo.recipe``).

    It is a mapping (so it serialises as it is), and it gives its parts, so that no consumer
    re-splits the bare dict or re-applies defaults:

        recipe.component("dataset")   # ("mnist", {...factory params, loader keys removed})
        recipe.loader                 # {"batch_size": 64, "eval_batch_size": 64}
        recipe.layers()               # [(json path, name, params)] in model order
        recipe.components()           # [(kind, name)] of every component it names
        recipe.train                  # the training plan, every key filled

    ``path`` is the file it was loaded from (None when built from a mapping).
    """

    path: Path | None = None

    def __init__(self, data: Mapping[str, Any] = (), path: Path | None = None):
        super().__init__(data)
        self.path = path

    @property
    def where(self) -> str:
        """How messages name this recipe: its file, else its name."""
        return str(self.path) if self.path else f"recipe {self.get('name', '<unnamed>')!r}"

    @property
    def sha256(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace): independent of key order,
        YAML formatting and comments."""
        canonical = json.dumps(self, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def train(self) -> dict[str, Any]:
        return self["train"]

    @property
    def loader(self) -> dict[str, int]:
        """The data loaders' batch sizes (``eval_batch_size`` defaults to ``batch_size``)."""
        _, params = normalize_component(self["dataset"])
        batch = int(params.get("batch_size", DEFAULT_BATCH_SIZE))
        eval_batch = params.get("eval_batch_size")
        return {"batch_size": batch, "eval_batch_size": int(eval_batch or batch)}

    def component(self, key: str) -> tuple[str, dict[str, Any]]:
        """``(name, params)`` of the component at ``key``: ``dataset`` (its factory's params,
        without the loader keys), ``loss``, ``gradient_mode`` or ``base`` (``model.base``)."""
        entry = self["model"]["base"] if key == "base" else self[key]
        name, params = normalize_component(entry)
        if key == "dataset":
            params = {k: v for k, v in params.items() if k not in LOADER_KEYS}
        return name, params

    def layers(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(json_path, name, params)`` of every layer in model order, repeats expanded (the
        entry key ``conditioned`` is not a param: ``layer_conditioning`` gives it)."""
        return [(path, name, {k: v for k, v in params.items() if k not in LAYER_ENTRY_KEYS})
                for path, name, params in iter_layer_entries(self["model"]["layers"])]

    def layer_conditioning(self) -> list[bool | None]:
        """Each layer's ``conditioned:`` (True, False, or None when the entry does not say), in
        the order of ``layers``."""
        return [params.get("conditioned") for _, _, params in iter_layer_entries(self["model"]["layers"])]

    @property
    def task(self) -> tuple[str, dict[str, Any]]:
        """``(name, params)`` of the recipe's task; ``density`` when it names none."""
        return normalize_component(self.get("task", "density"))

    @property
    def context(self) -> dict[str, Any] | None:
        """The recipe's ``context:`` (what the flow is conditioned on), or None."""
        return self.get("context") or None

    def components(self) -> list[tuple[str, str]]:
        """``(kind, name)`` of every component the recipe names, layers first, in order."""
        named = [("layers", name) for _, name, _ in self.layers()]
        named.append(("tasks", self.task[0]))
        for kind, key in (("bases", "base"), ("datasets", "dataset"), ("losses", "loss"),
                          ("gradient_modes", "gradient_mode")):
            named.append((kind, self.component(key)[0]))
        return named

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (``yaml.safe_dump``): top-level keys in a readable order,
        layer entries and short lists on one line each."""
        header = f"# Resolved by zoo (sha256 {self.sha256}); `zoo run` this file to train it again.\n"
        return header + yaml.dump(
            _inline_leaves(_ordered(dict(self))),
            Dumper=_RecipeDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )


def normalize_component(entry: Any) -> tuple[str, dict]:
    """``"moons"`` or ``{name: moons, **params}`` -> ``("moons", params)``."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise RecipeError(
        f"a component must be a name or a mapping with a `name` key, got {entry!r}"
    )


def iter_layer_entries(
    layers: Sequence[Any], prefix: str = "$.model.layers"
) -> Iterator[tuple[str, str, dict]]:
    """``(json_path, name, params)`` of every layer in model order, repeat blocks expanded (each
    copy yields the block's entries again, with the same path: the place in the recipe)."""
    for path, entry in validation.layer_entries(list(layers), (), expand=True):
        name, params = normalize_component(entry)
        yield prefix + json_path(path)[1:], name, params


# --- YAML output ---------------------------------------------------------------------------------


class _RecipeDumper(yaml.SafeDumper):
    """SafeDumper that writes inline mappings and lists in flow style (`{name: actnorm}`), and
    quotes strings the recipe loader would read as floats (`"1e-3"`)."""

    yaml_implicit_resolvers = recipe_resolvers(timestamps=True)


class _InlineMapping(dict):
    pass


class _InlineList(list):
    pass


_RecipeDumper.add_representer(
    _InlineMapping, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True)
)
_RecipeDumper.add_representer(
    _InlineList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _inline_leaves(value: Any, depth: int = 0) -> Any:
    """Mappings and lists of scalars below the top level are written on one line when short."""
    if isinstance(value, dict):
        items = {k: _inline_leaves(v, depth + 1) for k, v in value.items()}
        short = len(json.dumps(value)) <= 80
        if depth >= 1 and short and all(_is_scalar(v) for v in value.values()):
            return _InlineMapping(items)
        return items
    if isinstance(value, list):
        items = [_inline_leaves(v, depth + 1) for v in value]
        if value and all(_is_scalar(v) for v in value):
            return _InlineList(items)
        return items
    return value


def _ordered(data: dict) -> dict:
    """Top-level keys in TOP_LEVEL_ORDER (others after, sorted); `name` first in components,
    `repeat` first in blocks."""
    out = {k: data[k] for k in TOP_LEVEL_ORDER if k in data}
    out.update({k: data[k] for k in sorted(data) if k not in out})
    return {k: _ordered_entry(v) for k, v in out.items()}


def _ordered_entry(value: Any) -> Any:
    if isinstance(value, dict):
        first = [k for k in ("name", "repeat") if k in value]
        return {k: _ordered_entry(value[k]) for k in first + [k for k in value if k not in first]}
    if isinstance(value, list):
        return [_ordered_entry(v) for v in value]
    return value


# --- the normal form -----------------------------------------------------------------------------


def normal_form(data: dict) -> dict:
    """Fill defaults and put a valid recipe in its one normal form (see the module docstring)."""
    data = copy.deepcopy(data)
    schema = validation.static_schema()
    if "dataset" in data:
        dataset = _as_mapping(data["dataset"])
        if isinstance(dataset, dict):
            dataset.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        data["dataset"] = dataset
    for key in ("loss", "gradient_mode"):
        data[key] = _as_mapping(data.get(key, schema["properties"][key]["default"]))
    model = data.get("model")
    if isinstance(model, dict):
        model.setdefault("base", schema["$defs"]["model"]["properties"]["base"]["default"])
        preamble = model.pop("preamble", None)
        if isinstance(preamble, list) and isinstance(model.get("layers"), list):
            model["layers"] = preamble + model["layers"]
        elif preamble is not None:  # unvalidated recipe: keep it where it was
            model["preamble"] = preamble
        data["model"] = {k: model[k] for k in ("base", "layers", "preamble") if k in model} | model
    train = data.get("train", {})
    if isinstance(train, dict):
        data["train"] = _filled_train(train, schema["$defs"]["train"]["properties"])
    return _ordered(data)


def _as_mapping(entry: Any) -> Any:
    return {"name": entry} if isinstance(entry, str) else entry


# The train keys every normal form spells out (those of zoo's first recipe format). A key added
# since is kept only when a recipe sets it to something else than its default, so that a new
# optional key never changes the sha256 of a recipe written before it (nor of its run folders).
FILLED_TRAIN_KEYS = (
    "epochs", "lr", "betas", "weight_decay", "warmup_epochs", "lr_decay", "grad_clip_norm",
    "eval_every", "max_eval_examples", "sample_every", "n_samples", "sample_temperature", "seed",
    "on_nonfinite", "device", "lr_schedule", "threads", "max_steps_per_epoch", "log_timing",
    "allow_large",
)


def _filled_train(train: dict, properties: dict) -> dict:
    """Every train key of FILLED_TRAIN_KEYS, in schema order: the recipe's value or the default,
    and the later keys where they differ from their default; numbers that the schema types as
    `number` become floats (so `lr: 1` and `lr: 1.0` hash the same)."""
    out = {}
    for key, prop in properties.items():
        if key not in FILLED_TRAIN_KEYS and train.get(key, prop.get("default")) == prop.get("default"):
            continue
        value = copy.deepcopy(train.get(key, prop.get("default")))
        types = prop.get("type")
        types = [types] if isinstance(types, str) else types or []
        if "number" in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if key == "betas" and isinstance(value, list):
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        out[key] = value
    out.update({k: v for k, v in train.items() if k not in out and k not in properties})  # unvalidated extras
    return out
