"""The learned base distributions: log-densities against closed forms, sample shapes, temperature."""

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import zoo
from zoo.errors import RecipeError
from zoo.flow import standard_normal_log_prob
from zoo.plugins.bases import DiagonalNormal, GaussianMixture
from zoo.registry import get_registry


def perturbed(base, scale=0.5):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(scale * torch.randn_like(p))
    return base


def test_diagonal_normal_starts_as_the_standard_normal():
    base = DiagonalNormal((2, 3))
    z = torch.randn(5, 2, 3)
    assert torch.allclose(base.log_prob(z), standard_normal_log_prob(z))


def test_diagonal_normal_log_prob_is_the_closed_form():
    base = perturbed(DiagonalNormal((4,))).double()
    z = torch.randn(6, 4, dtype=torch.float64)
    expected = Normal(base.mean, torch.exp(base.log_std)).log_prob(z).sum(1)
    assert torch.allclose(base.log_prob(z), expected)


def test_gaussian_mixture_log_prob_is_the_closed_form():
    base = perturbed(GaussianMixture((3,), components=4)).double()
    z = torch.randn(7, 3, dtype=torch.float64)
    mixture = MixtureSameFamily(
        Categorical(logits=base.logits),
        Independent(Normal(base.means, torch.exp(base.log_stds)), 1),
    )
    assert torch.allclose(base.log_prob(z), mixture.log_prob(z))


def test_gaussian_mixture_of_one_component_is_a_diagonal_normal():
    mixture = perturbed(GaussianMixture((2, 2), components=1))
    diagonal = DiagonalNormal((2, 2))
    with torch.no_grad():
        diagonal.mean.copy_(mixture.means[0].reshape(2, 2))
        diagonal.log_std.copy_(mixture.log_stds[0].reshape(2, 2))
    z = torch.randn(5, 2, 2)
    assert torch.allclose(mixture.log_prob(z), diagonal.log_prob(z), atol=1e-5)


@pytest.mark.parametrize("base", [DiagonalNormal((2, 3)), GaussianMixture((2, 3), components=3)])
def test_sample_shape_dtype_and_temperature(base):
    base = perturbed(base)
    torch.manual_seed(0)
    z = base.sample((4000, 2, 3), dtype=torch.float64)
    assert z.shape == (4000, 2, 3) and z.dtype == torch.float64
    torch.manual_seed(0)
    cold = base.sample((4000, 2, 3), temperature=0.0)
    if isinstance(base, DiagonalNormal):
        assert torch.allclose(cold, base.mean.expand_as(cold))
        torch.manual_seed(0)
        one = base.sample((4000, 2, 3))
        torch.manual_seed(0)
        half = base.sample((4000, 2, 3), temperature=0.5)
        ratio = (half - base.mean).std(0) / (one - base.mean).std(0)
        assert torch.allclose(ratio, torch.full_like(ratio, 0.5), atol=1e-4)
    else:  # at temperature 0 every sample is one of the means
        means = base.means.reshape(-1, 2, 3)
        distance = (cold[:, None] - means[None]).flatten(2).abs().amax(-1).amin(-1)
        assert distance.max() < 1e-6


def test_gaussian_mixture_samples_follow_its_density():
    base = perturbed(GaussianMixture((1,), components=2), scale=2.0)
    torch.manual_seed(0)
    z = base.sample((20000, 1))
    grid = torch.linspace(-12, 12, 4001)[:, None]
    density = base.log_prob(grid).exp().detach()
    mean = (grid[:, 0] * density).sum() * (24 / 4000)
    assert math.isclose(z.mean().item(), mean.item(), abs_tol=0.05)


def test_components_must_be_positive():
    with pytest.raises(RecipeError, match="components must be >= 1"):
        GaussianMixture((2,), components=0)


def test_recipes_name_the_bases_and_train_their_parameters():
    assert {"diagonal_normal", "gaussian_mixture"} <= set(get_registry().names("bases"))
    recipe = {
        "name": "gm",
        "dataset": {"name": "moons", "n_train": 8, "n_val": 4, "n_test": 4},
        "model": {"base": {"name": "gaussian_mixture", "components": 3},
                  "layers": [{"name": "actnorm"}]},
        "loss": "nll",
        "train": {"epochs": 1, "lr": 1e-3},
    }
    model = zoo.build_model(recipe)
    assert isinstance(model.base, GaussianMixture) and model.base.means.shape == (3, 2)
    names = {name for name, _ in model.named_parameters()}
    assert {"base.logits", "base.means", "base.log_stds"} <= names
