"""Pictures of a model: sample grids for image data, density plots for 2-D data (PNG, Pillow)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from zoo._atomic import write_bytes
from zoo.flow import FlowModel


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG atomically."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return write_bytes(path, buffer.getvalue())


def image_grid(images: torch.Tensor, n_bits: int | None) -> np.ndarray:
    """Tile (N, C, H, W) images, on the data's discrete scale, into one uint8 picture."""
    levels = 2 ** n_bits if n_bits else None
    x = images.detach().float().cpu()
    x = x / (levels - 1) if levels else (x - x.min()) / (x.max() - x.min() + 1e-12)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros((c, rows * (h + 2) + 2, cols * (w + 2) + 2), dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[:, 2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = x[i]
    array = grid.permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array[:, :, :3]


def density_picture(model: FlowModel, bound: float = 4.0, pixels: int = 200) -> np.ndarray:
    """The model's density on a [-bound, bound]^2 grid, as an RGB heat map (dark = low)."""
    axis = torch.linspace(-bound, bound, pixels)
    ys, xs = torch.meshgrid(axis.flip(0), axis, indexing="ij")  # row 0 at the top: y = +bound
    points = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    reference = next(model.parameters(), None)
    if reference is not None:
        points = points.to(reference.device, reference.dtype)
    with torch.no_grad():
        density = torch.cat([model.log_prob(chunk).exp() for chunk in points.split(10_000)])
    density = density.reshape(pixels, pixels).cpu().float()
    density = torch.nan_to_num(density, nan=0.0, posinf=0.0)
    scaled = (density / (density.max() + 1e-12)).numpy()
    # A small dark-blue -> yellow ramp: readable without matplotlib.
    low, mid, high = np.array([20, 20, 60]), np.array([40, 140, 140]), np.array([250, 230, 80])
    t = scaled[..., None]
    rgb = np.where(t < 0.5, low + (mid - low) * (t * 2), mid + (high - mid) * (t * 2 - 1))
    return rgb.clip(0, 255).astype(np.uint8)


def save_samples(
    model: FlowModel, folder: Path, tag: str, train: Mapping[str, Any], dataset=None
) -> Path | None:
    """Sample grid (image data) or density plot (2-D data) into ``folder/samples/<tag>.png``."""
    shape = tuple(model.shape)
    was_training = model.training
    model.eval()
    try:
        if len(shape) == 3:
            samples = model.sample(int(train.get("n_samples", 64)), float(train.get("sample_temperature", 1.0)))
            return save_png(image_grid(samples, model.n_bits), folder / "samples" / f"{tag}.png")
        if shape == (2,):
            return save_png(density_picture(model), folder / "samples" / f"{tag}_density.png")
        return None
    finally:
        model.train(was_training)
