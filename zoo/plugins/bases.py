"""Built-in plugin: base distributions of the latent.

Each base is a module with ``log_prob(z) -> (batch,)`` and
``sample(shape, temperature, device, dtype)`` (see ``zoo.hookspecs.zoo_bases``; ``diagonal_normal``
also takes a context, ``zoo.conditioning``); its parameters, if
any, train with the layers'. ``temperature`` scales the standard deviation of every Gaussian
(Glow, https://arxiv.org/abs/1807.03039).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from zoo.errors import RecipeError
from zoo.flow import LOG_2PI, StandardNormal
from zoo.hookspecs import hookimpl


def standard_normal(shape: Sequence[int]) -> StandardNormal:
    """N(0, I) over the latent: log p(z) = -1/2 (|z|^2 + D log 2 pi); temperature scales its std."""
    return StandardNormal()


def _reference(module: nn.Module, device, dtype):
    """Sample on the module's device and dtype unless told otherwise."""
    p = next(module.parameters())
    return device if device is not None else p.device, dtype if dtype is not None else p.dtype


class DiagonalNormal(nn.Module):
    """N(mu, diag(sigma^2)) with a learned mean and log-std per latent dimension, both zero-initialised.

    log p(z) = -1/2 sum_d [((z_d - mu_d) / sigma_d)^2 + 2 log sigma_d + log 2 pi]; it starts as
    N(0, I). ``sample`` draws mu + temperature * sigma * e. In a conditional recipe mu and
    log sigma are also a linear function of the context, zero-initialised (Glow's class-conditional
    prior, ``learn_top`` with ``y_condition``: one mean and scale per class for a one-hot context).
    """

    takes_context = True

    def __init__(self, shape: Sequence[int], context_features: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        self.context_features = int(context_features)
        self.mean = nn.Parameter(torch.zeros(self.shape))
        self.log_std = nn.Parameter(torch.zeros(self.shape))
        self.from_context = None
        if self.context_features:
            self.from_context = nn.Linear(self.context_features, 2 * math.prod(self.shape))
            nn.init.zeros_(self.from_context.weight)
            nn.init.zeros_(self.from_context.bias)

    def mean_and_log_std(self, context: torch.Tensor | None = None):
        if self.from_context is None or context is None:
            return self.mean, self.log_std
        h = self.from_context(context.to(self.mean.dtype))
        shift, log_scale = h.chunk(2, dim=1)
        return (self.mean + shift.view(-1, *self.shape), self.log_std + log_scale.view(-1, *self.shape))

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        mean, log_std = self.mean_and_log_std(context)
        standard = (z - mean) * torch.exp(-log_std)
        return -0.5 * (standard.square() + 2 * log_std + LOG_2PI).flatten(1).sum(1)

    def sample(self, shape: Sequence[int], temperature: float = 1.0, device=None, dtype=None,
               context: torch.Tensor | None = None):
        device, dtype = _reference(self, device, dtype)
        mean, log_std = self.mean_and_log_std(context)
        e = torch.randn(*shape, device=device, dtype=dtype)
        return mean.to(dtype) + temperature * torch.exp(log_std).to(dtype) * e


class GaussianMixture(nn.Module):
    """Mixture of K diagonal Gaussians, sum_k pi_k N(mu_k, diag(sigma_k^2)), all learned.

    log p(z) = logsumexp_k [log pi_k + log N(z; mu_k, sigma_k)], pi = softmax(logits). Logits and
    log-stds start at 0, the means at N(0, 1) draws (distinct components; a mixture of identical
    components could never separate). ``sample`` picks k ~ pi, then mu_k + temperature sigma_k e.
    """

    def __init__(self, shape: Sequence[int], components: int = 8):
        super().__init__()
        if components < 1:
            raise RecipeError(
                f"gaussian_mixture: components must be >= 1, got {components!r}; e.g. components: 8"
            )
        self.shape = tuple(shape)
        dim = math.prod(self.shape)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, dim))
        self.log_stds = nn.Parameter(torch.zeros(components, dim))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)[:, None, :]  # (batch, 1, D) against (K, D)
        standard = (flat - self.means) * torch.exp(-self.log_stds)
        per_component = -0.5 * (standard.square() + 2 * self.log_stds + LOG_2PI).sum(-1)
        return torch.logsumexp(torch.log_softmax(self.logits, 0) + per_component, dim=1)

    def sample(self, shape: Sequence[int], temperature: float = 1.0, device=None, dtype=None):
        device, dtype = _reference(self, device, dtype)
        n = shape[0]
        k = torch.multinomial(torch.softmax(self.logits.detach(), 0), n, replacement=True)
        e = torch.randn(n, self.means.shape[1], device=device, dtype=dtype)
        flat = self.means[k].to(dtype) + temperature * torch.exp(self.log_stds[k]).to(dtype) * e
        return flat.reshape(*shape)


GaussianMixture.params_schema = {
    "type": "object",
    "properties": {"components": {"type": "integer", "minimum": 1, "default": 8}},
    "additionalProperties": False,
}


@hookimpl
def zoo_bases():
    return {
        "standard_normal": standard_normal,
        "diagonal_normal": DiagonalNormal,
        "gaussian_mixture": GaussianMixture,
    }
