"""Safe YAML loading that remembers where every value came from.

``load_marked(text, file)`` parses with PyYAML's ``SafeLoader`` (no object construction, so the
``yaml.safe_load`` guarantees hold), refuses duplicate keys, and returns the data together with a
*source map*: ``{path: Mark}`` for every mapping value and list item, ``path`` being a tuple of
keys and indices (``("model", "layers", 1, "hidden")``) and the mark the 1-based line and column of
the value (of its key when the value is a block starting on a later line). Recipe errors point at these marks.

Two deliberate departures from plain ``safe_load``: dates stay strings (a recipe is JSON data, and
``paper: 2021-05-01`` should not become a ``datetime``), and non-string mapping keys are refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

import yaml

from zoo.errors import RecipeError

Path = tuple  # a tuple of str keys and int indices, () for the document root

COMMAND_LINE = "<command line>"


@dataclass(frozen=True, order=True)
class Mark:
    """Where a value came from: a file with 1-based line and column, or a command-line override."""

    file: str
    line: int = 0
    col: int = 0
    note: str = ""  # for command-line values: the override text

    def __str__(self) -> str:
        if self.note:
            return f"{self.file} ({self.note})"
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay strings)."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_MERGE_TAG = "tag:yaml.org,2002:merge"


def mark_of(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def syntax_error(exc: yaml.YAMLError, file: str) -> RecipeError:
    """A RecipeError `file:line:col: problem` for a PyYAML parse error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return RecipeError(f"{where}: YAML syntax error: {detail}. Fix the YAML at that place.")


def parse_value(text: str) -> Any:
    """One value parsed as YAML with the recipe loader (used for `key=value` overrides)."""
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - _RecipeLoader is a SafeLoader


def load_marked(text: str, file: str) -> tuple[Any, dict[Path, Mark]]:
    """Parse one YAML document; return ``(data, source_map)``. Raises RecipeError on bad YAML."""
    loader = _RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        marks: dict[Path, Mark] = {(): mark_of(node, file)}
        _check_and_mark(loader, node, (), file, marks, set())
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise syntax_error(exc, file) from None
    finally:
        loader.dispose()
    _check_json_data(data, (), marks, file)
    return _unshared(data), marks


def _unshared(value: Any) -> Any:
    """A copy with no shared parts: a YAML alias (`*step`) constructs the *same* list at each
    place, so an override of one place would silently change the others."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def _check_and_mark(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, file: str, marks: dict, active: set
) -> None:
    """Record the mark of every value below ``node``; refuse duplicate keys (before YAML merge
    keys are flattened, so ``<<: *base`` followed by an explicit key is not a duplicate)."""
    if id(node) in active:  # a recursive alias (`&a [*a]`): not JSON data
        raise RecipeError(f"{mark_of(node, file)}: a recursive YAML alias is not allowed in a recipe")
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks[path + (index,)] = mark_of(item, file)
            _check_and_mark(loader, item, path + (index,), file, marks, active)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *anchor` merge: its keys are the anchor's, marked there
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise RecipeError(
                    f"{mark_of(key_node, file)}: mapping keys must be strings, got {key!r}; "
                    "quote the key"
                )
            if key in seen:
                raise RecipeError(
                    f"{mark_of(key_node, file)}: duplicate key {key!r} "
                    f"(first at line {seen[key].line}); a mapping may name a key once"
                )
            seen[key] = mark_of(key_node, file)
            value_mark = mark_of(value_node, file)
            # a value on the key's line is marked where it starts; a block below its key, at the key
            marks[path + (key,)] = value_mark if value_mark.line == seen[key].line else seen[key]
            _check_and_mark(loader, value_node, path + (key,), file, marks, active)


def _check_json_data(value: Any, path: Path, marks: dict, file: str) -> None:
    """Recipes are JSON data: refuse binary, sets and other YAML-only types."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):  # keys brought in by a `<<` merge of an odd anchor
                raise RecipeError(f"{closest_mark(marks, path, file)}: mapping keys must be strings")
            _check_json_data(item, path + (key,), marks, file)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_data(item, path + (index,), marks, file)
    elif isinstance(value, float) and not math.isfinite(value):
        return  # .nan / .inf are YAML floats; the schema decides whether they are allowed
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise RecipeError(
            f"{closest_mark(marks, path, file)}: {type(value).__name__} values are not allowed "
            f"in a recipe (at {json_path(path)}); use a string, number, list or mapping"
        )


def closest_mark(marks: dict[Path, Mark], path: Path, default: str = "<recipe>") -> Mark:
    """The mark of ``path``, else of its closest existing ancestor."""
    for cut in range(len(path), -1, -1):
        mark = marks.get(tuple(path[:cut]))
        if mark is not None:
            return mark
    return Mark(default)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(path: Path) -> str:
    """``("model", "layers", 1, "hidden")`` -> ``$.model.layers[1].hidden``."""
    parts = ["$"]
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _IDENTIFIER.match(step):
            parts.append(f".{step}")
        else:
            parts.append("[" + repr(step) + "]")
    return "".join(parts)


def walk(value: Any, path: Path = ()) -> Iterator[Path]:
    """Every path in a JSON-like value, parents before children (the root included)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, path + (index,))
