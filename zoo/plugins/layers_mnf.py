"""Built-in plugin: Multiplicative Normalizing Flow layers ``mnf_linear`` and ``mnf_conv2d``.

Louizos & Welling 2017, "Multiplicative Normalizing Flows for Variational Bayesian Neural
Networks" (https://arxiv.org/abs/1703.01961), as torch-mnf (janosh/torch-mnf) implements them:

- the weight posterior is ``q(W | z) = N(z * W_mean, W_var)``, where the multiplicative noise ``z``
  (one per input unit of a linear layer, one per output channel of a convolution) is drawn from a
  small flow ``q(z)``: a diagonal normal ``N(q0_mean, q0_var)`` pushed through ``n_flows_q``
  masked couplings with sigmoid gates (Real NVP with IAF's update);
- ``forward`` uses local reparameterisation (the pre-activations' mean and variance, then one
  normal draw per output), with fresh noise in every call, in training and evaluation alike;
- ``kl_divergence()`` is a one-sample estimate of the KL part of the ELBO,
  ``KL(q(W | z) || N(0, 1)) + log q(z) - log r(z | W)``, where the auxiliary ``r(z | W)`` is a
  normal whose mean and precision depend on ``W`` (eqs. 9-12), pulled back through ``n_flows_r``
  more couplings (the "inverse" flow of the paper).

torch-mnf's initialisation and defaults: ``W_mean ~ 0.1 N(0, 1)``, every log-variance
``-9 + 0.1 N(0, 1)``, ``q0_mean, c, b1, b2 ~ 0.1 N(0, 1)``, bias means 0, two q and two r
couplings with one hidden layer of 50 units. The convolution's bias means stay 0 (a buffer, not
trained), as in torch-mnf, which keeps its parameter count.

Where this differs from torch-mnf's code, it follows the paper and its authors' TensorFlow code
(the differences change no parameter count):

- a coupling's shift only moves the transformed units, ``(1 - m) (z g + (1 - g) shift) + m z``;
  torch-mnf adds ``(1 - g) shift`` to the conditioning units too, so its log-determinant is not
  that of its map. The couplings' hidden layer has a tanh (torch-mnf's MLP drops its only
  activation, leaving the conditioner affine).
- the convolution's r network combines the weights of each output channel (torch-mnf reshapes
  the ``(out, in, k, k)`` kernel with ``view(-1, out)``, which mixes channels), and the standard
  deviation of ``c . w`` is ``sqrt(sum c^2 var)``, as torch-mnf already does for the bias.
- ``log q(z)`` and ``log r(z | W)`` are full log-densities (torch-mnf drops the constants and
  the ``-eps^2 / 2`` term of ``log q0``): the same gradients, and the value is an unbiased
  estimate of the KL bound itself.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import RecipeError
from zoo.hookspecs import hookimpl
from zoo.plugins._network_shapes import conv_out_shape, flat_features

LOG_2PI = math.log(2 * math.pi)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, log_precision: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, 1 / precision), summed over the last dimension."""
    return 0.5 * (log_precision - log_precision.exp() * (x - mean) ** 2 - LOG_2PI).sum(-1)


