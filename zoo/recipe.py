"""Recipes: YAML loading, ``extends:``, ``key=value`` overrides, two-stage JSON Schema validation.

    recipe = load_recipe("recipes/glow_mnist_small.yaml", overrides=["train.epochs=2"])

The way a recipe goes:

1. **Read** with PyYAML's SafeLoader (duplicate keys refused), keeping the file, line and column
   of every value (``zoo._yaml_marks``).
2. **extends:** a file, or a list of files (later ones win), relative to the recipe; chains are
   followed and cycles refused. Mappings are deep-merged, lists replaced, ``extends`` dropped.
3. **Overrides** (``zoo._recipe_overrides``): ``train.epochs=2``, ``+key=value``, ``~key``.
4. **Validation** (``zoo._recipe_validate``): the skeleton against ``schemas/recipe.schema.json``,
   then each component's parameters against its plugin's schema. All errors are reported at once,
   one ``file:line:col  $.path: message`` line each, in one RecipeError.
5. **Normal form** (what ``Recipe`` holds, what a run folder's ``recipe.yaml`` contains):
   ``dataset``, ``loss`` and ``gradient_mode`` are mappings ``{name: ..., **params}`` (the dataset's
   ``batch_size`` filled, default 100); ``model.base`` is filled; ``model.preamble`` is moved to the
   front of ``model.layers`` (and removed); ``train`` has every key, defaults filled and numbers
   typed as the schema says; keys are in a readable order. Component parameters the recipe does
   not set are *not* filled in (their defaults belong to the plugin). Loading a resolved recipe
   again gives the same recipe and the same ``sha256``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from zoo import _recipe_validate as validation
from zoo._recipe_overrides import apply_overrides
from zoo._yaml_marks import Mark, closest_mark, json_path, load_marked, walk
from zoo.errors import RecipeError
from zoo.registry import Registry, get_registry

__all__ = [
    "Recipe",
    "load_recipe",
    "validate_recipe",
    "composed_schema",
    "normalize_component",
    "iter_layer_entries",
]

TOP_LEVEL_ORDER = (
    "name", "description", "paper", "tags", "license",
    "dataset", "model", "loss", "gradient_mode", "train", "hub",
)
DEFAULT_BATCH_SIZE = 100


class Recipe(dict):
    """A resolved, validated recipe: plain JSON data in the normal form above.

    ``path`` is the file it was loaded from (None when built from a mapping).
    """

    path: Path | None = None

    def __init__(self, data: Mapping[str, Any] = (), path: Path | None = None):
        super().__init__(data)
        self.path = path

    @property
    def sha256(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace): independent of key order,
        YAML formatting and comments."""
        canonical = json.dumps(self, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (``yaml.safe_dump``): top-level keys in a readable order,
        layer entries and short lists on one line each."""
        header = f"# Resolved by zoo (sha256 {self.sha256}); `zoo run` this file to train it again.\n"
        return header + yaml.dump(
            _flow_leaves(_ordered(dict(self))),
            Dumper=_RecipeDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )


# --- YAML output ---------------------------------------------------------------------------------


class _RecipeDumper(yaml.SafeDumper):
    """SafeDumper that writes `_Flow` mappings and lists in flow style (`{name: actnorm}`)."""


class _FlowDict(dict):
    pass


class _FlowList(list):
    pass


_RecipeDumper.add_representer(
    _FlowDict, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v.items(), flow_style=True)
)
_RecipeDumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _flow_leaves(value: Any, depth: int = 0) -> Any:
    """Mappings and lists of scalars below the top level are written on one line when short."""
    if isinstance(value, dict):
        items = {k: _flow_leaves(v, depth + 1) for k, v in value.items()}
        short = len(json.dumps(value)) <= 80
        if depth >= 1 and short and all(_is_scalar(v) for v in value.values()):
            return _FlowDict(items)
        return items
    if isinstance(value, list):
        items = [_flow_leaves(v, depth + 1) for v in value]
        if value and all(_is_scalar(v) for v in value):
            return _FlowList(items)
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


# --- public helpers ------------------------------------------------------------------------------


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


def composed_schema(registry: Registry | None = None) -> dict:
    """The top-level schema with each kind's names enumerated and each component's parameter
    schema attached, for `zoo schema` and editors (JSON Schema 2020-12)."""
    return validation.composed_schema(registry or get_registry())


def validate_recipe(
    data: Mapping, *, registry: Registry | None = None, source_map=None, origin: str = "<recipe>"
) -> list[str]:
    """All error lines of a merged recipe (empty if valid): the skeleton, then the components."""
    registry = registry or get_registry()
    problems = validation.skeleton_problems(data)
    if isinstance(data, Mapping):
        problems += validation.component_problems(data, registry)
    return validation.format_problems(problems, source_map or {}, origin)


# --- loading -------------------------------------------------------------------------------------


def load_recipe(
    source: str | os.PathLike | Mapping,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    validate: bool = True,
) -> Recipe:
    """Read (a file, or a mapping), merge ``extends:``, apply overrides, validate, normalize."""
    if isinstance(source, Mapping):
        path = getattr(source, "path", None)
        origin = str(path) if path else "<recipe>"
        base_dir = Path(path).parent if path else Path.cwd()
        data = copy.deepcopy(dict(source))
        data, marks = _resolve_extends(data, {}, base_dir, origin, chain=(origin,))
    else:
        path = Path(source)
        origin = _display(path)
        data, marks = _load_file(path, chain=(), referrer=None)
    registry = registry or (get_registry() if validate or overrides else None)

    if overrides:
        data, cli_marks = apply_overrides(
            data, list(overrides), lambda d, p: validation.known_keys(d, p, registry), marks
        )
        marks = _remap(data, [(marks, None), (cli_marks, "prefix")])

    if validate:
        errors = validate_recipe(data, registry=registry, source_map=marks, origin=origin)
        if errors:
            count = f"{len(errors)} error" + ("s" if len(errors) != 1 else "")
            raise RecipeError(f"{origin}: {count}\n" + "\n".join(errors))
    return Recipe(_normal_form(data), path=Path(path) if path else None)


def _display(path: Path) -> str:
    """The path as the user would write it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _load_file(path: Path, chain: tuple[str, ...], referrer: Mark | None) -> tuple[dict, dict]:
    """One recipe file with its `extends:` merged in; ``chain`` is the files being resolved."""
    shown = _display(path)
    key = str(path.resolve())
    if key in chain:
        names = [_display(Path(p)) for p in chain[chain.index(key):]] + [shown]
        raise RecipeError(
            f"{referrer}: extends cycle: {' -> '.join(names)}. Remove one of these `extends:`."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f"{referrer}: extends: " if referrer else ""
        raise RecipeError(f"{where}recipe file not found: {shown}. Check the path.") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{shown}: cannot read the recipe file ({exc})") from None
    data, marks = load_marked(text, shown)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise RecipeError(
            f"{shown}: a recipe must be a YAML mapping (name:, dataset:, model:, ...), got {got}"
        )
    return _resolve_extends(data, marks, path.parent, shown, chain + (key,))


def _resolve_extends(
    data: dict, marks: dict, base_dir: Path, shown: str, chain: tuple[str, ...]
) -> tuple[dict, dict]:
    """Merge the files `data` extends under it (each a deep merge; later files win)."""
    if "extends" not in data:
        return data, marks
    parents = data.pop("extends")
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RecipeError(
            f"{closest_mark(marks, ('extends',), shown)}: `extends:` must be a file name or a list "
            f"of file names, got {parents!r}"
        )
    merged: dict = {}
    merged_marks: dict = {}
    for index, parent in enumerate(parents):
        mark_path = ("extends",) if len(parents) == 1 else ("extends", index)
        referrer = closest_mark(marks, mark_path, shown)
        parent_data, parent_marks = _load_file(base_dir / parent, chain, referrer)
        merged = deep_merge(merged, parent_data)
        merged_marks = _remap(merged, [(merged_marks, None), (parent_marks, None)])
    marks = {p: m for p, m in marks.items() if p[:1] != ("extends",)}
    result = deep_merge(merged, data)
    return result, _remap(result, [(merged_marks, None), (marks, None)])


def deep_merge(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``: mappings merged key by key (recursively), anything else
    (lists included) replaced. Neither argument is modified."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def _remap(data: Any, layers: list[tuple[dict, str | None]]) -> dict:
    """The marks of every path of ``data``, later layers winning. A layer marked "prefix"
    owns every path below its own paths too (a value set by an override replaces a subtree)."""
    out = {}
    for path in walk(data):
        for marks, mode in reversed(layers):
            if path in marks:
                out[path] = marks[path]
                break
            if mode == "prefix":
                owner = next((path[:n] for n in range(len(path), 0, -1) if path[:n] in marks), None)
                if owner is not None:
                    out[path] = marks[owner]
                    break
    return out


# --- the normal form -----------------------------------------------------------------------------


def _normal_form(data: dict) -> dict:
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


def _filled_train(train: dict, properties: dict) -> dict:
    """Every train key, in schema order: the recipe's value or the default; numbers that the
    schema types as `number` become floats (so `lr: 1` and `lr: 1.0` hash the same)."""
    out = {}
    for key, prop in properties.items():
        value = copy.deepcopy(train.get(key, prop.get("default")))
        types = prop.get("type")
        types = [types] if isinstance(types, str) else types or []
        if "number" in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if key == "betas" and isinstance(value, list):
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        out[key] = value
    out.update({k: v for k, v in train.items() if k not in out})  # unvalidated extras
    return out
