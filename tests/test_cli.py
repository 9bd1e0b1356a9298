"""The `zoo` command: every command, and every bad input exits 2 with one clear message."""

import json
from pathlib import Path

import pytest

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))

TINY = """\
name: tiny
dataset: {name: moons, n_train: 200, n_val: 100, n_test: 100, batch_size: 50}
model:
  layers:
    - repeat: 2
      layers:
        - {name: affine_coupling, hidden: 8}
        - {name: reverse}
train: {epochs: 2, lr: 1.0e-2}
"""


def zoo(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_list_shows_every_kind_with_descriptions(capsys):
    code, out, _ = zoo(capsys, "list")
    assert code == 0
    for kind in ("layers", "datasets", "losses", "gradient_modes"):
        assert f"{kind} (" in out
    assert "affine_coupling" in out and "[layers_glow]" in out


def test_list_filters_by_pattern(capsys):
    code, out, _ = zoo(capsys, "list", "layers", "coup*")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert names and all(n.startswith("coup") for n in names)


def test_plugins_shows_versions_and_components(capsys):
    code, out, _ = zoo(capsys, "plugins")
    assert code == 0
    assert "layers_glow 0.1.0 (zoo-flows)" in out
    assert "layers: " in out


def test_validate_every_shipped_recipe(capsys):
    code, out, err = zoo(capsys, "validate", *RECIPES)
    assert code == 0, err
    assert out.count(": ok") == len(RECIPES)


def test_schema_is_json(capsys):
    code, out, _ = zoo(capsys, "schema")
    assert code == 0
    assert json.loads(out)["type"] == "object"


@pytest.mark.slow
def test_run_then_sample_eval_score(capsys, tiny, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = zoo(capsys, "run", tiny, "train.epochs=1", "--out", run_dir, "--no-progress")
    assert code == 0, err
    assert "test NLL" in out and str(run_dir) in out
    code, out, _ = zoo(capsys, "sample", run_dir, "--temperature", "0.7")
    assert code == 0 and (run_dir / "samples" / "sample_t0.7.png").is_file()
    code, out, _ = zoo(capsys, "eval", run_dir)
    assert code == 0 and "test NLL" in out
    points = tmp_path / "points.txt"
    points.write_text("0 0\n30 30\n")
    code, out, _ = zoo(capsys, "score", run_dir, points)
    assert code == 0
    typical, outlier = [float(line.split("\t")[1].split()[0]) for line in out.splitlines()]
    assert outlier > typical  # a far-away point is scored as unusual


def test_unknown_component_with_suggestion(capsys, tiny):
    tiny.write_text(TINY.replace("affine_coupling", "afine_coupling"))
    code, _, err = zoo(capsys, "validate", tiny)
    assert code == 2 and "Did you mean 'affine_coupling'" in err and "tiny.yaml:" in err


def test_yaml_syntax_error_names_line_and_column(capsys, tiny, tmp_path):
    tiny.write_text(TINY.replace("train: {epochs: 2", "train: {epochs: [2"))
    code, _, err = zoo(capsys, "run", tiny, "--out", tmp_path / "never")
    one_clear_error(code, err, "tiny.yaml:9:31")
    assert not (tmp_path / "never").exists()


def test_override_of_a_missing_key(capsys, tiny, tmp_path):
    code, _, err = zoo(capsys, "run", tiny, "train.epochz=3", "--out", tmp_path / "never")
    one_clear_error(code, err, "epochz")
    assert not (tmp_path / "never").exists()


def test_layer_shape_error_at_assembly(capsys, tiny, tmp_path):
    tiny.write_text(TINY.replace("- {name: reverse}", "- {name: squeeze}"))
    code, _, err = zoo(capsys, "run", tiny, "--out", tmp_path / "never")
    one_clear_error(code, err, "$.model.layers[0].layers[1]", "'squeeze'")
    assert not (tmp_path / "never").exists()


def test_missing_data_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))  # so the value --data-dir sets is undone
    recipe = tmp_path / "c.yaml"
    recipe.write_text(TINY.replace("{name: moons, n_train: 200, n_val: 100, n_test: 100, batch_size: 50}",
                                   "{name: cifar10, batch_size: 50}"))
    code, _, err = zoo(capsys, "run", recipe, "--data-dir", tmp_path / "nodata", "--out", tmp_path / "never")
    one_clear_error(code, err, "cifar", str(tmp_path / "nodata"))
    assert not (tmp_path / "never").exists()


