"""The contract every flow layer must honour, as checks a test suite can run.

zoo's own suite runs them on every registered layer (parameterised over the registry, so a new
layer is tested the moment it registers). A third-party plugin runs them on its layers::

    from zoo.testing import check_layer
    def test_my_layer():
        check_layer(MyLayer, shape=(4, 6, 6), params={"hidden": 8})

Checks, in float64 on small shapes:
1. shapes: ``y`` is ``(batch, *out_shape)``, ``logdet`` is ``(batch,)``;
2. ``inverse(forward(x)) == x`` (for factoring layers, ``unfactor(factor(x)) == x``);
3. ``logdet`` equals ``slogdet`` of the brute-force Jacobian (``torch.autograd.functional.jacobian``);
4. gradients of a likelihood-like loss are finite for every parameter and the input (float32);
5. a safetensors round trip of the state dict gives the same outputs.

A layer whose factory declares ``takes_context = True`` (``zoo.conditioning``) is checked twice:
as built without a context (today's contract), and built with ``context_features=K`` and given a
random context, where checks 1-5 hold at a fixed context (the Jacobian is taken with respect to
x only) and, in addition, a different context must change the output.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from zoo.conditioning import takes_context
from zoo.flow import factors_out, standard_normal_log_prob

BATCH = 3
CONTEXT_FEATURES = 3  # the context size the checks give a conditional layer
# Parameters get this much noise before the checks: many layers start as the identity
# (zero-initialised couplings), where a wrong inverse or log-determinant would pass unseen.
PERTURB = 0.05
INPUT_KINDS = ("normal", "unit_interval", "positive", "pixels")


def example_input(
    shape: Sequence[int], kind: str = "normal", batch: int = BATCH, dtype=torch.float64, seed: int = 0
) -> torch.Tensor:
    """A small random batch from the domain a layer expects."""
    g = torch.Generator().manual_seed(seed)
    size = (batch, *shape)
    if kind == "normal":
        return torch.randn(size, generator=g, dtype=dtype)
    if kind == "unit_interval":
        return 0.05 + 0.9 * torch.rand(size, generator=g, dtype=dtype)
    if kind == "positive":
        return torch.randn(size, generator=g, dtype=dtype).exp()
    if kind == "pixels":
        return torch.randint(0, 256, size, generator=g).to(dtype)
    raise ValueError(f"unknown example input kind {kind!r}; use one of {INPUT_KINDS}")


def layer_examples(factory: Any) -> list[dict[str, Any]]:
    """The examples a layer factory declares (``factory.examples``), normalised."""
    examples = getattr(factory, "examples", None) or []
    out = []
    for ex in examples:
        out.append(
            {
                "shape": tuple(ex["shape"]),
                "params": dict(ex.get("params", {})),
                "input": ex.get("input", "normal"),
                "atol": float(ex.get("atol", 1e-6)),
                "perturb": float(ex.get("perturb", PERTURB)),
                # a conditional layer's example that cannot take a context says "context": False
                "context": bool(ex.get("context", True)),
            }
        )
    return out


def example_context(batch: int = BATCH, features: int = CONTEXT_FEATURES, dtype=torch.float64,
                    seed: int = 0) -> torch.Tensor:
    """A random context batch ``(batch, features)`` for the checks of a conditional layer."""
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(batch, features, generator=g, dtype=dtype)


def build_layer(
    factory: Callable[..., torch.nn.Module], shape, params, input_kind="normal", seed=0, perturb=PERTURB,
    context_features: int = 0,
):
    """Build a layer in float64, run one training-mode forward (data-dependent init), then add
    ``perturb`` x N(0, 1) noise to every parameter so that no check passes by symmetry.
    With ``context_features`` the layer is built conditional (and the forward given a context)."""
    torch.manual_seed(seed)
    extra = {"context_features": context_features} if context_features else {}
    layer = factory(tuple(shape), **params, **extra).double()
    layer.train()
    with torch.no_grad():
        warm = example_input(shape, input_kind, batch=8, seed=seed + 1)
        _forward_parts(layer, warm, example_context(8, context_features, seed=seed + 1)
                       if context_features else None)
        for p in layer.parameters():
            p.add_(perturb * torch.randn_like(p))
    layer.eval()
    return layer


def check_layer(
    factory: Callable[..., torch.nn.Module],
    shape: Sequence[int],
    params: Mapping[str, Any] | None = None,
    input: str = "normal",
    atol: float = 1e-6,
    perturb: float = PERTURB,
    context: bool = True,
) -> None:
    """Run every contract check on ``factory(shape, **params)``; raise AssertionError if one fails.

    ``perturb`` is the scale of the noise added to the parameters first (0 checks the layer as
    initialised). A factory with ``takes_context`` is also checked conditional, unless
    ``context`` is false (params with which it cannot take one)."""
    params = dict(params or {})
    shape = tuple(shape)
    _check_built(factory, shape, params, input, atol, perturb, context_features=0)
    if context and takes_context(factory):
        check_conditional_layer(factory, shape, params, input, atol=atol, perturb=perturb)


def check_conditional_layer(
    factory: Callable[..., torch.nn.Module],
    shape: Sequence[int],
    params: Mapping[str, Any] | None = None,
    input: str = "normal",
    atol: float = 1e-6,
    perturb: float = PERTURB,
    context_features: int = CONTEXT_FEATURES,
) -> None:
    """The contract of a layer built with ``context_features``, at a fixed random context, and
    a check that another context changes its output."""
    params, shape, k = dict(params or {}), tuple(shape), context_features
    layer, x, c = _check_built(factory, shape, params, input, atol, perturb, context_features=k)
    assert int(getattr(layer, "context_features", 0) or 0) == k, (
        f"{type(layer).__name__}: built with context_features={k}, the layer must say so "
        "(attribute context_features)"
    )
    with torch.no_grad():
        out1, out2 = _flat_outputs(layer, x, c), _flat_outputs(layer, x, c + 1.0)
    assert not torch.allclose(out1, out2), (
        f"{type(layer).__name__}: the output does not change with the context"
    )


def _check_built(factory, shape, params, input, atol, perturb, context_features: int):
    """Checks 1-5 on the layer built (conditional with ``context_features``, at a fixed random
    context); returns the layer, its input and the context (None)."""
    k = context_features
    layer = build_layer(factory, shape, params, input, perturb=perturb, context_features=k)
    x, c = example_input(shape, input), (example_context(BATCH, k) if k else None)
    check_shapes(layer, x, shape, context=c)
    check_inverse(layer, x, atol=atol, context=c)
    check_logdet(layer, x, atol=atol, context=c)
    check_gradients(factory, shape, params, input, context_features=k)
    check_safetensors_round_trip(factory, layer, shape, params, input, atol=atol, context_features=k)
    return layer, x, c


# --- the individual checks ---------------------------------------------------------------------


def _given(context) -> tuple:
    return () if context is None else (context,)


def _forward_parts(layer, x, context=None):
    """(y, z_factored or None, logdet of the Jacobian of x -> (y, z))."""
    if factors_out(layer):
        return layer.factor(x, *_given(context))
    y, logdet = layer(x, *_given(context))
    return y, None, logdet


def _flat_outputs(layer, x, context=None, logdet: bool = True) -> torch.Tensor:
    """The layer's outputs per sample in one row: y, the factored z, and (``logdet``) logdet."""
    y, z, ld = _forward_parts(layer, x, context)
    parts = [y.flatten(1)] + ([z.flatten(1)] if z is not None else []) + ([ld[:, None]] if logdet else [])
    return torch.cat(parts, dim=1)


