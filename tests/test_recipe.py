"""Recipes: safe YAML with marks, `extends:`, overrides, two-stage validation, normal form.

A small registry of fake components (below) keeps these tests independent of the built-in plugins.
"""

import json
from pathlib import Path
from typing import Literal

import pytest
import yaml
from jsonschema import Draft202012Validator

from zoo.errors import RecipeError
from zoo.hookspecs import hookimpl
from zoo.recipe import (
    Recipe,
    composed_schema,
    iter_layer_entries,
    load_recipe,
    normalize_component,
    validate_recipe,
)
from zoo.registry import build_registry

HERE = Path(__file__).parent / "recipes"


# --- a registry of fake components ----------------------------------------------------------------


def coupling(shape, hidden: int = 32, scale_fn: Literal["tanh", "sigmoid"] = "tanh"):
    """Fake coupling layer."""


def flip(shape):
    """Fake flip layer."""


def shift(shape, offset: float):
    """Fake shift layer with a required parameter."""


def blobs(n_train: int = 100, noise: float = 0.1):
    """Fake dataset."""


def nll():
    """Fake loss."""


def weighted_nll(weight: float = 1.0):
    """Fake weighted loss."""


def exact():
    """Fake exact gradient."""


def self_normalized(recon_loss_weight: float = 1.0):
    """Fake self-normalized gradient."""


class FakePlugin:
    @staticmethod
    @hookimpl
    def zoo_layers():
        return {"coupling": coupling, "flip": flip, "shift": shift}

    @staticmethod
    @hookimpl
    def zoo_datasets():
        return {"blobs": blobs}

    @staticmethod
    @hookimpl
    def zoo_losses():
        return {"nll": nll, "weighted_nll": weighted_nll}

    @staticmethod
    @hookimpl
    def zoo_gradient_modes():
        return {"exact": exact, "self_normalized": self_normalized}


@pytest.fixture(scope="module")
def reg():
    from zoo.plugins import bases

    return build_registry(
        extra_plugins=[("testplugin", FakePlugin), ("bases", bases)], load_entry_points=False
    )


@pytest.fixture
def load(reg):
    def _load(source, *overrides, **kwargs):
        return load_recipe(source, overrides, registry=reg, **kwargs)

    return _load


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def errors_of(excinfo):
    """The error lines of a RecipeError (after its header line)."""
    return str(excinfo.value).splitlines()[1:]


MINIMAL = """\
name: tiny
dataset: blobs
model:
  layers:
    - {name: coupling, hidden: 8}
    - {name: flip}
"""


# --- reading and the normal form -----------------------------------------------------------------


def test_minimal_recipe_gets_its_normal_form(load, tmp_path):
    recipe = load(write(tmp_path, MINIMAL))
    assert isinstance(recipe, Recipe) and recipe.path == tmp_path / "r.yaml"
    assert recipe["dataset"] == {"name": "blobs", "batch_size": 100}
    assert recipe["loss"] == {"name": "nll"} and recipe["gradient_mode"] == {"name": "exact"}
    assert recipe["model"] == {
        "base": "standard_normal",
        "layers": [{"name": "coupling", "hidden": 8}, {"name": "flip"}],
    }
    train = recipe["train"]
    assert train["epochs"] == 10 and train["lr"] == 1e-3 and train["betas"] == [0.9, 0.999]
    assert train["max_steps_per_epoch"] is None and train["on_nonfinite"] == "stop"
    assert train["log_timing"] is True and train["allow_large"] is False and len(train) == 20
    assert train["threads"] == "auto" and "log" not in train  # a later key at its default: left out
    assert list(recipe)[:2] == ["name", "dataset"]


def test_mapping_source_and_validate_recipe(load, reg):
    data = yaml.safe_load(MINIMAL)
    assert validate_recipe(data, registry=reg) == []
    recipe = load(data)
    assert recipe.path is None and recipe["name"] == "tiny"
    data["model"]["layers"][1]["name"] = "flp"
    (line,) = validate_recipe(data, registry=reg)
    assert line.startswith("<recipe>  $.model.layers[1].name: unknown layer 'flp'. Did you mean 'flip'?")


def test_resolved_recipe_loads_to_itself(load, tmp_path):
    recipe = load(HERE / "grandchild.yaml")
    again = load(write(tmp_path, recipe.to_yaml(), "resolved.yaml"))
    assert again == recipe and again.sha256 == recipe.sha256
    assert yaml.safe_load(recipe.to_yaml()) == dict(recipe)
    assert "- {name: coupling, hidden: 16}" in recipe.to_yaml()  # layer entries on one line


