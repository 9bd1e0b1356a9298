"""Energy targets (u1 .. u4) and reverse KL through the one training loop: the energies against
Rezende & Mohamed's formulas, log Z of u1, the loss in both directions, the run folder (metrics,
picture), and the pairings that are refused (reverse_kl on data, nll on an energy target)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.assemble import build_dataset, build_objective, energy_target_names
from zoo.cli import main
from zoo.data import EnergyTarget
from zoo.errors import RecipeError, TrainingError
from zoo.plugins.datasets_toy import energy_u1, energy_u2, energy_u3, energy_u4, log_normalizer_u1
from zoo.train import evaluate_energy, evaluation_seed, make_loaders
from zoo.visualize_targets import MARGIN, TITLE_HEIGHT, grid_points, splat

POINTS = [(0.0, 0.0), (2.0, 0.0), (1.0, -1.0), (-1.5, 0.7), (0.3, 2.5), (-3.0, -2.0)]


def gauss(t, s):
    return math.exp(-0.5 * (t / s) ** 2)


def u_formulas(x1, x2):
    """Table 1 of Rezende & Mohamed (2015), written out with the math module."""
    w1 = math.sin(2 * math.pi * x1 / 4)
    w2 = 3 * math.exp(-0.5 * ((x1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + math.exp(-(x1 - 1) / 0.3))
    u1 = 0.5 * ((math.hypot(x1, x2) - 2) / 0.4) ** 2 - math.log(gauss(x1 - 2, 0.6) + gauss(x1 + 2, 0.6))
    u2 = 0.5 * ((x2 - w1) / 0.4) ** 2
    u3 = -math.log(gauss(x2 - w1, 0.35) + gauss(x2 - w1 + w2, 0.35))
    u4 = -math.log(gauss(x2 - w1, 0.4) + gauss(x2 - w1 + w3, 0.35))
    return u1, u2, u3, u4


def test_energies_match_the_formulas():
    x = torch.tensor(POINTS, dtype=torch.float64)
    ours = [energy(x) for energy in (energy_u1, energy_u2, energy_u3, energy_u4)]
    for i, (x1, x2) in enumerate(POINTS):
        for k, expected in enumerate(u_formulas(x1, x2)):
            assert ours[k][i].item() == pytest.approx(expected, rel=1e-12, abs=1e-12), (k + 1, x1, x2)


def test_energy_targets_are_registered_datasets_with_log_z_only_where_finite():
    assert energy_target_names() == ["u1", "u2", "u3", "u4"]
    targets = {name: build_dataset({"name": "t", "dataset": name, "model": {"layers": [{"name": "bnaf"}]},
                                    "loss": "reverse_kl"}) for name in ("u1", "u2")}
    assert all(isinstance(t, EnergyTarget) for t in targets.values())
    assert targets["u1"].log_normalizer == pytest.approx(log_normalizer_u1())
    assert targets["u2"].log_normalizer is None  # exp(-U2) is flat along x1: not integrable
    x = torch.tensor(POINTS)
    assert torch.allclose(targets["u1"].energy(x), energy_u1(x))
    assert targets["u1"].shape == (2,) and len(targets["u1"].train) == 20000


def test_log_z_of_u1_agrees_with_a_cartesian_quadrature():
    h = 0.01
    axis = torch.arange(-6, 6 + h / 2, h, dtype=torch.float64)
    x1, x2 = torch.meshgrid(axis, axis, indexing="ij")
    density = torch.exp(-energy_u1(torch.stack([x1.reshape(-1), x2.reshape(-1)], 1)))
    assert log_normalizer_u1() == pytest.approx(math.log(density.sum().item() * h * h), abs=1e-6)


def energy_recipe(target="u1", direction="forward", layers=None, steps=300, batch=100, lr=0.05, **train):
    return zoo.load_recipe({
        "name": f"reverse_kl_{target}",
        "dataset": {"name": target, "n_train": steps * batch, "n_val": 2000, "n_test": 4000, "batch_size": batch},
        "model": {"layers": layers or [{"name": "bnaf", "hidden": 20, "n_hidden": 1}]},
        "loss": {"name": "reverse_kl", "direction": direction},
        "train": {"epochs": 1, "lr": lr, "seed": 0, **train},
    })


def kl_before_training(recipe):
    dataset = build_dataset(recipe)
    model = zoo.build_model(recipe)
    loss = build_objective(recipe, dataset)
    _, _, test = make_loaders(dataset, recipe, seed=0)
    return evaluate_energy(model, test, loss, dataset, torch.device("cpu"), evaluation_seed(0, "test"))["kl"]


def test_reverse_kl_fits_u1_within_a_few_hundred_steps(tmp_path):
    """BNAF with the forward map as the sampler (the seed's set-up), small: 300 steps of 100
    samples take the KL(q || p) estimate from above 1 nat to below 0.15 nats."""
    recipe = energy_recipe()
    assert kl_before_training(recipe) > 1.0
    result = zoo.run(recipe, out=tmp_path / "run", progress=False, log=lambda *_: None)
    metrics = result.metrics
    assert -0.02 < metrics["test_kl"] < 0.15, metrics  # a KL: >= 0 up to Monte Carlo noise
    assert metrics["test_kl"] == pytest.approx(metrics["test_free_energy"] + metrics["log_z"])
    assert metrics["log_z"] == pytest.approx(log_normalizer_u1()) and metrics["test_examples"] == 4000
    assert "test_nll" not in metrics and metrics["dataset"] == "u1"
    (record,) = [json.loads(line) for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    assert record["val_kl"] == pytest.approx(metrics["val_kl"]) and "val_nll" not in record
    # the saved model is the evaluated one: the same seeded draws give the same estimate
    recipe_again, model = zoo.load_run(result.folder)
    assert kl_of(recipe_again, model) == pytest.approx(metrics["test_kl"], abs=1e-6)


def kl_of(recipe, model):
    dataset = build_dataset(recipe)
    loss = build_objective(recipe, dataset)
    _, _, test = make_loaders(dataset, recipe, seed=0)
    return evaluate_energy(model, test, loss, dataset, torch.device("cpu"), evaluation_seed(0, "test"))["kl"]


def test_reverse_kl_through_the_inverse_of_a_coupling_flow(tmp_path):
    """direction: inverse: samples through model.inverse, q = model.log_prob, as zoo samples it."""
    layers = [{"repeat": 4, "layers": [{"name": "affine_coupling", "hidden": 32}, {"name": "reverse"}]}]
    recipe = energy_recipe(direction="inverse", layers=layers, steps=300, lr=5e-3)
    before = kl_before_training(recipe)
    result = zoo.run(recipe, out=tmp_path / "run", progress=False, log=lambda *_: None)
    assert result.metrics["test_kl"] < min(0.5, before - 1.0), (before, result.metrics)


def test_inverse_direction_without_gradients_names_the_fix(tmp_path):
    recipe = energy_recipe(direction="inverse", steps=2)
    with pytest.raises(TrainingError, match=r"\$\.loss: reverse_kl with direction: inverse .*direction: forward"):
        zoo.run(recipe, out=tmp_path / "run", progress=False, log=lambda *_: None)


def test_reverse_kl_loss_is_log_q_plus_energy_of_its_samples():
    recipe = energy_recipe(target="u2", steps=1)
    dataset, model = build_dataset(recipe), zoo.build_model(recipe)
    loss = build_objective(recipe, dataset)
    torch.manual_seed(3)
    x, log_q = loss.draw(model, 64)
    torch.manual_seed(3)
    z = torch.randn(64, 2)
    fx, logdet = model(z)
    assert torch.allclose(x, fx) and torch.allclose(log_q, -0.5 * (z**2).sum(1) - math.log(2 * math.pi) - logdet)
    torch.manual_seed(3)
    assert torch.allclose(loss(model, torch.empty(64, 2)), log_q + energy_u2(x), atol=1e-5)


def test_placeholder_splits_only_size_the_steps():
    recipe = energy_recipe(steps=4, batch=10)
    train, val, test = make_loaders(build_dataset(recipe), recipe, seed=0)
    assert len(train) == 4 and len(val.dataset) == 2000 and len(test.dataset) == 4000
    assert next(iter(train))[0].shape == (10, 2)


def test_the_run_draws_the_target_beside_the_learned_q(tmp_path):
    result = zoo.run(energy_recipe(steps=10, epochs=2, sample_every=1), out=tmp_path / "run",
                     progress=False, log=lambda *_: None)
    assert sorted(p.name for p in (result.folder / "samples").iterdir()) == ["epoch0001_target.png",
                                                                            "final_target.png"]
    picture = np.asarray(Image.open(result.folder / "samples" / "final_target.png").convert("RGB"))
    pixels = 200
    assert picture.shape == (TITLE_HEIGHT + pixels + MARGIN, MARGIN + 2 * (pixels + MARGIN), 3)
    target = picture[TITLE_HEIGHT:TITLE_HEIGHT + pixels, MARGIN:MARGIN + pixels].astype(float).sum(2)
    learned = picture[TITLE_HEIGHT:TITLE_HEIGHT + pixels, 2 * MARGIN + pixels:2 * (MARGIN + pixels)]
    # u1's target: bright on the ring at (+-2, 0), dark at the centre; x1 to the right
    centre, right, left = target[100, 100], target[100, 150], target[100, 50]
    assert right > centre + 200 and left > centre + 200
    assert learned.std() > 10  # the learned panel shows something
    assert (picture[:TITLE_HEIGHT] < 100).any()  # title text


def test_splat_averages_q_over_the_points_in_each_pixel():
    x = torch.tensor([[-3.9, 3.9], [-3.8, 3.8], [3.9, -3.9], [9.0, 0.0]], dtype=torch.float64)
    log_q = torch.log(torch.tensor([1.0, 3.0, 4.0, 100.0], dtype=torch.float64))
    image = splat(x, log_q, bound=4.0, pixels=4)
    assert image[0, 0] == pytest.approx(2.0 / 4.0)  # the mean of q = 1 and 3, over the largest q inside
    assert image[3, 3] == pytest.approx(4.0 / 4.0) and image.sum() == pytest.approx(1.5)
    assert grid_points(4.0, 4)[0].tolist() == [-3.0, 3.0]  # row 0 at the top, x1 to the right


# --- pairings that are refused, from the command line ----------------------------------------


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


ENERGY_ON_DATA = """\
name: bad
dataset: {name: moons, n_train: 64, batch_size: 32}
model: {layers: [{name: bnaf, hidden: 8, n_hidden: 1}]}
loss: {name: reverse_kl, direction: forward}
"""
NLL_ON_ENERGY = """\
name: bad
dataset: {name: u3, n_train: 64, batch_size: 32}
model: {layers: [{name: bnaf, hidden: 8, n_hidden: 1}]}
loss: nll
"""


@pytest.mark.parametrize("text, needles", [
    (ENERGY_ON_DATA, ["$.loss: 'reverse_kl' fits an energy target", "u1, u2, u3, u4",
                      "$.dataset 'moons' is a data set", "Use loss: nll"]),
    (NLL_ON_ENERGY, ["$.loss: 'nll' fits data", "$.dataset 'u3' is an energy target",
                     "Use loss: reverse_kl"]),
])
def test_cli_refuses_a_loss_on_the_wrong_kind_of_dataset(capsys, tmp_path, text, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert str(path) in line
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_assembly_refuses_both_pairings_as_recipe_errors():
    data = zoo.load_recipe({"name": "x", "dataset": "moons", "model": {"layers": [{"name": "bnaf"}]},
                            "loss": "reverse_kl"})
    with pytest.raises(RecipeError, match="is a data set"):
        build_objective(data, build_dataset(data))
    energy = zoo.load_recipe({"name": "x", "dataset": "u1", "model": {"layers": [{"name": "bnaf"}]}})
    with pytest.raises(RecipeError, match="is an energy target"):
        build_objective(energy, build_dataset(energy))


def test_zoo_eval_of_an_energy_run_says_where_its_scores_are(capsys, tmp_path):
    result = zoo.run(energy_recipe(steps=2), out=tmp_path / "run", progress=False, log=lambda *_: None)
    code, err = run_cli(capsys, "eval", result.folder)
    assert code == 2 and "energy target" in err and "test_kl" in err and "Traceback" not in err
