"""Element-wise activations: Newton inverses at extreme inputs, the spline's tails, knots,
monotonicity and continuity, the learnable leaky ReLU's slope, SELU's range, parameter checks.
(The generic contract checks run from test_layer_contract.py.)"""

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import RecipeError, ShapeError, ZooError
from zoo.plugins import _spline
from zoo.plugins.activations import (
    SELU,
    ActivationRangeError,
    LeakyReLU,
    LearnableLeakyReLU,
    SmoothLeakyReLU,
    SmoothTanh,
    SplineActivation,
)

F64 = torch.float64


def extreme_inputs(dtype=F64) -> torch.Tensor:
    """0, +-1e-3 ... +-1e3 on a log grid, and some normal draws: a (batch, 2, 3) tensor."""
    grid = torch.logspace(-3, 3, 61, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(55, generator=g, dtype=dtype)
    values = torch.cat([grid, -grid, torch.zeros(1, dtype=dtype), draws])
    return values[: 6 * (values.numel() // 6)].reshape(-1, 2, 3)


NEWTON_LAYERS = [
    pytest.param(lambda: SmoothLeakyReLU((2, 3)), id="slr-0.3"),
    pytest.param(lambda: SmoothLeakyReLU((2, 3), alpha=0.01), id="slr-0.01"),
    pytest.param(lambda: SmoothTanh((2, 3)), id="tanh-1-0.1"),
    pytest.param(lambda: SmoothTanh((2, 3), alpha=5.0, beta=0.01), id="tanh-5-0.01"),
    pytest.param(lambda: SmoothTanh((2, 3), alpha=-0.05, beta=0.1), id="tanh-negative-alpha"),
]


@pytest.mark.parametrize("make", NEWTON_LAYERS)
def test_newton_inverse_is_exact_to_float64_at_extreme_inputs(make):
    layer = make()
    x = extreme_inputs()
    y, _ = layer(x)
    x_back = layer.inverse(y)
    relative = ((x_back - x).abs() / (1 + x.abs())).max().item()
    assert relative < 1e-14
    # and the other way round, from outputs spread over the whole range
    y = extreme_inputs()
    y_back, _ = layer(layer.inverse(y))
    assert ((y_back - y).abs() / (1 + y.abs())).max().item() < 1e-14


@pytest.mark.parametrize("make", NEWTON_LAYERS)
def test_newton_inverse_in_float32_is_finite_and_accurate(make):
    layer = make()
    x = extreme_inputs(torch.float32)
    y, logdet = layer(x)
    x_back = layer.inverse(y)
    assert torch.isfinite(x_back).all() and torch.isfinite(logdet).all()
    assert ((x_back - x).abs() / (1 + x.abs())).max().item() < 1e-5


@pytest.mark.parametrize("make", NEWTON_LAYERS)
def test_newton_inverse_gradient_is_one_over_the_slope(make):
    layer = make()
    y = torch.linspace(-5, 5, 12, dtype=F64).reshape(2, 2, 3).requires_grad_(True)
    x = layer.inverse(y)
    (grad,) = torch.autograd.grad(x.sum(), y)
    assert torch.allclose(grad, 1 / layer._f_prime(x.detach()), rtol=1e-12)


def test_smooth_leaky_relu_formula_and_logdet():
    layer = SmoothLeakyReLU((4,), alpha=0.3)
    x = torch.tensor([[-800.0, -1.0, 0.0, 900.0]], dtype=F64)
    y, logdet = layer(x)
    expected = 0.3 * x + 0.7 * torch.log1p(torch.exp(-x.abs())) + 0.7 * x.clamp(min=0)
    assert torch.allclose(y, expected, rtol=1e-15)
    assert y[0, -1].item() == 900.0 and y[0, 0].item() == 0.3 * -800.0
    slope = 0.3 + 0.7 * torch.sigmoid(x)
    assert torch.allclose(logdet, slope.log().sum(1), rtol=1e-14)


def test_smooth_tanh_does_not_overflow_for_huge_inputs():
    layer = SmoothTanh((2,), alpha=1.0, beta=0.1)
    x = torch.tensor([[-1e3, 1e3]], dtype=F64)
    y, logdet = layer(x)
    assert torch.isfinite(logdet).all()
    assert logdet.item() == pytest.approx(2 * math.log(0.1))
    assert torch.allclose(layer.inverse(y), x, rtol=1e-15)


# --- spline --------------------------------------------------------------------------------------


def random_spline(shape=(3,), n_bins=5, tail_bound=2.0, scale=1.0, seed=0, per_element=True):
    """A spline with clearly non-trivial (seeded, random) bins and slopes, in float64."""
    torch.manual_seed(seed)
    layer = SplineActivation(shape, n_bins=n_bins, tail_bound=tail_bound, per_element=per_element)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, scale)
    return layer


def test_spline_identity_outside_the_tails_and_in_all_tail_batches():
    layer = random_spline(tail_bound=2.0)
    x = torch.tensor([[-1e3, -2.5, 7.0], [3.0, -2.0000001, 2.5]], dtype=F64)  # all in the tails
    x.requires_grad_(True)
    y, logdet = layer(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2, dtype=F64))
    (-(y.square().sum()) + logdet.sum()).backward()
    assert torch.isfinite(x.grad).all()
    for p in layer.parameters():  # the spline is unused: zero, not NaN, gradients
        assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p))
    assert torch.equal(layer.inverse(x.detach()), x.detach())


