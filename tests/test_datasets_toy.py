"""moons and circles written in numpy: scikit-learn's definitions, without importing it."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.plugins import datasets_toy as toy

ROOT = Path(__file__).resolve().parents[1]


def draw(sample, n, noise=0.0, seed=0, split=0):
    return sample(n, noise, toy.split_rng(seed, split))[0]


def draw_labels(sample, n, noise=0.0, seed=0, split=0):
    return sample(n, noise, toy.split_rng(seed, split))[1]


def test_moons_lie_on_the_two_half_circles_without_noise():
    x = draw(toy._moons, 1001)
    upper = np.isclose(np.hypot(x[:, 0], x[:, 1]), 1.0) & (x[:, 1] >= -1e-12)
    lower = np.isclose(np.hypot(x[:, 0] - 1, x[:, 1] - 0.5), 1.0) & (x[:, 1] <= 0.5 + 1e-12)
    assert np.all(upper | lower) and not np.any(upper & lower)
    # n // 2 on the upper moon, the remainder (one more for odd n) on the lower
    assert (upper.sum(), lower.sum()) == (500, 501)
    # the arcs are evenly spaced in angle over [0, pi], both end points included
    angles = np.sort(np.arctan2(x[upper, 1], x[upper, 0]))
    assert np.allclose(angles, np.linspace(0, math.pi, 500))
    assert np.allclose(np.sort(x[lower, 0]), np.sort(1 - np.cos(np.linspace(0, math.pi, 501))))


def test_circles_lie_on_radius_one_and_half_without_noise():
    x = draw(toy._circles, 801)
    radius = np.hypot(x[:, 0], x[:, 1])
    outer, inner = np.isclose(radius, 1.0), np.isclose(radius, 0.5)
    assert np.all(outer | inner) and (outer.sum(), inner.sum()) == (400, 401)
    angles = np.sort(np.mod(np.arctan2(x[outer, 1], x[outer, 0]), 2 * math.pi))
    assert np.allclose(angles, np.linspace(0, 2 * math.pi, 400, endpoint=False), atol=1e-9)


@pytest.mark.parametrize("sample", [toy._moons, toy._circles], ids=["moons", "circles"])
def test_points_are_shuffled_and_noise_has_the_asked_scale(sample):
    clean = draw(sample, 4000, seed=5)
    # shuffled: the first half is not one arc (unshuffled, points 0..1999 would be the outer one)
    first_half_outer = np.isclose(np.hypot(clean[:2000, 0], clean[:2000, 1]), 1.0).mean()
    assert 0.4 < first_half_outer < 0.6
    noisy = draw(sample, 4000, noise=0.1, seed=5)
    residual = noisy - clean  # same stream: the same shuffle, then the noise
    assert abs(residual.std() - 0.1) < 0.005 and abs(residual.mean()) < 0.005


@pytest.mark.parametrize("sample", [toy._moons, toy._circles], ids=["moons", "circles"])
def test_deterministic_per_seed_and_split(sample):
    a = draw(sample, 500, noise=0.05, seed=1, split=0)
    assert np.array_equal(a, draw(sample, 500, noise=0.05, seed=1, split=0))
    assert not np.allclose(a, draw(sample, 500, noise=0.05, seed=2, split=0))
    assert not np.allclose(a, draw(sample, 500, noise=0.05, seed=1, split=1))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_sizes(n):
    assert draw(toy._moons, n, noise=0.05).shape == (n, 2)
    assert draw(toy._circles, n, noise=0.05).shape == (n, 2)


@pytest.mark.parametrize("n,noise", [(7, 0.0), (1000, 0.05), (5001, 0.2)])
def test_same_points_as_scikit_learn(n, noise):
    datasets = pytest.importorskip("sklearn.datasets")  # a test extra only; zoo never imports it
    moons, moon = datasets.make_moons(n, noise=noise, random_state=toy.split_rng(3, 2))
    circles, circle = datasets.make_circles(n, noise=noise, factor=0.5, random_state=toy.split_rng(3, 2))
    assert np.allclose(draw(toy._moons, n, noise, seed=3, split=2), moons, rtol=0, atol=1e-12)
    assert np.allclose(draw(toy._circles, n, noise, seed=3, split=2), circles, rtol=0, atol=1e-12)
    # the labels (which moon, which circle) are scikit-learn's too
    assert np.array_equal(draw_labels(toy._moons, n, noise, seed=3, split=2), moon)
    assert np.array_equal(draw_labels(toy._circles, n, noise, seed=3, split=2), circle)


def test_moons_items_carry_which_moon():
    data = toy.moons(n_train=50, n_val=10, n_test=10, noise=0.0)
    assert data.classes == ("upper", "lower") and data.label_kind == "class"
    x, y = data.train[0]
    assert x.shape == (2,) and y.dtype == torch.long
    upper = torch.stack([data.train[i][0] for i in range(50) if data.train[i][1] == 0])
    assert (upper[:, 1] >= -1e-6).all()  # the upper moon is (cos t, sin t), sin t >= 0


def test_the_toy_datasets_do_not_import_scikit_learn():
    code = ("import sys; from zoo.plugins import datasets_toy as t; t.moons(n_train=10, n_val=2, "
            "n_test=2); t.circles(n_train=10, n_val=2, n_test=2); print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
