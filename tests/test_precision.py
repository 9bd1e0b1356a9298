"""zoo.precision: train.precision (bf16), train.checkpoint_grads and train.compile.

Checkpointed gradients are compared with the plain path's in float64 on small versions of the
recipes (Glow, self-normalized Glow with its custom backward, the Inverse-Flow and Emerging /
conv-exp layers, a conditional flow); bf16 is exercised through CPU autocast by forcing the
device type, since runs refuse bf16 on a CPU."""

from __future__ import annotations

import copy
import json
from contextlib import nullcontext

import pytest
import torch

import zoo
from zoo import assemble, precision
from zoo.errors import RecipeError, TrainingError
from zoo.tasks import split_item

SMALL = {  # one or two steps per block, narrow networks: seconds, not minutes
    "glow_mnist_small": ["model.layers.1.repeat=2", "model.layers.4.repeat=2",
                         "model.layers.1.layers.2.hidden=8", "model.layers.4.layers.2.hidden=8"],
    "selfnorm_glow_mnist": ["model.layers.1.repeat=2", "model.layers.4.repeat=2",
                            "model.layers.1.layers.2.width=8", "model.layers.4.layers.2.width=8",
                            "model.layers.2.width=8"],
    "if_glow_mnist": ["model.layers.1.repeat=1", "model.layers.4.repeat=1",
                      "model.layers.1.layers.3.width=8", "model.layers.2.width=8"],
    "exponential_cnn_mnist": ["model.layers.0.repeat=1", "model.layers.2.repeat=1",
                              "model.layers.4.repeat=1"],
    "emerging_cnn_mnist": ["model.layers.0.repeat=1", "model.layers.2.repeat=1",
                           "model.layers.4.repeat=1"],
    "cond_realnvp_moons": ["model.layers.0.repeat=3"],
}
# the symmetric reconstruction loss (not fused into the layers' forward) over the same model
SMALL["selfnorm_glow_mnist symmetric"] = [*SMALL["selfnorm_glow_mnist"],
                                         "gradient_mode.name=reconstruction_augmented",
                                         "gradient_mode.base=self_normalized", "gradient_mode.symmetric=true"]
CPU = torch.device("cpu")
TINY_RUN = ["train.epochs=2", "train.max_steps_per_epoch=3", "train.max_eval_examples=256",
            "train.eval_every=1", "train.n_samples=4"]


def parts(name: str, dtype=torch.float64, batch: int = 4):
    """Model (initialised on a first batch), task, gradient mode, loss, batch of a small recipe."""
    recipe = zoo.load_recipe(name.split()[0], overrides=SMALL[name])
    dataset = assemble.build_dataset(recipe)
    torch.manual_seed(0)
    labels = assemble.label_facts(dataset, recipe.component("dataset")[0])
    model = assemble.build_model(recipe, shape=dataset.shape, n_bits=dataset.n_bits, labels=labels).to(dtype)
    x, y = split_item(torch.utils.data.default_collate([dataset.train[i] for i in range(batch)]), CPU)
    x = x.to(dtype)
    task = assemble.build_task(recipe)
    task.initialize(model, x, y)
    mode = assemble.build_gradient_mode(recipe)
    mode.prepare(model)
    return recipe, model, task, mode, assemble.build_objective(recipe, dataset), x, y


def step(recipe, model, task, mode, loss_fn, x, y, checkpointed: bool):
    """One training step's loss and gradients, and the buffers after it."""
    model.checkpoint_steps = precision.step_segments(recipe) if checkpointed else None
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the dequantization noise: the same draws on both paths
    loss, _ = task.step_loss(model, x, y, mode, loss_fn)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}


def strengthen_conv_exp(model) -> None:
    """Kernels large enough that conv_exp's spectral normalisation acts (sigma > coeff), so its
    gradient depends on the power-iteration buffers."""
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "spectral_u"):
                m.kernel.mul_(30)
                assert m.spectral_norm_estimate() > m.coeff


