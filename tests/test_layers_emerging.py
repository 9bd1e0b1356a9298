"""The emerging convolution (Hoogeboom et al. 2019, arXiv 1901.11137)."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import ShapeError
from zoo.kernels.inverse_conv import dense_matrix, dense_solve
from zoo.plugins.layers_emerging import EmergingConv, SquareAutoregressiveConv
from zoo.testing import check_layer


def perturbed_ar_conv(channels, seed=0):
    torch.manual_seed(seed)
    conv = SquareAutoregressiveConv(channels).double()
    with torch.no_grad():
        conv.weight.normal_(0, 0.3)
        conv.log_diag.normal_(0, 0.3)
    return conv


def test_ar_conv_inverse_matches_dense_reference():
    conv = perturbed_ar_conv(3)
    z = torch.randn(4, 3, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        kernel = conv.kernel()
        matrix = dense_matrix(kernel, 5, 3)
        assert torch.equal(matrix, torch.tril(matrix))
        assert torch.allclose(conv.inverse(z), dense_solve(z, matrix), atol=1e-12)
        # The density direction is the matrix product; its logdet is that of the matrix.
        x = torch.randn(4, 3, 5, 3, dtype=torch.float64)
        y, logdet = conv(x)
        flat = (matrix @ x.permute(0, 2, 3, 1).reshape(4, -1).T).T
        assert torch.allclose(y.permute(0, 2, 3, 1).reshape(4, -1), flat, atol=1e-12)
        assert torch.allclose(logdet, torch.linalg.slogdet(matrix)[1].expand(4), atol=1e-10)


def test_ar_conv_inverse_triton_backend_matches():
    conv = perturbed_ar_conv(2, seed=3)
    z = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        twin = conv.inverse(z)
        conv.backend = "triton"
        assert torch.allclose(conv.inverse(z), twin, atol=1e-12)


def test_emerging_inverse_matches_dense_reference():
    """The whole layer's inverse equals the composition of the dense inverses."""
    torch.manual_seed(0)
    layer = EmergingConv((3, 4, 5)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
        y = torch.randn(2, 3, 4, 5, dtype=torch.float64)
        second = dense_matrix(layer.bottom_right.kernel(), 4, 5)
        first = dense_matrix(layer.top_left.kernel(), 4, 5)
        t = dense_solve(y.flip(2, 3), second).flip(2, 3)
        t = dense_solve(t, first)
        t = layer.mix.inverse(t)
        assert torch.allclose(layer.inverse(y), t, atol=1e-10)
        x_back = layer.inverse(layer(y)[0])
    assert torch.allclose(x_back, y, atol=1e-10)


def test_second_ar_conv_points_the_other_way():
    torch.manual_seed(0)
    layer = EmergingConv((1, 3, 3)).double()
    with torch.no_grad():
        layer.top_left.weight.zero_()  # only the flipped AR conv mixes pixels
        layer.bottom_right.weight.normal_(0, 0.3)
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    (grad,) = torch.autograd.grad(y[0, 0, 0, 0], x)
    assert grad[0, 0, 1, 1] != 0  # (0, 0) depends on the pixel below-right of it
    (grad,) = torch.autograd.grad(layer(x)[0][0, 0, 2, 2], x)
    assert grad[0, 0, 1, 1] == 0  # and (2, 2) not on the one above-left


@pytest.mark.parametrize("shape", [(1, 3, 4), (3, 4, 3), (4, 2, 2)])
def test_contract(shape):
    check_layer(EmergingConv, shape, {})


def test_needs_an_image():
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        EmergingConv((8,))


def test_registered(registry):
    component = registry.get("layers", "emerging_conv")
    assert component.factory is EmergingConv
    assert component.params_schema["properties"] == {}


@pytest.mark.parametrize("seed", range(3))
def test_initial_inverse_is_stable_on_full_mnist_size(seed):
    """At init the inverse (an IIR filter over 28 + 28 diagonals) must not blow up round-off."""
    torch.manual_seed(seed)
    layer = EmergingConv((1, 28, 28)).double()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(layer.inverse(layer(x)[0]), x, atol=1e-10)
