"""Built-in plugin: synthetic datasets (2-D toy densities and a Gaussian of any dimension).

Every split is an independent draw: split k (train 0, val 1, test 2) uses a numpy
``RandomState`` seeded by ``SeedSequence([seed, k])``, so the splits never share points, the same
``seed`` always gives the same data, and different seeds give unrelated streams. The 2-D
densities follow the definitions used by FFJORD (Grathwohl et al., arXiv 1810.01367) and BNAF
(De Cao et al., arXiv 1904.04676); ``moons`` and ``circles`` follow scikit-learn's
``make_moons`` / ``make_circles`` and, drawn from the same split stream, give the same points
(written in numpy here: importing scikit-learn costs about a second on every run).

The energy targets ``u1`` .. ``u4`` (Rezende & Mohamed 2015, Table 1) are unnormalised densities
``exp(-U)`` with no data (``zoo.data.EnergyTarget``), fitted by the loss ``reverse_kl``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from zoo.data import EnergyTarget, FlowDataset, placeholder_splits, tensor_split
from zoo.errors import RecipeError
from zoo.hookspecs import hookimpl
from zoo.registry import params_schema_of

SPLITS = ("train", "val", "test")
Sampler = Callable[[int, float, np.random.RandomState], np.ndarray]


def split_rng(seed: int, split: int) -> np.random.RandomState:
    """The random stream of one split: independent of the other splits and of other seeds."""
    return np.random.RandomState(np.random.MT19937(np.random.SeedSequence([seed, split])))


def draw_splits(name: str, sample: Sampler, sizes: tuple[int, int, int], noise: float, seed: int,
                shape: tuple[int, ...] = (2,), classes: tuple[str, ...] | None = None) -> FlowDataset:
    """A FlowDataset of three independent draws of ``sample(n, noise, rng)``; with ``classes``
    the sampler returns ``(points, class indices)`` and the items are ``(x, class)``."""
    for split, n in zip(SPLITS, sizes):
        if n < 1:
            raise RecipeError(f"dataset {name!r}: n_{split} must be at least 1, got {n}")
    if noise < 0:
        raise RecipeError(f"dataset {name!r}: noise must be >= 0, got {noise}")
    draws = [sample(n, noise, split_rng(seed, k)) for k, n in enumerate(sizes)]
    if classes is None:
        splits = [tensor_split(torch.as_tensor(points, dtype=torch.float32)) for points in draws]
    else:
        splits = [tensor_split(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(labels))
                  for points, labels in draws]
    return FlowDataset(*splits, shape=shape, n_bits=None, classes=classes,
                       info={"seed": seed, "sizes": dict(zip(SPLITS, sizes))})


def _two_arcs(outer: np.ndarray, inner: np.ndarray, noise: float,
              rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Stack the outer-arc and inner-arc points, shuffle, add N(0, noise^2) noise; the points
    and their arc (0 outer, 1 inner: scikit-learn's labels).

    The order of the draws is scikit-learn's (a shuffle of the indices, then the noise), so a
    ``RandomState`` gives the points ``make_moons`` / ``make_circles`` give with it.
    """
    points = np.concatenate([outer, inner])
    arcs = np.concatenate([np.zeros(len(outer), np.int64), np.ones(len(inner), np.int64)])
    order = np.arange(len(points))
    rng.shuffle(order)
    return points[order] + rng.normal(scale=noise, size=points.shape), arcs[order]


def _arc_counts(n: int) -> tuple[int, int]:
    """n // 2 points on the outer arc, the rest (one more when n is odd) on the inner."""
    return n // 2, n - n // 2


