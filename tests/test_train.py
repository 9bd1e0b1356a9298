"""The training loop end to end on tiny budgets, run folders, and the Python API."""

import json
import math

import pytest
import torch

import zoo
from zoo.errors import ShapeError, TrainingError, WeightsError
from zoo.train import PlateauSchedule, learning_rate, load_run, lr_schedule

MOONS = {
    "name": "tiny_moons",
    "dataset": {"name": "moons", "n_train": 256, "n_val": 128, "n_test": 128, "batch_size": 64},
    "model": {
        "base": "standard_normal",
        "layers": [
            {"repeat": 2, "layers": [{"name": "actnorm"}, {"name": "affine_coupling", "hidden": 16}, {"name": "reverse"}]}
        ],
    },
    "loss": "nll",
    "gradient_mode": "exact",
    "train": {"epochs": 3, "lr": 1e-2, "eval_every": 1, "seed": 0},
}


def tiny_recipe(**train):
    recipe = json.loads(json.dumps(MOONS))
    recipe["train"].update(train)
    return zoo.load_recipe(recipe)


def test_run_writes_a_complete_run_folder(tmp_path):
    result = zoo.run(tiny_recipe(), out=tmp_path / "run", progress=False, log=lambda *_: None)
    folder = result.folder
    for name in ("recipe.yaml", "run.json", "model.safetensors", "metrics.jsonl", "metrics.json"):
        assert (folder / name).is_file(), name
    assert list((folder / "samples").glob("*.png")), "no density plot for 2-D data"
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all("val_nll" in json.loads(line) for line in lines)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert math.isfinite(metrics["test_nll"]) and metrics["best_epoch"] in (1, 2, 3)
    assert metrics["test_bpd"] is None  # not image data
    assert metrics["ms_per_batch"] > 0 and metrics["ms_per_sample"] > 0
    run_info = json.loads((folder / "run.json").read_text())
    assert run_info["recipe_sha256"] == zoo.load_recipe(folder / "recipe.yaml").sha256


def test_training_lowers_the_nll(tmp_path):
    short = zoo.run(tiny_recipe(epochs=1, lr=1e-4), out=tmp_path / "a", progress=False, log=lambda *_: None)
    longer = zoo.run(tiny_recipe(epochs=8, lr=1e-2), out=tmp_path / "b", progress=False, log=lambda *_: None)
    assert longer.metrics["test_nll"] < short.metrics["test_nll"] - 0.2


def test_best_model_is_reloaded_identically(tmp_path):
    result = zoo.run(tiny_recipe(), out=tmp_path / "run", progress=False, log=lambda *_: None)
    recipe, model = load_run(result.folder)
    x = torch.randn(16, 2)
    again = load_run(result.folder)[1]
    assert torch.equal(model.log_prob(x), again.log_prob(x))
    # the model scores the test split exactly as reported
    from zoo.assemble import build_dataset
    from zoo.train import evaluate, make_loaders

    _, _, test = make_loaders(build_dataset(recipe), recipe, seed=0)
    assert evaluate(model, test, torch.device("cpu"))["nll"] == pytest.approx(result.metrics["test_nll"], rel=1e-5)


def test_nonfinite_loss_stops_with_a_clear_message_or_skips(tmp_path):
    recipe = tiny_recipe(lr=1e6, epochs=2)
    with pytest.raises(TrainingError, match="train.on_nonfinite=skip"):
        zoo.run(recipe, out=tmp_path / "stop", progress=False, log=lambda *_: None)
    skipped = zoo.run(tiny_recipe(lr=1e6, epochs=2, on_nonfinite="skip"), out=tmp_path / "skip",
                      progress=False, log=lambda *_: None)
    assert skipped.metrics["skipped_batches"] > 0


def test_warmup_is_linear_per_batch_then_decays():
    train = {"lr": 1.0, "warmup_epochs": 2, "lr_decay": 0.5}
    assert learning_rate(train, 0, 0, 10) == pytest.approx(1 / 20 * 1.0)
    assert learning_rate(train, 0, 9, 10) == pytest.approx(10 / 20)
    assert learning_rate(train, 3, 0, 10) == pytest.approx(0.5**3)


