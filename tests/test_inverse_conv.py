"""The inverse_conv and inverse_conv_unit layers (Inverse-Flow, arXiv 2410.14634)."""

from __future__ import annotations

import pytest
import torch

from zoo.errors import ShapeError
from zoo.plugins.inverse_conv import InverseConv, InverseConvUnit
from zoo.testing import check_layer

# For each orientation, the corner the dependencies point to: z at (h, w) may depend on x at
# (h2, w2) only if sign(h - h2) and sign(w - w2) allow it.
CORNER = {"tl": (1, 1), "tr": (1, -1), "bl": (-1, 1), "br": (-1, -1)}


@pytest.mark.parametrize("orientation", ["tl", "tr", "bl", "br"])
def test_orientation_points_to_its_corner(orientation):
    torch.manual_seed(0)
    layer = InverseConv((2, 4, 5), kernel_size=2, orientation=orientation).double()
    with torch.no_grad():
        layer.weight.normal_(0, 0.3)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: layer(t)[0], x).reshape(2, 4, 5, 2, 4, 5)
    dh, dw = CORNER[orientation]
    for h in range(4):
        for w in range(5):
            for h2 in range(4):
                for w2 in range(5):
                    allowed = (h - h2) * dh >= 0 and (w - w2) * dw >= 0
                    if not allowed:
                        assert jac[:, h, w, :, h2, w2].abs().max() == 0, (h, w, h2, w2)
    # The dependence is real: the far corner pixel depends on the near corner.
    near = (0 if dh > 0 else 3, 0 if dw > 0 else 4)
    far = (3 if dh > 0 else 0, 4 if dw > 0 else 0)
    assert jac[:, far[0], far[1], :, near[0], near[1]].abs().max() > 0


@pytest.mark.parametrize("orientation", ["tl", "br"])
def test_sampling_direction_is_the_plain_conv_and_logdet_zero(orientation):
    layer = InverseConv((3, 5, 4), kernel_size=3, orientation=orientation).double()
    with torch.no_grad():
        layer.weight.normal_(0, 0.2)
    z = torch.randn(4, 3, 5, 4, dtype=torch.float64)
    x = layer.inverse(z)
    z_back, logdet = layer(x)
    assert torch.allclose(z_back, z, atol=1e-12)
    assert torch.equal(logdet, torch.zeros(4, dtype=torch.float64))


def test_triton_backend_matches_twin_in_the_layer():
    torch.manual_seed(1)
    layer = InverseConv((3, 3, 4), kernel_size=2, orientation="tr")
    with torch.no_grad():
        layer.weight.normal_(0, 0.3)
    x = torch.randn(2, 3, 3, 4, requires_grad=True)
    z_twin = layer(x)[0]
    grads_twin = torch.autograd.grad(z_twin.square().sum(), (x, layer.weight))
    layer.backend = "triton"
    z_triton = layer(x)[0]
    grads_triton = torch.autograd.grad(z_triton.square().sum(), (x, layer.weight))
    assert torch.allclose(z_triton, z_twin, atol=1e-5)
    for a, b in zip(grads_triton, grads_twin):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)


def test_masked_taps_get_no_gradient_and_do_not_matter():
    layer = InverseConv((3, 4, 4), kernel_size=2)
    x = torch.randn(2, 3, 4, 4)
    layer(x)[0].square().sum().backward()
    centre = layer.weight.grad[:, :, 0, 0]
    assert torch.equal(centre, torch.tril(centre, -1))
    before = layer(x)[0]
    with torch.no_grad():
        layer.weight[:, :, 0, 0] += torch.triu(torch.ones(3, 3), 0)  # masked entries only
    assert torch.equal(layer(x)[0], before)


def test_init_is_near_identity():
    torch.manual_seed(0)
    layer = InverseConv((3, 8, 8), kernel_size=3)
    x = torch.randn(2, 3, 8, 8)
    assert (layer(x)[0] - x).abs().max() < 0.2


def test_unit_chains_four_orientations():
    unit = InverseConvUnit((2, 4, 3), kernel_size=2)
    assert [c.orientation for c in unit.convs] == ["tl", "tr", "bl", "br"]
    check_layer(InverseConvUnit, (2, 4, 3), {"kernel_size": 2})


@pytest.mark.parametrize("orientation", ["tl", "tr", "bl", "br"])
def test_contract_every_orientation(orientation):
    check_layer(InverseConv, (3, 3, 4), {"kernel_size": 2, "orientation": orientation})


def test_shape_errors():
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        InverseConv((12,))
    with pytest.raises(ShapeError, match=r"\(C, H, W\)"):
        InverseConvUnit((1, 28))


def test_registered_with_param_schema(registry):
    assert registry.get("layers", "inverse_conv").factory is InverseConv
    assert registry.get("layers", "inverse_conv_unit").factory is InverseConvUnit
    schema = registry.get("layers", "inverse_conv").params_schema
    assert schema["properties"]["orientation"]["enum"] == ["tl", "tr", "bl", "br"]
