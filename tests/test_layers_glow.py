"""The Glow-family layers beyond the contract checks.

The contract checks run on freshly built layers, where zero-initialised couplings and priors are
the identity (or a constant); here the parameters are perturbed first, so the inverse and the
log-determinant are checked on non-trivial maps too."""

import math

import pytest
import torch

from zoo.errors import ShapeError
from zoo.flow import standard_normal_log_prob
from zoo.plugins.layers_glow import (
    ActNorm,
    AffineCoupling,
    Conv1x1,
    Coupling,
    Split,
    SplitPrior,
)
from zoo.testing import check_inverse, check_logdet, check_shapes


def perturbed(layer: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """The layer in float64, eval mode, with noise added to every parameter."""
    torch.manual_seed(seed)
    layer = layer.double().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(scale * torch.randn_like(p))
    return layer


# --- actnorm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3,), (4, 5, 6)])
def test_actnorm_init_standardises_the_first_batch(shape):
    layer = ActNorm(shape).train()
    x = 3.0 + 2.5 * torch.randn(256, *shape)
    y, logdet = layer(x)
    per_channel = y.transpose(0, 1).reshape(shape[0], -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(shape[0]), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(shape[0]), atol=1e-4)
    assert bool(layer.initialized)
    positions = math.prod(shape[1:])
    assert torch.allclose(logdet, -positions * layer.log_scale.sum().expand(256))


def test_actnorm_is_not_reinitialised_after_load_state_dict():
    trained = ActNorm((2, 3, 3)).train()
    trained(torch.randn(16, 2, 3, 3) * 4 + 1)
    state = trained.state_dict()
    fresh = ActNorm((2, 3, 3))
    fresh.load_state_dict(state)
    fresh.train()
    fresh(torch.randn(16, 2, 3, 3) * 100 - 7)  # a training-mode forward must not re-init
    assert torch.equal(fresh.bias, trained.bias)
    assert torch.equal(fresh.log_scale, trained.log_scale)


def test_actnorm_single_value_per_channel_keeps_unit_scale():
    layer = ActNorm((4,)).train()
    y, _ = layer(torch.randn(1, 4))
    assert torch.allclose(y, torch.zeros(1, 4), atol=1e-6)
    assert torch.equal(layer.log_scale.detach(), torch.zeros(4))


# --- conv1x1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4,), (4, 3, 5)])
def test_lu_conv1x1_equals_its_dense_weight(shape):
    layer = perturbed(Conv1x1(shape, lu=True))
    w = layer.weight_matrix()
    # rebuild W from the factors by hand: P (L + I) (U + diag(sign exp(log_s)))
    c = shape[0]
    lower = torch.tril(layer.lower, -1) + torch.eye(c, dtype=w.dtype)
    upper = torch.triu(layer.upper, 1) + torch.diag(layer.sign_s * layer.log_s.exp())
    assert torch.allclose(w, layer.permutation @ lower @ upper)
    x = torch.randn(3, *shape, dtype=torch.float64)
    y, logdet = layer(x)
    assert torch.allclose(y, torch.einsum("ij,bj...->bi...", w, x))
    positions = math.prod(shape[1:])
    assert torch.allclose(logdet, positions * torch.linalg.slogdet(w)[1].expand(3))


def test_lu_conv1x1_starts_orthogonal_like_the_plain_one():
    torch.manual_seed(0)
    w = Conv1x1((5,), lu=True).weight_matrix().detach()
    assert torch.allclose(w @ w.T, torch.eye(5), atol=1e-5)


def test_conv1x1_state_holds_the_lu_buffers():
    state = Conv1x1((3, 2, 2), lu=True).state_dict()
    assert {"permutation", "sign_s", "lower", "upper", "log_s"} <= set(state)


# --- couplings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory,shape,params",
    [
        (AffineCoupling, (2,), {"hidden": 8}),
        (AffineCoupling, (4, 3, 3), {"hidden": 4}),
        (Coupling, (3, 2, 4), {"width": 4}),
    ],
)
def test_zero_init_couplings_start_as_the_identity(factory, shape, params):
    layer = factory(shape, **params)
    x = torch.randn(5, *shape)
    y, logdet = layer(x)
    assert torch.equal(y, x)
    assert torch.equal(logdet, torch.zeros(5))


def test_sigmoid_coupling_starts_as_glows_constant_scaling():
    layer = AffineCoupling((4,), hidden=8, scale_fn="sigmoid")
    x = torch.randn(5, 4)
    y, logdet = layer(x)
    s = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(y[:, 2:], x[:, 2:] * s)
    assert torch.allclose(logdet, 2 * torch.log(s).expand(5))


