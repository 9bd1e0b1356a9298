"""What a dataset plugin returns, and where data files live.

A dataset factory returns a ``FlowDataset``: three splits whose items are ``(x,)`` with ``x`` a float
tensor of the per-sample ``shape``, or ``(x, y)`` when the data set has labels: ``y`` a long scalar
for a class (``FlowDataset.classes`` names them), a 0/1 long vector for binary attributes
(``FlowDataset.attributes``), or a float vector of observed values (``FlowDataset.observed``,
e.g. an inverse problem's measurement). Density models read ``x`` only (``first_tensor``);
conditional flows and classifiers read ``y`` too (``zoo.conditioning``). Discrete data
(images) keep their integer values, ``0 .. 2**n_bits - 1``, as floats: the recipe's preamble
(``dequantize``, ``normalize``, ``logit``) maps them to the real line, so every likelihood is on
the data's own discrete scale.

An ``EnergyTarget`` is the other kind of dataset: an unnormalised density ``exp(-U(x))`` known by
its energy ``U`` and fitted by reverse KL (loss ``reverse_kl``); it has no data, and its splits
only say how many samples the loop draws from the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

DATA_DIR_ENV = "ZOO_DATA_DIR"
CACHE_DIR_ENV = "ZOO_CACHE_DIR"


@dataclass
class FlowDataset:
    """Train / validation / test splits of one dataset."""

    train: Dataset
    val: Dataset
    test: Dataset
    shape: tuple[int, ...]
    n_bits: int | None = None  # bits per value of discrete data (8 for images); None: continuous
    notice: str = ""  # one line for the user, e.g. "using the 5,000 embedded digits"
    info: dict[str, Any] = field(default_factory=dict)  # extra, e.g. the files read
    classes: tuple[str, ...] | None = None  # items are (x, class index): the classes' names
    attributes: tuple[str, ...] | None = None  # items are (x, 0/1 vector): the attributes' names
    observed: tuple[int, ...] | None = None  # items are (x, observation): its per-sample shape

    @property
    def label_kind(self) -> str | None:
        """What ``y`` of an item is: "class", "attributes", "observed", or None (no labels)."""
        if self.classes is not None:
            return "class"
        if self.attributes is not None:
            return "attributes"
        if self.observed is not None:
            return "observed"
        return None

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3


class Placeholders(TensorDataset):
    """A split of an energy target: standard-normal points that only size the loop (how many
    samples a step or an estimate draws from the model) and feed data-dependent initialisation."""


@dataclass
class EnergyTarget(FlowDataset):
    """An unnormalised target density ``p(x) = exp(-U(x)) / Z``, known by its energy ``U``.

    The loss ``reverse_kl`` fits a model to it by minimising the variational free energy
    ``F = E_q[log q(x) + U(x)] = KL(q || p) - log Z``; ``log_normalizer`` is ``log Z`` when it is
    known (finite and computed), so ``KL = F + log Z`` can be reported. The splits are
    ``Placeholders``: ``len(train)`` samples per epoch (``len(train) / batch_size`` steps), and
    ``len(val)``, ``len(test)`` samples for the estimates. ``bound``: the half-width of the
    square ``[-bound, bound]^2`` where a 2-D target's plot shows it.
    """

    potential: Callable[[torch.Tensor], torch.Tensor] | None = None
    log_normalizer: float | None = None
    bound: float = 4.0

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``U(x)``, one value per sample: ``(batch, *shape) -> (batch,)``."""
        return self.potential(x)


def placeholder_splits(sizes: tuple[int, int, int], shape: tuple[int, ...], seed: int) -> list[Placeholders]:
    """Train, val and test ``Placeholders`` of the given sizes (seeded standard-normal points)."""
    generator = torch.Generator().manual_seed(seed)
    return [Placeholders(torch.randn(n, *shape, generator=generator)) for n in sizes]


def tensor_split(x: torch.Tensor, y: torch.Tensor | None = None) -> Dataset:
    """A split made of one tensor of samples (first dimension = samples), and their labels."""
    return TensorDataset(x.float()) if y is None else TensorDataset(x.float(), y)


class Labelled(Dataset):
    """A split whose items ``(x,)`` get their labels: ``(x, labels[i])``."""

    def __init__(self, split: Dataset, labels: torch.Tensor):
        if len(labels) != len(split):
            raise ValueError(f"{len(labels)} labels for a split of {len(split)} items")
        self.split, self.labels = split, labels

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        return first_tensor(self.split[index]), self.labels[index]


def split_labels(split: Dataset) -> torch.Tensor | None:
    """Every label of a split, in item order (through ``Subset``s), or None when it has none."""
    indices = None
    while isinstance(split, Subset):
        indices = torch.as_tensor(split.indices) if indices is None else torch.as_tensor(split.indices)[indices]
        split = split.dataset
    if isinstance(split, Labelled):
        labels = split.labels
    elif isinstance(split, TensorDataset) and len(split.tensors) > 1:
        labels = split.tensors[1]
    elif len(split) and isinstance(split[0], (tuple, list)) and len(split[0]) > 1:
        labels = torch.stack([torch.as_tensor(split[i][1]) for i in range(len(split))])
    else:
        return None
    return labels if indices is None else labels[indices]


def data_dir(param: str | os.PathLike | None = None) -> Path:
    """Where dataset files are read from: the recipe's ``data_dir``, else ``$ZOO_DATA_DIR``
    (``zoo run --data-dir`` sets it), else ``./data``."""
    if param:
        return Path(param).expanduser()
    return Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser()


def first_tensor(item: Any) -> torch.Tensor:
    """The sample of a dataset item (datasets may yield ``(x,)`` or ``(x, label)``)."""
    return item[0] if isinstance(item, (tuple, list)) else item


def cache_dir() -> Path:
    """Where zoo keeps files it can rebuild: ``$ZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/zoo``, else
    ``~/.cache/zoo`` (the XDG rule that huggingface_hub's cache, which zoo's weights use, follows)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).expanduser() / "zoo"
