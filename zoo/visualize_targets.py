"""The picture of an energy-target run: the target exp(-U) beside the learned q (PNG, Pillow only).

Two panels over the target's square ``[-bound, bound]^2`` (x1 to the right, x2 up), each scaled
to its own maximum (dark = low), with a title above each:

- the target density ``exp(-U(x))`` on a grid of pixel centres;
- the learned q: on the same grid where the loss gives ``log q`` at any point (``reverse_kl``
  with ``direction: inverse``, where q is the model's density), else (``direction: forward``,
  where the forward map is the sampler and q is known at its own samples) the mean of ``q(x)``
  over the samples that land in each pixel; pixels no sample reaches stay dark.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from zoo._atomic import write_bytes

PIXELS = 200  # per panel side
SAMPLES_PER_PIXEL = 1  # samples of q per pixel (on average) where q is known at its samples only
CHUNK = 4096  # points per model call (bnaf holds a (chunk, D, hidden/D, hidden/D) tensor)
TITLE_HEIGHT, MARGIN = 24, 8
# dark blue -> teal -> yellow, readable without a colour-map library
RAMP = np.array([[20, 20, 60], [40, 140, 140], [250, 230, 80]], dtype=np.float64)


def grid_points(bound: float, pixels: int) -> torch.Tensor:
    """Pixel centres of the square, ``(pixels * pixels, 2)`` row by row, row 0 at x2 = +bound."""
    step = 2 * bound / pixels
    centres = -bound + step * (torch.arange(pixels, dtype=torch.float64) + 0.5)
    x2, x1 = torch.meshgrid(centres.flip(0), centres, indexing="ij")
    return torch.stack([x1.reshape(-1), x2.reshape(-1)], dim=1)


def heat_map(values: np.ndarray) -> np.ndarray:
    """Non-negative ``(H, W)`` values as an RGB uint8 picture, scaled to their maximum."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    values = values.clip(min=0.0)
    t = (values / (values.max() + 1e-300))[..., None]
    low = RAMP[0] + (RAMP[1] - RAMP[0]) * (2 * t)
    high = RAMP[1] + (RAMP[2] - RAMP[1]) * (2 * t - 1)
    return np.where(t < 0.5, low, high).round().clip(0, 255).astype(np.uint8)


def _in_chunks(function, points: torch.Tensor) -> torch.Tensor:
    return torch.cat([function(chunk) for chunk in points.split(CHUNK)])


def target_density(target, bound: float, pixels: int) -> np.ndarray:
    """``exp(-U)`` at the pixel centres, ``(pixels, pixels)``, up to a constant (``-U`` shifted to
    a maximum of 0 before exponentiating)."""
    points = grid_points(bound, pixels)
    with torch.no_grad():
        log_p = -_in_chunks(target.energy, points)
    log_p = torch.nan_to_num(log_p, nan=-torch.inf)
    return torch.exp(log_p - log_p.max()).reshape(pixels, pixels).numpy()


def _reference(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def learned_density(model, loss_fn, bound: float, pixels: int) -> np.ndarray:
    """q at the pixel centres, or the mean of q over the samples in each pixel (see the module
    docstring), ``(pixels, pixels)``, up to a constant."""
    device, dtype = _reference(model)
    with torch.no_grad():
        points = grid_points(bound, pixels).to(device, dtype)
        at_points = getattr(loss_fn, "log_density", None)
        if at_points is not None and at_points(model, points[:1]) is not None:
            log_q = _in_chunks(lambda chunk: at_points(model, chunk), points).double().cpu()
            log_q = torch.nan_to_num(log_q, nan=-torch.inf)
            return torch.exp(log_q - log_q.max()).reshape(pixels, pixels).numpy()
        n = pixels * pixels * SAMPLES_PER_PIXEL
        draws = [loss_fn.draw(model, min(CHUNK, n - start), device=device, dtype=dtype)
                 for start in range(0, n, CHUNK)]
    x = torch.cat([d[0] for d in draws]).double().cpu()
    log_q = torch.cat([d[1] for d in draws]).double().cpu()
    return splat(x, log_q, bound, pixels)


def splat(x: torch.Tensor, log_q: torch.Tensor, bound: float, pixels: int) -> np.ndarray:
    """The mean of ``q = exp(log_q)`` (up to a constant) of the points in each pixel; 0 where none."""
    finite = torch.isfinite(log_q) & torch.isfinite(x).all(1)
    x, log_q = x[finite], log_q[finite]
    cols = torch.floor((x[:, 0] + bound) / (2 * bound) * pixels).long()
    rows = torch.floor((bound - x[:, 1]) / (2 * bound) * pixels).long()
    inside = (cols >= 0) & (cols < pixels) & (rows >= 0) & (rows < pixels)
    index, log_q = rows[inside] * pixels + cols[inside], log_q[inside]
    if index.numel() == 0:
        return np.zeros((pixels, pixels))
    q = torch.exp(log_q - log_q.max())
    sums = torch.zeros(pixels * pixels, dtype=torch.float64).index_add_(0, index, q)
    counts = torch.zeros(pixels * pixels, dtype=torch.float64).index_add_(0, index, torch.ones_like(q))
    return (sums / counts.clamp(min=1)).reshape(pixels, pixels).numpy()


def _font():
    try:
        return ImageFont.load_default(size=14)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def side_by_side(panels: list[tuple[np.ndarray, str]]) -> Image.Image:
    """RGB panels in a row on white, each with its title above it."""
    height, width = panels[0][0].shape[:2]
    canvas = Image.new("RGB", (MARGIN + len(panels) * (width + MARGIN), TITLE_HEIGHT + height + MARGIN),
                       "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for index, (rgb, title) in enumerate(panels):
        left = MARGIN + index * (width + MARGIN)
        canvas.paste(Image.fromarray(rgb), (left, TITLE_HEIGHT))
        draw.text((left, 4), title, fill="black", font=font)
    return canvas


def save_target_plot(model, loss_fn, target, path: str | Path, name: str = "target",
                     pixels: int = PIXELS) -> Path:
    """Write the two-panel picture (target exp(-U), learned q) of an energy-target run as PNG."""
    was_training = model.training
    model.eval()
    try:
        bound = float(target.bound)
        q = learned_density(model, loss_fn, bound, pixels)
    finally:
        model.train(was_training)
    how = getattr(loss_fn, "direction", "")
    picture = side_by_side([
        (heat_map(target_density(target, bound, pixels)), f"target exp(-U), {name}"),
        (heat_map(q), {"forward": "learned q, forward map", "inverse": "learned q, model density"}.get(how, "learned q")),
    ])
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return write_bytes(Path(path), buffer.getvalue())
