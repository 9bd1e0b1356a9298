"""Command-line overrides of a merged recipe: ``key=value``, ``+key=value``, ``~key``.

- ``train.epochs=2``: set a key that exists (list items by index: ``model.layers.2.hidden=128``).
  Keys the recipe does not mention are accepted when the schema knows them: optional skeleton keys
  (``train.max_steps_per_epoch=5``) and the parameters of the named component
  (``dataset.n_train=100``). Anything else is refused, naming the nearest existing keys.
- ``+key=value``: add a key the schema does not know (or append to a list at index ``len``).
- ``~key``: delete a key (or a list item).

Values are parsed as YAML (``train.betas=[0.9,0.99]``, ``loss={name: nll}``, ``x=null``), with the
recipe loader: YAML 1.2 floats (``train.lr=1e-3``) and the same limits on size and nesting as a file.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from zoo._suggest import did_you_mean
from zoo.recipe._marks import (
    COMMAND_LINE,
    MAX_DEPTH,
    MAX_NODES,
    Mark,
    KeyPath,
    count_values,
    depth_of,
    json_path,
    parse_value,
)
from zoo.errors import RecipeError

# known_keys(data, parent_path) -> the keys the schema allows in the mapping at parent_path
KnownKeys = Callable[[Any, KeyPath], set]


def apply_overrides(
    data: dict, overrides: Sequence[str], known_keys: KnownKeys, file_marks: dict[KeyPath, Mark]
) -> tuple[dict, dict[KeyPath, Mark]]:
    """Apply each override in order to ``data`` (modified in place); return it and the marks of
    the values that came from the command line, keyed by the path each override set.
    ``file_marks`` (the source map) is kept in step when a deletion shifts a list."""
    set_paths: dict[KeyPath, Mark] = {}
    for index, text in enumerate(overrides):
        mark = Mark(COMMAND_LINE, index + 1, 1, note=text)
        op, dotted, value = _parse(text)
        if not dotted:
            raise RecipeError(f"override {text!r}: empty key. Write key.path=value, +key=value or ~key.")
        keys = dotted.split(".")
        if any(k == "" for k in keys):
            raise RecipeError(f"override {text!r}: empty key segment in {dotted!r}")
        if len(keys) + depth_of(value) > MAX_DEPTH:  # the recipe's own nesting is checked below
            raise RecipeError(
                f"override {_short(text)}: the key and its value nest more than {MAX_DEPTH} levels "
                "deep; a recipe is limited to that. Use a shorter key path or a flatter value."
            )
        if keys[0] == "extends":  # merged and removed before overrides apply
            raise RecipeError(
                f"override {text!r}: `extends:` is resolved before overrides; edit the recipe file "
                "or override the keys themselves"
            )
        if op == "~":
            path = _delete(data, keys, text)
            for marks in (set_paths, file_marks):
                _forget(marks, path)
            continue
        path = _assign(data, keys, value, op == "+", text, known_keys)
        set_paths[path] = mark
    if overrides and (depth_of(data) > MAX_DEPTH or count_values(data) > MAX_NODES):
        raise RecipeError(
            f"the overrides make the recipe larger than its limits ({MAX_NODES:,} values, "
            f"{MAX_DEPTH} levels of nesting); set fewer or smaller values on the command line"
        )
    return data, set_paths


def _short(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _forget(marks: dict[KeyPath, Mark], deleted: KeyPath) -> None:
    """Drop the marks below a deleted path; after a deleted list item, move the marks of the
    items that follow it down by one index, as the items themselves moved."""
    parent, last = deleted[:-1], deleted[-1]
    depth = len(parent)
    moved = {}
    for path in list(marks):
        if path[: depth + 1] == deleted:
            del marks[path]
        elif isinstance(last, int) and path[:depth] == parent and len(path) > depth \
                and isinstance(path[depth], int) and path[depth] > last:
            moved[parent + (path[depth] - 1,) + path[depth + 1:]] = marks.pop(path)
    marks.update(moved)


def _parse(text: str) -> tuple[str, str, Any]:
    text = text.strip()
    if text.startswith("~"):
        if "=" in text:
            raise RecipeError(f"override {text!r}: a deletion `~key` takes no value")
        return "~", text[1:], None
    if "=" not in text:
        raise RecipeError(
            f"override {text!r} has no '='. Write key.path=value (e.g. train.epochs=2), "
            "+key=value to add a key, or ~key to delete one."
        )
    op = "+" if text.startswith("+") else ""
    dotted, _, raw = text[len(op):].partition("=")
    return op, dotted.strip(), parse_value(raw, f"override {_short(text)}")


def _step(container: Any, key: str, path: KeyPath, text: str) -> Any:
    """The child of ``container`` at ``key`` (an index for lists), or a RecipeError."""
    if isinstance(container, list):
        index = _index(key, container, path, text)
        if index >= len(container):
            raise RecipeError(
                f"override {text!r}: {json_path(path)} has {len(container)} items; "
                f"index {index} does not exist"
            )
        return index
    if isinstance(container, dict):
        return key
    raise RecipeError(
        f"override {text!r}: {json_path(path)} is {_kind(container)}, not a mapping or list, "
        f"so it has no key {key!r}"
    )


def _index(key: str, container: list, path: KeyPath, text: str) -> int:
    if not (key.isascii() and key.isdigit()):  # str.isdigit() is also true of '²', which int() refuses
        raise RecipeError(f"override {text!r}: {json_path(path)} is a list; use an index, not {key!r}")
    if len(key) > 12:  # no list is that long (and int() refuses 4,300 digits)
        raise RecipeError(
            f"override {_short(text)}: {json_path(path)} has {len(container)} items; "
            f"index {_short(key, 30)} does not exist"
        )
    return int(key)


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _assign(data: dict, keys: list[str], value: Any, add: bool, text: str, known_keys: KnownKeys) -> KeyPath:
    container: Any = data
    path: KeyPath = ()
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(container, list):
            index = _index(key, container, path, text)
            if last and add:
                if index != len(container):
                    raise RecipeError(
                        f"override {text!r}: `+` appends to a list only at index {len(container)} "
                        f"(its length); to change item {index}, drop the '+'"
                    )
                container.append(value)
                return path + (index,)
            step = _step(container, key, path, text)
        else:
            if not isinstance(container, dict):
                container = _as_mapping(data, path, text, known_keys, key)
            step = key
            exists = key in container
            if last and add and exists:
                raise RecipeError(
                    f"override {text!r}: {json_path(path + (key,))} already exists; "
                    f"change it with {text.lstrip('+')}"
                )
            if not exists and not add and key not in known_keys(data, path):
                raise RecipeError(_missing_key_message(text, container, key, path, data, known_keys))
            if not last and not exists:
                container[key] = {}
        if last:
            container[step] = value
            return path + (step,)
        path = path + (step,)
        container = container[step]
    raise AssertionError("unreachable")


def _as_mapping(data: dict, path: KeyPath, text: str, known_keys: KnownKeys, key: str) -> dict:
    """A component given by name (``loss: nll``) becomes ``{name: nll}`` so a parameter can be
    set on it; anything else that is not a mapping cannot take a key."""
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    current = parent[path[-1]] if path else data
    if isinstance(current, str) and key in known_keys(data, path):
        parent[path[-1]] = {"name": current}
        return parent[path[-1]]
    raise RecipeError(
        f"override {text!r}: {json_path(path)} is {_kind(current)}, not a mapping, so it has no "
        f"key {key!r}" + (f" (set the whole value: {'.'.join(map(str, path))}=...)" if path else "")
    )


def _missing_key_message(text: str, container: Mapping, key: str, path: KeyPath, data: dict, known_keys) -> str:
    candidates = sorted(set(container) | known_keys(data, path))
    hint = did_you_mean(key, candidates, cutoff=0.5)
    where = json_path(path) if path else "the recipe's top level"
    listed = ", ".join(candidates) if candidates else "none"
    return (
        f"override {text!r}: {where} has no key {key!r} and the schema does not define it.{hint} "
        f"Keys there: {listed}. Use +{text.lstrip('+')} to add a new key anyway."
    )


def _delete(data: dict, keys: list[str], text: str) -> KeyPath:
    container: Any = data
    path: KeyPath = ()
    for depth, key in enumerate(keys):
        step = _step(container, key, path, text)
        if isinstance(container, dict) and step not in container:
            raise RecipeError(
                f"override {text!r}: {json_path(path + (key,))} does not exist, so it cannot be deleted"
            )
        if depth == len(keys) - 1:
            del container[step]
            return path + (step,)
        path = path + (step,)
        container = container[step]
    raise AssertionError("unreachable")