def _moons(n: int, noise: float, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    # outer: (cos t, sin t); inner: (1 - cos t, 1/2 - sin t); t evenly spaced on [0, pi]
    n_outer, n_inner = _arc_counts(n)
    t_outer, t_inner = np.linspace(0, math.pi, n_outer), np.linspace(0, math.pi, n_inner)
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = np.stack([1 - np.cos(t_inner), 1 - np.sin(t_inner) - 0.5], axis=1)
    return _two_arcs(outer, inner, noise, rng)


def _circles(n: int, noise: float, rng: np.random.RandomState,
             factor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    # radius 1 and ``factor``; t evenly spaced on [0, 2 pi), the end left out so no point repeats
    n_outer, n_inner = _arc_counts(n)
    t_outer = np.linspace(0, 2 * math.pi, n_outer, endpoint=False)
    t_inner = np.linspace(0, 2 * math.pi, n_inner, endpoint=False)
    outer = np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1)
    inner = factor * np.stack([np.cos(t_inner), np.sin(t_inner)], axis=1)
    return _two_arcs(outer, inner, noise, rng)


def _eight_gaussians(n: int, noise: float, rng: np.random.RandomState) -> np.ndarray:
    angles = np.arange(8) * (math.pi / 4)
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = centres[rng.randint(0, 8, size=n)] + noise * rng.randn(n, 2)
    return points / math.sqrt(2)


def _checkerboard(n: int, noise: float, rng: np.random.RandomState) -> np.ndarray:
    x1 = rng.rand(n) * 4 - 2
    # x2 uniform on [0, 1) or [-2, -1), shifted up by one on odd columns: the dark squares
    x2 = rng.rand(n) - 2 * rng.randint(0, 2, size=n) + np.floor(x1) % 2
    return 2 * np.stack([x1, x2], axis=1) + noise * rng.randn(n, 2)


def _two_spirals(n: int, noise: float, rng: np.random.RandomState) -> np.ndarray:
    half = n // 2
    arm = np.concatenate([np.ones(half), -np.ones(n - half)])[:, None]  # +1: first arm, -1: second
    turn = np.sqrt(rng.rand(n, 1)) * 3 * math.pi  # 540 degrees, denser near the centre
    points = np.hstack([-np.cos(turn) * turn, np.sin(turn) * turn]) + rng.rand(n, 2) * 0.5
    return arm * points / 3 + noise * rng.randn(n, 2)


def moons(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.05,
          seed: int = 0) -> FlowDataset:
    """Two interleaving half circles (scikit-learn's make_moons), 2-D; SNF's toy density.

    Upper moon ``(cos t, sin t)``, lower moon ``(1 - cos t, 1/2 - sin t)``, t evenly spaced on
    [0, pi]; ``n // 2`` points on the upper moon and the rest on the lower; shuffled, plus
    Gaussian noise of std ``noise``. Points lie in about [-1, 2] x [-0.5, 1]. SNF's
    ``toydensity`` experiment trains on ``make_moons(5000, noise=0.05)``, the defaults here.
    Splits: three independent draws of ``n_train``, ``n_val`` and ``n_test`` points (see the
    module docstring).
    """
    return draw_splits("moons", _moons, (n_train, n_val, n_test), noise, seed, classes=("upper", "lower"))


def circles(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.05,
            seed: int = 0) -> FlowDataset:
    """Two concentric circles of radius 1 and 0.5 (scikit-learn's make_circles, factor 0.5), 2-D.

    ``n // 2`` points on the outer circle and the rest on the inner, evenly spaced in angle;
    shuffled, plus Gaussian noise of std ``noise``. Splits: three independent draws of ``n_train``, ``n_val``
    and ``n_test`` points.
    """
    return draw_splits("circles", _circles, (n_train, n_val, n_test), noise, seed, classes=("outer", "inner"))


def eight_gaussians(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.5,
                    seed: int = 0) -> FlowDataset:
    """A mixture of 8 equal Gaussians on a circle of radius 2*sqrt(2) (FFJORD, BNAF), 2-D.

    ``x = (4 (cos a_k, sin a_k) + noise * e) / sqrt(2)``, ``a_k = k pi/4``, k uniform in 0..7,
    e ~ N(0, I): each component has std ``noise / sqrt(2)`` (0.354 by default). Splits: three
    independent draws of ``n_train``, ``n_val`` and ``n_test`` points.
    """
    return draw_splits("eight_gaussians", _eight_gaussians, (n_train, n_val, n_test), noise, seed)


def checkerboard(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.0,
                 seed: int = 0) -> FlowDataset:
    """Uniform on the 8 dark squares of a 4x4 checkerboard covering [-4, 4]^2 (FFJORD, BNAF), 2-D.

    Each square is 2x2; ``noise`` > 0 adds Gaussian noise of that std (0: the exact FFJORD
    density). Splits: three independent draws of ``n_train``, ``n_val`` and ``n_test`` points.
    """
    return draw_splits("checkerboard", _checkerboard, (n_train, n_val, n_test), noise, seed)


def two_spirals(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.1,
                seed: int = 0) -> FlowDataset:
    """Two interleaved spiral arms of 1.5 turns, point-symmetric about 0 (FFJORD, BNAF), 2-D.

    Arm 1: ``(-t cos t, t sin t) + U[0, 0.5)^2``, with ``t = sqrt(u) 3 pi``, u ~ U[0, 1); arm 2
    its negation; both divided by 3, plus Gaussian noise of std ``noise``: points lie in about
    [-3.5, 3.5]^2. Half the points are on each arm. Splits: three independent draws of
    ``n_train``, ``n_val`` and ``n_test`` points.
    """
    return draw_splits("two_spirals", _two_spirals, (n_train, n_val, n_test), noise, seed)


def gaussian(dim: int = 1024, n_train: int = 50000, n_val: int = 1000, n_test: int = 1000,
             seed: int = 0) -> FlowDataset:
    """Standard normal data N(0, I) of any dimension; SNF's time-scaling experiment.

    SNF (arXiv 2011.07248, Figure 3) times one layer on D-dimensional N(0, I) data, D = 32..4064,
    50,000 training points. Items have shape ``(dim,)``. Splits: three independent draws of
    ``n_train``, ``n_val`` and ``n_test`` points.
    """
    if dim < 1:
        raise RecipeError(f"dataset 'gaussian': dim must be at least 1, got {dim}")
    return draw_splits("gaussian", lambda n, _, rng: rng.randn(n, dim), (n_train, n_val, n_test),
                       0.0, seed, shape=(dim,))


def inverse_kinematics(n_train: int = 10000, n_val: int = 1000, n_test: int = 1000,
                       seed: int = 0) -> FlowDataset:
    """The planar arm of Ardizzone et al. 2019 (arXiv 1808.04730): 4 parameters, 2-D end point.

    x = (rail height, three joint angles) from the prior N(0, diag(1/4, 1/2, 1/2, 1/2)^2); the
    observed end point y is the forward model of ``zoo.inverse`` (segments 1/2, 1/2, 1). Items
    are ``(x, y)``: an inverse-problem recipe learns p(x | y) (``context: {type: observed}``).
    Splits: three independent seeded draws.
    """
    from zoo.inverse import arm_end_point, arm_joints, sample_arm

    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        if n < 1:
            raise RecipeError(f"dataset 'inverse_kinematics': n_{split} must be at least 1, got {n}")
    splits = []
    for k, n in enumerate((n_train, n_val, n_test)):
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        x = sample_arm(n, generator)
        splits.append(tensor_split(x.float(), arm_end_point(x).float()))
    return FlowDataset(*splits, shape=(4,), n_bits=None, observed=(2,),
                       info={"seed": seed, "forward_model": arm_end_point, "draw": arm_joints})


def _with_limits(factory, **limits):
    """Attach a params schema derived from the signature, with bounds, and a cheap data_shape."""
    schema = params_schema_of(factory, "datasets")
    for name, bounds in limits.items():
        schema["properties"][name].update(bounds)
    factory.params_schema = schema
    return factory


SIZE_LIMITS = {f"n_{split}": {"minimum": 1} for split in SPLITS}
TOY_2D = (moons, circles, eight_gaussians, checkerboard, two_spirals)
for _factory in TOY_2D:
    _with_limits(_factory, noise={"minimum": 0}, **SIZE_LIMITS)
    _factory.data_shape = lambda **params: ((2,), None)
_with_limits(gaussian, dim={"minimum": 1}, **SIZE_LIMITS)
_with_limits(inverse_kinematics, **SIZE_LIMITS)
inverse_kinematics.data_shape = lambda **params: ((4,), None)
gaussian.data_shape = lambda dim=1024, **params: ((dim,), None)


@hookimpl
def zoo_datasets():
    return {factory.__name__: factory for factory in (*TOY_2D, gaussian, inverse_kinematics,
                                                      *ENERGY_TARGETS)} | {
        "rings": rings,
        "blobs": blobs,
    }


# --- the BNAF and torch-mnf toys (rings, blobs) ---------------------------------------------------


def _rings(n: int, noise: float, rng: np.random.RandomState) -> np.ndarray:
    # Four concentric circles of radius 3, 2.25, 1.5, 0.75 with points evenly spaced in angle,
    # a quarter of the points each (the outer ones take the remainder), shuffled.
    sizes = [n - 3 * (n // 4)] + [n // 4] * 3
    parts = []
    for radius, size in zip((3.0, 2.25, 1.5, 0.75), sizes):
        angle = np.linspace(0.0, 2 * math.pi, size, endpoint=False)
        parts.append(radius * np.stack([np.cos(angle), np.sin(angle)], axis=1))
    points = np.concatenate(parts)[rng.permutation(n)]
    return points + noise * rng.randn(n, 2)


def _blobs(n: int, noise: float, rng: np.random.RandomState) -> np.ndarray:
    from sklearn.datasets import make_blobs

    centres = [(3.0, 3.0), (0.0, 0.0), (-3.0, -3.0)]
    return make_blobs(n, centers=centres, cluster_std=noise, random_state=rng)[0]


def rings(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.08,
          seed: int = 0) -> FlowDataset:
    """Four concentric rings of radius 3, 2.25, 1.5 and 0.75 (BNAF's and FFJORD's ``rings``), 2-D.

    A quarter of the points on each ring, evenly spaced in angle, plus Gaussian noise of std
    ``noise`` (0.08 as in BNAF, arXiv 1904.04676). Splits: three independent draws of ``n_train``,
    ``n_val`` and ``n_test`` points.
    """
    return draw_splits("rings", _rings, (n_train, n_val, n_test), noise, seed)


def blobs(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, noise: float = 1.0,
          seed: int = 0) -> FlowDataset:
    """Three equal Gaussians at (3, 3), (0, 0) and (-3, -3) (torch-mnf's ``sample_blobs``), 2-D.

    scikit-learn ``make_blobs`` with these centres; ``noise`` is each Gaussian's std (1, as the
    seed). Splits: three independent draws of ``n_train``, ``n_val`` and ``n_test`` points.
    """
    return draw_splits("blobs", _blobs, (n_train, n_val, n_test), noise, seed)


for _factory in (rings, blobs):
    _with_limits(_factory, noise={"minimum": 0}, **SIZE_LIMITS)
    _factory.data_shape = lambda **params: ((2,), None)


# --- energy targets: Rezende & Mohamed's test energies (u1 .. u4) ----------------------------------
#
# Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015
# (https://arxiv.org/abs/1505.05770), Table 1; BNAF's density-matching experiment (arXiv
# 1904.04676, Figure 3) and the kamenbliznashki seed (``bnaf.py``, ``potential_fn``) use them. With
# w1(x) = sin(2 pi x1 / 4), w2(x) = 3 exp(-1/2 ((x1 - 1) / 0.6)^2), w3(x) = 3 sigmoid((x1 - 1) / 0.3):
#
#   U1(x) = 1/2 ((|x| - 2) / 0.4)^2 - log(exp(-1/2 ((x1 - 2) / 0.6)^2) + exp(-1/2 ((x1 + 2) / 0.6)^2))
#   U2(x) = 1/2 ((x2 - w1) / 0.4)^2
#   U3(x) = -log(exp(-1/2 ((x2 - w1) / 0.35)^2) + exp(-1/2 ((x2 - w1 + w2) / 0.35)^2))
#   U4(x) = -log(exp(-1/2 ((x2 - w1) / 0.4)^2) + exp(-1/2 ((x2 - w1 + w3) / 0.35)^2))
#
# The log-sums are log-sum-exps (the seed adds 1e-10 inside the log instead, which caps U where both
# terms vanish, far outside the plotted square). U2 .. U4 do not depend on x1 beyond the wave, so
# exp(-U) is not integrable over the plane (log Z is infinite): only U1 has a log Z, computed here.


def _w1(x1: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * x1 / 4)


def _w2(x1: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((x1 - 1) / 0.6) ** 2)


def _w3(x1: torch.Tensor) -> torch.Tensor:
    return 3 * torch.sigmoid((x1 - 1) / 0.3)


def _log_gauss(t: torch.Tensor, scale: float) -> torch.Tensor:
    return -0.5 * (t / scale) ** 2


def energy_u1(x: torch.Tensor) -> torch.Tensor:
    """A ring of radius 2 split into two arcs (Rezende & Mohamed 2015, Table 1, U1)."""
    x1 = x[:, 0]
    ring = 0.5 * ((torch.linalg.vector_norm(x, dim=1) - 2) / 0.4) ** 2
    return ring - torch.logaddexp(_log_gauss(x1 - 2, 0.6), _log_gauss(x1 + 2, 0.6))


def energy_u2(x: torch.Tensor) -> torch.Tensor:
    """A sine wave (Table 1, U2)."""
    return 0.5 * ((x[:, 1] - _w1(x[:, 0])) / 0.4) ** 2


def energy_u3(x: torch.Tensor) -> torch.Tensor:
    """A sine wave and a bump that splits off it (Table 1, U3)."""
    wave = x[:, 1] - _w1(x[:, 0])
    return -torch.logaddexp(_log_gauss(wave, 0.35), _log_gauss(wave + _w2(x[:, 0]), 0.35))


def energy_u4(x: torch.Tensor) -> torch.Tensor:
    """A sine wave and a step copy of it (Table 1, U4)."""
    wave = x[:, 1] - _w1(x[:, 0])
    return -torch.logaddexp(_log_gauss(wave, 0.4), _log_gauss(wave + _w3(x[:, 0]), 0.35))


@functools.lru_cache(maxsize=None)
def log_normalizer_u1(radius: float = 6.0, n_r: int = 1200, n_theta: int = 720) -> float:
    """log Z = log of the integral of exp(-U1) over the plane, by quadrature in polar coordinates:
    trapezoids in r on [0, radius] (exp(-U1) < e^-50 beyond 6) and a periodic rule in theta."""
    r = torch.linspace(0.0, radius, n_r + 1, dtype=torch.float64)
    theta = torch.arange(n_theta, dtype=torch.float64) * (2 * math.pi / n_theta)
    rr, tt = torch.meshgrid(r, theta, indexing="ij")
    points = torch.stack([rr * torch.cos(tt), rr * torch.sin(tt)], dim=-1).reshape(-1, 2)
    integrand = torch.exp(-energy_u1(points)).reshape(rr.shape) * rr
    over_theta = integrand.sum(1) * (2 * math.pi / n_theta)
    return float(torch.log(torch.trapezoid(over_theta, r)))


def _energy_target(name: str, potential, log_z: float | None, n_train: int, n_val: int, n_test: int,
                   seed: int) -> EnergyTarget:
    sizes = (n_train, n_val, n_test)
    for split, n in zip(SPLITS, sizes):
        if n < 1:
            raise RecipeError(f"dataset {name!r}: n_{split} must be at least 1, got {n}")
    train, val, test = placeholder_splits(sizes, (2,), seed)
    return EnergyTarget(train, val, test, shape=(2,), n_bits=None, potential=potential,
                        log_normalizer=log_z, bound=4.0,
                        info={"seed": seed, "sizes": dict(zip(SPLITS, sizes)), "energy": name})


def u1(n_train: int = 20000, n_val: int = 2000, n_test: int = 10000, seed: int = 0) -> EnergyTarget:
    """Energy target U1 of Rezende & Mohamed (2015, Table 1): a ring of radius 2 in two arcs, 2-D.

    No data: fit it with ``loss: reverse_kl``. ``n_train`` samples are drawn from the model per
    epoch (``n_train / batch_size`` steps), ``n_val`` and ``n_test`` for the KL estimates.
    ``log Z`` is finite and computed by quadrature, so runs report KL(q || p) itself.
    """
    return _energy_target("u1", energy_u1, log_normalizer_u1(), n_train, n_val, n_test, seed)


def u2(n_train: int = 20000, n_val: int = 2000, n_test: int = 10000, seed: int = 0) -> EnergyTarget:
    """Energy target U2 of Rezende & Mohamed (2015, Table 1): a sine wave, 2-D.

    No data: fit it with ``loss: reverse_kl``; samples per epoch and for the estimates as ``u1``.
    exp(-U2) is not integrable over the plane (flat along x1), so there is no log Z: runs report
    the free energy E_q[log q + U] only.
    """
    return _energy_target("u2", energy_u2, None, n_train, n_val, n_test, seed)


def u3(n_train: int = 20000, n_val: int = 2000, n_test: int = 10000, seed: int = 0) -> EnergyTarget:
    """Energy target U3 of Rezende & Mohamed (2015, Table 1): a sine wave and a bump splitting off, 2-D.

    No data: fit it with ``loss: reverse_kl``; as ``u2``, no log Z (not integrable over the plane).
    """
    return _energy_target("u3", energy_u3, None, n_train, n_val, n_test, seed)


def u4(n_train: int = 20000, n_val: int = 2000, n_test: int = 10000, seed: int = 0) -> EnergyTarget:
    """Energy target U4 of Rezende & Mohamed (2015, Table 1): a sine wave and a step copy of it, 2-D.

    No data: fit it with ``loss: reverse_kl``; as ``u2``, no log Z (not integrable over the plane).
    """
    return _energy_target("u4", energy_u4, None, n_train, n_val, n_test, seed)


ENERGY_TARGETS = (u1, u2, u3, u4)
for _factory in ENERGY_TARGETS:
    _with_limits(_factory, **SIZE_LIMITS)
    _factory.data_shape = lambda **params: ((2,), None)
    _factory.energy_target = True  # what assembly names when a loss needs one
