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

Remote data stays remote: a repo may be anyone's and an endpoint may be hostile, so ``pull``
checks the repo id and the revision (git's ref rules, or a 40-hex commit) before any request,
and downloads through ``_download``, which builds every cache path from checked values only and
verifies every file of the snapshot before anything is loaded: against the content hash the Hub
announces (git blob sha1 for regular files, sha256 for LFS ones) and, for a catalogue model's
weights, against the pinned sha256. A file the Hub gives no hash for is refused unless the user
accepts it unverified (``ZOO_ALLOW_UNVERIFIED=1`` or ``allow_unverified=True``); files over a
size cap, redirects to untrusted hosts and transfers that stall are refused. Each refusal is one
HubError naming the repo, revision, file and fix, and leaves nothing outside the cache.

Settings read at call time: ``ZOO_HUB_ENDPOINT`` (else ``HF_ENDPOINT``) for a mirror,
``ZOO_HUB_TIMEOUT`` (seconds, default 10), ``HF_HUB_OFFLINE`` (cache only), ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_TOKEN``, and those of ``_transport`` for downloads
(``ZOO_ALLOW_UNVERIFIED``, ``ZOO_HUB_MAX_WEIGHTS``, ``ZOO_HUB_MIN_RATE``, ``ZOO_HUB_TRUSTED_HOSTS``).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from zoo._suggest import did_you_mean
from zoo.hub import _download as download
from zoo.hub import _transport as transport
from zoo.hub._folder import CONFIG_FILE, check_plugins, folder_config, load_model_folder, stage_repo
from zoo.errors import HubError
from zoo.runs import read_json
from zoo.weights import WEIGHTS_FILE

OPTIONAL_FILES = ("recipe.yaml", "metrics.json", "README.md", "sample.png")
# ORG/NAME as the Hub allows them: letters, digits, '_', '.', '-', no '--' or '..' (the cache joins
# the parts with '--'), each part starting and ending with a letter, digit or '_', at most 96 long.
_PART = r"[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"^(?!.*(?:--|\.\.)){_PART}/{_PART}$")
COMMIT = transport.COMMIT

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
    unverified: tuple[str, ...] = ()  # files accepted without a content hash (ZOO_ALLOW_UNVERIFIED)


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
    repo, at, revision = text.partition("@")
    if REPO_ID.match(repo) and not text.startswith((".", "/", "~")):
        if at:
            transport.check_revision(revision, repo)
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
    if revision:
        transport.check_revision(revision, repo_id)
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


def _pull_source(
    source: Source, revision: str | None, endpoint: str | None, allow_unverified: bool | None = None
) -> PulledModel:
    endpoint = transport.hub_endpoint(endpoint)
    if not REPO_ID.match(source.repo_id or ""):
        raise HubError(f"{source.repo_id!r} is not a repo id; use ORG/NAME, e.g. zoo-flows/glow-celeba-3x32")
    wanted = transport.check_revision(revision or source.revision or "main", source.repo_id)
    offline = transport.offline_requested()
    unreachable = None if offline else transport.unreachable_reason(endpoint, transport.hub_timeout())
    fetcher = download.Downloader(
        source.repo_id,
        endpoint=endpoint,
        local_only=offline or unreachable is not None,  # unreachable: fall back to the cache
        offline=offline,
        unreachable=unreachable,
        allow_unverified=transport.allow_unverified(allow_unverified),
    )
    # The catalogue's sha256 applies to its own pinned commit, not to another revision asked for.
    pin = source.sha256 if source.sha256 and (revision is None or revision == source.revision) else None
    config = fetcher.fetch(CONFIG_FILE, wanted)
    commit = config.commit  # every other file from the same commit, whatever main does meanwhile
    fetcher.fetch(WEIGHTS_FILE, commit, sha256=pin, pin_owner=f"the catalogue entry {source.name!r}")
    for name in OPTIONAL_FILES:
        try:
            fetcher.fetch(name, commit)
        except download.MissingFile:
            pass  # optional: a repo without a sample or card still loads; any other refusal stands
    unverified = fetcher.check_snapshot(commit, wanted)
    folder = config.path.parent
    config_data = folder_config(folder)
    check_plugins(config_data, f"{source.repo_id}@{commit}")
    return PulledModel(
        source.repo_id, commit, folder, dict(config_data["recipe"]), _metrics(folder, source.repo_id, commit),
        tuple(unverified),
    )


def _metrics(folder: Path, repo_id: str, commit: str) -> dict[str, Any]:
    path = folder / "metrics.json"
    if not path.is_file():
        return {}
    metrics = read_json(path, error=HubError)  # bounded in size and depth, like every zoo JSON
    if not isinstance(metrics, dict):
        raise HubError(
            f"{repo_id}@{commit}: metrics.json is not a JSON object ({metrics}); this repo was not pushed by "
            "`zoo push`, or it was edited. Ask its publisher to re-push it."
        )
    return metrics


def pull(
    name_or_repo: str,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    allow_unverified: bool | None = None,
) -> PulledModel:
    """Download a named model or ``ORG/NAME`` into the Hugging Face cache, verified.

    ``revision`` overrides the catalogue's pinned commit (the catalogue's sha256 then no longer
    applies). Works offline from the cache with ``HF_HUB_OFFLINE=1`` or when the Hub is unreachable.
    ``allow_unverified`` (default: ``ZOO_ALLOW_UNVERIFIED``) accepts files the Hub gives no
    content hash for; their names are in ``PulledModel.unverified``.
    """
    source = resolve_source(name_or_repo)
    if source.kind == "run":
        raise HubError(
            f"{name_or_repo}: a local run folder, nothing to pull; load it with "
            f"zoo.from_pretrained({str(name_or_repo)!r}) or `zoo sample {name_or_repo}`"
        )
    return _pull_source(source, revision, endpoint, allow_unverified)


def load_pretrained(
    spec: str | Path,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    allow_unverified: bool | None = None,
):
    """``(recipe, model)`` of a run folder, a named model or ``ORG/NAME``, in eval mode."""
    source = resolve_source(spec)
    if source.kind == "run":
        return load_model_folder(source.path)
    return load_model_folder(_pull_source(source, revision, endpoint, allow_unverified).folder)


def from_pretrained(
    name_or_repo_or_run_dir: str | Path, *, revision: str | None = None, allow_unverified: bool | None = None
):
    """The FlowModel (eval mode, weights loaded and checked) of a run folder, a named model or ``ORG/NAME``."""
    return load_pretrained(name_or_repo_or_run_dir, revision=revision, allow_unverified=allow_unverified)[1]


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