def test_segments_are_flow_steps():
    recipe = zoo.load_recipe("glow_mnist_small")
    segments = precision.step_segments(recipe)
    names = [name for _, name, _ in recipe.layers()]
    # preamble and squeeze each alone, then one segment per repeat copy of the step
    assert segments[:4] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [names[i] for i in range(*segments[4])] == ["actnorm", "conv1x1", "affine_coupling"]
    assert sum(1 for a, b in segments if b - a == 3) == 16
    assert segments[-1][1] == len(names) and all(a < b for a, b in segments)


@pytest.mark.parametrize("name", list(SMALL))
def test_checkpointed_gradients_equal_the_plain_ones(name):
    recipe, model, task, mode, loss_fn, x, y = parts(name)
    if name == "exponential_cnn_mnist":
        strengthen_conv_exp(model)
    other = copy.deepcopy(model)
    plain_loss, plain, plain_buffers = step(recipe, model, task, mode, loss_fn, x, y, False)
    loss, grads, buffers = step(recipe, other, task, mode, loss_fn, x, y, True)
    assert loss.dtype == torch.float64 and torch.equal(loss, plain_loss)
    assert plain.keys() == grads.keys() and len(grads) > 5
    for key in plain:
        torch.testing.assert_close(grads[key], plain[key], rtol=1e-10, atol=1e-12, msg=key)
    for key in plain_buffers:  # e.g. conv_exp's power iteration ran once, not twice
        assert torch.equal(buffers[key], plain_buffers[key]), key


def test_without_the_buffer_replay_conv_exp_gradients_differ(monkeypatch):
    """The replay is what keeps conv_exp exact: without it the recomputation runs the power
    iteration again and differentiates another normalised kernel."""
    recipe, model, task, mode, loss_fn, x, y = parts("exponential_cnn_mnist")
    strengthen_conv_exp(model)
    other = copy.deepcopy(model)
    _, plain, _ = step(recipe, model, task, mode, loss_fn, x, y, False)
    monkeypatch.setattr(precision._Replay, "recompute", lambda self: nullcontext())
    _, grads, _ = step(recipe, other, task, mode, loss_fn, x, y, True)
    assert max((grads[k] - plain[k]).abs().max().item() for k in plain) > 1e-3


def test_checkpointing_keeps_far_fewer_activations():
    """What autograd saves outside the checkpointed steps (each step's input, the base) against
    everything the plain forward saves."""
    recipe, model, _task, mode, loss_fn, x, _ = parts("glow_mnist_small", torch.float32, batch=8)

    def saved_bytes(checkpointed: bool) -> int:
        model.checkpoint_steps = precision.step_segments(recipe) if checkpointed else None
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            mode.loss(model, x, loss_fn)
        return total[0]

    plain, checkpointed = saved_bytes(False), saved_bytes(True)
    assert checkpointed < 0.3 * plain, (checkpointed, plain)  # 0.25 at width 8; less when wider


def test_checkpointing_refuses_an_uninitialised_actnorm():
    recipe = zoo.load_recipe("glow_mnist_small", overrides=SMALL["glow_mnist_small"])
    model = zoo.build_model(recipe)
    model.checkpoint_steps = precision.step_segments(recipe)
    with pytest.raises(TrainingError, match="initialize"):
        model.log_prob(torch.rand(2, 1, 28, 28) * 255)


def test_a_checkpoint_grads_run_trains_as_the_plain_run(tmp_path):
    losses = {}
    for flag in ("false", "true"):
        recipe = zoo.load_recipe("realnvp_moons", overrides=[*TINY_RUN, f"train.checkpoint_grads={flag}"])
        zoo.run(recipe, out=tmp_path / flag, progress=False, log=lambda *a: None)
        losses[flag] = [value for r in map(json.loads, (tmp_path / flag / "metrics.jsonl").read_text().splitlines())
                        for value in (r["train_loss"], r["val_nll"])]
    assert len(losses["true"]) == 4  # 2 epochs
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-6)


# --- bf16 ----------------------------------------------------------------------------------------


