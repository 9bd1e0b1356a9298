"""The flow core: a model is a base distribution plus a sequence of layers applied x -> z.

``log_prob(x) = base.log_prob(z) + sum of the layers' log|det J|``; ``sample`` runs the layers'
inverses on base samples scaled by a temperature. Layers that factor out part of their input
(Glow's ``split``) hand that part to the model, which concatenates every factored part with the
final output into one flat latent, so ``model(x) -> (z, logdet)`` is an exact bijection and
``model.inverse(z)`` its exact inverse.

Bits per dimension (image data): ``bpd = -log p(x) / (D ln 2)`` where ``log p`` is the density of
the data on its discrete scale (dequantized values in ``[0, 2**n_bits)`` per dimension; the
preamble's rescaling log-determinants are part of ``log p``) and ``D`` the number of dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from zoo import precision
from zoo.conditioning import is_conditioned
from zoo.errors import ContextError

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Per-sample log-density of a standard normal, summed over all non-batch dims."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)


class StandardNormal(nn.Module):
    """N(0, I) over the latent; `temperature` scales its standard deviation when sampling."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_normal_log_prob(z)

    def sample(self, shape: Sequence[int], temperature: float = 1.0, device=None, dtype=None):
        return torch.randn(*shape, device=device, dtype=dtype) * temperature


@contextmanager
def fast_inverses(model: nn.Module, enabled: bool = True):
    """Within the block, layers with a learned approximate inverse (``fast_inverse``) use it."""
    layers = [m for m in model.modules() if hasattr(m, "fast_inverse")]
    saved = [m.fast_inverse for m in layers]
    for m in layers:
        m.fast_inverse = enabled
    try:
        yield
    finally:
        for m, value in zip(layers, saved):
            m.fast_inverse = value


def factors_out(layer: nn.Module) -> bool:
    """True for layers like Glow's `split` that hand part of their input to the base."""
    return hasattr(layer, "factor") and hasattr(layer, "unfactor")


