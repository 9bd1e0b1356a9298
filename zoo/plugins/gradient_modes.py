"""Built-in plugin: gradient modes, i.e. which loss a training step back-propagates.

The contract (``zoo.hookspecs.zoo_gradient_modes``): ``factory(**params)`` returns an object with

- ``prepare(model)``: called once before training; switches the model's self-normalizing layers
  into self-normalized training (``layer.self_normalized = True``) or exact (``False``);
- ``loss(model, x, loss_fn) -> (loss, logs)``: ``loss_fn(model, x)`` is the per-example NLL
  ``(batch,)`` in the current mode; ``loss`` is the scalar whose gradient the step follows and
  ``logs`` a ``{name: float}`` for the progress display.

Evaluation never goes through a gradient mode: layers in ``eval()`` mode are exact.

A self-normalizing layer is found by duck typing: any module with a method
``reconstruction_loss(symmetric: bool) -> Tensor (batch,)`` (computed on the input of its last
training forward) and a ``self_normalized`` attribute (Self Normalizing Flows, Keller et al.
2021, https://arxiv.org/abs/2011.07248; ``zoo.plugins.layers_selfnorm``).

Modes
-----
``exact``
    ``mean(nll)``, every log-determinant with its true gradient.
``self_normalized`` (``recon_loss_weight`` λ = 1, ``symmetric`` = False)
    The SNF method: the layers report log-determinant 0 and use the self-normalized gradients for
    W and R, and ``mean(nll) + λ Σ_k mean_b ||x_b - R_k W_k x_b||^2`` trains R.
``reconstruction_augmented`` (``base`` exact | self_normalized, λ, ``symmetric``)
    The base mode's loss plus the same λ-weighted layer-wise reconstruction loss (the symmetric
    variant averages it with ``||z - W R z||^2``, z detached).

One backward pass serves both terms (the seed called ``backward`` once per layer for the
reconstruction loss after the NLL's): the reconstruction terms depend only on detached inputs,
so summing them into one loss gives the same gradients.
"""

from __future__ import annotations

import warnings
from typing import Callable, Literal

import torch
from torch import nn

from zoo.errors import RecipeError
from zoo.hookspecs import hookimpl

LossFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
UNDERLYING_MODES = ("exact", "self_normalized")  # what `reconstruction_augmented` adds to


def selfnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's self-normalizing layers (duck typing: a ``reconstruction_loss`` method)."""
    return [m for m in model.modules() if callable(getattr(m, "reconstruction_loss", None))]


def set_self_normalized(model: nn.Module, enabled: bool, fuse_reconstruction: bool = False) -> int:
    """Switch every self-normalizing layer's training gradient; returns how many were switched.

    ``fuse_reconstruction``: layers that can (attribute ``fuse_reconstruction``) compute their
    non-symmetric reconstruction loss within the self-normalized forward, sharing its products.
    """
    layers = [m for m in selfnorm_layers(model) if hasattr(m, "self_normalized")]
    for layer in layers:
        layer.self_normalized = enabled
        if hasattr(layer, "fuse_reconstruction"):
            layer.fuse_reconstruction = enabled and fuse_reconstruction
    return len(layers)


def reconstruction_loss(model: nn.Module, symmetric: bool = False) -> torch.Tensor:
    """``Σ_k mean_b`` of each self-normalizing layer's reconstruction loss (0 without any)."""
    total = None
    for layer in selfnorm_layers(model):
        term = layer.reconstruction_loss(symmetric=symmetric).mean()
        total = term if total is None else total + term
    if total is None:
        reference = next(model.parameters(), None)
        return torch.zeros((), device=getattr(reference, "device", None))
    return total


class ExactGradient:
    """The log-likelihood with every log-determinant and its true gradient."""

    self_normalized = False

    def prepare(self, model: nn.Module) -> None:
        set_self_normalized(model, False)

    def loss(self, model: nn.Module, x: torch.Tensor, loss_fn: LossFn) -> tuple[torch.Tensor, dict]:
        set_self_normalized(model, self.self_normalized)  # idempotent; guards a missed prepare()
        nll = loss_fn(model, x).mean()
        return nll, {"nll": nll.item()}


class ReconstructionAugmented(ExactGradient):
    """The base mode's loss plus λ × the layer-wise reconstruction loss of the SNF layers."""

    def __init__(self, base: str, recon_loss_weight: float, symmetric: bool):
        if base not in UNDERLYING_MODES:
            raise RecipeError(
                f"gradient_mode.base: {base!r} is not a base mode; use one of {', '.join(UNDERLYING_MODES)}."
            )
        if not recon_loss_weight >= 0:
            raise RecipeError(
                f"gradient_mode.recon_loss_weight must be >= 0 (the weight λ of the reconstruction "
                f"loss); got {recon_loss_weight}."
            )
        self.base = base
        self.self_normalized = base == "self_normalized"
        self.recon_loss_weight = float(recon_loss_weight)
        self.symmetric = bool(symmetric)
        self.fuse = self.recon_loss_weight > 0 and not self.symmetric

    def prepare(self, model: nn.Module) -> None:
        if set_self_normalized(model, self.self_normalized, self.fuse) == 0:
            warnings.warn(
                "gradient mode with a reconstruction loss on a model without self-normalizing "
                "layers (selfnorm_fc, selfnorm_conv): it trains exactly like `exact`.",
                stacklevel=2,
            )

    def loss(self, model: nn.Module, x: torch.Tensor, loss_fn: LossFn) -> tuple[torch.Tensor, dict]:
        set_self_normalized(model, self.self_normalized, self.fuse)
        nll = loss_fn(model, x).mean()
        # in self-normalized training the SN layers' log-determinants are left out of this NLL
        logs = {"nll_sn" if self.self_normalized else "nll": nll.item()}
        if self.recon_loss_weight == 0:
            return nll, logs
        recon = reconstruction_loss(model, self.symmetric)
        logs["recon"] = recon.item()
        return nll + self.recon_loss_weight * recon, logs


def exact() -> ExactGradient:
    """Exact maximum likelihood: every log-determinant with its true gradient."""
    return ExactGradient()


def self_normalized(recon_loss_weight: float = 1.0, symmetric: bool = False) -> ReconstructionAugmented:
    """Self Normalizing Flows: R^T replaces W^{-T}, λ x reconstruction loss trains R (arXiv 2011.07248)."""
    return ReconstructionAugmented("self_normalized", recon_loss_weight, symmetric)


def reconstruction_augmented(
    base: Literal["exact", "self_normalized"] = "exact",
    recon_loss_weight: float = 1.0,
    symmetric: bool = False,
) -> ReconstructionAugmented:
    """The base mode's gradient plus λ x the layer-wise reconstruction loss ||x - R W x||^2."""
    return ReconstructionAugmented(base, recon_loss_weight, symmetric)


@hookimpl
def zoo_gradient_modes():
    return {
        "exact": exact,
        "self_normalized": self_normalized,
        "reconstruction_augmented": reconstruction_augmented,
    }
