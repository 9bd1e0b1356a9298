"""A run folder staged as the files of a Hub repo (``stage_repo``).

Loading goes through ``zoo.runs`` (the one loader of run folders and snapshots); the names are
re-exported here for the hub package. Saving mirrors loading: the ``config.json`` written here is
what ``zoo.runs.folder_config`` reads back from a snapshot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from zoo.errors import HubError, WeightsError
from zoo.hub import _card as card
from zoo.runs import (
    CONFIG_FILE,
    METRICS_FILE,
    RECIPE_FILE,
    check_plugins,
    file_sha256,
    folder_config,
    read_json,
)
from zoo.runs import load_folder as load_model_folder
from zoo.weights import WEIGHTS_FILE, read_metadata

__all__ = ["CONFIG_FILE", "check_plugins", "folder_config", "load_model_folder", "stage_repo"]


# --- staging a run folder as the files of a Hub repo ------------------------------------------


def _newest_sample(run: Path) -> Path | None:
    samples = sorted((run / "samples").glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name))
    return samples[-1] if samples else None


def stage_repo(run_dir: str | Path, repo_id: str, out: Path) -> dict[str, Any]:
    """Write the files of a model repo for ``run_dir`` into ``out``; returns the config.

    Checks first that the run finished (metrics.json), that its weights carry the zoo version and
    the recipe sha256, that the sha256 is the run's recipe's, and that the weights load into the
    model the recipe builds: only loadable models are published.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise HubError(f"{run}: no such run folder; pass the folder that `zoo run` printed")
    if (run / CONFIG_FILE).is_file():
        raise HubError(f"{run}: a pulled model, not a run folder; push the run folder that trained it")
    recipe, _model = load_model_folder(run)  # every check of a load: only loadable models go out
    meta = read_metadata(run / WEIGHTS_FILE)
    if not meta.get("zoo_version"):
        raise WeightsError(
            f"{run / WEIGHTS_FILE}: its metadata lacks zoo_version, so nobody could tell which zoo made "
            "it. Re-run training with this zoo (`zoo run recipe.yaml`)."
        )
    metrics_path = run / METRICS_FILE
    if not metrics_path.is_file():
        raise HubError(f"{run}: no metrics.json, so training did not finish; let `zoo run` complete first")
    metrics = read_json(metrics_path)
    if not isinstance(metrics, dict):
        raise WeightsError(f"{metrics_path}: must be a JSON mapping of metric names to values")
    facts = folder_config(run)
    config = {
        "zoo_version": meta["zoo_version"],
        "schema_version": card.SCHEMA_VERSION,
        "recipe": dict(recipe),
        "recipe_sha256": recipe.sha256,
        "weights_sha256": file_sha256(run / WEIGHTS_FILE),
        "input_shape": list(facts["input_shape"]) if facts["input_shape"] else None,
        "n_bits": facts["n_bits"],
        "labels": facts["labels"],
        "plugins": _plugins_used(recipe),
    }
    shutil.copyfile(run / WEIGHTS_FILE, out / WEIGHTS_FILE)
    shutil.copyfile(run / RECIPE_FILE, out / RECIPE_FILE)
    shutil.copyfile(metrics_path, out / "metrics.json")
    sample = _newest_sample(run)
    if sample is not None:
        shutil.copyfile(sample, out / "sample.png")
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(card.model_card(config, metrics, repo_id, sample is not None))
    return config


def _plugins_used(recipe) -> dict[str, dict[str, str]]:
    from zoo.train import plugins_used

    return plugins_used(recipe)
