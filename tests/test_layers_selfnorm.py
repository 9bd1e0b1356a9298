"""Self-normalizing layers: the custom gradients against independently written formulas (float64),
the reconstruction loss, exact/self-normalized switching, inverses and caches."""

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import RecipeError, ShapeError
from zoo.flow import standard_normal_log_prob
from zoo.plugins._selfnorm_ops import conv_matrix, flip_kernel, tap_counts
from zoo.plugins.layers_selfnorm import ExactConv, ExactFC, SelfNormConv, SelfNormFC

DTYPE = torch.float64


def nll(layer, x, reduce="mean"):
    y, logdet = layer(x)
    per_sample = -(standard_normal_log_prob(y) + logdet)
    return per_sample.mean() if reduce == "mean" else per_sample.sum()


def grads(layer, x, reduce="mean"):
    """Gradients of the NLL with respect to every parameter and to x."""
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    nll(layer, x, reduce).backward()
    out = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    if "inverse_weight_t" in out:  # FC stores R transposed: report the gradient of R itself
        out["inverse_weight"] = out.pop("inverse_weight_t").t()
    out["x"] = x.grad.clone()
    return out


def r_grad(layer):
    """The gradient of R, whichever way the layer stores it."""
    if hasattr(layer, "inverse_weight_t"):
        return layer.inverse_weight_t.grad.t().clone()
    return layer.inverse_weight.grad.clone()


def fc_layer(dim=4, seed=0, bias=True):
    torch.manual_seed(seed)
    layer = SelfNormFC((dim,), bias=bias).to(DTYPE).train()
    with torch.no_grad():  # a W far from the identity, so the test means something
        layer.weight.add_(0.3 * torch.randn(dim, dim, dtype=DTYPE))
    return layer


def conv_layer(shape=(2, 4, 3), kernel_size=3, seed=0):
    torch.manual_seed(seed)
    layer = SelfNormConv(shape, kernel_size=kernel_size).to(DTYPE).train()
    with torch.no_grad():
        layer.weight.add_(0.1 * torch.randn_like(layer.weight))
        layer.inverse_weight.add_(0.1 * torch.randn_like(layer.inverse_weight))
    return layer


# --- FC: at R = W^-1 the self-normalized gradient is half the exact one --------------------------


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_fc_weight_gradient_is_half_the_exact_gradient_at_the_true_inverse(reduce):
    layer = fc_layer()
    with torch.no_grad():
        layer.inverse_weight.copy_(torch.linalg.inv(layer.weight))
    x = torch.randn(7, 4, dtype=DTYPE)
    layer.self_normalized = False
    exact = grads(layer, x, reduce)
    layer.self_normalized = True
    selfnorm = grads(layer, x, reduce)
    torch.testing.assert_close(selfnorm["weight"], 0.5 * exact["weight"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(selfnorm["x"], exact["x"], rtol=1e-12, atol=1e-12)  # input: exact
    torch.testing.assert_close(selfnorm["bias"], exact["bias"], rtol=1e-12, atol=1e-12)  # bias: full


def test_fc_inverse_gradient_is_half_the_exact_gradient_of_the_inverse_flow():
    """dR = 1/2 d/dR of the NLL of the flow parameterised by its inverse, z = R^-1 x + b, at R = W^-1."""
    layer = fc_layer(seed=1)
    with torch.no_grad():
        layer.inverse_weight.copy_(torch.linalg.inv(layer.weight))
    x = torch.randn(6, 4, dtype=DTYPE)
    layer.self_normalized = True
    selfnorm = grads(layer, x)

    r = layer.inverse_weight.detach().clone().requires_grad_(True)
    z = torch.linalg.solve(r, x.t()).t() + layer.bias.detach()
    nll_g = -(standard_normal_log_prob(z) - torch.linalg.slogdet(r)[1]).mean()
    (exact_r,) = torch.autograd.grad(nll_g, r)
    torch.testing.assert_close(selfnorm["inverse_weight"], 0.5 * exact_r, rtol=1e-10, atol=1e-12)


def test_fc_gradients_match_the_written_out_formula_away_from_the_true_inverse():
    layer = fc_layer(seed=2)
    x = torch.randn(5, 4, dtype=DTYPE)
    layer.self_normalized = True
    got = grads(layer, x)
    w, r, b = layer.weight.detach(), layer.inverse_weight.detach(), layer.bias.detach()
    z = x @ w.t()
    g = (z + b) / x.shape[0]  # dL/dz of the batch-mean NLL with a standard-normal base
    torch.testing.assert_close(got["weight"], 0.5 * (g.t() @ x - r.t()))
    torch.testing.assert_close(got["inverse_weight"], 0.5 * (-(g @ w).t() @ z + w.t()))


# --- conv: the custom gradients against autograd of the written-out formula -----------------------


def independent_tap_counts(shape, kernel_size, padding):
    """How many entries of the convolution matrix each tap fills, by building it per tap."""
    c = shape[0]
    counts = torch.zeros(c, c, kernel_size, kernel_size, dtype=DTYPE)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in counts.shape)):
        onehot = torch.zeros_like(counts)
        onehot[tuple(idx)] = 1.0
        x = torch.eye(c * shape[1] * shape[2], dtype=DTYPE).reshape(-1, *shape)
        counts[tuple(idx)] = F.conv2d(x, onehot, padding=padding).ne(0).sum()
    return counts