def test_sha256_ignores_key_order_formatting_and_int_vs_float(load, tmp_path):
    block = load(write(tmp_path, MINIMAL + "train:\n  lr: 1\n  epochs: 2\n", "a.yaml"))
    flow = load(write(tmp_path, (
        "# the same recipe, written differently\n"
        "train: {epochs: 2, lr: 1.0}\n"
        "model: {layers: [{hidden: 8, name: coupling}, {name: flip}]}\n"
        "dataset: {name: blobs}\nname: tiny\nloss: nll\n"
    ), "b.yaml"))
    assert block.sha256 == flow.sha256
    assert json.loads(json.dumps(block)) == flow
    changed = load(write(tmp_path, MINIMAL + "train: {lr: 1, epochs: 3}\n", "c.yaml"))
    assert changed.sha256 != block.sha256
    assert len(block.sha256) == 64 and int(block.sha256, 16) >= 0


def test_preamble_goes_in_front_of_the_layers(load):
    recipe = load(HERE / "child.yaml")
    names = [name for _, name, _ in iter_layer_entries(recipe["model"]["layers"])]
    assert names == ["shift", "coupling", "coupling", "flip", "coupling", "flip"]
    assert "preamble" not in recipe["model"]


def test_anchors_aliases_and_merge_keys(load, tmp_path):
    recipe = load(write(tmp_path, (
        "name: anchors\ndataset: blobs\n"
        "model:\n  layers:\n"
        "    - repeat: 2\n      layers: &step\n        - &c {name: coupling, hidden: 4}\n"
        "    - repeat: 3\n      layers: *step\n"
        "    - {<<: *c, hidden: 5}\n"          # a merge key then the same key: not a duplicate
        "paper: 2021-05-01\n"                  # dates stay strings
    )))
    assert recipe["model"]["layers"][2] == {"name": "coupling", "hidden": 5}
    # an override of one place an alias is used leaves the other places alone
    changed = load(tmp_path / "r.yaml", "model.layers.0.layers.0.hidden=9")
    assert changed["model"]["layers"][0]["layers"][0]["hidden"] == 9
    assert changed["model"]["layers"][1]["layers"][0]["hidden"] == 4
    assert recipe["paper"] == "2021-05-01"


# --- repeat blocks -------------------------------------------------------------------------------


def test_iter_layer_entries_expands_nested_repeats_with_recipe_paths():
    layers = [
        {"name": "flip"},
        {"repeat": 2, "layers": [{"name": "coupling", "hidden": 4}, {"repeat": 2, "layers": ["flip"]}]},
    ]
    got = list(iter_layer_entries(layers))
    assert got == [
        ("$.model.layers[0]", "flip", {}),
        ("$.model.layers[1].layers[0]", "coupling", {"hidden": 4}),
        ("$.model.layers[1].layers[1].layers[0]", "flip", {}),
        ("$.model.layers[1].layers[1].layers[0]", "flip", {}),
        ("$.model.layers[1].layers[0]", "coupling", {"hidden": 4}),
        ("$.model.layers[1].layers[1].layers[0]", "flip", {}),
        ("$.model.layers[1].layers[1].layers[0]", "flip", {}),
    ]


def test_normalize_component():
    assert normalize_component("moons") == ("moons", {})
    assert normalize_component({"name": "moons", "n_train": 5}) == ("moons", {"n_train": 5})
    with pytest.raises(RecipeError, match="mapping with a `name`"):
        normalize_component({"n_train": 5})


# --- extends -------------------------------------------------------------------------------------


def test_extends_chain_deep_merges_mappings_and_replaces_lists(load):
    recipe = load(HERE / "grandchild.yaml")
    assert recipe["name"] == "grandchild"
    assert recipe["dataset"] == {"name": "blobs", "n_train": 500, "batch_size": 64, "noise": 0.2}
    assert recipe["train"]["epochs"] == 3 and recipe["train"]["lr"] == 0.01 and recipe["train"]["seed"] == 7
    layers = recipe["model"]["layers"]
    assert layers[0] == {"name": "shift", "offset": 0.5}  # the base's preamble, kept
    assert layers[1] == {"name": "coupling", "hidden": 16}  # child's list replaced the base's
    assert len(layers) == 3 and "extends" not in recipe


