"""Built-in plugin: placeholder, filled in by its owner."""

from zoo.hookspecs import hookimpl  # noqa: F401
