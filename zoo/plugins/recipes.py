"""Built-in plugin: the recipes zoo ships (``zoo run NAME``, ``zoo list recipes``).

They are package data in ``zoo/recipes/`` (the repository's top-level ``recipes/`` points there);
shared bases live in ``zoo/recipes/base/`` and are not recipes of their own.
"""

from __future__ import annotations

from zoo.hookspecs import hookimpl
from zoo.recipe import recipes_in, shipped_recipes_dir


@hookimpl
def zoo_recipes():
    return recipes_in(shipped_recipes_dir())