def test_run_folder_with_corrupt_or_missing_weights(capsys, tiny, tmp_path):
    run_dir = tmp_path / "run"
    assert zoo(capsys, "run", tiny, "train.epochs=1", "--out", run_dir, "--no-progress")[0] == 0
    (run_dir / "model.safetensors").write_bytes(b"\x00" * 10)
    code, _, err = zoo(capsys, "eval", run_dir)
    one_clear_error(code, err, "model.safetensors", "corrupt")
    (run_dir / "model.safetensors").unlink()
    code, _, err = zoo(capsys, "sample", run_dir)
    one_clear_error(code, err, "no weights file")


def test_debug_shows_the_traceback(capsys, tiny):
    tiny.write_text(TINY.replace("affine_coupling", "nope"))
    code, _, err = zoo(capsys, "--debug", "run", tiny)
    assert code == 2 and "Traceback" in err


def test_score_images_with_an_image_model(capsys, tmp_path, monkeypatch):
    from PIL import Image

    from data_writers import write_image_folder

    write_image_folder(tmp_path / "data" / "animal-faces" / "train", {"cat": 8})
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "data"))
    run_dir = tmp_path / "run"
    code, _, err = zoo(capsys, "run", ROOT / "recipes" / "flow_models_anomaly.yaml", "train.epochs=1",
                       "train.max_steps_per_epoch=1", "train.n_samples=2", "dataset.batch_size=4",
                       "--out", run_dir, "--no-progress")
    assert code == 0, err
    picture = tmp_path / "odd.png"
    Image.new("RGB", (40, 50), (250, 10, 10)).save(picture)
    code, out, _ = zoo(capsys, "score", run_dir, picture)
    assert code == 0
    name, nats, bits = out.strip().split("\t")
    assert name == str(picture) and float(nats.split()[0]) > 0 and "bits/dim" in bits
    code, _, err = zoo(capsys, "score", run_dir, tmp_path / "missing.png")
    one_clear_error(code, err, "missing.png")


# --- the command line itself ---------------------------------------------------------------------

DIGITS = """\
name: tinydigits
dataset: {name: digits, batch_size: 64}
model:
  layers:
    - {name: dequantize}
    - {name: normalize, scale: 17.0}
    - {name: logit, alpha: 1.0e-6}
    - {name: squeeze}
    - {name: affine_coupling, hidden: 8}
train: {epochs: 1, lr: 1.0e-3, max_steps_per_epoch: 2, n_samples: 4}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One trained 2-D run folder shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.yaml").write_text(TINY)
    assert main(["run", str(folder / "tiny.yaml"), "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run"


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything asks the Hub for a model."""
    from zoo import hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.setattr(hub, "load_pretrained", refuse)
    monkeypatch.setattr(hub, "resolve_source", refuse)


def test_version_names_zoo_torch_and_python(capsys):
    import platform
    import re

    import torch

    import zoo as package

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == 0
    assert re.fullmatch(r"zoo \S+ \(torch \S+, python \S+\)", out), out
    assert out == f"zoo {package.__version__} (torch {torch.__version__}, python {platform.python_version()})"


def test_bare_zoo_lists_every_command_with_its_help(capsys):
    from zoo.cli import build_parser

    code, out, err = zoo(capsys)
    assert code == 0 and "required" not in err
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert len(sub.choices) >= 10
    for choice in sub._choices_actions:
        assert any(line.split()[:1] == [choice.dest] and choice.help in line for line in out.splitlines()), choice.dest


def test_every_command_help_has_examples_of_itself(capsys):
    from zoo.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0
        assert "examples:" in out and f"  zoo {name}" in out.split("examples:")[1], name


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_before_or_after_the_command_or_in_the_environment(capsys, tiny, monkeypatch, where):
    tiny.write_text(TINY.replace("affine_coupling", "nope"))
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    code, _, err = zoo(capsys, "run", tiny)
    assert code == 2 and "Traceback" not in err
    if where == "env":
        monkeypatch.setenv("ZOO_DEBUG", "1")
    args = {"before": ["--debug", "run", tiny], "after": ["run", tiny, "--debug"], "env": ["run", tiny]}[where]
    code, _, err = zoo(capsys, *args)
    assert code == 2 and "Traceback" in err and "zoo: error:" in err


