"""zoo.hub against the local Hub stand-in (tests/fakehub.py): push, pull, from_pretrained, offline
use, integrity checks, error messages, the model card and the pretrained catalogue. No network."""

from __future__ import annotations

import hashlib
import json
import shutil
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")  # before huggingface_hub is imported

import pytest
import torch
import yaml

from fakehub import FakeHub

import zoo
from zoo import hub
from zoo.hub._card import read_front_matter
from zoo.errors import HubError, PluginError, WeightsError
from zoo.hookspecs import hookimpl
from zoo.plugins.pretrained import catalogue
from zoo.recipe import load_recipe
from zoo.registry import build_registry, set_registry
from zoo.weights import read_metadata, save_weights

MOONS_RECIPE = {
    "name": "tiny_moons",
    "description": "two affine couplings on moons, for hub tests",
    "dataset": {"name": "moons", "n_train": 64, "n_val": 32, "n_test": 32, "batch_size": 32},
    "model": {
        "base": "standard_normal",
        "layers": [
            {"name": "actnorm"},
            {"name": "affine_coupling", "hidden": 8},
            {"name": "reverse"},
            {"name": "affine_coupling", "hidden": 8},
        ],
    },
    "loss": "nll",
    "gradient_mode": "exact",
    "train": {"epochs": 1, "lr": 1.0e-3},
}


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def fakehub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def hub_env(fakehub, tmp_path, monkeypatch):
    """A fresh Hugging Face cache, a fake token and zoo pointed at the fake hub."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setenv("ZOO_HUB_ENDPOINT", fakehub.endpoint)
    monkeypatch.setenv("ZOO_HUB_TIMEOUT", "3")
    return fakehub


def _new_cache(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HF_HOME", str(tmp_path / name))


def variant_of(run: Path, folder: Path, seed: int) -> Path:
    """A copy of a run folder whose weights are perturbed: another model of the same recipe."""
    shutil.copytree(run, folder)
    _, model = hub.load_model_folder(folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    digest = save_weights(model, folder / "model.safetensors", read_metadata(folder / "model.safetensors"))
    info = json.loads((folder / "run.json").read_text())
    info["weights_sha256"] = digest  # as a training run records its saves
    (folder / "run.json").write_text(json.dumps(info))
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real `zoo run` of the tiny recipe (one epoch of two batches), made once per session."""
    folder = tmp_path_factory.mktemp("runs") / "tiny_moons"
    zoo.run(MOONS_RECIPE, out=folder, progress=False, log=lambda *args: None)
    return folder


@pytest.fixture
def run_dir(trained_run, tmp_path):
    return Path(shutil.copytree(trained_run, tmp_path / "runs" / "tiny_moons"))


@pytest.fixture
def points():
    return torch.randn(16, 2, generator=torch.Generator().manual_seed(1))


class _CataloguePlugin:
    entries: dict = {}

    @hookimpl
    def zoo_pretrained(self):
        return self.entries


@pytest.fixture
def with_catalogue():
    """Install extra catalogue entries (on top of every installed plugin) for one test."""

    def install(entries):
        plugin = _CataloguePlugin()
        plugin.entries = entries
        set_registry(build_registry(extra_plugins=[("test_catalogue", plugin)]))

    yield install
    set_registry(None)


# --- push / pull / from_pretrained ---------------------------------------------------------------


def test_push_then_pull_into_empty_cache_gives_identical_log_prob(hub_env, run_dir, points, tmp_path, monkeypatch):
    url = hub.push(run_dir, "zoo-test/tiny-moons")
    head = hub_env.head("zoo-test/tiny-moons")
    assert url.endswith(head)
    commit = hub_env.repos["zoo-test/tiny-moons"].commits[head]
    assert set(commit.files) == {"config.json", "model.safetensors", "recipe.yaml", "metrics.json", "sample.png", "README.md"}
    assert commit.parent is not None and not hub_env.repos["zoo-test/tiny-moons"].commits[commit.parent].files  # ONE commit

    config = json.loads(hub_env.file_bytes("zoo-test/tiny-moons", "config.json"))
    assert config["schema_version"] == 1 and config["zoo_version"] == zoo.__version__
    assert config["input_shape"] == [2] and config["recipe"]["name"] == "tiny_moons"
    assert {"layers_glow", "layers_basic"} <= set(config["plugins"])
    assert all({"distribution", "version"} <= set(v) for v in config["plugins"].values())

    _new_cache(monkeypatch, tmp_path, "empty_cache")
    pulled = hub.pull("zoo-test/tiny-moons")
    assert pulled.repo_id == "zoo-test/tiny-moons" and pulled.revision == head
    assert pulled.folder == tmp_path / "empty_cache" / "hub" / "models--zoo-test--tiny-moons" / "snapshots" / head
    assert pulled.metrics == json.loads((run_dir / "metrics.json").read_text())
    assert pulled.recipe["name"] == "tiny_moons"
    assert (pulled.folder / "sample.png").is_file() and (pulled.folder / "README.md").is_file()

    model = zoo.from_pretrained("zoo-test/tiny-moons")
    _, local = hub.load_model_folder(run_dir)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model.log_prob(points), local.log_prob(points))
    assert config["recipe_sha256"] == load_recipe(run_dir / "recipe.yaml").sha256 == pulled.metrics["recipe_sha256"]


