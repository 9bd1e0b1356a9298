"""Model weights on disk: safetensors only (never pickle), written atomically, checked on load."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from zoo._atomic import write_bytes
from zoo.errors import WeightsError

WEIGHTS_FILE = "model.safetensors"


def save_weights(model: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                 metadata: Mapping[str, object]) -> str:
    """Write the state dict (of ``model``, or ``model`` itself when it is one: a checkpoint's best
    model) to ``path`` atomically; return the file's sha256 (run.json keeps it).

    ``metadata`` values that are not strings are stored as JSON (safetensors metadata is str->str).
    """
    tensors = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    # Serialised in memory and written once by the atomic writer: safetensors' own save_file
    # would make a second temporary file of the model's size.
    data = save(state, metadata=meta)
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (without loading tensors)."""
    from safetensors import safe_open

    path = Path(path)
    _require(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(_corrupt(path, exc)) from exc


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, str]:
    """Load a safetensors state dict into ``model``; refuse missing, extra or mis-shaped tensors.

    Returns the file's metadata. Nothing is loaded into the model unless every check passes.
    """
    path = Path(path)
    _require(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(_corrupt(path, exc)) from exc
    check_fits(model.state_dict(), state, path)
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not_finite:
        raise WeightsError(
            f"{path}: tensors {not_finite[:5]} hold NaN or infinite values; the file was damaged or "
            "training diverged. Re-download it (`zoo pull`) or re-run training."
        )
    model.load_state_dict(state)
    return read_metadata(path)


def check_fits(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], path: Path,
               fix: str = "Use the recipe.yaml that was saved with these weights.") -> None:
    """Refuse (WeightsError naming ``path``) a state dict with missing, extra, mis-shaped or
    mis-typed tensors for a model whose state dict is ``expected``."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    wrong_dtype = [
        f"{k}: file {state[k].dtype} vs model {expected[k].dtype}"
        for k in sorted(set(state) & set(expected))
        if state[k].dtype != expected[k].dtype
    ]
    if missing or unexpected or wrong or wrong_dtype:
        parts = []
        if wrong:
            parts.append("shapes differ for " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if wrong_dtype:
            parts.append("dtypes differ for " + "; ".join(wrong_dtype[:5]))
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsError(
            f"{path}: the weights do not match the model built from the recipe ({'; '.join(parts)}). "
            + fix
        )


def _require(path: Path) -> None:
    if not path.is_file():
        raise WeightsError(
            f"{path}: no weights file. A run folder gets model.safetensors at its first evaluation; "
            "re-run training (`zoo run RECIPE`) or point at a folder that has finished one."
        )


def _corrupt(path: Path, exc: Exception) -> str:
    return (
        f"{path}: not a readable safetensors file ({exc}). The file is corrupt or truncated; "
        "re-download it (`zoo pull`) or re-run training."
    )
