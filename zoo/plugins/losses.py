"""Built-in plugin: training objectives."""

from __future__ import annotations

import torch

from zoo.hookspecs import hookimpl


class NegativeLogLikelihood:
    """Negative log-likelihood of the data in nats, per example (maximum-likelihood training)."""

    def __call__(self, model, x: torch.Tensor) -> torch.Tensor:
        return -model.log_prob(x)


def nll() -> NegativeLogLikelihood:
    """Negative log-likelihood in nats per example (maximum likelihood)."""
    return NegativeLogLikelihood()


@hookimpl
def zoo_losses():
    return {"nll": nll}