def test_from_pretrained_accepts_a_local_run_folder(run_dir, points):
    model = zoo.from_pretrained(str(run_dir))
    recipe, again = hub.load_pretrained(run_dir)
    assert recipe["name"] == "tiny_moons" and not model.training
    with torch.no_grad():
        assert torch.equal(model.log_prob(points), again.log_prob(points))


def test_push_to_a_new_branch_leaves_main_alone(hub_env, run_dir, tmp_path, points):
    hub.push(run_dir, "zoo-test/branchy")
    other = variant_of(run_dir, tmp_path / "runs" / "other", seed=5)
    hub.push(other, "zoo-test/branchy", revision="v2")
    main, v2 = hub_env.head("zoo-test/branchy"), hub_env.head("zoo-test/branchy", "v2")
    assert main != v2
    assert hub.pull("zoo-test/branchy").revision == main
    assert hub.pull("zoo-test/branchy@v2").revision == v2
    with torch.no_grad():
        expected = hub.load_model_folder(other)[1].log_prob(points)
        assert torch.equal(zoo.from_pretrained("zoo-test/branchy", revision="v2").log_prob(points), expected)


def test_offline_pull_uses_the_cache_and_names_what_is_missing(hub_env, run_dir, points, monkeypatch):
    hub.push(run_dir, "zoo-test/offline")
    online = hub.pull("zoo-test/offline")
    hub_env.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = hub.pull("zoo-test/offline")
    assert offline.folder == online.folder and offline.revision == online.revision
    with torch.no_grad():
        assert torch.equal(
            zoo.from_pretrained("zoo-test/offline").log_prob(points), hub.load_model_folder(run_dir)[1].log_prob(points)
        )
    with pytest.raises(HubError, match=r"zoo-test/never-pulled@main: config.json: not in the local cache .*HF_HUB_OFFLINE"):
        hub.pull("zoo-test/never-pulled")


def test_server_down_is_a_prompt_clear_error(hub_env):
    hub_env.stop()
    started = time.monotonic()
    with pytest.raises(HubError, match=r"cannot reach the Hub at http://127\.0\.0\.1:\d+ .*not in the local cache"):
        hub.pull("zoo-test/anything")
    assert time.monotonic() - started < 15


def test_server_down_on_push_is_a_clear_error(hub_env, run_dir):
    hub_env.stop()
    with pytest.raises(HubError, match="cannot reach the Hub"):
        hub.push(run_dir, "zoo-test/down")


# --- integrity ------------------------------------------------------------------------------------


def _published(hub_env, run_dir, repo="zoo-test/pinned"):
    hub.push(run_dir, repo)
    sha = hashlib.sha256((run_dir / "model.safetensors").read_bytes()).hexdigest()
    return {"tiny-moons": {"repo_id": repo, "revision": hub_env.head(repo), "sha256": sha, "published": True}}


def test_catalogue_name_pulls_the_pinned_commit(hub_env, run_dir, with_catalogue, points):
    with_catalogue(_published(hub_env, run_dir))
    pinned = hub_env.head("zoo-test/pinned")
    hub.push(variant_of(run_dir, run_dir.parent / "later", seed=9), "zoo-test/pinned")  # main moves on
    pulled = hub.pull("tiny-moons")
    assert pulled.revision == pinned
    with torch.no_grad():
        assert torch.equal(zoo.from_pretrained("tiny-moons").log_prob(points), hub.load_model_folder(run_dir)[1].log_prob(points))
    assert any(r["name"] == "tiny-moons" and r["published"] for r in hub.list_models())


def test_tampered_blob_fails_the_sha256_pin_and_nothing_is_loaded(hub_env, run_dir, with_catalogue, monkeypatch):
    entries = _published(hub_env, run_dir)
    with_catalogue(entries)
    hub_env.tamper("zoo-test/pinned", "model.safetensors")
    loaded = []
    monkeypatch.setattr("zoo.weights.load_weights", lambda *a, **k: loaded.append(a))
    pin = entries["tiny-moons"]["sha256"]
    with pytest.raises(HubError) as info:  # a download failure: one HubError, whatever the file
        zoo.from_pretrained("tiny-moons")
    message = str(info.value)
    assert "model.safetensors" in message and pin in message and "nothing was loaded" in message
    actual = hashlib.sha256(hub_env.file_bytes("zoo-test/pinned", "model.safetensors")).hexdigest()
    assert actual in message and actual != pin
    assert loaded == []
    snapshot = Path(os.environ["HF_HOME"]) / "hub" / "models--zoo-test--pinned" / "snapshots"
    assert not list(snapshot.glob("*/model.safetensors"))  # evicted: the next pull downloads again


