"""Built-in plugin: self-normalizing layers and their exact twins.

Self Normalizing Flows (Keller, Peters, Jaini, Hoogeboom, Forré, Welling; ICML 2021,
https://arxiv.org/abs/2011.07248): a dense or convolutional layer ``z = W x + b`` that also
learns an approximate inverse ``R`` (``x ~ R (z - b)``). Training can then replace the O(D^3)
gradient of ``log|det W|`` (``W^{-T}``) by ``R^T`` (see ``_selfnorm_ops``), while a layer-wise
reconstruction loss keeps ``R ~ W^{-1}``. Evaluation is always exact.

Layers
------
``selfnorm_fc`` (vectors ``(D,)``) and ``selfnorm_conv`` (images ``(C, H, W)``, "same" padding)
    W and R. Two switches, set by the gradient mode (``zoo.plugins.gradient_modes``):

    - ``self_normalized`` (default False): in training mode, report log-determinant 0 and use the
      self-normalized gradient for W and R. With False, or in ``eval()`` mode, the layer reports
      the exact log-determinant with its true gradient, so ``selfnorm_*`` under
      ``gradient_mode: exact`` trains exactly (R is then trained only by a reconstruction loss).
    - ``fast_inverse`` (default False): ``inverse`` uses R (one matmul / convolution; what SNF
      sampling uses, see ``zoo.flow.fast_inverses``). By default ``inverse`` is the exact inverse
      of ``forward`` (a linear solve), as the layer contract requires.

    ``reconstruction_loss(symmetric)`` is the per-sample ``||x - R W x||^2`` on the input of the
    last training forward (the gradient modes add it to the loss).
``exact_fc`` / ``exact_conv``
    The same maps without R: the lighter twins for the paper's "Exact gradient" baselines (no
    second weight, nothing saved for a reconstruction loss).

Log-determinants: ``slogdet(W)`` for FC; for a convolution, ``H W slogdet(W[:, :, 0, 0])`` when
the kernel is 1x1, otherwise ``slogdet`` of the dense (CHW x CHW) convolution matrix. Outside of
gradient computation the value (and the LU factors of the exact inverse) is cached until a
parameter changes (checked through the parameter's ``_version``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import RecipeError, ShapeError
from zoo.hookspecs import hookimpl
from zoo.plugins._selfnorm_ops import (
    SelfNormConv2d,
    SelfNormLinear,
    conv_matrix,
    flip_kernel,
)
from zoo.precision import in_float32

NOISE_GAIN = 0.01  # xavier-normal gain of the noise added to the identity at initialisation
MAX_DENSE_DIM = 8192  # largest C*H*W whose dense convolution matrix we build for the exact logdet


# --- shared pieces -----------------------------------------------------------------------------


def _vector_dim(name: str, shape: tuple[int, ...]) -> int:
    if len(shape) != 1:
        raise ShapeError(
            f"{name} needs a vector (D,) per sample; got shape {shape}. Put a `flatten` layer "
            "before it, or use selfnorm_conv / exact_conv for images."
        )
    return shape[0]


def _image_shape(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeError(
            f"{name} needs an image (C, H, W) per sample; got shape {shape}. Use selfnorm_fc / "
            "exact_fc for vectors, or reshape the data into (C, H, W)."
        )
    return shape  # type: ignore[return-value]


def _same_padding(name: str, kernel_size: int, padding: int | None) -> int:
    """The padding that keeps H x W (the layer must be square to be invertible)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise RecipeError(
            f"{name}: kernel_size must be a positive odd number (an even kernel cannot keep the "
            f"image size, so the layer would not be invertible); got {kernel_size}."
        )
    same = kernel_size // 2
    if padding is not None and padding != same:
        raise RecipeError(
            f"{name}: padding {padding} with kernel_size {kernel_size} changes the image size; "
            f"an invertible convolution needs 'same' padding {same}. Omit `padding`."
        )
    return same


def _noisy_identity_(weight: torch.Tensor) -> float:
    """W = identity (dirac for kernels) + xavier-normal noise of gain 0.01; returns the noise std."""
    with torch.no_grad():
        noise = nn.init.xavier_normal_(torch.empty_like(weight), gain=NOISE_GAIN)
        if weight.dim() == 2:
            nn.init.eye_(weight)
        else:
            nn.init.dirac_(weight)
        weight.add_(noise)
    return noise.std().item() if noise.numel() > 1 else NOISE_GAIN


