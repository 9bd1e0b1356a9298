"""Pictures of conditional flows (PNG, Pillow).

- ``class_grid``: image samples, one row per class (``zoo sample RUN --context 7`` draws one).
- ``class_density_picture``: a 2-D class-conditional density, the data coloured by class beside
  one density panel p(x | y) per class.
- ``save_conditional_samples``: the training loop's picture of a conditional flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from zoo._figure import Figure, Frame
from zoo.data import split_labels
from zoo.visualize import (DECADES, _data_raster, data_points, density_raster, image_grid,
                           save_png)

MAX_CLASSES_SHOWN = 10


@torch.no_grad()
def class_samples(model, classes: Sequence[int], per_class: int, temperature: float) -> torch.Tensor:
    """``per_class`` samples of each class, class by class: (len(classes) * per_class, ...)."""
    parts = [model.sample(per_class, temperature=temperature, context=torch.tensor([k]))
             for k in classes]
    return torch.cat(parts)


def class_grid(model, classes: Sequence[int], per_class: int, temperature: float,
               pad: int = 2) -> np.ndarray:
    """An image grid with one row of ``per_class`` samples per class."""
    samples = class_samples(model, classes, per_class, temperature)
    rows = [image_grid_row(samples[i * per_class:(i + 1) * per_class], model.n_bits, pad)
            for i in range(len(classes))]
    return np.concatenate(rows, axis=0)


def enlarged(picture: np.ndarray, min_width: int = 320) -> np.ndarray:
    """Small pictures (8x8 digits) scaled up by a whole factor, pixels kept sharp."""
    factor = max(1, -(-min_width // picture.shape[1]))  # rounded up
    return picture.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else picture


def image_grid_row(images: torch.Tensor, n_bits, pad: int) -> np.ndarray:
    """One row of tiles (``image_grid`` lays out a near-square grid; a row keeps classes apart)."""
    tiles = [image_grid(image[None], n_bits, pad=pad) for image in images]
    row = np.concatenate([t[:, :-pad] if i < len(tiles) - 1 else t for i, t in enumerate(tiles)], axis=1)
    return row[:-pad] if row.shape[0] > pad else row


def class_density_picture(model, data: np.ndarray, labels: np.ndarray, names: Sequence[str],
                          title: str | None = None, decades: float = DECADES) -> np.ndarray:
    """The data coloured by class, then p(x | y) for each class, on one window."""
    frame = Frame.around(data)
    shown = list(range(min(len(names), MAX_CLASSES_SHOWN)))
    panels = [(f"data ({len(data):,} points)", _data_raster(data, frame, labels))]
    tops = []
    for k in shown:
        with model.given(torch.tensor([k])):
            heat, top = density_raster(model, frame, decades)
        tops.append(top)
        panels.append((f"p(x | {names[k]})", heat))
    figure = Figure(len(panels), frame, colorbar=True, title=title)
    for index, (subtitle, raster) in enumerate(panels):
        figure.panel(index, raster, subtitle)
    top = max(tops)
    figure.colorbar(top - decades, top, "p(x | y), log scale")
    return figure.to_array()


def save_conditional_samples(model, folder: Path, tag: str, train: Mapping[str, Any], dataset,
                             title: str | None = None) -> Path | None:
    """The picture of a class-conditional flow: a row of samples per class (images) or the
    per-class densities (2-D); None where there is no such picture (other contexts)."""
    encoder = model.context_encoder
    if encoder is None or encoder.kind != "class":
        return None
    was_training = model.training
    model.eval()
    try:
        classes = list(range(min(encoder.num_classes, MAX_CLASSES_SHOWN)))
        if len(model.shape) == 3:
            per_class = max(1, min(10, int(train.get("n_samples", 64)) // len(classes)))
            grid = class_grid(model, classes, per_class, float(train.get("sample_temperature", 1.0)))
            return save_png(enlarged(grid), folder / "samples" / f"{tag}_by_class.png")
        if tuple(model.shape) == (2,) and dataset is not None:
            data = data_points(dataset)
            labels = split_labels(dataset.train)
            labels = labels[: len(data)].numpy() if labels is not None else None
            picture = class_density_picture(model, data, labels, encoder.names, title=title)
            return save_png(picture, folder / "samples" / f"{tag}_density_by_class.png")
        return None
    finally:
        model.train(was_training)
