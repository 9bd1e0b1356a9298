"""The seeds' other flows: MAF, IAF, neural spline flows, RealNVP halves, LU linear, BNAF.

- torch-mnf's regression bounds (its tests/test_flows.py): 128 moons points, Adam with its
  default learning rate, 1 + 70 steps, loss = the SUM of -log p over the 128 points;
- autoregressive structure: the float64 Jacobian is triangular in the layer's ordering;
- BNAF's bisection inverse is exact to 1e-6 far in the tails;
- bad parameters and shapes are ZooErrors that say the fix.
"""

import pytest
import torch
from sklearn.datasets import make_moons

from zoo.errors import RecipeError, ShapeError
from zoo.flow import FlowModel
from zoo.plugins.activations import SplineActivation
from zoo.plugins.layers_autoregressive import (
    IAF, MAF, AffineHalf, LULinear, NSFAutoregressive, NSFCoupling,
)
from zoo.plugins.layers_basic import Reverse
from zoo.plugins.layers_bnaf import BNAF
from zoo.plugins.layers_glow import ActNorm

S = (2,)


def nsf_ar():  # torch-mnf's NSF_AR(dim=2, K=8, B=3, n_h=16)
    return NSFAutoregressive(S, n_bins=8, tail_bound=3.0, hidden=16, conditioner="per_dimension")


def nsf_cl():  # torch-mnf's NSF_CL(dim=2, K=8, B=3, n_h=16)
    return NSFCoupling(S, n_bins=8, tail_bound=3.0, hidden=16)


def with_actnorm(make, n=2):
    return [layer for _ in range(n) for layer in (ActNorm(S), make())]


# torch-mnf's flows x2 (its MAF/IAF parity flips the output of every second layer: a reverse).
REGRESSION = {
    "affine_half": (lambda: [AffineHalf(S), AffineHalf(S, parity=True)], 236),
    "maf": (lambda: [MAF(S), MAF(S), Reverse(S)], 250),
    "maf_actnorm": (lambda: [ActNorm(S), MAF(S), ActNorm(S), MAF(S), Reverse(S)], 226),
    "iaf": (lambda: [IAF(S), IAF(S), Reverse(S)], 300),
    "lu_linear": (lambda: [LULinear(S), LULinear(S)], 308),
    "lu_linear_actnorm": (lambda: with_actnorm(lambda: LULinear(S)), 246),
    "nsf_coupling": (lambda: [nsf_cl(), nsf_cl()], 207),
    "nsf_coupling_actnorm": (lambda: with_actnorm(nsf_cl), 184),
    "nsf_autoregressive": (lambda: [nsf_ar(), nsf_ar()], 318),
    "nsf_autoregressive_actnorm": (lambda: with_actnorm(nsf_ar), 213),
}


@pytest.fixture(scope="module")
def moons128():
    return torch.as_tensor(make_moons(128, noise=0.05, random_state=0)[0]).float()


@pytest.mark.parametrize("name", REGRESSION)
def test_torch_mnf_moons_regression_bound(name, moons128):
    make, bound = REGRESSION[name]
    torch.manual_seed(0)
    model = FlowModel(make(), S)
    adam = torch.optim.Adam(model.parameters())
    losses = []
    for _ in range(71):
        loss = -model.log_prob(moons128).sum()
        adam.zero_grad()
        loss.backward()
        adam.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert losses[-1] < bound, f"{name}: summed NLL {losses[-1]:.1f} >= torch-mnf's bound {bound}"


# --- autoregressive structure ------------------------------------------------------------------


def jacobian(layer, x):
    return torch.autograd.functional.jacobian(lambda v: layer(v[None])[0][0], x)


