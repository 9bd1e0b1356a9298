"""`zoo pull` against a Hub that misbehaves (tests/fakehub.py's override table): remote data stays
remote. Path parts in ETags, commits and revisions never reach the disk, content that cannot be
verified is refused unless the user opts out, sizes and transfer times are bounded, redirects go
only where zoo trusts, and every failure is one HubError naming the repo, revision, file and fix,
with nothing written outside the cache. No network: everything talks to 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # before huggingface_hub is imported

import pytest
from fakehub import FakeHub, git_blob_sha1

from zoo import hub
from zoo.errors import HubError
from zoo.hookspecs import hookimpl
from zoo.hub import _download, _http
from zoo.registry import build_registry, set_registry

REPO = "evil/model"
CONFIG = json.dumps({"schema_version": 1, "recipe": {"name": "x"}, "plugins": {}}).encode()
WEIGHTS = bytes(range(256)) * 16  # 4 KiB: pull does not parse it, only hashes it
FILES = {
    "config.json": CONFIG,
    "model.safetensors": WEIGHTS,
    "metrics.json": b'{"test_nll": 1.5}',
    "README.md": b"# a card\n",
}


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fake Hub holding REPO, an empty cache under tmp_path/home/hub, and an empty sentinel folder
    beside it that a path escaping the cache would land in."""
    from huggingface_hub import constants

    with FakeHub() as server:
        server.create_repo(REPO)
        server.commit(REPO, FILES)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
        for name in (
            "HF_HUB_CACHE",
            "HF_HUB_OFFLINE",
            "ZOO_ALLOW_UNVERIFIED",
            "ZOO_HUB_MAX_WEIGHTS",
            "ZOO_HUB_MIN_RATE",
            "ZOO_HUB_TRUSTED_HOSTS",
        ):
            monkeypatch.delenv(name, raising=False)
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_secret")
        monkeypatch.setenv("ZOO_HUB_ENDPOINT", server.endpoint)
        monkeypatch.setenv("ZOO_HUB_TIMEOUT", "2")
        (tmp_path / "sentinel").mkdir()
        server.tmp = tmp_path
        yield server


def cache_of(env) -> Path:
    return env.tmp / "home" / "hub"


def outside_cache(env) -> set[str]:
    """Every path under the test's folder that is neither inside the cache nor a folder holding it."""
    cache = cache_of(env)
    return {str(p) for p in env.tmp.rglob("*") if cache not in p.parents and p != cache and p not in cache.parents}


