"""The cache of training latents: one safetensors file per model, never used when stale.

Encoding thousands of training images is the slow part of ``zoo manipulate`` and ``zoo score
FOLDER``; their latents are kept (``latents.safetensors`` in a run folder, else
``<cache dir>/latents/<weights sha256>.safetensors``) with the facts they depend on in the
file's metadata: the sha256 of the model's weights (every tensor of its state dict: names,
dtypes, shapes, bytes), a fingerprint of the data set, and this format's version. A cache of
the whole training split serves any number of images. A cache whose
facts differ, or that is damaged, is ignored and rewritten; writes are atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import torch

from zoo._atomic import write_bytes
from zoo.data import FlowDataset, first_tensor, split_labels

FORMAT = "zoo-latents-1"
RUN_CACHE_FILE = "latents.safetensors"


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of a model's weights: every state-dict entry's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(dataset: FlowDataset) -> str:
    """sha256 of what identifies a training split without reading it all: its size, shape, labels
    and its first and last items (another data folder or split gives another fingerprint)."""
    split = dataset.train
    digest = hashlib.sha256(f"{len(split)}|{tuple(dataset.shape)}|{dataset.classes}|{dataset.attributes}|".encode())
    labels = split_labels(split)
    if labels is not None:
        digest.update(labels.contiguous().numpy().tobytes())
    for index in {0, len(split) - 1}:
        digest.update(first_tensor(split[index]).float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_file(folder: Path | None, weights: str) -> Path:
    """Where a model's latents are kept: in its run folder, else in zoo's cache dir."""
    if folder is not None:
        return Path(folder) / RUN_CACHE_FILE
    from zoo.data import cache_dir

    return cache_dir() / "latents" / f"{weights}.safetensors"


def read(path: Path, key: Mapping[str, str], dim: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(latents (N, dim), labels or None) of a cache whose key matches, else None."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or any(meta.get(k) != v for k, v in key.items()):
                return None
            z = f.get_tensor("latents")
            labels = f.get_tensor("labels") if "labels" in f.keys() else None
    except (OSError, SafetensorError, ValueError, RuntimeError):
        return None  # damaged: computed again and rewritten
    if z.ndim != 2 or z.shape[1] != dim or (labels is not None and len(labels) != len(z)):
        return None
    return z, labels


def write(path: Path, key: Mapping[str, str], z: torch.Tensor, labels: torch.Tensor | None) -> Path | None:
    """Save the latents atomically; None (and nothing left behind) where the folder is read-only."""
    from safetensors.torch import save

    tensors = {"latents": z.float().contiguous()}
    if labels is not None:
        tensors["labels"] = labels.long().contiguous()
    try:
        return write_bytes(path, save(tensors, metadata={"format": FORMAT, **key}))
    except OSError:
        return None
