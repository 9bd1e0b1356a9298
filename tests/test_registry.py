"""Plugin discovery: built-ins and third-party packages through one entry-point path."""

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zoo
from zoo.errors import PluginError, UnknownComponentError
from zoo.registry import KINDS, build_registry, get_registry, params_schema_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "zoo-example-plugin"
# The built-in plugins are the public modules of zoo/plugins/ (private helpers start with "_"):
# derived from the files, so a new plugin module without an entry point fails the test below.
BUILTIN = sorted(p.stem for p in (ROOT / "zoo" / "plugins").glob("*.py") if not p.stem.startswith("_"))


def make_dist(root: Path, module: str, source: str, version: str = "1.0", group_name: str | None = None):
    """A module plus a dist-info declaring it as a `zoo` entry point, importable from `root`."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist = root / f"{module}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[zoo]\n{group_name or module} = {module}\n")


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return tmp_path


def test_the_entry_points_are_exactly_the_builtin_plugin_modules():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["zoo"]
    assert sorted(declared) == BUILTIN
    assert all(declared[name] == f"zoo.plugins.{name}" for name in BUILTIN)


def test_builtin_plugins_load_through_entry_points():
    registry = build_registry()
    loaded = {p.name: p for p in registry.plugins}
    for name in BUILTIN:
        assert name in loaded, f"built-in plugin {name} not discovered"
        assert not loaded[name].error, f"{name}: {loaded[name].error}"
        assert loaded[name].distribution == "zoo-flows"
        assert loaded[name].version == zoo.__version__


def test_every_kind_has_builtin_components():
    registry = get_registry()
    for kind in ("layers", "datasets", "losses", "gradient_modes"):
        assert registry.names(kind), f"no {kind} registered"
    assert {"exact", "self_normalized", "reconstruction_augmented"} <= set(registry.names("gradient_modes"))


def test_unknown_component_suggests_close_names():
    with pytest.raises(UnknownComponentError, match=r"unknown loss 'nlll'.*Did you mean 'nll'"):
        get_registry().get("losses", "nlll")


def test_duplicate_name_is_an_error_naming_both_plugins():
    class First:
        @zoo.hookimpl
        def zoo_losses(self):
            return {"twice": lambda: None}

    class Second:
        @zoo.hookimpl
        def zoo_losses(self):
            return {"twice": lambda: None}

    registry = build_registry([("first", First()), ("second", Second())], load_entry_points=False)
    # Both plugins still load (zoo plugins shows the clash on the second) ...
    second = next(p for p in registry.plugins if p.name == "second")
    assert "'twice'" in second.error and "'first'" in second.error
    # ... and naming the component is a PluginError that names both.
    with pytest.raises(PluginError, match=r"'twice'.*'first'.*'second'"):
        registry.get("losses", "twice").check_usable()


def test_broken_plugin_is_reported_and_the_rest_load(on_path):
    make_dist(on_path, "zoo_broken_plugin", "raise ImportError('needs a missing library')\n")
    make_dist(
        on_path,
        "zoo_fine_plugin",
        """
        import zoo
        @zoo.hookimpl
        def zoo_losses():
            def half_nll():
                '''Half the negative log-likelihood.'''
                return lambda model, x: -0.5 * model.log_prob(x)
            return {"half_nll": half_nll}
        """,
        version="3.1",
    )
    registry = build_registry()
    plugins = {p.name: p for p in registry.plugins}
    assert "needs a missing library" in plugins["zoo_broken_plugin"].error
    assert plugins["zoo_fine_plugin"].version == "3.1"
    assert registry.get("losses", "half_nll").plugin == "zoo_fine_plugin"
    assert registry.has("layers", "actnorm")  # the built-ins still load


def test_disable_plugins_by_name(on_path, monkeypatch):
    make_dist(on_path, "zoo_unwanted", "import zoo\n@zoo.hookimpl\ndef zoo_losses():\n    return {'u': lambda: None}\n")
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "zoo_unwanted, layers_emerging")
    registry = build_registry()
    plugins = {p.name: p for p in registry.plugins}
    assert plugins["zoo_unwanted"].blocked and plugins["layers_emerging"].blocked
    assert not registry.has("losses", "u")
    assert not registry.has("layers", "emerging_conv")


def test_params_schema_from_signature():
    from typing import Literal

    def layer(shape, hidden: int, scale: float = 1.0, kind: Literal["a", "b"] = "a", flag: bool = False):
        """A layer."""

    schema = params_schema_of(layer, "layers")
    assert schema["required"] == ["hidden"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["hidden"] == {"type": "integer"}
    assert schema["properties"]["scale"] == {"type": "number", "default": 1.0}
    assert schema["properties"]["kind"] == {"enum": ["a", "b"], "default": "a"}
    assert schema["properties"]["flag"] == {"type": "boolean", "default": False}


def test_every_component_has_summary_and_valid_schema():
    from jsonschema import Draft202012Validator

    registry = get_registry()
    for kind in KINDS:
        if KINDS[kind].entry != "factory":
            continue
        for c in registry.components(kind):
            assert c.summary, f"{kind} {c.name} has no one-line description"
            Draft202012Validator.check_schema(c.params_schema)


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """The example plugin installed for real with pip into a private target folder."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "zoo-example-plugin"
    shutil.copytree(EXAMPLE, source)  # the build leaves files beside the sources: not in the repo
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    return target


def _zoo(target: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "zoo.cli", *args], env=env, capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.slow
def test_installed_third_party_plugin_is_discovered(installed_example):
    shown = _zoo(installed_example, "plugins")
    assert shown.returncode == 0, shown.stderr
    assert "example 0.2.0 (zoo-example-plugin)" in shown.stdout
    assert "sinh_arcsinh" in shown.stdout and "ring" in shown.stdout
    listed = _zoo(installed_example, "list", "layers", "sinh*")
    assert "sinh_arcsinh" in listed.stdout and "[example]" in listed.stdout
    assert "actnorm" not in listed.stdout


def test_installed_plugin_ships_a_recipe_that_runs_by_name(installed_example, tmp_path):
    listed = _zoo(installed_example, "list", "recipes", "ring*")
    assert listed.returncode == 0, listed.stderr
    assert "ring_sinh" in listed.stdout and "[example]" in listed.stdout
    ran = _zoo(installed_example, "run", "ring_sinh", "train.epochs=1", "dataset.n_train=200",
               "--out", str(tmp_path / "run"), "--no-progress")
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_installed_plugin_layer_passes_the_contract(installed_example, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_example))
    importlib.invalidate_caches()
    from zoo.testing import check_layer, layer_examples

    registry = build_registry()
    component = registry.get("layers", "sinh_arcsinh")
    assert component.plugin == "example"
    for example in layer_examples(component.factory):
        check_layer(component.factory, example["shape"], example["params"])