def refused(env, call, *needles: str) -> str:
    """Run ``call``; it must raise one HubError containing ``needles`` and write nothing outside the cache."""
    before = outside_cache(env)
    with pytest.raises(HubError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert list((env.tmp / "sentinel").iterdir()) == []
    assert outside_cache(env) == before
    assert "\n" not in message
    return message


def blobs(env, repo=REPO) -> list[str]:
    folder = cache_of(env) / f"models--{repo.replace('/', '--')}" / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def gets(env, path_part: str, server: str = "hub") -> list:
    return [r for r in env.request_log if r[0] == server and r[1] == "GET" and path_part in r[2]]


# --- 1. nothing the server says becomes a path --------------------------------------------------


@pytest.mark.parametrize("header", ["ETag", "X-Linked-Etag"])
@pytest.mark.parametrize("value", ['"../../../../sentinel/pwned"', "../../../../sentinel/pwned", "ABSOLUTE"])
def test_an_etag_with_path_parts_writes_nothing_outside_the_cache(env, header, value):
    value = value.replace("ABSOLUTE", str(env.tmp / "sentinel" / "abs"))
    env.misbehave(REPO, "config.json", headers={header: value})
    message = refused(
        env, lambda: hub.pull(REPO), f"{REPO}@main: config.json", "no content hash", "ZOO_ALLOW_UNVERIFIED=1"
    )
    assert value in message or repr(value) in message
    assert blobs(env) == []  # refused before downloading


def test_opting_out_names_an_unhashed_file_by_the_hash_zoo_computes(env, monkeypatch):
    env.misbehave(REPO, "config.json", headers={"ETag": '"../../../../sentinel/pwned"'})
    monkeypatch.setenv("ZOO_ALLOW_UNVERIFIED", "1")
    before = outside_cache(env)
    pulled = hub.pull(REPO)
    assert pulled.unverified == ("config.json",)
    assert hashlib.sha256(CONFIG).hexdigest() in blobs(env)
    assert os.path.realpath(pulled.folder / "config.json").startswith(str(cache_of(env)))
    assert list((env.tmp / "sentinel").iterdir()) == [] and outside_cache(env) == before


def test_the_get_answer_headers_are_never_used_for_paths(env):
    """The HEAD is checked; a GET that then names other ETags and commits changes nothing on disk."""
    env.misbehave(
        REPO, method="GET", headers={"ETag": '"../../../../sentinel/x"', "X-Repo-Commit": "../../../sentinel"}
    )
    before = outside_cache(env)
    pulled = hub.pull(REPO)
    assert pulled.revision == env.head(REPO) and (pulled.folder / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(blobs(env)) == sorted(git_blob_sha1(d) for d in FILES.values())
    assert list((env.tmp / "sentinel").iterdir()) == [] and outside_cache(env) == before


@pytest.mark.parametrize(
    "revision",
    [
        "../../../../sentinel/x",
        "main/../../x",
        "-rf",
        "/etc/passwd",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a b",
        "x" * 300,
        "v1.lock",
        ".hidden",
        "a//b",
        "a@{1}",
        "trailing/",
    ],
)
def test_a_revision_that_could_escape_is_refused_before_any_request(env, revision):
    env.misbehave(REPO, any_revision=True)  # a server that answers for any name
    refused(env, lambda: hub.pull(REPO, revision=revision), REPO, "refusing revision", "@main")
    refused(env, lambda: hub.pull(f"{REPO}@{revision}"), REPO, "refusing revision")
    assert env.requests == []
    assert not cache_of(env).exists()


def test_branch_tag_and_commit_revisions_still_work(env):
    head = env.head(REPO)
    env.repos[REPO].branches["release/v1.0"] = head
    assert hub.pull(REPO, revision="release/v1.0").revision == head
    assert hub.pull(f"{REPO}@{head}").revision == head
    ref = cache_of(env) / "models--evil--model" / "refs" / "release" / "v1.0"
    assert ref.read_text() == head


@pytest.mark.parametrize("repo_id", ["evil/..", "evil/.", "evil--x/model", "../model", "evil/mo..del", "evil/-x"])
def test_a_repo_id_that_could_escape_is_refused(env, repo_id):
    refused(env, lambda: hub.pull(repo_id), repo_id)
    assert env.requests == []


@pytest.mark.parametrize(
    "commit",
    ["../../../../sentinel/c", "main", "A" * 40, "f" * 39, None, "0" * 40 + "/x"],
)
def test_an_odd_commit_from_the_server_is_refused(env, commit):
    env.misbehave(REPO, "config.json", headers={"X-Repo-Commit": commit})
    refused(env, lambda: hub.pull(REPO), f"{REPO}@main: config.json", "X-Repo-Commit", "not a 40-hex commit")
    assert blobs(env) == []


def test_a_commit_asked_for_must_be_the_commit_answered(env):
    first = env.head(REPO)
    second = env.commit(REPO, {"README.md": b"# changed\n"})
    env.misbehave(REPO, headers={"X-Repo-Commit": second})
    refused(env, lambda: hub.pull(f"{REPO}@{first}"), f"asked for commit {first}", f"answered commit {second}")


def test_every_later_file_must_come_from_the_first_files_commit(env):
    other = "1" * 40
    env.misbehave(REPO, "model.safetensors", headers={"X-Repo-Commit": other})
    refused(env, lambda: hub.pull(REPO), "model.safetensors", f"answered commit {other}")


# --- 2. no hash, no load --------------------------------------------------------------------------


@pytest.mark.parametrize("etag", ['"not-a-hash"', '"' + "a" * 39 + '"', '"' + "a" * 63 + '"', None, '"sha256:abc"'])
@pytest.mark.parametrize("filename", ["model.safetensors", "config.json", "README.md"])
def test_a_file_without_a_usable_hash_is_refused_unless_allowed(env, monkeypatch, etag, filename):
    env.misbehave(REPO, filename, headers={"ETag": etag})
    refused(env, lambda: hub.pull(REPO), f"{REPO}@", filename, "cannot be verified", "ZOO_ALLOW_UNVERIFIED=1")
    pulled = hub.pull(REPO, allow_unverified=True)
    assert pulled.unverified == (filename,)
    assert (pulled.folder / filename).read_bytes() == FILES[filename]


@pytest.mark.parametrize("filename", ["model.safetensors", "config.json", "metrics.json", "README.md"])
def test_every_file_is_checked_against_its_etag_even_when_unverified_files_are_allowed(env, monkeypatch, filename):
    env.tamper(REPO, filename)  # other bytes, same ETag
    monkeypatch.setenv("ZOO_ALLOW_UNVERIFIED", "1")  # allows missing hashes, never wrong ones
    refused(env, lambda: hub.pull(REPO), filename, "git blob sha1", "but the Hub announced", "nothing was loaded")
    snapshot = cache_of(env) / "models--evil--model" / "snapshots" / env.head(REPO)
    assert not (snapshot / filename).exists()
    assert not [b for b in blobs(env) if b.endswith(".incomplete")]


def test_an_lfs_style_sha256_etag_is_checked_as_sha256(env):
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    env.misbehave(REPO, "model.safetensors", headers={"X-Linked-Etag": f'"{digest}"'})
    pulled = hub.pull(REPO)
    assert digest in blobs(env) and pulled.unverified == ()
    env.behave()
    env.misbehave(REPO, "model.safetensors", headers={"X-Linked-Etag": f'"{"0" * 64}"'})
    assert hub.pull(REPO).revision == pulled.revision  # the commit is cached: its verified copy serves
    shutil.rmtree(cache_of(env))
    refused(env, lambda: hub.pull(REPO), "the downloaded bytes have sha256 " + digest, "announced " + "0" * 64)


class _Catalogue:
    def __init__(self, entries):
        self.entries = entries

    @hookimpl
    def zoo_pretrained(self):
        return self.entries


@pytest.fixture
def catalogue_entry(env):
    def install(sha256):
        entry = {"repo_id": REPO, "revision": env.head(REPO), "sha256": sha256, "published": True}
        set_registry(build_registry(extra_plugins=[("test_catalogue", _Catalogue({"evil-model": entry}))]))

    yield install
    set_registry(None)


def test_a_catalogue_pin_verifies_weights_the_hub_gives_no_hash_for(env, catalogue_entry):
    env.misbehave(REPO, "model.safetensors", headers={"ETag": None})
    catalogue_entry(hashlib.sha256(WEIGHTS).hexdigest())
    pulled = hub.pull("evil-model")
    assert pulled.unverified == () and (pulled.folder / "model.safetensors").read_bytes() == WEIGHTS


def test_a_wrong_catalogue_pin_is_refused_even_when_unverified_files_are_allowed(env, catalogue_entry, monkeypatch):
    catalogue_entry("0" * 64)
    monkeypatch.setenv("ZOO_ALLOW_UNVERIFIED", "1")
    refused(
        env, lambda: hub.pull("evil-model"), "model.safetensors", "the catalogue entry 'evil-model' pins " + "0" * 64
    )


# --- 3. sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Content-Length", "X-Linked-Size"])
def test_a_huge_announced_size_is_refused_before_downloading(env, header):
    env.misbehave(REPO, "README.md", method="HEAD", headers={header: str(10**15)})
    refused(env, lambda: hub.pull(REPO), "README.md", "over zoo's limit of 8.0 MiB")
    assert gets(env, "README.md") == []


def test_the_weights_cap_is_configurable(env, monkeypatch):
    monkeypatch.setenv("ZOO_HUB_MAX_WEIGHTS", "1KiB")
    refused(env, lambda: hub.pull(REPO), "model.safetensors", "4.0 KiB", "limit of 1.0 KiB", "ZOO_HUB_MAX_WEIGHTS")
    assert gets(env, "model.safetensors") == []
    monkeypatch.setenv("ZOO_HUB_MAX_WEIGHTS", "lots")
    refused(env, lambda: hub.pull(REPO), "ZOO_HUB_MAX_WEIGHTS='lots' is not a size")
    monkeypatch.setenv("ZOO_HUB_MAX_WEIGHTS", "5000")
    assert hub.pull(REPO).revision == env.head(REPO)


def test_a_file_larger_than_the_free_disk_is_refused(env, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_download.shutil, "disk_usage", lambda path: usage(10**12, 10**12, 1000))
    assert shutil.disk_usage is _download.shutil.disk_usage
    refused(env, lambda: hub.pull(REPO), "config.json", "only 1000 bytes are free", "HF_HOME")


@pytest.mark.parametrize(
    "rule, needle",
    [
        ({"body": WEIGHTS + b"x" * 5000, "headers": {"Content-Length": None}}, "sent more than the 4096 bytes"),
        ({"body": WEIGHTS[:100], "headers": {"Content-Length": None}}, "sent 100 of the 4096 bytes"),
        ({"headers": {"Content-Length": "999999"}}, "is '999999' bytes long, but the Hub announced 4096"),
    ],
)
def test_a_get_that_sends_other_than_announced_is_refused(env, rule, needle):
    env.misbehave(REPO, "model.safetensors", method="GET", **rule)
    refused(env, lambda: hub.pull(REPO), "model.safetensors", needle)
    assert not [b for b in blobs(env) if b.endswith(".incomplete")]


# --- time -----------------------------------------------------------------------------------------


def test_a_slow_drip_is_cut_off(env, monkeypatch):
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "0.5")
    env.misbehave(REPO, "model.safetensors", method="GET", drip=(8, 0.02))  # 400 bytes/s: 10 s for 4 KiB
    started = time.monotonic()
    message = refused(env, lambda: hub.pull(REPO), "model.safetensors", "ZOO_HUB")
    assert time.monotonic() - started < 5
    assert "too slow" in message or "took too long" in message
    assert not [b for b in blobs(env) if b.endswith(".incomplete")]


def test_a_slow_drip_is_allowed_when_the_minimum_rate_allows_it(env, monkeypatch):
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "1")
    monkeypatch.setenv("ZOO_HUB_MIN_RATE", "100B")
    env.misbehave(REPO, "README.md", method="GET", drip=(2, 0.02))  # 9 bytes in ~0.1 s
    assert (hub.pull(REPO).folder / "README.md").read_bytes() == FILES["README.md"]


