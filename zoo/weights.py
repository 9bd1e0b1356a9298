"""Model weights on disk: safetensors only (never pickle), written atomically, checked on load."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zoo.errors import WeightsError

WEIGHTS_FILE = "model.safetensors"


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: Mapping[str, object]) -> None:
    """Write the state dict to ``path`` via a temporary file and a rename: never half-written.

    ``metadata`` values that are not strings are stored as JSON (safetensors metadata is str->str).
    """
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".safetensors.tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shapes differ for " + "; ".join(wrong[:5]) + (" ..." if len(wrong) > 5 else ""))
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsError(
            f"{path}: the weights do not match the model built from the recipe ({'; '.join(parts)}). "
            "Use the recipe.yaml that was saved with these weights."
        )
    model.load_state_dict(state)
    return read_metadata(path)


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
