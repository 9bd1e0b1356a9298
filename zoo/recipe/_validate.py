"""Two-stage validation of a merged recipe, and the composed schema for editors.

Stage 1 checks the skeleton against ``schemas/recipe.schema.json`` (JSON Schema 2020-12): the
keys, their types and ranges. Stage 2 checks each component the recipe names (dataset, loss,
gradient mode, every layer entry) against the registry: the name must be registered, and its
parameters must satisfy the component's own ``params_schema``, with error paths rebased onto the
recipe (``$.model.layers[3].hidden``). Splitting the two keeps messages precise: a single schema
with one ``oneOf`` branch per layer would report every branch that failed.

Both stages also check what JSON Schema cannot say by itself:

- no value is NaN or infinite unless the schema at its place says ``"allow_nonfinite": true``
  (``train.lr=.nan`` would reach the optimizer; JSON Schema's comparisons are false for NaN, so
  ``exclusiveMinimum: 0`` lets it through);
- an integer component parameter larger than ``INT_PARAM_LIMIT`` (2**31) in magnitude is refused
  unless the plugin's schema gives that parameter its own ``maximum`` (``minimum`` for negative
  values): ``hidden: 1000000000000`` sizes an allocation before anything could measure it;
- the layers, repeat blocks multiplied out, are at most ``MAX_LAYER_ENTRIES``.

Every error becomes one ``Problem(path, message)``; ``format_problems`` places each at the mark of
its path (or of the closest existing parent) and sorts them by file and line.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any, Iterator, Mapping

from jsonschema import Draft202012Validator

from zoo._suggest import did_you_mean
from zoo.recipe._marks import Mark, KeyPath, closest_mark, json_path
from zoo.registry import KINDS, Registry, unknown_name_message

SCHEMA_FILE = FilePath(__file__).resolve().parent / "recipe.schema.json"
LOADER_KEYS = ("batch_size", "eval_batch_size")  # dataset keys for the loaders, not the factory
# top-level key -> registry kind, for components given as a name or {name, ...params}
COMPONENT_KEYS = {kind.recipe_key: kind.name for kind in KINDS.values() if kind.recipe_key}
BASE_PATH = ("model", "base")  # the base distribution, a component like the others
LAYER_LISTS = ("preamble", "layers")  # keys of `model` that hold layer lists
LAYER_ENTRY_KEYS = ("conditioned",)  # keys of a layer entry that are zoo's, not the layer's params
MAX_LAYER_ENTRIES = 100_000  # layers of one model, repeat blocks multiplied out
INT_PARAM_LIMIT = 2**31  # default bound on integer component parameters (|value|)
ALLOW_NONFINITE = "allow_nonfinite"  # schema keyword: NaN and infinity are allowed here


@functools.lru_cache(maxsize=1)
def _static_schema_text() -> str:
    return SCHEMA_FILE.read_text()


def static_schema() -> dict:
    """The static top-level recipe schema (a fresh copy)."""
    return json.loads(_static_schema_text())


@dataclass(frozen=True)
class Problem:
    path: KeyPath
    message: str
    plugin: bool = False  # caused by a broken plugin, not by the recipe


# --- walking the layers ---------------------------------------------------------------------------


def layer_entries(layers: Any, path: KeyPath, expand: bool) -> Iterator[tuple[KeyPath, Any]]:
    """``(path, entry)`` of every layer entry (not repeat blocks) below a layer list, in model
    order. With ``expand`` a block's entries come once per copy; without, once."""
    if not isinstance(layers, list):
        return
    for index, item in enumerate(layers):
        here = path + (index,)
        if isinstance(item, dict) and "repeat" in item:
            copies = item.get("repeat") if expand else 1
            for _ in range(copies if isinstance(copies, int) else 1):
                yield from layer_entries(item.get("layers"), here + ("layers",), expand)
        else:
            yield here, item


