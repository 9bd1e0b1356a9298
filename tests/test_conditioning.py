"""Conditional flows (zoo.conditioning) and the tasks beyond density (zoo.tasks): the layer
contract at a fixed context, p(x | y) as a density, bad contexts and recipes, and the
generative-classification and inverse-problem recipes end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import zoo
from test_hub import fakehub, hub_env  # noqa: F401  (fixtures)
from zoo import hub
from zoo.conditioning import ContextEncoder
from zoo.errors import ContextError, RecipeError
from zoo.plugins.layers_glow import AffineCoupling
from zoo.runs import load_folder
from zoo.testing import check_conditional_layer, check_layer

MOONS = {"name": "moons", "n_train": 256, "n_val": 64, "n_test": 64, "batch_size": 64}


def recipe(**changes):
    base = {
        "name": "tiny_cond_moons",
        "dataset": dict(MOONS),
        "context": {"type": "class"},
        "model": {"layers": [{"repeat": 2, "layers": [{"name": "actnorm"},
                                                      {"name": "affine_coupling", "hidden": 8},
                                                      {"name": "reverse"}]}]},
        "train": {"epochs": 1, "lr": 1e-3, "seed": 0},
    }
    base.update(changes)
    return zoo.load_recipe({k: v for k, v in base.items() if v is not None})


def perturbed(model, scale=0.3, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


# --- layers --------------------------------------------------------------------------------------


class IgnoresContext(AffineCoupling):
    """Says it takes a context, and ignores it: the contract must notice."""

    def __init__(self, shape, hidden=8, context_features=0):
        super().__init__(shape, hidden)  # a network without the context's inputs
        self.context_features = context_features

    def forward(self, x, context=None):
        return super().forward(x)

    def inverse(self, z, context=None):
        return super().inverse(z)


class WrongInverseGivenContext(AffineCoupling):
    """Right without a context, wrong with one: the contract must notice that too."""

    def inverse(self, z, context=None):
        return super().inverse(z, None if context is None else context * 0.5)


def test_the_contract_catches_a_layer_that_ignores_or_mishandles_its_context():
    check_layer(AffineCoupling, (4,), {"hidden": 8})  # unconditional and conditional both pass
    with pytest.raises(AssertionError, match="does not change with the context"):
        check_conditional_layer(IgnoresContext, (4,), {"hidden": 8})
    with pytest.raises(AssertionError, match="inverse"):
        check_conditional_layer(WrongInverseGivenContext, (4,), {"hidden": 8})


def test_the_logdet_of_a_conditional_image_layer_is_the_jacobian_at_a_fixed_context():
    for name in ("affine_coupling", "split", "split_prior", "maf", "nsf_coupling"):
        factory = zoo.registry.get_registry().get("layers", name).factory
        shape = (2, 4, 4) if name in ("affine_coupling", "split", "split_prior") else (3,)
        params = {"width": 4} if name == "split_prior" else {"hidden": 6} if name != "split" else {}
        check_conditional_layer(factory, shape, params, context_features=5)


# --- the model -----------------------------------------------------------------------------------


def test_a_class_conditional_density_integrates_to_one_for_each_class():
    model = perturbed(zoo.build_model(recipe()))
    side = torch.linspace(-6, 6, 241, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    cell = float(side[1] - side[0]) ** 2
    model = model.double()
    totals = []
    with torch.no_grad():
        for label in (0, 1):
            log_p = model.log_prob(grid, torch.full((len(grid),), label))
            totals.append(float(log_p.exp().sum()) * cell)
        assert not torch.allclose(model.log_prob(grid[:5], torch.zeros(5, dtype=torch.long)),
                                  model.log_prob(grid[:5], torch.ones(5, dtype=torch.long)))
    assert totals == pytest.approx([1.0, 1.0], abs=0.02)


def test_sampling_inverts_the_density_direction_at_the_same_context():
    model = perturbed(zoo.build_model(recipe()))
    torch.manual_seed(1)
    x = model.sample(16, context=torch.tensor([1]))
    z, _ = model(x, torch.ones(16, dtype=torch.long))
    assert torch.allclose(model.inverse(z, torch.ones(16, dtype=torch.long)), x, atol=1e-5)
    with model.given(torch.ones(16, dtype=torch.long)):
        assert torch.allclose(model.log_prob(x), model.log_prob(x, torch.ones(16, dtype=torch.long)))


def test_glow_class_prior_and_learned_embedding():
    digits = {"name": "digits", "batch_size": 32}
    layers = [{"name": "dequantize"}, {"name": "normalize", "scale": 17.0}, {"name": "squeeze"},
              {"name": "actnorm"}, {"name": "affine_coupling", "hidden": 8}, {"name": "split"},
              {"name": "affine_coupling", "hidden": 8}]
    model = zoo.build_model(recipe(dataset=digits, model={"base": "diagonal_normal", "layers": layers},
                                   context={"type": "class", "embed": 4}))
    assert model.context_encoder.features == 4 and model.base.context_features == 4
    conditioned = [type(m).__name__ for m in model.layers if getattr(m, "context_features", 0)]
    assert conditioned == ["AffineCoupling", "Split", "AffineCoupling"]
    perturbed(model, 0.1)
    x = torch.randint(0, 17, (3, 1, 8, 8)).float()
    a, b = model.log_prob(x, torch.tensor([0, 0, 0])), model.log_prob(x, torch.tensor([9, 9, 9]))
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


@pytest.mark.parametrize("context, match", [
    (torch.tensor([0.0, 1.0]), "must be integers"),
    (torch.tensor([[0, 1]]), r"shape \(batch,\)"),
    (torch.tensor([0, 2]), "class index 2 is out of range"),
    (torch.tensor([-1, 0]), "class index -1 is out of range"),
    (None, "give a context"),
    (torch.tensor([0, 1, 1]), "3 contexts for a batch of 2"),
])
def test_a_bad_context_is_a_context_error(context, match):
    model = zoo.build_model(recipe())
    with pytest.raises(ContextError, match=match):
        model.log_prob(torch.zeros(2, 2), context)


def test_an_unconditional_model_refuses_a_context():
    model = zoo.build_model(recipe(context=None))
    with pytest.raises(ContextError, match="unconditional"):
        model.log_prob(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_observed_contexts_are_checked_and_parsed():
    encoder = ContextEncoder("observed", shape=(2,))
    assert encoder.parse("1.5, -0.25").tolist() == [[1.5, -0.25]]
    with pytest.raises(ContextError, match="1 values given"):
        encoder.parse("1.5")
    with pytest.raises(ContextError, match="not a comma-separated list"):
        encoder.parse("up")
    with pytest.raises(ContextError, match="expects \\(batch, 2\\)"):
        encoder(torch.zeros(4, 3))
    with pytest.raises(ContextError, match="non-finite"):
        encoder(torch.tensor([[float("nan"), 0.0]]))
    names = ContextEncoder("class", names=("cat", "dog"))
    assert names.parse("dog").tolist() == [1] and names.parse("0").tolist() == [0]
    with pytest.raises(ContextError, match="'bird' is not a class"):
        names.parse("bird")


# --- recipes -------------------------------------------------------------------------------------


def test_a_layer_that_cannot_take_a_context_is_refused_when_asked_to():
    layers = [{"name": "actnorm", "conditioned": True}, {"name": "affine_coupling", "hidden": 8}]
    # refused at validation (so `zoo validate` says it), with the place in the recipe
    with pytest.raises(RecipeError, match=r"layers\[0\].conditioned: the layer 'actnorm' cannot take a "
                       "context; layers that can: affine_coupling"):
        recipe(model={"layers": layers})
    with pytest.raises(RecipeError, match="`conditioned: true`, but the recipe has no context"):
        recipe(context=None, model={"layers": layers})


def test_conditioned_false_keeps_a_layer_unconditional():
    layers = [{"name": "affine_coupling", "hidden": 8, "conditioned": False},
              {"name": "reverse"}, {"name": "affine_coupling", "hidden": 8}]
    model = zoo.build_model(recipe(model={"layers": layers}))
    assert [getattr(m, "context_features", 0) for m in model.layers] == [0, 0, 2]
    assert "conditioned" not in zoo.load_recipe(recipe(model={"layers": layers})).layers()[0][2]


def test_a_conditional_recipe_where_nothing_takes_the_context_is_refused():
    layers = [{"name": "actnorm"}, {"name": "reverse"}]
    with pytest.raises(RecipeError, match="context: the recipe is conditional, but none of its layers "
                       "nor its base takes the context"):
        recipe(model={"layers": layers})
    recipe(model={"base": "diagonal_normal", "layers": layers})  # a conditional base is enough


def test_context_needs_labels_of_the_right_kind():
    with pytest.raises(ContextError, match="'gaussian' has no labels"):
        zoo.build_model(recipe(dataset={"name": "gaussian", "dim": 2, "n_train": 8, "n_val": 4,
                                        "n_test": 4}))
    with pytest.raises(ContextError, match="has class labels; use context: {type: class}"):
        zoo.build_model(recipe(context={"type": "observed"}))
    with pytest.raises(RecipeError, match="needs a flow conditioned"):
        zoo.run(recipe(task="inverse_problem"), progress=False, log=lambda *_: None)


def test_the_schema_refuses_a_bad_context_and_a_layer_param_named_context_features():
    with pytest.raises(RecipeError, match="context"):
        recipe(context={"type": "colour"})
    layers = [{"name": "affine_coupling", "hidden": 8, "context_features": 3}]
    with pytest.raises(RecipeError, match="context_features"):
        recipe(model={"layers": layers})


# --- tasks end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_generative_classification_beats_chance_and_round_trips_through_the_hub(
        hub_env, tmp_path, monkeypatch):  # noqa: F811
    run = zoo.load_recipe("cglow_digits_classify", ["train.epochs=8", "train.eval_every=4"])
    result = zoo.run(run, out=tmp_path / "gc", progress=False, log=lambda *_: None)
    # chance is 0.10 (10 balanced classes); 8 epochs reach about 0.9 on the 180 test digits
    assert result.metrics["test_accuracy"] > 0.6
    info = json.loads((tmp_path / "gc" / "run.json").read_text())
    assert info["task"] == "generative_classify" and info["labels"]["names"] == list("0123456789")
    assert (tmp_path / "gc" / "samples" / "final_by_class.png").is_file()

    hub.push(tmp_path / "gc", "zoo-test/cglow-digits")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "fresh_cache"))
    pulled = zoo.from_pretrained("zoo-test/cglow-digits")
    _, local = load_folder(tmp_path / "gc")
    x = torch.randint(0, 17, (4, 1, 8, 8)).float()
    torch.manual_seed(0)
    a = pulled.log_prob(x, torch.tensor([3, 3, 8, 8]))
    torch.manual_seed(0)
    assert torch.equal(a, local.log_prob(x, torch.tensor([3, 3, 8, 8])))


@pytest.mark.slow
def test_inverse_kinematics_posterior_lands_on_the_end_point_and_is_calibrated(tmp_path):
    run = zoo.load_recipe("inn_inverse_kinematics", [
        "train.epochs=24", "train.eval_every=4", "dataset.n_train=4000", "task.calibration_examples=60",
        "task.posterior_samples=200"])
    result = zoo.run(run, out=tmp_path / "ik", progress=False, log=lambda *_: None)
    metrics = result.metrics
    # the end points of the arms drawn from p(x | y) are within 0.15 of y on average (a prior draw
    # is about 1 away), and each central q-interval holds a share of the truths within 0.15 of q
    assert metrics["forward_error"] < 0.15
    assert all(abs(share - float(q)) < 0.15 for q, share in metrics["calibration"].items())
    assert (tmp_path / "ik" / "samples" / "final_posterior.png").is_file()
    _, model = load_folder(tmp_path / "ik")
    from zoo.inverse import arm_end_point

    from zoo.plugins.datasets_toy import inverse_kinematics

    _, y = inverse_kinematics(n_train=1, n_val=1, n_test=8).test[3]  # an end point of the prior's arms
    torch.manual_seed(0)
    ends = arm_end_point(model.sample(300, context=y[None]).double())
    assert float((ends - y.double()).norm(dim=1).median()) < 0.2
    prior = torch.distributions.Normal(0, 1).sample((300, 4)) * torch.tensor([0.25, 0.5, 0.5, 0.5])
    assert float((arm_end_point(prior.double()) - y.double()).norm(dim=1).median()) > 0.4


def test_zoo_sample_and_eval_take_a_context(tmp_path, capsys):
    from zoo.cli import main

    folder = tmp_path / "run"
    zoo.run(recipe(), out=folder, progress=False, log=lambda *_: None)
    assert main(["sample", str(folder), "--context", "lower", "-n", "50", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").is_file()
    assert main(["sample", str(folder), "-n", "5"]) == 2
    assert "give --context" in capsys.readouterr().err
    assert main(["sample", str(folder), "--context", "7", "-n", "5"]) == 2
    assert "class index 7 is out of range" in capsys.readouterr().err
    assert main(["eval", str(folder)]) == 0
    assert "test NLL" in capsys.readouterr().out
    assert math.isfinite(json.loads((folder / "metrics.json").read_text())["test_nll"])


def test_a_model_built_without_its_labels_from_run_json_needs_no_data(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    zoo.run(recipe(), out=folder, progress=False, log=lambda *_: None)
    from zoo import assemble

    def no_data(*args, **kwargs):
        raise AssertionError("the data set was built")

    monkeypatch.setattr(assemble, "build_dataset", no_data)
    _, model = load_folder(folder)
    assert model.context_encoder.names == ("upper", "lower")


def test_unconditional_layers_of_a_plugin_keep_working_in_a_conditional_recipe():
    class Shift(nn.Module):  # today's contract: no context anywhere
        def __init__(self, shape):
            super().__init__()
            self.b = nn.Parameter(torch.zeros(shape))

        def forward(self, x):
            return x + self.b, x.new_zeros(x.shape[0])

        def inverse(self, y):
            return y - self.b

    from zoo.flow import FlowModel

    coupling = AffineCoupling((2,), hidden=8, context_features=2)
    model = perturbed(FlowModel([Shift((2,)), coupling], (2,), context=ContextEncoder("class", ("a", "b"))))
    x = torch.randn(5, 2)
    z, _ = model(x, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(model.inverse(z, torch.zeros(5, dtype=torch.long)), x, atol=1e-6)


def test_the_memory_budget_counts_the_context_inputs(tmp_path):
    from zoo import budget

    layers = [{"name": "affine_coupling", "hidden": 64}]
    plain = budget.estimate_recipe(recipe(model={"layers": layers}), (2,))
    wide = budget.estimate_recipe(recipe(model={"layers": layers}), (2,), context_features=10_000)
    assert wide.param_bytes - plain.param_bytes == 10_000 * 64 * 4  # the first layer's extra inputs


def test_zoo_score_of_a_class_conditional_flow_is_the_mixture_over_classes():
    from zoo.score import marginal_log_prob

    model = perturbed(zoo.build_model(recipe()))
    prior = torch.tensor(model.context_encoder.prior, dtype=torch.float64)
    assert prior.sum().item() == pytest.approx(1.0) and len(prior) == 2
    x = torch.randn(6, 2)
    with torch.no_grad():
        by_class = torch.stack([model.log_prob(x, torch.full((6,), k)).double() for k in (0, 1)], 1)
        expected = torch.logsumexp(by_class + prior.log(), dim=1)
        assert torch.allclose(marginal_log_prob(model, x).double(), expected, atol=1e-5)


def test_a_recipe_loaded_without_validation_gets_the_same_conditioning_rules_at_build():
    data = {"name": "raw", "dataset": dict(MOONS), "context": {"type": "class"},
            "model": {"layers": [{"name": "actnorm", "conditioned": True},
                                 {"name": "affine_coupling", "hidden": 8}]}}
    unvalidated = zoo.load_recipe(data, validate=False)
    with pytest.raises(ContextError, match=r"layers\[0\].conditioned: the layer 'actnorm' cannot take"):
        zoo.build_model(unvalidated)