def test_spline_batches_entirely_inside_and_mixed():
    layer = random_spline(tail_bound=2.0)
    inside = torch.tensor([[-1.9, 0.0, 1.2], [0.5, -0.3, 1.99]], dtype=F64)
    mixed = torch.tensor([[-5.0, 0.0, 1.2], [0.5, 9.0, -1.99]], dtype=F64)
    for x in (inside, mixed):
        y, logdet = layer(x)
        assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
        assert torch.allclose(layer.inverse(y), x, atol=1e-13)


def test_spline_at_the_knots_and_the_bounds():
    layer = random_spline(tail_bound=2.0)
    xs, ys, ds = (t.detach() for t in layer.spline_knots())
    x = xs.T.contiguous()  # (n_bins + 1, 3): every knot of every element, incl. -B and B exactly
    y, _ = layer(x)
    assert torch.allclose(y, ys.T, atol=1e-14)
    assert torch.allclose(layer.inverse(ys.T.contiguous()), x, atol=1e-13)
    # The slope at each knot is the knot derivative (1 at -B and B, matching the tails).
    per_element_logd = _spline.rq_spline_forward(x, xs, ys, ds, 2.0)[1]
    assert torch.allclose(per_element_logd, ds.T.log(), atol=1e-12)
    assert torch.allclose(ds[:, [0, -1]], torch.ones(3, 2, dtype=F64))


def test_spline_is_continuous_with_continuous_slope_at_every_knot():
    layer = random_spline(tail_bound=2.0)
    xs, ys, ds = (t.detach() for t in layer.spline_knots())
    h = 1e-9
    for side in (-h, h):
        y, _ = layer(xs.T + side)
        _, logd = _spline.rq_spline_forward(xs.T + side, xs, ys, ds, 2.0)
        assert torch.allclose(y, ys.T, atol=1e-7)
        assert torch.allclose(logd.exp(), ds.T, rtol=1e-5)


def test_spline_is_strictly_increasing_with_positive_slope():
    layer = random_spline(shape=(4,), n_bins=8, tail_bound=3.0, scale=2.0)
    x = torch.linspace(-4, 4, 20001, dtype=F64)[:, None].expand(-1, 4)
    y, _ = layer(x)
    _, logd = _spline.rq_spline_forward(x, *(t.detach() for t in layer.spline_knots()), 3.0)
    assert (y[1:] > y[:-1]).all()
    assert torch.isfinite(logd).all()


def test_spline_inverse_to_float64_precision_everywhere():
    layer = random_spline(shape=(5,), n_bins=6, tail_bound=3.0, scale=0.5)
    x = torch.linspace(-4, 4, 4001, dtype=F64)[:, None].expand(-1, 5)
    y, _ = layer(x)
    assert (layer.inverse(y) - x).abs().max().item() < 1e-13
    assert (layer(layer.inverse(x))[0] - x).abs().max().item() < 1e-13


def test_spline_logdet_is_the_sum_of_log_slopes():
    layer = random_spline(shape=(2, 3), tail_bound=2.0)
    x = torch.randn(4, 2, 3, dtype=F64).requires_grad_(True)
    y, logdet = layer(x)
    (slopes,) = torch.autograd.grad(y.sum(), x)  # element-wise map: d(sum y)/dx_i = f'(x_i)
    assert torch.allclose(logdet, slopes.log().flatten(1).sum(1), atol=1e-12)


def test_spline_starts_near_the_identity_with_one_spline_per_element():
    torch.manual_seed(0)
    layer = SplineActivation((2, 4, 4), n_bins=5, tail_bound=10.0).double()
    assert layer.unnormalized_widths.shape == (2, 4, 4, 5)
    assert layer.unnormalized_derivatives.shape == (2, 4, 4, 4)
    x = 3 * torch.randn(8, 2, 4, 4, dtype=F64)
    y, logdet = layer(x)
    assert (y - x).abs().max().item() < 0.2
    assert logdet.abs().max().item() < 0.5


def test_shared_spline_is_one_spline_for_every_element():
    layer = random_spline(shape=(3,), per_element=False)
    assert layer.unnormalized_heights.shape == (5,)
    x = torch.full((2, 3), 0.7, dtype=F64)
    y, _ = layer(x)
    assert torch.allclose(y, y[0, 0].expand(2, 3))
    y_other_shape, _ = layer(torch.full((1, 7), 0.7, dtype=F64))  # shared: any shape works
    assert torch.allclose(y_other_shape, y[0, 0].expand(1, 7))


def test_per_element_spline_refuses_another_shape():
    layer = SplineActivation((3,))
    with pytest.raises(ShapeError, match="per_element"):
        layer(torch.zeros(2, 4))


