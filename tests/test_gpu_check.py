"""bench/gpu_check.py end to end on the CPU (--cpu-smoke): every section, finite numbers; and
without CUDA or --cpu-smoke, a JSON that says "no CUDA device" and exit 0."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_check.py"
RECIPES = {"glow_mnist_small", "if_glow_mnist", "selfnorm_glow_mnist"}


def run_script(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    env.pop("TRITON_INTERPRET", None)  # the script must set it itself for --cpu-smoke
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_cpu_smoke_writes_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_script("--cpu-smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu-smoke" and report["status"] == "ok"

    kernels = report["kernels"]
    assert {r["kernel"] for r in kernels} == {"solve", "dy", "conv", "dw"}
    for row in kernels:
        for way in ("triton", "twin"):
            assert finite(row[way]["max_abs"]) and finite(row[way]["rel"])
            assert row[way]["rel"] < 1e-5, row  # float32 against the float64 dense reference

    timing = report["inverse_conv_timing"]
    assert len(timing) == 2
    for row in timing:
        assert {"triton", "twin", "conv2d"} <= set(row["ms"])
        assert all(finite(ms) and ms > 0 for ms in row["ms"].values())
        assert ("dense" in row["ms"]) != ("dense" in row.get("skipped", {}))
    assert "dense" in timing[0]["ms"] and "dense" in timing[1]["skipped"]  # the large one skips

    train = report["train"]
    assert {(r["recipe"], r["dtype"]) for r in train} == {(n, d) for n in RECIPES for d in ("float32", "bf16")}
    for row in train:  # bf16 through zoo.precision (CPU autocast here), as zoo run's step
        assert "error" not in row, row
        assert finite(row["steps_per_s"]) and row["steps_per_s"] > 0
        assert finite(row["last_loss"])
        assert row["logdet_dtype"] == "float32"  # summed in float32 under bf16 too

    sampling = report["sampling"]
    assert {r["recipe"] for r in sampling} == RECIPES
    for row in sampling:
        assert finite(row["ms_per_image"]) and row["ms_per_image"] > 0 and row["samples_finite"]
    assert "training steps per second" in done.stdout and "wrote" in done.stdout


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "nested" / "gpu_check.json"
    done = run_script("--out", str(out), env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no CUDA device" in done.stdout
    report = json.loads(out.read_text())
    assert report["status"] == "no CUDA device" and report["device"] is None
    assert "kernels" not in report
