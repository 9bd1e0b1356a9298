"""Built-in plugin: the Glow family of layers.

Glow (Kingma & Dhariwal 2018, https://arxiv.org/abs/1807.03039): ``actnorm``, ``conv1x1``
(invertible 1x1 convolution, optionally LU-parameterised), ``affine_coupling`` and ``split`` (the
learned conditional prior). RealNVP (Dinh et al. 2016, https://arxiv.org/abs/1605.08803) for the
affine coupling itself. ``coupling`` and ``split_prior`` are the variants of the Self Normalizing
Flows code (Keller et al. 2021, https://arxiv.org/abs/2011.07248).

Every layer takes a vector ``(D,)`` or an image ``(C, H, W)``: the "channels" are dim 1 of the
batch, and per-channel quantities are shared over the H x W positions, which is why image
log-determinants carry a factor H*W. Couplings and splits cut the channels into a first part of
``C // 2`` and a second of ``C - C // 2`` (so a 2-D toy input splits 1 + 1).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.conditioning import with_context
from zoo.errors import RecipeError, ShapeError
from zoo.flow import FactorOut
from zoo.hookspecs import hookimpl
from zoo.plugins import _few_outputs_conv as few_outputs

# --- shared pieces -----------------------------------------------------------------------------


def _check_vector_or_image(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) not in (1, 3):
        raise ShapeError(
            f"{name} needs a vector (D,) or an image (C, H, W) per sample; got {shape}. "
            "Flatten the data, or reshape it into (C, H, W)."
        )


def _channel_halves(name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(C // 2, C - C // 2) for a layer that splits the channels in two parts."""
    _check_vector_or_image(name, shape)
    channels = shape[0]
    if channels < 2:
        raise ShapeError(
            f"{name} splits the channels (dim 1) in two, so it needs at least 2; got shape "
            f"{shape}. Put a squeeze before it (images: (1, H, W) -> (4, H/2, W/2))."
        )
    return channels // 2, channels - channels // 2


