"""A broken or hostile plugin is isolated: it is reported (BROKEN, with every reason), the other
plugins keep working, and a recipe that uses it ends in one PluginError naming the plugin, the
component and the place in the recipe; never a traceback or an exit of zoo itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

import zoo
from zoo.errors import PluginError
from zoo.plugins import bases, datasets_toy, gradient_modes, layers_basic, layers_glow, losses
from zoo.registry import build_registry, set_registry

BUILTINS = [("bases", bases), ("datasets_toy", datasets_toy), ("gradient_modes", gradient_modes),
            ("layers_basic", layers_basic), ("layers_glow", layers_glow), ("losses", losses)]


def registry_with(name: str, plugin: object):
    return build_registry([*BUILTINS, (name, plugin)], load_entry_points=False)


def info(registry, name):
    return next(p for p in registry.plugins if p.name == name)


def moons_recipe(layer: str = "reverse", dataset: str = "moons", **extra):
    return {"name": "t", "dataset": {"name": dataset, "n_train": 64, "n_val": 32, "n_test": 32},
            "model": {"layers": [{"name": "actnorm"}, {"name": layer}]}, **extra}


@pytest.fixture
def use_registry():
    def install(registry):
        set_registry(registry)
        return registry

    yield install
    set_registry(None)


# --- at registration -------------------------------------------------------------------------


def test_sys_exit_at_import_is_isolated(tmp_path):
    """A plugin that calls sys.exit while it is imported: `zoo plugins` and `zoo list` still work."""
    (tmp_path / "zoo_exits.py").write_text("import sys\nsys.exit(3)\n")
    dist = tmp_path / "zoo_exits-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo_exits\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[zoo]\nexits = zoo_exits\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for command in (["plugins"], ["list", "losses"]):
        done = subprocess.run([sys.executable, "-m", "zoo.cli", *command], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        if command == ["plugins"]:
            assert "exits 1.0 (zoo_exits): BROKEN: called sys.exit(3)" in done.stdout
        else:
            assert "nll" in done.stdout


def test_non_callable_factory_is_skipped_and_reported():
    class Plugin:
        @zoo.hookimpl
        def zoo_layers(self):
            return {"not_a_factory": 42, "fine": layers_basic.Reverse}

    registry = registry_with("odd", Plugin())
    assert "'not_a_factory' as a int, which is not callable" in info(registry, "odd").error
    assert not registry.has("layers", "not_a_factory") and registry.has("layers", "fine")


def test_pretrained_hook_returning_a_list_is_reported():
    class Plugin:
        @zoo.hookimpl
        def zoo_pretrained(self):
            return ["glow"]

    registry = registry_with("lister", Plugin())
    assert "zoo_pretrained() returned a list, not a mapping" in info(registry, "lister").error


def test_two_failing_hooks_of_one_plugin_are_both_shown():
    class Plugin:
        @zoo.hookimpl
        def zoo_layers(self):
            raise RuntimeError("layers are broken")

        @zoo.hookimpl
        def zoo_losses(self):
            raise SystemExit("losses quit")

    registry = registry_with("twice", Plugin())
    error = info(registry, "twice").error
    assert "zoo_layers() RuntimeError: layers are broken" in error
    assert "zoo_losses() called sys.exit('losses quit')" in error
    assert registry.has("layers", "actnorm")  # the others are untouched


def test_cli_plugins_shows_a_broken_plugin_and_exits_zero(use_registry, capsys):
    class Plugin:
        @zoo.hookimpl
        def zoo_datasets(self):
            raise ValueError("no data today")

    use_registry(registry_with("sad", Plugin()))
    from zoo.cli import main

    assert main(["plugins"]) == 0
    assert "sad: BROKEN: zoo_datasets() ValueError: no data today" in capsys.readouterr().out


# --- at validation and assembly ----------------------------------------------------------------


def test_invalid_params_schema_is_a_plugin_error_at_the_recipe_path(use_registry):
    def weird(shape):
        """A layer with a broken schema."""

    weird.params_schema = {"type": "object", "properties": {"x": {"type": "no-such-type"}}}

    class Plugin:
        @zoo.hookimpl
        def zoo_layers(self):
            return {"weird": weird}

    registry = use_registry(registry_with("schemer", Plugin()))
    assert registry.has("layers", "weird")  # kept, so the recipe's error can say what is wrong
    with pytest.raises(PluginError) as caught:
        zoo.load_recipe(moons_recipe(layer="weird"))
    message = str(caught.value)
    assert "$.model.layers[1].name" in message and "'weird'" in message and "'schemer'" in message
    assert "parameter schema is invalid" in message


@pytest.mark.parametrize(
    "returned, wanted",
    [("raise", "failed: RuntimeError: boom"), ("dict", "returned a dict, not a torch.nn.Module"),
     ("none", "returned a NoneType, not a torch.nn.Module")],
)
def test_layer_factory_that_misbehaves(use_registry, returned, wanted):
    def bad(shape):
        """A misbehaving layer."""
        if returned == "raise":
            raise RuntimeError("boom")
        return {"y": 1} if returned == "dict" else None

    class Plugin:
        @zoo.hookimpl
        def zoo_layers(self):
            return {"bad": bad}

    use_registry(registry_with("badlayer", Plugin()))
    recipe = zoo.load_recipe(moons_recipe(layer="bad"))
    with pytest.raises(PluginError) as caught:
        zoo.build_model(recipe, shape=(2,))
    message = str(caught.value)
    assert wanted in message
    assert "$.model.layers[1]" in message and "'bad'" in message and "'badlayer'" in message


def test_dataset_factory_returning_a_list(use_registry):
    class Plugin:
        @zoo.hookimpl
        def zoo_datasets(self):
            def listy(n_train: int = 1, n_val: int = 1, n_test: int = 1):
                """Returns a list."""
                return [torch.zeros(2)]

            return {"listy": listy}

    use_registry(registry_with("listy_plugin", Plugin()))
    from zoo.assemble import build_dataset

    with pytest.raises(PluginError, match=r"\$\.dataset: the dataset 'listy' of plugin 'listy_plugin' returned a list"):
        build_dataset(zoo.load_recipe(moons_recipe(dataset="listy")))


def test_base_factory_that_is_not_a_distribution(use_registry):
    class Plugin:
        @zoo.hookimpl
        def zoo_bases(self):
            def flat(shape):
                """Not a distribution."""
                return torch.nn.Identity()

            return {"flat": flat}

    use_registry(registry_with("flatbase", Plugin()))
    recipe = zoo.load_recipe({**moons_recipe(), "model": {"base": "flat", "layers": [{"name": "reverse"}]}})
    with pytest.raises(PluginError, match=r"\$\.model\.base: the base distribution 'flat' has no log_prob"):
        zoo.build_model(recipe, shape=(2,))


def test_cli_reports_a_plugin_error_in_one_line_with_exit_2(use_registry, tmp_path, capsys):
    def bad(shape):
        """Raises."""
        raise KeyError("internal")

    class Plugin:
        @zoo.hookimpl
        def zoo_layers(self):
            return {"bad": bad}

    use_registry(registry_with("badlayer", Plugin()))
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        dataset: {name: moons, n_train: 64, n_val: 32, n_test: 32}
        model: {layers: [{name: bad}]}
    """))
    from zoo.cli import main

    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "zoo: error:" in err and "plugin 'badlayer' failed: KeyError" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before a run folder was made
