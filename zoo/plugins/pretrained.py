"""Built-in plugin: the catalogue of named pretrained models, read from the shipped recipes.

Every recipe in the repository's ``recipes/`` folder with a ``hub:`` block names a model::

    hub: {name: glow-celeba-3x32, repo_id: zoo-flows/glow-celeba-3x32,
          revision: <commit sha>, sha256: <sha256 of model.safetensors>, published: true}

The name is the block's ``name`` (else the recipe's ``name``). The entry is ``{repo_id, revision,
sha256, recipe, summary, published}``: ``recipe`` is the recipe's path relative to the repository
root, ``summary`` its ``description``, and ``published`` defaults to whether a revision is pinned.
``zoo pull NAME`` downloads exactly that commit and checks that sha256.

Where the recipes are: ``ZOO_RECIPES_DIR`` if set, else the recipes shipped in the package
(``zoo/recipes/``, which the repository's ``recipes/`` links to).

Recipes are read with zoo's bounded YAML loader (``zoo.recipe._marks``: safe, with caps on size,
nesting and alias expansion) only, without ``extends:`` or validation, so building the registry
stays cheap and never recurses into it. A recipe whose ``hub:`` block is malformed still
gives an entry, marked with ``error``, so ``zoo pull NAME`` says what to fix instead of "unknown".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo.errors import RecipeError
from zoo.hookspecs import hookimpl

MAX_RECIPE_BYTES = 2**20

RECIPES_ENV = "ZOO_RECIPES_DIR"


def recipes_dir() -> Path:
    if os.environ.get(RECIPES_ENV):
        return Path(os.environ[RECIPES_ENV])
    from zoo.recipe import shipped_recipes_dir

    return shipped_recipes_dir()


def _display_path(path: Path, root: Path) -> str:
    try:
        return str(Path(root.name) / path.relative_to(root))
    except ValueError:
        return str(path)


def entry_of(path: Path, data: Any, root: Path) -> tuple[str, dict[str, Any]] | None:
    """``(name, entry)`` for a recipe with a ``hub:`` block, or None for one without."""
    if not isinstance(data, dict) or "hub" not in data:
        return None
    where = _display_path(path, root)
    hub = data["hub"]
    fallback = str(data.get("name") or path.stem)
    if not isinstance(hub, dict):
        return fallback, {"recipe": where, "published": False, "error": f"{where}: `hub:` must be a mapping"}
    name = str(hub.get("name") or fallback)
    entry = {
        "repo_id": hub.get("repo_id"),
        "revision": hub.get("revision"),
        "sha256": hub.get("sha256"),
        "recipe": where,
        "summary": str(data.get("description") or ""),
        "published": bool(hub.get("published", bool(hub.get("revision")))),
    }
    if not isinstance(entry["repo_id"], str) or "/" not in entry["repo_id"]:
        entry["error"] = f"{where}: `hub.repo_id` must be ORG/NAME, not {entry['repo_id']!r}"
    elif entry["published"] and not entry["revision"]:
        entry["error"] = f"{where}: `hub.published` is true but no `hub.revision` (commit sha) is pinned"
    return name, entry


def catalogue(root: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """The named models of the recipes under ``root`` (default: ``recipes_dir()``)."""
    root = Path(root) if root is not None else recipes_dir()
    found: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*.yaml")):
        try:
            data = _read_recipe(path)
        except (OSError, RecipeError):
            continue  # a broken recipe is reported by `zoo validate`, not by the catalogue
        named = entry_of(path, data, root)
        if named is None:
            continue
        name, entry = named
        if name in found:
            entry = {**entry, "published": False, "error": (
                f"{entry['recipe']} and {found[name]['recipe']} both name the model {name!r}; rename one `hub.name`"
            )}
        found[name] = entry
    return found


def _read_recipe(path: Path) -> Any:
    from zoo.recipe._marks import load_marked

    with open(path, "rb") as f:
        raw = f.read(MAX_RECIPE_BYTES + 1)
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: larger than {MAX_RECIPE_BYTES:,} bytes")
    return load_marked(raw.decode("utf-8", errors="replace"), str(path))[0]


@hookimpl
def zoo_pretrained():
    return catalogue()