AUTOREGRESSIVE = {
    "maf_random": lambda: MAF((5,), hidden=16, ordering="random", seed=3),
    "maf_reversed": lambda: MAF((4,), hidden=8, ordering="reversed"),
    "iaf_random": lambda: IAF((5,), hidden=16, ordering="random", seed=4),
    "nsf_made_random": lambda: NSFAutoregressive((5,), hidden=16, ordering="random", seed=5,
                                                 tail_bound=1.0),
    "nsf_per_dimension_random": lambda: NSFAutoregressive(
        (4,), hidden=8, conditioner="per_dimension", ordering="random", seed=6, tail_bound=1.0),
    "maf_residual": lambda: MAF((4,), hidden=8, depth=1, residual_blocks=2, ordering="random", seed=7),
    "bnaf": lambda: BNAF((4,), hidden=12, n_hidden=2),
}


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_jacobian_is_triangular_in_the_ordering(name):
    torch.manual_seed(0)
    layer = AUTOREGRESSIVE[name]().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    degrees = getattr(getattr(layer, "made", None), "degrees", None)
    if degrees is None and hasattr(layer, "per_dimension") and layer.per_dimension is not None:
        degrees = torch.argsort(layer.per_dimension.order)
    if degrees is None:
        degrees = torch.arange(layer.out_shape[0])  # bnaf: the natural order
    x = torch.randn(layer.out_shape[0], dtype=torch.float64)
    jac = jacobian(layer, x)
    order = torch.argsort(degrees)  # features in autoregressive order
    permuted = jac[order][:, order]
    upper = torch.triu(permuted, diagonal=1)
    assert upper.abs().max() == 0, f"{name}: output depends on later features:\n{permuted}"
    assert (permuted.diagonal() != 0).all()
    below = torch.tril(permuted, diagonal=-1)
    assert below.abs().max() > 0, "no dependence on earlier features: the conditioner is dead"


def test_random_orderings_are_seeded():
    a = MAF((6,), ordering="random", seed=11).made.degrees
    b = MAF((6,), ordering="random", seed=11).made.degrees
    c = MAF((6,), ordering="random", seed=12).made.degrees
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.tolist()) == list(range(6))


def test_ordering_is_saved_with_the_weights():
    trained = MAF((5,), ordering="random", seed=1)
    fresh = MAF((5,), ordering="random", seed=2)
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(4, 5)
    assert torch.allclose(fresh(x)[0], trained(x)[0])


# --- inverses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("residual,scale", [("none", 8.0), ("gated", 1000.0)])
def test_bnaf_bisection_inverse_far_in_the_tails(residual, scale):
    torch.manual_seed(0)
    layer = BNAF((3,), hidden=12, n_hidden=1, residual=residual).double()
    x = torch.tensor([[scale, -scale, 0.5], [-scale, scale, scale], [0.1, -0.2, -scale]],
                     dtype=torch.float64)
    z, _ = layer(x)
    assert torch.allclose(layer.inverse(z), x, atol=1e-6, rtol=0)


def test_nsf_round_trip_across_the_tails():
    torch.manual_seed(0)
    for layer in (NSFAutoregressive((3,), tail_bound=2.0, hidden=8), NSFCoupling((3,), tail_bound=2.0)):
        layer = layer.double()
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.5 * torch.randn_like(p))
        x = torch.linspace(-6, 6, 30, dtype=torch.float64).reshape(10, 3)
        z, logdet = layer(x)
        assert torch.isfinite(logdet).all()
        assert torch.allclose(layer.inverse(z), x, atol=1e-9)


def test_lu_linear_matches_its_dense_weight():
    torch.manual_seed(0)
    layer = LULinear((4,)).double()
    w = layer.weight_matrix()
    x = torch.randn(3, 4, dtype=torch.float64)
    z, logdet = layer(x)
    assert torch.allclose(z, x @ w.T)
    assert torch.allclose(logdet, torch.linalg.slogdet(w)[1].expand(3))
    assert sum(p.numel() for p in LULinear((2,)).parameters()) == 10  # torch-mnf's Glow(2)


def test_spline_activation_with_one_bin():
    layer = SplineActivation((3,), n_bins=1, tail_bound=2.0).double()
    x = torch.tensor([[-3.0, 0.5, 1.9], [2.5, -1.0, 0.0]], dtype=torch.float64)
    y, logdet = layer(x)
    assert torch.allclose(layer.inverse(y), x)
    assert torch.isfinite(logdet).all()


