"""The pieces of the ``classify`` task: classifiers built from network layers, the ELBO loss,
metrics, the predictive distribution, and torch-mnf's rotated-9 figure.

- ``Classifier(modules)`` runs network layers (``zoo.hookspecs.zoo_network_layers``) in order and
  returns logits; ``kl_divergence()`` sums the KL terms of its Bayesian layers (0 without any).
  ``build_classifier(layer_list, shape, registry)`` builds one from a recipe-style layer list;
  ``LENET`` and ``MNF_LENET`` are torch-mnf's two models (258,582 and 696,950 parameters on
  ``(1, 28, 28)`` inputs). Both expect pixels in [0, 1] (torch-mnf's ``ToTensor``): zoo's image
  data keep 0..255, so put ``{name: scale}`` (x / 255) first or scale the batch.
- ``elbo_loss(logits, y, kl, n_train)``: mean NLL + KL / number of training examples, the negative
  ELBO per example (Louizos & Welling 2017). torch-mnf's notebook divides by ``len(train_loader)``
  (the number of batches, a 32x heavier KL) and its test multiplies by 1e-3.
- ``predictive(model, x, samples)``: per-class softmax of ``samples`` forward passes per input,
  run in parallel as torch-mnf does (the input repeated along the batch); mean and spread.
- ``classification_metrics``: accuracy, NLL (nats per example, of the predictive mean) and
  expected calibration error over ``ECE_BINS`` equal-width confidence bins (Guo et al. 2017).
- ``rotation_predictions`` and ``save_rotation_figure``: a digit rotated 0..180 degrees in
  20-degree steps, the per-class softmax of 500 samples at each angle, models side by side.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo._atomic import write_bytes
from zoo.errors import RecipeError, ShapeError

# torch-mnf's LeNet (torch_mnf/models/lenet.py): 258,582 parameters on (1, 28, 28).
LENET: list[dict[str, Any]] = [
    {"name": "conv2d", "out_channels": 32, "kernel_size": 5},
    {"name": "relu"},
    {"name": "max_pool2d", "kernel_size": 2},
    {"name": "conv2d", "out_channels": 48, "kernel_size": 5},
    {"name": "relu"},
    {"name": "max_pool2d", "kernel_size": 2},
    {"name": "flatten"},
    {"name": "linear", "out_features": 256},
    {"name": "relu"},
    {"name": "linear", "out_features": 84},
    {"name": "relu"},
    {"name": "linear", "out_features": 10},
]

# torch-mnf's MNFLeNet (torch_mnf/models/mnf_lenet.py): 696,950 parameters on (1, 28, 28).
MNF_LENET: list[dict[str, Any]] = [
    {"name": "mnf_conv2d", "out_channels": 20, "kernel_size": 5},
    {"name": "relu"},
    {"name": "max_pool2d", "kernel_size": 2},
    {"name": "mnf_conv2d", "out_channels": 50, "kernel_size": 5},
    {"name": "relu"},
    {"name": "max_pool2d", "kernel_size": 2},
    {"name": "flatten"},
    {"name": "mnf_linear", "out_features": 50},
    {"name": "relu"},
    {"name": "mnf_linear", "out_features": 10},
]

ECE_BINS = 15  # Guo et al. 2017 (https://arxiv.org/abs/1706.04599)
ROTATION_ANGLES = tuple(range(0, 181, 20))  # 0, 20, ..., 180 degrees
ROTATION_SAMPLES = 500  # torch-mnf's parallel forward passes per image
PREDICT_CHUNK = 8192  # rows per forward pass in `predictive`, to bound memory


class Classifier(nn.Module):
    """Network layers run in order, ``x -> logits``; the KL terms of its Bayesian layers summed."""

    def __init__(self, modules: Iterable[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(modules)
        last = self.layers[-1] if len(self.layers) else None
        self.out_shape = tuple(getattr(last, "out_shape", ())) if last is not None else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def bayesian(self) -> bool:
        """True when a layer draws noise (has a KL term): predictions then vary from call to call."""
        return any(hasattr(layer, "kl_divergence") for layer in self.layers)

    def kl_divergence(self) -> torch.Tensor:
        terms = [layer.kl_divergence() for layer in self.layers if hasattr(layer, "kl_divergence")]
        if not terms:
            p = next(self.parameters(), None)
            return torch.zeros((), device=p.device if p is not None else None)
        return torch.stack(terms).sum()


def build_classifier(layer_list: Sequence[Mapping[str, Any]], shape: Sequence[int], registry=None) -> Classifier:
    """A Classifier from ``[{"name": ..., **params}, ...]`` of network layers, shape carried along.

    Parameters are checked against each layer's schema; a layer that cannot take its input
    shape is a ShapeError naming the layer's place in the list and the shape it got.
    """
    from jsonschema import Draft202012Validator

    from zoo.registry import get_registry

    registry = registry or get_registry()
    shape = tuple(shape)
    modules = []
    for i, entry in enumerate(layer_list):
        params = dict(entry)
        name = params.pop("name", None)
        where = f"layer {i}" + (f" ({name})" if name else "")
        if not isinstance(name, str):
            raise RecipeError(f"{where}: every network layer needs a 'name'")
        component = registry.get("network_layers", name)
        component.check_usable(where)
        problems = sorted(Draft202012Validator(component.params_schema).iter_errors(params), key=str)
        if problems:
            raise RecipeError(f"{where}: " + "; ".join(p.message for p in problems))
        try:
            module = component.factory(shape, **params)
        except ShapeError as exc:
            raise ShapeError(f"{where}, input shape {shape}: {exc}") from exc
        modules.append(module)
        shape = tuple(module.out_shape)
    return Classifier(modules)


def elbo_loss(logits: torch.Tensor, y: torch.Tensor, kl: torch.Tensor | float, n_train: int) -> torch.Tensor:
    """Negative ELBO per example: mean NLL of the batch + KL / ``n_train`` (training examples)."""
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    return F.cross_entropy(logits, y) + kl / n_train


@dataclass
class Predictive:
    """Softmax samples ``probs`` of shape ``(samples, batch, classes)``, their mean and spread."""

    probs: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.probs.mean(0)

    @property
    def std(self) -> torch.Tensor:
        return self.probs.std(0, unbiased=False)

    @property
    def entropy(self) -> torch.Tensor:
        """Entropy of the predictive mean, nats, one per input."""
        return predictive_entropy(self.mean)


@torch.no_grad()
def predictive(model: nn.Module, x: torch.Tensor, samples: int = ROTATION_SAMPLES) -> Predictive:
    """``samples`` forward passes of every input of ``x``, in parallel: each input is repeated
    along the batch (torch-mnf's way), so each copy gets its own noise. Eval mode, restored."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    was_training = model.training
    model.eval()
    try:
        batch = x.shape[0]
        rows = x.unsqueeze(0).expand(samples, *x.shape).reshape(samples * batch, *x.shape[1:])
        probs = torch.cat([F.softmax(model(part), dim=-1) for part in rows.split(PREDICT_CHUNK)])
    finally:
        model.train(was_training)
    return Predictive(probs.reshape(samples, batch, -1))


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """``-sum p log p`` over the last dimension (0 log 0 = 0)."""
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(-1)


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return (probs.argmax(-1) == y).double().mean().item()


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean ``-log p(y | x)`` in nats, p clamped at the smallest normal float (no infinities)."""
    picked = probs.gather(-1, y.view(-1, 1)).squeeze(-1)
    return -torch.log(picked.clamp_min(torch.finfo(probs.dtype).tiny)).double().mean().item()


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - confidence_b| over ``n_bins`` equal-width bins of the
    top-class probability; bin b holds confidences in ((b-1)/n_bins, b/n_bins], the first also 0."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence, predicted = probs.double().max(-1)
    correct = (predicted == y).double()
    bins = (torch.ceil(confidence * n_bins).long() - 1).clamp(0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            gap = correct[members].mean() - confidence[members].mean()
            total += members.double().mean().item() * abs(gap.item())
    return total


def classification_metrics(probs: torch.Tensor, y: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, float]:
    """Accuracy, NLL (nats) and ECE (``n_bins`` bins) of predictive probabilities ``(n, classes)``."""
    return {"accuracy": accuracy(probs, y), "nll": nll(probs, y),
            "ece": expected_calibration_error(probs, y, n_bins)}


# --- the rotated digit ----------------------------------------------------------------------------


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Images ``(batch, C, H, W)`` rotated counter-clockwise about their centre (bilinear, zeros
    outside), as ``scipy.ndimage.rotate(..., reshape=False)`` but without its spline overshoot."""
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid maps output coordinates to input coordinates: the inverse (clockwise) rotation.
    matrix = images.new_tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])
    grid = F.affine_grid(matrix.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotation_predictions(model: nn.Module, image: torch.Tensor, angles: Sequence[float] = ROTATION_ANGLES,
                         samples: int = ROTATION_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The image ``(C, H, W)`` at each angle ``(angles, C, H, W)``, and the softmax samples there,
    ``(angles, samples, classes)``."""
    rotated = torch.cat([rotate(image.unsqueeze(0), a) for a in angles])
    probs = predictive(model, rotated, samples).probs  # (samples, angles, classes)
    return rotated, probs.transpose(0, 1)


def save_rotation_figure(path: str | Path, rotated: torch.Tensor, predictions: Mapping[str, torch.Tensor],
                         angles: Sequence[float] = ROTATION_ANGLES) -> Path:
    """torch-mnf's figure: for each model (side by side) and each angle, the per-class softmax of
    its samples (violins, and the mean as a bar) with the rotated digit inset. PNG, atomic."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(predictions)
    rows = math.ceil(len(angles) / 2)
    figure = Figure(figsize=(4.6 * len(names), 1.9 * rows), dpi=110, layout="constrained")
    columns = figure.subfigures(1, len(names), squeeze=False)[0]
    for column, name in zip(columns, names):
        probs = predictions[name].detach().double().cpu().numpy()
        column.suptitle(name, fontsize=12, fontweight="bold")
        axes = column.subplots(rows, 2, sharex=True, sharey=True, squeeze=False).ravel()
        for ax, angle, image, p in zip(axes, angles, rotated, probs):
            _softmax_panel(ax, p, angle, image)
        for ax in axes[len(angles):]:
            ax.axis("off")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return write_bytes(path, buffer.getvalue())


def _softmax_panel(ax, probs, angle: float, image: torch.Tensor) -> None:
    """One angle: mean softmax per class as bars, the samples' spread as violins where it exists."""
    classes = list(range(probs.shape[1]))
    mean = probs.mean(0)
    ax.bar(classes, mean, color="#9ecae1", width=0.8)
    spread = [c for c in classes if probs[:, c].std() > 1e-4]
    if spread:
        parts = ax.violinplot([probs[:, c] for c in spread], positions=spread, widths=0.8,
                              showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor("#08519c")
            body.set_alpha(0.6)
    ax.set_ylim(0, 1.1)
    ax.set_xticks(classes)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{angle:g} deg: predicts {int(mean.argmax())} ({mean.max():.2f})", fontsize=8)
    inset = ax.inset_axes((0.0, 0.5, 0.3, 0.5))
    inset.imshow(image.squeeze(0).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    inset.axis("off")
