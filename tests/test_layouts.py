"""Channels-last (NHWC) through the Glow layers: squeeze gives the same values in either layout,
and the layers after an actnorm keep NHWC (so the coupling networks get it without a
conversion each), while results stay those of the NCHW computation."""

from __future__ import annotations

import torch

import zoo
from zoo.plugins.layers_basic import Squeeze
from zoo.plugins.layers_glow import ActNorm, AffineCoupling, Conv1x1, Split


def nhwc(x: torch.Tensor) -> bool:
    return x.stride(1) == 1


def test_squeeze_is_the_same_permutation_in_both_layouts():
    torch.manual_seed(0)
    layer = Squeeze((3, 4, 6))
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    cl = x.contiguous(memory_format=torch.channels_last)
    y, _ = layer(x)
    y_cl, _ = layer(cl)
    assert torch.equal(y, y_cl) and nhwc(y_cl) and not nhwc(y)
    back = layer.inverse(y_cl)
    assert torch.equal(back, x) and nhwc(back)
    assert torch.equal(layer.inverse(y), x)


def test_glow_layers_keep_channels_last_after_actnorm():
    torch.manual_seed(0)
    shape = (4, 6, 6)
    x = torch.randn(3, *shape, dtype=torch.float64)
    actnorm, conv, coupling = (ActNorm(shape).double(), Conv1x1(shape, lu=True).double(),
                               AffineCoupling(shape, hidden=8).double())
    for p in coupling.parameters():  # a coupling that does something
        torch.nn.init.normal_(p, std=0.2)
    h, _ = actnorm(x)
    assert nhwc(h)
    for layer in (conv, coupling):
        h, _ = layer(h)
        assert nhwc(h), type(layer).__name__
    kept, z2, _ = Split(shape).double().factor(h)
    assert nhwc(kept)
    assert nhwc(Squeeze((2, 6, 6))(kept)[0])
    assert torch.allclose(actnorm.inverse(actnorm(x)[0]), x, atol=1e-12)  # undone in NHWC too


def test_a_glow_model_gives_the_same_density_for_either_input_layout():
    torch.manual_seed(0)
    recipe = zoo.load_recipe({
        "name": "layouts", "dataset": {"name": "mnist", "batch_size": 4},
        "model": {"layers": [
            {"name": "squeeze"},
            {"repeat": 2, "layers": [{"name": "actnorm"}, {"name": "conv1x1", "lu": True},
                                     {"name": "affine_coupling", "hidden": 8}]},
            {"name": "split"}, {"name": "squeeze"},
            {"repeat": 2, "layers": [{"name": "actnorm"}, {"name": "conv1x1", "lu": True},
                                     {"name": "affine_coupling", "hidden": 8}]}]},
    })
    model = zoo.build_model(recipe, shape=(2, 8, 8)).double()
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    model.initialize(x)
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        lp = model.log_prob(x)
        lp_cl = model.log_prob(x.contiguous(memory_format=torch.channels_last))
        z, _ = model(x)
        back = model.inverse(z)
    assert torch.allclose(lp, lp_cl, rtol=0, atol=1e-10)
    assert torch.allclose(back, x, atol=1e-9)
    assert back.is_contiguous() or nhwc(back)
