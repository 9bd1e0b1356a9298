"""Model folders, both ways: a run folder staged as the files of a Hub repo (``stage_repo``), and
a run folder or a downloaded snapshot loaded back into a model (``load_model_folder``).

Saving and loading are mirror images: ``folder_config`` gives the same ``config.json`` mapping
for a snapshot (read from the file) and for a run folder (derived from recipe.yaml, run.json and
the weights' metadata), and both load through the same steps: plugin check, recipe, model,
weights with shape checks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from zoo.hub import _card as card
from zoo.hub import _transport as transport
from zoo.errors import HubError, WeightsError
from zoo.weights import WEIGHTS_FILE, read_metadata

CONFIG_FILE = "config.json"


# --- seams onto the recipe and assembly modules (imported late: they import the registry) -------


def _load_recipe(source):
    from zoo.recipe import load_recipe

    return load_recipe(source)


def _build_model(recipe, shape, n_bits):
    from zoo.assemble import build_model

    return build_model(recipe, shape=shape, n_bits=n_bits)


def _plugins_used(recipe) -> dict[str, dict[str, str]]:
    from zoo.train import plugins_used

    return plugins_used(recipe)


# --- folders: the one loader for run folders and Hub snapshots ----------------------------------


def _json_value(text: str | None) -> Any:
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return text


def folder_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of a snapshot, or the same mapping derived from a run folder."""
    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{config_path}: not valid JSON ({exc}); pull the model again") from exc
        if not isinstance(config, dict) or "recipe" not in config:
            raise WeightsError(f"{config_path}: not a zoo config (no 'recipe'); was this repo pushed by `zoo push`?")
        if int(config.get("schema_version", 1)) > card.SCHEMA_VERSION:
            raise WeightsError(
                f"{config_path}: schema version {config['schema_version']} is newer than this zoo reads "
                f"({card.SCHEMA_VERSION}); upgrade zoo (pip install -U zoo-flows)."
            )
        return config
    recipe_path = folder / "recipe.yaml"
    if not recipe_path.is_file():
        raise WeightsError(
            f"{folder}: neither a run folder (no recipe.yaml) nor a pulled model (no config.json). "
            "Pass the folder that `zoo run` printed, or a model name / ORG/NAME to pull."
        )
    import yaml

    meta = read_metadata(folder / WEIGHTS_FILE)
    info_path = folder / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return {
        "zoo_version": meta.get("zoo_version"),
        "schema_version": card.SCHEMA_VERSION,
        "recipe": yaml.safe_load(recipe_path.read_text()),
        "recipe_sha256": meta.get("recipe_sha256"),
        "input_shape": info.get("input_shape", _json_value(meta.get("input_shape"))),
        "n_bits": info.get("n_bits", _json_value(meta.get("n_bits"))),
        "plugins": info.get("plugins", {}),
    }


def check_plugins(config: Mapping[str, Any], where: str, registry=None) -> None:
    """Refuse a model whose recipe needs plugins that are not installed, naming the packages."""
    from zoo.registry import get_registry

    registry = registry or get_registry()
    loaded = {p.name: p for p in registry.plugins}
    missing, broken = {}, {}
    for name, info in (config.get("plugins") or {}).items():
        plugin = loaded.get(name)
        if plugin is None or plugin.blocked:
            missing[name] = dict(info or {})
        elif plugin.error:
            broken[name] = plugin.error
    if missing or broken:
        raise transport.missing_plugins_error(where, missing, broken)


def load_model_folder(folder: str | Path, *, registry=None):
    """``(recipe, model)`` of a run folder or a pulled snapshot; the model is in eval mode.

    Weights whose tensors or shapes differ from the model the recipe builds are refused
    (WeightsError naming the tensor and both shapes) and nothing is loaded.
    """
    from zoo.weights import load_weights

    folder = Path(folder)
    config = folder_config(folder)
    check_plugins(config, str(folder), registry)
    # A run folder's recipe.yaml is loaded from its file, so recipe errors name it.
    is_run = not (folder / CONFIG_FILE).is_file()
    recipe = _load_recipe(folder / "recipe.yaml" if is_run else config["recipe"])
    weights = folder / WEIGHTS_FILE
    meta = read_metadata(weights)
    published_sha = config.get("recipe_sha256")
    if published_sha and meta.get("recipe_sha256") and meta["recipe_sha256"] != published_sha:
        raise WeightsError(
            f"{weights}: these weights were trained from recipe {meta['recipe_sha256'][:12]}..., but the "
            f"folder's recipe is {published_sha[:12]}...; the files come from different runs. Re-push the run."
        )
    shape = config.get("input_shape")
    model = _build_model(recipe, tuple(shape) if shape else None, config.get("n_bits"))
    load_weights(model, weights)
    model.eval()
    return recipe, model


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
    recipe, _model = load_model_folder(run)
    meta = read_metadata(run / WEIGHTS_FILE)
    lacking = [k for k in ("zoo_version", "recipe_sha256") if not meta.get(k)]
    if lacking:
        raise WeightsError(
            f"{run / WEIGHTS_FILE}: its metadata lacks {', '.join(lacking)}, so nobody could tell which "
            "recipe and zoo made it. Re-run training with this zoo (`zoo run recipe.yaml`)."
        )
    if meta["recipe_sha256"] != recipe.sha256:
        raise WeightsError(
            f"{run / WEIGHTS_FILE}: trained from recipe sha256 {meta['recipe_sha256']}, but "
            f"{run / 'recipe.yaml'} has sha256 {recipe.sha256}; the recipe was edited after training. "
            "Restore it or re-run training."
        )
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise HubError(f"{run}: no metrics.json, so training did not finish; let `zoo run` complete first")
    metrics = json.loads(metrics_path.read_text())
    config = folder_config(run)
    config.update(
        zoo_version=meta["zoo_version"],
        recipe=dict(recipe),
        recipe_sha256=recipe.sha256,
        plugins=_plugins_used(recipe),
    )
    shutil.copyfile(run / WEIGHTS_FILE, out / WEIGHTS_FILE)
    shutil.copyfile(run / "recipe.yaml", out / "recipe.yaml")
    shutil.copyfile(metrics_path, out / "metrics.json")
    sample = _newest_sample(run)
    if sample is not None:
        shutil.copyfile(sample, out / "sample.png")
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(card.model_card(config, metrics, repo_id, sample is not None))
    return config