def _random_orthogonal_(weight: torch.Tensor) -> None:
    """W[:, :, 0, 0] = Q of the QR decomposition of a Gaussian matrix (the seed's 1x1 init)."""
    with torch.no_grad():
        q, _ = torch.linalg.qr(torch.randn(weight.shape[0], weight.shape[1], dtype=torch.float64))
        weight.copy_(q.to(weight.dtype).reshape(weight.shape))


class ParameterCache:
    """Values derived from parameters (log|det|, LU factors), kept until a parameter changes.

    A parameter changes in place (``load_state_dict``, plain optimizers) by bumping its
    ``_version``, or is replaced (``.to()``, ``.double()``): both change the key. Fused optimizers
    update in place *without* bumping ``_version``, so the owner also calls ``invalidate()`` on
    every training-mode forward (an optimizer step always follows one), as the seed did. When
    autograd needs the value's graph (grad enabled and a parameter requires grad) it is always
    recomputed, so training gets the true gradient.
    """

    def __init__(self, owner: nn.Module | None = None) -> None:
        self._store: dict[str, tuple[tuple, torch.Tensor]] = {}
        self._generation = 0
        if owner is not None:
            owner.register_forward_pre_hook(self._invalidate_if_training)

    def invalidate(self) -> None:
        self._generation += 1

    def _invalidate_if_training(self, module: nn.Module, args) -> None:
        if module.training:
            self.invalidate()

    def get(self, name: str, params: Sequence[torch.Tensor], compute: Callable[[], object]):
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return compute()
        key = (self._generation, *((p.data_ptr(), p._version, p.dtype, p.device) for p in params))
        hit = self._store.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        with torch.no_grad():
            value = compute()
        self._store[name] = (key, value)
        return value


# --- dense layers ------------------------------------------------------------------------------


