"""The pictures: 2-D density and sample plots (axes, colour bar, frame), and image grids."""

import math
from collections import deque

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo import _figure
from zoo._figure import PANEL, PAPER, RAMP, Figure, Frame, nice_ticks, tick_label
from zoo.plugins import datasets_toy as toy
from zoo.visualize import (
    GRID_SEPARATOR, data_points, density_picture, density_raster, image_grid,
    samples_picture, save_2d_samples, save_samples,
)


class TwoGaussians(torch.nn.Module):
    """p(x) = N(x; -c, s^2 I) / 2 + N(x; c, s^2 I) / 2: a density with two known modes."""

    shape = (2,)

    def __init__(self, centre=(1.5, 0.0), std=0.3):
        super().__init__()
        self.centre, self.std = torch.tensor(centre), std

    def log_prob(self, x):
        parts = [-((x - c) ** 2).sum(1) / (2 * self.std ** 2) for c in (self.centre, -self.centre)]
        return torch.logsumexp(torch.stack(parts), 0) - math.log(2 * 2 * math.pi * self.std ** 2)

    def sample(self, n, temperature=1.0, exact_inverse=False):
        sign = torch.where(torch.rand(n) < 0.5, 1.0, -1.0)[:, None]
        return sign * self.centre + self.std * temperature * torch.randn(n, 2)


def flow_2d():
    """An untrained RealNVP-style FlowModel on 2-D data: zero-initialised couplings, so x = z."""
    recipe = zoo.load_recipe({
        "name": "tiny2d", "dataset": {"name": "moons", "n_train": 64, "n_val": 8, "n_test": 8},
        "model": {"base": "standard_normal", "layers": [
            {"name": "affine_coupling", "hidden": 8}, {"name": "reverse"},
            {"name": "affine_coupling", "hidden": 8}]},
        "loss": "nll", "gradient_mode": "exact", "train": {"epochs": 1},
    })
    return zoo.build_model(recipe)


def components(mask):
    """Sizes of the 4-connected regions of a boolean image, largest first."""
    seen, sizes = np.zeros_like(mask), []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start], queue, size = True, deque([start]), 0
        while queue:
            r, c = queue.popleft()
            size += 1
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    queue.append((nr, nc))
        sizes.append(size)
    return sorted(sizes, reverse=True)


def layout(n_panels, points, **kwargs):
    """The Figure geometry the plotting functions use for a window fitted to ``points``."""
    return Figure(n_panels, Frame.around(points), **kwargs)


def panel_of(picture, figure, index):
    x, y = figure.panel_origin(index)
    return picture[y : y + PANEL, x : x + PANEL]


def not_paper(pixels):
    return np.any(pixels != np.array(PAPER, np.uint8), axis=-1)


@pytest.fixture(scope="module")
def mixture_data():
    torch.manual_seed(0)
    return TwoGaussians().sample(1500).numpy()


# --- density plot ------------------------------------------------------------------------------


