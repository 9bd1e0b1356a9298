"""bench/peers.py in its --smoke mode with the peer libraries made unimportable: zoo's numbers
for every model, dashes (JSON nulls) for every peer, the table and the chart written."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import bench_scripts

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    return bench_scripts.load("peers")


def block_peers(tmp_path: Path) -> Path:
    """A folder of stand-ins that fail to import, as an environment without the peers would."""
    shims = tmp_path / "no_peers"
    for name in ("normflows", "zuko", "nflows"):
        (shims / name).mkdir(parents=True)
        (shims / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed')\n")
    return shims


def test_smoke_without_peers_gives_dashes(tmp_path, monkeypatch, capsys):
    peers = load_script()
    shims = block_peers(tmp_path)
    monkeypatch.setenv("PYTHONPATH", f"{shims}:{ROOT}")  # the child process sees the stand-ins
    monkeypatch.setattr(sys, "path", [str(shims), *sys.path])
    out = tmp_path / "peers.json"
    assert peers.main(["--smoke", "--out", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["smoke"] is True
    assert set(report["models"]) == set(peers.MODELS)
    for model, row in report["models"].items():
        zoo = row["zoo"]
        assert zoo["parameters"] > 0, model
        for key in ("step_ms", "log_prob_ms", "sample_ms"):
            assert math.isfinite(zoo[key]) and zoo[key] > 0, (model, key)
        assert zoo["peak_mb"] is None or zoo["peak_mb"] >= 0
        for peer in peers.PEERS:
            assert row[peer] is None, (model, peer)
        assert all(ratio is None for ratio in row["ratios"].values())

    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| Glow-small")]
    assert table and " - / - / -" in table[0]
    assert out.with_suffix(".png").stat().st_size > 1000


def test_ratios_are_zoo_over_each_peer():
    peers = load_script()
    row = {"zoo": {"step_ms": 2.0, "log_prob_ms": 1.0, "sample_ms": 4.0, "peak_mb": None},
           "normflows": {"step_ms": 4.0, "log_prob_ms": 0.5, "sample_ms": 4.0, "peak_mb": 3.0},
           "zuko": None, "nflows": None}
    ratios = peers.ratios(row)
    assert ratios["zoo/normflows step_ms"] == 0.5
    assert ratios["zoo/normflows log_prob_ms"] == 2.0
    assert ratios["zoo/normflows peak_mb"] is None  # zoo's is missing
    assert ratios["zoo/zuko step_ms"] is None
