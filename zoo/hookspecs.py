"""The hooks a zoo plugin implements: this module is the extension manual.

A plugin is a module (or object) listed under the entry-point group ``zoo`` in its package's
``pyproject.toml``::

    [project.entry-points.zoo]
    myflows = "zoo_myflows.plugin"

and implementing any of the hooks below with ``@zoo.hookimpl``. Every hook takes no arguments and
returns a mapping ``{name: factory}``; the names become usable in recipes exactly like the
built-in ones (which register through these same hooks and entry points).

Factories may carry metadata as attributes:

``params_schema``
    a JSON Schema (``{"type": "object", "properties": ...}``) for the recipe parameters. Without
    it, one is derived from the factory's signature and type hints.
``examples`` (layers)
    a list of ``{"shape": (...), "params": {...}}`` (optionally ``"input"``: ``"normal"``,
    ``"unit_interval"``, ``"positive"`` or ``"pixels"``) on which ``zoo.testing`` runs the layer
    contract checks. Keep them tiny: the checks build a dense Jacobian.

The first line of a factory's docstring is its one-line description in ``zoo list``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pluggy

PROJECT = "zoo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- model components ---------------------------------------------------------------------------


@hookspec
def zoo_layers() -> Mapping[str, Callable[..., Any]]:
    """Flow layers (bijections), by name.

    Called once when the registry is built. A layer factory is called as
    ``factory(shape, **params)`` where ``shape`` is the per-sample input shape (a tuple, no batch
    dimension). It returns a ``torch.nn.Module`` with:

    - ``forward(x) -> (y, logdet)``: the data-to-latent direction, ``logdet`` of shape ``(batch,)``;
    - ``inverse(y) -> x``: the latent-to-data direction;
    - ``out_shape``: the per-sample output shape when it differs from ``shape``.

    A layer that factors out part of its input (Glow's ``split``) also has
    ``factor(x) -> (y, z, logdet)`` and ``unfactor(y, z) -> x`` and ``factored_shape``; its
    ``forward`` then adds the standard-normal log-density of ``z`` to ``logdet``.

    A factory should raise ``zoo.ShapeError`` (or ``ValueError``) for a shape it cannot take.
    """


@hookspec
def zoo_bases() -> Mapping[str, Callable[..., Any]]:
    """Base distributions of the latent, by name (``model.base`` in a recipe).

    A base factory is called as ``factory(shape, **params)`` where ``shape`` is the latent's
    per-sample shape (``model.latent_shape``: the last layer's output shape, or ``(D,)`` for
    multi-scale models, whose latent is flat). It returns a ``torch.nn.Module`` with
    ``log_prob(z) -> (batch,)`` and ``sample(shape, temperature=1.0, device=None, dtype=None)``,
    where ``shape`` includes the batch and ``temperature`` scales the standard deviation (Glow).
    Its parameters, if any, are trained with the layers'.
    """


# --- data, objectives and training --------------------------------------------------------------


@hookspec
def zoo_datasets() -> Mapping[str, Callable[..., Any]]:
    """Datasets, by name. ``factory(**params)`` returns a ``zoo.data.FlowDataset``."""


@hookspec
def zoo_losses() -> Mapping[str, Callable[..., Any]]:
    """Training objectives, by name.

    ``factory(**params)`` returns a callable ``loss(model, x) -> Tensor`` of shape ``(batch,)``
    (per-example loss in nats; the training loop averages it).
    """


@hookspec
def zoo_gradient_modes() -> Mapping[str, Callable[..., Any]]:
    """Gradient modes, by name (``exact``, ``self_normalized``, ``reconstruction_augmented``).

    ``factory(**params)`` returns an object with ``prepare(model)`` (called once before training)
    and ``loss(model, x, loss_fn) -> (scalar_loss, logs: dict)``: the loss whose gradient the
    training step back-propagates. Evaluation never uses it: it is always exact.
    """


# --- recipes and pretrained models --------------------------------------------------------------------------


@hookspec
def zoo_pretrained() -> Mapping[str, Mapping[str, Any]]:
    """Named pretrained models, by name: ``{name: entry}``.

    An entry is a mapping with ``repo_id`` and optionally ``revision``, ``sha256``, ``recipe``
    (path of the recipe that trains it), ``summary`` and ``published`` (bool).
    """


@hookspec
def zoo_recipes() -> Mapping[str, Any]:
    """Recipes this plugin ships, by name: ``{name: path of a YAML file}``.

    ``zoo run NAME`` and ``zoo validate NAME`` find them; ``zoo list recipes`` lists them with
    the ``description:`` line of each file. Ship the files as package data and point at them::

        from pathlib import Path
        from zoo.recipe import recipes_in

        @hookimpl
        def zoo_recipes():
            return recipes_in(Path(__file__).parent / "recipes")   # every *.yaml, by file stem
    """