# --- bad input -----------------------------------------------------------------------------------


def test_bnaf_hidden_must_be_a_multiple_of_the_dimension():
    with pytest.raises(ShapeError, match="multiple of the dimension D = 3.*hidden: 9"):
        BNAF((3,), hidden=10)


@pytest.mark.parametrize("factory", [NSFAutoregressive, NSFCoupling])
@pytest.mark.parametrize("bound", [0.0, -1.0])
def test_nsf_tail_bound_must_be_positive(factory, bound):
    with pytest.raises(RecipeError, match="tail_bound must be > 0"):
        factory((2,), tail_bound=bound)


@pytest.mark.parametrize("factory", [MAF, IAF, NSFAutoregressive, NSFCoupling, AffineHalf, LULinear, BNAF])
def test_vector_layers_refuse_images_and_say_flatten(factory):
    with pytest.raises(ShapeError, match=r"vectors \(D,\).*flatten"):
        factory((1, 4, 4))


def test_unknown_ordering_and_conditioner():
    with pytest.raises(RecipeError, match="ordering must be one of natural, reversed, random"):
        MAF((3,), ordering="sideways")
    with pytest.raises(RecipeError, match="conditioner must be 'made' or 'per_dimension'"):
        NSFAutoregressive((3,), conditioner="rnn")


# --- the seeds' toy data -------------------------------------------------------------------------


def test_rings_are_four_noisy_circles():
    from zoo.plugins.datasets_toy import rings

    points = rings(n_train=4000, noise=0.0).train.tensors[0]
    radii = points.norm(dim=1)
    for radius in (3.0, 2.25, 1.5, 0.75):
        assert ((radii - radius).abs() < 1e-5).sum() == 1000
    noisy = rings(n_train=4000).train.tensors[0].norm(dim=1)
    radial = (noisy[:, None] - torch.tensor([3.0, 2.25, 1.5, 0.75])).abs().min(1).values
    assert 0.05 < radial.square().mean().sqrt() < 0.09  # 2-D noise of std 0.08, seen radially


def test_blobs_are_three_gaussians_on_the_diagonal():
    from zoo.plugins.datasets_toy import blobs

    points = blobs(n_train=6000).train.tensors[0]
    nearest = torch.cdist(points, torch.tensor([[3.0, 3.0], [0.0, 0.0], [-3.0, -3.0]])).argmin(1)
    counts = torch.bincount(nearest, minlength=3)
    assert (counts > 1700).all(), counts
    assert points.mean(0).abs().max() < 0.15


# --- the seeds' recipes ----------------------------------------------------------------------------


@pytest.mark.parametrize("name,count", [
    ("affine_half_moons", 22914), ("maf_moons", 12348), ("iaf_moons", 12348),
    ("nsf_ar_moons", 3012), ("nsf_cl_moons", 5844),
])
def test_recipes_have_torch_mnf_parameter_counts(name, count):
    from pathlib import Path

    import zoo

    recipe = zoo.load_recipe(Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml")
    model = zoo.build_model(recipe)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize(
    "dataset, layer, wanted",
    [
        ("blobs", {"name": "bnaf", "hidden": 9}, r"\$\.model\.layers\[0\] \(layer 0, 'bnaf'\) cannot take input shape \(2,\).*multiple"),
        ("blobs", {"name": "nsf_coupling", "tail_bound": 0.0}, r"\$\.model\.layers\[0\]\.tail_bound: 0\.0 is less than or equal to the minimum"),
        ("digits", {"name": "maf"}, r"\$\.model\.layers\[0\] \(layer 0, 'maf'\) cannot take input shape \(1, 8, 8\).*flatten"),
    ],
)
def test_the_cli_names_the_recipe_and_the_layer_of_a_refused_layer(tmp_path, capsys, dataset, layer, wanted):
    import re

    import yaml

    from zoo.cli import main

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"name": "bad", "dataset": dataset, "model": {"layers": [layer]}}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and re.search(wanted, err), err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
