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