def _inverse_parts(layer, y, z, context=None):
    if z is not None:
        return layer.unfactor(y, z, *_given(context))
    return layer.inverse(y, *_given(context))


def check_shapes(layer, x: torch.Tensor, shape: Sequence[int], context=None) -> None:
    out_shape = tuple(getattr(layer, "out_shape", shape))
    with torch.no_grad():
        y, logdet = layer(x, *_given(context))
        assert tuple(y.shape) == (x.shape[0], *out_shape), (
            f"{type(layer).__name__}: output shape {tuple(y.shape)} != (batch, *out_shape) "
            f"= {(x.shape[0], *out_shape)}"
        )
        assert tuple(logdet.shape) == (x.shape[0],), (
            f"{type(layer).__name__}: logdet shape {tuple(logdet.shape)} != (batch,)"
        )
        assert torch.isfinite(y).all() and torch.isfinite(logdet).all(), "non-finite output"
        if factors_out(layer):
            y2, z, ld = layer.factor(x, *_given(context))
            assert tuple(z.shape) == (x.shape[0], *layer.factored_shape), "factored shape"
            assert torch.allclose(y2, y), "factor() and forward() disagree on the output"
            expected = ld + standard_normal_log_prob(z)
            assert torch.allclose(logdet, expected, atol=1e-8), (
                "forward()'s logdet must be factor()'s logdet plus the N(0, I) log-density of z"
            )


