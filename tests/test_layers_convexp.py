"""conv_exp: logdet against the dense matrix, training vs eval, the spectral-norm estimate,
the Householder mixing and shape errors. (The contract checks run from test_layer_contract.py.)"""

import pytest
import torch
import torch.nn.functional as F

from zoo.errors import RecipeError, ShapeError
from zoo.plugins.layers_convexp import ConvExp, conv_exp_series

F64 = torch.float64


def make(shape=(3, 6, 6), seed=0, kernel_scale=None, **params) -> ConvExp:
    torch.manual_seed(seed)
    layer = ConvExp(shape, **params).double()
    if kernel_scale is not None:  # a kernel whose norm is well above coeff: normalisation acts
        with torch.no_grad():
            layer.kernel.normal_(0.0, kernel_scale)
            for _ in range(50):
                layer.power_iteration()
    with torch.no_grad():  # non-zero biases, so they are exercised too
        layer.pre_bias.normal_(0.0, 0.1)
        layer.post_bias.normal_(0.0, 0.1)
    return layer


def dense_conv_matrix(kernel: torch.Tensor, shape) -> torch.Tensor:
    """The (D, D) matrix of the 3x3, padding-1 convolution on per-sample shape (C, H, W)."""
    d = torch.Size(shape).numel()
    basis = torch.eye(d, dtype=kernel.dtype).reshape(d, *shape)
    return F.conv2d(basis, kernel, padding=1).reshape(d, d).T


def test_logdet_equals_slogdet_of_the_dense_matrix_3x6x6():
    layer = make(kernel_scale=0.3).eval()
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    _, logdet = layer(x)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x[:1]).reshape(108, 108)
    sign, brute = torch.linalg.slogdet(jacobian)
    assert sign.item() != 0
    assert logdet[0].item() == pytest.approx(brute.item(), abs=1e-9)
    assert torch.equal(logdet[0], logdet[1])  # linear: the same for every sample
    # and it is the matrix exponential of the dense convolution matrix, times the 1x1 mixing
    m = dense_conv_matrix(layer.normalized_kernel().detach(), (3, 6, 6))
    mixing = torch.kron(layer.mixing.matrix().detach(), torch.eye(36, dtype=F64))
    assert torch.allclose(jacobian, torch.linalg.matrix_exp(m) @ mixing, atol=1e-12)


def test_eval_round_trip_to_float64_precision_even_with_a_large_coeff():
    for coeff in (0.9, 3.0):
        layer = make(kernel_scale=1.0, coeff=coeff).eval()
        x = torch.randn(4, 3, 6, 6, dtype=F64)
        z, _ = layer(x)
        assert (layer.inverse(z) - x).abs().max().item() < 1e-12


def test_eval_forward_is_deterministic_and_leaves_the_buffers_alone():
    layer = make(kernel_scale=1.0).eval()
    u, v = layer.spectral_u.clone(), layer.spectral_v.clone()
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    z1, ld1 = layer(x)
    layer.inverse(z1)
    z2, ld2 = layer(x)
    assert torch.equal(z1, z2) and torch.equal(ld1, ld2)
    assert torch.equal(u, layer.spectral_u) and torch.equal(v, layer.spectral_v)


def test_training_then_eval_use_the_same_kernel_and_agree_up_to_the_truncation():
    layer = make(kernel_scale=1.0).train()
    x = torch.randn(2, 3, 6, 6, dtype=F64)
    u_before = layer.spectral_u.clone()
    z_train, ld_train = layer(x)
    assert not torch.equal(u_before, layer.spectral_u)  # one power-iteration step was taken
    kernel_after_step = layer.normalized_kernel().detach()
    layer.eval()
    z_eval, ld_eval = layer(x)
    # Same M (the estimate the training step left): same logdet exactly ...
    assert torch.equal(layer.normalized_kernel().detach(), kernel_after_step)
    assert torch.allclose(ld_train, ld_eval, rtol=0, atol=1e-12)
    # ... and outputs that differ only by the series terms after the 6th: <= 0.9^7/7! |x| e^0.9.
    scale = (x + layer.pre_bias).abs().max().item() * 3.0
    gap = (z_train - z_eval).abs().max().item()
    assert 0 < gap < scale * 0.9**7 / 5040 * 2.46
    # The training-mode inverse undoes the training-mode forward to the same order.
    layer.train()
    z_train2, _ = layer(x)  # (takes another power step)
    assert (layer.inverse(z_train2) - x).abs().max().item() < 1e-3