def test_bf16_autocast_keeps_log_dets_and_loss_in_float32():
    """CPU autocast stands in for CUDA's: the layers compute in bfloat16, the log-det sum, the
    base log-density and the loss stay float32, close to the float32 values."""
    _recipe, model, _task, mode, loss_fn, x, _y = parts("glow_mnist_small", torch.float32, batch=8)
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    torch.manual_seed(1)
    reference = model.log_prob(x)
    torch.manual_seed(1)
    with precision.autocast("bf16", "cpu"):
        _z, logdet = model(x)
        torch.manual_seed(1)
        log_p = model.log_prob(x)
        torch.manual_seed(1)
        loss, _ = mode.loss(model, x, loss_fn)
    assert seen[-1] == torch.bfloat16  # the layers' arithmetic did run in bfloat16
    assert logdet.dtype == log_p.dtype == loss.dtype == torch.float32
    torch.testing.assert_close(log_p, reference, rtol=2e-2, atol=1.0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert precision.autocast("float32", "cpu").__class__ is nullcontext


def test_bf16_self_normalized_step_runs_under_autocast():
    _recipe, model, task, mode, loss_fn, x, y = parts("selfnorm_glow_mnist", torch.float32)
    with precision.autocast("bf16", "cpu"):
        loss, _ = task.step_loss(model, x, y, mode, loss_fn)
    loss.backward()  # its custom backward used to mix bf16 gradients with float32 weights
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bf16_on_cpu_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    def built(*a, **k):
        raise AssertionError("built the dataset before refusing")

    monkeypatch.setattr(assemble, "build_dataset", built)
    recipe = zoo.load_recipe("realnvp_moons", overrides=["train.precision=bf16", "train.device=cpu"])
    with pytest.raises(RecipeError) as info:
        zoo.run(recipe, out=tmp_path / "run", progress=False, log=lambda *a: None)
    message = str(info.value)
    assert "$.train.precision" in message and "realnvp_moons" in message
    assert "train.precision=float32" in message
    assert not (tmp_path / "run").exists()


# --- refusals of compile and checkpoint_grads ------------------------------------------------------


def test_compile_without_a_cpp_compiler_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(precision.shutil, "which", lambda name: None)
    recipe = zoo.load_recipe("realnvp_moons", overrides=["train.compile=true", "train.device=cpu"])
    with pytest.raises(RecipeError, match=r"\$\.train\.compile: .*C\+\+ compiler.*train\.compile=false"):
        zoo.run(recipe, out=tmp_path / "run", progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, overrides, key", [
    ("realnvp_moons", ["train.compile=true", "train.checkpoint_grads=true"], "$.train.compile"),
    ("lenet_mnist", ["train.checkpoint_grads=true"], "$.train.checkpoint_grads"),
])
def test_settings_that_cannot_work_together_are_refused(name, overrides, key):
    recipe = zoo.load_recipe(name, overrides=overrides)
    with pytest.raises(RecipeError) as info:
        precision.check(recipe, CPU)
    assert key in str(info.value) and name in str(info.value)


@pytest.mark.slow
def test_a_compiled_tiny_run_matches_the_eager_one(tmp_path):
    """train.compile=true (inductor on the CPU: about 20 s of compiling for this model)."""
    if precision.compile_problem(CPU):
        pytest.skip(f"torch.compile cannot run on this machine: {precision.compile_problem(CPU)}")
    losses = {}
    for flag in ("false", "true"):
        recipe = zoo.load_recipe("realnvp_moons", overrides=[*TINY_RUN, "model.layers.0.repeat=2",
                                                              f"train.compile={flag}"])
        result = zoo.run(recipe, out=tmp_path / flag, progress=False, log=lambda *a: None)
        if flag == "true":
            from torch._dynamo.utils import counters

            assert counters["stats"]["unique_graphs"] >= 1  # it did compile
            assert result.metrics["test_nll"] == pytest.approx(1.9, abs=0.2)  # evaluation eager
        losses[flag] = [value for r in map(json.loads, (tmp_path / flag / "metrics.jsonl").read_text().splitlines())
                        for value in (r["train_loss"], r["val_nll"])]
    assert len(losses["true"]) == 4  # 2 epochs
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-5)
