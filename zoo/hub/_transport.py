"""Talking to the Hub: settings read at call time, a bounded reachability probe, what zoo accepts
from a Hub it does not control (revisions, commit ids, content addresses, sizes), content hashes,
and failures turned into ZooErrors that name the repo, revision, file and fix.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` once, when it is
imported; zoo reads them (and ``ZOO_HUB_ENDPOINT``) on every call and passes them explicitly, so a
setting changed after import still applies.

Settings for downloads (see ``zoo.hub._download``):

=========================  ===================================================================
ZOO_ALLOW_UNVERIFIED=1     accept files the Hub gives no content hash for (default: refuse them)
ZOO_HUB_MAX_WEIGHTS        the largest model.safetensors zoo downloads (default 20GiB; 500MB,
                           40GiB or a number of bytes); the other files have fixed caps
ZOO_HUB_MIN_RATE           the slowest transfer zoo waits for (default 16KiB per second)
ZOO_HUB_TRUSTED_HOSTS      host[:port],... a mirror may redirect downloads to (its own storage)
=========================  ===================================================================
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from zoo.errors import HubError, PluginError, ZooError

ENDPOINT_ENVS = ("ZOO_HUB_ENDPOINT", "HF_ENDPOINT")
DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_ENV = "ZOO_HUB_TIMEOUT"  # seconds to wait for a connection or a first answer
DEFAULT_TIMEOUT = 10.0
ALLOW_UNVERIFIED_ENV = "ZOO_ALLOW_UNVERIFIED"
MAX_WEIGHTS_ENV = "ZOO_HUB_MAX_WEIGHTS"
DEFAULT_MAX_WEIGHTS = 20 * 2**30
MIN_RATE_ENV = "ZOO_HUB_MIN_RATE"
DEFAULT_MIN_RATE = 16 * 2**10  # bytes per second
TRUSTED_HOSTS_ENV = "ZOO_HUB_TRUSTED_HOSTS"
SMALL_FILE_CAP = 8 * 2**20  # config.json, metrics.json, recipe.yaml, README.md: text that zoo parses
FILE_CAPS = {"sample.png": 32 * 2**20}
_PROXY_ENVS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy")
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN"
UNVERIFIED_HINT = f"set {ALLOW_UNVERIFIED_ENV}=1 (or pass allow_unverified=True) to accept it unverified"


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


def allow_unverified(explicit: bool | None = None) -> bool:
    """Whether files without a content hash may be accepted: the argument, else ZOO_ALLOW_UNVERIFIED."""
    if explicit is not None:
        return bool(explicit)
    return os.environ.get(ALLOW_UNVERIFIED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_size(text: str, setting: str) -> int:
    """Bytes of ``20GiB``, ``500MB``, ``16K`` or ``1000``: KB/MB/GB are powers of 1000, K/KiB... of 1024."""
    match = _SIZE.match(text)
    if not match or (match.group(3) and not match.group(2)):
        raise HubError(f"{setting}={text!r} is not a size; use e.g. 20GiB, 500MB or a number of bytes")
    number, prefix, binary, byte = match.groups()
    power = "kmgt".index(prefix.lower()) + 1 if prefix else 0
    base = 1000 if (byte and not binary and prefix) else 1024
    return int(float(number) * base**power)


def _size_setting(name: str, default: int) -> int:
    value = os.environ.get(name)
    return parse_size(value, name) if value else default


def size_cap(filename: str) -> int:
    """The largest ``filename`` zoo downloads: ZOO_HUB_MAX_WEIGHTS for the weights, else a fixed cap."""
    if filename == "model.safetensors":
        return _size_setting(MAX_WEIGHTS_ENV, DEFAULT_MAX_WEIGHTS)
    return FILE_CAPS.get(filename, SMALL_FILE_CAP)


def min_rate() -> int:
    """The slowest transfer (bytes per second, after a grace of two timeouts) zoo waits for; 0: any."""
    return _size_setting(MIN_RATE_ENV, DEFAULT_MIN_RATE)


def trusted_hosts() -> frozenset[str]:
    """``host`` and ``host:port`` entries of ZOO_HUB_TRUSTED_HOSTS, lower case."""
    value = os.environ.get(TRUSTED_HOSTS_ENV, "")
    return frozenset(h.strip().lower() for h in value.split(",") if h.strip())


def human_size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


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


# --- what zoo accepts from a Hub it does not control -------------------------------------------

COMMIT = re.compile(r"^[0-9a-f]{40}$")
CONTENT_ADDRESS = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # git blob sha1, or sha256 (LFS)
MAX_REVISION_BYTES = 255
_REF_FORBIDDEN = set(" ~^:?*[\\\"<>|")  # git's, plus what a Windows file name cannot hold


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is neither a 40-hex commit nor a branch/tag name by git's ref rules, or None.

    The name becomes a path in the cache (``refs/<revision>``) and a part of the URL, so anything
    that could climb out of a folder (``..``, a leading ``/``) or confuse a command line (a
    leading ``-``) is refused before any request is made.
    """
    if not isinstance(revision, str) or not revision:
        return "it is empty"
    if COMMIT.match(revision):
        return None
    if len(revision.encode("utf-8", "surrogatepass")) > MAX_REVISION_BYTES:
        return f"it is longer than {MAX_REVISION_BYTES} bytes"
    bad = sorted({c for c in revision if ord(c) < 0x20 or ord(c) == 0x7F or c in _REF_FORBIDDEN})
    if bad:
        return "it contains " + ", ".join(repr(c) for c in bad)
    if ".." in revision:
        return "it contains '..'"
    if revision.startswith(("/", "-")):
        return f"it starts with {revision[0]!r}"
    if revision.endswith(("/", ".")) or "//" in revision or "@{" in revision or revision == "@":
        return "git does not allow that name (a trailing '/' or '.', '//', '@{' or a lone '@')"
    if any(part.startswith(".") or part.endswith(".lock") for part in revision.split("/")):
        return "a part of it starts with '.' or ends with '.lock'"
    return None