def test_extends_list_later_files_win(load, tmp_path):
    write(tmp_path, "train: {epochs: 4, seed: 1}\nloss: weighted_nll\n", "one.yaml")
    write(tmp_path, "train: {epochs: 6}\n", "two.yaml")
    recipe = load(write(tmp_path, "extends: [one.yaml, two.yaml]\n" + MINIMAL))
    assert recipe["train"]["epochs"] == 6 and recipe["train"]["seed"] == 1
    assert recipe["loss"] == {"name": "weighted_nll"}


def test_errors_point_into_the_file_a_value_came_from(load, tmp_path):
    write(tmp_path, "name: base\ntrain:\n  epochs: -1\n", "base.yaml")
    with pytest.raises(RecipeError) as excinfo:
        load(write(tmp_path, "extends: base.yaml\n" + MINIMAL.replace("name: tiny\n", "")))
    assert errors_of(excinfo) == [f"{tmp_path / 'base.yaml'}:3:11  $.train.epochs: -1 is less than the minimum of 1"]


def test_extends_cycle_is_named(load):
    with pytest.raises(RecipeError, match=r"extends cycle: .*cycle_a.yaml -> .*cycle_b.yaml -> .*cycle_a.yaml"):
        load(HERE / "cycle_a.yaml")


def test_missing_extends_file_names_the_path_and_the_extends(load):
    with pytest.raises(RecipeError) as excinfo:
        load(HERE / "missing_parent.yaml")
    message = str(excinfo.value)
    assert "missing_parent.yaml:2:10: extends: recipe file not found:" in message
    assert "no_such_base.yaml" in message


