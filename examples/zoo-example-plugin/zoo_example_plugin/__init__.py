"""An example zoo plugin: a layer (`sinh_arcsinh`), a dataset (`ring`) and a recipe (`ring_sinh`).

Installed with pip, it is found through the entry point in its pyproject.toml; its components
then work in recipes exactly like zoo's built-in ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

import zoo
from zoo.data import FlowDataset, tensor_split

__version__ = "0.2.0"


class SinhArcsinh(nn.Module):
    """Element-wise sinh-arcsinh transform y = sinh(b * asinh(x) - a) (Jones & Pewsey 2009)."""

    examples = [{"shape": (3,), "params": {}}, {"shape": (2, 2, 2), "params": {"init_tail": 1.2}}]

    def __init__(self, shape: tuple, init_tail: float = 1.0):
        super().__init__()
        self.skew = nn.Parameter(torch.zeros(shape))
        self.log_tail = nn.Parameter(torch.full(shape, math.log(init_tail)))

    def forward(self, x):
        b = self.log_tail.exp()
        inner = b * torch.asinh(x) - self.skew
        y = torch.sinh(inner)
        # dy/dx = cosh(inner) * b / sqrt(1 + x^2)
        log_abs = torch.log(torch.cosh(inner)) + self.log_tail - 0.5 * torch.log1p(x * x)
        return y, log_abs.flatten(1).sum(1)

    def inverse(self, y):
        return torch.sinh((torch.asinh(y) + self.skew) / self.log_tail.exp())


def ring(n_train: int = 2000, n_val: int = 500, n_test: int = 500, radius: float = 2.0,
         noise: float = 0.1, seed: int = 0) -> FlowDataset:
    """Points on a noisy ring of the given radius (2-D); splits drawn with seeds seed, +1, +2."""

    def draw(n, s):
        g = torch.Generator().manual_seed(s)
        angle = torch.rand(n, generator=g) * 2 * math.pi
        r = radius + noise * torch.randn(n, generator=g)
        return torch.stack([r * angle.cos(), r * angle.sin()], dim=1)

    return FlowDataset(
        train=tensor_split(draw(n_train, seed)),
        val=tensor_split(draw(n_val, seed + 1)),
        test=tensor_split(draw(n_test, seed + 2)),
        shape=(2,),
    )


@zoo.hookimpl
def zoo_layers():
    return {"sinh_arcsinh": SinhArcsinh}


@zoo.hookimpl
def zoo_datasets():
    return {"ring": ring}


@zoo.hookimpl
def zoo_recipes():
    from zoo.recipe import recipes_in

    return recipes_in(Path(__file__).parent / "recipes")