def expanded_layer_count(layers: Any) -> int:
    """How many layer entries ``layers`` holds with its repeat blocks multiplied out, computed
    without expanding them (``repeat: 10000`` of ``repeat: 10000`` is 10**8, counted at once)."""
    if not isinstance(layers, list):
        return 0
    total = 0
    for item in layers:
        if isinstance(item, dict) and "repeat" in item:
            copies = item.get("repeat")
            copies = copies if isinstance(copies, int) and not isinstance(copies, bool) else 1
            total += max(copies, 0) * expanded_layer_count(item.get("layers"))
        else:
            total += 1
    return total


def model_layer_count(data: Mapping) -> int:
    """Layer entries of a recipe's model (preamble and layers), repeats multiplied out."""
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping):
        return 0
    return sum(expanded_layer_count(model.get(key)) for key in LAYER_LISTS)


def component_slots(data: Mapping) -> Iterator[tuple[str, KeyPath, Any]]:
    """``(kind, path, entry)`` for every component the recipe names, each entry once."""
    for key, kind in COMPONENT_KEYS.items():
        if key in data:
            yield kind, (key,), data[key]
    model = data.get("model")
    if isinstance(model, dict):
        if "base" in model:
            yield "bases", BASE_PATH, model["base"]
        for key in LAYER_LISTS:
            for path, entry in layer_entries(model.get(key), ("model", key), expand=False):
                yield "layers", path, entry


def _component_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"]
    return None


# --- which keys may a mapping have (for overrides) ------------------------------------------------


def known_keys(data: Mapping, path: KeyPath, registry: Registry) -> set[str]:
    """The keys the schema allows in the mapping at ``path`` (which may not exist yet)."""
    value = _value_at(data, path)
    kind = _slot_kind(data, path)
    if kind is not None:
        keys = {"name"}
        name = _component_name(value)
        if name is not None and registry.has(kind, name):
            keys |= set((registry.get(kind, name).params_schema or {}).get("properties", {}))
        if kind == "datasets":
            keys |= set(LOADER_KEYS)
        return keys
    if isinstance(value, dict) and "repeat" in value and _in_layer_list(path):
        return {"repeat", "layers"}
    keys: set[str] = set()
    for schema in _subschemas_at(static_schema(), path):
        keys |= set(schema.get("properties", {}))
    return keys


def _value_at(data: Any, path: KeyPath) -> Any:
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _in_layer_list(path: KeyPath) -> bool:
    """Is ``path`` an item of a layer list (``model.layers[i]``, ``...layers[i].layers[j]``)?"""
    if len(path) < 3 or path[0] != "model" or path[1] not in LAYER_LISTS:
        return False
    rest = path[2:]  # i, "layers", j, "layers", k ...
    return len(rest) % 2 == 1 and all(
        isinstance(s, int) if n % 2 == 0 else s == "layers" for n, s in enumerate(rest)
    )


def _slot_kind(data: Mapping, path: KeyPath) -> str | None:
    if len(path) == 1 and path[0] in COMPONENT_KEYS:
        return COMPONENT_KEYS[path[0]]
    if tuple(path) == BASE_PATH:
        return "bases"
    if _in_layer_list(path):
        value = _value_at(data, path)
        if not (isinstance(value, dict) and "repeat" in value):
            return "layers"
    return None


def _subschemas_at(schema: dict, path: KeyPath) -> list[dict]:
    """The subschemas that apply at ``path`` (following $ref, if/then/else, allOf)."""
    current = _expand(schema, schema)
    for step in path:
        nxt: list[dict] = []
        for sub in current:
            if isinstance(step, str) and step in sub.get("properties", {}):
                nxt += _expand(schema, sub["properties"][step])
            elif isinstance(step, int):
                prefix = sub.get("prefixItems", [])
                if step < len(prefix):
                    nxt += _expand(schema, prefix[step])
                elif isinstance(sub.get("items"), dict):
                    nxt += _expand(schema, sub["items"])
        current = nxt
    return current