def _gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, 1)), summed over every element."""
    return 0.5 * (log_var.exp() + mean**2 - 1 - log_var).sum()


def _log_var_init(*shape: int) -> nn.Parameter:
    return nn.Parameter(-9 + 0.1 * torch.randn(*shape))


class GatedCoupling(nn.Module):
    """A masked coupling with a sigmoid gate (Real NVP with IAF's update), dims ``(batch, dim)``.

    A fresh Bernoulli(1/2) mask ``m`` each call: ``h = tanh-MLP(m z)``, ``g = sigmoid(s(h))``,
    ``z' = (1 - m) (z g + (1 - g) t(h)) + m z``, ``log|det| = sum (1 - m) log g``. Only the
    forward direction is needed (MNF samples through it and evaluates the density it pushes).
    """

    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        sizes = [dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.shift = nn.Linear(sizes[-1], dim)
        self.gate = nn.Linear(sizes[-1], dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.bernoulli(torch.full_like(z, 0.5))
        h = self.net(mask * z)
        log_gate = F.logsigmoid(self.gate(h))
        gate = log_gate.exp()
        moved = z * gate + (1 - gate) * self.shift(h)
        return (1 - mask) * moved + mask * z, ((1 - mask) * log_gate).sum(-1)


class GatedFlow(nn.Module):
    """A chain of ``GatedCoupling``s; returns the end point and the summed log-determinant."""

    def __init__(self, dim: int, n_couplings: int, hidden: Sequence[int]):
        super().__init__()
        self.couplings = nn.ModuleList(GatedCoupling(dim, hidden) for _ in range(n_couplings))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = z.new_zeros(z.shape[:-1])
        for coupling in self.couplings:
            z, step = coupling(z)
            logdet = logdet + step
        return z, logdet


def _check_flow_params(layer: str, n_flows_q: int, n_flows_r: int, flow_hidden: Sequence[int]) -> None:
    if n_flows_q < 0 or n_flows_r < 0:
        raise RecipeError(f"network layer {layer!r}: n_flows_q and n_flows_r must be >= 0, got "
                          f"{n_flows_q} and {n_flows_r}")
    if not flow_hidden or min(flow_hidden) < 1:
        raise RecipeError(f"network layer {layer!r}: flow_hidden must list one or more layer "
                          f"widths >= 1, got {list(flow_hidden)}")


class _MultiplicativeNoise(nn.Module):
    """The parts both MNF layers share: q(z) (base + flow) and the auxiliary r's parameters.

    ``dim`` is the number of noise variables z. ``r0_c``, ``r0_b1``, ``r0_b2`` are c, b1, b2 of
    eqs. 9-12; torch-mnf and the authors' code name the second output ``log_var_r`` but use it
    as a log-precision, and so does this code (``_log_normal``).
    """

    def __init__(self, dim: int, n_flows_q: int, n_flows_r: int, flow_hidden: Sequence[int]):
        super().__init__()
        self.q0_mean = nn.Parameter(0.1 * torch.randn(dim))
        self.q0_log_var = _log_var_init(dim)
        self.r0_c = nn.Parameter(0.1 * torch.randn(dim))
        self.r0_b1 = nn.Parameter(0.1 * torch.randn(dim))
        self.r0_b2 = nn.Parameter(0.1 * torch.randn(dim))
        self.flow_q = GatedFlow(dim, n_flows_q, flow_hidden)
        self.flow_r = GatedFlow(dim, n_flows_r, flow_hidden)

    def sample_z(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws of z ~ q(z), shape ``(n, dim)``, and their log-densities ``log q(z)``."""
        eps = torch.randn(n, self.q0_mean.shape[0], device=self.q0_mean.device, dtype=self.q0_mean.dtype)
        z0 = self.q0_mean + (0.5 * self.q0_log_var).exp() * eps
        z, logdet = self.flow_q(z0)
        log_q0 = _log_normal(z0, self.q0_mean, -self.q0_log_var)
        return z, log_q0 - logdet

    def log_r(self, z: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        """log r(z | W), given the scalar summary of W (the mean of the r network's activations)."""
        z_back, logdet = self.flow_r(z)
        return _log_normal(z_back, self.r0_b1 * summary, self.r0_b2 * summary) + logdet


class MNFLinear(nn.Module):
    """Bayesian affine layer y = (x * z) W^T + b with MNF posterior (Louizos & Welling 2017).

    z ~ q(z) per example and input unit, drawn through a masked gated flow; weights and bias have
    diagonal normal posteriors around ``z * W_mean`` and ``b_mean``, sampled by local
    reparameterisation. ``kl_divergence()`` gives the layer's KL term of the ELBO
    (https://arxiv.org/abs/1703.01961; torch-mnf's MNFLinear).
    """

    def __init__(self, shape: Sequence[int], out_features: int, n_flows_q: int = 2,
                 n_flows_r: int = 2, flow_hidden: tuple[int, ...] = (50,)):
        super().__init__()
        n_in = flat_features(shape, "mnf_linear")
        if out_features < 1:
            raise RecipeError(f"network layer 'mnf_linear': out_features must be >= 1, got {out_features}")
        _check_flow_params("mnf_linear", n_flows_q, n_flows_r, flow_hidden)
        self.out_shape = (out_features,)
        self.W_mean = nn.Parameter(0.1 * torch.randn(out_features, n_in))
        self.W_log_var = _log_var_init(out_features, n_in)
        self.b_mean = nn.Parameter(torch.zeros(out_features))
        self.b_log_var = _log_var_init(out_features)
        self.noise = _MultiplicativeNoise(n_in, n_flows_q, n_flows_r, flow_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.noise.sample_z(x.shape[0])
        mean = (x * z) @ self.W_mean.T + self.b_mean
        var = x**2 @ self.W_log_var.exp().T + self.b_log_var.exp()
        return mean + var.sqrt() * torch.randn_like(mean)

    def kl_divergence(self) -> torch.Tensor:
        """One-sample estimate of KL(q(W|z) || p(W)) + log q(z) - log r(z|W), a scalar."""
        z, log_q = self.noise.sample_z(1)
        W_mean = z * self.W_mean
        kl = _gaussian_kl(W_mean, self.W_log_var) + _gaussian_kl(self.b_mean, self.b_log_var)
        W = W_mean + (0.5 * self.W_log_var).exp() * torch.randn_like(W_mean)
        summary = torch.tanh(W @ self.noise.r0_c).mean()  # eqs. 9-10: mean of tanh(c^T w_j)
        return kl + (log_q - self.noise.log_r(z, summary)).sum()


class MNFConv2d(nn.Module):
    """Bayesian 2-D convolution with MNF posterior, one noise variable per output channel.

    ``y = conv(x, z * W_mean) + b`` with diagonal normal posteriors around the means, sampled by
    local reparameterisation; one z per forward call, shared by the batch, as torch-mnf. The r
    network is linear for convolutions (no tanh, per the authors, MNF_VBNN issue 4).
    ``kl_divergence()`` gives the layer's KL term (https://arxiv.org/abs/1703.01961).
    """

    def __init__(self, shape: Sequence[int], out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, n_flows_q: int = 2, n_flows_r: int = 2,
                 flow_hidden: tuple[int, ...] = (50,)):
        super().__init__()
        if out_channels < 1:
            raise RecipeError(f"network layer 'mnf_conv2d': out_channels must be >= 1, got {out_channels}")
        self.out_shape = conv_out_shape(shape, out_channels, kernel_size, stride, padding, "mnf_conv2d")
        _check_flow_params("mnf_conv2d", n_flows_q, n_flows_r, flow_hidden)
        self.stride, self.padding = stride, padding
        kernel = (out_channels, shape[0], kernel_size, kernel_size)
        self.W_mean = nn.Parameter(0.1 * torch.randn(kernel))
        self.W_log_var = _log_var_init(*kernel)
        self.register_buffer("b_mean", torch.zeros(out_channels))
        self.b_log_var = _log_var_init(out_channels)
        self.noise = _MultiplicativeNoise(out_channels, n_flows_q, n_flows_r, flow_hidden)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, _ = self.noise.sample_z(1)
        mean = self._conv(x, self.W_mean * z.view(-1, 1, 1, 1), self.b_mean)
        var = self._conv(x**2, self.W_log_var.exp(), self.b_log_var.exp())
        return mean + var.sqrt() * torch.randn_like(mean)

    def kl_divergence(self) -> torch.Tensor:
        """One-sample estimate of KL(q(W|z) || p(W)) + log q(z) - log r(z|W), a scalar."""
        z, log_q = self.noise.sample_z(1)
        W_mean = self.W_mean * z.view(-1, 1, 1, 1)
        b_mean = self.b_mean * z[0]
        kl = _gaussian_kl(W_mean, self.W_log_var) + _gaussian_kl(b_mean, self.b_log_var)
        # eqs. 11-12 without the tanh: c^T w for every kernel position (in, kh, kw), w the column
        # of weights across output channels, drawn from its normal; the bias's alike, added.
        c = self.noise.r0_c
        w_mean = torch.einsum("oikl,o->ikl", W_mean, c)
        w_std = torch.einsum("oikl,o->ikl", self.W_log_var.exp(), c**2).sqrt()
        b_draw = (b_mean * c).sum() + (self.b_log_var.exp() * c**2).sum().sqrt() * torch.randn_like(c[0])
        act = w_mean + w_std * torch.randn_like(w_mean) + b_draw
        return kl + (log_q - self.noise.log_r(z, act.mean())).sum()


@hookimpl
def zoo_network_layers():
    return {"mnf_linear": MNFLinear, "mnf_conv2d": MNFConv2d}