def test_two_mode_density_shows_two_separate_bright_regions(mixture_data):
    model, frame = TwoGaussians(), Frame.around(mixture_data)
    heat, top = density_raster(model, frame)
    assert heat.shape == (PANEL, PANEL, 3) and heat.dtype == np.uint8
    assert top == pytest.approx(float(model.log_prob(model.centre[None]).item()) / math.log(10), abs=0.01)
    brightness = heat.astype(float).sum(-1)
    bright = brightness > RAMP[len(RAMP) // 2].sum()  # the upper half of the ramp
    sizes = components(bright)
    assert len(sizes) == 2 and min(sizes) > 0.8 * max(sizes)  # two equal modes, apart
    # and they sit where the modes are: left and right of the centre line
    columns = np.nonzero(bright.any(0))[0]
    middle = frame.to_pixels(np.zeros((1, 2)), PANEL)[0, 0]
    assert columns.min() < middle < columns.max() and not bright[:, int(middle)].any()


def test_density_figure_layout_axes_colour_bar_and_title(mixture_data):
    picture = density_picture(TwoGaussians(), mixture_data, title="mix", nll=1.234, epoch=7)
    figure = layout(2, mixture_data, colorbar=True, title="mix")
    assert picture.shape == (figure.image.height, figure.image.width, 3)
    heat, _ = density_raster(TwoGaussians(), Frame.around(mixture_data))
    assert np.array_equal(panel_of(picture, figure, 1), heat)  # the heat map, unscaled, in place
    x0, y0 = figure.panel_origin(0)
    assert not_paper(picture[y0 : y0 + PANEL, 20 : x0 - 8]).sum() > 50  # y tick labels and label
    assert not_paper(picture[y0 + PANEL + 6 :, x0 : x0 + PANEL]).sum() > 50  # x tick labels and label
    assert not_paper(picture[: y0 - 30]).sum() > 100  # the title line
    bar_x = figure.panel_origin(1)[0] + PANEL + figure.bar_gap
    bar = picture[y0 : y0 + PANEL, bar_x + 2]
    assert np.abs(bar[1].astype(int) - RAMP[-1]).max() <= 2  # bright at the top ...
    assert np.abs(bar[-2].astype(int) - RAMP[0]).max() <= 2  # ... dark at the bottom
    assert not_paper(picture[y0 : y0 + PANEL, bar_x + figure.bar_width + 4 :]).sum() > 100  # its labels
    untitled = density_picture(TwoGaussians(), mixture_data)
    assert untitled.shape[0] < picture.shape[0]


def test_left_margin_makes_room_for_wide_tick_labels():
    narrow = layout(1, np.random.default_rng(0).standard_normal((100, 2)))
    wide = layout(1, 1000 * np.random.default_rng(0).standard_normal((100, 2)))  # "-2000" ...
    assert wide.left > narrow.left
    picture = samples_picture(np.zeros((1, 2)), 1000 * np.random.default_rng(0).standard_normal((100, 2)))
    column_ink = not_paper(picture[wide.top : wide.top + PANEL, : wide.left - 8]).any(0)
    gaps = np.diff(np.flatnonzero(column_ink))
    assert (gaps > 4).any()  # the y label and the tick labels do not run into each other


def test_data_panel_shows_the_points_inside_the_frame(mixture_data):
    picture = density_picture(TwoGaussians(), mixture_data)
    figure = layout(2, mixture_data, colorbar=True)
    data_panel = not_paper(panel_of(picture, figure, 0))
    pixels = Frame.around(mixture_data).to_pixels(mixture_data, PANEL).astype(int)
    inside = np.all((pixels >= 0) & (pixels < PANEL), axis=1)
    assert inside.mean() > 0.99
    cols, rows = pixels[inside].T
    assert data_panel[rows, cols].mean() > 0.95  # a dot at every data point
    assert data_panel.mean() < 0.3  # and paper around them


def test_frame_is_square_fits_the_data_and_ignores_a_far_outlier():
    x = data_points(toy.moons(n_train=3000, n_val=2, n_test=2))
    frame = Frame.around(x)
    assert frame.x1 - frame.x0 == pytest.approx(frame.y1 - frame.y0)
    assert frame.x0 < x[:, 0].min() and x[:, 0].max() < frame.x1
    assert frame.y0 < x[:, 1].min() and x[:, 1].max() < frame.y1
    assert frame.x1 - frame.x0 < 1.5 * (x[:, 0].max() - x[:, 0].min())  # fitted, not [-4, 4]^2
    with_outlier = Frame.around(np.vstack([x, [[1e6, -1e6]]]))
    assert with_outlier.x1 - with_outlier.x0 == pytest.approx(frame.x1 - frame.x0, rel=0.01)
    single = Frame.around(np.ones((5, 2)))
    assert single.x0 < 1 < single.x1 and single.x1 - single.x0 == pytest.approx(1.0)


def test_density_plot_of_a_flow_model_without_data():
    torch.manual_seed(0)
    picture = density_picture(flow_2d())  # as `zoo sample` calls it: the frame from samples
    figure = layout(1, np.random.default_rng(0).standard_normal((2000, 2)), colorbar=True)  # x = z
    assert picture.shape == (figure.image.height, figure.image.width, 3)
    heat = panel_of(picture, figure, 0).astype(float).sum(-1)
    centre, corner = heat[PANEL // 2 - 5 : PANEL // 2 + 5].mean(), heat[:10, :10].mean()
    assert centre > corner + 200  # N(0, I): bright in the middle, dark in the corners


def test_save_samples_writes_the_2d_density_plot_with_the_data(tmp_path):
    model = flow_2d()
    model.train()
    moons = toy.moons(n_train=500, n_val=2, n_test=2)
    path = save_samples(model, tmp_path, "final", {}, moons, title="tiny2d", nll=1.5, epoch=3)
    assert path == tmp_path / "samples" / "final_density.png" and model.training
    with Image.open(path) as image:
        assert image.size == layout(2, data_points(moons), colorbar=True, title="t").image.size


# --- samples plot ------------------------------------------------------------------------------


def sample_pixels(path, window_points, with_data=True):
    picture = np.asarray(Image.open(path).convert("RGB"))
    figure = layout(2 if with_data else 1, window_points)
    panel = panel_of(picture, figure, 1 if with_data else 0).astype(int)
    # vermilion-ish: red well above blue
    return np.argwhere((panel[..., 0] - panel[..., 2] > 60) & (panel[..., 0] > 150))


def test_samples_plot_honours_n_and_temperature(tmp_path, monkeypatch):
    model, calls = flow_2d(), []
    sample = model.sample
    monkeypatch.setattr(model, "sample", lambda n, temperature=1.0, exact_inverse=False: (
        calls.append((n, temperature)) or sample(n, temperature, exact_inverse)))
    data = np.random.default_rng(0).standard_normal((2000, 2))  # the frame: about [-3.3, 3.3]^2
    torch.manual_seed(0)
    spread = {}
    for t in (1.0, 0.3):
        path = save_2d_samples(model, tmp_path / f"t{t}.png", 3000, t, data=data, title="tiny2d")
        spread[t] = sample_pixels(path, data).std(0).mean()
    assert calls == [(3000, 1.0), (3000, 0.3)]
    # x = z here, so the points' spread scales with T; the dots' own size and their overlap in the
    # crowded middle make the drawn spread shrink a little less than 0.3
    assert 0.2 < spread[0.3] / spread[1.0] < 0.5


def test_temperature_zero_draws_every_sample_at_the_mode(tmp_path):
    path = save_2d_samples(flow_2d(), tmp_path / "t0.png", 500, 0.0, data=None)
    pixels = sample_pixels(path, np.zeros((1, 2)), with_data=False)
    assert 0 < len(pixels) < 40  # one dot
    assert np.ptp(pixels, axis=0).max() <= 5
    centre = pixels.mean(0)  # z = 0 -> x = 0: the middle of the unit window around it
    assert np.abs(centre - PANEL / 2).max() < 3


def test_samples_picture_puts_data_beside_samples():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((400, 2))
    picture = samples_picture(rng.standard_normal((300, 2)), data, temperature=1)
    figure = layout(2, data)
    data_panel, sample_panel = panel_of(picture, figure, 0), panel_of(picture, figure, 1)
    reddish = lambda p: p[..., 0].astype(int) - p[..., 2] > 60  # noqa: E731  (vermilion, not blue)
    assert not reddish(data_panel).any() and reddish(sample_panel).sum() > 300
    assert not_paper(data_panel).sum() > 300 and not_paper(sample_panel).sum() > 300


def test_samples_that_cannot_be_drawn_are_counted_not_drawn():
    rng = np.random.default_rng(2)
    samples = rng.standard_normal((200, 2))
    samples[:30] = np.nan
    samples[30:40] = 1e30  # far outside; must not wrap around when cast to pixels
    data = rng.standard_normal((400, 2))
    clean, picture = samples_picture(samples[40:], data), samples_picture(samples, data)
    figure = layout(2, data)
    x, y = figure.panel_origin(1)
    corner = (slice(y + PANEL - 22, y + PANEL - 2), slice(x + 2, x + 200))  # the note
    assert not_paper(picture[corner]).sum() > 40 + not_paper(clean[corner]).sum()
    rest = (slice(y, y + PANEL - 24), slice(x, x + PANEL))
    assert np.array_equal(picture[rest], clean[rest])  # the drawable samples, drawn the same


# --- ticks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("low,high", [(-1.3, 2.4), (0, 1), (-0.004, 0.003), (-250, 900)])
def test_nice_ticks_are_round_and_inside(low, high):
    ticks, step = nice_ticks(low, high)
    assert 3 <= len(ticks) <= 11 and np.all((ticks >= low - 1e-12) & (ticks <= high + 1e-12))
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5))
    labels = [tick_label(t, step) for t in ticks]
    assert len(set(labels)) == len(labels) and "-0" not in labels


