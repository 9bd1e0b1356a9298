"""Publish trained flows to the Hugging Face Hub and fetch them back, as safetensors.

A zoo model repo holds, from ONE commit made by ``push``::

    config.json         zoo version, schema version, the resolved recipe and its sha256, input
                        shape, and the plugins (package, version) whose components the recipe uses
    model.safetensors   the state dict; ``__metadata__`` carries zoo_version and recipe_sha256
    recipe.yaml         the same recipe, for `zoo run`
    metrics.json        the run's final test metrics
    sample.png          the run's newest sample picture (when it has one)
    README.md           the model card (front matter: library_name zoo, license, tags, datasets,
                        model-index with the test NLL and bits/dim)

Loading is the mirror image of saving: a run folder and a downloaded snapshot go through the same
``load_model_folder`` (config -> plugin check -> recipe -> model -> weights with shape checks).

Sources (``resolve_source``): an existing run folder, a catalogue name registered through the
``zoo_pretrained`` hook (pinned revision and sha256), or ``ORG/NAME[@REVISION]``.

Integrity: ``hf_hub_download`` checks only sizes, so ``pull`` re-hashes ``model.safetensors``
against the catalogue's sha256 when it pins one, and always against the content address the
cache stores it under (the ETag: sha256 for LFS files, git blob sha1 for regular ones). A
mismatch evicts the cached copy and raises before anything is loaded.

Settings read at call time: ``ZOO_HUB_ENDPOINT`` (else ``HF_ENDPOINT``) for a mirror,
``ZOO_HUB_TIMEOUT`` (seconds, default 10), ``HF_HUB_OFFLINE`` (cache only), ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_TOKEN``.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from zoo._suggest import did_you_mean
from zoo.hub import _transport as transport
from zoo.hub._folder import CONFIG_FILE, check_plugins, folder_config, load_model_folder, stage_repo
from zoo.errors import HubError, WeightsError
from zoo.weights import WEIGHTS_FILE
OPTIONAL_FILES = ("recipe.yaml", "metrics.json", "README.md", "sample.png")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")

__all__ = [
    "PulledModel",
    "Source",
    "resolve_source",
    "push",
    "pull",
    "from_pretrained",
    "load_pretrained",
    "load_model_folder",
    "folder_config",
    "check_plugins",
    "stage_repo",
    "list_models",
]


@dataclass(frozen=True)
class Source:
    """Where a model comes from: ``kind`` is ``"run"`` (a local folder), ``"catalogue"`` or ``"repo"``."""

    kind: str
    spec: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    sha256: str | None = None  # pinned by the catalogue
    name: str | None = None  # the catalogue name


@dataclass
class PulledModel:
    """A model downloaded into the Hugging Face cache."""

    repo_id: str
    revision: str  # the commit the files come from
    folder: Path  # the snapshot folder holding config.json, model.safetensors, ...
    recipe: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


# --- sources --------------------------------------------------------------------------------------


def _catalogue(registry=None) -> dict[str, Mapping[str, Any]]:
    from zoo.registry import get_registry

    registry = registry or get_registry()
    return {c.name: c.factory for c in registry.components("pretrained")}


def resolve_source(spec: str | Path, *, registry=None) -> Source:
    """Decide what ``spec`` names: a run folder, a catalogue name, or ``ORG/NAME[@REVISION]``."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source("run", text, path=path)
    catalogue = _catalogue(registry)
    if text in catalogue:
        entry = catalogue[text]
        if entry.get("error"):
            raise HubError(f"the catalogue entry {text!r} is broken: {entry['error']}")
        if not entry.get("published") or not entry.get("revision"):
            recipe = entry.get("recipe") or f"recipes/<{text}>.yaml"
            repo = entry.get("repo_id") or "ORG/NAME"
            raise HubError(
                f"the weights of {text!r} are not published yet (its catalogue entry, from the "
                f"`hub:` block of {recipe}, has no published revision). Train and push them: "
                f"`zoo run {recipe}` then `zoo push runs/<run folder> --repo-id {repo}`, and pin in that "
                "`hub:` block the commit `zoo push` prints (`revision:`), the sha256 of the run's "
                "model.safetensors (`sha256:`) and `published: true`."
            )
        return Source(
            "catalogue", text, repo_id=entry["repo_id"], revision=entry["revision"],
            sha256=entry.get("sha256"), name=text,
        )
    repo, _, revision = text.partition("@")
    if REPO_ID.match(repo) and not text.startswith((".", "/", "~")):
        return Source("repo", text, repo_id=repo, revision=revision or None)
    hint = did_you_mean(text, catalogue)
    looks_like_path = "/" in text or "\\" in text or text.startswith((".", "~"))
    what = f"no run folder at {text!r}" if looks_like_path else f"{text!r} is not a known model name"
    raise HubError(
        f"{what}.{hint} Pass a run folder (as `zoo run` printed it), a model name from "
        f"`zoo list models` ({len(catalogue)} known), or a Hub repo as ORG/NAME[@REVISION]."
    )


# --- push -----------------------------------------------------------------------------------------