@pytest.mark.parametrize(
    "layer",
    [
        AffineCoupling((2,), hidden=8),
        AffineCoupling((5,), hidden=8, scale_fn="sigmoid"),
        AffineCoupling((3, 2, 4), hidden=4),
        Coupling((4, 4, 4), width=4),
        Split((5,)),
        Split((4, 2, 6)),
        SplitPrior((3,), width=6),
        SplitPrior((4, 4, 2), width=4),
    ],
    ids=lambda layer: f"{type(layer).__name__}{layer.out_shape}",
)
def test_perturbed_layers_pass_the_contract(layer):
    layer = perturbed(layer)
    shape = getattr(layer, "factored_shape", None)
    in_shape = (
        (layer.out_shape[0] + shape[0], *layer.out_shape[1:]) if shape else layer.out_shape
    )
    x = torch.randn(3, *in_shape, dtype=torch.float64)
    check_shapes(layer, x, in_shape)
    check_inverse(layer, x, atol=1e-9)
    check_logdet(layer, x, atol=1e-8)


def test_coupling_rejects_a_single_channel():
    with pytest.raises(ShapeError, match="at least 2"):
        Coupling((1, 4, 4), width=4)
    with pytest.raises(ShapeError, match=r"vector \(D,\) or an image"):
        AffineCoupling((2, 3))


# --- split -------------------------------------------------------------------------------------


def test_split_factor_and_unfactor_are_inverse_and_follow_glows_formula():
    layer = perturbed(Split((4, 3, 3)))
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    x1, z2, logdet_jacobian = layer.factor(x)
    assert x1.shape == (6, 2, 3, 3) and z2.shape == (6, 2, 3, 3)
    assert torch.allclose(layer.unfactor(x1, z2), x, atol=1e-12)

    # Glow: h = zero-init conv(x1), mean = h[:, 0::2], logs = h[:, 1::2], z2 = (x2 - mean) e^-logs
    h = layer.prior(x[:, :2])
    mean, logs = h[:, 0::2], h[:, 1::2]
    assert torch.allclose(z2, (x[:, 2:] - mean) * torch.exp(-logs))
    assert torch.allclose(logdet_jacobian, -logs.flatten(1).sum(1))
    # forward's logdet is the log-density of x2 under the learned prior N(mean, exp(logs)^2)
    _, logdet = layer(x)
    prior = torch.distributions.Normal(mean, torch.exp(logs))
    assert torch.allclose(logdet, prior.log_prob(x[:, 2:]).flatten(1).sum(1))
    assert torch.allclose(logdet, logdet_jacobian + standard_normal_log_prob(z2))


def test_split_starts_as_a_standard_normal_prior_and_samples_with_temperature():
    layer = Split((2, 4, 4))
    x = torch.randn(3, 2, 4, 4)
    x1, z2, logdet_jacobian = layer.factor(x)
    assert torch.equal(z2, x[:, 1:]) and torch.equal(logdet_jacobian, torch.zeros(3))
    layer.temperature = 0.0
    assert torch.equal(layer.inverse(x1), torch.cat([x1, torch.zeros_like(z2)], 1))


def test_split_prior_factors_the_coupled_half():
    layer = perturbed(SplitPrior((4, 2, 2), width=4))
    x = torch.randn(2, 4, 2, 2, dtype=torch.float64)
    x1, x2, logdet = layer.factor(x)
    coupled, coupling_logdet = layer.coupling(x)
    assert torch.equal(x1, x[:, :2])
    assert torch.equal(x2, coupled[:, 2:]) and torch.equal(logdet, coupling_logdet)
    assert layer.out_shape == (2, 2, 2) and layer.factored_shape == (2, 2, 2)


# --- a small multi-scale Glow ------------------------------------------------------------------


def test_small_multiscale_glow_is_an_exact_bijection():
    from zoo.flow import FlowModel
    from zoo.plugins.layers_basic import Squeeze

    layers = [
        Squeeze((1, 4, 4)),
        ActNorm((4, 2, 2)),
        Conv1x1((4, 2, 2), lu=True),
        AffineCoupling((4, 2, 2), hidden=4),
        Split((4, 2, 2)),
        Squeeze((2, 2, 2)),
        ActNorm((8, 1, 1)),
        Conv1x1((8, 1, 1)),
        Coupling((8, 1, 1), width=4),
        SplitPrior((8, 1, 1), width=4),
    ]
    model = FlowModel(layers, (1, 4, 4))
    model.initialize(torch.randn(32, 1, 4, 4))
    model = perturbed(model, scale=0.2)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    z, logdet = model(x)
    assert z.shape == (2, 16)
    assert torch.allclose(model.inverse(z), x, atol=1e-10)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: model(v)[0].reshape(-1), x[i : i + 1])
        brute = torch.linalg.slogdet(jac.reshape(16, 16))[1]
        assert torch.allclose(logdet[i], brute, atol=1e-8)
    assert model.sample(3, temperature=0.7).shape == (3, 1, 4, 4)
