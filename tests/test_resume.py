"""Checkpoints and resume (zoo.checkpoint): a run killed at any moment and resumed ends with the
weights and metrics.jsonl records of a run never stopped; SIGTERM writes a checkpoint and says how
to resume; every folder that cannot be resumed is refused with the fix.

The killed runs are real processes (``python -m zoo.cli``) that SIGKILL themselves at a chosen
point (the test hook ZOO_TEST_KILL_AT); the uninterrupted runs they are compared with run here.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import zoo
from zoo import checkpoint
from zoo.checkpoint import CHECKPOINT_FILE, KILL_ENV
from zoo.errors import WeightsError, ZooError
from zoo.train import Progress, resume

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda *_: None}
# realnvp_moons with actnorm, 3 epochs of 5 steps, a checkpoint every 3 steps (mid-epoch ones)
MOONS = ["train.epochs=3", "train.max_steps_per_epoch=5", "train.checkpoint_every=3", "train.eval_every=1",
         "train.threads=1", "dataset.n_train=640", "dataset.n_val=64", "dataset.n_test=64",
         "dataset.batch_size=64", "train.n_samples=16"]
# glow_mnist_small: actnorm, dequantization noise, warm-up across the epoch boundary
GLOW = ["train.epochs=2", "train.max_steps_per_epoch=3", "train.checkpoint_every=2", "train.threads=1",
        "train.max_eval_examples=8", "train.n_samples=2", "dataset.batch_size=4", "train.warmup_epochs=1"]
# bnaf_u1: an energy target (the model draws every step) with a plateau schedule that reduces
BNAF = ["train.epochs=2", "train.max_steps_per_epoch=8", "train.threads=1", "dataset.batch_size=16",
        "dataset.n_val=64", "dataset.n_test=64", "train.n_samples=8", "train.lr_schedule.patience=0",
        "+train.lr_schedule.threshold=0.2", "model.layers=[{name: bnaf, hidden: 8, n_hidden: 1}]"]


def zoo_cli(*args, kill=None, check=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    done = subprocess.run([sys.executable, "-m", "zoo.cli", *args, "--no-progress"], check=False, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if check is not None:
        assert done.returncode == check, done.stderr
    return done


def tensors(path):
    return load_file(str(path))


def records(folder):
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def assert_same_run(folder, reference):
    mine, theirs = tensors(folder / "model.safetensors"), tensors(reference / "model.safetensors")
    assert mine.keys() == theirs.keys()
    different = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not different, different[:5]
    assert records(folder) == records(reference)
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "complete" and info["resumed"] and info["checkpoint"] is None
    assert not (folder / CHECKPOINT_FILE).exists() and not list(folder.glob(".*zoo-tmp*"))
    ours, reference_metrics = (json.loads((f / "metrics.json").read_text()) for f in (folder, reference))
    for key in ("test_nll", "test_free_energy", "best_epoch", "skipped_batches"):
        assert ours.get(key) == reference_metrics.get(key), key


def assert_files_complete(folder):
    """What a kill leaves: every file whole (a leftover temporary is hidden and never read)."""
    for path in folder.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                json.loads(line)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (not a dict)
                    f.get_tensor(key)


RECIPES = {"moons": ("realnvp_moons", MOONS), "glow": ("glow_mnist_small", GLOW), "bnaf": ("bnaf_u1", BNAF)}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """``references[name]``: the folder of an uninterrupted run of that recipe, made once when asked."""
    root = tmp_path_factory.mktemp("references")

    class Made(dict):
        def __missing__(self, name):
            recipe, overrides = RECIPES[name]
            self[name] = zoo.run(zoo.load_recipe(recipe, overrides=overrides), out=root / name, **QUIET).folder
            return self[name]

    return Made()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A moons run stopped by SIGTERM after step 7 (in this process): its folder, for refusals."""
    folder = tmp_path_factory.mktemp("interrupted") / "run"
    os.environ[KILL_ENV] = "term:7"
    try:
        with pytest.raises(checkpoint.Interrupted, match=r"zoo run --resume "):
            zoo.run(zoo.load_recipe("realnvp_moons", overrides=MOONS), out=folder, **QUIET)
    finally:
        del os.environ[KILL_ENV]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["step:8", "checkpoint:2", "epoch:1"])
