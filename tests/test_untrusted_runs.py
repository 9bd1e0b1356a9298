"""Run folders must prove they are what they claim, and creating them never loses or mixes runs.

Every case edits a real run folder the way a careless user or an attacker would, and expects one
WeightsError (exit 2 from the CLI) naming the file; the loader is the same for `zoo eval`,
`zoo sample`, `zoo.from_pretrained(folder)` and `zoo push`.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo import runs
from zoo.cli import main
from zoo.errors import TrainingError, WeightsError, ZooError

MOONS = {
    "name": "tiny_moons",
    "dataset": {"name": "moons", "n_train": 128, "n_val": 64, "n_test": 64, "batch_size": 64},
    "model": {"layers": [{"name": "actnorm"}, {"name": "affine_coupling", "hidden": 8}, {"name": "reverse"}]},
    "train": {"epochs": 1, "lr": 1e-2, "seed": 0},
}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return zoo.run(zoo.load_recipe(MOONS), out=tmp_path_factory.mktemp("t") / "run", progress=False,
                   log=quiet).folder


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    return copy


def refused(folder: Path, match: str):
    with pytest.raises(WeightsError, match=match):
        runs.load_folder(folder)


# --- what a loaded run folder must prove ---------------------------------------------------------


def test_an_untouched_run_folder_loads(run_copy):
    recipe, model = runs.load_folder(run_copy)
    assert recipe["name"] == "tiny_moons" and not model.training


def test_flipped_bytes_in_the_weights_are_refused(run_copy):
    path = run_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's values: still a readable safetensors file
    path.write_bytes(bytes(data))
    refused(run_copy, "sha256 is not the one recorded in run.json")


def _rewrite_weights(folder: Path, change) -> None:
    """Rewrite the tensors (keeping the metadata) and record the new sha256: an attacker who also
    edits run.json. The tensor checks must still catch what is wrong."""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(str(path))
    change(state)
    save_file(state, str(path), metadata=metadata)
    info = json.loads((folder / "run.json").read_text())
    info["weights_sha256"] = runs.file_sha256(path)
    (folder / "run.json").write_text(json.dumps(info))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_tensors_are_refused(run_copy, value):
    def poison(state):
        name = next(k for k, v in state.items() if v.is_floating_point() and v.numel())
        state[name].view(-1)[0] = value

    _rewrite_weights(run_copy, poison)
    refused(run_copy, "NaN or infinite")


def test_tensors_of_another_dtype_are_refused(run_copy):
    def to_int(state):
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name] = state[name].to(torch.int32)

    _rewrite_weights(run_copy, to_int)
    refused(run_copy, "dtypes differ for .*torch.int32 vs model torch.float32")


def test_weights_whose_metadata_names_another_recipe_are_refused(run_copy):
    from safetensors import safe_open

    path = run_copy / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    metadata["recipe_sha256"] = "0" * 64
    save_file(load_file(str(path)), str(path), metadata=metadata)
    info = json.loads((run_copy / "run.json").read_text())
    info["weights_sha256"] = runs.file_sha256(path)
    (run_copy / "run.json").write_text(json.dumps(info))
    refused(run_copy, "trained from recipe 000000000000")


def test_a_recipe_edited_after_training_is_refused(run_copy):
    path = run_copy / "recipe.yaml"
    path.write_text(path.read_text().replace("lr: 0.01", "lr: 0.02"))
    refused(run_copy, "recipe.yaml: the recipe has sha256 .* the recipe was edited after training")


def test_a_recipe_with_extends_in_a_run_folder_is_refused(run_copy, tmp_path):
    secret = tmp_path / "local.yaml"
    secret.write_text("train: {epochs: 2}\n")
    path = run_copy / "recipe.yaml"
    path.write_text(f"extends: {secret}\n" + path.read_text())
    with pytest.raises(ZooError, match="must be self-contained"):
        runs.load_folder(run_copy)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("input_shape", [4_000_000_000], "values per sample; refused"),
        ("input_shape", "2", "`input_shape` must be list"),
        ("input_shape", [2, -1], "1 to 4 positive integers"),
        ("n_bits", 99, "`n_bits` must be an integer from 1 to 16"),
        ("recipe_sha256", 5, "`recipe_sha256` must be a sha256"),
        ("weights_sha256", "../../x", "`weights_sha256` must be a sha256"),
        ("plugins", "layers_glow", "`plugins` must be dict"),
    ],
)
def test_malformed_run_json_fields_are_refused(run_copy, field, value, match):
    info = json.loads((run_copy / "run.json").read_text())
    info[field] = value
    (run_copy / "run.json").write_text(json.dumps(info))
    refused(run_copy, match)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[" * 200_000 + "]" * 200_000, "nested 200000 levels deep"),
        ('"a string where a mapping belongs"', "the top level` must be dict"),
        ("{not json", "not valid JSON"),
        (" " * (runs.MAX_JSON_BYTES + 1), "more than the"),
    ],
)
def test_malformed_run_json_files_are_refused(run_copy, text, match):
    (run_copy / "run.json").write_text(text)
    refused(run_copy, match)


def test_a_run_folder_without_run_json_is_refused(run_copy):
    (run_copy / "run.json").unlink()
    refused(run_copy, "run.json: missing")


def test_the_cli_refuses_a_tampered_run_with_exit_2(run_copy, capsys):
    path = run_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    for command in (["eval", str(run_copy)], ["sample", str(run_copy), "--out", str(run_copy / "s.png")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "model.safetensors: its sha256 is not the one recorded" in err and "Traceback" not in err


# --- creating run folders --------------------------------------------------------------------------


def test_parallel_runs_of_one_recipe_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_RUNS_DIR", str(tmp_path / "runs"))
    made: list[Path] = []
    barrier = threading.Barrier(4)

    def create():
        barrier.wait()
        made.append(runs.create_run_folder("same"))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 4 and all(p.is_dir() for p in made)
    assert os.readlink(tmp_path / "runs" / "latest") in {p.name for p in made}


@pytest.mark.parametrize("name", ["../escape", "/etc", ".hidden", "a/b", "..", "x\0y"])
def test_a_recipe_name_cannot_steer_the_run_folder(tmp_path, monkeypatch, name):
    monkeypatch.setenv("ZOO_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(ZooError, match="cannot name a run folder"):
        runs.create_run_folder(name)
    assert not any(p for p in tmp_path.iterdir() if p.name != "runs")


def test_out_on_a_file_or_under_a_file_is_refused_before_building(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    for out in (a_file, a_file / "run"):
        with pytest.raises(ZooError, match="is a file|which is a file"):
            zoo.run(zoo.load_recipe(MOONS), out=out, progress=False, log=quiet)
    assert a_file.read_text() == "keep me"


def test_out_on_an_existing_run_needs_overwrite(trained, tmp_path, capsys):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    before = (folder / "model.safetensors").read_bytes()
    with pytest.raises(ZooError, match="--overwrite"):
        zoo.run(zoo.load_recipe(MOONS), out=folder, progress=False, log=quiet)
    assert (folder / "model.safetensors").read_bytes() == before
    result = zoo.run(zoo.load_recipe(MOONS), out=folder, overwrite=True, progress=False, log=quiet)
    assert runs.load_folder(result.folder)


def test_out_on_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match="not empty and is not a run folder"):
        zoo.run(zoo.load_recipe(MOONS), out=tmp_path, overwrite=True, progress=False, log=quiet)


def test_stale_temporary_files_are_removed_when_the_folder_is_opened(run_copy):
    stale = run_copy / ".model.safetensors.zoo-tmp-abc123"
    stale.write_bytes(b"\0" * 1000)  # what a kill during a save leaves
    runs.load_folder(run_copy)
    assert not stale.exists()


def test_a_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    from zoo import _atomic

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(_atomic.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        _atomic.write_bytes(tmp_path / "model.safetensors", b"x" * 100)
    assert list(tmp_path.iterdir()) == []


def test_a_run_interrupted_by_ctrl_c_is_marked_and_says_what_was_saved(tmp_path, monkeypatch):
    from zoo import train

    said = []
    real_validate = train.validate

    def validate_then_interrupt(*args, **kwargs):
        real_validate(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "validate", validate_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        zoo.run(zoo.load_recipe(MOONS), out=tmp_path / "run", progress=False, log=said.append)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert any("interrupted: the best model so far (epoch 1) is in" in line for line in said)


def test_a_non_finite_loss_does_not_claim_a_saved_model(tmp_path):
    recipe = zoo.load_recipe({**MOONS, "train": {"epochs": 1, "lr": 1e30, "seed": 0}})
    with pytest.raises(TrainingError) as caught:
        zoo.run(recipe, out=tmp_path / "run", progress=False, log=quiet)
    # It diverges within the first epoch, before the first evaluation could save a model.
    assert "No model was saved yet" in str(caught.value)
    assert "best model so far" not in str(caught.value)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed"


def test_atomic_json_never_shows_half_a_file(tmp_path):
    from zoo._atomic import write_json

    path = tmp_path / "x.json"
    write_json(path, {"a": list(range(1000))})
    assert json.loads(path.read_text())["a"][-1] == 999
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_safetensors_header_is_bounded(run_copy):
    """A header claiming an absurd size ends in a WeightsError, not a huge allocation."""
    path = run_copy / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    info = json.loads((run_copy / "run.json").read_text())
    info["weights_sha256"] = runs.file_sha256(path)
    (run_copy / "run.json").write_text(json.dumps(info))
    refused(run_copy, "not a readable safetensors file")