def test_tap_counts():
    torch.testing.assert_close(tap_counts((2, 4, 3), (2, 2, 3, 3), 1, "cpu", DTYPE),
                               independent_tap_counts((2, 4, 3), 3, 1))
    m = tap_counts((1, 28, 28), (1, 1, 3, 3), 1, "cpu", DTYPE)[0, 0]
    assert (m[1, 1].item(), m[0, 1].item(), m[0, 0].item()) == (784, 756, 729)  # the seed's numbers


@pytest.mark.parametrize("kernel_size", [3, 1])
def test_conv_gradients_match_the_written_out_formula(kernel_size):
    layer = conv_layer(kernel_size=kernel_size)
    shape, p = layer.out_shape, layer.padding
    x = torch.randn(5, *shape, dtype=DTYPE)
    layer.self_normalized = False
    exact = grads(layer, x)
    layer.self_normalized = True
    got = grads(layer, x)

    w = layer.weight.detach().clone().requires_grad_(True)
    r = layer.inverse_weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach()
    m = independent_tap_counts(shape, kernel_size, p)
    z = F.conv2d(x, w, padding=p)
    data_nll = -standard_normal_log_prob(z + b.view(1, -1, 1, 1)).mean()  # the NLL without logdet
    data_w, g = torch.autograd.grad(data_nll, (w, z))
    gx = F.conv_transpose2d(g, w.detach(), padding=p)  # dL/dx = W^T g
    (data_r,) = torch.autograd.grad((-gx * F.conv2d(z.detach(), r, padding=p)).sum(), r)

    torch.testing.assert_close(got["weight"], 0.5 * (data_w - m * flip_kernel(r.detach())))
    torch.testing.assert_close(got["inverse_weight"], 0.5 * (data_r + m * flip_kernel(w.detach())))
    torch.testing.assert_close(got["x"], exact["x"])  # the input gradient is exact
    torch.testing.assert_close(got["bias"], exact["bias"])  # the bias gradient is full


def test_conv_with_exact_inverse_kernel_matches_half_the_exact_gradient_for_1x1():
    """For a 1x1 kernel R = W^-1 is a convolution, so the FC identity holds for conv too."""
    layer = conv_layer(kernel_size=1, seed=3)
    with torch.no_grad():
        inv = torch.linalg.inv(layer.weight[:, :, 0, 0])
        layer.inverse_weight.copy_(inv[:, :, None, None])
    x = torch.randn(4, *layer.out_shape, dtype=DTYPE)
    layer.self_normalized = False
    exact = grads(layer, x)
    layer.self_normalized = True
    got = grads(layer, x)
    torch.testing.assert_close(got["weight"], 0.5 * exact["weight"], rtol=1e-12, atol=1e-12)


# --- reconstruction loss ------------------------------------------------------------------------


def recon_grads(layer, x, symmetric):
    layer.train()
    layer(x)
    layer.zero_grad(set_to_none=True)
    layer.reconstruction_loss(symmetric=symmetric).mean().backward()
    return layer.weight.grad.clone(), r_grad(layer)