def push(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Publish a run folder as a Hub model repo in one commit; returns the commit URL.

    Creates the repo (and the branch ``revision``) when needed. The token comes from ``token``,
    ``HF_TOKEN`` or ``hf auth login``.
    """
    if not REPO_ID.match(repo_id):
        raise HubError(f"{repo_id!r} is not a repo id; use ORG/NAME, e.g. --repo-id zoo-flows/{Path(run_dir).name}")
    if revision and COMMIT.match(revision):
        raise HubError(f"--revision {revision}: a push goes to a branch (e.g. main, v2), not to a commit")
    token = transport.write_token(token)
    endpoint = transport.hub_endpoint(endpoint)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        config = stage_repo(run_dir, repo_id, Path(tmp))
        unreachable = transport.unreachable_reason(endpoint, transport.hub_timeout())
        if unreachable:
            raise HubError(f"cannot reach the Hub at {endpoint} ({unreachable}); check your connection or ZOO_HUB_ENDPOINT")
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token, library_name="zoo")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                revision=revision,
                commit_message=f"zoo push: {config['recipe'].get('name', repo_id)} (recipe {config['recipe_sha256'][:12]})",
            )
        except Exception as exc:
            if transport.is_hub_failure(exc):
                raise transport.hub_error(exc, repo_id=repo_id, revision=revision, endpoint=endpoint) from exc
            if isinstance(exc, ValueError) and "Invalid metadata in README.md" in str(exc):
                problems = " ".join(str(exc).split())
                raise HubError(
                    f"{repo_id}: the Hub refused the model card zoo wrote from the recipe's license, tags "
                    f"and dataset ({problems}); please report it as a zoo bug"
                ) from exc
            raise  # a bug, not a Hub failure: keep its traceback
    return str(info.commit_url)


# --- pull -----------------------------------------------------------------------------------------


def _verify(path: Path, source: Source, revision: str | None) -> None:
    """Re-hash the downloaded weights; on a mismatch evict them from the cache and refuse."""
    if source.sha256 and (revision is None or revision == source.revision):
        actual = transport.sha256_of(path)
        if actual != source.sha256.lower():
            transport.evict(path)
            raise WeightsError(
                f"{source.repo_id}@{source.revision}: {WEIGHTS_FILE} has sha256 {actual}, but the catalogue "
                f"entry {source.name!r} pins {source.sha256}. The download is corrupt or the repo was "
                "changed; nothing was loaded and the cached copy was removed. Pull again; if it persists, "
                "report it to the model's publisher."
            )
    mismatch = transport.content_address_mismatch(path)
    if mismatch:
        transport.evict(path)
        raise WeightsError(
            f"{source.repo_id}: {WEIGHTS_FILE} does not match its content address (expected {mismatch[0]}, "
            f"got {mismatch[1]}). The download is corrupt; nothing was loaded and the cached copy was "
            "removed. Pull again."
        )


def _pull_source(source: Source, revision: str | None, endpoint: str | None) -> PulledModel:
    endpoint = transport.hub_endpoint(endpoint)
    wanted = revision or source.revision
    offline = transport.offline_requested()
    unreachable = None if offline else transport.unreachable_reason(endpoint, transport.hub_timeout())
    local_only = offline or unreachable is not None  # unreachable: fall back to the cache

    def fetch(filename: str, rev: str | None) -> Path:
        try:
            return transport.download(source.repo_id, filename, revision=rev, endpoint=endpoint, local_only=local_only)
        except Exception as exc:
            if not transport.is_hub_failure(exc):
                raise  # a bug, not a Hub failure: keep its traceback
            raise transport.hub_error(
                exc, repo_id=source.repo_id, revision=rev, endpoint=endpoint, filename=filename,
                offline=offline, unreachable=unreachable,
            ) from exc

    config_path = fetch(CONFIG_FILE, wanted)
    folder = config_path.parent
    commit = folder.name if COMMIT.match(folder.name) else (wanted or "main")
    weights = fetch(WEIGHTS_FILE, commit)  # the same commit as config.json, whatever main does meanwhile
    _verify(weights, source, revision)
    for name in OPTIONAL_FILES:
        try:
            fetch(name, commit)
        except HubError:
            pass  # optional: a repo without a sample or card still loads
    config = folder_config(folder)
    check_plugins(config, f"{source.repo_id}@{commit}")
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return PulledModel(source.repo_id, commit, folder, dict(config["recipe"]), metrics)


def pull(name_or_repo: str, *, revision: str | None = None, endpoint: str | None = None) -> PulledModel:
    """Download a named model or ``ORG/NAME`` into the Hugging Face cache, verified.

    ``revision`` overrides the catalogue's pinned commit (the catalogue's sha256 then no longer
    applies). Works offline from the cache with ``HF_HUB_OFFLINE=1`` or when the Hub is unreachable.
    """
    source = resolve_source(name_or_repo)
    if source.kind == "run":
        raise HubError(
            f"{name_or_repo}: a local run folder, nothing to pull; load it with "
            f"zoo.from_pretrained({str(name_or_repo)!r}) or `zoo sample {name_or_repo}`"
        )
    return _pull_source(source, revision, endpoint)


def load_pretrained(spec: str | Path, *, revision: str | None = None, endpoint: str | None = None):
    """``(recipe, model)`` of a run folder, a named model or ``ORG/NAME``, in eval mode."""
    source = resolve_source(spec)
    folder = source.path if source.kind == "run" else _pull_source(source, revision, endpoint).folder
    return load_model_folder(folder)


def from_pretrained(name_or_repo_or_run_dir: str | Path, *, revision: str | None = None):
    """The FlowModel (eval mode, weights loaded and checked) of a run folder, a named model or ``ORG/NAME``."""
    return load_pretrained(name_or_repo_or_run_dir, revision=revision)[1]


# --- catalogue ------------------------------------------------------------------------------------


def list_models(registry=None) -> list[dict[str, Any]]:
    """Rows for `zoo list models`: name, repo_id, published (weights available), summary, recipe."""
    rows = []
    for name, entry in sorted(_catalogue(registry).items()):
        rows.append(
            {
                "name": name,
                "repo_id": entry.get("repo_id", ""),
                "published": bool(entry.get("published") and entry.get("revision") and not entry.get("error")),
                "summary": entry.get("error") or entry.get("summary", ""),
                "recipe": entry.get("recipe", ""),
                "revision": entry.get("revision"),
            }
        )
    return rows
