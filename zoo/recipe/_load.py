"""Reading a recipe: safe YAML with marks, ``extends:`` merged, overrides applied, validated."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any, Mapping, Sequence

from zoo.errors import PluginError, RecipeError
from zoo.recipe import _validate as validation
from zoo.recipe._marks import (
    MAX_NODES,
    Mark,
    check_plain_data,
    closest_mark,
    count_values,
    load_marked,
    walk,
)
from zoo.recipe._catalog import resolve_recipe
from zoo.recipe._overrides import apply_overrides
from zoo.recipe._recipe import Recipe, normal_form
from zoo.registry import Registry, get_registry


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


def load_recipe(
    source: str | os.PathLike | Mapping,
    overrides: Sequence[str] = (),
    *,
    registry: Registry | None = None,
    validate: bool = True,
    self_contained: bool = False,
) -> Recipe:
    """Read (a file, a shipped recipe's name, or a mapping), merge ``extends:``, apply
    overrides, validate, normalize.

    ``self_contained=True`` is for recipes that come from elsewhere (a Hub repo's config, a run
    folder): they were resolved when written, so an ``extends:`` in them is refused rather than
    followed to a file on this machine.
    """
    if isinstance(source, Mapping):
        path = getattr(source, "path", None)
        origin = str(path) if path else "<recipe>"
        base_dir = Path(path).parent if path else Path.cwd()
        check_plain_data(source, origin)  # a Hub config may be anything: bound it before copying
        data = copy.deepcopy(dict(source))
        _refuse_extends(data, origin, self_contained)
        data, marks = _resolve_extends(data, {}, base_dir, origin, chain=(origin,))
    else:
        path = resolve_recipe(source, registry) if not self_contained else Path(source)
        origin = _display(path)
        data, marks = _load_file(path, chain=(), referrer=None, self_contained=self_contained)
    registry = registry or (get_registry() if validate or overrides else None)

    if overrides:
        data, cli_marks = apply_overrides(
            data, list(overrides), lambda d, p: validation.known_keys(d, p, registry), marks
        )
        marks = _remap(data, [(marks, None), (cli_marks, "prefix")])

    if validate:
        problems = validation.skeleton_problems(data)
        problems += validation.component_problems(data, registry)
        errors = validation.format_problems(problems, marks, origin)
        if errors:
            count = f"{len(errors)} error" + ("s" if len(errors) != 1 else "")
            # A recipe naming a broken plugin's component is the plugin's fault: say so by type.
            error = PluginError if any(p.plugin for p in problems) else RecipeError
            raise error(f"{origin}: {count}\n" + "\n".join(errors))
    return Recipe(normal_form(data), path=Path(path) if path else None)


def _display(path: Path) -> str:
    """The path as the user would write it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):  # outside the cwd; a symlink loop; a NUL byte
        return str(path)


def _refuse_extends(data: Any, origin: str, self_contained: bool) -> None:
    if self_contained and isinstance(data, dict) and "extends" in data:
        raise RecipeError(
            f"{origin}: a recipe from a run folder or a Hub repo must be self-contained, but it has "
            f"`extends: {data['extends']!r}`; zoo does not follow it to files on this machine. "
            "Push the model again with this zoo (`zoo push` resolves recipes)."
        )


MAX_FILE_BYTES = 1 << 20  # a recipe is a few KiB; reading stops one byte past this
MAX_RECIPE_FILES = 32  # files read for one recipe, its whole `extends:` tree counted
PSEUDO_FILESYSTEMS = ("/proc/", "/sys/")  # regular files by stat, but not files a person wrote


