"""Safe YAML loading that remembers where every value came from, in bounded time and memory.

``load_marked(text, file)`` parses with PyYAML's safe construction (no object construction, so the
``yaml.safe_load`` guarantees hold), refuses duplicate keys, and returns the data together with a
*source map*: ``{path: Mark}`` for every mapping value and list item, ``path`` being a tuple of
keys and indices (``("model", "layers", 1, "hidden")``) and the mark the 1-based line and column of
the value (of its key when the value is a block starting on a later line). Recipe errors point at these marks.

Departures from plain ``safe_load``:

- dates stay strings (a recipe is JSON data, and ``paper: 2021-05-01`` should not become a
  ``datetime``), and non-string mapping keys are refused;
- floats are read as YAML 1.2 writes them too: ``1e-3``, ``1E5``, ``-2.5e+3``, ``.5``, ``5.``
  (YAML 1.1, which PyYAML follows, reads ``1e-3`` as a string);
- a recipe is small data, and untrusted text must not take the process down, so there are limits:
  at most ``MAX_NODES`` values (a YAML alias ``*name`` counts as the whole value it stands for, so
  the "billion laughs" of nested aliases is refused instead of expanded), at most ``MAX_DEPTH``
  levels of nesting, and every parse problem (control characters included) is a RecipeError
  at ``file:line:col``.

libyaml (PyYAML's C parser) scans and parses when it is installed, PyYAML's Python parser
otherwise; composing the nodes, where the limits are, is Python in both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from zoo.errors import RecipeError

KeyPath = tuple  # where a value is in a recipe: str keys and int indices, () is the root

COMMAND_LINE = "<command line>"

# Limits on one YAML document. Composing a value costs ~20 us in Python, so MAX_NODES keeps the
# refusal of the largest document under half a second; the shipped recipes hold < 300 values.
MAX_NODES = 20_000
MAX_DEPTH = 100  # levels of lists and mappings inside one another (the shipped recipes use < 10)


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


# --- the loader ------------------------------------------------------------------------------------

_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# YAML 1.1's floats (which need a '.') and YAML 1.2's (`1e-3`, `5.`, `+.5`): a plain scalar that
# either version reads as a float is a float. Integers (no '.', no exponent) stay integers.
FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


def recipe_resolvers(timestamps: bool) -> dict:
    """SafeLoader's implicit resolvers with the float pattern above (and, unless ``timestamps``,
    without dates). A dumper that writes recipes uses them with ``timestamps=True``, so that it
    quotes every string that either this loader or plain ``safe_load`` would read as non-string."""
    table = {}
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items():
        kept = []
        for tag, rx in resolvers:
            if tag == _TIMESTAMP_TAG and not timestamps:
                continue
            kept.append((tag, FLOAT_PATTERN if tag == _FLOAT_TAG else rx))
        table[first] = kept
    return table


class _RecipeResolver(Resolver):
    yaml_implicit_resolvers = recipe_resolvers(timestamps=False)


class _LimitError(yaml.MarkedYAMLError):
    """A document past one of the limits (not a syntax error: the message says what to change)."""


class _BoundedComposer(Composer):
    """Composes nodes while counting them and their depth, refusing past MAX_NODES / MAX_DEPTH
    before the next node is built (Python's recursion limit would be hit near depth 300)."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._count = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):  # the anchored node again: counted by _bound_expansion
            return super().compose_node(parent, index)
        self._depth += 1
        self._count += 1
        try:
            if self._depth - 1 > MAX_DEPTH:
                raise _LimitError(None, None, _DEPTH_PROBLEM, self.peek_event().start_mark)
            if self._count > MAX_NODES:
                raise _LimitError(None, None, _SIZE_PROBLEM, self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_DEPTH_PROBLEM = (
    f"the values nest more than {MAX_DEPTH} levels deep here (lists and mappings inside one "
    "another); a recipe is limited to that. Flatten this value"
)
_SIZE_PROBLEM = (
    f"the document holds more than {MAX_NODES:,} values; a recipe is limited to that. Shorten "
    "it (a `repeat:` block repeats layers without writing them out)"
)


class _RecipeConstructor(SafeConstructor):
    """SafeConstructor whose failures on odd scalars (``!!float abc``, an integer of 5,000 digits,
    ``!!binary`` that is not base64) are YAML errors at the scalar, not bare ValueErrors."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            reason = str(exc).split(";")[0]  # not Python's advice on raising its own limits
            raise ConstructorError(
                None, None, f"cannot read the value {_short(getattr(node, 'value', ''))} as "
                f"{node.tag.rsplit(':', 1)[-1]} ({reason})", node.start_mark
            ) from None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value) if isinstance(value, str) else "this value"
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _python_loader():
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class PyRecipeLoader(Reader, Scanner, Parser, _BoundedComposer, _RecipeConstructor, _RecipeResolver):
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            _BoundedComposer.__init__(self)
            _RecipeConstructor.__init__(self)
            _RecipeResolver.__init__(self)

    return PyRecipeLoader


def _libyaml_loader():
    """libyaml scans and parses (~10x faster than Python); composing stays in Python, where the
    limits are."""
    from yaml.cyaml import CParser

    class CRecipeLoader(_BoundedComposer, CParser, _RecipeConstructor, _RecipeResolver):
        def __init__(self, stream):
            CParser.__init__(self, stream)
            _BoundedComposer.__init__(self)
            _RecipeConstructor.__init__(self)
            _RecipeResolver.__init__(self)

    return CRecipeLoader


PyRecipeLoader = _python_loader()
RecipeLoader = _libyaml_loader() if yaml.__with_libyaml__ else PyRecipeLoader


# --- loading ---------------------------------------------------------------------------------------


def mark_of(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


def syntax_error(exc: yaml.YAMLError, file: str, text: str = "") -> RecipeError:
    """A RecipeError `file:line:col: problem` for a PyYAML error."""
    where, detail = _locate(exc, file, text)
    if _is_limit(exc, detail):
        return RecipeError(f"{where}: {detail}.")
    return RecipeError(f"{where}: YAML syntax error: {detail}. Fix the YAML at that place.")


def _locate(exc: yaml.YAMLError, file: str, text: str) -> tuple[str, str]:
    """``(file:line:col, problem)`` of a PyYAML error."""
    if isinstance(exc, yaml.reader.ReaderError):
        line, col = _line_col(text, _char_index(text, exc.position))
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return f"{file}:{line}:{col}", (
            f"the control character U+{ord(char):04X} is not allowed in YAML; delete it "
            "(write it as an escape in a double-quoted string, \"\\x01\", if it is meant)"
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
    problem = getattr(exc, "problem", None) or str(exc)
    if "maximum nesting depth" in problem:  # libyaml's own limit (1000), met when it scans ahead
        return where, _DEPTH_PROBLEM
    context = getattr(exc, "context", None)
    return where, f"{problem} ({context})" if context else problem


def _is_limit(exc: yaml.YAMLError, detail: str) -> bool:
    return isinstance(exc, _LimitError) or detail == _DEPTH_PROBLEM


def _char_index(text: str, position: int) -> int:
    """libyaml reports a byte offset into the UTF-8 text, Python's reader a character index."""
    if RecipeLoader is PyRecipeLoader or text.isascii():
        return position
    return len(text.encode("utf-8")[:position].decode("utf-8", errors="ignore"))


def _line_col(text: str, index: int) -> tuple[int, int]:
    index = max(0, min(index, len(text)))
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def parse_value(text: str, context: str = COMMAND_LINE) -> Any:
    """One value parsed as YAML with the recipe loader and its limits (for ``key=value``
    overrides). ``context`` (``override 'x=1'``) starts every error message."""
    try:
        data, _ = _load(text, COMMAND_LINE)
    except yaml.YAMLError as exc:
        where, detail = _locate(exc, COMMAND_LINE, text)
        col = where.rsplit(":", 1)[-1] if where != COMMAND_LINE else ""
        at = f" at column {col}" if col else ""
        if _is_limit(exc, detail):
            raise RecipeError(f"{context}: the value {_short(text)}: {detail}") from None
        raise RecipeError(
            f"{context}: the value {_short(text)} is not valid YAML ({detail}{at}); quote it"
        ) from None
    except RecipeError as exc:  # not JSON data: drop the `<command line>:1:1: ` of the message
        detail = re.sub(rf"^{re.escape(COMMAND_LINE)}(:\d+)*: ", "", str(exc))
        raise RecipeError(f"{context}: the value {_short(text)}: {detail}") from None
    return data


def load_marked(text: str, file: str) -> tuple[Any, dict[KeyPath, Mark]]:
    """Parse one YAML document; return ``(data, source_map)``. Raises RecipeError on bad YAML."""
    try:
        return _load(text, file)
    except yaml.YAMLError as exc:
        raise syntax_error(exc, file, text) from None


def _load(text: str, file: str) -> tuple[Any, dict[KeyPath, Mark]]:
    loader = None
    try:
        loader = RecipeLoader(text)  # the reader checks for control characters here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _bound_expansion(node, file)
        marks: dict[KeyPath, Mark] = {(): mark_of(node, file)}
        _check_and_mark(loader, node, (), file, marks)
        data = loader.construct_document(node)
    finally:
        if loader is not None:
            loader.dispose()
    _check_json_data(data, (), marks, file)
    return _unshared(data), marks


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _bound_expansion(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases would expand it past MAX_NODES values or MAX_DEPTH levels.

    The composer gives an alias the *same* node as its anchor, so the graph stays small while
    the data it stands for can be exponential (nine aliases of nine aliases of ...). Here each
    node's expanded size and height are computed once (memoized), which costs the number of
    distinct nodes; the walk never goes deeper than MAX_DEPTH + 1 frames.
    """
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
    active: set[int] = set()

    def visit(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in memo:
            size, height = memo[key]
        else:
            if key in active:  # a recursive alias (`&a [*a]`): not JSON data
                raise RecipeError(f"{mark_of(node, file)}: a recursive YAML alias is not allowed in a recipe")
            if depth > MAX_DEPTH:
                raise _limit(node, file, _DEPTH_PROBLEM + " (its aliases included)")
            active.add(key)
            size, height = 1, 0
            for child in _children(node):
                child_size, child_height = visit(child, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_NODES:
                    raise _limit(node, file, (
                        f"this {_kind_of(node)} expands to more than {MAX_NODES:,} values once its "
                        "YAML aliases are expanded (each `*name` counts as a full copy of what it "
                        f"names); a recipe is limited to {MAX_NODES:,}. Write the repeated part "
                        "once (a `repeat:` block repeats layers) instead of nesting aliases"
                    ))
            active.discard(key)
            memo[key] = (size, height)
        if depth + height > MAX_DEPTH:
            raise _limit(node, file, _DEPTH_PROBLEM + " (its aliases included)")
        return size, height

    visit(root, 0)


def _limit(node: yaml.Node, file: str, problem: str) -> RecipeError:
    return RecipeError(f"{mark_of(node, file)}: {problem}.")


def _kind_of(node: yaml.Node) -> str:
    return {yaml.SequenceNode: "list", yaml.MappingNode: "mapping"}.get(type(node), "value")


def _unshared(value: Any) -> Any:
    """A copy with no shared parts: a YAML alias (`*step`) constructs the *same* list at each
    place, so an override of one place would silently change the others."""
    if isinstance(value, dict):
        return {key: _unshared(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshared(item) for item in value]
    return value


def _check_and_mark(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, file: str, marks: dict) -> None:
    """Record the mark of every value below ``node``; refuse duplicate keys (before YAML merge
    keys are flattened, so ``<<: *base`` followed by an explicit key is not a duplicate).
    The graph is acyclic and its expansion bounded (``_bound_expansion`` ran first)."""
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks[path + (index,)] = mark_of(item, file)
            _check_and_mark(loader, item, path + (index,), file, marks)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[Any, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *anchor` merge: its keys are the anchor's, marked there
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise RecipeError(
                    f"{mark_of(key_node, file)}: mapping keys must be strings, got {_short(key)}; "
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
            _check_and_mark(loader, value_node, path + (key,), file, marks)


def _check_json_data(value: Any, path: KeyPath, marks: dict, file: str) -> None:
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
        return  # .nan / .inf are YAML floats; validation refuses them where the schema does not allow them
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise RecipeError(
            f"{closest_mark(marks, path, file)}: {type(value).__name__} values are not allowed "
            f"in a recipe (at {json_path(path)}); use a string, number, list or mapping"
        )


def check_plain_data(value: Any, origin: str) -> None:
    """Refuse a recipe given as Python data (a Hub config, an embedding caller's dict) that is
    past the limits or not JSON data, before anything recursive (a deep copy) touches it."""
    count = 0
    stack: list[tuple[Any, KeyPath]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise RecipeError(f"{origin}: the recipe holds more than {MAX_NODES:,} values; a recipe "
                              "is limited to that")
        if len(path) > MAX_DEPTH:
            raise RecipeError(f"{origin}: {json_path(path[:8])}...: {_DEPTH_PROBLEM}")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise RecipeError(f"{origin}: {json_path(path)}: mapping keys must be strings, "
                                      f"got {_short(key)}")
                stack.append((child, path + (key,)))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, path + (index,)) for index, child in enumerate(item))
        elif not (item is None or isinstance(item, (bool, int, float, str))):
            raise RecipeError(f"{origin}: {json_path(path)}: {type(item).__name__} values are not "
                              "allowed in a recipe; use a string, number, list or mapping")


def depth_of(value: Any) -> int:
    """Levels of lists and mappings in a JSON-like value (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def count_values(value: Any) -> int:
    """The number of values in a JSON-like value, the containers included, without recursion."""
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def closest_mark(marks: dict[KeyPath, Mark], path: KeyPath, default: str = "<recipe>") -> Mark:
    """The mark of ``path``, else of its closest existing ancestor."""
    for cut in range(len(path), -1, -1):
        mark = marks.get(tuple(path[:cut]))
        if mark is not None:
            return mark
    return Mark(default)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(path: KeyPath) -> str:
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


def walk(value: Any, path: KeyPath = ()) -> Iterator[KeyPath]:
    """Every path in a JSON-like value, parents before children (the root included)."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, path + (index,))