class ExactFC(nn.Module):
    """Dense invertible map z = W x + b, exact log|det W| (the exact-gradient FC baseline).

    ``logdet = log|det W|`` (``torch.linalg.slogdet``, true gradient ``W^{-T}``); ``inverse`` solves
    ``W x = z - b``. W starts as the identity plus small noise.
    """

    examples = [
        {"shape": (2,), "params": {}},
        {"shape": (5,), "params": {"bias": False}},
    ]
    layer_name = "exact_fc"

    def __init__(self, shape: Sequence[int], bias: bool = True):
        super().__init__()
        shape = tuple(shape)
        dim = _vector_dim(self.layer_name, shape)
        self.out_shape = shape
        self.weight = nn.Parameter(torch.empty(dim, dim))
        noise_std = _noisy_identity_(self.weight)
        if bias:
            self.bias = nn.Parameter(torch.randn(dim) * noise_std)
        else:
            self.register_parameter("bias", None)
        self._cache = ParameterCache(owner=self)

    def _shifted(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.bias if self.bias is not None else z

    def log_abs_det(self) -> torch.Tensor:
        """log|det W| (a scalar)."""
        return self._cache.get("logdet", [self.weight], lambda: torch.linalg.slogdet(self.weight)[1])

    def exact_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.linear(x, self.weight, self.bias), self.log_abs_det().expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.exact_forward(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The exact inverse: x = W^{-1} (z - b) (LU factors cached while W is unchanged)."""
        lu, pivots = self._cache.get("lu", [self.weight], lambda: torch.linalg.lu_factor(self.weight))
        return torch.linalg.lu_solve(lu, pivots, self._shifted(z).t()).t()


class SelfNormFC(ExactFC):
    """Self-normalizing dense layer z = W x + b with a learned inverse R (SNF, arXiv 2011.07248).

    Training with ``self_normalized = True``: logdet reported as 0, gradients
    ``dW = 1/2 (g xᵀ - Rᵀ)``, ``dR = 1/2 (-(Wᵀ g) zᵀ + Wᵀ)`` (batch-mean NLL). Otherwise exact.
    ``inverse``: exact (``fast_inverse = True``: ``R (z - b)``). R starts as Wᵀ and is stored
    transposed, as the parameter ``inverse_weight_t``; ``inverse_weight`` is R.
    """

    layer_name = "selfnorm_fc"

    def __init__(self, shape: Sequence[int], bias: bool = True):
        super().__init__(shape, bias=bias)
        # The parameter is R^T, contiguous; R is its transposed (column-major) view. The
        # self-normalized gradients add R^T to dW and W^T to dR^T: with this layout both adds are
        # contiguous (a transposed (D, D) pass costs as much as a matrix product), and the
        # optimizer still sees a contiguous parameter (fused Adam is several times slower on a
        # strided one).
        self.inverse_weight_t = nn.Parameter(self.weight.detach().clone())
        self.self_normalized = False
        self.fast_inverse = False
        # set by the gradient mode when reconstruction_loss(symmetric=False) will follow each
        # self-normalized forward: the forward then computes it too, sharing W x (fewer products)
        self.fuse_reconstruction = False
        self._saved_input: torch.Tensor | None = None
        self._fused_recon: torch.Tensor | None = None

    @property
    def inverse_weight(self) -> torch.Tensor:
        """R, the learned inverse of the weight (a view of the parameter ``inverse_weight_t``)."""
        return self.inverse_weight_t.t()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._fused_recon = None
        if not self.training:
            return self.exact_forward(x)
        self._saved_input = x.detach()  # for reconstruction_loss; a reference, not a copy
        if self.self_normalized:
            fuse = self.fuse_reconstruction and torch.is_grad_enabled()
            z, logdet, recon = in_float32(  # float32 under bf16 autocast: its backward mixes dtypes
                SelfNormLinear.apply, x, self.weight, self.bias, self.inverse_weight, fuse
            )
            self._fused_recon = recon if fuse else None
            return z, logdet
        return self.exact_forward(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        if self.fast_inverse:
            return F.linear(self._shifted(z), self.inverse_weight)
        return super().inverse(z)

    def reconstruction_loss(self, symmetric: bool = False) -> torch.Tensor:
        """Per-sample ``||x - R W x||^2`` on the last training input (symmetric: the mean of that
        and ``||z - W R z||^2`` with z = W x detached); shape (batch,)."""
        if not symmetric and self._fused_recon is not None:
            return self._fused_recon  # computed by the forward, same value and gradients
        x = _saved(self)
        z = F.linear(x, self.weight)
        loss = (x - F.linear(z, self.inverse_weight)).pow(2).sum(1)
        if symmetric:
            z = z.detach()
            z_back = F.linear(F.linear(z, self.inverse_weight), self.weight)
            loss = 0.5 * (loss + (z - z_back).pow(2).sum(1))
        return loss


def _saved(layer: nn.Module) -> torch.Tensor:
    if layer._saved_input is None:
        raise RuntimeError(
            f"{type(layer).__name__}.reconstruction_loss needs a training-mode forward first "
            "(it uses the input of the last one)."
        )
    return layer._saved_input


# --- convolutional layers ----------------------------------------------------------------------


class ExactConv(nn.Module):
    """Invertible k x k convolution ("same" padding), exact log-determinant (the exact baseline).

    ``logdet = log|det M|`` of the dense (CHW x CHW) convolution matrix M (``H W log|det W|``
    for a 1x1 kernel), with its true gradient; ``inverse`` solves ``M x = z - b``. A k x k kernel
    starts as the identity (dirac) plus small noise, a 1x1 kernel as a random rotation.
    """

    examples = [
        {"shape": (2, 3, 3), "params": {"kernel_size": 3}},
        {"shape": (3, 2, 2), "params": {"kernel_size": 1}},
        {"shape": (1, 4, 3), "params": {"kernel_size": 3, "bias": False}},
    ]
    layer_name = "exact_conv"

    def __init__(
        self, shape: Sequence[int], kernel_size: int = 3, padding: int | None = None, bias: bool = True
    ):
        super().__init__()
        shape = tuple(shape)
        channels, height, width = _image_shape(self.layer_name, shape)
        self.padding = _same_padding(self.layer_name, kernel_size, padding)
        if kernel_size > 1 and math.prod(shape) > MAX_DENSE_DIM:
            raise ShapeError(
                f"{self.layer_name}: the exact log-determinant of a {kernel_size}x{kernel_size} "
                f"convolution on {shape} needs a dense {math.prod(shape)}^2 matrix (limit "
                f"{MAX_DENSE_DIM}). Squeeze the image further first, or use kernel_size 1."
            )
        self.out_shape = shape
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        if kernel_size == 1:
            _random_orthogonal_(self.weight)
            noise_std = NOISE_GAIN / math.sqrt(channels)
        else:
            noise_std = _noisy_identity_(self.weight)
        if bias:
            self.bias = nn.Parameter(torch.randn(channels) * noise_std)
        else:
            self.register_parameter("bias", None)
        self._cache = ParameterCache(owner=self)

    def _shifted(self, z: torch.Tensor) -> torch.Tensor:
        return z - self.bias.view(1, -1, 1, 1) if self.bias is not None else z

    def _dense(self) -> torch.Tensor:
        return conv_matrix(self.weight, self.out_shape, self.padding)

    def log_abs_det(self) -> torch.Tensor:
        """log|det M| of the convolution matrix (a scalar)."""

        def compute():
            if self.kernel_size == 1:  # block-diagonal M: one C x C block per pixel
                pixels = self.out_shape[1] * self.out_shape[2]
                return pixels * torch.linalg.slogdet(self.weight[:, :, 0, 0])[1]
            return torch.linalg.slogdet(self._dense())[1]

        return self._cache.get("logdet", [self.weight], compute)

    def exact_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return z, self.log_abs_det().expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.exact_forward(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The exact inverse: solve M x = z - b (per pixel for 1x1 kernels; LU cached)."""
        shifted = self._shifted(z)
        if self.kernel_size == 1:
            lu, pivots = self._cache.get(
                "lu", [self.weight], lambda: torch.linalg.lu_factor(self.weight[:, :, 0, 0])
            )
            pixels = shifted.transpose(0, 1).reshape(shifted.shape[1], -1)  # (C, B*H*W)
            x = torch.linalg.lu_solve(lu, pivots, pixels)
            return x.reshape(shifted.shape[1], shifted.shape[0], *shifted.shape[2:]).transpose(0, 1)
        lu, pivots = self._cache.get("lu", [self.weight], lambda: torch.linalg.lu_factor(self._dense()))
        x = torch.linalg.lu_solve(lu, pivots, shifted.flatten(1).t()).t()
        return x.reshape(shifted.shape)


class SelfNormConv(ExactConv):
    """Self-normalizing k x k convolution with a learned inverse kernel R (SNF, arXiv 2011.07248).

    Training with ``self_normalized = True``: logdet reported as 0, ``dW = 1/2 (data - m * flip(R))``,
    ``dR = 1/2 (data through R + m * flip(W))`` (m: tap counts; see ``_selfnorm_ops``); otherwise
    exact. ``inverse``: exact (``fast_inverse = True``: ``conv(z - b, R)``). R starts as flip(W).
    """

    layer_name = "selfnorm_conv"

    def __init__(
        self, shape: Sequence[int], kernel_size: int = 3, padding: int | None = None, bias: bool = True
    ):
        super().__init__(shape, kernel_size=kernel_size, padding=padding, bias=bias)
        self.inverse_weight = nn.Parameter(flip_kernel(self.weight.detach()).contiguous())
        self.self_normalized = False
        self.fast_inverse = False
        self._saved_input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.exact_forward(x)
        self._saved_input = x.detach()  # for reconstruction_loss; a reference, not a copy
        if self.self_normalized:
            return in_float32(SelfNormConv2d.apply, x, self.weight, self.bias, self.inverse_weight, self.padding)
        return self.exact_forward(x)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        if self.fast_inverse:
            return F.conv2d(self._shifted(z), self.inverse_weight, padding=self.padding)
        return super().inverse(z)

    def reconstruction_loss(self, symmetric: bool = False) -> torch.Tensor:
        """Per-sample ``||x - R * (W * x)||^2`` on the last training input (symmetric: the mean of
        that and ``||z - W * (R * z)||^2`` with z = W * x detached); shape (batch,)."""
        x = _saved(self)
        p = self.padding
        z = F.conv2d(x, self.weight, padding=p)
        loss = (x - F.conv2d(z, self.inverse_weight, padding=p)).pow(2).flatten(1).sum(1)
        if symmetric:
            z = z.detach()
            z_back = F.conv2d(F.conv2d(z, self.inverse_weight, padding=p), self.weight, padding=p)
            loss = 0.5 * (loss + (z - z_back).pow(2).flatten(1).sum(1))
        return loss


@hookimpl
def zoo_layers():
    return {
        "selfnorm_fc": SelfNormFC,
        "selfnorm_conv": SelfNormConv,
        "exact_fc": ExactFC,
        "exact_conv": ExactConv,
    }
