"""bench/coupling_net.py in its --smoke mode: every way of running a coupling network agrees with
F.conv2d in float64, the step breakdown is consistent, and the model is left as it was built."""

from __future__ import annotations

import json
import math

import torch

import zoo.plugins._few_outputs_conv as few_outputs

import bench_scripts

def load_script():
    return bench_scripts.load("coupling_net")


def test_smoke_run_writes_a_consistent_report(tmp_path, capsys):
    bench = load_script()
    pays_off = few_outputs.pays_off
    out = tmp_path / "coupling_net.json"
    assert bench.main(["--smoke", "--out", str(out)]) == 0
    assert few_outputs.pays_off is pays_off  # the benchmark's switch is undone

    report = json.loads(out.read_text())
    assert report["smoke"] is True
    step = report["step"]
    for key in ("step_ms", "last_conv_onednn_ms", "without_networks_ms"):
        assert math.isfinite(step[key]) and step[key] > 0, key
    assert math.isclose(step["networks_ms"], step["step_ms"] - step["without_networks_ms"], abs_tol=1e-2)
    # the two levels of the smoke Glow: (2, 14, 14) and (4, 7, 7) inputs, largest image first
    assert [n["input"] for n in report["networks"]] == [[2, 14, 14], [4, 7, 7]]
    for network in report["networks"]:
        assert set(network["ms"]) == set(bench.WAYS)
        assert all(error < 1e-10 for error in network["float64_error"].values()), network
        assert network["count"] == 1 and network["flops"] > 0
    assert report["bound"]["matmul_gflops"] > 0

    printed = capsys.readouterr().out
    assert "| network input | width | out | count | NCHW |" in printed
    assert "wrote" in printed


def test_each_way_of_the_network_matches_nchw_at_the_full_width():
    bench = load_script()
    errors = bench.exactness((2, 6, 5), width=64, cout=4)  # 9 x 4 <= 64: zoo's product form
    assert set(errors) == set(bench.WAYS)
    assert max(errors.values()) < 1e-10


def test_stand_in_keeps_the_step_connected_and_is_removed(tmp_path):
    bench = load_script()
    peers = bench.peers
    size = dict(peers.SMOKE)
    torch.manual_seed(0)
    batch = peers.batches("Glow-small", size, 1)[0]
    side = peers.zoo_side("Glow-small", size, batch)
    nets = bench.coupling_networks(side.module)
    assert len(nets) == 2
    before = [p.detach().clone() for p in side.module.parameters()]
    bench.step_breakdown(side, batch, reps=1)
    assert all("forward" not in net.__dict__ for net in nets)
    assert any(not torch.equal(a, p) for a, p in zip(before, side.module.parameters()))  # Adam stepped
