"""The hooks a zoo plugin implements, and the protocols zoo recognises: the extension manual.

Registering
-----------
A plugin is a module (or object) listed under the entry-point group ``zoo`` in its package's
``pyproject.toml``::

    [project.entry-points.zoo]
    myflows = "zoo_myflows.plugin"

and implementing any subset of the hooks below with ``@zoo.hookimpl``. Every hook takes no
arguments and returns a mapping ``{name: entry}`` (a factory for most kinds); the names become
usable in recipes exactly like the built-in ones, which register through these same hooks and
entry points. ``ZOO_DISABLE_PLUGINS=a,b`` turns plugins off by entry-point name.

A plugin that fails is isolated, never fatal: an import error, ``sys.exit``, a hook that raises
or returns something other than a mapping, a non-callable factory, an invalid ``params_schema``
or a name another plugin already registered make ``zoo plugins`` show it as BROKEN with every
reason; the other plugins keep working, and a recipe that names a broken component gets a
``zoo.errors.PluginError`` naming the plugin, the component and the place in the recipe.

Factory metadata
----------------
``params_schema``
    a JSON Schema (``{"type": "object", "properties": ...}``) for the recipe parameters. Without
    it, one is derived from the factory's signature and type hints (parameters without a default
    are required; unknown parameters are refused at validation, with their recipe path).
``examples`` (layers)
    a list of ``{"shape": (...), "params": {...}}`` (optionally ``"input"``: ``"normal"``,
    ``"unit_interval"``, ``"positive"`` or ``"pixels"``, and ``"perturb"``) on which
    ``zoo.testing`` runs the layer contract checks. Keep them tiny: the checks build a dense
    Jacobian.
docstring
    its first line is the component's one-line description in ``zoo list`` (give the formula and
    the paper); the rest is shown by ``zoo list KIND -v NAME``.

Conditional layers and bases
----------------------------
A factory that can be conditioned sets ``takes_context = True``. In a recipe with ``context:``
zoo calls it as ``factory(shape, context_features=K, **params)``; the module then has
``context_features = K`` and takes the context features ``(batch, K)`` as a second argument:
``forward(x, context)``, ``inverse(y, context)`` (factoring layers ``factor(x, context)``,
``unfactor(y, z, context)``; bases ``log_prob(z, context)`` and ``sample(shape, ...,
context=...)``). Without a context (``context_features`` 0) it must behave as an unconditional
layer. Layers without ``takes_context`` are unchanged and never see a context.
``zoo.testing.check_layer`` runs the contract on both (see ``zoo.conditioning``).

Optional protocols (duck-typed)
-------------------------------
Multi-scale layers
    derive from ``zoo.flow.FactorOut`` (``factor(x) -> (y, z, logdet)``, ``unfactor(y, z) -> x``,
    ``factored_shape``): the model keeps every factored part in one flat latent, so
    ``model(x) -> (z, logdet)`` is an exact bijection and ``model.inverse`` exact.
Learned inverses
    a layer with a cheap approximate inverse sets a boolean attribute ``fast_inverse``;
    ``model.sample()`` switches it on (and ``inverse`` uses it) unless ``exact_inverse=True``.
    ``model.inverse`` outside sampling stays exact.
Self-normalizing layers
    expose ``reconstruction_loss(symmetric: bool) -> Tensor (batch,)`` (on the input of their last
    training forward) and a ``self_normalized`` attribute, which the gradient modes switch
    (``zoo.plugins.gradient_modes``).
Datasets that know their shape
    a dataset factory may carry ``data_shape(**params) -> (shape, n_bits)``, so that a model can
    be built (``zoo validate``, loading weights) without the data files.

Errors to raise
---------------
A factory raises ``zoo.errors.ShapeError`` (or ``ValueError``) for an input shape it cannot take,
``zoo.errors.RecipeError`` for parameters that pass the schema but cannot work together, and
``zoo.errors.DataError`` for missing or malformed data files, each saying what to change. Any other
exception from a factory is reported as a bug of the plugin (``PluginError``).

Testing a plugin
----------------
``zoo.testing.check_layer(factory, shape, params)`` runs the contract every layer must pass
(inverse round trip, log-determinant against the brute-force float64 Jacobian, shapes, finite
gradients, safetensors round trip); ``zoo.testing.layer_examples(factory)`` gives its examples.

A worked example
----------------
``examples/zoo-example-plugin`` in zoo's repository is a complete, installable plugin::

    import torch
    from torch import nn
    import zoo

    class SinhArcsinh(nn.Module):
        # docstring: "Element-wise y = sinh(b asinh(x) - a) (Jones & Pewsey 2009)."
        examples = [{"shape": (3,), "params": {}}]

        def __init__(self, shape: tuple, init_tail: float = 1.0):   # shape first, then params
            ...
        def forward(self, x):            # -> (y, logdet of shape (batch,))
            ...
        def inverse(self, y):
            ...

    @zoo.hookimpl
    def zoo_layers():
        return {"sinh_arcsinh": SinhArcsinh}

    @zoo.hookimpl
    def zoo_recipes():                    # recipes shipped as package data run by name
        from pathlib import Path
        from zoo.recipe import recipes_in
        return recipes_in(Path(__file__).parent / "recipes")

After ``pip install zoo-example-plugin``, ``zoo list layers`` shows ``sinh_arcsinh`` and
``zoo run ring_sinh`` trains its recipe.
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

    A factory should raise ``zoo.errors.ShapeError`` (or ``ValueError``) for a shape it cannot
    take.
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



@hookspec
def zoo_network_layers() -> Mapping[str, Callable[..., Any]]:
    """Network layers (not invertible: the parts of classifiers), by name.

    A task that trains a network rather than a flow (``classify``) builds it from these. A
    factory is called as ``factory(shape, **params)`` where ``shape`` is the per-sample input
    shape (a tuple, no batch dimension). It returns a ``torch.nn.Module`` with:

    - ``forward(x) -> y``: one tensor in, one out (no log-determinant);
    - ``out_shape``: the per-sample output shape (always set, also when it equals ``shape``).

    A Bayesian layer (``mnf_linear``, ``mnf_conv2d``) draws fresh noise in every ``forward``,
    in training and evaluation alike, and also has ``kl_divergence() -> Tensor`` (a scalar): its
    term of the ELBO's KL part, which ``zoo.classify.Classifier`` sums over its layers and the
    loss divides by the number of training examples.

    A factory should raise ``zoo.errors.ShapeError`` for a shape it cannot take, saying which
    layer to put before it.
    """

# --- data, objectives and training --------------------------------------------------------------


@hookspec
def zoo_datasets() -> Mapping[str, Callable[..., Any]]:
    """Datasets, by name. ``factory(**params)`` returns a ``zoo.data.FlowDataset``.

    An energy target (a density ``exp(-U)`` known by its energy, no data) returns the subclass
    ``zoo.data.EnergyTarget`` (``energy(x) -> (batch,)``, ``log_normalizer`` or None, splits of
    ``zoo.data.Placeholders`` that size the steps); set ``factory.energy_target = True`` so that
    error messages can name it. Only losses that fit energy targets train on one.
    """


@hookspec
def zoo_losses() -> Mapping[str, Callable[..., Any]]:
    """Training objectives, by name.

    ``factory(**params)`` returns a callable ``loss(model, x) -> Tensor`` of shape ``(batch,)``
    (per-example loss in nats; the training loop averages it).

    A loss that fits an energy target instead of data (``reverse_kl``) sets ``fits = "energy"``
    and has ``bind(target, where)`` (called at assembly with the ``EnergyTarget``),
    ``draw(model, n, device, dtype) -> (x, log_q)`` (samples of the model's q and their
    log-density, for evaluation and pictures) and optionally ``log_density(model, x)`` (log q at
    given points, or None); ``x`` then only gives the batch size, device and dtype. Assembly
    refuses such a loss on a data set, and any other loss on an energy target.
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


@hookspec
def zoo_tasks() -> Mapping[str, Callable[..., Any]]:
    """Tasks, by name (``task:`` in a recipe; ``density`` when a recipe names none).

    ``factory(**params)`` returns a task object (``zoo.tasks`` documents it): ``model_kind``
    (``"flow"`` or ``"classifier"``), ``check(recipe, dataset)``, ``initialize(model, x, y)``,
    ``step_loss(model, x, y, mode, loss_fn) -> (loss, logs)``, ``evaluate(model, loader, device)
    -> zoo.tasks.Evaluation`` and ``outputs(model, dataset, folder, recipe, log) -> dict`` (the
    run's pictures and extra test metrics). The training loop, run folder, ``zoo eval`` and the
    Hub serve every task alike.
    """
