"""Pictures of a model (PNG, Pillow): sample grids for images; density and sample plots for 2-D.

- ``image_grid``: a batch of images tiled with mid-grey separator lines and border, so tiles
  stay apart on black backgrounds (MNIST).
- ``density_picture``: the model's log-density on a square window fitted to the data, in a
  perceptual colour ramp on a log scale with a colour bar, beside the data's own points.
- ``samples_picture``: a scatter of model samples at a temperature, beside the data.

``save_samples`` (called by the training loop), ``save_2d_samples`` (for ``zoo sample``) and
``save_png`` write them. The drawing itself (axes, ticks, colour bar) is in ``zoo._figure``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from zoo._atomic import write_bytes
from zoo._figure import PANEL, PAPER, Figure, Frame, colormap, scatter
from zoo.data import first_tensor
from zoo.flow import FlowModel

DATA_INK = (33, 78, 153)  # the data's dots: blue
SAMPLE_INK = (213, 94, 0)  # the model's samples: vermilion (tells apart from blue also in colour blindness)
CLASS_INKS = [DATA_INK, SAMPLE_INK, (0, 140, 100), (200, 60, 140), (120, 100, 20), (90, 90, 90)]
MAX_POINTS = 2000  # data points drawn: enough to show the shape, few enough to stay light
DECADES = 3.0  # the colour bar spans the top DECADES powers of ten of the density
GRID_SEPARATOR = 128  # mid-grey: visible between black (MNIST) and white tiles alike


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as PNG atomically."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return write_bytes(path, buffer.getvalue())


# --- image grids -------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor, n_bits: int | None) -> torch.Tensor:
    """(N, C, H, W) images on the data's discrete scale as uint8 0..255: discrete data
    (``n_bits``) map 0 .. 2^b - 1 to 0 .. 255; continuous data are min-max scaled, all together."""
    levels = 2 ** n_bits if n_bits else None
    x = images.detach().float().cpu()
    x = x / (levels - 1) if levels else (x - x.min()) / (x.max() - x.min() + 1e-12)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def image_grid(images: torch.Tensor, n_bits: int | None, pad: int = 2,
               separator: int = GRID_SEPARATOR) -> np.ndarray:
    """Tile (N, C, H, W) images, on the data's discrete scale, into one uint8 picture.

    Tiles sit in a near-square grid, ``pad`` pixels of grey ``separator`` between them and
    around the border. Discrete data (``n_bits``) map 0 .. 2^b - 1 to 0 .. 255; continuous
    data are min-max scaled. Returns (H', W') for 1 channel, (H', W', 3) for 3 or more.
    """
    x = to_uint8(images, n_bits)
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), separator, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = x[i]
    array = grid.permute(1, 2, 0).numpy()
    return array[:, :, 0] if c == 1 else array[:, :, :3]


TILE_MIN = 84  # rows of labelled tiles are enlarged (nearest neighbour) to at least this side


def image_rows(rows: Sequence[torch.Tensor], n_bits: int | None, row_labels: Sequence[str] = (),
               tile_labels: Sequence[Sequence[str]] = (), title: str | None = None) -> np.ndarray:
    """Rows of images, each (n, C, H, W) on the data's scale, as one labelled RGB picture.

    Tiles are enlarged by a whole factor to at least ``TILE_MIN`` pixels (small digits stay
    sharp), ``row_labels`` are written left of each row, ``tile_labels[r][i]`` under tile i of
    row r, ``title`` on top. Continuous data are min-max scaled over all rows together, so the
    rows stay comparable. Returns (H, W, 3) uint8.
    """
    from PIL import ImageDraw

    from zoo._figure import INK, font, text_size

    counts = [len(r) for r in rows]
    tiles = to_uint8(torch.cat([r.reshape(len(r), *r.shape[-3:]) for r in rows]), n_bits)
    n, c, h, w = tiles.shape
    scale = max(1, math.ceil(TILE_MIN / max(h, w)))
    th, tw, gap, size = h * scale, w * scale, 6, 13
    left = 12 + max((text_size(label, size)[0] for label in row_labels), default=0)
    caption = 18 if any(any(labels) for labels in tile_labels) else 0
    top = 34 if title else 10
    width = max(left + max(counts) * (tw + gap) + 6, text_size(title, 15)[0] + 20 if title else 0)
    height = top + len(rows) * (th + caption + gap) + 6
    picture = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(picture)
    if title:
        draw.text((width / 2, 10), title, font=font(15), fill=INK, anchor="ma")
    start = 0
    for r, count in enumerate(counts):
        y = top + r * (th + caption + gap)
        if r < len(row_labels):
            draw.text((6, y + th / 2), row_labels[r], font=font(size), fill=INK, anchor="lm")
        for i in range(count):
            tile = tiles[start + i].permute(1, 2, 0).numpy()
            tile = tile[:, :, 0] if c == 1 else tile[:, :, :3]
            image = Image.fromarray(tile).convert("RGB").resize((tw, th), Image.NEAREST)
            x = left + i * (tw + gap)
            picture.paste(image, (x, y))
            labels = tile_labels[r] if r < len(tile_labels) else ()
            if i < len(labels) and labels[i]:
                draw.text((x + tw / 2, y + th + 3), labels[i], font=font(12), fill=INK, anchor="ma")
        start += count
    return np.asarray(picture)


# --- 2-D figures -------------------------------------------------------------------------------


def data_points(dataset, limit: int = MAX_POINTS) -> np.ndarray | None:
    """Up to ``limit`` points of the training split of a 2-D FlowDataset, as an (N, 2) array."""
    if dataset is None:
        return None
    split = dataset.train
    if hasattr(split, "tensors"):
        points = split.tensors[0][:limit]
    else:
        points = torch.stack([first_tensor(split[i]) for i in range(min(len(split), limit))])
    return points.detach().cpu().double().numpy().reshape(-1, 2)


def log_density(model: FlowModel, frame: Frame, pixels: int = PANEL) -> np.ndarray:
    """log p(x) (nats) at the centres of a ``pixels`` x ``pixels`` raster of ``frame``; row 0 is
    the top. Non-finite values come back as -inf (drawn as the lowest colour)."""
    xs, ys = frame.pixel_centres(pixels)
    points = torch.as_tensor(np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1))
    reference = next(model.parameters(), None)
    points = points.to(reference.device, reference.dtype) if reference is not None else points.float()
    with torch.no_grad():
        values = torch.cat([model.log_prob(chunk) for chunk in points.split(16_384)])
    values = values.reshape(pixels, pixels).double().cpu().numpy()
    return np.where(np.isfinite(values), values, -np.inf)


def density_raster(model: FlowModel, frame: Frame, decades: float = DECADES,
                   pixels: int = PANEL) -> tuple[np.ndarray, float]:
    """The heat map alone, (pixels, pixels, 3) uint8, and its top value, max log10 p(x).

    ``colormap`` of (log10 p - top) / decades + 1: the densest pixel is the brightest, and
    densities ``decades`` powers of ten below it or less the darkest.
    """
    log10 = log_density(model, frame, pixels) / math.log(10)
    top = float(log10.max()) if np.isfinite(log10.max()) else 0.0
    return colormap((log10 - (top - decades)) / decades), top


def density_picture(model: FlowModel, data: np.ndarray | None = None,
                    labels: Sequence[int] | None = None, *, title: str | None = None,
                    nll: float | None = None, epoch: int | None = None,
                    frame: Frame | None = None, decades: float = DECADES) -> np.ndarray:
    """The model's density as a heat map, beside the data's points when ``data`` is given.

    Colour shows log10 p(x) over the top ``decades`` powers of ten (lower densities take the
    darkest colour), with a colour bar. The square window is fitted to ``data`` (or, without
    data, to 2,000 model samples); ``labels`` (one integer per data point) colour the data by
    class. The title joins ``title``, ``test NLL`` and ``epoch`` where given.
    """
    data = None if data is None else np.asarray(data, dtype=np.float64).reshape(-1, 2)
    if frame is None:
        frame = Frame.around(data if data is not None else _model_samples(model, MAX_POINTS, 1.0))
    heat, top = density_raster(model, frame, decades)

    panels = [] if data is None else [(f"data ({len(data):,} points)", _data_raster(data, frame, labels))]
    panels.append(("model density", heat))
    figure = Figure(len(panels), frame, colorbar=True, title=_title(title, nll, epoch))
    for index, (subtitle, raster) in enumerate(panels):
        figure.panel(index, raster, subtitle)
    figure.colorbar(top - decades, top, "density p(x), log scale")
    return figure.to_array()


def samples_picture(samples: np.ndarray, data: np.ndarray | None = None, *,
                    temperature: float | None = None, title: str | None = None,
                    frame: Frame | None = None) -> np.ndarray:
    """A scatter of model ``samples`` (vermilion), beside the ``data`` (blue), on one window.

    The window is fitted to the data when given, else to the samples; samples outside it are
    not drawn, so the panel never zooms out to hide a mismatch.
    """
    samples = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    data = None if data is None else np.asarray(data, dtype=np.float64).reshape(-1, 2)
    frame = frame or Frame.around(data if data is not None else samples)
    panels = [] if data is None else [(f"data ({len(data):,} points)", _data_raster(data, frame))]
    at = "" if temperature is None else f", temperature {temperature:g}"
    panels.append((f"model samples ({len(samples):,}{at})", _dots(samples, frame, SAMPLE_INK)))
    figure = Figure(len(panels), frame, title=title)
    for index, (subtitle, raster) in enumerate(panels):
        figure.panel(index, raster, subtitle)
    hidden = _hidden(samples, frame)
    if hidden:
        figure.note(len(panels) - 1, hidden)
    return figure.to_array()


def save_2d_samples(model: FlowModel, path: Path, n: int, temperature: float,
                    data: np.ndarray | None = None, title: str | None = None,
                    exact_inverse: bool = False) -> Path:
    """Draw ``n`` samples at ``temperature`` from a 2-D model and save their scatter as PNG."""
    samples = _model_samples(model, n, temperature, exact_inverse)
    return save_png(samples_picture(samples, data, temperature=temperature, title=title), Path(path))


def save_samples(model: FlowModel, folder: Path, tag: str, train: Mapping[str, Any], dataset=None,
                 *, title: str | None = None, nll: float | None = None,
                 epoch: int | None = None) -> Path | None:
    """Sample grid (image data) or density plot (2-D data) into ``folder/samples/<tag>.png``.

    For 2-D data the density plot shows the dataset's training points beside the density;
    ``title``, ``nll`` (test NLL, nats) and ``epoch`` go into its title.
    """
    shape = tuple(model.shape)
    was_training = model.training
    model.eval()
    try:
        if len(shape) == 3:
            samples = model.sample(int(train.get("n_samples", 64)), float(train.get("sample_temperature", 1.0)))
            return save_png(image_grid(samples, model.n_bits), folder / "samples" / f"{tag}.png")
        if shape == (2,):
            picture = density_picture(model, data_points(dataset), title=title, nll=nll, epoch=epoch)
            return save_png(picture, folder / "samples" / f"{tag}_density.png")
        return None
    finally:
        model.train(was_training)


def _model_samples(model: FlowModel, n: int, temperature: float, exact_inverse: bool = False) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            samples = model.sample(n, temperature=temperature, exact_inverse=exact_inverse)
    finally:
        model.train(was_training)
    return samples.detach().double().cpu().numpy().reshape(-1, 2)


def _dots(points: np.ndarray, frame: Frame, ink, pixels: int = PANEL) -> np.ndarray:
    background = np.full((pixels, pixels, 3), PAPER, dtype=np.uint8)
    # fewer points get bigger, more opaque dots: 100 or 2,000 points both read as a shape
    radius = 1.2 if len(points) > 500 else 2.0
    alpha = 0.5 if len(points) > 500 else 0.8
    return scatter(background, frame.to_pixels(points, pixels), ink, radius=radius, alpha=alpha)


def _data_raster(data: np.ndarray, frame: Frame, labels: Sequence[int] | None = None) -> np.ndarray:
    if labels is None:
        return _dots(data, frame, DATA_INK)
    labels = np.asarray(labels).reshape(-1)
    raster = np.full((PANEL, PANEL, 3), PAPER, dtype=np.uint8)
    for k, value in enumerate(np.unique(labels)):
        chosen = data[labels == value]
        raster = scatter(raster, frame.to_pixels(chosen, PANEL), CLASS_INKS[k % len(CLASS_INKS)],
                         radius=1.2, alpha=0.5)
    return raster


def _hidden(points: np.ndarray, frame: Frame) -> str:
    """What a panel cannot show: "12 not finite, 30 outside the window", or ""."""
    finite = np.isfinite(points).all(axis=1)
    x, y = points[finite].T
    outside = int(np.sum((x < frame.x0) | (x > frame.x1) | (y < frame.y0) | (y > frame.y1)))
    parts = [f"{len(points) - int(finite.sum()):,} not finite"] if not finite.all() else []
    parts += [f"{outside:,} outside the window"] if outside else []
    return ", ".join(parts)


def _title(name: str | None, nll: float | None, epoch: int | None) -> str | None:
    parts = [name] if name else []
    if nll is not None:
        parts.append(f"test NLL {nll:.3f} nats")
    if epoch is not None:
        parts.append(f"epoch {epoch}")
    return "  \u00b7  ".join(parts) or None
