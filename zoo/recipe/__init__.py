"""Recipes: YAML loading, ``extends:``, ``key=value`` overrides, two-stage JSON Schema validation.

    recipe = load_recipe("recipes/glow_mnist_small.yaml", overrides=["train.epochs=2"])

The way a recipe goes:

1. **Read** with PyYAML's SafeLoader (duplicate keys refused), keeping the file, line and column
   of every value (``zoo.recipe._marks``).
2. **extends:** a file, or a list of files (later ones win), relative to the recipe; chains are
   followed and cycles refused. Mappings are deep-merged, lists replaced, ``extends`` dropped.
3. **Overrides** (``zoo.recipe._overrides``): ``train.epochs=2``, ``+key=value``, ``~key``.
4. **Validation** (``zoo.recipe._validate``): the skeleton against ``zoo/recipe/recipe.schema.json`` (shipped in the package; the repository's ``schemas/`` links to it),
   then each component's parameters against its plugin's schema. All errors are reported at once,
   one ``file:line:col  $.path: message`` line each, in one RecipeError.
5. **Normal form** (what ``Recipe`` holds, what a run folder's ``recipe.yaml`` contains):
   ``dataset``, ``loss`` and ``gradient_mode`` are mappings ``{name: ..., **params}`` (the dataset's
   ``batch_size`` filled, default 100); ``model.base`` is filled; ``model.preamble`` is moved to the
   front of ``model.layers`` (and removed); ``train`` has every key, defaults filled and numbers
   typed as the schema says; keys are in a readable order. Component parameters the recipe does
   not set are *not* filled in (their defaults belong to the plugin). Loading a resolved recipe
   again gives the same recipe and the same ``sha256``.

Modules: ``_load`` (reading, ``extends:``), ``_marks`` (YAML with file/line/column marks),
``_overrides``, ``_validate`` (the two stages and the composed schema), ``_recipe`` (``Recipe``
and its normal form), ``_catalog`` (recipes by name).
"""

from __future__ import annotations

from zoo.recipe._catalog import recipes_in, resolve_recipe, shipped_recipes_dir
from zoo.recipe._load import composed_schema, deep_merge, load_recipe, validate_recipe
from zoo.recipe._recipe import DEFAULT_BATCH_SIZE, Recipe, iter_layer_entries, normalize_component
from zoo.recipe._validate import LOADER_KEYS, SCHEMA_FILE

__all__ = [
    "Recipe",
    "load_recipe",
    "validate_recipe",
    "composed_schema",
    "normalize_component",
    "iter_layer_entries",
    "deep_merge",
    "recipes_in",
    "resolve_recipe",
    "shipped_recipes_dir",
    "LOADER_KEYS",
    "DEFAULT_BATCH_SIZE",
    "SCHEMA_FILE",
]