def _per_channel_view(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape that broadcasts a (C,) vector over a (B, C, ...) batch."""
    return (1, shape[0]) + (1,) * (len(shape) - 1)


class ZeroInitOutput(nn.Module):
    """Zero-initialised last layer, output scaled by exp(3 logs): h = (W x + b) exp(3 logs).

    A 3x3 convolution (padding 1) for images, a linear layer for vectors; to few channels on the
    CPU the convolution runs as matrix products (``_few_outputs_conv``). Starting at zero makes
    a coupling the identity and a learned prior N(0, 1) at initialisation; the learned
    ``logs`` (Glow's ``Conv2dZeros``, arXiv 1807.03039) lets the output scale grow fast.
    """

    logscale_factor = 3.0

    def __init__(self, in_channels: int, out_channels: int, image: bool):
        super().__init__()
        if image:
            self.layer: nn.Module = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        else:
            self.layer = nn.Linear(in_channels, out_channels)
        nn.init.zeros_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (W x + b) s = (s W) x + s b: the scale goes into the (small) weights, which saves a
        # pass over the output (the same values up to rounding).
        scale = torch.exp(self.logscale_factor * self.logs)
        weight = self.layer.weight * scale.view((-1,) + (1,) * (self.layer.weight.dim() - 1))
        bias = self.layer.bias * scale
        if isinstance(self.layer, nn.Conv2d):
            if few_outputs.pays_off(x, weight):  # 64 -> 4 channels and the like, on the CPU
                return few_outputs.few_outputs_conv3x3(x, weight, bias)
            return F.conv2d(x, weight, bias, padding=1)
        return F.linear(x, weight, bias)


class CouplingNet(nn.Sequential):
    """The coupling network (an ``nn.Sequential``, so its weights keep their names); on images it
    runs channels-last (NHWC): oneDNN's convolutions with few channels, forward and backward, are
    1.2-3.4x faster in that layout at 14x14 (bench/glow_vs_normflows.py). The layout is only
    memory order: the values, shapes and results are those of the NCHW network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def conditioner(in_channels: int, out_channels: int, width: int, image: bool) -> nn.Sequential:
    """The coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3 (images),
    or the same as a 2-hidden-layer MLP (vectors)."""
    if image:
        first = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        middle = nn.Conv2d(width, width, kernel_size=1)
    else:
        first, middle = nn.Linear(in_channels, width), nn.Linear(width, width)
    return CouplingNet(
        first, nn.ReLU(inplace=True), middle, nn.ReLU(inplace=True), ZeroInitOutput(width, out_channels, image)
    )


# --- actnorm -----------------------------------------------------------------------------------


def _image_layout(x: torch.Tensor) -> torch.Tensor:
    """Images in the layout the Glow layers run in: channels-last (NHWC), which the layers after
    an actnorm keep (1x1 convolutions, couplings, splits, squeeze), so that the coupling
    networks' convolutions get it without a conversion each (bench/glow_vs_normflows.py).
    Vectors as they are. Only the memory order changes, never a value."""
    if x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


class ActNorm(nn.Module):
    """Per-channel affine y = (x - b) exp(-s), data-initialised (Glow, arXiv 1807.03039).

    On the first training-mode forward, b is set to the per-channel mean and s to
    log(std + 1e-6), so that the output of that batch has zero mean and unit variance per channel.
    The ``initialized`` buffer is saved with the weights, so loaded weights are never
    re-initialised. ``logdet = -(H W) sum(s)`` (``-sum(s)`` for vectors).
    """

    examples = [
        {"shape": (2,), "params": {}},
        {"shape": (4,), "params": {}},
        {"shape": (2, 4, 4), "params": {}},
        {"shape": (4, 2, 6), "params": {}},
    ]
    eps = 1e-6

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        shape = tuple(shape)
        if len(shape) < 1:
            raise ShapeError(f"actnorm needs a channel dimension per sample; got shape {shape}")
        self.out_shape = shape
        self._view = _per_channel_view(shape)
        self._positions = math.prod(shape[1:])  # H*W for images, 1 for vectors
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.log_scale = nn.Parameter(torch.zeros(shape[0]))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize_from(self, x: torch.Tensor) -> None:
        """Set b and s from the batch x so that its output is standardised per channel."""
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.bias.copy_(per_channel.mean(1))
        if per_channel.shape[1] > 1:  # one value per channel has no spread: keep s = 0
            self.log_scale.copy_(torch.log(per_channel.std(1, unbiased=False) + self.eps))
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self.initialized:
            self.initialize_from(x)
        y = (_image_layout(x) - self.bias.view(self._view)) * torch.exp(-self.log_scale).view(self._view)
        logdet = -self._positions * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return _image_layout(y) * torch.exp(self.log_scale).view(self._view) + self.bias.view(self._view)


# --- invertible 1x1 convolution ----------------------------------------------------------------


def _mix_channels(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """y[:, i] = sum_j W[i, j] x[:, j] at every position (a 1x1 convolution)."""
    if x.dim() == 4:
        return F.conv2d(x, weight[:, :, None, None])
    return F.linear(x, weight)


class Conv1x1(nn.Module):
    """Invertible 1x1 convolution y = W x per position (Glow, arXiv 1807.03039).

    W starts as a random orthogonal matrix (QR of a Gaussian). Plain: ``logdet = H W
    log|det W|``. With ``lu=True``, W = P (L + I) (U + diag(sign exp(log_s))), P and sign fixed
    buffers, L strictly lower and U strictly upper: ``logdet = H W sum(log_s)`` in O(C).
    Vectors (D,) are the case H W = 1.
    """

    examples = [
        {"shape": (2,), "params": {}},
        {"shape": (4,), "params": {"lu": True}},
        {"shape": (2, 4, 4), "params": {"lu": True}},
        {"shape": (4, 2, 6), "params": {}},
    ]

    def __init__(self, shape: Sequence[int], lu: bool = False):
        super().__init__()
        shape = tuple(shape)
        _check_vector_or_image("conv1x1", shape)
        self.out_shape = shape
        self.lu = lu
        self._positions = math.prod(shape[1:])
        channels = shape[0]
        orthogonal = torch.linalg.qr(torch.randn(channels, channels))[0]
        if not lu:
            self.weight = nn.Parameter(orthogonal)
            return
        permutation, lower, upper = torch.linalg.lu(orthogonal)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign_s", torch.sign(diagonal))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("identity", torch.eye(channels))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(diagonal.abs()))

    def weight_matrix(self) -> torch.Tensor:
        """The dense C x C matrix W."""
        if not self.lu:
            return self.weight
        lower = self.lower * self.lower_mask + self.identity
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.permutation @ lower @ upper

    def log_abs_det(self) -> torch.Tensor:
        """log|det W| of the C x C matrix (without the H W factor)."""
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight)[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = _mix_channels(x, self.weight_matrix())
        return y, (self._positions * self.log_abs_det()).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return _mix_channels(y, torch.linalg.inv(self.weight_matrix()))


# --- affine couplings --------------------------------------------------------------------------


class AffineCoupling(nn.Module):
    """Affine coupling z2 = x2 exp(log s(x1)) + t(x1) (RealNVP arXiv 1605.08803, Glow 1807.03039).

    The network of the first C // 2 channels outputs log-scale and shift for the other
    C - C // 2, interleaved (h[:, 0::2], h[:, 1::2]). ``scale_fn``: ``"tanh"`` gives
    log s = 2 tanh(h / 2) (SNF; the layer starts as the identity), ``"sigmoid"`` gives
    s = sigmoid(h + 2) (Glow; starts as the scaling x2 * sigmoid(2) ~ 0.88 x2).
    ``logdet = sum(log s)``. Network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3
    (images), or an MLP with 2 hidden layers (vectors), ``hidden`` units wide. Conditional: the
    network also sees the context (extra input channels, constant over the pixels).
    """

    takes_context = True

    examples = [
        {"shape": (2,), "params": {"hidden": 8}},
        {"shape": (5,), "params": {"hidden": 8, "scale_fn": "sigmoid"}},
        {"shape": (2, 4, 4), "params": {"hidden": 4}},
        {"shape": (3, 2, 6), "params": {"hidden": 4, "scale_fn": "sigmoid"}},
        # 9 x 4 outputs <= 36 wide: the last convolution takes the matrix-product form on the CPU
        {"shape": (4, 3, 5), "params": {"hidden": 36}},
    ]
    params_schema = {
        "type": "object",
        "properties": {
            "hidden": {"type": "integer", "minimum": 1, "default": 64},
            "scale_fn": {"enum": ["tanh", "sigmoid"], "default": "tanh"},
        },
        "additionalProperties": False,
    }

    def __init__(
        self, shape: Sequence[int], hidden: int = 64, scale_fn: Literal["tanh", "sigmoid"] = "tanh",
        context_features: int = 0,
    ):
        super().__init__()
        self._build(tuple(shape), hidden, scale_fn, "affine_coupling", context_features)

    def _build(self, shape: tuple[int, ...], width: int, scale_fn: str, name: str,
               context_features: int = 0) -> None:
        if width < 1:
            raise RecipeError(f"{name}: the network width must be >= 1, got {width!r}")
        if scale_fn not in ("tanh", "sigmoid"):
            raise RecipeError(f"{name}: scale_fn must be 'tanh' or 'sigmoid', got {scale_fn!r}")
        self.first_channels, second_channels = _channel_halves(name, shape)
        self.out_shape = shape
        self.scale_fn = scale_fn
        self.context_features = int(context_features)
        self.net = conditioner(self.first_channels + self.context_features, 2 * second_channels, width,
                               len(shape) == 3)

    def log_scale_and_shift(self, x1: torch.Tensor, context: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(with_context(x1, context))
        raw, shift = h[:, 0::2], h[:, 1::2]
        if self.scale_fn == "tanh":
            return 2 * torch.tanh(raw / 2), shift
        return F.logsigmoid(raw + 2), shift

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.first_channels], x[:, self.first_channels :]
        log_s, t = self.log_scale_and_shift(x1, context)
        z2 = x2 * torch.exp(log_s) + t
        return torch.cat([x1, z2], dim=1), log_s.flatten(1).sum(1)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x1, z2 = z[:, : self.first_channels], z[:, self.first_channels :]
        log_s, t = self.log_scale_and_shift(x1, context)
        return torch.cat([x1, (z2 - t) * torch.exp(-log_s)], dim=1)


# The SNF layers (`coupling`, `split_prior`) take one parameter, the network width.
WIDTH_EXAMPLES = [
    {"shape": (2,), "params": {"width": 8}},
    {"shape": (2, 4, 4), "params": {"width": 4}},
    {"shape": (3, 2, 6), "params": {"width": 4}},
]
WIDTH_PARAMS_SCHEMA = {
    "type": "object",
    "properties": {"width": {"type": "integer", "minimum": 1, "default": 512}},
    "additionalProperties": False,
}


class Coupling(AffineCoupling):
    """SNF's Glow coupling: log s = 2 tanh(h/2), width-512 conv net (arXiv 2011.07248, 1807.03039).

    ``affine_coupling`` with ``scale_fn="tanh"``, the network width named ``width`` as in the
    Self Normalizing Flows code: Conv3x3(C/2 -> w) + ReLU, Conv1x1(w -> w) + ReLU, zero-init
    Conv3x3(w -> C) times exp(3 logs). z2 = x2 exp(log s) + t, ``logdet = sum(log s)``.
    """

    examples = WIDTH_EXAMPLES
    params_schema = WIDTH_PARAMS_SCHEMA
    takes_context = True

    def __init__(self, shape: Sequence[int], width: int = 512, context_features: int = 0):
        nn.Module.__init__(self)
        self._build(tuple(shape), width, "tanh", "coupling", context_features)


# --- factoring layers (multi-scale) ------------------------------------------------------------


class Split(FactorOut):
    """Glow's split with a learned conditional prior on the factored half (arXiv 1807.03039).

    x1 (the first C // 2 channels) continues through the flow; a zero-initialised 3x3 conv of x1
    (a linear layer for vectors) gives m = h[:, 0::2] and logs = h[:, 1::2], and
    z2 = (x2 - m) exp(-logs) goes to the N(0, I) base. ``factor`` returns ``(x1, z2, -sum(logs))``;
    ``forward`` (from ``FactorOut``) adds ``log N(z2; 0, I)``; ``inverse(x1)`` samples z2 ~ N(0, temperature^2).
    Conditional: the prior's convolution also sees the context (extra input channels).
    """

    takes_context = True

    examples = [
        {"shape": (2,), "params": {}},
        {"shape": (5,), "params": {}},
        {"shape": (2, 4, 4), "params": {}},
        {"shape": (4, 2, 6), "params": {}},
    ]

    def __init__(self, shape: Sequence[int], context_features: int = 0):
        kept, factored = _channel_halves("split", tuple(shape))
        super().__init__(shape, kept)
        self.context_features = int(context_features)
        self.prior = ZeroInitOutput(kept + self.context_features, 2 * factored, image=len(shape) == 3)

    def mean_and_log_scale(self, x1: torch.Tensor, context: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.prior(with_context(x1, context))
        return h[:, 0::2], h[:, 1::2]

    def factor(self, x: torch.Tensor, context: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1, x2 = x[:, : self.kept_channels], x[:, self.kept_channels :]
        mean, log_scale = self.mean_and_log_scale(x1, context)
        z2 = (x2 - mean) * torch.exp(-log_scale)
        return x1, z2, -log_scale.flatten(1).sum(1)

    def unfactor(self, x1: torch.Tensor, z2: torch.Tensor, context: torch.Tensor | None = None
                 ) -> torch.Tensor:
        mean, log_scale = self.mean_and_log_scale(x1, context)
        return torch.cat([x1, mean + torch.exp(log_scale) * z2], dim=1)


class SplitPrior(FactorOut):
    """SNF's split prior: a coupling, then x2 factored out to N(0, I) (arXiv 2011.07248).

    ``factor(x)`` runs the coupling (x1 unchanged, x2 -> x2 exp(log s(x1)) + t(x1)) and returns
    ``(x1, coupled x2, coupling logdet)``; ``forward`` adds ``log N(x2; 0, I)``. Unlike Glow's
    ``split`` the factored part's prior is fixed; the coupling makes it depend on x1.
    """

    examples = WIDTH_EXAMPLES
    params_schema = WIDTH_PARAMS_SCHEMA
    takes_context = True

    def __init__(self, shape: Sequence[int], width: int = 512, context_features: int = 0):
        kept, _ = _channel_halves("split_prior", tuple(shape))
        super().__init__(shape, kept)
        self.context_features = int(context_features)
        self.coupling = Coupling(shape, width=width, context_features=context_features)

    def factor(self, x: torch.Tensor, context: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y, logdet = self.coupling(x, context)
        return y[:, : self.kept_channels], y[:, self.kept_channels :], logdet

    def unfactor(self, x1: torch.Tensor, z2: torch.Tensor, context: torch.Tensor | None = None
                 ) -> torch.Tensor:
        return self.coupling.inverse(torch.cat([x1, z2], dim=1), context)


@hookimpl
def zoo_layers():
    return {
        "actnorm": ActNorm,
        "conv1x1": Conv1x1,
        "affine_coupling": AffineCoupling,
        "coupling": Coupling,
        "split": Split,
        "split_prior": SplitPrior,
    }
