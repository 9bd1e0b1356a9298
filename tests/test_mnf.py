"""The classify task's parts: network layers, the MNF layers (Louizos & Welling 2017, after
torch-mnf), zoo.classify's classifier, ELBO, metrics, predictive and rotated-digit figure."""

import math

import pytest
import torch
from torch.distributions import Normal

from zoo.classify import (ECE_BINS, LENET, MNF_LENET, Classifier, build_classifier,
                          classification_metrics, elbo_loss, expected_calibration_error,
                          predictive, rotate, rotation_predictions, save_rotation_figure)
from zoo.errors import RecipeError, ShapeError, UnknownComponentError
from zoo.plugins.layers_mnf import MNFConv2d, MNFLinear
from zoo.plugins.network_layers import Conv2d, Linear, MaxPool2d

MNIST_SHAPE = (1, 28, 28)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- the component kind and the parameter counts -----------------------------------------------


def test_network_layers_are_a_kind_that_zoo_list_shows(capsys, registry):
    from zoo.cli import main

    assert {"conv2d", "linear", "max_pool2d", "relu", "flatten", "mnf_linear", "mnf_conv2d"} <= set(
        registry.names("network_layers"))
    assert main(["list", "network_layers"]) == 0
    out = capsys.readouterr().out
    assert "network_layers (" in out and "mnf_conv2d" in out and "[layers_mnf]" in out
    schema = registry.get("network_layers", "mnf_linear").params_schema
    assert schema["required"] == ["out_features"] and schema["additionalProperties"] is False
    assert schema["properties"]["flow_hidden"]["default"] == [50]


def test_torch_mnf_parameter_counts(registry):
    mnf, lenet = build_classifier(MNF_LENET, MNIST_SHAPE, registry), build_classifier(LENET, MNIST_SHAPE, registry)
    assert trainable(mnf) == 696_950  # torch-mnf's README
    assert trainable(lenet) == 258_582
    assert mnf.out_shape == lenet.out_shape == (10,)
    assert mnf(torch.rand(3, *MNIST_SHAPE)).shape == (3, 10)


