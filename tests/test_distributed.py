"""Data-parallel training (zoo.distributed): two processes on gloo give what one process gives.

Each case runs one process in-process and two under torchrun in a subprocess (``python -m
torch.distributed.run --standalone --nproc-per-node 2 -m zoo run ...``), same recipe and seed,
and compares metrics.jsonl (train_loss, val_nll), the test NLL and the final weights.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo import distributed
from zoo.cli import main as cli_main
from zoo.errors import RecipeError

HERE = Path(__file__).resolve().parent
QUIET = {"progress": False, "log": lambda *_: None}

# 513 = 2 x 256 + 1: the last global batch has one example, so rank 1's share of it is empty,
# and so is its share of the last evaluation batch (257 = 256 + 1)
MOONS = ["train.epochs=2", "train.eval_every=1", "dataset.n_train=513", "dataset.n_val=257",
         "dataset.n_test=257", "dataset.batch_size=256", "train.n_samples=4"]
# 21 evaluation examples in batches of 20: rank 1's share of the last one is empty, and
# dequantization noise is drawn for each whole global batch
SELFNORM = ["train.epochs=2", "train.max_steps_per_epoch=3", "train.max_eval_examples=21",
            "dataset.batch_size=20", "train.n_samples=2", "train.warmup_epochs=0"]
# one thread: `auto` picks 1 or 2 by the load average, and another count sums differently, so
# two runs of the bit-for-bit comparisons below could differ by the machine's load alone
GLOW = ["train.epochs=2", "train.max_steps_per_epoch=2", "train.max_eval_examples=16",
        "dataset.batch_size=8", "train.n_samples=2", "train.warmup_epochs=0", "train.threads=1"]


def torchrun(*args, cwd=None, env=None):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


def run_two(name, overrides, out, **kwargs):
    done = torchrun("-m", "zoo", "run", name, *overrides, "--out", str(out), "--no-progress", **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_one(name, overrides, out):
    return zoo.run(zoo.load_recipe(name, overrides=overrides), out=out, **QUIET).folder


def records(folder):
    return [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(one, two, weights_atol=1e-6):
    a, b = records(one), records(two)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for key in ("train_loss", "val_nll"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), (key, x, y)
    test_a = json.loads((Path(one) / "metrics.json").read_text())
    test_b = json.loads((Path(two) / "metrics.json").read_text())
    assert test_b["test_nll"] == pytest.approx(test_a["test_nll"], rel=1e-5)
    assert test_b["test_examples"] == test_a["test_examples"]
    wa, wb = load_file(Path(one) / "model.safetensors"), load_file(Path(two) / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=1e-5, atol=weights_atol), key


@pytest.fixture(scope="module")
def glow_one(tmp_path_factory):
    return run_one("glow_mnist_small", GLOW, tmp_path_factory.mktemp("glow") / "one")


@pytest.mark.slow
def test_two_processes_match_one_with_a_ragged_last_batch_and_an_empty_share(tmp_path):
    one = run_one("realnvp_moons", MOONS, tmp_path / "one")
    # no --out: rank 0 names and creates the folder, rank 1 gets its path and writes nothing
    runs = tmp_path / "runs"
    done = torchrun("-m", "zoo", "run", "realnvp_moons", *MOONS, "--no-progress", cwd=tmp_path,
                    env={"ZOO_RUNS_DIR": str(runs)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folders = [p for p in runs.iterdir() if not p.is_symlink()]
    assert len(folders) == 1, folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "runs"]
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(p.name for p in one.iterdir())
    assert done.stdout.count("run folder:") == 2  # rank 0's two lines (start, end); rank 1 is quiet
    assert json.loads((folders[0] / "run.json").read_text())["processes"] == 2
    assert_same_run(one, folders[0], weights_atol=1e-6)


@pytest.mark.slow
def test_two_processes_match_one_with_actnorm_and_dequantization(glow_one, tmp_path):
    run_two("glow_mnist_small", GLOW, tmp_path / "two")
    # Adam's first steps divide by |gradient|: a weight whose gradient is ~0 moves by up to lr
    # on float noise (here a few of 70k at ~5e-6); the losses agree to 1e-7.
    assert_same_run(glow_one, tmp_path / "two", weights_atol=2e-5)


@pytest.mark.slow
def test_two_processes_match_one_with_the_self_normalized_gradient(tmp_path):
    one = run_one("selfnorm_fc_mnist", SELFNORM, tmp_path / "one")
    run_two("selfnorm_fc_mnist", SELFNORM, tmp_path / "two")
    # lr 1e-4 over 6 Adam steps: a weight whose gradient is ~0 may move by up to ~lr per step on
    # float noise (15 of 1.2M entries of R here); the gradients themselves agree (next test)
    assert_same_run(one, tmp_path / "two", weights_atol=6e-4)


@pytest.mark.slow
def test_the_self_normalized_gradient_of_a_step_is_the_single_process_one(tmp_path):
    overrides = ["dataset.batch_size=20", "train.warmup_epochs=0"]
    probe = str(HERE / "ddp_probe.py")
    subprocess.run([sys.executable, probe, str(tmp_path / "one.st"), "selfnorm_fc_mnist", *overrides],
                   check=True, timeout=300)
    done = torchrun(probe, str(tmp_path / "two.st"), "selfnorm_fc_mnist", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = load_file(tmp_path / "one.st"), load_file(tmp_path / "two.st")
    assert one.keys() == two.keys() and len(one) == 7  # the loss and 6 gradients (W, R, b twice)
    for key in one:
        scale = float(one[key].abs().max())
        assert torch.allclose(one[key], two[key], rtol=1e-5, atol=1e-5 * scale), key


@pytest.mark.slow
def test_workers_do_not_change_the_results(glow_one, tmp_path):
    with_workers = run_one("glow_mnist_small", [*GLOW, "train.workers=2"], tmp_path / "workers")
    def untimed(folder):
        return [{k: v for k, v in record.items() if k != "time"} for record in records(folder)]

    assert untimed(with_workers) == untimed(glow_one)
    wa, wb = load_file(glow_one / "model.safetensors"), load_file(with_workers / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_a_batch_the_processes_do_not_divide_is_refused_by_each_rank(tmp_path):
    done = torchrun("-m", "zoo", "run", "realnvp_moons", "dataset.batch_size=255", "--out",
                    str(tmp_path / "run"), "--no-progress")
    assert done.returncode != 0
    assert "dataset.batch_size: 255 is the global batch, split across 2 processes" in done.stderr
    assert not (tmp_path / "run").exists()


def test_nproc_refuses_an_undivided_batch_before_starting_anything(tmp_path, capsys):
    assert cli_main(["run", "realnvp_moons", "dataset.batch_size=255", "--nproc", "2",
                     "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "set dataset.batch_size=254 or 256" in error
    assert not (tmp_path / "run").exists()


def test_nproc_passes_the_command_on_to_torchrun(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert cli_main(["run", "realnvp_moons", "train.epochs=1", "--nproc", "3", "--no-progress",
                     "dataset.batch_size=255"]) == 0
    command = calls[0]
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=3"]
    assert command[5:] == ["-m", "zoo", "run", "realnvp_moons", "train.epochs=1", "--no-progress",
                           "dataset.batch_size=255"]


def test_energy_targets_are_refused():
    recipe = zoo.load_recipe("bnaf_u1")
    with pytest.raises(RecipeError, match="energy target"):
        distributed.check_recipe(recipe, 2)


def test_one_process_draws_noise_as_torch_does():
    x = torch.zeros(6, 3)
    torch.manual_seed(1)
    expected = torch.rand_like(x)
    torch.manual_seed(1)
    assert torch.equal(distributed.rand_like(x), expected)
    # inside a share: rows 2..4 of the draw for the whole batch of 6
    torch.manual_seed(1)
    with distributed.sharing(distributed.Share(2, 3, 6)):
        assert torch.equal(distributed.rand_like(x[:3]), expected[2:5])


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_under_torchrun_to_the_same_weights(tmp_path):
    """SIGKILL (both ranks, mid-epoch) after a checkpoint, then `zoo run --resume RUN --nproc 2`:
    the weights and records of an uninterrupted two-process run, bit for bit; rank 0 alone
    wrote the checkpoint and holds the folder's lock, so the other rank's resume is not refused."""
    overrides = [*MOONS, "train.epochs=3", "train.checkpoint_every=2"]
    whole = tmp_path / "whole"
    run_two("realnvp_moons", overrides, whole)
    killed = tmp_path / "killed"
    done = torchrun("-m", "zoo", "run", "realnvp_moons", *overrides, "--out", str(killed), "--no-progress",
                    env={"ZOO_TEST_KILL_AT": "step:5"})
    assert done.returncode != 0
    info = json.loads((killed / "run.json").read_text())
    assert info["status"] == "running" and info["checkpoint"]["global_step"] == 4
    resumed = subprocess.run([sys.executable, "-m", "zoo", "run", "--resume", str(killed), "--nproc", "2",
                              "--no-progress"], capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert json.loads((killed / "run.json").read_text())["status"] == "complete"
    wa, wb = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in records(whole)]
    assert [{k: v for k, v in r.items() if k != "time"} for r in records(killed)] == strip
