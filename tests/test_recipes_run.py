"""Every shipped recipe validates, builds, and trains end to end on a tiny budget.

MNIST recipes use the embedded digits; CIFAR-10, ImageNet and CelebA recipes run on tiny files
written in the real formats (tests/data_writers.py), so their readers and the recipes' real
architectures are exercised together. Only the budget is shortened: the architectures are the
recipes' own.
"""

import math
from pathlib import Path

import pytest
import torch

import zoo
from zoo.assemble import energy_target_names
from data_writers import write_celeba, write_cifar_binary, write_image_folder, write_imagenet

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
TINY_BUDGET = [
    "train.epochs=1",
    "train.max_steps_per_epoch=1",
    "train.max_eval_examples=4",
    "train.n_samples=2",
    "train.warmup_epochs=0",
    "dataset.batch_size=2",
]
# Data that has to come from files: tiny ones in the real formats, and dataset overrides that
# keep them tiny.
FILE_DATA = {
    "cifar10": (lambda d: write_cifar_binary(d, per_batch=2), ["dataset.n_val=2"]),
    "imagenet32": (lambda d: write_imagenet(d, side=32, per_batch=2, n_val=2), ["dataset.n_val=2"]),
    "imagenet64": (lambda d: write_imagenet(d, side=64, per_batch=2, n_val=2), ["dataset.n_val=2"]),
    "celeba": (lambda d: write_celeba(d), []),
    # every image_folder recipe reads this one tiny folder (glow_digits_heldout's own is written by
    # examples/write_digit_folders.py)
    "image_folder": (lambda d: write_image_folder(d / "animal-faces" / "train", {"cat": 8, "dog": 4}),
                     ["dataset.root=animal-faces/train"]),
    "power": (lambda d: write_power(d), []),
}


# Synthetic data drawn at build time: fewer draws keep it quick.
DRAWN = ("moons", "gaussian", "eight_gaussians", "checkerboard", "two_spirals", "rings",
         "inverse_kinematics")


def write_power(folder):
    """A tiny power/data.npy in MAF's layout (8 columns)."""
    import numpy as np

    (folder / "power").mkdir(parents=True)
    np.save(folder / "power" / "data.npy", np.random.RandomState(0).rand(60, 8))


def test_all_seed_experiments_have_recipes():
    expected = {
        "toydensity", "glow_mnist_small", "selfnorm_fc_mnist", "exact_fc_mnist", "selfnorm_cnn_mnist",
        "exact_cnn_mnist", "emerging_cnn_mnist", "exponential_cnn_mnist", "conv1x1_glow_mnist",
        "selfnorm_glow_mnist", "snf_timescaling", "if_glow_mnist", "if_cnn_mnist", "if_glow_cifar10",
        "if_glow_imagenet32", "if_glow_imagenet64", "if_glow_celeba", "glow_celeba_3x32", "glow_celeba_3x24",
    }
    assert expected <= set(RECIPES)


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_trains_on_a_tiny_budget(name, tmp_path, monkeypatch):
    recipe = zoo.load_recipe(ROOT / "recipes" / f"{name}.yaml")
    dataset = recipe["dataset"]["name"]
    overrides = list(TINY_BUDGET)
    if dataset in FILE_DATA:
        write, extra = FILE_DATA[dataset]
        write(tmp_path / "data")
        monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
        overrides += extra
    energy = dataset in energy_target_names()  # no data: the score is the free energy
    if dataset in DRAWN or energy:
        overrides += ["dataset.n_train=16", "dataset.n_val=4", "dataset.n_test=4"]
    recipe = zoo.load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides=overrides)
    result = zoo.run(recipe, out=tmp_path / "run", progress=False, log=lambda *_: None)
    assert math.isfinite(result.metrics["test_free_energy" if energy else "test_nll"]), result.metrics
    assert (result.folder / "model.safetensors").is_file()
    _, model = zoo.load_run(result.folder)
    if not hasattr(model, "sample"):  # a classifier: it predicts
        assert model(torch.zeros(2, *model.shape)).shape == (2, len(model.class_names))
        return
    encoder = model.context_encoder
    context = None if encoder is None else 0 if encoder.kind == "class" else torch.zeros(encoder.shape)
    assert model.sample(2, context=context).shape[1:] == tuple(model.shape)