def check_inverse(layer, x: torch.Tensor, atol: float = 1e-6, context=None) -> None:
    with torch.no_grad():
        y, z, _ = _forward_parts(layer, x, context)
        x_back = _inverse_parts(layer, y, z, context)
    err = (x_back - x).abs().max().item()
    assert torch.allclose(x_back, x, atol=atol, rtol=atol), (
        f"{type(layer).__name__}: inverse(forward(x)) != x (max abs error {err:.3g})"
    )


def check_logdet(layer, x: torch.Tensor, atol: float = 1e-6, context=None) -> None:
    """Compare the layer's logdet with slogdet of the brute-force Jacobian, sample by sample
    (with respect to x; a context stays fixed)."""
    with torch.no_grad():
        _, _, logdet = _forward_parts(layer, x, context)
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        ci = None if context is None else context[i : i + 1]

        def flat(inp, _layer=layer, _c=ci):
            return _flat_outputs(_layer, inp, _c, logdet=False).reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xi).reshape(xi.numel(), xi.numel())
        sign, brute = torch.linalg.slogdet(jac)
        assert sign.item() != 0, f"{type(layer).__name__}: singular Jacobian at sample {i}"
        got = logdet[i].item()
        assert math.isclose(got, brute.item(), rel_tol=atol, abs_tol=atol * max(1, xi.numel())), (
            f"{type(layer).__name__}: logdet {got:.10g} != brute-force slogdet {brute.item():.10g} "
            f"(sample {i})"
        )


def check_gradients(factory, shape, params, input_kind="normal", context_features: int = 0) -> None:
    """A likelihood-like loss has finite gradients for every parameter that gets one."""
    torch.manual_seed(0)
    extra = {"context_features": context_features} if context_features else {}
    layer = factory(tuple(shape), **params, **extra)
    layer.train()
    x = example_input(shape, input_kind, batch=4, dtype=torch.float32).requires_grad_(True)
    context = example_context(4, context_features, dtype=torch.float32) if context_features else None
    y, logdet = layer(x, *_given(context))
    loss = -(standard_normal_log_prob(y) + logdet).mean()
    loss.backward()
    assert torch.isfinite(loss), f"{type(layer).__name__}: non-finite loss"
    if x.grad is not None:
        assert torch.isfinite(x.grad).all(), f"{type(layer).__name__}: non-finite input gradient"
    for name, p in layer.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{type(layer).__name__}: non-finite grad of {name}"


def check_safetensors_round_trip(factory, layer, shape, params, input_kind="normal", atol=1e-6,
                                 context_features: int = 0):
    """Save the state dict as safetensors, load it into a fresh layer: same outputs."""
    state = {k: v.detach().contiguous() for k, v in layer.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.safetensors")
        save_file(state, path)
        loaded = load_file(path)
    torch.manual_seed(12345)  # a different init, so equal outputs prove the load worked
    extra = {"context_features": context_features} if context_features else {}
    fresh = factory(tuple(shape), **params, **extra).double()
    fresh.load_state_dict(loaded)
    fresh.eval()
    x = example_input(shape, input_kind, seed=7)
    context = _given(example_context(BATCH, context_features, seed=7) if context_features else None)
    with torch.no_grad():
        torch.manual_seed(1)
        y1, _ = layer(x, *context)
        torch.manual_seed(1)
        y2, _ = fresh(x, *context)
    assert torch.allclose(y1, y2, atol=atol), (
        f"{type(layer).__name__}: outputs differ after a safetensors round trip of the state dict"
    )