def test_missing_recipe_file(load, tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found: .*nope.yaml"):
        load(tmp_path / "nope.yaml")


# --- YAML problems -------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(load, tmp_path):
    path = write(tmp_path, MINIMAL + "train: {epochs: [2, lr: 1.0e-2}\n")
    # libyaml says "did not find expected ',' or ']'", PyYAML's Python parser "expected ',' or ']', but got '}'"
    with pytest.raises(RecipeError, match=r"r\.yaml:7:31: YAML syntax error: .*expected ',' or ']'"):
        load(path)


def test_duplicate_key_is_an_error(load, tmp_path):
    path = write(tmp_path, MINIMAL + "train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:10:3: duplicate key 'epochs' \(first at line 8\)"):
        load(path)


@pytest.mark.parametrize("text, got", [("", "an empty file"), ("- a\n- b\n", "a list"), ("3\n", "a int")])
def test_top_level_must_be_a_mapping(load, tmp_path, text, got):
    with pytest.raises(RecipeError, match=f"a recipe must be a YAML mapping .*got {got}"):
        load(write(tmp_path, text))


def test_unsafe_yaml_tags_are_refused(load, tmp_path):
    with pytest.raises(RecipeError, match="YAML syntax error"):
        load(write(tmp_path, MINIMAL + "description: !!python/object/apply:os.system [echo hi]\n"))


# --- validation ----------------------------------------------------------------------------------


def test_all_errors_reported_at_once_sorted_with_file_line_col(load):
    with pytest.raises(RecipeError) as excinfo:
        load(HERE / "many_errors.yaml")
    header, *lines = str(excinfo.value).splitlines()
    assert header.endswith("many_errors.yaml: 5 errors")
    places = [line.split("  ")[0].rsplit(":", 2)[1:] for line in lines]
    assert places == [["2", "7"], ["3", "33"], ["6", "31"], ["7", "14"], ["8", "17"]]
    assert "$.name: 'many errors' does not match" in lines[0]
    assert "$.dataset.n_train: 'lots' is not of type 'integer' (dataset 'blobs')" in lines[1]
    assert "$.model.layers[0].hiden: unknown parameter 'hiden' of layer 'coupling'. Did you mean 'hidden'?" in lines[2]
    assert "$.model.layers[1].name: unknown layer 'coupleing'. Did you mean 'coupling'?" in lines[3]
    assert "$.train.epochs: 0 is less than the minimum of 1" in lines[4]


def test_mistyped_and_missing_parameters(load, tmp_path):
    text = MINIMAL.replace("hidden: 8", "hidden: 8.5, scale_fn: relu") + "loss: {name: weighted_nll, weight: heavy}\n"
    text = text.replace("- {name: flip}", "- {name: shift}")
    with pytest.raises(RecipeError) as excinfo:
        load(write(tmp_path, text))
    lines = errors_of(excinfo)
    assert any("r.yaml:5:32  $.model.layers[0].hidden: 8.5 is not of type 'integer'" in l for l in lines)
    assert any("$.model.layers[0].scale_fn: 'relu' is not one of ['tanh', 'sigmoid']" in l for l in lines)
    assert any("r.yaml:6:7  $.model.layers[1]: 'offset' is a required property (layer 'shift')" in l for l in lines)
    assert any("$.loss.weight: 'heavy' is not of type 'number' (loss 'weighted_nll')" in l for l in lines)
    assert len(lines) == 4


def test_missing_key_points_at_the_closest_parent(load, tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load(write(tmp_path, "name: x\ndataset: blobs\nmodel:\n  base: standard_normal\n"))
    assert errors_of(excinfo) == [f"{tmp_path / 'r.yaml'}:3:1  $.model: 'layers' is a required property"]


def test_missing_required_top_level_keys_point_at_the_document(load, tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load(write(tmp_path, "# no name, no dataset\nmodel: {layers: [flip]}\n"))
    assert str(excinfo.value).splitlines()[0].endswith("r.yaml: 3 errors")
    lines = errors_of(excinfo)
    assert f"{tmp_path / 'r.yaml'}:2:1  $: 'name' is a required property" in lines
    assert f"{tmp_path / 'r.yaml'}:2:1  $: 'dataset' is a required property" in lines
    assert any("$.model.layers[0]: 'flip' is not of type 'object'" in line for line in lines)


def test_unknown_top_level_and_train_keys_suggest_the_right_ones(load, tmp_path):
    with pytest.raises(RecipeError) as excinfo:
        load(write(tmp_path, MINIMAL + "trian: {}\ntrain: {epochz: 3}\n"))
    lines = errors_of(excinfo)
    assert "$.trian: unknown key 'trian'. Did you mean 'train'?" in lines[0]
    assert "$.train.epochz: unknown key 'epochz'. Did you mean 'epochs'" in lines[1]


def test_unknown_base_distribution(load, tmp_path):
    with pytest.raises(RecipeError, match=r"\$\.model\.base: unknown base distribution 'standard_normall'\. "
                                          r"Did you mean 'standard_normal'"):
        load(write(tmp_path, MINIMAL.replace("model:\n", "model:\n  base: standard_normall\n")))


def test_validate_false_skips_the_checks(load, tmp_path):
    recipe = load(write(tmp_path, MINIMAL.replace("flip", "nothing")), validate=False)
    assert recipe["model"]["layers"][1] == {"name": "nothing"}


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_set_existing_and_schema_known_keys(load):
    recipe = load(
        HERE / "child.yaml",
        "train.epochs=2",                       # exists
        "train.max_steps_per_epoch=5",          # an optional skeleton key the file does not mention
        "dataset.batch_size=32",                # a loader key
        "model.layers.1.layers.0.hidden=128",   # list indices
        "gradient_mode=self_normalized",        # a component the file does not mention, by name
        "gradient_mode.recon_loss_weight=3",    # ... then one of its parameters
        "hub.repo_id=org/name",                 # a new optional block
        "train.betas=[0.8, 0.9]",               # values are YAML
    )
    assert recipe["train"]["epochs"] == 2 and recipe["train"]["max_steps_per_epoch"] == 5
    assert recipe["train"]["betas"] == [0.8, 0.9]
    assert recipe["dataset"]["batch_size"] == 32
    assert recipe["model"]["layers"][2]["layers"][0] == {"name": "coupling", "hidden": 128}  # after the preamble
    assert recipe["gradient_mode"] == {"name": "self_normalized", "recon_loss_weight": 3}
    assert recipe["hub"] == {"repo_id": "org/name"}


def test_override_of_a_component_parameter_the_file_does_not_mention(load):
    recipe = load(HERE / "child.yaml", "dataset.n_train=100", "model.layers.0.scale_fn=sigmoid")
    assert recipe["dataset"]["n_train"] == 100 and recipe["model"]["layers"][1]["scale_fn"] == "sigmoid"


def test_override_of_a_nonexistent_key_names_the_nearest(load):
    with pytest.raises(RecipeError, match=r"override 'train.epochz=3': \$\.train has no key 'epochz'.*"
                                          r"Did you mean 'epochs'"):
        load(HERE / "child.yaml", "train.epochz=3")
    with pytest.raises(RecipeError, match=r"has no key 'hiden'.*Did you mean 'hidden'"):
        load(HERE / "child.yaml", "model.layers.0.hiden=3")
    with pytest.raises(RecipeError, match="has 2 items; index 5 does not exist"):
        load(HERE / "child.yaml", "model.layers.5.hidden=3")


def test_plus_adds_and_tilde_deletes(load):
    recipe = load(HERE / "child.yaml", "+model.layers.2={name: flip}", "~dataset.noise", "~train.seed")
    assert recipe["model"]["layers"][-1] == {"name": "flip"}
    assert "noise" not in recipe["dataset"] and recipe["train"]["seed"] == 0  # back to the default
    with pytest.raises(RecipeError, match="already exists; change it with train.epochs=1"):
        load(HERE / "child.yaml", "+train.epochs=1")
    with pytest.raises(RecipeError, match=r"\$\.dataset\.nose does not exist"):
        load(HERE / "child.yaml", "~dataset.nose")
    # `+` skips the key check, validation still refuses what no schema allows
    with pytest.raises(RecipeError, match=r"<command line> \(\+dataset.colour=red\)  \$\.dataset\.colour: unknown parameter"):
        load(HERE / "child.yaml", "+dataset.colour=red")


def test_deleting_a_list_item_keeps_the_marks_of_the_others(load):
    with pytest.raises(RecipeError) as excinfo:
        load(HERE / "many_errors.yaml", "~model.layers.0", "name=ok")
    lines = errors_of(excinfo)
    assert len(lines) == 3
    assert "many_errors.yaml:7:14  $.model.layers[0].name: unknown layer 'coupleing'" in lines[1]


def test_bad_override_value_is_reported_at_the_command_line(load):
    with pytest.raises(RecipeError) as excinfo:
        load(HERE / "child.yaml", "train.epochs=many", "model.layers.0.hidden=[1")
    assert "is not valid YAML" in str(excinfo.value)
    with pytest.raises(RecipeError) as excinfo:
        load(HERE / "child.yaml", "train.epochs=many")
    assert errors_of(excinfo) == ["<command line> (train.epochs=many)  $.train.epochs: 'many' is not of type 'integer'"]


def test_malformed_overrides(load):
    with pytest.raises(RecipeError, match="has no '='"):
        load(HERE / "child.yaml", "train.epochs")
    with pytest.raises(RecipeError, match="empty key segment"):
        load(HERE / "child.yaml", "train..epochs=2")
    with pytest.raises(RecipeError, match="`extends:` is resolved before overrides"):
        load(HERE / "child.yaml", "extends=other.yaml")
    with pytest.raises(RecipeError, match="is a list; use an index"):
        load(HERE / "child.yaml", "model.layers.first=2")


# --- the composed schema -------------------------------------------------------------------------


def test_composed_schema_is_valid_and_accepts_a_resolved_recipe(load, reg):
    schema = composed_schema(reg)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    recipe = load(HERE / "grandchild.yaml")
    assert list(validator.iter_errors(json.loads(json.dumps(recipe)))) == []
    raw = yaml.safe_load((HERE / "child.yaml").read_text())
    raw.pop("extends")
    raw["model"]["layers"][0]["hiden"] = 3
    raw["model"]["layers"].append({"name": "coupleing"})
    messages = [e.message for e in validator.iter_errors(raw)]
    assert any("'coupleing' is not one of" in m for m in messages)
    assert any("'hiden' was unexpected" in m for m in messages)
    assert {"standard_normal", "diagonal_normal", "gaussian_mixture"} <= set(schema["$defs"]["component_base"]["then"]["enum"])


def test_static_schema_describes_every_property():
    schema = json.loads((Path(__file__).parents[1] / "schemas" / "recipe.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    missing = []

    def visit(node, where):
        if isinstance(node, dict):
            for key, prop in node.get("properties", {}).items():
                if "description" not in prop:
                    missing.append(f"{where}.{key}")
            for key, value in node.items():
                visit(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}[{i}]")

    for name in ("properties",):
        visit({"properties": schema[name]}, "$")
    for name, sub in schema["$defs"].items():
        visit(sub, f"$defs/{name}")
    assert missing == []


def test_a_recipe_hashes_as_it_did_before_the_optional_keys_added_since():
    import zoo

    # sha256 of these shipped recipes under zoo's first recipe format (main at ca3dcac): run
    # folders and pushed models record it, so an optional key added to the schema (train.log,
    # task:, context:) must not change it, whether a recipe leaves it out or sets its default
    assert zoo.load_recipe("realnvp_moons").sha256 == (
        "f968d21593915e5f60d7a78401c7c41e8fd033c50a17b36c2da81902e80b54d5")
    assert zoo.load_recipe("glow_mnist_small").sha256 == (
        "c76821405482e438f855a0c200a8d3de3e5e25cd7d91a1c68caf905938afae1f")
    assert zoo.load_recipe("realnvp_moons", ["train.log=[]"]).sha256 == zoo.load_recipe("realnvp_moons").sha256