def check_revision(revision: str, repo_id: str) -> str:
    """``revision`` if it is a commit or a valid branch/tag name; else a HubError saying what to pass."""
    problem = revision_problem(revision)
    if problem:
        raise HubError(
            f"{repo_id}: refusing revision {revision!r} ({problem}). Pass a branch or tag name by git's rules "
            "(no '..', no leading '/' or '-', no spaces or control characters, at most "
            f"{MAX_REVISION_BYTES} bytes) or a 40-hex commit, e.g. {repo_id}@main."
        )
    return revision


def content_address(etag: str | None) -> str | None:
    """The content hash an ETag names (lower-case hex of a git blob sha1 or a sha256), else None.

    The Hub quotes it (``"<hex>"``) and a proxy may mark it weak (``W/"<hex>"``); anything else,
    path parts included, names no hash and is never used as a file name.
    """
    if etag is None:
        return None
    text = etag.strip().removeprefix("W/")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    text = text.lower()
    return text if CONTENT_ADDRESS.match(text) else None


# --- content hashes -------------------------------------------------------------------------------


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


def hash_of(path: Path, address: str) -> str:
    """The hash of ``path`` of the kind ``address`` is: git blob sha1 (40 hex) or sha256 (64 hex)."""
    return git_blob_sha1_of(path) if len(address) == 40 else sha256_of(path)


# --- errors ---------------------------------------------------------------------------------------


def where(repo_id: str, revision: str | None, filename: str | None = None) -> str:
    return f"{repo_id}@{revision or 'main'}" + (f": {filename}" if filename else "")


def no_repo_message(repo_id: str, endpoint: str) -> str:
    return (
        f"{repo_id}: no such model repo on {endpoint} (or it is private and your token cannot "
        f"read it). Check the name (`zoo list models` shows the named ones), or {LOGIN_HINT}."
    )


def no_revision_message(repo_id: str, revision: str | None, endpoint: str) -> str:
    return (
        f"{repo_id}: no revision {revision or 'main'!r} on {endpoint}. Pass an existing branch or commit "
        "(`zoo pull ORG/NAME` takes main; `--revision` another)."
    )


def no_file_message(place: str) -> str:
    return (
        f"{place}: the repo has no such file. A zoo model repo holds config.json and "
        "model.safetensors, as `zoo push RUN --repo-id ORG/NAME` writes them."
    )


def not_cached_message(place: str, endpoint: str, *, offline: bool, unreachable: str | None) -> str:
    cache = hub_cache_dir()
    if offline:
        return (
            f"{place}: not in the local cache ({cache}) and HF_HUB_OFFLINE=1 forbids downloading "
            "it. Pull it once while online (`zoo pull ...`), or unset HF_HUB_OFFLINE."
        )
    reason = f" ({unreachable})" if unreachable else ""
    return (
        f"cannot reach the Hub at {endpoint}{reason}, and {place} is not in the local cache "
        f"({cache}). Check your connection or ZOO_HUB_ENDPOINT; with HF_HUB_OFFLINE=1 zoo "
        "uses cached models only."
    )


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

    place = where(repo_id, revision, filename)
    if isinstance(exc, hf.RevisionNotFoundError):
        return HubError(no_revision_message(repo_id, revision, endpoint))
    if isinstance(exc, hf.RepositoryNotFoundError):  # also GatedRepoError
        return HubError(no_repo_message(repo_id, endpoint))
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return HubError(no_file_message(place))
    if isinstance(exc, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        return HubError(not_cached_message(place, endpoint, offline=offline, unreachable=unreachable))
    if isinstance(exc, hf.HFValidationError):
        return HubError(f"{repo_id!r} is not a valid repo id ({exc}); use ORG/NAME, e.g. zoo-flows/glow-celeba-3x32")
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(
                f"{place}: the Hub at {endpoint} refused the request ({status}): your token is missing "
                f"or cannot write to {repo_id}. {LOGIN_HINT} with a token that has write access."
            )
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return HubError(f"{place}: the Hub at {endpoint} answered an error ({first_line}). Try again later.")
    if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
        return HubError(f"{place}: could not write it to the cache {hub_cache_dir()} ({exc}); check that folder")
    return HubError(
        f"cannot reach the Hub at {endpoint} for {place} ({type(exc).__name__}: {exc}). "
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