def test_plateau_halves_the_lr_after_patience_steps_without_improvement():
    schedule = PlateauSchedule(lr=0.1, factor=0.5, patience=3)
    schedule.observe(2.0)  # the first loss is the best so far
    for _ in range(3):  # `patience` steps without improvement are tolerated ...
        schedule.observe(2.0)
        assert schedule.scale == 1.0
    schedule.observe(2.0)  # ... the next one halves the lr
    assert schedule.scale == 0.5 and schedule.reductions == 1
    schedule.observe(1.0)  # an improvement resets the count
    for _ in range(3):
        schedule.observe(1.5)
    assert schedule.scale == 0.5
    schedule.observe(1.5)
    assert schedule.scale == 0.25


def test_plateau_follows_torch_reduce_lr_on_plateau_step_by_step():
    """The seed's scheduler (ReduceLROnPlateau stepped on the loss each step), with threshold,
    cooldown and min_lr, on a loss that falls, stalls and jitters."""
    generator = torch.Generator().manual_seed(0)
    losses = (torch.cat([torch.linspace(3, 1, 40), torch.ones(60)]) + 0.01 * torch.randn(100, generator=generator))
    settings = dict(factor=0.5, patience=4, threshold=1e-3, cooldown=2, min_lr=0.02)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **settings)
    ours = PlateauSchedule(lr=0.1, **settings)
    for loss in losses.tolist():
        reference.step(loss)
        ours.observe(loss)
        assert 0.1 * ours.scale == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
    assert ours.reductions == 3 and 0.1 * ours.scale == pytest.approx(0.02)  # 0.05, 0.025, then min_lr


def test_plateau_composes_with_warmup_and_absent_means_none():
    assert lr_schedule(tiny_recipe().train).scale == 1.0 and tiny_recipe().train["lr_schedule"] is None
    assert lr_schedule(tiny_recipe(lr_schedule=None).train).scale == 1.0
    schedule = lr_schedule(tiny_recipe(lr_schedule={"name": "plateau", "factor": 0.5, "patience": 0}).train)
    schedule.observe(1.0)
    schedule.observe(1.0)
    train = {"lr": 1.0, "warmup_epochs": 1}
    assert learning_rate(train, 0, 4, 10) * schedule.scale == pytest.approx(0.5 * 5 / 10)


