"""MADE: a masked MLP whose outputs for feature i depend only on the features before i.

Germain, Gregor, Murray, Larochelle, "MADE: Masked Autoencoder for Distribution Estimation", 2015,
https://arxiv.org/abs/1502.03509. The conditioner of every autoregressive layer in
``layers_autoregressive`` (MAF, IAF, the autoregressive neural spline flow).

Each input feature gets a degree, its position in the ordering (0 .. D-1). Each hidden unit gets a
degree in 0 .. D-2 and may see inputs of degree <= its own; an output of feature i (degree m_i)
may see hidden units of degree < m_i. So output i is a function of the inputs that come before i
in the ordering, and the Jacobian of the flow is triangular in that ordering. Hidden degrees
cycle through 0 .. D-2 (every degree is represented as long as the width is >= D - 1), so the
only randomness is the ordering itself.

Masks and degrees are buffers: they are saved with the weights, so a loaded model has the
ordering it was trained with. Weights are dense (a masked entry is still a parameter, as in the
seeds, whose parameter counts include them).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import RecipeError

Ordering = Literal["natural", "reversed", "random"]
ORDERINGS = ("natural", "reversed", "random")


def input_degrees(features: int, ordering: str, seed: int | None) -> torch.Tensor:
    """The degree (position in the autoregressive order) of each input feature."""
    if ordering == "natural":
        return torch.arange(features)
    if ordering == "reversed":
        return torch.arange(features).flip(0)
    if ordering == "random":
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randperm(features, generator=generator)
    raise RecipeError(f"MADE ordering must be one of {', '.join(ORDERINGS)}; got {ordering!r}")


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype).clone())  # own storage: safetensors refuses shared tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked MLP: (batch, D) -> (batch, outputs_per_feature, D), autoregressive in ``degrees``.

    ``depth`` hidden layers of width ``hidden`` (ReLU), then ``residual_blocks`` blocks
    h + W2 relu(W1 relu(h)) with hidden-to-hidden masks (NSF's conditioner), then the output
    layer (zero-initialised with ``identity_init``: deep stacks on high-dimensional data, e.g.
    MNIST, overflow from the default init). Output ``[:, c, i]`` is parameter c of feature i.
    With ``context_features`` a context vector enters the first hidden layer through an unmasked
    linear map: every output may depend on it, so the autoregressive order in x is unchanged.
    """

    def __init__(
        self,
        features: int,
        outputs_per_feature: int,
        hidden: int = 24,
        depth: int = 3,
        ordering: str = "natural",
        seed: int | None = None,
        residual_blocks: int = 0,
        identity_init: bool = False,
        context_features: int = 0,
    ):
        super().__init__()
        if hidden < 1 or depth < 1 or residual_blocks < 0:
            raise RecipeError(
                f"MADE needs hidden >= 1, depth >= 1 and residual_blocks >= 0; got hidden={hidden}, "
                f"depth={depth}, residual_blocks={residual_blocks}"
            )
        self.features = features
        self.outputs_per_feature = outputs_per_feature
        degrees = input_degrees(features, ordering, seed)
        self.register_buffer("degrees", degrees)
        hidden_degrees = torch.arange(hidden) % max(features - 1, 1)

        def hidden_mask(previous: torch.Tensor) -> torch.Tensor:  # (out, in): see degree <= own
            return (hidden_degrees[:, None] >= previous[None, :]).float()

        layers: list[nn.Module] = [MaskedLinear(features, hidden, hidden_mask(degrees))]
        for _ in range(depth - 1):
            layers += [nn.ReLU(), MaskedLinear(hidden, hidden, hidden_mask(hidden_degrees))]
        self.hidden_layers = nn.Sequential(*layers)
        self.context_in = nn.Linear(context_features, hidden, bias=False) if context_features else None
        square = hidden_mask(hidden_degrees)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), MaskedLinear(hidden, hidden, square), nn.ReLU(),
                          MaskedLinear(hidden, hidden, square))
            for _ in range(residual_blocks)
        )
        output_degrees = degrees.repeat(outputs_per_feature)  # unit c * D + i is feature i
        output_mask = (output_degrees[:, None] > hidden_degrees[None, :]).float()
        self.output = MaskedLinear(hidden, outputs_per_feature * features, output_mask)
        if identity_init:  # all outputs 0: the flow layer starts as (close to) the identity
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.context_in is not None and context is not None:
            h = self.hidden_layers[0](x) + self.context_in(context.to(x.dtype))
            h = self.hidden_layers[1:](h)
        else:
            h = self.hidden_layers(x)
        for block in self.blocks:
            h = h + block(h)
        out = self.output(F.relu(h))
        return out.reshape(x.shape[0], self.outputs_per_feature, self.features)