@pytest.mark.parametrize("symmetric", [False, True])
def test_fc_reconstruction_gradient_matches_the_paper_formula(symmetric):
    layer = fc_layer(seed=4)
    x = torch.randn(6, 4, dtype=DTYPE)
    got_w, got_r = recon_grads(layer, x, symmetric)
    w, r, n = layer.weight.detach(), layer.inverse_weight.detach(), x.shape[0]
    z = x @ w.t()
    residual = z @ r.t() - x  # x_hat - x
    dw, dr = 2 * r.t() @ residual.t() @ x / n, 2 * residual.t() @ z / n  # arXiv 2011.07248, eq. 7
    if symmetric:  # || z - W R z ||^2 with z detached: dW = 2 (z_hat - z)(R z)^T, dR = 2 W^T (z_hat - z) z^T
        rz = z @ r.t()
        residual_z = rz @ w.t() - z
        dw = 0.5 * (dw + 2 * residual_z.t() @ rz / n)
        dr = 0.5 * (dr + 2 * w.t() @ residual_z.t() @ z / n)
    torch.testing.assert_close(got_w, dw)
    torch.testing.assert_close(got_r, dr)


@pytest.mark.parametrize("symmetric", [False, True])
def test_conv_reconstruction_gradient_matches_dense_matrices(symmetric):
    layer = conv_layer(seed=5)
    shape, p = layer.out_shape, layer.padding
    x = torch.randn(4, *shape, dtype=DTYPE)
    got_w, got_r = recon_grads(layer, x, symmetric)

    w = layer.weight.detach().clone().requires_grad_(True)
    r = layer.inverse_weight.detach().clone().requires_grad_(True)
    mw, mr = conv_matrix(w, shape, p), conv_matrix(r, shape, p)
    flat = x.flatten(1).t()
    z = mw @ flat
    loss = (flat - mr @ z).pow(2).sum(0)
    if symmetric:
        zd = z.detach()
        loss = 0.5 * (loss + (zd - mw @ (mr @ zd)).pow(2).sum(0))
    want_w, want_r = torch.autograd.grad(loss.mean(), (w, r))
    torch.testing.assert_close(got_w, want_w)
    torch.testing.assert_close(got_r, want_r)


def test_conv_matrix_is_the_jacobian_of_the_convolution():
    layer = conv_layer(seed=6)
    x0 = torch.randn(1, *layer.out_shape, dtype=DTYPE)
    jac = torch.autograd.functional.jacobian(
        lambda v: F.conv2d(v, layer.weight.detach(), padding=1).flatten(), x0
    ).reshape(x0.numel(), x0.numel())
    torch.testing.assert_close(conv_matrix(layer.weight.detach(), layer.out_shape, 1), jac)


def test_reconstruction_loss_needs_a_training_forward():
    with pytest.raises(RuntimeError, match="training-mode forward"):
        SelfNormFC((3,)).reconstruction_loss()


# --- mode switching, inverses, caches -----------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: fc_layer(), lambda: conv_layer()])
def test_eval_is_exact_whatever_the_flag_and_training_reports_zero(make):
    layer = make()
    x = torch.randn(3, *layer.out_shape, dtype=DTYPE)
    layer.eval()
    _, exact = layer(x)
    layer.self_normalized = True
    _, still_exact = layer(x)
    torch.testing.assert_close(still_exact, exact)
    assert exact.abs().max() > 1e-3  # a real log-determinant
    layer.train()
    y, zero = layer(x)
    assert torch.equal(zero, torch.zeros(3, dtype=DTYPE))
    layer.self_normalized = False
    y2, trained_exact = layer(x)
    torch.testing.assert_close(trained_exact, exact)
    torch.testing.assert_close(y, y2)


def test_eval_logdet_cache_follows_the_weights():
    layer = fc_layer().eval()
    x = torch.randn(2, 4, dtype=DTYPE)
    with torch.no_grad():
        _, before = layer(x)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.train()
    nll(layer, x).backward()
    optimizer.step()
    layer.eval()
    with torch.no_grad():
        _, after = layer(x)
    torch.testing.assert_close(after[0], torch.linalg.slogdet(layer.weight)[1])
    assert not torch.allclose(before, after)


def test_fast_inverse_uses_r_and_the_default_inverse_is_exact():
    layer = fc_layer().eval()
    x = torch.randn(3, 4, dtype=DTYPE)
    with torch.no_grad():
        y, _ = layer(x)
        torch.testing.assert_close(layer.inverse(y), x)
        layer.fast_inverse = True
        approximate = layer.inverse(y)  # R = W^T at init, W far from orthogonal here
        assert not torch.allclose(approximate, x, atol=1e-3)
        torch.testing.assert_close(approximate, (y - layer.bias) @ layer.inverse_weight.t())
        layer.inverse_weight.copy_(torch.linalg.inv(layer.weight))
        torch.testing.assert_close(layer.inverse(y), x)


