"""The matrix-product form of a 3x3 convolution to few channels (zoo/plugins/_few_outputs_conv.py):
the output and every gradient equal F.conv2d's in float64, whatever the input's layout, and it is
used exactly where it pays (the CPU, 9 Cout <= Cin) inside Glow's zero-initialised last layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.plugins import _few_outputs_conv as few_outputs
from zoo.plugins.layers_glow import ZeroInitOutput, conditioner

SHAPES = [  # (batch, in channels, height, width), out channels
    ((3, 64, 5, 6), 4),
    ((2, 36, 1, 1), 4),   # one pixel: only the centre tap reaches it
    ((1, 40, 2, 7), 3),
    ((2, 18, 3, 3), 2),
    ((4, 9, 4, 1), 1),    # one column
]


def operands(image, out_channels, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*image, generator=generator, dtype=torch.float64)
    weight = torch.randn(out_channels, image[1], 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(out_channels, generator=generator, dtype=torch.float64)
    upstream = torch.randn(image[0], out_channels, *image[2:], generator=generator, dtype=torch.float64)
    return x, weight, bias, upstream


def output_and_grads(conv, x, weight, bias, upstream):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    y = conv(*leaves)
    return [y.detach(), *torch.autograd.grad(y, leaves, upstream)]


def reference(x, weight, bias):
    return F.conv2d(x, weight, bias, padding=1)


@pytest.mark.parametrize("image,out_channels", SHAPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice"])
def test_equals_conv2d_in_float64(image, out_channels, layout):
    x, weight, bias, upstream = operands(image, out_channels)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "channel_slice":  # a strided view, as a coupling's half of an NHWC batch
        wide = torch.cat([x, x[:, :3]], 1).contiguous(memory_format=torch.channels_last)
        x = wide[:, : image[1]]
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    ours = output_and_grads(few_outputs.few_outputs_conv3x3, x, weight, bias, upstream)
    expected = output_and_grads(reference, x, weight, bias, upstream)
    for name, a, b in zip(["output", "grad x", "grad weight", "grad bias"], ours, expected):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


def test_gradcheck():
    x, weight, bias, _ = operands((2, 18, 3, 4), 2)
    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    assert torch.autograd.gradcheck(few_outputs.few_outputs_conv3x3, leaves)


def test_gradients_flow_only_where_asked():
    x, weight, bias, upstream = operands((2, 18, 3, 4), 2)
    weight.requires_grad_()
    y = few_outputs.few_outputs_conv3x3(x, weight, bias)
    (grad_weight,) = torch.autograd.grad(y, [weight], upstream)
    torch.testing.assert_close(grad_weight, output_and_grads(reference, x, weight, bias, upstream)[2])


def test_output_is_a_fresh_tensor_that_may_change_in_place():
    x, weight, bias, upstream = operands((2, 18, 3, 4), 2)
    weight.requires_grad_()
    y = few_outputs.few_outputs_conv3x3(x, weight, bias)
    assert y.is_contiguous() and y._base is None
    y.mul_(2)  # autograd refuses in-place changes of a custom Function's view output
    (grad,) = torch.autograd.grad(y, [weight], upstream)
    torch.testing.assert_close(grad, 2 * output_and_grads(reference, x, weight, bias, upstream)[2])


def test_shifted_copies_is_the_adjoint_of_add_shifted():
    generator = torch.Generator().manual_seed(1)
    planes = torch.randn(9, 2, 3, 4, 5, generator=generator, dtype=torch.float64)
    image = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    for sign in (1, -1):
        summed = few_outputs.add_shifted(torch.zeros_like(image), planes, sign)
        copies = few_outputs.shifted_copies(image, -sign)
        # <A planes, image> = <planes, A* image>
        torch.testing.assert_close((summed * image).sum(), (planes * copies).sum())


@pytest.mark.parametrize("in_channels,out_channels,expected",
                         [(64, 4, True), (36, 4, True), (64, 8, False), (2, 4, False)])
def test_pays_off_where_nine_outputs_per_tap_fit_the_input(in_channels, out_channels, expected):
    x = torch.zeros(1, in_channels, 3, 3)
    assert few_outputs.pays_off(x, torch.zeros(out_channels, in_channels, 3, 3)) is expected
    # not on another device (cuDNN has no such gap): here the meta device stands in for one
    assert not few_outputs.pays_off(x.to("meta"), torch.zeros(out_channels, in_channels, 3, 3))


def test_not_under_torch_compile():
    """Traced, the shifted adds made a compiled Glow step slower than eager: compile gets F.conv2d."""
    weight = torch.zeros(4, 64, 3, 3)

    def branch(x):
        return x + 1 if few_outputs.pays_off(x, weight) else x - 1

    x = torch.zeros(1, 64, 3, 3)
    assert branch(x).max() == 1  # eager: the product form
    assert torch.compile(branch, backend="eager", fullgraph=True)(x).max() == -1


def test_not_under_autocast():
    """bf16 autocast (bench/gpu_check.py's CPU smoke run) casts F.conv2d's operands; the product
    form would multiply a bf16 input by float32 weights, so autocast gets F.conv2d."""
    layer = ZeroInitOutput(36, 4, image=True)
    torch.nn.init.normal_(layer.layer.weight)
    x = torch.randn(2, 36, 4, 4)
    assert few_outputs.pays_off(x, layer.layer.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not few_outputs.pays_off(x, layer.layer.weight)
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_zero_init_output_uses_it_and_agrees_with_onednn(monkeypatch):
    layer = ZeroInitOutput(36, 4, image=True).double()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.1)
    x = torch.randn(3, 36, 5, 4, generator=generator, dtype=torch.float64)
    calls = []
    real = few_outputs.few_outputs_conv3x3
    monkeypatch.setattr(few_outputs, "few_outputs_conv3x3", lambda *a: calls.append(1) or real(*a))
    fast = layer(x)
    assert calls, "the 36 -> 4 convolution should take the matrix-product form on the CPU"
    monkeypatch.setattr(few_outputs, "pays_off", lambda x, weight: False)
    torch.testing.assert_close(fast, layer(x), rtol=0, atol=1e-12)


def test_coupling_network_gradients_match_the_onednn_network(monkeypatch):
    """The whole coupling network (conv3x3, ReLU, conv1x1, ReLU, last layer) in float64, with the
    in-place ReLUs before the product form: every parameter's gradient as oneDNN's."""
    torch.manual_seed(3)
    net = conditioner(2, 4, 36, image=True).double()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.2)
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)

    def grads():
        out = net(x)
        return [out.detach(), *torch.autograd.grad(out.square().sum(), [x, *net.parameters()])]

    fast = grads()
    monkeypatch.setattr(few_outputs, "pays_off", lambda x, weight: False)
    for a, b in zip(fast, grads()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
