"""Files of a Hub repo into the Hugging Face cache, trusting nothing the server says.

The cache keeps huggingface_hub's layout, so its tools (``hf cache``, ``hf_hub_download``) see
what zoo pulled::

    <cache>/models--ORG--NAME/blobs/<content hash>             the bytes
    <cache>/models--ORG--NAME/snapshots/<commit>/<file>        a relative link to the blob
    <cache>/models--ORG--NAME/refs/<branch or tag>             the commit it pointed at

but zoo writes it itself: ``hf_hub_download`` joins the server's ETag into ``blobs/<etag>`` and
the revision into ``refs/<revision>``, and asks the server again for the ETag after any check
zoo could make first, so a hostile endpoint could write outside the cache. Here every path is
built only from things checked first: the revision (git's ref rules, ``check_revision``), the
commit the server names (40 hex), and a content hash (40 or 64 hex) that the downloaded bytes
were verified against, or, for a file the server gives no hash for and the user accepts
unverified, the sha256 zoo computed.

For each file: one HEAD (redirects on the endpoint's own origin followed; a redirect elsewhere
carries the metadata, like the Hub's answer for LFS files), checks of the commit, the content
address and the size against a cap and the free disk space, then one GET, only to the
endpoint's origin or a trusted host (the token only to the endpoint), streamed into a temporary
file in ``blobs/`` while hashing, bounded by the announced size and by a minimum transfer rate,
and moved into place only once its hash matches. A cached file is re-hashed against its blob
name before it is used. Every refusal is a HubError naming the repo, revision, file and fix,
and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

from zoo.errors import HubError
from zoo.hub import _http as http
from zoo.hub import _transport as transport

MAX_REDIRECTS = 5
DISK_MARGIN = 64 * 2**20  # leave this much free after a download
_RETRY_LATER = {408, 429, 500, 502, 503, 504}


class MissingFile(HubError):
    """The repo (or the cache, offline) has no such file: an optional file may be skipped."""


@dataclass(frozen=True)
class Fetched:
    path: Path  # the snapshot path: <cache>/models--ORG--NAME/snapshots/<commit>/<file>
    commit: str
    verified: bool  # False only when accepted unverified (ZOO_ALLOW_UNVERIFIED)


@dataclass(frozen=True)
class _Remote:
    """What one HEAD said about a file, once checked."""

    filename: str
    commit: str
    address: str | None  # the content hash the bytes must have; None: the server gave none
    etag: str | None  # the raw header, for messages
    size: int | None
    location: str  # where to GET it


class _Unreachable(Exception):
    """No usable answer (network failure, 5xx): the cache may still serve the file."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme, 0)


def _inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path``, every link resolved, lies inside ``root`` (itself resolved)."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _remove(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _one_header(headers, name: str) -> str | None:
    """A header's value; None if absent, or ``"\\0conflict"`` if sent twice with different values."""
    values = {v.strip() for v in (headers.get_all(name) or [])}
    if len(values) > 1:
        return "\0conflict"
    return values.pop() if values else None