class FactorOut(nn.Module):
    """Base of layers that keep the first ``kept`` channels and factor out the rest.

    Subclasses implement ``factor(x) -> (x1, z2, logdet)`` (a bijection x -> (x1, z2) and its
    log|det|) and ``unfactor(x1, z2) -> x``; this class gives the layer contract's ``forward``
    (the log-density of z2 under N(0, I) added to logdet) and ``inverse`` (z2 sampled with
    standard deviation ``temperature``).
    """

    def __init__(self, shape: Sequence[int], kept: int):
        super().__init__()
        shape = tuple(shape)
        self.kept_channels = kept
        self.out_shape = (kept, *shape[1:])
        self.factored_shape = (shape[0] - kept, *shape[1:])
        self.temperature = 1.0

    def forward(self, x: torch.Tensor, *context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, z2, logdet = self.factor(x, *context)
        return x1, logdet + standard_normal_log_prob(z2)

    def inverse(self, x1: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
        z2 = torch.randn(x1.shape[0], *self.factored_shape, device=x1.device, dtype=x1.dtype)
        return self.unfactor(x1, z2 * self.temperature, *context)


class FlowModel(nn.Module):
    """A normalizing flow: ``layers`` applied in order map data x to latent z.

    Args:
        layers: modules following the layer contract (see ``zoo.hookspecs.zoo_layers``).
        shape: the per-sample data shape.
        base: the base distribution of the latent (a module with ``log_prob`` and ``sample``).
        n_bits: bits per value of discrete data (8 for images), or None for continuous data.
        context: for a conditional flow, the ``zoo.conditioning.ContextEncoder`` of its raw
            context; the layers and base with ``context_features > 0`` get its features.

    A conditional model takes its raw context in every direction: ``model(x, context)``,
    ``log_prob(x, context)``, ``inverse(z, context)``, ``sample(n, context=...)``. Inside
    ``with model.given(context):`` calls without one use it, so losses and gradient modes written
    for ``loss(model, x)`` train conditional models unchanged.
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        shape: Sequence[int],
        base: nn.Module | None = None,
        n_bits: int | None = None,
        context: nn.Module | None = None,
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.shape = tuple(shape)
        self.base = base if base is not None else StandardNormal()
        self.n_bits = n_bits
        self.context_encoder = context
        self._given: torch.Tensor | None = None
        self.shapes = [self.shape]  # the per-sample shape before each layer and after the last
        for layer in self.layers:
            self.shapes.append(tuple(getattr(layer, "out_shape", self.shapes[-1])))
        self.out_shape = self.shapes[-1]
        self._multiscale = any(factors_out(layer) for layer in self.layers)
        # train.checkpoint_grads / train.compile (zoo.precision.configure); off unless set
        self.checkpoint_steps: list[tuple[int, int]] | None = None
        self._compiled_forward = None
        self.dim = math.prod(self.shape)

    # -- the context ----------------------------------------------------------------------------

    @property
    def conditional(self) -> bool:
        return self.context_encoder is not None

    @contextmanager
    def given(self, context):
        """Within the block, calls that pass no context use ``context`` (a raw batch)."""
        saved, self._given = self._given, context
        try:
            yield self
        finally:
            self._given = saved

    def features(self, context, batch: int | None = None) -> torch.Tensor | None:
        """The context features ``(batch, K)`` the layers see, from a raw context (or the one of
        ``given``); None for an unconditional model. One context for a batch is repeated."""
        if context is None:
            context = self._given
        if not self.conditional:
            if context is not None:
                raise ContextError("this model is unconditional: it takes no context; call it "
                                   "without one (or train a recipe with context:)")
            return None
        if context is None:
            raise ContextError(f"this model is conditional: give a context, "
                               f"{self.context_encoder.describe()}")
        features = self.context_encoder(context)
        reference = next(self.parameters(), None)
        if reference is not None:
            features = features.to(reference.device)
        if batch is not None and features.shape[0] != batch:
            if features.shape[0] != 1:
                raise ContextError(f"{features.shape[0]} contexts for a batch of {batch}: give one "
                                   "context per sample, or one for all")
            features = features.expand(batch, -1)
        return features

    def _base_log_prob(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        with precision.full_precision(z.device.type) as autocasting:
            if autocasting:  # bf16: the base log-density in float32, as the log-dets are
                z = z.float() if z.dtype in precision.LOW_PRECISION else z
                c = c.float() if c is not None and c.dtype in precision.LOW_PRECISION else c
            return self.base.log_prob(z, c) if c is not None and is_conditioned(self.base) else self.base.log_prob(z)

    # -- density direction ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to latent: ``(z, logdet)``, ``logdet`` the exact log|det dz/dx| per sample.

        For multi-scale models ``z`` is flat, ``(batch, D)``: the factored-out parts in layer
        order followed by the final output.
        """
        return self._forward(x, self.features(context, x.shape[0]))

    def _forward(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self._compiled_forward is not None and self.training and torch.is_grad_enabled():
            return self._compiled_forward(x, c)
        return self._forward_layers(x, c)

    def _forward_layers(self, x: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # the sum in float32 under bf16 autocast (each layer's log-det cast before it is added)
        logdet = x.new_zeros(x.shape[0], dtype=precision.accumulation_dtype(x))
        if self.checkpoint_steps and self.training and torch.is_grad_enabled():
            factored: list[torch.Tensor] = []
            every = list(self.layers)
            for start, stop in self.checkpoint_steps:
                modules = every[start:stop]
                precision.refuse_uninitialized(modules)
                args = (x, logdet) if c is None else (x, logdet, c)
                x, logdet, *parts = precision.checkpoint_segment(
                    lambda *a, start=start, stop=stop: self._run_layers(start, stop, *a), modules, *args)
                factored.extend(parts)
        else:
            x, logdet, *factored = self._run_layers(0, len(self.layers), x, logdet, c)
        if self._multiscale:
            x = torch.cat([*factored, x.flatten(1)], dim=1)
        return x, logdet

    def _run_layers(self, start: int, stop: int, x: torch.Tensor, logdet: torch.Tensor,
                    c: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Layers ``start:stop`` on x: ``(x, logdet, *factored parts)`` (one flow step when
        checkpointed, all layers otherwise)."""
        factored: list[torch.Tensor] = []
        whole = start == 0 and stop == len(self.layers)  # no ModuleList slice on the plain path
        for layer in self.layers if whole else list(self.layers)[start:stop]:
            extra = (c,) if c is not None and is_conditioned(layer) else ()
            if factors_out(layer):
                x, z_part, ld = layer.factor(x, *extra)
                factored.append(z_part.flatten(1))
            else:
                x, ld = layer(x, *extra)
            logdet = logdet + (ld.float() if getattr(ld, "dtype", None) in precision.LOW_PRECISION else ld)
        return (x, logdet, *factored)

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """Per-sample log-density of x (nats); conditional models: log p(x | context)."""
        c = self.features(context, x.shape[0])
        z, logdet = self._forward(x, c)
        return self._base_log_prob(z, c) + logdet

    def bits_per_dim(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """Per-sample negative log-likelihood in bits per dimension."""
        return -self.log_prob(x, context) / (self.dim * math.log(2))

    # -- sampling direction ---------------------------------------------------------------------

    def inverse(self, z: torch.Tensor, context=None) -> torch.Tensor:
        """Map latent to data; the exact inverse of ``forward``."""
        return self._inverse(z, self.features(context, z.shape[0]))

    def _inverse(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        parts = self._split_latent(z) if self._multiscale else None
        x = parts.pop() if parts is not None else z
        for layer in reversed(self.layers):
            extra = (c,) if c is not None and is_conditioned(layer) else ()
            if factors_out(layer):
                x = layer.unfactor(x, parts.pop(), *extra)
            else:
                x = layer.inverse(x, *extra)
        return x

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, exact_inverse: bool = False,
               context=None) -> torch.Tensor:
        """``n`` samples; ``temperature`` scales the base's standard deviation (Glow).

        A conditional model needs a ``context``: one (repeated for every sample) or ``n``.
        Layers that learn an approximate inverse (self-normalizing layers, attribute
        ``fast_inverse``) sample through it unless ``exact_inverse`` is set.
        """
        reference = next(self.parameters(), None)
        device = reference.device if reference is not None else None
        dtype = reference.dtype if reference is not None else None
        c = self.features(context, n)
        latent = (n, *self.latent_shape)
        if c is not None and is_conditioned(self.base):
            z = self.base.sample(latent, temperature=temperature, device=device, dtype=dtype, context=c)
        else:
            z = self.base.sample(latent, temperature=temperature, device=device, dtype=dtype)
        with fast_inverses(self, enabled=not exact_inverse):
            return self._inverse(z, c)

    @property
    def latent_dim(self) -> int:
        return self.dim

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The per-sample shape of ``z``: flat for multi-scale models, else the last output's."""
        return (self.latent_dim,) if self._multiscale else self.out_shape

    def _split_latent(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Cut a flat latent into the factored parts (each in its layer's shape) and the rest."""
        parts, offset, n = [], 0, z.shape[0]
        for layer in self.layers:
            if factors_out(layer):
                size = math.prod(layer.factored_shape)
                parts.append(z[:, offset : offset + size].reshape(n, *layer.factored_shape))
                offset += size
        parts.append(z[:, offset:].reshape(n, *self.out_shape))
        return parts

    # -- set-up ---------------------------------------------------------------------------------

    @torch.no_grad()
    def initialize(self, x: torch.Tensor, context=None) -> None:
        """Data-dependent initialisation (e.g. actnorm): one forward pass in training mode."""
        was_training = self.training
        self.train()
        self(x, context)
        self.train(was_training)