def test_spectral_norm_estimate_matches_the_dense_operator_norm():
    layer = make(shape=(2, 5, 5), kernel_scale=1.0, coeff=0.9)
    m = dense_conv_matrix(layer.kernel.detach(), (2, 5, 5))
    true_norm = torch.linalg.matrix_norm(m, ord=2).item()
    assert layer.spectral_norm_estimate().item() == pytest.approx(true_norm, rel=1e-4)
    assert true_norm > 0.9  # so the normalisation is active ...
    normalized = dense_conv_matrix(layer.normalized_kernel().detach(), (2, 5, 5))
    assert torch.linalg.matrix_norm(normalized, ord=2).item() == pytest.approx(0.9, rel=1e-3)
    # ... and a small kernel is left as it is
    small = make(shape=(2, 5, 5), kernel_scale=0.01)
    assert torch.equal(small.normalized_kernel(), small.kernel)


def test_two_training_forwards_before_backward():
    torch.manual_seed(0)
    layer = ConvExp((2, 4, 4)).train()
    x = torch.randn(3, 2, 4, 4)
    loss = sum(-(layer(x)[0].square().sum() / 2) + layer(x)[1].sum() for _ in range(2))
    loss.backward()  # the in-place power step of the 2nd forward must not break the 1st graph
    assert torch.isfinite(layer.kernel.grad).all()


def test_householder_mixing_is_orthogonal_and_chosen_above_64_channels():
    torch.manual_seed(0)
    layer = ConvExp((65, 2, 2))
    assert layer.mixing.kind == "householder"
    assert layer.mixing.reflection_vectors.shape == (64, 65)
    q = layer.mixing.matrix().double()
    assert torch.allclose(q @ q.T, torch.eye(65, dtype=F64), atol=1e-5)
    assert ConvExp((64, 2, 2)).mixing.kind == "plain"
    small = make(shape=(3, 3, 3), channel_mixing="householder", reflections=3).eval()
    x = torch.randn(2, 3, 3, 3, dtype=F64)
    z, logdet = small(x)
    trace = small.normalized_kernel()[:, :, 1, 1].diagonal().sum()
    assert logdet[0].item() == pytest.approx(9 * trace.item())  # no mixing term
    assert torch.allclose(small.inverse(z), x, atol=1e-12)


def test_series_matches_the_matrix_exponential():
    torch.manual_seed(1)
    kernel = 0.1 * torch.randn(2, 2, 3, 3, dtype=F64)
    x = torch.randn(1, 2, 3, 4, dtype=F64)
    expected = torch.linalg.matrix_exp(dense_conv_matrix(kernel, (2, 3, 4))) @ x.flatten()
    got = conv_exp_series(x, kernel, min_terms=13, until_converged=True)
    assert torch.allclose(got.flatten(), expected, atol=1e-14)


def test_shape_and_parameter_errors():
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        ConvExp((12,))
    layer = ConvExp((2, 4, 4))
    with pytest.raises(ShapeError, match="built for"):
        layer(torch.zeros(1, 2, 4, 5))
    with pytest.raises(RecipeError):
        ConvExp((2, 4, 4), coeff=0.0)
    with pytest.raises(RecipeError):
        ConvExp((2, 4, 4), terms_eval=0)


def test_registered(registry):
    component = registry.get("layers", "conv_exp")
    assert component.plugin == "layers_convexp"
    assert component.params_schema["properties"]["coeff"]["default"] == 0.9
