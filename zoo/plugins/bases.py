"""Built-in plugin: base distributions of the latent."""

from __future__ import annotations

from typing import Sequence

from zoo.flow import StandardNormal
from zoo.hookspecs import hookimpl


def standard_normal(shape: Sequence[int]) -> StandardNormal:
    """N(0, I) over the latent: log p(z) = -1/2 (|z|^2 + D log 2 pi); temperature scales its std."""
    return StandardNormal()


@hookimpl
def zoo_bases():
    return {"standard_normal": standard_normal}
