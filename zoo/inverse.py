"""Inverse problems: posterior checks of a flow p(parameters | observation), and the planar arm.

``calibration``: for each of N test pairs (x, y), draw S posterior samples of p(x | y); for each
level q the share of true parameters inside the central q-interval of the samples (per
dimension, averaged) should be q. It reports those shares, their mean absolute error from q, and,
when the data set gives its forward model f, the mean distance |f(x_sample) - y|.

The arm (Ardizzone et al. 2019, arXiv 1808.04730, section 4.1, the benchmark of Kruse et al.
2021): a planar arm on a vertical rail, parameters x = (rail height x1, joint angles t1, t2, t3),
prior x1 ~ N(0, 1/4^2), t_i ~ N(0, 1/2^2); segment lengths (1/2, 1/2, 1); the end point is
y = (sum_k l_k cos(t_1 + ... + t_k), x1 + sum_k l_k sin(t_1 + ... + t_k)).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from zoo._figure import PANEL, PAPER, Figure, Frame

ARM_LENGTHS = (0.5, 0.5, 1.0)
ARM_PRIOR_STD = (0.25, 0.5, 0.5, 0.5)


def arm_joints(x: torch.Tensor) -> torch.Tensor:
    """The arm's joint positions (batch, 4, 2): the rail point, the two elbows, the end point."""
    x = torch.as_tensor(x, dtype=torch.float64)
    height, angles = x[:, 0], torch.cumsum(x[:, 1:], dim=1)
    points = [torch.stack([torch.zeros_like(height), height], dim=1)]
    for k, length in enumerate(ARM_LENGTHS):
        step = torch.stack([torch.cos(angles[:, k]), torch.sin(angles[:, k])], dim=1) * length
        points.append(points[-1] + step)
    return torch.stack(points, dim=1)


def arm_end_point(x: torch.Tensor) -> torch.Tensor:
    """The forward model: parameters (batch, 4) -> end point (batch, 2)."""
    return arm_joints(x)[:, -1]


def sample_arm(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` parameter vectors from the prior."""
    return torch.randn(n, 4, generator=generator, dtype=torch.float64) * torch.tensor(ARM_PRIOR_STD,
                                                                                     dtype=torch.float64)


@torch.no_grad()
def posterior_samples(model, y: torch.Tensor, n: int, temperature: float = 1.0) -> torch.Tensor:
    """``n`` samples of p(x | y) for one observation ``y``."""
    was_training = model.training
    model.eval()
    try:
        return model.sample(n, temperature=temperature, context=torch.as_tensor(y)[None])
    finally:
        model.train(was_training)


@torch.no_grad()
def calibration(model, split, samples: int, examples: int, levels: Sequence[float],
                forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Quantile-interval coverage of the posterior on the first ``examples`` pairs of ``split``."""
    count = min(examples, len(split))
    inside = {q: 0.0 for q in levels}
    forward_error = 0.0
    for i in range(count):
        x, y = split[i]
        draws = posterior_samples(model, y, samples).double().cpu()
        for q in levels:
            low = torch.quantile(draws, (1 - q) / 2, dim=0)
            high = torch.quantile(draws, (1 + q) / 2, dim=0)
            inside[q] += float(((x.double() >= low) & (x.double() <= high)).double().mean())
        if forward is not None:
            forward_error += float((forward(draws) - y.double()).norm(dim=1).mean())
    shares = {str(q): inside[q] / max(count, 1) for q in levels}
    result = {
        "calibration": shares,
        "calibration_error": float(np.mean([abs(shares[str(q)] - q) for q in levels])),
        "calibration_examples": count,
        "posterior_samples": samples,
    }
    if forward is not None:
        result["forward_error"] = forward_error / max(count, 1)
    return result


def posterior_picture(model, y: torch.Tensor, truth: torch.Tensor,
                      draw: Callable[[torch.Tensor], torch.Tensor], samples: int,
                      title: str | None = None) -> np.ndarray:
    """Posterior arm configurations for one end point (faint lines), the true arm (dark) and the
    target (a ring): ``draw(x) -> (batch, joints, 2)`` gives each configuration's polyline."""
    draws = posterior_samples(model, y, samples).double().cpu()
    lines = draw(draws).numpy()
    true_line = draw(truth.double()[None]).numpy()[0]
    frame = Frame.around(np.concatenate([lines.reshape(-1, 2), true_line]), percentile=1.0)
    # Count how many arms cross each pixel (drawing them on top of each other would saturate):
    # ink grows with the count, so where the posterior puts its arms shows.
    hits = np.zeros((PANEL, PANEL), dtype=np.float64)
    for line in lines:
        stroke = Image.new("L", (PANEL, PANEL), 0)
        ImageDraw.Draw(stroke).line([tuple(p) for p in frame.to_pixels(line, PANEL)], fill=1, width=2)
        hits += np.asarray(stroke, dtype=np.float64)
    ink = 1 - np.exp(-hits / max(len(lines) / 40, 1))[..., None]
    paper, orange = np.array(PAPER, dtype=np.float64), np.array((213, 94, 0), dtype=np.float64)
    image = Image.fromarray((paper * (1 - ink) + orange * ink).round().astype(np.uint8)).convert("RGBA")
    pen = ImageDraw.Draw(image)
    pen.line([tuple(p) for p in frame.to_pixels(true_line, PANEL)], fill=(33, 78, 153, 255), width=3)
    target = frame.to_pixels(np.asarray(y, dtype=np.float64)[None], PANEL)[0]
    pen.ellipse([target[0] - 6, target[1] - 6, target[0] + 6, target[1] + 6], outline=(0, 0, 0, 255), width=2)
    figure = Figure(1, frame, title=title)
    figure.panel(0, np.asarray(image.convert("RGB")),
                 f"{samples} posterior arms (orange), true arm (blue)",
                 xlabel="x", ylabel="y")
    return figure.to_array()