def _expand(root: dict, sub: Any) -> list[dict]:
    if not isinstance(sub, dict):
        return []
    found = [sub]
    if "$ref" in sub and sub["$ref"].startswith("#/"):
        target: Any = root
        for part in sub["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        found += _expand(root, target)
    for key in ("then", "else"):
        found += _expand(root, sub.get(key))
    for item in sub.get("allOf", []):
        found += _expand(root, item)
    return found


# --- stage 1: the skeleton ------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _skeleton_validator() -> Draft202012Validator:
    return Draft202012Validator(static_schema())


def skeleton_problems(data: Any) -> list[Problem]:
    problems: list[Problem] = []
    for error in _skeleton_validator().iter_errors(data):
        problems += _problems_of(error, (), "", None)
    if isinstance(data, Mapping):
        count = model_layer_count(data)
        if count > MAX_LAYER_ENTRIES:
            problems.append(Problem(("model", "layers"), (
                f"the model has {count:,} layers once its repeat blocks are multiplied out; zoo "
                f"builds at most {MAX_LAYER_ENTRIES:,}. Lower the `repeat:` counts"
            )))
        # component parameters are checked against their plugin's schema in stage 2
        slots = {path for _, path, _ in component_slots(data)}
        problems += _nonfinite_problems(data, static_schema(), "", skip=slots, known=problems)
    return problems


# --- what JSON Schema does not check --------------------------------------------------------------


def _scalars(value: Any, path: KeyPath = (), skip: set = frozenset()) -> Iterator[tuple[KeyPath, Any]]:
    """``(path, value)`` of every scalar below ``value``, without recursion (paths in ``skip``
    and their subtrees left out)."""
    stack = [(path, value)]
    while stack:
        here, item = stack.pop()
        if here in skip:
            continue
        if isinstance(item, Mapping):
            stack.extend((here + (key,), child) for key, child in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((here + (index,), child) for index, child in reversed(list(enumerate(item))))
        else:
            yield here, item


def _schemas_at(schema: Mapping, path: KeyPath) -> list[dict]:
    try:
        return _subschemas_at(dict(schema), path)
    except (KeyError, TypeError, IndexError, AttributeError):  # a plugin's $ref to nowhere
        return []


def _nonfinite_problems(value: Any, schema: Mapping, owner: str, base: KeyPath = (),
                        skip: set = frozenset(), known: list[Problem] = ()) -> list[Problem]:
    """NaN and infinities below ``value`` (at ``base`` in the recipe), unless the schema at their
    place allows them. Places with a problem already (``inf is not of type 'integer'``) are left."""
    reported = {p.path for p in known}
    problems = []
    for path, item in _scalars(value, (), {s[len(base):] for s in skip}):
        if not isinstance(item, float) or math.isfinite(item) or base + path in reported:
            continue
        if any(sub.get(ALLOW_NONFINITE) is True for sub in _schemas_at(schema, path)):
            continue
        whose = f" ({owner})" if owner else ""
        problems.append(Problem(base + path, (
            f"{item} is not a finite number{whose}; NaN and infinity are not allowed here. "
            "Write a finite value"
        )))
    return problems


def _big_integer_problems(params: Mapping, schema: Mapping, owner: str, base: KeyPath,
                          known: list[Problem]) -> list[Problem]:
    """Integer parameters past INT_PARAM_LIMIT whose schema sets no bound of its own."""
    reported = {p.path for p in known}
    problems = []
    for path, item in _scalars(params):
        if isinstance(item, bool) or base + path in reported:
            continue
        subs = _schemas_at(schema, path)
        if isinstance(item, float):  # `hidden: 1e12` is an integer to JSON Schema
            typed_int = any(sub.get("type") == "integer" or "integer" in (sub.get("type") or [])
                            for sub in subs)
            if not (typed_int and math.isfinite(item) and item.is_integer()):
                continue
        elif not isinstance(item, int):
            continue
        if item > INT_PARAM_LIMIT and not any("maximum" in s or "exclusiveMaximum" in s for s in subs):
            bound = f"larger than {INT_PARAM_LIMIT:,} (2**31)"
        elif item < -INT_PARAM_LIMIT and not any("minimum" in s or "exclusiveMinimum" in s for s in subs):
            bound = f"smaller than -{INT_PARAM_LIMIT:,} (-2**31)"
        else:
            continue
        shown = str(item) if isinstance(item, int) else f"{item:g}"
        problems.append(Problem(base + path, (
            f"{shown} is {bound}, zoo's limit for an integer parameter ({owner}) whose schema "
            "sets no bound of its own; such a number sizes an allocation no machine can make. "
            "Use a smaller value (a plugin that needs more gives the parameter a `maximum`)"
        )))
    return problems


def _problems_of(error, base: KeyPath, owner: str, allowed_hint: list[str] | None) -> list[Problem]:
    """One jsonschema error as Problems at recipe paths (one per unknown key)."""
    path = base + tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        what, whose = ("parameter", f" of {owner}") if owner else ("key", "")
        out = []
        for key in extra:
            hint = did_you_mean(key, allowed, cutoff=0.5)
            listed = ", ".join(allowed) if allowed else "none"
            out.append(Problem(path + (key,), f"unknown {what} {key!r}{whose}.{hint} Allowed: {listed}."))
        return out
    message = error.message
    if owner:
        message = f"{message} ({owner})"
    return [Problem(path, message)]


# --- stage 2: the components ----------------------------------------------------------------------


def component_problems(data: Mapping, registry: Registry) -> list[Problem]:
    problems: list[Problem] = []
    for kind, path, entry in component_slots(data):
        name = _component_name(entry)
        if name is None:
            continue  # malformed entry: stage 1 reported it
        name_path = path if isinstance(entry, str) else path + ("name",)
        if kind == "layers" and not registry.has(kind, name) and registry.has("network_layers", name):
            kind = "network_layers"  # a classifier's layer (task: classify); assembly checks the task
        if not registry.has(kind, name):
            problems.append(Problem(name_path, unknown_name_message(kind, name, registry.names(kind))))
            continue
        component = registry.get(kind, name)
        if component.error:
            problems.append(Problem(name_path, f"{KINDS[kind].singular} {name!r} of plugin "
                                    f"{component.plugin!r} is broken: {component.error}", plugin=True))
            continue
        schema = component.params_schema
        if schema is None:
            continue
        params = dict(entry) if isinstance(entry, dict) else {}
        params.pop("name", None)
        if kind == "datasets":
            for key in LOADER_KEYS:
                params.pop(key, None)  # checked by the skeleton
        if kind in ("layers", "network_layers"):
            for key in LAYER_ENTRY_KEYS:
                params.pop(key, None)  # checked by the skeleton
        owner = f"{KINDS[kind].singular} {name!r}"
        found: list[Problem] = []
        for error in _params_validator(json.dumps(schema, sort_keys=True)).iter_errors(params):
            found += _problems_of(error, path, owner, None)
        found += _nonfinite_problems(params, schema, owner, base=path, known=found)
        found += _big_integer_problems(params, schema, owner, path, found)
        problems += found
    if not problems:
        problems += conditioning_problems(data, registry)
    return problems


def conditioning_problems(data: Mapping, registry: Registry) -> list[Problem]:
    """A conditional recipe's layers: ``conditioned: true`` on a layer that cannot take a context
    (or in a recipe without one), and a ``context:`` that no layer nor the base takes."""
    model = data.get("model")
    if not isinstance(model, dict):
        return []
    conditional = isinstance(data.get("context"), dict)
    takers = conditionable = 0
    for key in LAYER_LISTS:
        for path, entry in layer_entries(model.get(key), ("model", key), expand=False):
            name = _component_name(entry)
            if name is None or not registry.has("layers", name):
                continue
            can = bool(getattr(registry.get("layers", name).factory, "takes_context", False))
            flag = entry.get("conditioned") if isinstance(entry, dict) else None
            if flag is True and not conditional:
                return [Problem(path + ("conditioned",), "`conditioned: true`, but the recipe has no "
                                "context:; add one (e.g. context: {type: class}) or remove the key")]
            if flag is True and not can:
                names = sorted(c.name for c in registry.components("layers")
                               if getattr(c.factory, "takes_context", False))
                return [Problem(path + ("conditioned",), f"the layer {name!r} cannot take a context; "
                                f"layers that can: {', '.join(names)}")]
            conditionable += 1
            takers += can and flag is not False
    base = _component_name(model.get("base", "standard_normal"))
    base_takes = base is not None and registry.has("bases", base) and bool(
        getattr(registry.get("bases", base).factory, "takes_context", False))
    if conditional and conditionable and not takers and not base_takes:
        return [Problem(("context",), "the recipe is conditional, but none of its layers nor its base "
                        "takes the context (`zoo list layers -v NAME` says which can)")]
    return []


@functools.lru_cache(maxsize=256)
def _params_validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def format_problems(problems: list[Problem], source_map: Mapping[KeyPath, Mark], origin: str) -> list[str]:
    """``file:line:col  $.path: message`` lines, sorted by file then line, duplicates dropped."""
    placed = {}
    for problem in problems:
        mark = closest_mark(dict(source_map or {}), problem.path, origin)
        key = (mark.file, mark.line, mark.col, json_path(problem.path), problem.message)
        placed[key] = f"{mark}  {json_path(problem.path)}: {problem.message}"
    return [placed[k] for k in sorted(placed)]


# --- the composed schema --------------------------------------------------------------------------


def composed_schema(registry: Registry) -> dict:
    """The static schema with every kind's names enumerated and each component's parameter
    schema attached (``$defs["layer.<name>"]`` etc.), for editors. Validation itself runs the
    two stages above, which give better messages."""
    schema = static_schema()
    defs = schema["$defs"]
    for kind, def_name, extra in (
        ("datasets", "dataset", LOADER_KEYS),
        ("losses", "component_loss", ()),
        ("gradient_modes", "component_gradient_mode", ()),
        ("bases", "component_base", ()),
        ("layers", "layer_entry", ()),
    ):
        names = registry.names(kind)
        branches = []
        for name in names:
            ref = f"{KINDS[kind].singular.replace(' ', '_')}.{name}"
            defs[ref] = _entry_schema(registry.get(kind, name), extra, schema)
            branches.append(
                {
                    "if": {"type": "object", "required": ["name"], "properties": {"name": {"const": name}}},
                    "then": {"$ref": "#/$defs/" + _pointer_escape(ref)},
                }
            )
        if def_name == "layer_entry":  # a classifier's network layers are layer entries too
            for name in registry.names("network_layers"):
                ref = f"network_layer.{name}"
                defs[ref] = _entry_schema(registry.get("network_layers", name), extra, schema)
                branches.append({
                    "if": {"type": "object", "required": ["name"], "properties": {"name": {"const": name}}},
                    "then": {"$ref": "#/$defs/" + _pointer_escape(ref)},
                })
            names = names + registry.names("network_layers")
        name_schema = {"description": f"A registered {KINDS[kind].singular}.", "enum": names}
        if def_name == "layer_entry":
            entry = defs["layer_entry"]
            entry["properties"]["name"] = name_schema
            entry["allOf"] = branches
            continue
        if def_name == "dataset":
            target = defs["dataset"]
        else:  # loss and gradient mode get their own copies of the generic component
            target = copy.deepcopy(defs["component"])
            defs[def_name] = target
            owner = defs["model"] if kind == "bases" else schema
            owner["properties"][def_name.removeprefix("component_")]["$ref"] = "#/$defs/" + def_name
        target["then"] = name_schema
        target["else"]["properties"]["name"] = name_schema
        target["else"]["allOf"] = branches
    return schema


def _entry_schema(component, extra_keys: tuple, root: dict) -> dict:
    """A component's params schema, with ``name`` (and loader keys) allowed beside the params."""
    params = copy.deepcopy(dict(component.params_schema or {"type": "object"}))
    params.setdefault("description", component.summary or component.name)
    props = params.setdefault("properties", {})
    props["name"] = {"const": component.name}
    if component.kind == "layers":
        props["conditioned"] = copy.deepcopy(root["$defs"]["layer_entry"]["properties"]["conditioned"])
    for key in extra_keys:
        props[key] = copy.deepcopy(root["$defs"]["dataset"]["else"]["properties"][key])
    return params


def _pointer_escape(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")
