"""Line charts as inline SVG text, for the run report (``zoo.report``).

Drawn here rather than with matplotlib, which is not a dependency of zoo (see ``zoo._figure``):
a chart is a few polylines, ticks and a legend, and as SVG text it stays sharp at any zoom,
needs no image decoding and adds a few KiB to the page. Every label is HTML-escaped; numbers
are formatted here. Non-finite points break a line instead of bending it to infinity.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

from zoo._figure import nice_ticks, tick_label

WIDTH, HEIGHT = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 80, 16, 30, 46
MAX_POINTS = 2000  # per line; longer lines are thinned evenly (the last point kept)
# Okabe-Ito colours: told apart also with colour blindness
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


@dataclass
class Line:
    label: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False


@dataclass
class Chart:
    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    integer_x: bool = True  # epochs: no ticks between them

    def add(self, label: str, points, color: str | None = None, dashed: bool = False) -> None:
        self.lines.append(Line(label, list(points), color or PALETTE[len(self.lines) % len(PALETTE)], dashed))

    def finite_points(self) -> list[tuple[float, float]]:
        return [(x, y) for line in self.lines for x, y in line.points if _finite(x) and _finite(y)]

    def to_svg(self) -> str:
        return render(self)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low <= 1e-9 * max(abs(low), abs(high)):  # a constant: a window around it
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


def _thinned(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    stride = math.ceil(len(points) / MAX_POINTS)
    return list(points[::stride]) + ([points[-1]] if (len(points) - 1) % stride else [])


def render(chart: Chart) -> str:
    """The chart as an ``<svg>`` element (text), or a note when it has no finite point."""
    esc = html.escape
    points = chart.finite_points()
    title = f'<text x="{WIDTH / 2:.0f}" y="18" text-anchor="middle" class="title">{esc(chart.title)}</text>'
    if not points:
        return (f'<svg class="chart" viewBox="0 0 {WIDTH} 80" width="{WIDTH}" height="80" role="img">'
                f'{title}<text x="{WIDTH / 2:.0f}" y="52" text-anchor="middle">no finite values</text></svg>')
    x0, x1 = _span([x for x, _ in points])
    y0, y1 = _span([y for _, y in points])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + (y1 - y) / (y1 - y0) * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="{esc(chart.title)}">', title,
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>']
    xticks, xstep = nice_ticks(x0, x1, 6)
    if chart.integer_x and xstep < 1:
        xticks, xstep = [v for v in range(math.ceil(x0), math.floor(x1) + 1)], 1.0
    for value in xticks:
        x = px(value)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP + plot_h}" x2="{x:.1f}" y2="{TOP + plot_h + 4}" class="tick"/>'
                     f'<text x="{x:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{esc(tick_label(value, xstep))}</text>')
    yticks, ystep = nice_ticks(y0, y1, 5)
    for value in yticks:
        y = py(value)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(tick_label(value, ystep))}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">{esc(chart.xlabel)}</text>')
    parts.append(f'<text transform="translate(13 {TOP + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{esc(chart.ylabel)}</text>')
    for line in chart.lines:
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        for run in _finite_runs(_thinned(line.points)):
            if len(run) == 1:
                x, y = run[0]
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{esc(line.color)}"/>')
            else:
                coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
                parts.append(f'<polyline points="{coords}" fill="none" stroke="{esc(line.color)}" '
                             f'stroke-width="1.8"{dash}/>')
    parts.append(_legend(chart.lines, LEFT + plot_w - 8, TOP + 8))
    parts.append("</svg>")
    return "".join(parts)


def _finite_runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    runs, current = [], []
    for x, y in points:
        if _finite(x) and _finite(y):
            current.append((float(x), float(y)))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _legend(lines: list[Line], right: float, top: float) -> str:
    esc = html.escape
    rows = []
    for i, line in enumerate(lines):
        y = top + 6 + 16 * i
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        rows.append(f'<line x1="{right - 20:.0f}" y1="{y:.0f}" x2="{right:.0f}" y2="{y:.0f}" '
                    f'stroke="{esc(line.color)}" stroke-width="2"{dash}/>'
                    f'<text x="{right - 26:.0f}" y="{y + 4:.0f}" text-anchor="end">{esc(line.label)}</text>')
    width = 34 + 6.5 * max((len(line.label) for line in lines), default=0)  # about 6.5 px a character
    box = (f'<rect x="{right - width:.0f}" y="{top - 4:.0f}" width="{width + 6:.0f}" height="{16 * len(lines) + 4}" '
           'fill="#fff" fill-opacity="0.85" stroke="#ddd"/>') if lines else ""
    return f'<g class="legend">{box}{"".join(rows)}</g>'
