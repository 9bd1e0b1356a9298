"""Tasks: what a model is for. One training loop serves them all; a task adds its loss, its
metrics and its outputs.

A recipe names its task (``task: classify``); without one it is ``density``. A task is a plugin
(hook ``zoo_tasks``) whose factory ``factory(**params)`` returns an object with:

``model_kind``
    ``"flow"`` (the recipe's layers make a FlowModel, conditional when the recipe has
    ``context:``) or ``"classifier"`` (then the task's ``build_model(recipe, shape, n_bits,
    registry, labels)`` makes the model).
``check(recipe, dataset)``
    refuse what cannot work (a ``zoo.errors.RecipeError`` or ``ContextError`` naming the recipe).
``initialize(model, x, y)``
    data-dependent initialisation on the first training batch (``y``: its labels or None).
``step_loss(model, x, y, mode, loss_fn) -> (loss, logs)``
    the scalar the training step back-propagates.
``evaluate(model, loader, device) -> Evaluation``
    exact metrics of a split: ``score`` (lower is better: it picks the best model), ``values``
    (``{name: number}``, written as ``val_<name>`` / ``test_<name>``) and a log ``line``.
``outputs(model, dataset, folder, recipe, log) -> dict``
    the run's pictures and any further test metrics (merged into metrics.json).

``zoo.plugins.tasks`` holds the built-in ones: ``density``, ``generative_classify``,
``inverse_problem`` and ``classify``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from zoo.data import first_tensor


@dataclass
class Evaluation:
    """One split's metrics: ``score`` picks the best model (lower is better)."""

    score: float
    values: dict[str, Any] = field(default_factory=dict)
    line: str = ""
    examples: int = 0


def split_item(item: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` of a loader item on ``device``: ``y`` is None for unlabelled data."""
    x = first_tensor(item).to(device)
    y = item[1].to(device) if isinstance(item, (tuple, list)) and len(item) > 1 else None
    return x, y


def context_of(model, y: torch.Tensor | None) -> torch.Tensor | None:
    """The labels as the model's context: for conditional flows only."""
    return y if getattr(model, "conditional", False) else None


@torch.no_grad()
def class_log_likelihoods(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x | y) of a class-conditional flow for every class y: (batch, classes), float64.

    Every class sees the same random draws (a dequantization's noise), so the classes compare on
    the same dequantized x, not on noise: one seed per call, reused for each class."""
    classes = model.context_encoder.num_classes
    seed = int(torch.randint(0, 2**62, ()))
    devices = [x.device] if x.device.type == "cuda" else []
    columns = []
    for k in range(classes):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            label = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            columns.append(model.log_prob(x, label).double())
    return torch.stack(columns, dim=1)


def log_class_prior(model, uniform: bool = False) -> torch.Tensor:
    """log p(y) of a class-conditional flow, float64: the training classes' frequencies recorded
    with its labels (``ContextEncoder.prior``), or uniform when asked for or unknown."""
    encoder = model.context_encoder
    prior = None if uniform else encoder.prior
    if prior is not None and len(prior) == encoder.num_classes:
        values = torch.tensor(prior, dtype=torch.float64)
    else:
        values = torch.ones(encoder.num_classes, dtype=torch.float64)
    return (values / values.sum()).log()


def class_log_joint(model, x: torch.Tensor, uniform: bool = False) -> torch.Tensor:
    """log p(x | y) + log p(y) for every class y: (batch, classes), float64."""
    return class_log_likelihoods(model, x) + log_class_prior(model, uniform).to(x.device)


@torch.no_grad()
def mean_nll(model, loader: DataLoader, device: torch.device) -> tuple[float, int]:
    """Exact mean -log p(x) (or -log p(x | y) for a conditional flow) over a split, and its size."""
    from zoo.train import refuse_energy_split

    refuse_energy_split(loader)
    model.eval()
    total, count = 0.0, 0
    for item in loader:
        x, y = split_item(item, device)
        total += (-model.log_prob(x, context_of(model, y))).double().sum().item()
        count += x.shape[0]
    model.train()
    return total / max(count, 1), count


def nll_evaluation(model, loader: DataLoader, device: torch.device, is_image: bool) -> Evaluation:
    nll, count = mean_nll(model, loader, device)
    bpd = nll / (model.dim * math.log(2))
    return Evaluation(nll, {"nll": nll, "bpd": bpd}, nll_line(nll, bpd, is_image), count)


def nll_line(nll: float, bpd: float, is_image: bool) -> str:
    """An evaluation's log line: the NLL, and bits/dim for images."""
    bits = f" ({bpd:.4f} bits/dim)" if is_image else ""
    return f"NLL {nll:.4f} nats{bits}"
