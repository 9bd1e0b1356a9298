"""Gradient modes on tiny flows: finite gradients, flags, the added reconstruction term, and that
the self-normalized mode gives half the exact gradient when R is the true inverse."""

import jsonschema
import pytest
import torch

from zoo.errors import RecipeError
from zoo.flow import FlowModel
from zoo.plugins.gradient_modes import reconstruction_loss, selfnorm_layers
from zoo.plugins.layers_glow import ActNorm
from zoo.plugins.layers_selfnorm import ExactFC, SelfNormConv, SelfNormFC
from zoo.plugins.losses import nll

MODES = [
    ("exact", {}),
    ("self_normalized", {}),
    ("self_normalized", {"recon_loss_weight": 0.5, "symmetric": True}),
    ("reconstruction_augmented", {}),
    ("reconstruction_augmented", {"base": "self_normalized", "symmetric": True}),
]


def fc_model(dim=3):
    torch.manual_seed(0)
    return FlowModel([SelfNormFC((dim,)), ActNorm((dim,)), SelfNormFC((dim,), bias=False)], (dim,))


def conv_model(shape=(2, 3, 3)):
    torch.manual_seed(0)
    return FlowModel([SelfNormConv(shape), SelfNormConv(shape, kernel_size=1)], shape)


def step_grads(mode, model, x):
    model.train()
    model.zero_grad(set_to_none=True)
    loss, logs = mode.loss(model, x, nll())
    loss.backward()
    return loss, logs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("make", [fc_model, conv_model], ids=["fc", "conv"])
@pytest.mark.parametrize("name,params", MODES)
def test_every_mode_gives_finite_gradients(registry, make, name, params):
    model = make()
    x = torch.randn(8, *model.shape)
    model.initialize(x)
    mode = registry.get("gradient_modes", name).factory(**params)
    mode.prepare(model)
    loss, logs, grads = step_grads(mode, model, x)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert logs and all(isinstance(v, float) for v in logs.values())
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    trains_r = name == "self_normalized" or params.get("base") == "self_normalized" or "recon" in logs
    got_r = [n for n in grads if n.endswith(("inverse_weight", "inverse_weight_t"))]
    assert bool(got_r) == trains_r


def test_prepare_sets_the_layer_flags(registry):
    model = fc_model()
    registry.get("gradient_modes", "self_normalized").factory().prepare(model)
    assert [m.self_normalized for m in selfnorm_layers(model)] == [True, True]
    registry.get("gradient_modes", "reconstruction_augmented").factory().prepare(model)
    assert [m.self_normalized for m in selfnorm_layers(model)] == [False, False]


def test_training_under_self_normalized_reports_zero_logdet_and_eval_is_exact(registry):
    model = fc_model()
    x = torch.randn(5, 3)
    model.initialize(x)
    model.eval()
    with torch.no_grad():
        exact = model.log_prob(x)
    registry.get("gradient_modes", "self_normalized").factory().prepare(model)
    model.train()
    with torch.no_grad():
        z, logdet = model(x)
        actnorm_logdet = model.layers[1](model.layers[0](x)[0])[1]
    torch.testing.assert_close(logdet, actnorm_logdet)  # only the actnorm's log-determinant
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(x), exact)


def test_reconstruction_augmented_adds_exactly_lambda_times_recon(registry):
    model = fc_model()
    x = torch.randn(6, 3)
    model.initialize(x)
    get = registry.get
    exact_loss, _, exact_grads = step_grads(get("gradient_modes", "exact").factory(), model, x)
    weight = 0.7
    mode = get("gradient_modes", "reconstruction_augmented").factory(recon_loss_weight=weight)
    mode.prepare(model)
    aug_loss, logs, aug_grads = step_grads(mode, model, x)

    model.zero_grad(set_to_none=True)
    recon = reconstruction_loss(model)  # uses the inputs of the last training forward
    recon.backward()
    recon_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(aug_loss, exact_loss + weight * recon.detach())
    assert logs["recon"] == pytest.approx(recon.item())
    for n, g in aug_grads.items():
        want = exact_grads.get(n, torch.zeros_like(g)) + weight * recon_grads.get(n, torch.zeros_like(g))
        torch.testing.assert_close(g, want)


def test_self_normalized_is_reconstruction_augmented_on_the_self_normalized_base(registry):
    x = torch.randn(6, 3)
    results = []
    for name, params in [("self_normalized", {"recon_loss_weight": 2.0}),
                         ("reconstruction_augmented", {"base": "self_normalized", "recon_loss_weight": 2.0})]:
        model = fc_model()
        model.initialize(x)
        mode = registry.get("gradient_modes", name).factory(**params)
        mode.prepare(model)
        results.append(step_grads(mode, model, x))
    torch.testing.assert_close(results[0][0], results[1][0])
    for n in results[0][2]:
        torch.testing.assert_close(results[0][2][n], results[1][2][n])


def test_self_normalized_mode_halves_the_exact_gradient_at_the_true_inverse(registry):
    torch.manual_seed(1)
    model = FlowModel([SelfNormFC((4,))], (4,)).double()
    layer = model.layers[0]
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn(4, 4, dtype=torch.float64))
        layer.inverse_weight.copy_(torch.linalg.inv(layer.weight))
    x = torch.randn(9, 4, dtype=torch.float64)
    _, _, exact = step_grads(registry.get("gradient_modes", "exact").factory(), model, x)
    sn_mode = registry.get("gradient_modes", "self_normalized").factory(recon_loss_weight=0.0)
    sn_mode.prepare(model)
    _, _, sn = step_grads(sn_mode, model, x)
    torch.testing.assert_close(sn["layers.0.weight"], 0.5 * exact["layers.0.weight"])


def test_modes_on_models_without_selfnorm_layers(registry):
    model = FlowModel([ExactFC((3,))], (3,))
    x = torch.randn(4, 3)
    with pytest.warns(UserWarning, match="without self-normalizing layers"):
        registry.get("gradient_modes", "self_normalized").factory().prepare(model)
    loss, logs, grads = step_grads(registry.get("gradient_modes", "self_normalized").factory(), model, x)
    assert logs["recon"] == 0.0 and torch.isfinite(loss) and "layers.0.weight" in grads


def test_params_are_validated(registry):
    schema = registry.get("gradient_modes", "reconstruction_augmented").params_schema
    jsonschema.validate({"base": "self_normalized", "recon_loss_weight": 100, "symmetric": True}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"base": "relative"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"lambda": 1.0}, registry.get("gradient_modes", "self_normalized").params_schema)
    factory = registry.get("gradient_modes", "reconstruction_augmented").factory
    with pytest.raises(RecipeError, match="recon_loss_weight"):
        factory(recon_loss_weight=-1.0)
    with pytest.raises(RecipeError, match="base"):
        factory(base="relative")