def test_moons_killed_anywhere_resumes_to_the_same_weights_and_records(tmp_path, references, kill):
    folder = tmp_path / "run"
    killed = zoo_cli("run", "realnvp_moons", "--out", str(folder), *MOONS, kill=kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_files_complete(folder)
    written = checkpoint.load_checkpoint(folder).meta
    # step:8 stops after step 6's checkpoint (epoch 2, step 1); checkpoint:2 while writing epoch 1's
    # end one (the 2nd, after step 3's), so step 3's stays; epoch:1 just after epoch 1's end one
    expected = {"step:8": (1, 1), "checkpoint:2": (0, 3), "epoch:1": (1, 0)}[kill]
    assert (written["epoch"], written["step"]) == expected
    if kill == "checkpoint:2":
        assert list(folder.glob(f".{CHECKPOINT_FILE}.zoo-tmp-*")), "the hook did not kill mid-write"
    result = resume(folder, **QUIET)
    assert result.folder == folder
    assert_same_run(folder, references["moons"])


@pytest.mark.slow
def test_glow_killed_at_an_epoch_boundary_resumes_identically(tmp_path, references):
    folder = tmp_path / "run"
    # step 3 is epoch 1's last: killed before its validation, the checkpoint is step 2's
    killed = zoo_cli("run", "glow_mnist_small", "--out", str(folder), *GLOW, kill="step:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert_files_complete(folder)
    assert not (folder / "metrics.jsonl").exists()
    resume(folder, **QUIET)
    assert_same_run(folder, references["glow"])


@pytest.mark.slow
def test_sigterm_checkpoints_says_how_to_resume_and_the_cli_resumes_identically(tmp_path, references):
    reference = references["bnaf"]
    lrs = [r["lr"] for r in records(reference)]
    assert lrs[-1] < 0.1, "the plateau schedule never reduced the lr: its state would not matter"
    folder = tmp_path / "run"
    stopped = zoo_cli("run", "bnaf_u1", "--out", str(folder), *BNAF, kill="term:11")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert f"zoo run --resume {folder}" in stopped.stderr
    assert_files_complete(folder)
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "interrupted" and info["checkpoint"] == {"epoch": 1, "step": 3, "global_step": 11}
    schedule = checkpoint.load_checkpoint(folder).meta["schedule"]
    assert schedule["reductions"] > 0  # the checkpoint carries the reduced scale
    resumed = zoo_cli("run", "--resume", str(folder), check=0)
    assert "resuming at epoch 2, step 3 of 8" in resumed.stdout
    assert_same_run(folder, reference)


def test_a_run_stopped_in_process_resumes_identically(tmp_path, references, interrupted, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(interrupted, folder)
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "interrupted" and info["checkpoint"]["global_step"] == 7
    bars = []
    monkeypatch.setattr(zoo.train, "Progress", lambda *a, **k: bars.append(k) or Progress(*a, **k))
    resume(folder, **QUIET)
    assert bars == [{"initial": 7}]  # the progress bar starts at the resumed step
    assert_same_run(folder, references["moons"])
    with pytest.raises(ZooError, match="already complete"):
        resume(folder, **QUIET)


def damaged_copy(source, target, damage):
    shutil.copytree(source, target)
    damage(target)
    return target


def rewrite_checkpoint(folder, change):
    path = folder / CHECKPOINT_FILE
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(path))
    change(state, meta)
    save_file(state, str(path), metadata=meta)


def _edit_meta(key, value):
    def change(state, meta):
        document = json.loads(meta["zoo_checkpoint"])
        document[key] = value
        meta["zoo_checkpoint"] = json.dumps(document)
    return change


def _wrong_shape(state, meta):
    name = next(k for k in state if k.startswith("model.") and state[k].dim() == 1)
    state[name] = torch.zeros(state[name].numel() + 1)


DAMAGES = {
    "recipe edited": (lambda f: (f / "recipe.yaml").write_text((f / "recipe.yaml").read_text()
                                                               .replace("lr: 0.001", "lr: 0.002")),
                      WeightsError, "edited after"),
    "other zoo version": (lambda f: (f / "run.json").write_text(
        (f / "run.json").read_text().replace(f'"zoo_version": "{zoo.__version__}"', '"zoo_version": "0.0.1"')),
        ZooError, "zoo 0.0.1"),
    "no checkpoint": (lambda f: (f / CHECKPOINT_FILE).unlink(), WeightsError, "no checkpoint"),
    "truncated": (lambda f: (f / CHECKPOINT_FILE).write_bytes((f / CHECKPOINT_FILE).read_bytes()[:5000]),
                  WeightsError, "corrupt or truncated"),
    "not safetensors": (lambda f: (f / CHECKPOINT_FILE).write_text("not a checkpoint\n"),
                        WeightsError, "corrupt or truncated"),
    "not zoo's": (lambda f: save_file({"x": torch.zeros(1)}, str(f / CHECKPOINT_FILE)),
                  WeightsError, "not a zoo checkpoint"),
    "tensors do not fit": (lambda f: rewrite_checkpoint(f, _wrong_shape), WeightsError, "shapes differ"),
    "checkpoint of another recipe": (lambda f: rewrite_checkpoint(f, _edit_meta("recipe_sha256", "0" * 64)),
                                     WeightsError, "different runs"),
    "damaged position": (lambda f: rewrite_checkpoint(f, _edit_meta("step", -1)), WeightsError, "damaged"),
    "log cut short": (lambda f: (f / "metrics.jsonl").write_text(""), WeightsError, "shorter than"),
}


@pytest.mark.parametrize("what", sorted(DAMAGES))
def test_folders_that_cannot_be_resumed_are_refused_with_the_fix(tmp_path, interrupted, what):
    damage, error, message = DAMAGES[what]
    folder = damaged_copy(interrupted, tmp_path / "run", damage)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    with pytest.raises(error, match=message) as caught:
        resume(folder, **QUIET)
    assert str(folder) in str(caught.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before  # nothing changed


def test_cli_refuses_a_recipe_or_overrides_beside_resume_and_a_run_without_either(tmp_path, capsys):
    from zoo.cli import main

    assert main(["run", "--resume", str(tmp_path), "train.epochs=5"]) == 2
    assert "takes no RECIPE 'train.epochs=5'" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--out", "x"]) == 2
    assert "takes no --out" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "--resume RUN" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_a_run_another_process_trains_is_refused(tmp_path, interrupted):
    folder = tmp_path / "run"
    shutil.copytree(interrupted, folder)
    held = checkpoint.lock_folder(folder)  # what a live run (or resume) holds
    assert held is not None
    with pytest.raises(ZooError, match="another process is training this run"):
        resume(folder, **QUIET)
    assert json.loads((folder / "run.json").read_text())["status"] == "interrupted"
    held.close()
    assert resume(folder, **QUIET).folder == folder


def test_a_run_started_over_in_the_folder_drops_the_old_checkpoint(tmp_path, interrupted):
    from zoo.runs import create_run_folder

    folder = tmp_path / "run"
    shutil.copytree(interrupted, folder)
    create_run_folder("realnvp_moons", folder, overwrite=True)  # what `zoo run ... --overwrite` does first
    assert not (folder / CHECKPOINT_FILE).exists()  # else --resume could pick up the old run's state