def test_plateau_schedule_lowers_the_lr_of_a_run(tmp_path):
    # threshold 0.99 and patience 0: no step after the first improves (the NLL stays positive and
    # does not fall 100-fold), so each halves the lr, down to min_lr. 4 steps per epoch; the log
    # has the lr of each epoch's last step (set before it: two halvings in).
    schedule = {"name": "plateau", "factor": 0.5, "patience": 0, "threshold": 0.99, "min_lr": 1e-3}
    result = zoo.run(tiny_recipe(epochs=2, lr=1e-2, lr_schedule=schedule), out=tmp_path / "r",
                     progress=False, log=lambda *_: None)
    lrs = [json.loads(line)["lr"] for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([2.5e-3, 1e-3])
    plain = zoo.run(tiny_recipe(epochs=1, lr=1e-2), out=tmp_path / "p", progress=False, log=lambda *_: None)
    assert json.loads((plain.folder / "metrics.jsonl").read_text())["lr"] == pytest.approx(1e-2)


def test_max_steps_per_epoch_caps_batches(tmp_path):
    result = zoo.run(tiny_recipe(epochs=1, max_steps_per_epoch=1), out=tmp_path / "r", progress=False,
                     log=lambda *_: None)
    assert math.isfinite(result.metrics["test_nll"])


def test_build_model_api_log_prob_sample_inverse():
    model = zoo.build_model(tiny_recipe())
    x = torch.randn(5, 2)
    model.initialize(x)
    z, logdet = model(x)
    assert z.shape == (5, 2) and logdet.shape == (5,)
    assert torch.allclose(model.inverse(z), x, atol=1e-5)
    assert model.log_prob(x).shape == (5,)
    cold = model.sample(1000, temperature=0.1)
    assert cold.shape == (1000, 2) and cold.std() < model.sample(1000, temperature=1.0).std()


def test_layer_that_cannot_take_its_shape_is_named_at_assembly():
    recipe = json.loads(json.dumps(MOONS))
    recipe["model"]["layers"] = [{"name": "actnorm"}, {"name": "squeeze"}]
    with pytest.raises(ShapeError, match=r"\$\.model\.layers\[1\] \(layer 1, 'squeeze'\)"):
        zoo.build_model(zoo.load_recipe(recipe))


def test_run_folder_with_missing_or_corrupt_weights(tmp_path):
    result = zoo.run(tiny_recipe(epochs=1), out=tmp_path / "run", progress=False, log=lambda *_: None)
    weights = result.folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        load_run(result.folder)
    weights.unlink()
    with pytest.raises(WeightsError, match="no weights file"):
        load_run(result.folder)


def test_weights_with_other_shapes_are_refused(tmp_path):
    result = zoo.run(tiny_recipe(epochs=1), out=tmp_path / "run", progress=False, log=lambda *_: None)
    text = (result.folder / "recipe.yaml").read_text().replace("hidden: 16", "hidden: 8")
    (result.folder / "recipe.yaml").write_text(text)
    # The run folder refuses the edited recipe before building anything ...
    with pytest.raises(WeightsError, match="edited after training"):
        load_run(result.folder)
    # ... and the weights themselves refuse a model of other shapes.
    from zoo.weights import load_weights

    other = zoo.build_model(zoo.load_recipe(result.folder / "recipe.yaml"))
    with pytest.raises(WeightsError, match="shapes differ"):
        load_weights(other, result.folder / "model.safetensors")


def test_logged_validation_nll_is_that_of_the_saved_model(tmp_path):
    """With layers that cache their exact log-determinant (self-normalizing ones) and the fused
    optimizer, the validation NLL logged during training must be the saved model's."""
    recipe = json.loads(json.dumps(MOONS))
    recipe["model"]["layers"] = [
        {"repeat": 3, "layers": [{"name": "selfnorm_fc"}, {"name": "smooth_leaky_relu"}]},
        {"name": "selfnorm_fc"},
    ]
    recipe["gradient_mode"] = "self_normalized"
    recipe["train"].update(epochs=3, lr=1e-2)
    result = zoo.run(zoo.load_recipe(recipe), out=tmp_path / "run", progress=False, log=lambda *_: None)
    last = json.loads((result.folder / "metrics.jsonl").read_text().splitlines()[-1])
    recipe, model = load_run(result.folder)
    from zoo.assemble import build_dataset
    from zoo.train import evaluate, make_loaders

    _, val, _ = make_loaders(build_dataset(recipe), recipe, seed=0)
    assert evaluate(model, val, torch.device("cpu"))["nll"] == pytest.approx(last["val_nll"], rel=1e-5)


def test_threads_auto_is_one_for_a_small_model_and_a_number_is_kept(tmp_path):
    from zoo.train import pick_threads

    small = zoo.build_model(tiny_recipe())
    assert pick_threads("auto", small) == 1
    assert pick_threads(3, small) == 3
    big = torch.nn.Linear(1100, 1000)  # 1.1M parameters
    assert pick_threads("auto", big) >= 1
    before = torch.get_num_threads()
    result = zoo.run(tiny_recipe(epochs=1, threads=2), out=tmp_path / "run", progress=False, log=lambda *_: None)
    assert json.loads((result.folder / "run.json").read_text())["threads"] == 2
    assert torch.get_num_threads() == before  # the caller's setting is restored


def test_threads_auto_takes_the_idle_cores_of_a_model_worth_splitting(monkeypatch):
    """auto: every core when the load average says they are idle, fewer when another process
    keeps them busy (threads on busy cores make each step slower), never fewer than one."""
    from zoo import train

    big = torch.nn.Linear(400, 400)  # 160,400 parameters: above SMALL_MODEL
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(train.os, "cpu_count", lambda: 4)
    for load, expected in ((0.2, 4), (1.1, 3), (2.6, 1), (9.0, 1)):
        monkeypatch.setattr(train.os, "getloadavg", lambda load=load: (load, load, load))
        assert train.pick_threads("auto", big) == expected, load
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(train.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert train.pick_threads("auto", big) == 2  # only the cores this process may use
    assert train.pick_threads("auto", torch.nn.Linear(10, 10)) == 1  # small: one thread regardless