def test_headers_that_drip_forever_are_bounded_by_the_deadline():
    """A server that never finishes its headers: every read succeeds, the deadline still ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    started = time.monotonic()
    try:
        with pytest.raises(_http.DeadlineExceeded):
            _http.request("GET", url, headers={}, timeout=1.0, deadline=time.monotonic() + 1.0)
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


# --- redirects ------------------------------------------------------------------------------------


def test_a_redirect_to_another_host_is_refused_before_contacting_it(env):
    env.misbehave(REPO, "model.safetensors", redirect="cdn")
    cdn = env.cdn_endpoint.removeprefix("http://")
    refused(
        env, lambda: hub.pull(REPO), "model.safetensors", f"redirected the download to {cdn}", "ZOO_HUB_TRUSTED_HOSTS"
    )
    assert [r for r in env.request_log if r[0] == "cdn"] == []


def test_a_trusted_storage_host_gets_the_download_but_never_the_token(env, monkeypatch):
    env.misbehave(REPO, "model.safetensors", redirect="cdn")
    monkeypatch.setenv("ZOO_HUB_TRUSTED_HOSTS", "example.org, " + env.cdn_endpoint.removeprefix("http://"))
    pulled = hub.pull(REPO)
    assert (pulled.folder / "model.safetensors").read_bytes() == WEIGHTS
    cdn = [r for r in env.request_log if r[0] == "cdn"]
    assert [r[1] for r in cdn] == ["GET"] and not any("authorization" in {k.lower() for k in r[3]} for r in cdn)
    hub_requests = [r for r in env.request_log if r[0] == "hub"]
    assert all(r[3].get("Authorization") == "Bearer hf_secret" for r in hub_requests)


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x", "//"])
def test_a_redirect_off_http_is_refused(env, location):
    env.misbehave(REPO, "config.json", redirect=location)
    refused(env, lambda: hub.pull(REPO), "config.json", "redirected")


def test_endless_redirects_on_the_endpoint_are_cut(env):
    env.misbehave(REPO, "config.json", redirect=f"{env.endpoint}/{REPO}/resolve/main/config.json")
    refused(env, lambda: hub.pull(REPO), "config.json", "redirected more than 5 times")


# --- the cache itself -----------------------------------------------------------------------------


def test_a_cached_link_that_points_outside_is_removed_not_followed(env):
    pulled = hub.pull(REPO)
    secret = env.tmp / "sentinel" / "secret"
    secret.write_bytes(b"do not read")
    link = pulled.folder / "metrics.json"
    link.unlink()
    link.symlink_to(secret)
    with pytest.raises(HubError, match=r"metrics\.json: the cached .* resolves to .*outside the cache"):
        hub.pull(f"{REPO}@{pulled.revision}")
    assert not os.path.lexists(link) and secret.read_bytes() == b"do not read"
    assert hub.pull(f"{REPO}@{pulled.revision}").metrics == {"test_nll": 1.5}  # downloaded again


def test_a_cached_blob_changed_on_disk_is_evicted(env):
    pulled = hub.pull(REPO)
    blob = Path(os.path.realpath(pulled.folder / "model.safetensors"))
    blob.chmod(0o644)
    blob.write_bytes(b"evil" + WEIGHTS[4:])
    with pytest.raises(HubError, match=r"model\.safetensors: the cached copy has hash .* it was removed"):
        hub.pull(f"{REPO}@{pulled.revision}")
    assert not blob.exists()
    assert (hub.pull(f"{REPO}@{pulled.revision}").folder / "model.safetensors").read_bytes() == WEIGHTS


def test_offline_a_cached_copy_without_a_content_hash_is_refused_unless_allowed(env, monkeypatch):
    """What huggingface_hub leaves after an endpoint that gave no hash: a blob named by the ETag."""
    pulled = hub.pull(REPO)
    storage = cache_of(env) / "models--evil--model"
    odd = storage / "blobs" / "not-a-hash"
    odd.write_bytes(CONFIG)
    (pulled.folder / "config.json").unlink()
    (pulled.folder / "config.json").symlink_to("../../blobs/not-a-hash")
    env.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        HubError, match=r"config\.json: the cached copy .* is not stored under a content hash.*ZOO_ALLOW_UNVERIFIED=1"
    ):
        hub.pull(REPO)
    assert hub.pull(REPO, allow_unverified=True).unverified == ("config.json",)


def test_every_file_in_the_snapshot_is_verified_not_only_those_zoo_fetches(env):
    pulled = hub.pull(REPO)
    stray = pulled.folder / "extra.bin"
    stray.symlink_to("../../blobs/" + "0" * 40)
    (cache_of(env) / "models--evil--model" / "blobs" / ("0" * 40)).write_bytes(b"stray bytes")
    with pytest.raises(HubError, match=r"extra\.bin: the cached copy has hash"):
        hub.pull(f"{REPO}@{pulled.revision}")


def test_a_cache_folder_linked_outside_is_refused_before_writing_into_it(env):
    storage = cache_of(env) / "models--evil--model"
    storage.mkdir(parents=True)
    (storage / "blobs").symlink_to(env.tmp / "sentinel", target_is_directory=True)
    refused(env, lambda: hub.pull(REPO), "blobs: this folder of the cache resolves to", "outside")


def test_a_hub_error_answer_falls_back_to_the_cache(env):
    pulled = hub.pull(REPO)
    env.misbehave(REPO, status=503)
    assert hub.pull(REPO).folder == pulled.folder  # main's commit from refs/main, verified copies
    with pytest.raises(
        HubError,
        match=r"cannot reach the Hub at .* \(it answered HTTP 503\), and evil/other@main: config\.json is not in the local cache",
    ):
        env.create_repo("evil/other")
        env.misbehave("evil/other", status=503)
        hub.pull("evil/other")


def test_the_cache_is_huggingface_hub_s_layout(env):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    pulled = hub.pull(REPO)
    cache = cache_of(env)
    assert try_to_load_from_cache(REPO, "config.json", cache_dir=cache, revision=pulled.revision) == str(
        pulled.folder / "config.json"
    )
    assert try_to_load_from_cache(REPO, "model.safetensors", cache_dir=cache) == str(
        pulled.folder / "model.safetensors"
    )
    (repo,) = scan_cache_dir(cache).repos
    assert repo.repo_id == REPO and {f.file_name for r in repo.revisions for f in r.files} == set(FILES)
    assert os.readlink(pulled.folder / "README.md") == f"../../blobs/{git_blob_sha1(FILES['README.md'])}"


# --- 4. one HubError, exit 2, no traceback -----------------------------------------------------------


def test_the_cli_reports_a_refusal_in_one_line_and_exits_2(env, capsys):
    from zoo.cli import main

    env.misbehave(REPO, "model.safetensors", headers={"ETag": '"../../../../sentinel/pwned"'})
    assert main(["pull", REPO]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert (
        first.startswith(f"zoo: error: {REPO}@") and "model.safetensors" in first and "ZOO_ALLOW_UNVERIFIED=1" in first
    )
    assert "Traceback" not in err
    assert main(["pull", REPO, "--revision", "../../x"]) == 2
    assert "refusing revision '../../x'" in capsys.readouterr().err
    assert list((env.tmp / "sentinel").iterdir()) == []


def test_a_push_to_a_branch_name_that_could_escape_is_refused(env, tmp_path):
    with pytest.raises(HubError, match=r"refusing revision '\.\./x'"):
        hub.push(tmp_path, REPO, revision="../x")
    assert env.requests == []


def test_the_cli_refuses_an_unverifiable_file_and_accepts_it_with_the_flag(env, capsys):
    from zoo.cli import main

    env.misbehave(REPO, "config.json", headers={"ETag": '"not-a-hash"'})
    assert main(["pull", REPO]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "cannot be verified" in err and "Traceback" not in err
    assert main(["pull", REPO, "--allow-unverified"]) == 0
    assert "accepted without a content hash (--allow-unverified): config.json" in capsys.readouterr().err


@pytest.mark.parametrize("text", ['["a list"]', "[" * 100_000 + "]" * 100_000, "{broken"])
def test_a_pulled_metrics_json_that_is_not_a_small_mapping_is_a_hub_error(tmp_path, text):
    (tmp_path / "metrics.json").write_text(text)
    with pytest.raises(HubError, match="metrics.json"):
        hub._metrics(tmp_path, REPO, "0" * 40)