def test_build_classifier_carries_shapes_and_refuses_bad_entries(registry):
    model = build_classifier([{"name": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
                              {"name": "max_pool2d"}, {"name": "flatten"}, {"name": "linear", "out_features": 3}],
                             (2, 8, 8), registry)
    assert [m.out_shape for m in model.layers] == [(4, 8, 8), (4, 4, 4), (64,), (3,)]
    with pytest.raises(ShapeError, match=r"layer 1 \(linear\), input shape \(4, 6, 6\).*flatten"):
        build_classifier([{"name": "conv2d", "out_channels": 4, "kernel_size": 3},
                          {"name": "linear", "out_features": 3}], (2, 8, 8), registry)
    with pytest.raises(UnknownComponentError, match="mnf_linear"):
        build_classifier([{"name": "mnf_lineer", "out_features": 3}], (4,), registry)
    with pytest.raises(RecipeError, match="layer 0 \\(linear\\).*out_feature"):
        build_classifier([{"name": "linear", "out_feature": 3}], (4,), registry)


@pytest.mark.parametrize("make, shape, message", [
    (lambda s: Linear(s, 3), (1, 4, 4), "flatten"),
    (lambda s: MNFLinear(s, 3), (1, 4, 4), "flatten"),
    (lambda s: Conv2d(s, 2, 3), (16,), "images"),
    (lambda s: MNFConv2d(s, 2, 3), (16,), "images"),
    (lambda s: Conv2d(s, 2, 5), (1, 4, 4), "does not fit the height 4"),
    (lambda s: MNFConv2d(s, 2, 5), (1, 6, 3), "does not fit the width 3"),
    (lambda s: MaxPool2d(s, 4), (1, 3, 3), "does not fit"),
])
def test_a_shape_a_layer_cannot_take_is_a_shape_error(make, shape, message):
    with pytest.raises(ShapeError, match=message):
        make(shape)


# --- the MNF layers -----------------------------------------------------------------------------


def test_mnf_layers_draw_fresh_noise_and_train_every_parameter():
    torch.manual_seed(0)
    layers = [MNFConv2d((2, 6, 6), 3, 3), MNFLinear((5,), 4)]
    inputs = [torch.rand(4, 2, 6, 6), torch.rand(4, 5)]
    for layer, x in zip(layers, inputs):
        layer.eval()  # Bayesian layers sample in evaluation too
        first, second = layer(x), layer(x)
        assert first.shape == (4, *layer.out_shape) and not torch.allclose(first, second)
        kl = layer.kl_divergence()
        assert kl.shape == () and torch.isfinite(kl)
        for _ in range(5):  # a coupling whose random mask keeps every unit passes no gradient
            (layer(x).sum() + layer.kl_divergence()).backward()
        silent = [n for n, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert silent == []


def test_mnf_conv_bias_means_are_a_buffer_as_in_torch_mnf():
    layer = MNFConv2d((1, 5, 5), 3, 3)
    assert "b_mean" in dict(layer.named_buffers()) and "b_mean" not in dict(layer.named_parameters())


def test_mnf_linear_kl_matches_a_monte_carlo_estimate():
    """E[kl_divergence()] = E_{z ~ q(z), W ~ q(W|z)}[log q(W|z) + log q(z) - log p(W) - log r(z|W)],
    the latter written out here with sampled weights (no closed-form Gaussian KL)."""
    torch.manual_seed(0)
    layer = MNFLinear((3,), 2)
    with torch.no_grad():  # away from the init, so that every term of the estimate matters
        layer.W_log_var.fill_(math.log(0.3))
        layer.b_log_var.fill_(math.log(0.2))
        layer.b_mean.copy_(torch.tensor([0.5, -0.3]))
        layer.noise.q0_log_var.fill_(math.log(0.2))
        for p in (layer.noise.q0_mean, layer.noise.r0_c, layer.noise.r0_b1, layer.noise.r0_b2):
            p.copy_(torch.randn_like(p))
    n = 4000
    with torch.no_grad():
        by_layer = torch.stack([layer.kl_divergence() for _ in range(n)])

        noise = layer.noise
        q0 = Normal(noise.q0_mean, (0.5 * noise.q0_log_var).exp())
        z0 = q0.sample((n,))
        z, logdet_q = noise.flow_q(z0)
        log_q_z = q0.log_prob(z0).sum(-1) - logdet_q
        q_W = Normal(z[:, None, :] * layer.W_mean, (0.5 * layer.W_log_var).exp())
        q_b = Normal(layer.b_mean, (0.5 * layer.b_log_var).exp())
        W, b = q_W.sample(), q_b.sample((n,))
        prior = Normal(0.0, 1.0)
        log_q_W = q_W.log_prob(W).sum((1, 2)) + q_b.log_prob(b).sum(-1)
        log_p_W = prior.log_prob(W).sum((1, 2)) + prior.log_prob(b).sum(-1)
        summary = torch.tanh(W @ noise.r0_c).mean(-1, keepdim=True)  # eqs. 9-10
        z_back, logdet_r = noise.flow_r(z)
        r = Normal(noise.r0_b1 * summary, (-0.5 * noise.r0_b2 * summary).exp())  # b2: log-precision
        log_r = r.log_prob(z_back).sum(-1) + logdet_r
        written_out = log_q_W + log_q_z - log_p_W - log_r

    error = math.sqrt(by_layer.var() / n + written_out.var() / n)
    assert error < 0.1  # fine enough to see a dropped constant (e.g. D/2 = 1.5 nats)
    assert abs(by_layer.mean() - written_out.mean()) < 4 * error


# --- loss, metrics, predictive --------------------------------------------------------------------


def test_elbo_loss_is_mean_nll_plus_kl_per_training_example():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    nll = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert elbo_loss(logits, y, torch.tensor(50.0), 100).item() == pytest.approx(nll + 0.5)
    assert elbo_loss(logits, y, 0.0, 100).item() == pytest.approx(nll)


def test_expected_calibration_error_of_a_hand_computed_case():
    probs = torch.tensor([[0.9, 0.1], [0.25, 0.75], [0.55, 0.45], [0.3, 0.7]])
    y = torch.tensor([0, 0, 0, 1])  # confidences 0.9 (right), 0.75 (wrong), 0.55 (right), 0.7 (right)
    # 5 bins of width 0.2: (0.8, 1] holds 0.9: |1 - 0.9| * 1/4; (0.6, 0.8] holds 0.75 and 0.7:
    # |0.5 - 0.725| * 2/4; (0.4, 0.6] holds 0.55: |1 - 0.55| * 1/4.
    assert expected_calibration_error(probs, y, n_bins=5) == pytest.approx(0.025 + 0.1125 + 0.1125)
    assert expected_calibration_error(probs, y, n_bins=1) == pytest.approx(abs(0.75 - 0.725))
    metrics = classification_metrics(probs, y)
    assert metrics["accuracy"] == 0.75
    assert metrics["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.25) + math.log(0.55) + math.log(0.7)) / 4)
    assert metrics["ece"] == expected_calibration_error(probs, y, ECE_BINS)


def test_predictive_samples_vary_for_mnf_and_not_for_lenet(registry):
    torch.manual_seed(0)
    x = torch.rand(3, *MNIST_SHAPE)
    for layers, varies in ((MNF_LENET, True), (LENET, False)):
        model = build_classifier(layers, MNIST_SHAPE, registry).train()
        result = predictive(model, x, samples=7)
        assert result.probs.shape == (7, 3, 10) and model.training  # mode restored
        assert torch.allclose(result.mean.sum(-1), torch.ones(3))
        assert (result.std.max() > 1e-4) == varies
        assert result.entropy.shape == (3,)


def test_classifier_without_bayesian_layers_has_zero_kl():
    model = Classifier([Linear((4,), 2)])
    assert not model.bayesian and model.kl_divergence().item() == 0.0


def test_rotate_turns_counter_clockwise_like_rot90():
    x = torch.rand(2, 1, 7, 7)
    assert torch.allclose(rotate(x, 0), x, atol=1e-6)
    assert torch.allclose(rotate(x, 90), torch.rot90(x, 1, dims=(2, 3)), atol=1e-6)
    assert torch.allclose(rotate(x, 180), x.flip(2, 3), atol=1e-6)


# --- MNF LeNet against LeNet on the embedded digits (slow) ------------------------------------------


def _images_and_labels(split):
    from zoo.data import split_labels

    return torch.stack([split[i][0] for i in range(len(split))]) / 255, split_labels(split)


def _train_one_epoch(model, x, y, batch_size=16, lr=2e-3):
    """One epoch of Adam on the negative ELBO. The 4,000 embedded digits make 250 steps of 16;
    torch-mnf's test has a 60,000-image epoch (1,875 steps of 32), so the batch is halved and the
    step doubled to fit one epoch here."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for batch in order.split(batch_size):
        optimizer.zero_grad()
        elbo_loss(model(x[batch]), y[batch], model.kl_divergence(), len(x)).backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def trained(registry_module):
    from zoo.plugins.datasets_images import mnist

    data = mnist()
    train, val, test = (_images_and_labels(s) for s in (data.train, data.val, data.test))
    models = {}
    for name, layers in (("MNF LeNet", MNF_LENET), ("LeNet", LENET)):
        torch.manual_seed(0)
        models[name] = _train_one_epoch(build_classifier(layers, data.shape, registry_module), *train)
    return models, val, test


@pytest.fixture(scope="module")
def registry_module():
    from zoo.registry import get_registry

    return get_registry()


@pytest.mark.slow
def test_mnf_lenet_reaches_80_percent_within_one_epoch(trained):
    models, (x_val, y_val), _ = trained
    mnf = models["MNF LeNet"]
    with torch.no_grad():  # torch-mnf's test: one stochastic forward pass
        single = (mnf(x_val).argmax(1) == y_val).double().mean().item()
    assert single > 0.8
    assert classification_metrics(predictive(mnf, x_val, 10).mean, y_val)["accuracy"] > 0.8


@pytest.mark.slow
def test_mnf_is_less_sure_than_lenet_of_upside_down_nines(trained, tmp_path):
    models, _, (x_test, y_test) = trained
    nines = x_test[y_test == 9]
    upside_down = rotate(nines, 180)
    entropy = {name: predictive(m, upside_down, 50 if m.bayesian else 1).entropy.mean().item()
               for name, m in models.items()}
    assert entropy["MNF LeNet"] > entropy["LeNet"]

    predictions = {}
    for name, model in models.items():
        rotated, predictions[name] = rotation_predictions(model, nines[0], samples=100)
    assert rotated.shape == (10, *MNIST_SHAPE) and predictions["LeNet"].shape == (10, 100, 10)
    path = save_rotation_figure(tmp_path / "rotated_9.png", rotated, predictions)
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 500
