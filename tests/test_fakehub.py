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


# --- misbehaving on request ---------------------------------------------------------------------------


def test_misbehave_overrides_and_drops_headers_per_file_and_method(server):
    server.create_repo("org/m")
    server.commit("org/m", {"a.txt": b"aaa", "b.txt": b"bbb"})
    server.misbehave("org/m", "a.txt", headers={"ETag": '"../../x"', "X-Repo-Commit": None})
    server.misbehave("org/m", "b.txt", method="HEAD", headers={"Content-Length": str(10**15)})
    status, headers, body = request(server, "GET", "/org/m/resolve/main/a.txt")
    assert status == 200 and headers["ETag"] == '"../../x"' and "X-Repo-Commit" not in headers and body == b"aaa"
    assert request(server, "HEAD", "/org/m/resolve/main/b.txt")[1]["Content-Length"] == str(10**15)
    status, headers, body = request(server, "GET", "/org/m/resolve/main/b.txt")
    assert headers["Content-Length"] == "3" and body == b"bbb"  # the rule was for HEAD only
    server.behave()
    assert request(server, "GET", "/org/m/resolve/main/a.txt")[1]["ETag"] == f'"{git_blob_sha1(b"aaa")}"'


def test_misbehave_serves_other_bytes_under_the_stored_etag_and_without_a_length(server):
    server.create_repo("org/m")
    server.commit("org/m", {"a.txt": b"aaa"})
    server.misbehave("org/m", "a.txt", method="GET", body=b"other bytes", headers={"Content-Length": None})
    status, headers, body = request(server, "GET", "/org/m/resolve/main/a.txt")
    assert status == 200 and body == b"other bytes" and headers["ETag"] == f'"{git_blob_sha1(b"aaa")}"'
    assert "Content-Length" not in headers  # the body ends when the connection closes


def test_misbehave_drips_the_body(server):
    import time

    server.create_repo("org/m")
    server.commit("org/m", {"a.txt": b"0123456789"})
    server.misbehave("org/m", "a.txt", drip=(2, 0.05))
    started = time.monotonic()
    assert request(server, "GET", "/org/m/resolve/main/a.txt")[2] == b"0123456789"
    assert time.monotonic() - started >= 0.2  # five chunks, 50 ms apart


def test_misbehave_redirects_to_the_cdn_server_like_lfs(server):
    server.create_repo("org/m")
    server.commit("org/m", {"w.bin": b"weights"})
    blob = git_blob_sha1(b"weights")
    server.misbehave("org/m", "w.bin", redirect="cdn")
    req = urllib.request.Request(server.endpoint + "/org/m/resolve/main/w.bin", method="HEAD")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.build_opener(NoRedirect).open(req, timeout=5)
    headers = info.value.headers
    assert info.value.code == 302 and headers["Location"] == f"{server.cdn_endpoint}/cdn/{blob}"
    assert headers["X-Linked-Etag"] == f'"{blob}"' and headers["X-Linked-Size"] == "7"
    assert server.cdn_endpoint != server.endpoint
    assert request(server, "GET", f"/cdn/{blob}")[0] == 404  # the hub's port has no /cdn route
    with urllib.request.urlopen(f"{server.cdn_endpoint}/cdn/{blob}", timeout=5) as response:
        assert response.read() == b"weights"
    assert [(r[0], r[1]) for r in server.request_log[-2:]] == [("hub", "GET"), ("cdn", "GET")]
    assert server.request_log[-2][3].get("Authorization") == "Bearer hf_test"


def test_misbehave_any_revision_answers_for_any_name(server):
    server.create_repo("org/m")
    head = server.commit("org/m", {"a.txt": b"a"})
    assert request(server, "HEAD", "/org/m/resolve/..%2F..%2Fx/a.txt")[0] == 404
    server.misbehave("org/m", any_revision=True)
    status, headers, _ = request(server, "HEAD", "/org/m/resolve/..%2F..%2Fx/a.txt")
    assert status == 200 and headers["X-Repo-Commit"] == head
