"""The classify task through recipes, zoo run, the run folder, zoo predict and the Hub: the MNF
LeNet against the plain LeNet, Inverse-Flow's classifier, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import zoo
from test_hub import fakehub, hub_env  # noqa: F401  (fixtures)
from zoo import hub
from zoo.cli import main
from zoo.errors import ContextError, RecipeError
from zoo.runs import load_folder

QUIET = {"progress": False, "log": lambda *_: None}


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_recipes_have_torch_mnf_s_parameter_counts():
    assert params(zoo.build_model(zoo.load_recipe("mnf_lenet_mnist"), shape=(1, 28, 28), n_bits=8,
                                  labels={"kind": "class", "names": list("0123456789")})) == 696_950
    assert params(zoo.build_model(zoo.load_recipe("lenet_mnist"), shape=(1, 28, 28), n_bits=8,
                                  labels={"kind": "class", "names": list("0123456789")})) == 258_582
    inverse_flow = zoo.build_model(zoo.load_recipe("if_classifier_mnist"), shape=(1, 28, 28), n_bits=8,
                                   labels={"kind": "class", "names": list("0123456789")})
    taps = sum(int((layer.layer.weight_mask if hasattr(layer.layer, "weight_mask") else
                    torch.ones_like(layer.layer.weight)).sum()) - 1
               for layer in inverse_flow.layers if hasattr(layer, "layer"))
    assert params(inverse_flow) == 7_850 + 18 and taps == 16  # 8 learnable taps per inverse conv


TINY = {
    "name": "tiny_classifier",
    "task": "classify",
    "dataset": {"name": "digits", "batch_size": 64},
    "model": {"layers": [{"name": "scale", "factor": 0.0625}, {"name": "flatten"},
                         {"name": "linear", "out_features": 32}, {"name": "relu"},
                         {"name": "linear", "out_features": 10}]},
    "train": {"epochs": 3, "lr": 3e-3, "seed": 0},
}


@pytest.mark.slow
def test_a_classifier_trains_predicts_and_round_trips_through_the_hub(hub_env, tmp_path, monkeypatch):  # noqa: F811
    folder = tmp_path / "run"
    result = zoo.run(zoo.load_recipe(TINY), out=folder, **QUIET)
    assert result.metrics["test_accuracy"] > 0.8  # chance: 0.1
    assert {"test_nll", "test_ece", "val_accuracy"} <= set(result.metrics)
    assert 0 <= result.metrics["test_ece"] <= 1
    info = json.loads((folder / "run.json").read_text())
    assert info["task"] == "classify" and info["labels"]["kind"] == "class"

    from zoo.plugins.datasets_images import digits

    x, y = digits().test[0]
    Image.fromarray(x[0].numpy().astype("uint8")).save(tmp_path / "digit.png")
    _, model = load_folder(folder)
    with torch.no_grad():
        local = torch.softmax(model(x[None]), -1)[0]
    hub.push(folder, "zoo-test/tiny-classifier")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "fresh_cache"))
    pulled = zoo.from_pretrained("zoo-test/tiny-classifier")
    with torch.no_grad():
        assert torch.allclose(torch.softmax(pulled(x[None]), -1)[0], local)
    assert main(["predict", "zoo-test/tiny-classifier", str(tmp_path / "digit.png"), "--top", "2"]) == 0


def test_zoo_predict_prints_mean_and_spread_and_refuses_a_density_run(tmp_path, capsys):
    folder = tmp_path / "run"
    zoo.run(zoo.load_recipe(TINY, ["train.epochs=1"]), out=folder, **QUIET)
    image = tmp_path / "digit.png"
    Image.fromarray((torch.rand(8, 8) * 16).numpy().astype("uint8")).save(image)
    assert main(["predict", str(folder), str(image), "--samples", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{image}: ") and len(lines) == 11 and "+-" in lines[1]
    density = tmp_path / "density"
    zoo.run({"name": "d", "dataset": {"name": "moons", "n_train": 64, "n_val": 16, "n_test": 16},
             "model": {"layers": [{"name": "affine_coupling", "hidden": 4}]},
             "train": {"epochs": 1, "lr": 1e-3}}, out=density, **QUIET)
    (tmp_path / "p.csv").write_text("0.1,0.2\n")
    assert main(["predict", str(density), str(tmp_path / "p.csv")]) == 2
    assert "predicts none" in capsys.readouterr().err


def test_classifier_recipes_are_checked():
    with pytest.raises(RecipeError, match="ends with shape \\(32,\\).*10 classes"):
        zoo.build_model(zoo.load_recipe(TINY, ["model.layers.4.out_features=32"]))
    with pytest.raises(RecipeError, match="network layer of classifiers"):
        zoo.build_model(zoo.load_recipe({**TINY, "task": "density"}))
    with pytest.raises(ContextError, match="classify needs a data set with classes"):
        zoo.build_model(zoo.load_recipe({**TINY, "dataset": {"name": "gaussian", "dim": 64}}))
    with pytest.raises(RecipeError, match="gradient_mode: exact"):
        zoo.run(zoo.load_recipe({**TINY, "gradient_mode": "self_normalized"}), **QUIET)
    with pytest.raises(RecipeError, match="eval_samples"):
        zoo.load_recipe({**TINY, "task": {"name": "classify", "eval_samples": 10**6}})


@pytest.mark.slow
def test_mnf_is_less_sure_than_lenet_of_the_upside_down_nine(tmp_path):
    """torch-mnf's figure in numbers: on the embedded digits, after one epoch each, the MNF
    LeNet's predictive entropy on the 180-degree rotated 9 is above the plain LeNet's."""
    overrides = ["train.epochs=1", "task.figure_samples=100", "task.eval_samples=5"]
    lenet = zoo.run(zoo.load_recipe("lenet_mnist", overrides), out=tmp_path / "lenet", **QUIET)
    mnf = zoo.run(zoo.load_recipe("mnf_lenet_mnist", overrides + [f"task.beside={tmp_path / 'lenet'}"]),
                  out=tmp_path / "mnf", **QUIET)
    assert mnf.metrics["test_accuracy"] > 0.5 and lenet.metrics["test_accuracy"] > 0.8
    assert mnf.metrics["rotated_entropy"][-1] > lenet.metrics["rotated_entropy"][-1]
    assert mnf.metrics["beside_rotated_entropy"] == pytest.approx(lenet.metrics["rotated_entropy"], abs=1e-6)
    assert len(mnf.metrics["rotated_entropy"]) == 10  # 0, 20, ..., 180 degrees
    assert (tmp_path / "mnf" / "samples" / "final_rotated_9.png").is_file()


def test_a_wrong_beside_is_said_and_the_run_still_completes(tmp_path):
    notes = []
    recipe = zoo.load_recipe({**TINY, "task": {"name": "classify", "beside": str(tmp_path / "nowhere"),
                                               "figure_samples": 2}}, ["train.epochs=1"])
    result = zoo.run(recipe, out=tmp_path / "run", progress=False, log=notes.append)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"
    assert any("leaves out task.beside" in str(n) and "nowhere" in str(n) for n in notes)
    assert "beside_rotated_entropy" not in result.metrics and result.metrics["rotated_entropy"]
