"""build_optimizer: fused Adam that does not import torch._dynamo (and its sympy, triton) until a
torch.compile trace could need it, with the same steps as torch's own Adam."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest
import torch

from zoo.assemble import build_optimizer

TRAIN = {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 1e-3}


def test_steps_of_a_short_run_do_not_import_dynamo():
    """In a fresh interpreter: build, zero_grad, step twice; torch._dynamo stays unimported."""
    script = textwrap.dedent(
        """
        import sys, torch
        from zoo.assemble import build_optimizer
        model = torch.nn.Linear(3, 2)
        opt = build_optimizer(model, {"lr": 1e-3})
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(4, 3)).square().sum().backward()
            opt.step()
        assert opt.defaults["fused"] is True, opt.defaults
        print(sorted(m for m in ("torch._dynamo", "sympy", "triton") if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("dynamo_first", [False, True])
def test_same_steps_as_torch_fused_adam(dynamo_first, monkeypatch):
    """Bit-for-bit the updates of torch.optim.Adam(fused=True), both before torch._dynamo is
    imported (the unwrapped methods) and after (torch's wrappers)."""
    if not dynamo_first:
        monkeypatch.setattr("zoo.assemble._dynamo_loaded", lambda: False)
    else:
        importlib.import_module("torch._dynamo")

    def trained(make):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        opt = make(model)
        for step in range(3):
            opt.zero_grad(set_to_none=True)
            model(torch.randn(16, 4, generator=torch.Generator().manual_seed(step))).square().mean().backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()], opt

    ours, opt = trained(lambda m: build_optimizer(m, TRAIN))
    ref, ref_opt = trained(lambda m: torch.optim.Adam(m.parameters(), fused=True, lr=1e-2,
                                                      betas=(0.9, 0.99), weight_decay=1e-3))
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"]
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    assert opt.state_dict()["state"][0]["step"] == ref_opt.state_dict()["state"][0]["step"] == 3


def test_no_grad_inside_step():
    """step runs without autograd recording (what torch's differentiable=False wrapper does)."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(torch.nn.ParameterList([w]), {"lr": 0.1})
    w.grad = torch.ones(3)
    with torch.enable_grad():
        opt.step()
    assert w.grad_fn is None and torch.is_grad_enabled()
    assert torch.all(w < 1)
