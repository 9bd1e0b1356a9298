"""Anomaly scores: the negative log-likelihood of inputs under a trained flow.

The flow_models seed's point: the same model that generates images also flags the ones it
finds unlikely. ``zoo score RUN FILE...`` prints each file's NLL (and bits/dim for images);
high means unusual. Images are resized and quantised to the model's data shape and bits;
vectors are read from ``.npy`` or whitespace/comma-separated text files, one sample per row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from zoo.errors import DataError
from zoo.flow import FlowModel

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image_as(path: Path, shape: Sequence[int], n_bits: int | None,
                  notes: list[str] | None = None) -> torch.Tensor:
    """An image file as a (C, H, W) tensor on the model's discrete scale.

    An image of another size or mode is resized (bilinear) and converted; each change is
    appended to ``notes`` ("resized from 40x50 to 28x28", "converted from RGB to grey")."""
    c, h, w = shape
    target = "L" if c == 1 else "RGB"
    try:
        image = Image.open(path)
        image.load()
        mode, size = image.mode, image.size
        image = image.convert(target)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    if notes is not None and size != (w, h):
        notes.append(f"resized from {size[0]}x{size[1]} to {w}x{h}")
    if notes is not None and mode != target:
        notes.append(f"converted from {mode} to {'grey' if target == 'L' else 'RGB'}")
    image = image.resize((w, h), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32).reshape(h, w, c).transpose(2, 0, 1)
    if n_bits and n_bits < 8:
        array = np.floor(array / 2 ** (8 - n_bits))
    return torch.from_numpy(array.copy())


def load_vectors(path: Path, dim: int) -> torch.Tensor:
    try:
        data = np.load(path, allow_pickle=False) if path.suffix == ".npy" else np.loadtxt(
            path, delimiter="," if path.suffix == ".csv" else None, ndmin=2
        )
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read vectors ({exc}); use .npy or one sample per text row") from exc
    data = np.asarray(data, dtype=np.float32).reshape(-1, dim) if data.size % dim == 0 else None
    if data is None:
        raise DataError(f"{path}: the values do not form rows of {dim} numbers (the model's data size)")
    return torch.from_numpy(data)


def marginal_log_prob(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x): a flow's own, or for a class-conditional flow the mixture over its classes,
    log sum_y p(x | y) p(y) (the training prior, uniform when unknown). Other conditional flows
    need their context: a ContextError says so."""
    from zoo.errors import ContextError

    encoder = getattr(model, "context_encoder", None)
    if encoder is None:
        return model.log_prob(x)
    if encoder.kind != "class":
        raise ContextError(f"this model is conditioned on {encoder.describe()}: it has no density of "
                           "x alone to score; score it in Python with model.log_prob(x, context)")
    from zoo.tasks import class_log_joint

    return torch.logsumexp(class_log_joint(model, x), dim=1).to(x.dtype)


def read_file(model, path: Path, notify: Callable[[str], None] | None = None
              ) -> tuple[torch.Tensor, list[str]]:
    """One input file as a batch on the model's scale, and a name per input: an image (image
    models; ``notify`` hears what was done to one of another size or mode) or the rows of a
    vector file (``.npy``, ``.csv``, text)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if len(model.shape) != 3:
        batch = load_vectors(path, model.dim).reshape(-1, *model.shape)
        return batch, [f"{path}:{i + 1}" for i in range(batch.shape[0])]
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: expected an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    notes: list[str] = []
    batch = load_image_as(path, model.shape, model.n_bits, notes)[None]
    if notes and notify is not None:
        notify(f"{path}: {' and '.join(notes)}")
    return batch, [str(path)]


def score_files(model: FlowModel, files: Sequence[str],
                notify: Callable[[str], None] | None = None) -> Iterator[tuple[str, float, float | None]]:
    """Yield (name, NLL in nats, bits/dim or None) per image file or per row of a vector file;
    ``notify`` hears what was done to an image of another size or mode."""
    model.eval()
    is_image = len(model.shape) == 3
    for name in files:
        batch, labels = read_file(model, Path(name), notify)
        with torch.no_grad():
            nll = (-marginal_log_prob(model, batch.to(next(model.parameters()).device))).cpu()
        for label, value in zip(labels, nll.tolist()):
            yield label, value, value / (model.dim * math.log(2)) if is_image else None
