"""The local Hub stand-in answers what huggingface_hub 2.4 asks, the way the Hub does."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # before huggingface_hub is imported

import pytest

from fakehub import FakeHub, git_blob_sha1, model_card_errors


@pytest.fixture
def server():
    with FakeHub() as hub:
        yield hub


def request(hub, method, path, body=None, headers=None, token="hf_test"):
    """(status, headers, body) of one raw HTTP request; HTTP errors are answers, not exceptions."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(hub.endpoint + path, data=data, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def ndjson(*items):
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def commit_body(files, summary="c", parent=None):
    header = {"summary": summary, "description": ""}
    if parent:
        header["parentCommit"] = parent
    lines = [{"key": "header", "value": header}]
    for path, data in files.items():
        lines.append({"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}})
    return ndjson(*lines)


def test_create_repo_needs_a_token_and_answers_409_with_a_url_when_it_exists(server):
    status, _, _ = request(server, "POST", "/api/repos/create", {"name": "m", "organization": "org"}, token=None)
    assert status == 401
    status, _, body = request(server, "POST", "/api/repos/create", {"name": "m", "organization": "org", "type": "model"})
    assert status == 200 and json.loads(body)["url"] == f"{server.endpoint}/org/m"
    status, _, body = request(server, "POST", "/api/repos/create", {"name": "m", "organization": "org"})
    assert status == 409 and json.loads(body)["url"] == f"{server.endpoint}/org/m"


def test_commits_are_ndjson_base64_with_a_new_sha_each(server):
    server.create_repo("org/m")
    first = server.head("org/m")
    status, _, _ = request(server, "POST", "/api/models/org/m/commit/main", commit_body({"a.txt": b"1"}), token=None)
    assert status == 401
    status, _, body = request(server, "POST", "/api/models/org/m/commit/main", commit_body({"a.txt": b"1"}))
    second = json.loads(body)["commitOid"]
    assert status == 200 and second != first and json.loads(body)["commitUrl"].endswith(second)
    status, _, body = request(server, "POST", "/api/models/org/m/commit/main", commit_body({"b.txt": b"2"}, parent=first))
    assert status == 412  # parentCommit is no longer the head
    status, _, body = request(server, "POST", "/api/models/org/m/commit/main", commit_body({"b.txt": b"2"}, parent=second))
    third = json.loads(body)["commitOid"]
    assert status == 200 and third not in (first, second)
    assert server.repos["org/m"].commits[third].files.keys() == {"a.txt", "b.txt"}
    assert request(server, "POST", "/api/models/org/m/commit/main", ndjson({"key": "lfsFile", "value": {}}))[0] == 400


def test_preupload_answers_regular_for_every_file(server):
    server.create_repo("org/m")
    payload = {"files": [{"path": "model.safetensors", "sample": "", "size": 10**9}, {"path": "a.txt", "sample": "", "size": 1}]}
    status, _, body = request(server, "POST", "/api/models/org/m/preupload/main", payload)
    assert status == 200
    assert [f["uploadMode"] for f in json.loads(body)["files"]] == ["regular", "regular"]
    status, headers, _ = request(server, "POST", "/api/models/org/m/preupload/nope", payload)
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"


def test_resolve_serves_files_with_commit_etag_length_and_ranges(server):
    server.create_repo("org/m")
    sha = server.commit("org/m", {"dir/w.bin": b"0123456789"})
    for method in ("HEAD", "GET"):
        status, headers, body = request(server, method, "/org/m/resolve/main/dir/w.bin", token=None)
        assert status == 200 and headers["X-Repo-Commit"] == sha
        assert headers["ETag"] == f'"{git_blob_sha1(b"0123456789")}"' and headers["Content-Length"] == "10"
        assert body == (b"0123456789" if method == "GET" else b"")
    status, headers, body = request(server, "GET", f"/org/m/resolve/{sha}/dir/w.bin", headers={"Range": "bytes=4-"})
    assert status == 206 and body == b"456789" and headers["Content-Range"] == "bytes 4-9/10"


@pytest.mark.parametrize(
    "path, code",
    [
        ("/org/none/resolve/main/a.txt", "RepoNotFound"),
        ("/org/m/resolve/nope/a.txt", "RevisionNotFound"),
        ("/org/m/resolve/main/missing.txt", "EntryNotFound"),
        ("/api/models/org/none/revision/main", "RepoNotFound"),
        ("/api/models/org/m/revision/" + "f" * 40, "RevisionNotFound"),
    ],
)
def test_missing_things_are_404s_with_the_hubs_error_codes(server, path, code):
    server.create_repo("org/m")
    status, headers, _ = request(server, "GET", path)
    assert status == 404 and headers["X-Error-Code"] == code


def test_revision_info_tree_refs_and_branches(server):
    server.create_repo("org/m")
    main = server.commit("org/m", {"a.txt": b"a", "sub/b.txt": b"bb"})
    status, _, body = request(server, "POST", "/api/models/org/m/branch/dev", {"startingPoint": main})
    assert status == 200 and server.head("org/m", "dev") == main
    assert request(server, "POST", "/api/models/org/m/branch/dev", {})[0] == 409
    info = json.loads(request(server, "GET", "/api/models/org/m/revision/dev")[2])
    assert info["id"] == "org/m" and info["sha"] == main
    assert [s["rfilename"] for s in info["siblings"]] == ["a.txt", "sub/b.txt"]
    tree = json.loads(request(server, "GET", f"/api/models/org/m/tree/{main}?recursive=True")[2])
    assert {(e["path"], e["size"]) for e in tree} == {("a.txt", 1), ("sub/b.txt", 2)}
    refs = json.loads(request(server, "GET", "/api/models/org/m/refs")[2])
    assert {b["name"] for b in refs["branches"]} == {"main", "dev"}


def test_validate_yaml_checks_model_card_metadata(server):
    good = "---\nlibrary_name: zoo\ntags: [zoo]\ndatasets: [moons]\n---\n# card\n"
    status, _, body = request(server, "POST", "/api/validate-yaml", {"content": good, "repoType": "model"})
    assert status == 200 and json.loads(body) == {"errors": [], "warnings": []}
    bad = "---\ntags: {a: 1}\nmodel-index: [{name: x, results: [{task: {}, dataset: {}, metrics: [{}]}]}]\n---\n"
    status, _, body = request(server, "POST", "/api/validate-yaml", {"content": bad, "repoType": "model"})
    assert status == 400 and len(json.loads(body)["errors"]) == 4
    assert model_card_errors("---\n[unclosed\n---\n")[0].startswith("invalid YAML")


def test_tamper_keeps_the_etag_and_stop_refuses_connections(server):
    server.create_repo("org/m")
    server.commit("org/m", {"w.bin": b"abcdef"})
    etag = request(server, "HEAD", "/org/m/resolve/main/w.bin")[1]["ETag"]
    server.tamper("org/m", "w.bin")
    status, headers, body = request(server, "GET", "/org/m/resolve/main/w.bin")
    assert headers["ETag"] == etag and body == b"abcd\x9af" and git_blob_sha1(body) != etag.strip('"')
    server.stop()
    with pytest.raises(urllib.error.URLError):
        request(server, "GET", "/org/m/resolve/main/w.bin")


def test_huggingface_hub_round_trip(server, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=server.endpoint, token="hf_test")
    assert api.create_repo("org/rt", exist_ok=True) == f"{server.endpoint}/org/rt"
    assert api.create_repo("org/rt", exist_ok=True) == f"{server.endpoint}/org/rt"
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlibrary_name: zoo\n---\nhello\n")
    (folder / "w.bin").write_bytes(bytes(range(256)) * 8)
    api.create_branch("org/rt", branch="dev", exist_ok=True)
    info = api.upload_folder(repo_id="org/rt", folder_path=folder, revision="dev", commit_message="up")
    assert info.oid == server.head("org/rt", "dev") != server.head("org/rt")
    path = hf_hub_download("org/rt", "w.bin", revision="dev", endpoint=server.endpoint, cache_dir=tmp_path / "cache")
    assert open(path, "rb").read() == bytes(range(256)) * 8
    assert api.repo_info("org/rt", revision="dev").sha == info.oid
    assert sorted(f.path for f in api.list_repo_tree("org/rt", revision="dev")) == ["README.md", "w.bin"]
    assert ("POST", "/api/validate-yaml") in server.requests