def test_ctrl_c_exits_130(capsys, monkeypatch):
    from zoo import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_schema", interrupted)
    code, _, err = zoo(capsys, "schema")
    assert code == 130 and "zoo: interrupted" in err and "Traceback" not in err


# --- list ------------------------------------------------------------------------------------------


def test_list_one_name_verbose_with_the_flag_anywhere(capsys):
    outputs = []
    for args in (["list", "layers", "-v", "affine_coupling"], ["list", "-v", "layers", "affine_coupling"],
                 ["list", "layers", "affine_coupling", "--verbose"]):
        code, out, err = zoo(capsys, *args)
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2]
    assert "layers (1):" in outputs[0]
    assert "- hidden: integer, default 64" in outputs[0]  # the parameters
    assert "scale_fn" in outputs[0] and "interleaved" in outputs[0]  # the docstring's body


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_list_an_exact_name_that_does_not_exist(capsys, json_flag):
    code, out, err = zoo(capsys, "list", "layers", "afine_coupling", *json_flag)
    one_clear_error(code, err, "no layer named 'afine_coupling'", "Did you mean 'affine_coupling'",
                    "`zoo list layers`")
    assert out == ""


def test_list_a_pattern_that_matches_nothing_is_not_an_error(capsys):
    code, out, _ = zoo(capsys, "list", "layers", "zzz*")
    assert code == 0 and "layers (0):" in out


def test_list_recipes_shows_every_shipped_recipe_and_how_to_run_one(capsys, registry):
    code, out, _ = zoo(capsys, "list", "recipes")
    assert code == 0
    names = registry.names("recipes")
    assert f"recipes ({len(names)}):" in out and "toydensity" in names
    for name in names:
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert "`zoo run NAME`" in out
    code, out, _ = zoo(capsys, "list", "recipes", "toydensity", "-v")
    assert code == 0
    assert "zoo run toydensity" in out and "toydensity.yaml" in out
    assert "str(" not in out  # not the docstring of the path's type


def test_list_models_verbose_shows_records_not_the_dict_docstring(capsys):
    code, out, _ = zoo(capsys, "list", "-v")
    assert code == 0 and "dict(" not in out and "str(" not in out


def test_list_json_for_every_kind(capsys, registry):
    from zoo.registry import KINDS

    code, out, _ = zoo(capsys, "list", "--json")
    everything = json.loads(out)
    assert code == 0 and set(everything) == {k.title for k in KINDS.values()}
    for kind in KINDS.values():
        code, out, _ = zoo(capsys, "list", kind.title, "--json")
        rows = json.loads(out)[kind.title]
        assert code == 0
        assert [r["name"] for r in rows] == registry.names(kind.name)
        assert rows == everything[kind.title]
        for row in rows:
            assert isinstance(row["summary"], str) and row["plugin"]
            if kind.entry == "path":
                assert Path(row["path"]).is_file()


# --- recipes by name -------------------------------------------------------------------------------


def test_validate_a_recipe_by_name(capsys):
    code, out, err = zoo(capsys, "validate", "toydensity")
    assert code == 0, err
    assert out.startswith("toydensity: ok (")


def test_validate_a_misspelt_name(capsys):
    code, _, err = zoo(capsys, "validate", "toydensty")
    assert code == 2
    assert "toydensty" in err and "Did you mean 'toydensity'" in err and "zoo list recipes" in err


