"""The plugin registry: one discovery path (entry points in group ``zoo``) for built-in and
third-party plugins, one frozen record per component, lookups with "did you mean".

``get_registry()`` builds the registry once per process; ``build_registry()`` builds a fresh one
(tests use it to add plugins without installing them).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

import pluggy
from jsonschema import Draft202012Validator

from zoo import hookspecs
from zoo._suggest import did_you_mean
from zoo.errors import PluginError, UnknownComponentError

@dataclass(frozen=True)
class Kind:
    """One kind of component: everything the registry, the validator, the schema and the CLI
    need to know about it, in one place (a new kind is one record here plus its hook spec).

    ``entry`` says what a plugin's mapping holds: ``"factory"`` (a callable, validated against
    its parameter schema), ``"mapping"`` (a record, e.g. a pretrained model's repo) or ``"path"``
    (a file, e.g. a shipped recipe). ``takes_shape``: the factory's first argument is a shape
    (layers and network layers get the per-sample input shape, bases the latent shape), not a
    recipe parameter.
    ``recipe_key``: the top-level recipe key that names one such component (``None`` where the
    kind is named elsewhere: layers in layer lists, bases under ``model``).
    """

    name: str
    hook: str
    singular: str
    aliases: tuple[str, ...] = ()
    entry: str = "factory"
    takes_shape: bool = False
    recipe_key: str | None = None
    shown_as: str = ""

    @property
    def title(self) -> str:
        """What `zoo list` calls the kind."""
        return self.shown_as or self.name


# The order is the order of `zoo list`.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("layers", "zoo_layers", "layer", takes_shape=True),
        Kind("bases", "zoo_bases", "base distribution", takes_shape=True),
        Kind("network_layers", "zoo_network_layers", "network layer", ("network-layers",),
             takes_shape=True),
        Kind("datasets", "zoo_datasets", "dataset", recipe_key="dataset"),
        Kind("losses", "zoo_losses", "loss", recipe_key="loss"),
        Kind("gradient_modes", "zoo_gradient_modes", "gradient mode", ("gradient-modes", "modes"),
             recipe_key="gradient_mode"),
        Kind("pretrained", "zoo_pretrained", "pretrained model", ("models",), entry="mapping",
             shown_as="models"),
        Kind("recipes", "zoo_recipes", "recipe", entry="path"),
        Kind("tasks", "zoo_tasks", "task", recipe_key="task"),
    )
}


def kind_named(text: str) -> Kind:
    """The kind a user means by ``text``: its name, singular, or an alias (``models``)."""
    for kind in KINDS.values():
        if text in (kind.name, kind.singular, kind.singular.replace(" ", "_"), *kind.aliases):
            return kind
    names = [k.title for k in KINDS.values()]
    raise UnknownComponentError(
        f"unknown component kind {text!r}.{did_you_mean(text, names)} The kinds are: {', '.join(names)}"
    )


DISABLE_ENV = "ZOO_DISABLE_PLUGINS"


@dataclass(frozen=True)
class Component:
    """One registered component: what a recipe names and how to build it.

    ``error`` is set for a component that cannot be used (its parameter schema is invalid, or two
    plugins claim its name); naming it in a recipe is then a PluginError with that reason.
    """

    kind: str
    name: str
    factory: Any  # a callable factory, a mapping (`pretrained`) or a file path (`recipes`)
    plugin: str
    summary: str
    params_schema: Mapping[str, Any] | None  # None where the kind's entries are not factories
    error: str = ""

    def check_usable(self, where: str = "") -> None:
        """Raise the PluginError of a broken component (naming ``where`` it was asked for)."""
        if self.error:
            at = f"{where}: " if where else ""
            raise PluginError(f"{at}{KINDS[self.kind].singular} {self.name!r}: {self.error}")


@dataclass
class PluginInfo:
    """A plugin as `zoo plugins` shows it."""

    name: str
    version: str = ""
    distribution: str = ""
    components: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # why (parts of) it failed to load
    blocked: bool = False

    @property
    def error(self) -> str:
        return "; ".join(self.errors)


class Registry:
    """All components of all loaded plugins, by kind and name."""

    def __init__(self, plugins: list[PluginInfo], components: dict[str, dict[str, Component]]):
        self.plugins = plugins
        self._components = components

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[_check_kind(kind)])

    def components(self, kind: str, pattern: str | None = None) -> list[Component]:
        """Components of one kind, sorted by name, optionally filtered by an fnmatch pattern."""
        found = self._components[_check_kind(kind)]
        return [found[n] for n in sorted(found) if pattern is None or fnmatch.fnmatch(n, pattern)]

    def has(self, kind: str, name: str) -> bool:
        return name in self._components[_check_kind(kind)]

    def get(self, kind: str, name: str) -> Component:
        """The component `name` of `kind`, or an UnknownComponentError with suggestions."""
        found = self._components[_check_kind(kind)]
        if name in found:
            return found[name]
        raise UnknownComponentError(unknown_name_message(kind, name, found))


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    record = KINDS[kind]
    return (
        f"unknown {record.singular} {name!r}.{did_you_mean(name, known)} "
        f"`zoo list {record.title}` shows the {len(known)} available; install a plugin for others."
    )


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UnknownComponentError(
            f"unknown component kind {kind!r}; the kinds are: {', '.join(KINDS)}"
        )
    return kind


# --- building --------------------------------------------------------------------------------


def disabled_plugins() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


# What a plugin may raise without taking zoo down: any error, and sys.exit() (SystemExit is not
# an Exception). Ctrl-C (KeyboardInterrupt) still stops zoo.
PLUGIN_FAILURES = (Exception, SystemExit)


def build_registry(
    extra_plugins: Iterable[tuple[str, object]] = (), load_entry_points: bool = True
) -> Registry:
    """Load every plugin and collect its components.

    A plugin is isolated like pytest isolates a test: one that fails to import, whose hook
    raises or calls ``sys.exit``, or returns something other than a mapping, or registers a
    bad entry, is recorded (``PluginInfo.errors``, shown as BROKEN by ``zoo plugins``) and the
    others still load. A name that two plugins register is kept once and marked broken, so that
    naming it in a recipe is a PluginError naming both plugins.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    infos: list[PluginInfo] = []

    candidates: list[tuple[str, Callable[[], object], str, str]] = []
    if load_entry_points:
        for ep in sorted(metadata.entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
            dist = ep.dist
            candidates.append(
                (ep.name, ep.load, dist.metadata["Name"] if dist else "", dist.version if dist else "")
            )
    for name, plugin in extra_plugins:
        candidates.append((name, lambda p=plugin: p, "", ""))

    for name, load, dist_name, version in candidates:
        info = PluginInfo(name=name, version=version, distribution=dist_name)
        infos.append(info)
        if name in blocked:
            info.blocked = True
            continue
        if pm.has_plugin(name):
            info.errors.append(f"a plugin named {name!r} is already loaded; the second one is ignored")
            continue
        try:
            pm.register(load(), name=name)
        except PLUGIN_FAILURES as exc:  # a broken plugin must not break zoo: report it, go on
            info.errors.append(_failure(exc))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        bad = pm.get_name(exc.plugin) if exc.plugin is not None else None
        by_name_pending = {i.name: i for i in infos}
        if bad in by_name_pending:
            by_name_pending[bad].errors.append(str(exc))
            pm.unregister(name=bad)
        else:
            raise

    components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
    by_name = {info.name: info for info in infos}
    for kind in KINDS.values():
        for impl in getattr(pm.hook, kind.hook).get_hookimpls():
            info = by_name[pm.get_name(impl.plugin)]
            for component in _components_of(kind, impl.function, info):
                _add(components[kind.name], component, info)
    return Registry(infos, components)


def _components_of(kind: Kind, hook: Callable[[], Any], info: PluginInfo) -> list[Component]:
    """The components one plugin's hook provides; what is wrong goes to ``info.errors``."""
    try:
        provided = hook()
    except PLUGIN_FAILURES as exc:
        info.errors.append(f"{kind.hook}() {_failure(exc)}")
        return []
    if provided is None:
        return []
    if not isinstance(provided, Mapping):
        info.errors.append(
            f"{kind.hook}() returned a {type(provided).__name__}, not a mapping {{name: entry}}"
        )
        return []
    found = []
    for name, entry in provided.items():
        problem = _entry_problem(kind, name, entry)
        if problem:
            info.errors.append(f"{kind.hook}() registers {problem}; it is skipped")
            continue
        found.append(_make_component(kind, name, entry, info.name))
    return found


def _entry_problem(kind: Kind, name: Any, entry: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        return f"a {kind.singular} under the name {name!r}, which is not a non-empty string"
    if kind.entry == "factory" and not callable(entry):
        return f"{kind.singular} {name!r} as a {type(entry).__name__}, which is not callable"
    if kind.entry == "mapping" and not isinstance(entry, Mapping):
        return f"{kind.singular} {name!r} as a {type(entry).__name__}, not a mapping"
    if kind.entry == "path" and not (isinstance(entry, (str, os.PathLike)) and os.path.isfile(entry)):
        return f"{kind.singular} {name!r} as {entry!r}, which is not a file"
    return ""


def _add(found: dict[str, Component], component: Component, info: PluginInfo) -> None:
    first = found.get(component.name)
    if first is None:
        found[component.name] = component
        info.components.setdefault(component.kind, []).append(component.name)
        return
    if first.plugin == component.plugin:
        return
    clash = (
        f"registered by two plugins, {first.plugin!r} and {component.plugin!r}. Uninstall one, "
        f"or disable one with {DISABLE_ENV}={component.plugin}"
    )
    found[component.name] = dataclasses.replace(first, error=clash)
    info.errors.append(f"{KINDS[component.kind].singular} {component.name!r} is {clash}")


def _make_component(kind: Kind, name: str, entry: Any, plugin: str) -> Component:
    if kind.entry == "mapping":
        entry = dict(entry)
        return Component(kind.name, name, entry, plugin, str(entry.get("summary", "")), None)
    if kind.entry == "path":
        return Component(kind.name, name, os.fspath(entry), plugin, _recipe_summary(entry), None)
    error = ""
    try:
        schema = params_schema_of(entry, kind.name)
        Draft202012Validator.check_schema(schema)
    except PLUGIN_FAILURES as exc:
        schema, error = None, f"its parameter schema is invalid ({_failure(exc)}); fix params_schema in plugin {plugin!r}"
    return Component(kind.name, name, entry, plugin, summary_of(entry), schema, error)


def _recipe_summary(path: Any) -> str:
    """A shipped recipe's one-line summary: its ``description:`` line, read without YAML (cheap,
    and a broken recipe must not break `zoo list`)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(8192)
    except OSError:
        return ""
    for line in head.splitlines():
        if line.startswith("description:"):
            return line.partition(":")[2].strip().strip("'\"")
    return ""


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace (or with None, reset) the process-wide registry; for tests and embedding."""
    global _REGISTRY
    _REGISTRY = registry


# --- metadata of factories -------------------------------------------------------------------


def summary_of(factory: Any) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# Parameters zoo itself passes to a factory at assembly, never written in a recipe.
ASSEMBLY_PARAMS = ("context_features",)


def params_schema_of(factory: Any, kind: str) -> dict[str, Any]:
    """The JSON Schema of a factory's recipe parameters.

    Uses ``factory.params_schema`` when present; otherwise derives one from the signature: every
    keyword parameter becomes a property typed from its hint, parameters without a default are
    required, and nothing else is allowed. Layer factories take ``shape`` first, which is not a
    recipe parameter; nor is ``context_features``, which zoo passes to a conditional layer or base.
    """
    explicit = getattr(factory, "params_schema", None)
    if explicit is not None:
        return dict(explicit)
    target = factory.__init__ if inspect.isclass(factory) else factory
    signature = inspect.signature(target)
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable annotations: fall back to no typing
        hints = {}
    params = list(signature.parameters.values())
    if inspect.isclass(factory) and params and params[0].name == "self":
        params = params[1:]
    if KINDS[kind].takes_shape and params:
        params = params[1:]  # the input (layers) or latent (bases) shape
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra_allowed = False
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            extra_allowed = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or p.name in ASSEMBLY_PARAMS:
            continue
        prop = _schema_for_hint(hints.get(p.name, p.annotation))
        if p.default is p.empty:
            required.append(p.name)
        elif _json_compatible(p.default):
            prop["default"] = _jsonable(p.default)
        properties[p.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": extra_allowed,
    }
    if required:
        schema["required"] = required
    return schema


def _schema_for_hint(hint: Any) -> dict[str, Any]:
    if hint is inspect.Parameter.empty or hint is Any:
        return {}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [_schema_for_hint(a) for a in args]
        if any(o == {} for o in options):
            return {}
        return {"anyOf": options}
    if hint is type(None):
        return {"type": "null"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if hint is str:
        return {"type": "string"}
    if origin is tuple and args and args[-1] is not Ellipsis:  # tuple[int, int]: fixed length
        return {
            "type": "array",
            "prefixItems": [_schema_for_hint(a) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in (list, tuple) or hint in (list, tuple):  # list[int], tuple[int, ...]
        item = _schema_for_hint(args[0]) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if origin is dict or hint is dict:
        return {"type": "object"}
    return {}


def _json_compatible(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