def _load_file(
    path: Path, chain: tuple[str, ...], referrer: Mark | None, self_contained: bool = False,
    reads: list[str] | None = None,
) -> tuple[dict, dict]:
    """One recipe file with its `extends:` merged in; ``chain`` is the files being resolved,
    ``reads`` every file read so far for this recipe (a diamond of `extends:` reads a file twice)."""
    shown = _display(path)
    key = _resolved(path)
    if key in chain:
        names = [_display(Path(p)) for p in chain[chain.index(key):]] + [shown]
        raise RecipeError(
            f"{referrer}: extends cycle: {' -> '.join(names)}. Remove one of these `extends:`."
        )
    reads = [] if reads is None else reads
    if len(reads) >= MAX_RECIPE_FILES:
        raise RecipeError(
            f"{referrer or shown}: extends: reading {shown} would make {len(reads) + 1} recipe files "
            f"for one recipe; zoo reads at most {MAX_RECIPE_FILES}. Extend fewer files (each file "
            "counts every time it is reached)."
        )
    reads.append(key)
    text = _read_recipe_text(path, shown, referrer)
    data, marks = load_marked(text, shown)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise RecipeError(
            f"{shown}: a recipe must be a YAML mapping (name:, dataset:, model:, ...), got {got}"
        )
    _refuse_extends(data, shown, self_contained)
    return _resolve_extends(data, marks, path.parent, shown, chain + (key,), reads)


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL in the name
        return os.path.abspath(path)


def _read_recipe_text(path: Path, shown: str, referrer: Mark | None) -> str:
    """The text of a recipe file: a regular file of at most MAX_FILE_BYTES of UTF-8.

    Opened without blocking and checked with fstat before reading, so a FIFO, a device
    (/dev/zero, /dev/urandom), a directory or a /proc file is refused instead of read forever;
    the read itself stops one byte past the cap whatever the file claims its size is.
    """
    where = f"{referrer}: extends: " if referrer else ""
    if _resolved(path).startswith(PSEUDO_FILESYSTEMS):
        raise RecipeError(f"{where}{shown} is a file of the operating system, not a recipe. "
                          "Name a .yaml recipe file.")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RecipeError(f"{where}recipe file not found: {shown}. Check the path.") from None
    except (OSError, ValueError) as exc:  # permissions, a name too long, a NUL byte in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RecipeError(f"{where}{shown}: cannot read the recipe file ({reason}).") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RecipeError(f"{where}{shown} is {_file_kind(mode)}, not a regular file; a recipe "
                              "must be a YAML file. Name a .yaml recipe file.")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"{where}{shown}: cannot read the recipe file ({exc.strerror or exc}).") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise RecipeError(f"{where}{shown} is larger than {MAX_FILE_BYTES >> 20} MiB; a recipe is "
                          "a few KiB of YAML. Is this the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise RecipeError(
            f"{shown}:{line}:{col}: the file is not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "save it as UTF-8."
        ) from None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def _resolve_extends(
    data: dict, marks: dict, base_dir: Path, shown: str, chain: tuple[str, ...],
    reads: list[str] | None = None,
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
    reads = [] if reads is None else reads
    merged: dict = {}
    merged_marks: dict = {}
    for index, parent in enumerate(parents):
        mark_path = ("extends",) if len(parents) == 1 else ("extends", index)
        referrer = closest_mark(marks, mark_path, shown)
        parent_data, parent_marks = _load_file(base_dir / parent, chain, referrer, reads=reads)
        merged = deep_merge(merged, parent_data)
        if count_values(merged) > MAX_NODES:
            raise RecipeError(
                f"{referrer}: with {parent} merged in, the recipe holds more than {MAX_NODES:,} "
                "values; a recipe is limited to that. Extend smaller recipes."
            )
        merged_marks = _remap(merged, [(merged_marks, None), (parent_marks, None)])
    marks = {p: m for p, m in marks.items() if p[:1] != ("extends",)}
    result = deep_merge(merged, data)
    if count_values(result) > MAX_NODES:
        raise RecipeError(
            f"{shown}: with the files it extends merged in, the recipe holds more than "
            f"{MAX_NODES:,} values; a recipe is limited to that. Extend smaller recipes."
        )
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