def test_conv_fast_inverse_is_the_r_convolution():
    layer = conv_layer().eval()
    x = torch.randn(2, *layer.out_shape, dtype=DTYPE)
    with torch.no_grad():
        y, _ = layer(x)
        torch.testing.assert_close(layer.inverse(y), x)
        layer.fast_inverse = True
        want = F.conv2d(y - layer.bias.view(1, -1, 1, 1), layer.inverse_weight, padding=1)
        torch.testing.assert_close(layer.inverse(y), want)


def test_initial_r_is_the_transpose_of_w():
    fc = SelfNormFC((5,))
    torch.testing.assert_close(fc.inverse_weight, fc.weight.t())
    conv = SelfNormConv((2, 3, 3), kernel_size=3)
    torch.testing.assert_close(conv.inverse_weight, conv.weight.flip(2, 3).transpose(0, 1))
    torch.testing.assert_close(conv.weight[:, :, 1, 1], torch.eye(2), atol=0.1, rtol=0)


def test_exact_twins_have_no_inverse_weight_and_the_same_map():
    torch.manual_seed(0)
    twin = ExactConv((2, 3, 3))
    torch.manual_seed(0)
    selfnorm = SelfNormConv((2, 3, 3))
    assert not hasattr(twin, "inverse_weight") and not hasattr(twin, "reconstruction_loss")
    x = torch.randn(2, 2, 3, 3)
    torch.testing.assert_close(twin(x)[0], selfnorm(x)[0])
    assert [n for n, _ in ExactFC((3,)).named_parameters()] == ["weight", "bias"]


def test_shape_and_param_errors_say_the_fix():
    with pytest.raises(ShapeError, match="flatten"):
        SelfNormFC((1, 2, 2))
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        SelfNormConv((4,))
    with pytest.raises(RecipeError, match="odd"):
        SelfNormConv((1, 4, 4), kernel_size=2)
    with pytest.raises(RecipeError, match="Omit `padding`"):
        ExactConv((1, 4, 4), kernel_size=3, padding=0)
    with pytest.raises(ShapeError, match="dense"):
        ExactConv((64, 32, 32), kernel_size=3)
    ExactConv((64, 32, 32), kernel_size=1)  # 1x1 kernels need no dense matrix


@pytest.mark.parametrize("bias", [True, False])
def test_fused_reconstruction_gives_the_same_values_and_gradients(bias):
    """The FC forward can compute ||x - R W x||^2 itself; loss and gradients are unchanged."""
    x = torch.randn(6, 4, dtype=DTYPE)
    results = []
    for fuse in (False, True):
        layer = fc_layer(seed=7, bias=bias)
        layer.self_normalized, layer.fuse_reconstruction = True, fuse
        xr = x.clone().requires_grad_(True)
        y, logdet = layer(xr)
        recon = layer.reconstruction_loss()
        loss = -(standard_normal_log_prob(y) + logdet).mean() + 0.7 * recon.mean()
        loss.backward()
        results.append((recon.detach(), xr.grad, {n: p.grad for n, p in layer.named_parameters()}))
    (recon0, gx0, g0), (recon1, gx1, g1) = results
    torch.testing.assert_close(recon1, recon0)
    torch.testing.assert_close(gx1, gx0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name])


@pytest.mark.parametrize("make", [lambda: fc_layer(dim=5), lambda: conv_layer()], ids=["fc", "conv"])
def test_eval_logdet_is_fresh_after_a_fused_optimizer_step(make):
    """Fused Adam updates in place without bumping _version: the cache must still notice."""
    from zoo.assemble import build_optimizer

    layer = make()
    x = torch.randn(4, *layer.out_shape, dtype=DTYPE)
    layer.eval()
    with torch.no_grad():
        before = layer(x)[1]  # fills the cache
    layer.train()
    optimizer = build_optimizer(layer, {"lr": 0.05})
    nll(layer, x).backward()
    optimizer.step()
    layer.eval()
    with torch.no_grad():
        after = layer(x)[1]
    clone = make()  # the same weights in a fresh layer: no cache

    clone.load_state_dict(layer.state_dict())
    clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(after, clone(x)[1])
    assert not torch.allclose(after, before)

