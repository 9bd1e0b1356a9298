"""Recipes by name: the ones zoo ships (package data) and those plugins ship (``zoo_recipes``).

``zoo run emerging_cnn_mnist`` and ``zoo run recipes/emerging_cnn_mnist.yaml`` are the same run:
an argument that names an existing file is that file; otherwise a bare name (no folder, with or
without ``.yaml``) is looked up among the registered recipes.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo._suggest import did_you_mean
from zoo.errors import RecipeError

RECIPE_SUFFIXES = (".yaml", ".yml")


def shipped_recipes_dir() -> Path:
    """Where zoo's own recipes are installed: ``zoo/recipes/`` inside the package."""
    return Path(__file__).resolve().parent.parent / "recipes"


def recipes_in(folder: str | os.PathLike) -> dict[str, Path]:
    """``{file stem: path}`` of the recipe files directly in ``folder`` (sub-folders such as
    ``base/`` hold shared parts, not recipes). A plugin's ``zoo_recipes`` hook returns this."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        path.stem: path
        for path in sorted(folder.iterdir())
        if path.suffix in RECIPE_SUFFIXES and path.is_file()
    }


def resolve_recipe(text: str | os.PathLike, registry=None) -> Path:
    """The recipe file that ``text`` means: a path to a file, or the name of a registered
    recipe. Anything else is a RecipeError with the close names and paths it might mean."""
    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir():
        raise RecipeError(f"{text}: is a folder, not a recipe file. Name a .yaml file in it.")
    if path.exists():  # a device, a FIFO, a socket: never read
        raise RecipeError(f"{text}: is not a regular file (a device, a pipe or a socket); a recipe "
                          "is a YAML file. Name a .yaml file, or a shipped recipe from `zoo list recipes`.")
    from zoo.registry import get_registry

    registry = registry or get_registry()
    known = registry.names("recipes")
    stem = path.name.removesuffix(path.suffix) if path.suffix in RECIPE_SUFFIXES else path.name
    bare = path.parent == Path(".")
    if bare and registry.has("recipes", stem):
        return Path(registry.get("recipes", stem).factory)
    nearby = [p.name for p in path.parent.glob("*.y*ml")] if not bare and path.parent.is_dir() else []
    hint = did_you_mean(stem, known)
    if not hint and nearby:
        close = did_you_mean(path.name, nearby)
        hint = close.replace("Did you mean '", f"Did you mean '{path.parent}/")
    what = f"no recipe named {stem!r}" if bare and not path.suffix else f"recipe file not found: {text}"
    raise RecipeError(
        f"{what}.{hint} `zoo list recipes` shows the {len(known)} recipes that run by name; "
        "a path is read relative to the current folder."
    )
