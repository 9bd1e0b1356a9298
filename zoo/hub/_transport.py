"""Talking to the Hub: endpoint, cache and timeouts read at call time, a bounded reachability probe,
downloads through ``huggingface_hub``, content hashes, and its exceptions turned into ZooErrors.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` once, when it is
imported; zoo reads them (and ``ZOO_HUB_ENDPOINT``) on every call and passes them explicitly, so a
setting changed after import still applies.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from zoo.errors import HubError, PluginError, ZooError

ENDPOINT_ENVS = ("ZOO_HUB_ENDPOINT", "HF_ENDPOINT")
DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_ENV = "ZOO_HUB_TIMEOUT"  # seconds to wait for a connection or a first answer
DEFAULT_TIMEOUT = 10.0
_PROXY_ENVS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN"


# --- settings, read at call time ------------------------------------------------------------------


def hub_endpoint(explicit: str | None = None) -> str:
    """The Hub to talk to: ``explicit``, else ``ZOO_HUB_ENDPOINT``, else ``HF_ENDPOINT``, else huggingface.co."""
    for value in (explicit, *(os.environ.get(name) for name in ENDPOINT_ENVS)):
        if value:
            return value.rstrip("/")
    return DEFAULT_ENDPOINT


def hub_timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    try:
        return float(value) if value else DEFAULT_TIMEOUT
    except ValueError:
        raise HubError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds; unset it or set e.g. 10") from None


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder by its own rules (HF_HUB_CACHE, else HF_HOME/hub), read now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HUB_CACHE"])))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def offline_requested() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now or was at import."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def write_token(explicit: str | None = None) -> str:
    """The token for writes: the argument, ``HF_TOKEN``, or the ``hf auth login`` token."""
    import huggingface_hub

    token = explicit or os.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    if not token:
        raise HubError(f"pushing to the Hub needs a write token: {LOGIN_HINT} (or pass token=...)")
    return token


def unreachable_reason(endpoint: str, timeout: float) -> str | None:
    """Why ``endpoint`` cannot be reached (a TCP connect within ``timeout``), or None if it can.

    ``huggingface_hub`` retries a failed download for ~25 s with back-off before giving up; this
    probe makes "server down" a prompt error instead. Behind a proxy the direct connect says
    nothing, so the probe is skipped and the request timeouts bound the wait.
    """
    if any(os.environ.get(name) for name in _PROXY_ENVS):
        return None
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return f"{endpoint!r} is not a URL; set ZOO_HUB_ENDPOINT to e.g. https://huggingface.co"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"


# --- downloads ------------------------------------------------------------------------------------


def download(repo_id: str, filename: str, *, revision: str | None, endpoint: str, local_only: bool) -> Path:
    """One file of a repo into huggingface_hub's standard cache (its snapshot path)."""
    from huggingface_hub import hf_hub_download

    import zoo

    return Path(
        hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            endpoint=endpoint,
            cache_dir=hub_cache_dir(),
            local_files_only=local_only,
            etag_timeout=hub_timeout(),
            library_name="zoo",
            library_version=zoo.__version__,
        )
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_sha1_of(path: Path) -> str:
    """The git object id of a file, ``sha1(b"blob <size>\\0" + content)``: the Hub's ETag of a
    regular (non-LFS) file."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_address_mismatch(path: Path) -> tuple[str, str] | None:
    """``(expected, actual)`` when a cached file's bytes differ from the ETag it is stored under.

    The cache keeps each file as ``blobs/<etag>``: a sha256 for LFS files, a git blob sha1 for
    regular ones. ``hf_hub_download`` only checks the size, so this re-hashes the content.
    """
    blob = path.resolve()
    name = blob.name
    if blob.parent.name != "blobs" or not all(c in "0123456789abcdef" for c in name):
        return None  # not a content-addressed cache entry: nothing to compare with
    if len(name) == 64:
        actual = sha256_of(blob)
    elif len(name) == 40:
        actual = git_blob_sha1_of(blob)
    else:
        return None
    return None if actual == name else (name, actual)


def evict(path: Path) -> None:
    """Remove a cached file (its blob and its snapshot link) so the next pull downloads it again."""
    blob = path.resolve()
    for target in {path, blob}:
        try:
            target.unlink()
        except FileNotFoundError:
            pass


# --- errors ---------------------------------------------------------------------------------------


def hub_error(
    exc: BaseException,
    *,
    repo_id: str,
    revision: str | None,
    endpoint: str,
    filename: str | None = None,
    offline: bool = False,
    unreachable: str | None = None,
) -> ZooError:
    """A ZooError for a Hub failure (see ``is_hub_failure``), naming the repo, revision, file and fix."""
    from huggingface_hub import errors as hf

    rev = revision or "main"
    where = f"{repo_id}@{rev}" + (f": {filename}" if filename else "")
    if isinstance(exc, hf.RevisionNotFoundError):
        return HubError(
            f"{repo_id}: no revision {rev!r} on {endpoint}. Pass an existing branch or commit "
            "(`zoo pull ORG/NAME` takes main; `--revision` another)."
        )
    if isinstance(exc, hf.RepositoryNotFoundError):  # also GatedRepoError
        return HubError(
            f"{repo_id}: no such model repo on {endpoint} (or it is private and your token cannot "
            f"read it). Check the name (`zoo list models` shows the named ones), or {LOGIN_HINT}."
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return HubError(
            f"{where}: the repo has no such file. A zoo model repo holds config.json and "
            "model.safetensors, as `zoo push RUN --repo-id ORG/NAME` writes them."
        )
    if isinstance(exc, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        cache = hub_cache_dir()
        if offline:
            return HubError(
                f"{where}: not in the local cache ({cache}) and HF_HUB_OFFLINE=1 forbids downloading "
                "it. Pull it once while online (`zoo pull ...`), or unset HF_HUB_OFFLINE."
            )
        reason = f" ({unreachable})" if unreachable else ""
        return HubError(
            f"cannot reach the Hub at {endpoint}{reason}, and {where} is not in the local cache "
            f"({cache}). Check your connection or ZOO_HUB_ENDPOINT; with HF_HUB_OFFLINE=1 zoo "
            "uses cached models only."
        )
    if isinstance(exc, hf.HFValidationError):
        return HubError(f"{repo_id!r} is not a valid repo id ({exc}); use ORG/NAME, e.g. zoo-flows/glow-celeba-3x32")
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(
                f"{where}: the Hub at {endpoint} refused the request ({status}): your token is missing "
                f"or cannot write to {repo_id}. {LOGIN_HINT} with a token that has write access."
            )
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return HubError(f"{where}: the Hub at {endpoint} answered an error ({first_line}). Try again later.")
    if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
        return HubError(f"{where}: could not write it to the cache {hub_cache_dir()} ({exc}); check that folder")
    return HubError(
        f"cannot reach the Hub at {endpoint} for {where} ({type(exc).__name__}: {exc}). "
        "Check your connection or ZOO_HUB_ENDPOINT."
    )


def is_hub_failure(exc: BaseException) -> bool:
    """True for the exceptions a Hub call raises when the Hub, the network or the cache fails.

    The HTTP library under huggingface_hub changes between its major versions (requests, httpx,
    httpx2), so its exceptions are recognised by module rather than imported.
    """
    from huggingface_hub import errors as hf

    known = (hf.HfHubHTTPError, hf.EntryNotFoundError, hf.HFValidationError, OSError, TimeoutError)
    return isinstance(exc, known) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests")


def missing_plugins_error(repo: str, missing: dict[str, dict[str, str]], broken: dict[str, str]) -> PluginError:
    """The plugins a published model needs that are not installed (or failed to load)."""
    lines = []
    for name, info in missing.items():
        dist = info.get("distribution") or name
        version = f" (it was published with {dist} {info['version']})" if info.get("version") else ""
        lines.append(f"plugin {name!r} from package {dist!r} is not installed{version}: pip install {dist}")
    for name, error in broken.items():
        lines.append(f"plugin {name!r} is installed but failed to load ({error}); see `zoo plugins`")
    return PluginError(f"{repo} needs plugins this environment lacks: " + "; ".join(lines))
