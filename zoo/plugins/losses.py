"""Built-in plugin: training objectives.

``nll`` fits data (maximum likelihood). ``reverse_kl`` fits an energy target
(``zoo.data.EnergyTarget``: a density ``exp(-U)`` known up to its normaliser, no data); assembly
pairs them (``zoo.assemble.build_objective``) and refuses a loss on the wrong kind of dataset.
A loss that fits energy targets says so with ``fits = "energy"`` and is given its target with
``bind(target, where)`` before training.
"""

from __future__ import annotations

from typing import Literal

import torch

from zoo.errors import TrainingError
from zoo.hookspecs import hookimpl


class NegativeLogLikelihood:
    """Negative log-likelihood of the data in nats, per example (maximum-likelihood training)."""

    fits = "data"

    def __call__(self, model, x: torch.Tensor) -> torch.Tensor:
        return -model.log_prob(x)


def nll() -> NegativeLogLikelihood:
    """Negative log-likelihood in nats per example (maximum likelihood)."""
    return NegativeLogLikelihood()


class ReverseKL:
    """Reverse KL to an energy target, per sample: ``log q(x) + U(x)`` with ``x ~ q`` the model's.

    Its mean is the variational free energy ``F = E_q[log q + U] = KL(q || p) - log Z`` for
    ``p = exp(-U) / Z`` (Rezende & Mohamed 2015, eq. 15; BNAF eq. 20): minimising it minimises
    KL(q || p) without knowing Z, and ``F >= -log Z``. The gradient goes through the samples
    (reparameterisation): z ~ base, then

    - ``direction: inverse``: ``x = model.inverse(z)`` and ``log q(x) = model.log_prob(x)``; q is
      the model's own density, the one ``zoo sample`` and ``log_prob`` use. The layers' inverses
      must be differentiable.
    - ``direction: forward``: ``(x, logdet) = model(z)`` and ``log q(x) = log base(z) - logdet``:
      the forward map is the sampler, as the BNAF seed trains its energies (bnaf's inverse is a
      bisection, without gradients). q is then the push-forward of the base through the forward
      map, *not* ``model.log_prob``; draw from it with ``draw``.

    The batch a call is given only sets how many samples to draw, and their device and dtype.
    """

    fits = "energy"

    def __init__(self, direction: str = "inverse"):
        self.direction = direction
        self.target = None
        self.where = "$.loss"

    def bind(self, target, where: str) -> None:
        """The energy target to fit (``zoo.data.EnergyTarget``); ``where`` names the recipe's loss."""
        self.target, self.where = target, where

    def draw(self, model, n: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples of q and their log-density ``log q(x)``."""
        z = model.base.sample((n, *model.latent_shape), temperature=1.0, device=device, dtype=dtype)
        if self.direction == "forward":
            x, logdet = model(z)
            return x, model.base.log_prob(z) - logdet
        x = model.inverse(z)
        if torch.is_grad_enabled() and not x.requires_grad and any(p.requires_grad for p in model.parameters()):
            raise TrainingError(
                f"{self.where}: reverse_kl with direction: inverse needs gradients through the "
                "model's inverse, and this model's inverse has none (bnaf inverts by bisection). "
                "Set loss: {name: reverse_kl, direction: forward} to sample through the forward map."
            )
        return x, model.log_prob(x)

    def log_density(self, model, x: torch.Tensor) -> torch.Tensor | None:
        """``log q(x)`` at given points when it is one model call (direction inverse), else None."""
        return model.log_prob(x) if self.direction == "inverse" else None

    def __call__(self, model, x: torch.Tensor) -> torch.Tensor:
        if self.target is None:
            raise TrainingError(f"{self.where}: reverse_kl has no energy target to fit; the dataset must be one (u1 .. u4)")
        samples, log_q = self.draw(model, x.shape[0], device=x.device, dtype=x.dtype)
        return log_q + self.target.energy(samples)


def reverse_kl(direction: Literal["inverse", "forward"] = "inverse") -> ReverseKL:
    """Reverse KL to an energy target, E_q[log q + U] (nats per sample); needs a dataset like u1."""
    return ReverseKL(direction)


@hookimpl
def zoo_losses():
    return {"nll": nll, "reverse_kl": reverse_kl}
