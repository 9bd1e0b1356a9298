"""Figures drawn with Pillow alone: square 2-D panels with axes and ticks, a log colour bar, dots.

matplotlib is not a dependency of zoo, so the few pieces a paper-style 2-D figure needs are
here: ``Frame`` (the data window of a panel), ``nice_ticks`` (1-2-5 steps), ``colormap`` (a
perceptual dark-violet -> teal -> yellow ramp), ``scatter`` (anti-aliased, translucent dots) and
``Figure`` (panels side by side, a title, a colour bar). Text uses Pillow's default font
(``ImageFont.load_default(size)``; Pillow older than 10.1 gives the fixed bitmap font instead).
The default font has no Unicode minus or subscripts, so labels stay ASCII.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 320  # side of a square panel, pixels
INK = (40, 40, 40)
FRAME_INK = (90, 90, 90)
PAPER = (255, 255, 255)

# Anchors of the ramp, evenly spaced on [0, 1]: a viridis-like sequence whose lightness rises
# monotonically, so brighter always means denser, also in grey print and for colour-blind readers.
RAMP = np.array([
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
], dtype=np.float64)


@lru_cache(maxsize=None)
def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def text_size(text: str, size: int) -> tuple[int, int]:
    left, top, right, bottom = font(size).getbbox(text)
    return right - left, bottom - top


def colormap(t: np.ndarray) -> np.ndarray:
    """uint8 RGB of values ``t`` in [0, 1] (clipped; NaN -> 0), interpolated along ``RAMP``."""
    t = np.nan_to_num(np.clip(t, 0.0, 1.0), nan=0.0) * (len(RAMP) - 1)
    low = np.minimum(np.floor(t).astype(int), len(RAMP) - 2)
    w = (t - low)[..., None]
    return np.round(RAMP[low] * (1 - w) + RAMP[low + 1] * w).astype(np.uint8)


@dataclass(frozen=True)
class Frame:
    """The data window ``[x0, x1] x [y0, y1]`` of a square panel (row 0 at the top: y = y1)."""

    x0: float
    x1: float
    y0: float
    y1: float

    @classmethod
    def around(cls, points: np.ndarray, percentile: float = 0.5, margin: float = 0.1) -> Frame:
        """A square window on the central points: the ``percentile`` .. ``100 - percentile``
        range of each coordinate, the larger of the two spans taken for both, plus ``margin``
        of it on every side (so a few outliers do not shrink the picture of the rest). Points
        that all coincide get a window of side 1 around them."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        points = points[np.isfinite(points).all(axis=1)]
        if len(points) == 0:
            return cls(-4.0, 4.0, -4.0, 4.0)
        low, high = np.percentile(points, [percentile, 100 - percentile], axis=0)
        centre, span = (low + high) / 2, float((high - low).max())
        if span <= 1e-9 * max(1.0, float(np.abs(centre).max())):
            span = 1.0 / (1 + 2 * margin)
        half = span * (0.5 + margin)
        return cls(centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)

    def pixel_centres(self, pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """x and y of the centres of a ``pixels`` x ``pixels`` raster, each (pixels, pixels)."""
        xs = self.x0 + (np.arange(pixels) + 0.5) * (self.x1 - self.x0) / pixels
        ys = self.y1 - (np.arange(pixels) + 0.5) * (self.y1 - self.y0) / pixels
        return np.meshgrid(xs, ys, indexing="xy")

    def to_pixels(self, points: np.ndarray, pixels: int) -> np.ndarray:
        """Continuous (column, row) raster coordinates of data points, (N, 2)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        col = (points[:, 0] - self.x0) / (self.x1 - self.x0) * pixels
        row = (self.y1 - points[:, 1]) / (self.y1 - self.y0) * pixels
        return np.stack([col, row], axis=1)


def nice_ticks(low: float, high: float, count: int = 5) -> tuple[np.ndarray, float]:
    """Round tick values inside [low, high]: the finest step of 1, 2 or 5 x 10^k that gives at
    most ``count + 1`` ticks."""
    exponent = math.floor(math.log10((high - low) / max(count, 1)))
    for step in (m * 10.0 ** e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)):
        first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
        if last - first + 1 <= count + 1:
            break
    return np.arange(first, last + 1) * step, step


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text  # never "-0.0"


def scatter(background: np.ndarray, points_px: np.ndarray, color: tuple[int, int, int],
            radius: float = 1.3, alpha: float = 0.55, supersample: int = 3) -> np.ndarray:
    """Dots of ``radius`` pixels over an (H, W, 3) uint8 raster, anti-aliased.

    Each dot covers a disc with opacity ``alpha``; where k dots overlap the coverage is
    1 - (1 - alpha)^k, so crowded places read darker, as with translucent markers. Drawn on a
    raster ``supersample`` times finer, then averaged down. Points off the raster, and
    non-finite ones, are not drawn.
    """
    h, w = background.shape[:2]
    s = supersample
    hits = np.zeros((h * s, w * s), dtype=np.float64)
    points_px = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    limit = np.array([w, h]) + radius + 1
    near = np.all(np.isfinite(points_px) & (points_px > -radius - 1) & (points_px < limit), axis=1)
    centres = np.floor(points_px[near] * s).astype(np.int64)
    r = radius * s
    span = np.arange(-math.ceil(r), math.ceil(r) + 1)
    dy, dx = np.meshgrid(span, span, indexing="ij")
    inside = dx ** 2 + dy ** 2 <= r ** 2
    for oy, ox in zip(dy[inside], dx[inside]):
        rows, cols = centres[:, 1] + oy, centres[:, 0] + ox
        keep = (rows >= 0) & (rows < h * s) & (cols >= 0) & (cols < w * s)
        np.add.at(hits, (rows[keep], cols[keep]), 1.0)
    coverage = 1.0 - (1.0 - alpha) ** hits
    coverage = coverage.reshape(h, s, w, s).mean(axis=(1, 3))[..., None]
    out = background.astype(np.float64) * (1 - coverage) + np.asarray(color, np.float64) * coverage
    return np.round(out).astype(np.uint8)


def _rotated_text(text: str, size: int, fill=INK) -> Image.Image:
    """``text`` written bottom to top (for a y-axis label), on a transparent tile."""
    w, h = text_size(text, size)
    tile = Image.new("RGBA", (w + 4, h + 6), (0, 0, 0, 0))
    left, top, _, _ = font(size).getbbox(text)
    ImageDraw.Draw(tile).text((2 - left, 3 - top), text, font=font(size), fill=fill)
    return tile.rotate(90, expand=True)


class Figure:
    """Square panels in one row sharing one ``frame``, an optional colour bar, a title on top.

    ``Figure(n_panels, frame, colorbar=True, title="...")``, then ``panel(i, raster, ...)`` for
    each panel and ``colorbar(...)``; ``image`` is the finished picture.
    """

    TICK, LABEL, SUBTITLE, TITLE = 12, 13, 13, 15  # font sizes

    def __init__(self, n_panels: int, frame: Frame, colorbar: bool = False,
                 title: str | None = None, panel: int = PANEL):
        self.n, self.frame, self.side = n_panels, frame, panel
        ticks, step = nice_ticks(frame.y0, frame.y1)
        widest = max(text_size(tick_label(v, step), self.TICK)[0] for v in ticks)
        self.left = max(66, 8 + 16 + 10 + widest + 8)  # y label, gap, tick labels, tick marks
        self.gap, self.bottom = 24, 50
        self.top = (34 if title else 10) + 24  # title line, then the panels' subtitles
        self.bar_gap, self.bar_width = 16, 14
        right = self.bar_gap + self.bar_width + 78 if colorbar else 18
        width = self.left + n_panels * panel + (n_panels - 1) * self.gap + right
        self.image = Image.new("RGB", (width, self.top + panel + self.bottom), PAPER)
        self.draw = ImageDraw.Draw(self.image)
        if title:
            self._text((width / 2, 10), title, self.TITLE, anchor="ma")

    def _text(self, xy, text: str, size: int, anchor: str = "la", fill=INK) -> None:
        self.draw.text(xy, text, font=font(size), fill=fill, anchor=anchor)

    def panel_origin(self, index: int) -> tuple[int, int]:
        return self.left + index * (self.side + self.gap), self.top

    def panel(self, index: int, raster: np.ndarray, subtitle: str = "", xlabel: str = "x1",
              ylabel: str | None = "x2") -> None:
        """Paste an (side, side, 3) raster as panel ``index``, framed, with ticks and labels.

        y tick labels and ``ylabel`` are drawn on the first panel only (the panels share axes).
        """
        frame = self.frame
        x, y, side = *self.panel_origin(index), self.side
        self.image.paste(Image.fromarray(raster), (x, y))
        self.draw.rectangle([x - 1, y - 1, x + side, y + side], outline=FRAME_INK, width=1)
        if subtitle:
            self._text((x + side / 2, y - 6), subtitle, self.SUBTITLE, anchor="md")
        ticks, step = nice_ticks(frame.x0, frame.x1)
        for value in ticks:
            px = x + (value - frame.x0) / (frame.x1 - frame.x0) * side
            self.draw.line([px, y + side, px, y + side + 4], fill=FRAME_INK)
            self._text((px, y + side + 6), tick_label(value, step), self.TICK, anchor="ma")
        self._text((x + side / 2, y + side + 26), xlabel, self.LABEL, anchor="ma")
        ticks, step = nice_ticks(frame.y0, frame.y1)
        for value in ticks:
            py = y + (frame.y1 - value) / (frame.y1 - frame.y0) * side
            self.draw.line([x - 5, py, x - 1, py], fill=FRAME_INK)
            if index == 0:
                self._text((x - 8, py), tick_label(value, step), self.TICK, anchor="rm")
        if index == 0 and ylabel:
            label = _rotated_text(ylabel, self.LABEL)
            self.image.paste(label, (8, int(y + side / 2 - label.height / 2)), label)

    def note(self, index: int, text: str) -> None:
        """A short grey remark in the lower left corner inside panel ``index``."""
        x, y = self.panel_origin(index)
        self._text((x + 6, y + self.side - 6), text, self.TICK, anchor="ld", fill=FRAME_INK)

    def colorbar(self, low: float, high: float, label: str) -> None:
        """A vertical bar of ``colormap`` for log10 values ``low`` .. ``high``, with ticks at the
        powers of ten between them written as 10^k."""
        x = self.left + self.n * self.side + (self.n - 1) * self.gap + self.bar_gap
        y, side, w = self.top, self.side, self.bar_width
        column = colormap(np.linspace(1.0, 0.0, side))[:, None, :].repeat(w, axis=1)
        self.image.paste(Image.fromarray(column), (x, y))
        self.draw.rectangle([x - 1, y - 1, x + w, y + side], outline=FRAME_INK, width=1)
        step = max(1, math.ceil((high - low) / 6))  # whole decades, at most about six labels
        for k in range(math.ceil(low - 1e-9), math.floor(high + 1e-9) + 1, step):
            py = y + (high - k) / (high - low) * side
            self.draw.line([x + w, py, x + w + 4, py], fill=FRAME_INK)
            self._power_of_ten((x + w + 7, py), k)
        tile = _rotated_text(label, self.LABEL)
        self.image.paste(tile, (self.image.width - tile.width - 6, int(y + side / 2 - tile.height / 2)), tile)

    def _power_of_ten(self, xy, exponent: int) -> None:
        """``10`` with a raised, smaller exponent, vertically centred on xy."""
        x, y = xy
        if exponent in (0, 1):  # 1 and 10 read better plain
            self._text((x, y), "1" if exponent == 0 else "10", self.TICK, anchor="lm")
            return
        base_w, _ = text_size("10", self.TICK)
        self._text((x, y), "10", self.TICK, anchor="lm")
        self._text((x + base_w + 1, y - 3), str(exponent), self.TICK - 3, anchor="ls")

    def to_array(self) -> np.ndarray:
        return np.asarray(self.image)