def test_spline_float32_gradients_are_finite_at_knots_and_tails():
    layer = SplineActivation((3,), n_bins=4, tail_bound=1.0)
    x = torch.tensor([[-1.0, 0.0, 1.0], [-3.0, 0.5, 3.0]]).requires_grad_(True)
    y, logdet = layer(x)
    (y.square().sum() - logdet.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


# --- leaky ReLUs, SELU ---------------------------------------------------------------------------


def test_leaky_relu_matches_torch_and_counts_negatives():
    layer = LeakyReLU((2, 3), negative_slope=0.2)
    x = torch.tensor([[[-1.0, 2.0, -3.0], [0.0, 5.0, -0.1]]], dtype=F64)
    y, logdet = layer(x)
    assert torch.equal(y, F.leaky_relu(x, 0.2))
    assert logdet.item() == pytest.approx(3 * math.log(0.2))
    assert torch.allclose(layer.inverse(y), x)


def test_learnable_leaky_relu_slope_parametrisation():
    layer = LearnableLeakyReLU((3,)).double()
    assert [p.numel() for p in layer.parameters()] == [1]  # one scalar, as in the seed
    assert layer.slope().item() == 1.0  # sigmoid(0) + 1/2: the identity at initialisation
    x = torch.tensor([[-2.0, -1.0, 4.0]], dtype=F64)
    assert torch.equal(layer(x)[0], x)
    for logit, slope in [(20.0, 1.5), (-20.0, 0.5), (math.log(3.0), 1.25)]:
        with torch.no_grad():
            layer.slope_logit.fill_(logit)
        assert layer.slope().item() == pytest.approx(slope, abs=1e-8)
        y, logdet = layer(x)
        assert torch.allclose(y, torch.tensor([[-2 * slope, -slope, 4.0]], dtype=F64), atol=1e-8)
        assert logdet.item() == pytest.approx(2 * math.log(slope), abs=1e-8)
        assert torch.allclose(layer.inverse(y), x)
    # The slope learns: the logdet pulls it up for negative inputs.
    with torch.no_grad():
        layer.slope_logit.zero_()
    layer(x)[1].sum().backward()
    assert layer.slope_logit.grad.item() == pytest.approx(2 * 0.25)  # 2 * sigmoid'(0) / slope


def test_selu_matches_torch_and_refuses_values_outside_its_range():
    layer = SELU((5,))
    x = torch.tensor([[-30.0, -1.0, -1e-3, 1e-3, 2.0]], dtype=F64).requires_grad_(True)
    y, logdet = layer(x)
    assert torch.allclose(y, torch.selu(x))
    # Away from 0, where SELU is differentiable, torch's slope is the same on every version.
    (torch_slopes,) = torch.autograd.grad(torch.selu(x).sum(), x)
    assert torch.allclose(logdet, torch_slopes.log().sum(1))
    (layer_slopes,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(layer_slopes, torch_slopes)
    assert torch.allclose(layer.inverse(y.detach()), x.detach(), atol=1e-12)
    with pytest.raises(ActivationRangeError, match="smooth_leaky_relu"):
        layer.inverse(torch.tensor([[-1.8, 0.0, 0.0, 0.0, 0.0]], dtype=F64))
    assert issubclass(ActivationRangeError, ZooError)


def test_selu_takes_the_right_hand_slope_at_zero():
    """SELU has no derivative at 0 (torch versions disagree there); the documented choice is the
    right-hand slope lambda, and autograd through the layer agrees with its logdet."""
    lam = 1.0507009873554804934193349852946  # Klambauer et al. 2017, eq. 14
    x = torch.zeros(1, 3, dtype=F64, requires_grad=True)
    y, logdet = SELU((3,))(x)
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.allclose(logdet, torch.tensor([3 * math.log(lam)], dtype=F64))
    (slopes,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(slopes, torch.full_like(slopes, lam))


def test_selu_gradient_is_finite_for_large_inputs():
    x = torch.tensor([[800.0, -800.0]]).requires_grad_(True)
    y, logdet = SELU((2,))(x)
    (y.sum() + logdet.sum()).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    "factory,params",
    [
        (SmoothLeakyReLU, {"alpha": 0.0}),
        (SmoothLeakyReLU, {"alpha": 1.5}),
        (SmoothTanh, {"beta": 0.0}),
        (SmoothTanh, {"alpha": -1.0, "beta": 0.5}),
        (LeakyReLU, {"negative_slope": 0.0}),
        (SplineActivation, {"n_bins": 0}),
        (SplineActivation, {"tail_bound": -1.0}),
    ],
)
def test_non_invertible_parameters_are_refused(factory, params):
    with pytest.raises(RecipeError):
        factory((3,), **params)


def test_registered_names(registry):
    for name in [
        "smooth_leaky_relu",
        "leaky_relu",
        "learnable_leaky_relu",
        "spline_activation",
        "selu",
        "smooth_tanh",
        "identity",
    ]:
        component = registry.get("layers", name)
        assert component.plugin == "activations" and component.summary