def test_tampered_blob_without_a_pin_fails_the_content_address_check(hub_env, run_dir):
    hub.push(run_dir, "zoo-test/unpinned")
    hub_env.tamper("zoo-test/unpinned", "model.safetensors")
    with pytest.raises(HubError, match=r"unpinned@[0-9a-f]{40}: model\.safetensors: the downloaded bytes have git blob sha1 [0-9a-f]{40}, but the Hub announced"):
        hub.pull("zoo-test/unpinned")
    snapshots = Path(os.environ["HF_HOME"]) / "hub" / "models--zoo-test--unpinned" / "snapshots"
    assert not list(snapshots.glob("*/model.safetensors"))  # never placed in the cache


def test_weights_whose_shapes_differ_from_the_recipe_are_refused(run_dir):
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe["model"]["layers"][1]["hidden"] = 16
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(WeightsError, match="the recipe was edited after training"):
        hub.load_model_folder(run_dir)
    # Had the run recorded this recipe, the weights themselves would refuse the other shapes.
    info = json.loads((run_dir / "run.json").read_text())
    info["recipe_sha256"] = zoo.load_recipe(run_dir / "recipe.yaml").sha256
    (run_dir / "run.json").write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="trained from recipe"):
        hub.load_model_folder(run_dir)
    from zoo.weights import load_weights

    other = zoo.build_model(zoo.load_recipe(run_dir / "recipe.yaml"))
    with pytest.raises(WeightsError, match=r"shapes differ for layers\.1\.\S+: file \(8, ?\d*.*\) vs model \(16"):
        load_weights(other, run_dir / "model.safetensors")


def test_push_refuses_weights_from_another_recipe(hub_env, run_dir):
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe["description"] = "edited after training"
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(WeightsError, match="the recipe was edited after training"):
        hub.push(run_dir, "zoo-test/edited")
    assert "zoo-test/edited" not in hub_env.repos


# --- errors that say how to fix them -------------------------------------------------------------


def test_missing_token(hub_env, run_dir, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubError, match=r"run `hf auth login` or set HF_TOKEN"):
        hub.push(run_dir, "zoo-test/no-token")


def test_token_the_hub_refuses(run_dir, tmp_path, monkeypatch):
    with FakeHub(token="hf_right") as server:
        monkeypatch.setenv("ZOO_HUB_ENDPOINT", server.endpoint)
        with pytest.raises(HubError, match=r"refused the request \(401\).*hf auth login"):
            hub.push(run_dir, "zoo-test/denied", token="hf_wrong")


def test_unknown_name_repo_revision_and_file(hub_env, run_dir, with_catalogue):
    with_catalogue({"tiny-moons": {"repo_id": "zoo-test/x", "revision": "0" * 40, "published": True}})
    with pytest.raises(HubError, match=r"'tiny-mons' is not a known model name\. Did you mean 'tiny-moons'\?.*ORG/NAME"):
        hub.pull("tiny-mons")
    with pytest.raises(HubError, match=r"zoo-test/nope: no such model repo on http://127\.0\.0\.1:\d+ .*hf auth login"):
        hub.pull("zoo-test/nope")
    hub.push(run_dir, "zoo-test/exists")
    with pytest.raises(HubError, match=r"zoo-test/exists: no revision 'v9'"):
        hub.pull("zoo-test/exists@v9")
    hub_env.create_repo("zoo-test/empty")
    with pytest.raises(HubError, match=r"zoo-test/empty@main: config\.json: the repo has no such file.*zoo push"):
        hub.pull("zoo-test/empty")
    with pytest.raises(HubError, match=r"no run folder at './missing/run'"):
        hub.resolve_source("./missing/run")


def test_unpublished_catalogue_entry_says_how_to_publish():
    with pytest.raises(HubError) as info:
        zoo.from_pretrained("glow-celeba-3x32")
    message = str(info.value)
    assert "not published yet" in message
    assert "zoo run recipes/glow_celeba_3x32.yaml" in message
    assert "zoo push runs/<run folder> --repo-id zoo-flows/glow-celeba-3x32" in message