class Downloader:
    """Fetches files of one repo into the cache; see the module docstring for what is checked."""

    def __init__(
        self,
        repo_id: str,
        *,
        endpoint: str,
        local_only: bool = False,
        offline: bool = False,
        unreachable: str | None = None,
        allow_unverified: bool = False,
        cache_dir: Path | None = None,
    ):
        from huggingface_hub.file_download import repo_folder_name

        self.repo_id, self.endpoint = repo_id, endpoint.rstrip("/")
        self.local_only, self.offline, self.unreachable = local_only, offline, unreachable
        self.allow_unverified = allow_unverified
        self.cache = Path(os.path.realpath(cache_dir or transport.hub_cache_dir()))
        self.storage = self.cache / repo_folder_name(repo_id=repo_id, repo_type="model")
        self.timeout = transport.hub_timeout()
        self._verified: dict[str, bool] = {}  # real path -> verified (or accepted unverified), this pull

    # -- the one entry point ---------------------------------------------------------------------

    def fetch(self, filename: str, revision: str, *, sha256: str | None = None, pin_owner: str = "") -> Fetched:
        """``filename`` at ``revision`` (checked already), from the cache if it holds it verified.

        ``sha256``: a digest the weights must have whatever the server says (a catalogue pin,
        named by ``pin_owner``). Raises MissingFile when the repo, or offline the cache, lacks it.
        """
        cap = transport.size_cap(filename)
        if transport.COMMIT.match(revision):
            cached = self._cached(filename, revision, revision, cap, sha256, pin_owner, refetch=not self.local_only)
            if cached:
                return cached
        if self.local_only:
            return self._from_cache_only(filename, revision, cap, sha256, pin_owner)
        try:
            remote = self._metadata(filename, revision, cap, sha256)
        except _Unreachable as failure:
            self.unreachable = failure.reason
            return self._from_cache_only(filename, revision, cap, sha256, pin_owner)
        cached = self._cached(
            filename, revision, remote.commit, cap, sha256, pin_owner, expect=remote.address, refetch=True
        )
        if cached is None:
            cached = self._download(remote, revision, cap, sha256, pin_owner)
        self._write_ref(revision, remote.commit)
        return cached

    # -- metadata --------------------------------------------------------------------------------

    def _url(self, filename: str, revision: str) -> str:
        return f"{self.endpoint}/{self.repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"

    def _headers(self, url: str) -> dict[str, str]:
        """The Hub's headers; the token only for the endpoint's own origin, never for another host."""
        from huggingface_hub.utils import build_hf_headers

        import zoo

        same = _origin(url) == _origin(self.endpoint)
        headers = build_hf_headers(token=None if same else False, library_name="zoo", library_version=zoo.__version__)
        headers["Accept-Encoding"] = "identity"  # the size the HEAD gives is the size the GET sends
        return headers

    def _send(self, method: str, url: str, deadline: float):
        try:
            return http.request(method, url, headers=self._headers(url), timeout=self.timeout, deadline=deadline)
        except http.NETWORK_ERRORS as exc:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from exc

    def _refuse(self, place: str, what: str, fix: str = "") -> HubError:
        fix = fix or (
            "The endpoint is not a Hugging Face Hub or it misbehaves; check ZOO_HUB_ENDPOINT, and if it "
            "is the Hub, report the repo."
        )
        return HubError(f"{place}: {what}; refused, nothing was written. {fix}")

    def _metadata(self, filename: str, revision: str, cap: int, sha256: str | None) -> _Remote:
        place = transport.where(self.repo_id, revision, filename)
        url = self._url(filename, revision)
        deadline = time.monotonic() + 2 * self.timeout
        for _hop in range(MAX_REDIRECTS + 1):
            answer = self._send("HEAD", url, deadline)
            answer.close()
            status, headers = answer.status, answer.headers
            location = headers.get("Location") if 300 <= status < 400 else None
            if location is None:
                break
            target = urljoin(url, location)
            self._check_redirect(place, target)
            if _origin(target) != _origin(self.endpoint):
                break  # a redirect off the Hub carries the metadata itself, like the Hub's LFS answer
            url = target
        else:
            raise self._refuse(place, f"the Hub at {self.endpoint} redirected more than {MAX_REDIRECTS} times")
        if status >= 400:
            raise self._http_failure(status, headers, filename, revision)
        if location is None and status != 200:
            raise self._refuse(place, f"the Hub at {self.endpoint} answered HTTP {status} to a HEAD request")

        commit = _one_header(headers, "X-Repo-Commit")
        if commit is None or not transport.COMMIT.match(commit):
            raise self._refuse(
                place, f"the Hub at {self.endpoint} named the commit {commit!r} (X-Repo-Commit), not a 40-hex commit id"
            )
        if transport.COMMIT.match(revision) and commit != revision:
            raise self._refuse(
                place, f"asked for commit {revision}, the Hub at {self.endpoint} answered commit {commit}"
            )

        etag = _one_header(headers, "X-Linked-Etag") or _one_header(headers, "ETag")
        address = transport.content_address(etag)
        if address is None and not sha256 and not self.allow_unverified:
            raise HubError(
                f"{place}: the Hub at {self.endpoint} gave no content hash for it (ETag {etag!r}; zoo needs a "
                "40-hex git blob sha1 or a 64-hex sha256), so its content cannot be verified; refused, nothing "
                f"was downloaded. If you trust this endpoint, {transport.UNVERIFIED_HINT}."
            )
        size_text = _one_header(headers, "X-Linked-Size") or (
            None if location else _one_header(headers, "Content-Length")
        )
        if size_text is not None and not size_text.isdigit():
            raise self._refuse(place, f"the Hub at {self.endpoint} gave the size {size_text!r}, not a number of bytes")
        size = int(size_text) if size_text is not None else None
        if size is not None:
            self._check_size(place, filename, size, cap)
        return _Remote(filename, commit, address, etag, size, urljoin(url, location) if location else url)

    def _check_redirect(self, place: str, target: str) -> None:
        """Follow a redirect only over http(s), never from https down to http, and off the endpoint's
        origin only to the Hub's own storage (for huggingface.co) or ZOO_HUB_TRUSTED_HOSTS."""
        scheme, host, port = _origin(target)
        mine = _origin(self.endpoint)
        if scheme not in ("http", "https") or not host:
            raise self._refuse(place, f"the Hub at {self.endpoint} redirected it to {target!r}, not an http(s) URL")
        if mine[0] == "https" and scheme != "https":
            raise self._refuse(place, f"the Hub at {self.endpoint} redirected it to plain http ({host})")
        if (scheme, host, port) == mine:
            return
        trusted = transport.trusted_hosts()
        hub_storage = (
            mine[1] in ("huggingface.co", "hf.co")
            and scheme == "https"
            and (host in ("huggingface.co", "hf.co") or host.endswith((".huggingface.co", ".hf.co")))
        )
        if hub_storage or host in trusted or f"{host}:{port}" in trusted:
            return
        raise self._refuse(
            place,
            f"the Hub at {self.endpoint} redirected the download to {host}:{port}, a host zoo does not trust",
            f"If your mirror serves its files from there, add {host}:{port} to {transport.TRUSTED_HOSTS_ENV} "
            "(comma-separated host[:port]).",
        )

    def _check_size(self, place: str, filename: str, size: int, cap: int) -> None:
        if size > cap:
            setting = (
                f"raise the limit with {transport.MAX_WEIGHTS_ENV}=..., e.g. 40GiB, if you expect a model that large"
                if filename == "model.safetensors"
                else "a zoo model repo's files are far smaller; this repo is not one zoo pushed"
            )
            raise HubError(
                f"{place}: the Hub says it is {transport.human_size(size)}, over zoo's limit of "
                f"{transport.human_size(cap)} for {filename}; refused, nothing was downloaded. {setting}."
            )
        probe = self.cache
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if size + DISK_MARGIN > free:
            raise HubError(
                f"{place}: it needs {transport.human_size(size)} but only {transport.human_size(free)} are free "
                f"for the cache {self.cache}; refused, nothing was downloaded. Free some space, or point HF_HOME "
                "at a larger disk."
            )

    def _http_failure(self, status: int, headers, filename: str, revision: str) -> HubError:
        place = transport.where(self.repo_id, revision, filename)
        code = headers.get("X-Error-Code") or ""
        if code == "RevisionNotFound":
            return HubError(transport.no_revision_message(self.repo_id, revision, self.endpoint))
        if code in ("RepoNotFound", "GatedRepo") or status in (401, 403):
            return HubError(transport.no_repo_message(self.repo_id, self.endpoint))
        if status == 404:
            return MissingFile(transport.no_file_message(place))
        if status in _RETRY_LATER:
            raise _Unreachable(f"it answered HTTP {status}")
        return HubError(f"{place}: the Hub at {self.endpoint} answered HTTP {status}. Try again later.")

    # -- the download ------------------------------------------------------------------------------

    def _dir(self, path: Path) -> Path:
        """``path`` (a folder under the repo's storage), created one level at a time, each level
        checked to lie inside the storage before anything is created in it."""
        self.cache.mkdir(parents=True, exist_ok=True)
        folder = self.cache
        for part in path.relative_to(self.cache).parts:
            folder = folder / part
            if not os.path.lexists(folder):
                folder.mkdir(exist_ok=True)
            if not _inside(folder, self.cache if folder == self.storage else self.storage) or not folder.is_dir():
                raise HubError(
                    f"{folder}: this folder of the cache resolves to {os.path.realpath(folder)}, outside "
                    f"{self.storage}; nothing was written. Remove the link, or point HF_HOME at another folder."
                )
        return path

    def _download(self, remote: _Remote, revision: str, cap: int, sha256: str | None, pin_owner: str) -> Fetched:
        place = transport.where(self.repo_id, revision, remote.filename)
        blobs = self._dir(self.storage / "blobs")
        url = remote.location
        rate = transport.min_rate()
        expected = remote.size
        started = time.monotonic()
        grace = 2 * self.timeout
        budget = expected if expected is not None else cap
        deadline = started + grace + (budget / rate if rate else 365 * 86400)
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_redirect(place, url)
            try:
                answer = http.request("GET", url, headers=self._headers(url), timeout=self.timeout, deadline=deadline)
            except http.NETWORK_ERRORS as exc:
                raise self._cannot_fetch(place, url, exc) from exc
            if 300 <= answer.status < 400 and answer.headers.get("Location"):
                answer.close()
                url = urljoin(url, answer.headers["Location"])
                continue
            break
        else:
            raise self._refuse(place, f"the download was redirected more than {MAX_REDIRECTS} times")
        tmp = blobs / f".zoo-{secrets.token_hex(8)}.incomplete"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)  # umask applies
        try:
            with answer, os.fdopen(fd, "wb") as out:
                if answer.status != 200:
                    raise HubError(
                        f"{place}: {_host(url)} answered HTTP {answer.status} to the download. Try again later."
                    )
                length = answer.headers.get("Content-Length")
                if length is not None and (not length.isdigit() or (expected is not None and int(length) != expected)):
                    raise self._refuse(
                        place, f"the download is {length!r} bytes long, but the Hub announced {expected} bytes"
                    )
                if expected is None and length is not None:
                    expected = int(length)
                    self._check_size(place, remote.filename, expected, cap)
                limit = expected if expected is not None else cap
                digests = _Digests(expected)
                received = 0
                while True:
                    try:
                        chunk = answer.read1(http.CHUNK)
                    except http.NETWORK_ERRORS as exc:
                        raise self._cannot_fetch(place, url, exc) from exc
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limit:
                        raise self._refuse(place, f"{_host(url)} sent more than the {limit} bytes announced")
                    elapsed = time.monotonic() - started
                    if rate and elapsed > grace + received / rate:
                        raise self._too_slow(place, url, received, expected, elapsed, rate)
                    out.write(chunk)
                    digests.update(chunk)
            if expected is not None and received != expected:
                raise self._refuse(place, f"{_host(url)} sent {received} of the {expected} bytes announced")
            name = self._verify_new(place, tmp, digests, remote, sha256, pin_owner)
            blob = blobs / name
            os.replace(tmp, blob)
        finally:
            _remove(tmp)
        pointer = self._link(remote.commit, remote.filename, blob)
        verified = remote.address is not None or bool(sha256)
        self._verified[os.path.realpath(pointer)] = verified
        return Fetched(pointer, remote.commit, verified)

    def _verify_new(self, place, tmp: Path, digests, remote: _Remote, sha256, pin_owner) -> str:
        """The blob name for verified bytes; a HubError (and no blob) when they do not match."""
        actual_sha256 = digests.sha256.hexdigest()
        if sha256 and actual_sha256 != sha256.lower():
            raise self._pin_mismatch(place, actual_sha256, sha256, pin_owner)
        if remote.address is None:
            return actual_sha256  # accepted unverified (or by the pin): named by the hash zoo computed
        actual = actual_sha256 if len(remote.address) == 64 else digests.git_sha1(tmp)
        if actual != remote.address:
            kind = "sha256" if len(remote.address) == 64 else "git blob sha1"
            raise HubError(
                f"{place}: the downloaded bytes have {kind} {actual}, but the Hub announced {remote.address}: the "
                "download is corrupt or the repo was tampered with; nothing was loaded or kept in the cache. "
                "Pull again; if it persists, report it to the model's publisher."
            )
        return remote.address

    def _pin_mismatch(self, place, actual, pin, pin_owner) -> HubError:
        return HubError(
            f"{place}: its sha256 is {actual}, but {pin_owner or 'the catalogue'} pins {pin}. The download is "
            "corrupt or the repo was changed; nothing was loaded and nothing was kept in the cache. Pull again; "
            "if it persists, report it to the model's publisher."
        )

    def _cannot_fetch(self, place, url, exc) -> HubError:
        if isinstance(exc, http.DeadlineExceeded):
            return HubError(
                f"{place}: {_host(url)} took too long to answer (over {2 * self.timeout:g} s plus the time the "
                f"file's size allows); refused, nothing was kept. Check your connection, or raise "
                f"{transport.TIMEOUT_ENV}."
            )
        return HubError(
            f"{place}: the download from {_host(url)} failed ({type(exc).__name__}: {exc}); nothing was kept. "
            f"Check your connection or {transport.TIMEOUT_ENV}, and pull again."
        )

    def _too_slow(self, place, url, received, expected, elapsed, rate) -> HubError:
        total = f"of {expected} " if expected is not None else ""
        return HubError(
            f"{place}: the download from {_host(url)} is too slow ({received} bytes {total}in {elapsed:.1f} s, "
            f"under {transport.human_size(rate)} per second); refused, nothing was kept. Check your connection, "
            f"or lower {transport.MIN_RATE_ENV} (e.g. 1KiB)."
        )

    # -- the cache ---------------------------------------------------------------------------------

    def _pointer(self, commit: str, filename: str) -> Path:
        return self.storage / "snapshots" / commit / filename

    def _link(self, commit: str, filename: str, blob: Path) -> Path:
        """``snapshots/<commit>/<filename>`` -> ``blob``: a relative link, else a hard link or a copy."""
        pointer = self._pointer(commit, filename)
        folder = self._dir(pointer.parent)
        tmp = folder / f".zoo-{os.getpid()}-{time.monotonic_ns()}.link"
        try:
            try:
                os.symlink(os.path.relpath(blob, folder), tmp)
            except OSError:
                try:
                    os.link(blob, tmp)
                except OSError:
                    shutil.copyfile(blob, tmp)
            os.replace(tmp, pointer)
        finally:
            _remove(tmp)
        return pointer

    def _write_ref(self, revision: str, commit: str) -> None:
        """``refs/<branch>`` = the commit, so an offline pull of the branch finds it (best effort)."""
        if transport.COMMIT.match(revision):
            return
        ref = self.storage / "refs" / revision
        try:
            folder = self._dir(ref.parent)
            tmp = folder / f".zoo-{os.getpid()}-{time.monotonic_ns()}.ref"
            tmp.write_text(commit)
            os.replace(tmp, ref)
        except OSError:
            pass

    def _read_ref(self, revision: str) -> str | None:
        if transport.COMMIT.match(revision):
            return revision
        ref = self.storage / "refs" / revision
        if not ref.is_file() or not _inside(ref, self.storage):
            return None
        with open(ref, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
        return text if transport.COMMIT.match(text) else None

    def _from_cache_only(self, filename, revision, cap, sha256, pin_owner) -> Fetched:
        commit = self._read_ref(revision)
        cached = self._cached(filename, revision, commit, cap, sha256, pin_owner) if commit else None
        if cached is None:
            place = transport.where(self.repo_id, revision, filename)
            raise MissingFile(
                transport.not_cached_message(place, self.endpoint, offline=self.offline, unreachable=self.unreachable)
            )
        return cached

    def _cached(
        self, filename, revision, commit, cap, sha256, pin_owner, *, expect: str | None = None, refetch: bool = False
    ) -> Fetched | None:
        """The cached file, verified against its content address; None if absent, stale or (with
        ``refetch``) unverifiable, for the caller to download it again."""
        pointer = self._pointer(commit, filename)
        if not os.path.lexists(pointer):
            return None
        place = transport.where(self.repo_id, revision, filename)
        verified = self._check_cached(place, pointer, cap, sha256, pin_owner, expect=expect, refetch=refetch)
        return None if verified is None else Fetched(pointer, commit, verified)

    def _check_cached(self, place, pointer: Path, cap, sha256, pin_owner, *, expect=None, refetch=False) -> bool | None:
        """True: verified; False: unverifiable but accepted; None: absent, stale or to fetch again.
        Raises (and evicts what is zoo's to evict) when it escapes the cache or its bytes are wrong."""
        real = os.path.realpath(pointer)
        if not _inside(real, self.storage):
            _remove(pointer)  # the link is ours to remove; what it points at is not
            raise HubError(
                f"{place}: the cached {pointer} resolves to {real}, outside the cache {self.storage}; removed the "
                "link, nothing was loaded. Pull again; if something else writes into your cache, check it."
            )
        if not os.path.isfile(real):
            _remove(pointer)
            return None
        blob = Path(real)
        in_blobs = blob.parent == Path(os.path.realpath(self.storage / "blobs"))
        address = transport.content_address(blob.name) if in_blobs else None
        size = blob.stat().st_size
        if size > cap:
            raise HubError(
                f"{place}: the cached copy is {transport.human_size(size)}, over zoo's limit of "
                f"{transport.human_size(cap)}; nothing was loaded. Delete {pointer}, or raise {transport.MAX_WEIGHTS_ENV}."
            )
        if real in self._verified and not (expect or sha256):
            return self._verified[real]
        if address is None and not in_blobs:  # a copy (no symlinks here): a blob named by its hash vouches
            for candidate in (transport.sha256_of(blob), transport.git_blob_sha1_of(blob)):
                if (self.storage / "blobs" / candidate).is_file():
                    address = candidate
                    break
        if expect and address != expect:
            return None  # the Hub names other bytes for this commit's file: fetch those
        if address is None and not sha256 and not self.allow_unverified:
            if refetch:
                return None
            raise HubError(
                f"{place}: the cached copy at {pointer} is not stored under a content hash, so zoo cannot "
                f"verify it; nothing was loaded. Delete {pointer.parent} and pull again, or, if you trust "
                f"where it came from, {transport.UNVERIFIED_HINT}."
            )
        actual = transport.hash_of(blob, address) if address else None
        if address and actual != address:
            _remove(pointer)
            if in_blobs:
                _remove(blob)
            raise HubError(
                f"{place}: the cached copy has hash {actual}, not the {address} it is stored under: it is "
                "corrupt or was changed on disk; it was removed and nothing was loaded. Pull again."
            )
        if sha256:
            digest = actual if address and len(address) == 64 else transport.sha256_of(blob)
            if digest != sha256.lower():
                _remove(pointer)
                raise self._pin_mismatch(place, digest, sha256, pin_owner)
        self._verified[real] = address is not None or bool(sha256)
        return self._verified[real]

    def check_snapshot(self, commit: str, revision: str) -> list[str]:
        """Every file of ``snapshots/<commit>``: inside the cache and verified (each hashed once per
        pull). Returns the names accepted unverified; raises on the first that fails."""
        top = self._pointer(commit, "")
        unverified = []
        for folder, dirs, files in os.walk(top):
            for name in sorted(dirs + files):
                path = Path(folder) / name
                rel = path.relative_to(top).as_posix()
                place = transport.where(self.repo_id, revision, rel)
                if name in dirs and not path.is_symlink():
                    continue
                if name in dirs:  # a linked folder: only its place matters, walk does not follow it
                    if not _inside(path, self.storage):
                        _remove(path)
                        raise HubError(
                            f"{place}: this folder of the snapshot resolves to {os.path.realpath(path)}, outside the "
                            f"cache {self.storage}; removed the link, nothing was loaded. Pull again."
                        )
                    continue
                if self._check_cached(place, path, transport.size_cap(rel), None, "") is False:
                    unverified.append(rel)
        return unverified


class _Digests:
    """sha256 always (for pins, and the name of a file accepted unverified); the git blob sha1 as the
    bytes stream when the size is known up front, else by re-reading the file."""

    def __init__(self, size: int | None):
        self.sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1(b"blob %d\0" % size) if size is not None else None

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self._sha1 is not None:
            self._sha1.update(chunk)

    def git_sha1(self, path: Path) -> str:
        return self._sha1.hexdigest() if self._sha1 is not None else transport.git_blob_sha1_of(path)


def _host(url: str) -> str:
    _scheme, host, port = _origin(url)
    return f"{host}:{port}"