def test_colormap_brightens_monotonically():
    ramp = _figure.colormap(np.linspace(0, 1, 64)).astype(float)
    luma = ramp @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luma) > 0)
    assert np.array_equal(_figure.colormap(np.array([-1.0, np.nan, 2.0])), RAMP[[0, 0, -1]].astype(np.uint8))


# --- image grids -------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_grid_separators_show_on_black_images(channels):
    grid = image_grid(torch.zeros(5, channels, 6, 4), n_bits=8)  # 5 tiles: 3 columns, 2 rows
    assert grid.shape == ((2 * 8 + 2, 3 * 6 + 2) if channels == 1 else (2 * 8 + 2, 3 * 6 + 2, 3))
    grey = grid if channels == 1 else grid[..., 0]
    assert np.all(grey[:2] == GRID_SEPARATOR) and np.all(grey[-2:] == GRID_SEPARATOR)  # border
    assert np.all(grey[:, :2] == GRID_SEPARATOR) and np.all(grey[:, -2:] == GRID_SEPARATOR)
    assert np.all(grey[8:10] == GRID_SEPARATOR) and np.all(grey[:, 6:8] == GRID_SEPARATOR)  # between
    assert np.all(grey[2:8, 2:6] == 0) and (grey == 0).sum() == 5 * 6 * 4  # the tiles, all black
    white = image_grid(torch.full((4, channels, 3, 3), 255.0), n_bits=8)
    assert (white == GRID_SEPARATOR).any() and (white == 255).sum() == 4 * 9 * (1 if channels == 1 else 3)
