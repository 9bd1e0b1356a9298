"""The plugin registry: one discovery path (entry points in group ``zoo``) for built-in and
third-party plugins, one frozen record per component, lookups with "did you mean".

``get_registry()`` builds the registry once per process; ``build_registry()`` builds a fresh one
(tests use it to add plugins without installing them).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

import pluggy

from zoo import hookspecs
from zoo.errors import PluginError, UnknownComponentError

# kind -> hook name. The order is the order of `zoo list`.
KINDS: dict[str, str] = {
    "layers": "zoo_layers",
    "datasets": "zoo_datasets",
    "losses": "zoo_losses",
    "gradient_modes": "zoo_gradient_modes",
    "pretrained": "zoo_pretrained",
}
# Singular forms, for messages ("unknown layer 'x'").
SINGULAR = {
    "layers": "layer",
    "datasets": "dataset",
    "losses": "loss",
    "gradient_modes": "gradient mode",
    "pretrained": "pretrained model",
}
DISABLE_ENV = "ZOO_DISABLE_PLUGINS"


@dataclass(frozen=True)
class Component:
    """One registered component: what a recipe names and how to build it."""

    kind: str
    name: str
    factory: Any  # a callable factory, or a mapping for `pretrained` entries
    plugin: str
    summary: str
    params_schema: Mapping[str, Any] | None  # None for `pretrained` entries


@dataclass
class PluginInfo:
    """A plugin as `zoo plugins` shows it."""

    name: str
    version: str = ""
    distribution: str = ""
    components: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""  # why it failed to load; empty when it loaded
    blocked: bool = False


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
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"unknown {SINGULAR[kind]} {name!r}.{hint} "
        f"`zoo list {kind}` shows the {len(known)} available; install a plugin for others."
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


def build_registry(
    extra_plugins: Iterable[tuple[str, object]] = (), load_entry_points: bool = True
) -> Registry:
    """Load every plugin and collect its components.

    A plugin that fails to import is recorded (``PluginInfo.error``) and the others still load.
    A name that two plugins register is a PluginError naming both.
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
            info.error = f"a plugin named {name!r} is already loaded; the second one is ignored"
            continue
        try:
            pm.register(load(), name=name)
        except Exception as exc:  # a broken plugin must not break zoo: report it and go on
            info.error = f"{type(exc).__name__}: {exc}"
    pm.check_pending()

    components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
    by_name = {info.name: info for info in infos}
    for kind, hook_name in KINDS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin)
            info = by_name[plugin_name]
            try:
                provided = impl.function() or {}
                provided = dict(provided)
            except Exception as exc:
                info.error = f"{hook_name}() raised {type(exc).__name__}: {exc}"
                continue
            for comp_name, factory in provided.items():
                if comp_name in components[kind]:
                    first = components[kind][comp_name].plugin
                    raise PluginError(
                        f"the {SINGULAR[kind]} {comp_name!r} is registered by two plugins: "
                        f"{first!r} and {plugin_name!r}. Uninstall one, or disable one with "
                        f"{DISABLE_ENV}={plugin_name}."
                    )
                components[kind][comp_name] = _make_component(kind, comp_name, factory, plugin_name)
                info.components.setdefault(kind, []).append(comp_name)
    return Registry(infos, components)


def _make_component(kind: str, name: str, factory: Any, plugin: str) -> Component:
    if kind == "pretrained":
        entry = dict(factory)
        return Component(kind, name, entry, plugin, str(entry.get("summary", "")), None)
    if not callable(factory):
        raise PluginError(f"plugin {plugin!r} registers {SINGULAR[kind]} {name!r} as a non-callable")
    return Component(
        kind, name, factory, plugin, summary_of(factory), params_schema_of(factory, kind)
    )


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


def params_schema_of(factory: Any, kind: str) -> dict[str, Any]:
    """The JSON Schema of a factory's recipe parameters.

    Uses ``factory.params_schema`` when present; otherwise derives one from the signature: every
    keyword parameter becomes a property typed from its hint, parameters without a default are
    required, and nothing else is allowed. Layer factories take ``shape`` first, which is not a
    recipe parameter.
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
    if kind == "layers" and params:
        params = params[1:]  # the per-sample input shape
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra_allowed = False
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            extra_allowed = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
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
