"""A local, in-memory stand-in for the Hugging Face Hub, for tests (standard library only).

It answers the HTTP calls that ``huggingface_hub`` 2.4 makes to create a repo, commit files
(regular, base64 uploads: never LFS or Xet), create a branch and download files, so zoo's real
push/pull code runs against it without a network::

    with FakeHub() as hub:                     # serves on 127.0.0.1, a free port
        HfApi(endpoint=hub.endpoint, token="hf_x").create_repo("org/name")
        hub.tamper("org/name", "model.safetensors")   # corrupt a stored file in place
    # leaving the block stops the server (``hub.stop()`` does it explicitly: "server down")

Routes (``{repo}`` is ``namespace/name``; revisions are branch names or commit shas):

=========  =============================================  ==========================================
POST       /api/repos/create                              200 ``{"url"}``; 409 (with ``url``) if it exists
POST       /api/validate-yaml                             ``{"errors": [], "warnings": []}``; 400 if bad
POST       /api/models/{repo}/preupload/{rev}             every file ``"uploadMode": "regular"``
POST       /api/models/{repo}/commit/{rev}                NDJSON header + files -> ``{"commitOid"}``
POST       /api/models/{repo}/branch/{branch}             a new branch at ``startingPoint`` (409 if it exists)
GET        /api/models/{repo}[/revision/{rev}]            ``{"id", "sha", "siblings"}``
GET        /api/models/{repo}/tree/{rev}[/{path}]         ``[{"type": "file", "path", "size", "oid"}]``
GET        /api/models/{repo}/refs                        branches and their commits
HEAD, GET  /{repo}/resolve/{rev}/{path}                   the file: ``X-Repo-Commit``, ``ETag``, Range (206)
HEAD, GET  /cdn/{blob id}   (on ``cdn_endpoint`` only)     a blob, as LFS storage serves a signed URL
=========  =============================================  ==========================================

Failures follow the Hub: 404 with ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` /
``EntryNotFound`` (the codes ``huggingface_hub`` turns into its typed errors), 401 for a write
without a bearer token, 412 when ``parentCommit`` is not the branch head.

A file's ETag is its git blob sha1 (as the Hub's ETag of a regular file), so ``huggingface_hub``
stores it in its cache as ``blobs/<sha1>``.

Misbehaving on request, for the tests of what a client does with a Hub it does not control
(``misbehave`` adds a rule to a per-repo table, ``behave`` clears it)::

    hub.misbehave("org/m", "model.safetensors", headers={"ETag": '"../../x"'})   # None drops a header
    hub.misbehave("org/m", "README.md", method="HEAD", headers={"Content-Length": str(10**15)})
    hub.misbehave("org/m", "config.json", body=b"{}")      # other bytes than its ETag says
    hub.misbehave("org/m", "model.safetensors", drip=(16, 0.05))   # 16 bytes every 50 ms
    hub.misbehave("org/m", redirect="cdn")     # 302 to a second server on another port, like LFS
    hub.misbehave("org/m", any_revision=True)  # any revision name resolves to main's head
    hub.misbehave("org/m", status=503)         # the Hub is having a bad day

The second server (``hub.cdn_endpoint``) serves ``/cdn/<blob id>`` like the Hub's LFS storage.
``request_log`` keeps ``(server, method, path, headers)`` of every request, ``server`` being
``"hub"`` or ``"cdn"``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: ``sha1(b"blob <size>\\0" + data)``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, str]  # path -> blob id
    parent: str | None
    summary: str


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # blob id -> content

    def resolve(self, revision: str) -> str | None:
        """The commit sha a branch name or commit sha names, or None."""
        if revision in self.branches:
            return self.branches[revision]
        if COMMIT_SHA.match(revision) and revision in self.commits:
            return revision
        return None


@dataclass
class Misbehaviour:
    """One rule of the override table: what ``_resolve`` changes for matching requests."""

    repo_id: str
    path: str | None = None  # None: every file of the repo
    method: str | None = None  # "HEAD" or "GET"; None: both
    headers: dict[str, str | None] = field(default_factory=dict)  # None: drop that header
    body: bytes | None = None  # served instead of the stored bytes (the headers stay the stored file's)
    drip: tuple[int, float] | None = None  # (bytes, seconds): send the body that slowly
    redirect: str | None = None  # "cdn" (the second server) or any Location value
    any_revision: bool = False
    status: int | None = None  # answer this status (an error, e.g. 503) with an empty body

    def applies(self, repo_id: str, path: str, method: str) -> bool:
        return (
            self.repo_id == repo_id
            and self.path in (None, path)
            and self.method in (None, method)
        )


@dataclass
class Drip:
    """A response body sent ``chunk`` bytes at a time, ``interval`` seconds apart."""

    data: bytes
    chunk: int
    interval: float

    def __len__(self) -> int:
        return len(self.data)


class HubFailure(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` and message."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] = ()):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers)


class FakeHub:
    """In-memory Hub repos behind a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0: a free one).

    Args:
        token: the only bearer token accepted on writes; None accepts any non-empty token.
    """

    def __init__(self, token: str | None = None):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.request_log: list[tuple[str, str, str, dict[str, str]]] = []  # (server, method, path, headers)
        self.misbehaviours: list[Misbehaviour] = []
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        self.endpoint = self._serve_as("hub")
        self.cdn_endpoint = self._serve_as("cdn")  # another origin (port), as the Hub's LFS storage is
        return self

    def _serve_as(self, role: str) -> str:
        handler = type("BoundHandler", (_Handler,), {"hub": self, "role": role})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fakehub-{role}", daemon=True
        )
        thread.start()
        self._servers.append((server, thread))
        host, port = server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving and close the ports: later requests get "connection refused"."""
        while self._servers:
            server, thread = self._servers.pop()
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state, also usable directly by tests ----------------------------------------------------

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        """An empty repo whose ``main`` branch points at an initial commit with no files."""
        with self._lock:
            if repo_id in self.repos:
                raise HubFailure(409, f"You already created this model repo: {repo_id}")
            repo = Repo(repo_id, private=private)
            self.repos[repo_id] = repo
            self._new_commit(repo, "main", {}, None, "initial commit")
            return repo

    def commit(self, repo_id: str, files: Mapping[str, bytes], branch: str = "main", summary: str = "") -> str:
        """Add or replace ``files`` on ``branch`` in one new commit; returns its sha."""
        with self._lock:
            repo = self._repo(repo_id)
            head = self._head(repo, branch)
            tree = dict(repo.commits[head].files)
            for path, data in files.items():
                blob = git_blob_sha1(data)
                repo.blobs[blob] = data
                tree[path] = blob
            return self._new_commit(repo, branch, tree, head, summary or f"update {len(files)} files")

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        with self._lock:
            repo = self._repo(repo_id)
            return repo.blobs[self._entry(repo, self._commit_of(repo, revision), path)]

    def tamper(self, repo_id: str, path: str, revision: str = "main", data: bytes | None = None) -> None:
        """Change a stored file's bytes in place, keeping its blob id (ETag) and commit.

        Without ``data``, one byte near the end is flipped (for safetensors: inside the tensor data,
        so the file still parses and only a content hash can tell).
        """
        with self._lock:
            repo = self._repo(repo_id)
            blob = self._entry(repo, self._commit_of(repo, revision), path)
            if data is None:
                original = bytearray(repo.blobs[blob])
                original[-2] ^= 0xFF
                data = bytes(original)
            repo.blobs[blob] = data

    def head(self, repo_id: str, branch: str = "main") -> str:
        with self._lock:
            return self._head(self._repo(repo_id), branch)

    def misbehave(self, repo_id: str, path: str | None = None, **rule: Any) -> Misbehaviour:
        """Add a rule to the override table (see the module docstring); later rules win."""
        with self._lock:
            misbehaviour = Misbehaviour(repo_id, path, **rule)
            self.misbehaviours.append(misbehaviour)
            return misbehaviour

    def behave(self) -> None:
        """Clear the override table: serve every repo as stored again."""
        with self._lock:
            self.misbehaviours.clear()

    def _rules(self, repo_id: str, path: str, method: str) -> list[Misbehaviour]:
        return [m for m in self.misbehaviours if m.applies(repo_id, path, method)]

    # -- helpers (raise HubFailure) --------------------------------------------------------------

    def _repo(self, repo_id: str, token: str | None = None, *, reading: bool = True) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and reading and not token):
            raise HubFailure(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _head(self, repo: Repo, branch: str) -> str:
        if branch not in repo.branches:
            raise HubFailure(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        return repo.branches[branch]

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubFailure(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    def _entry(self, repo: Repo, commit: Commit, path: str) -> str:
        if path not in commit.files:
            raise HubFailure(
                404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha}
            )
        return commit.files[path]

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, str], parent: str | None, summary: str) -> str:
        seed = f"{repo.repo_id}\0{parent}\0{summary}\0{next(self._counter)}\0{sorted(files.items())}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, files, parent, summary)
        repo.branches[branch] = sha
        return sha

    # -- request handling (called by the handler, under the lock) ---------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers, body: bytes, server: str = "hub"):
        """Dispatch one request: returns ``(status, headers, body)``, the body bytes or a ``Drip``."""
        with self._lock:
            self.requests.append((method, path))
            self.request_log.append((server, method, path, dict(headers.items())))
            token = _bearer(headers)
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if server == "cdn":
                return self._cdn(method, parts)
            if parts[:1] == ["api"]:
                return self._api(method, parts[1:], query, token, body)
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                repo = self._repo(f"{parts[0]}/{parts[1]}", token)
                return self._resolve(repo, parts[3], "/".join(parts[4:]), headers, method)
            raise HubFailure(404, f"fakehub: no route for {method} {path}")

    def _api(self, method, parts, query, token, body):
        if method == "POST" and parts == ["repos", "create"]:
            return self._create_repo(_json(body), token)
        if method == "POST" and parts == ["validate-yaml"]:
            return self._validate_yaml(_json(body))
        if len(parts) < 3 or parts[0] != "models":
            raise HubFailure(404, f"fakehub: no route for /api/{'/'.join(parts)}")
        repo_id, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        if method == "POST":
            self._require_token(token)
            repo = self._repo(repo_id, token, reading=False)
            if len(rest) == 2 and rest[0] == "preupload":
                self._commit_of(repo, rest[1])
                files = _json(body).get("files", [])
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return _ok({"files": answer})
            if len(rest) == 2 and rest[0] == "commit":
                return self._commit_request(repo, rest[1], query, body)
            if len(rest) == 2 and rest[0] == "branch":
                return self._create_branch(repo, rest[1], _json(body) if body else {})
        if method == "GET":
            repo = self._repo(repo_id, token)
            if not rest:
                return _ok(self._info(repo, repo.commits[self._head(repo, "main")]))
            if len(rest) == 2 and rest[0] == "revision":
                return _ok(self._info(repo, self._commit_of(repo, rest[1])))
            if len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo, self._commit_of(repo, rest[1]), "/".join(rest[2:]))
            if rest == ["refs"]:
                branches = [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in repo.branches.items()
                ]
                return _ok({"branches": branches, "converts": [], "tags": []})
        raise HubFailure(404, f"fakehub: no route for {method} /api/{'/'.join(parts)}")

    def _require_token(self, token: str | None) -> None:
        if not token or (self.token is not None and token != self.token):
            raise HubFailure(401, "Invalid credentials in Authorization header")

    def _create_repo(self, payload, token):
        self._require_token(token)
        if payload.get("type") not in (None, "model"):
            raise HubFailure(400, "fakehub serves model repos only")
        name, org = payload.get("name"), payload.get("organization")
        repo_id = f"{org}/{name}" if org else str(name)
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise HubFailure(400, f"fakehub: repo ids are namespace/name, not {repo_id!r}")
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self.repos:
            return 409, {}, json.dumps({"error": "You already created this model repo", "url": url}).encode()
        self.create_repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        return _ok({"url": url, "name": repo_id})

    def _validate_yaml(self, payload):
        errors = model_card_errors(payload.get("content", ""))
        status = 400 if errors else 200
        return status, {}, json.dumps({"errors": [{"message": e} for e in errors], "warnings": []}).encode()

    def _commit_request(self, repo, revision, query, body):
        if "create_pr" in query:
            raise HubFailure(400, "fakehub does not do pull requests")
        head = self._head(repo, revision)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubFailure(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head):
            raise HubFailure(412, f"A commit has happened since {header['parentCommit']}; the head is {head}")
        tree = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                blob = git_blob_sha1(data)
                repo.blobs[blob] = data
                tree[value["path"]] = blob
            elif key == "deletedFile":
                tree.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {p: b for p, b in tree.items() if not p.startswith(prefix)}
            else:
                raise HubFailure(400, f"fakehub stores regular uploads only, not {key!r}")
        sha = self._new_commit(repo, revision, tree, head, header.get("summary", ""))
        return _ok({"commitUrl": f"{self.endpoint}/{repo.repo_id}/commit/{sha}", "commitOid": sha, "success": True})

    def _create_branch(self, repo, branch, payload):
        if branch in repo.branches:
            raise HubFailure(409, f"Reference already exists: refs/heads/{branch}")
        start = self._commit_of(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.sha
        return _ok({})

    def _info(self, repo, commit):
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "sha": commit.sha,
            "private": repo.private,
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            "tags": [],
        }

    def _tree(self, repo, commit, prefix):
        prefix = prefix.strip("/")
        entries = [
            {"type": "file", "path": p, "size": len(repo.blobs[b]), "oid": b}
            for p, b in sorted(commit.files.items())
            if not prefix or p == prefix or p.startswith(prefix + "/")
        ]
        return _ok(entries)

    def _cdn(self, method, parts):
        """``/cdn/<blob id>``: a blob of any repo, the way LFS storage serves a signed URL."""
        if method in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "cdn":
            for repo in self.repos.values():
                if parts[1] in repo.blobs:
                    data = repo.blobs[parts[1]]
                    return 200, {"ETag": f'"{parts[1]}"', "Content-Type": "application/octet-stream"}, data
        raise HubFailure(404, f"fakehub cdn: no blob at /{'/'.join(parts)}")

    def _resolve(self, repo, revision, path, headers, method):
        rules = self._rules(repo.repo_id, path, method)
        status = next((r.status for r in reversed(rules) if r.status), None)
        if status:
            return status, {"Content-Type": "text/plain"}, b""
        if repo.resolve(revision) is None and any(r.any_revision for r in rules):
            revision = "main"
        commit = self._commit_of(repo, revision)
        blob = self._entry(repo, commit, path)
        data = repo.blobs[blob]
        out = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{blob}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        redirect = next((r.redirect for r in reversed(rules) if r.redirect), None)
        if redirect:
            location = f"{self.cdn_endpoint}/cdn/{blob}" if redirect == "cdn" else redirect
            out.update({"Location": location, "X-Linked-Etag": f'"{blob}"', "X-Linked-Size": str(len(data))})
            return 302, self._override(out, rules), b""
        for rule in rules:
            data = rule.body if rule.body is not None else data
        status, out, data = self._ranged(out, data, headers, method)
        out = self._override(out, rules)
        drip = next((r.drip for r in reversed(rules) if r.drip), None)
        return status, out, (Drip(data, *drip) if drip else data)

    @staticmethod
    def _override(out, rules):
        for rule in rules:
            out.update(rule.headers)
        return out

    @staticmethod
    def _ranged(out, data, headers, method):
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("Range", "") or "")
        if match and method == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if start >= len(data):
                raise HubFailure(416, f"range start {start} beyond size {len(data)}")
            out["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        out["Content-Length"] = str(len(data))
        return status, out, data


def model_card_errors(content: str) -> list[str]:
    """What the Hub's metadata check would object to in a README's YAML front matter (a subset)."""
    if not content.startswith("---"):
        return []  # no metadata: the Hub accepts it (with a warning)
    end = content.find("\n---", 3)
    if end < 0:
        return ["the YAML front matter is not closed by a '---' line"]
    try:
        meta = yaml.safe_load(content[3:end])
    except yaml.YAMLError as exc:
        return [f"invalid YAML in the front matter: {exc}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["the front matter must be a mapping"]
    errors = []
    for key in ("library_name", "license", "pipeline_tag"):
        if key in meta and not isinstance(meta[key], str):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "metrics", "language"):
        value = meta.get(key)
        if value is not None and not (
            isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    for i, model in enumerate(meta.get("model-index") or []):
        for j, result in enumerate(model.get("results") or [] if isinstance(model, dict) else []):
            where = f'"model-index[{i}].results[{j}]"'
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f"{where}.task.type must be a string")
            dataset = result.get("dataset") or {}
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append(f"{where}.dataset needs string 'type' and 'name'")
            for k, metric in enumerate(result.get("metrics") or []):
                if not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append(f"{where}.metrics[{k}] needs 'type' and 'value'")
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"model-index[{i}]" needs a string "name"')
    return errors


def _bearer(headers) -> str | None:
    value = headers.get("Authorization") or ""
    return value[7:].strip() or None if value.lower().startswith("bearer ") else None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise HubFailure(400, f"invalid JSON body: {exc}") from exc


def _ok(payload: Any):
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the bound subclass
    role: str = "hub"  # or "cdn"
    protocol_version = "HTTP/1.1"

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, headers, data = self.hub.handle(
                method, split.path, parse_qs(split.query), self.headers, body, server=self.role
            )
        except HubFailure as failure:
            status, data = failure.status, json.dumps({"error": failure.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": failure.message, **failure.headers}
            if failure.code:
                headers["X-Error-Code"] = failure.code
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(data)))  # a None value (dropped by a rule) stays None
        headers["Connection"] = "close"  # no keep-alive: stop() must really cut every client off
        for key, value in headers.items():
            if value is not None:
                self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        if method == "HEAD":
            return
        try:
            if isinstance(data, Drip):
                for start in range(0, len(data.data), data.chunk):
                    self.wfile.write(data.data[start : start + data.chunk])
                    self.wfile.flush()
                    time.sleep(data.interval)
            else:
                self.wfile.write(data)
        except OSError:
            pass  # the client hung up (as a client that gives up on a drip does)

    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_POST(self):
        self._serve("POST")

    def log_message(self, format, *args):  # keep test output quiet
        pass