def test_missing_plugins_are_named_with_the_package_to_install(run_dir):
    config = {"plugins": {"layers_glow": {"distribution": "zoo-flows", "version": zoo.__version__},
                          "fancy_layers": {"distribution": "zoo-fancy", "version": "1.2"}}}
    with pytest.raises(PluginError, match=r"plugin 'fancy_layers' from package 'zoo-fancy' is not installed.*pip install zoo-fancy"):
        hub.check_plugins(config, "org/fancy")
    hub.check_plugins({"plugins": {"layers_glow": {}}}, "org/plain")  # installed: no error


def test_push_reports_a_model_card_the_hub_refuses_and_a_commit_as_branch(hub_env, run_dir, monkeypatch):
    import zoo.hub._card as card

    with pytest.raises(HubError, match="a push goes to a branch"):
        hub.push(run_dir, "zoo-test/card", revision="a" * 40)
    monkeypatch.setattr(card, "front_matter", lambda *a: {"tags": {"not": "a list"}})
    with pytest.raises(HubError, match=r"zoo-test/card: the Hub refused the model card.*tags"):
        hub.push(run_dir, "zoo-test/card")


# --- the model card -------------------------------------------------------------------------------


def test_model_card_front_matter_has_the_required_keys(hub_env, run_dir):
    hub.push(run_dir, "zoo-test/card")
    text = hub_env.file_bytes("zoo-test/card", "README.md").decode()
    meta = read_front_matter(text)
    assert meta["library_name"] == "zoo" and meta["license"] == "mit"
    assert {"normalizing-flows", "zoo"} <= set(meta["tags"]) and meta["datasets"] == ["moons"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    test_nll = json.loads((run_dir / "metrics.json").read_text())["test_nll"]
    assert {"type": "nll", "value": round(test_nll, 6), "name": "Test NLL (nats)"} in metrics
    assert not any(m["type"] == "bits_per_dim" for m in metrics)  # 2-D data: no bits/dim
    assert "zoo pull zoo-test/card" in text and 'zoo.from_pretrained("zoo-test/card")' in text
    assert "zoo sample zoo-test/card" in text and "![samples](sample.png)" in text


# --- the catalogue plugin -------------------------------------------------------------------------


def test_catalogue_reads_hub_blocks_of_recipes(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "named.yaml").write_text(
        "name: a\ndescription: model A\nhub: {name: model-a, repo_id: org/a, revision: "
        + "a" * 40 + ", sha256: " + "b" * 64 + "}\n"
    )
    (recipes / "unnamed.yaml").write_text("name: b\nhub: {repo_id: org/b, published: false}\n")
    (recipes / "plain.yaml").write_text("name: c\n")
    (recipes / "bad.yaml").write_text("name: d\nhub: {repo_id: nope, published: true}\n")
    (recipes / "broken.yaml").write_text("name: [unclosed\n")
    found = catalogue(recipes)
    assert set(found) == {"model-a", "b", "d"}
    assert found["model-a"] == {
        "repo_id": "org/a", "revision": "a" * 40, "sha256": "b" * 64,
        "recipe": "recipes/named.yaml", "summary": "model A", "published": True,
    }
    assert found["b"]["published"] is False and "error" not in found["b"]
    assert "hub.repo_id` must be ORG/NAME" in found["d"]["error"]


def test_shipped_catalogue_lists_the_glow_celeba_models():
    found = catalogue()
    assert found["glow-celeba-3x32"]["repo_id"] == "zoo-flows/glow-celeba-3x32"
    assert found["glow-celeba-3x32"]["recipe"] == "recipes/glow_celeba_3x32.yaml"
    assert found["glow-celeba-3x32"]["published"] is False
    rows = {r["name"]: r for r in hub.list_models()}
    assert rows["glow-celeba-3x24"]["published"] is False and rows["glow-celeba-3x24"]["summary"]


def test_cli_round_trip_push_pull_sample_eval(hub_env, run_dir, tmp_path, monkeypatch, capsys):
    """The user's path: `zoo push`, `zoo pull` into an empty cache, then `zoo sample` and
    `zoo eval` by repo id, all through the command line against the local Hub."""
    from zoo.cli import main

    assert main(["push", str(run_dir), "--repo-id", "someone/tiny-moons"]) == 0
    assert "someone/tiny-moons" in capsys.readouterr().out
    _new_cache(monkeypatch, tmp_path, "cli_cache")
    assert main(["pull", "someone/tiny-moons"]) == 0
    pulled = capsys.readouterr().out
    assert "files in" in pulled and "test_nll" in pulled
    out_png = tmp_path / "density.png"
    assert main(["sample", "someone/tiny-moons", "--out", str(out_png)]) == 0
    assert out_png.is_file()
    assert main(["eval", "someone/tiny-moons"]) == 0
    assert "test NLL" in capsys.readouterr().out
    assert main(["pull", "someone/no-such-repo"]) == 2
    assert "no-such-repo" in capsys.readouterr().err