def test_validate_a_misspelt_path(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, _, err = zoo(capsys, "validate", "recipes/toydensty.yaml")
    assert code == 2
    assert "recipes/toydensty.yaml" in err and "toydensity" in err and "Did you mean" in err


def test_options_and_overrides_mix_on_run(capsys, tiny, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = zoo(capsys, "run", tiny, "--out", run_dir, "train.epochs=1", "--no-progress")
    assert code == 0, err
    assert "epoch 1:" in out and "epoch 2:" not in out  # the override after --out was applied


def test_run_refuses_an_existing_run_folder_without_overwrite(capsys, tiny, tmp_path):
    run_dir = tmp_path / "run"
    assert zoo(capsys, "run", tiny, "train.epochs=1", "--out", run_dir, "--no-progress")[0] == 0
    before = (run_dir / "model.safetensors").read_bytes()
    code, _, err = zoo(capsys, "run", tiny, "train.epochs=1", "--out", run_dir, "--no-progress")
    one_clear_error(code, err, "--overwrite", str(run_dir))
    assert (run_dir / "model.safetensors").read_bytes() == before
    code, _, err = zoo(capsys, "run", tiny, "train.epochs=1", "--out", run_dir, "--no-progress", "--overwrite")
    assert code == 0, err


# --- sources of sample / eval / score --------------------------------------------------------------


@pytest.mark.parametrize("command", ["sample", "eval", "score"])
@pytest.mark.parametrize("source", ["./no-such-run", "~/no-such-zoo-run", "no-such-run.yaml", "a/b/c",
                                    "{tmp}/no-such-run", "{tmp}\\no-such-run"])
def test_a_path_that_is_not_a_folder_is_not_sent_to_the_hub(capsys, tmp_path, no_hub, command, source):
    source = source.format(tmp=tmp_path)
    extra = [tmp_path / "points.txt"] if command == "score" else []
    code, _, err = zoo(capsys, command, source, *extra)
    one_clear_error(code, err, f"no such run folder: {source}")


def test_a_misspelt_run_folder_gets_a_suggestion(capsys, tiny_run, no_hub):
    typo = tiny_run.parent / "rnu"
    code, _, err = zoo(capsys, "eval", typo)
    one_clear_error(code, err, f"no such run folder: {typo}", f"Did you mean '{tiny_run}'")


def test_a_recipe_file_is_not_a_run_folder(capsys, tiny, no_hub):
    code, _, err = zoo(capsys, "sample", tiny)
    one_clear_error(code, err, f"no such run folder: {tiny}", f"`zoo run {tiny}`")


def test_eval_is_deterministic_and_says_its_seed(capsys, tmp_path):
    recipe = tmp_path / "digits.yaml"
    recipe.write_text(DIGITS)
    run_dir = tmp_path / "run"
    code, _, err = zoo(capsys, "run", recipe, "--out", run_dir, "--no-progress")
    assert code == 0, err
    lines = []
    for seed in ([], [], ["--seed", "1"]):
        code, out, err = zoo(capsys, "eval", run_dir, *seed)
        assert code == 0, err
        lines.append(out.strip().splitlines()[-1])
    assert lines[0] == lines[1] and lines[0].endswith("(seed 0)")
    assert lines[2].endswith("(seed 1)")
    nll = [line.split("test NLL ")[1].split()[0] for line in lines]
    assert nll[2] != nll[0]  # the dequantization noise is there, and the seed is what fixes it


# --- sample ----------------------------------------------------------------------------------------


def test_sample_a_2d_model_draws_n_samples_at_a_temperature(capsys, tiny_run, tmp_path):
    pictures = {}
    for name, args in {"few": ["-n", "10"], "many": ["-n", "3000"], "many_again": ["-n", "3000"],
                       "cold": ["-n", "3000", "--temperature", "0"]}.items():
        out = tmp_path / f"{name}.png"
        code, printed, err = zoo(capsys, "sample", tiny_run, *args, "--out", out)
        assert code == 0, err
        assert f"wrote {out}" in printed
        pictures[name] = out.read_bytes()
    assert pictures["many"] == pictures["many_again"]  # seeded
    assert len({pictures["few"], pictures["many"], pictures["cold"]}) == 3  # -n and T are used
    density = (tiny_run / "samples" / "final_density.png").read_bytes()
    assert density not in pictures.values()  # samples, not a copy of the density plot


@pytest.mark.parametrize("args, needle", [
    (["-n", "0"], "-n 0"), (["-n", "100001"], "-n 100001"), (["-n", "-5"], "-n -5"),
    (["--temperature", "nan"], "--temperature nan"), (["--temperature", "inf"], "--temperature inf"),
    (["--temperature", "-0.5"], "--temperature -0.5"),
])
def test_sample_rejects_bad_counts_and_temperatures_before_loading(capsys, tmp_path, args, needle):
    code, _, err = zoo(capsys, "sample", tmp_path / "not-even-a-run", *args)
    one_clear_error(code, err, needle, "zoo sample RUN")


def test_a_closed_pipe_ends_quietly():
    """`zoo list | head -1`: no BrokenPipeError traceback when the reader stops early."""
    import subprocess
    import sys

    done = subprocess.run(f"{sys.executable} -m zoo.cli list | head -c 10", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
