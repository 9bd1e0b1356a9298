"""Run tracking (zoo.tracking): TensorBoard read back from its event files, Weights & Biases in
its offline mode read back from its run log, the per-layer log-determinants, and the refusals."""

import gc
import json
import struct

import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo import tracking
from zoo.cli import main
from zoo.errors import TrackingError, TrainingError

MOONS = {
    "name": "tracked_moons",
    "dataset": {"name": "moons", "n_train": 256, "n_val": 128, "n_test": 128, "batch_size": 64},
    "model": {"layers": [{"repeat": 2, "layers": [{"name": "actnorm"}, {"name": "affine_coupling", "hidden": 8},
                                                  {"name": "reverse"}]}]},
    "train": {"epochs": 3, "lr": 1e-2, "seed": 0, "sample_every": 1},
}
LAYERS = ["0_actnorm", "1_affine_coupling", "2_reverse", "3_actnorm", "4_affine_coupling", "5_reverse"]


def quiet(*_):
    pass


def recipe(**train):
    data = json.loads(json.dumps(MOONS))
    data["train"].update(train)
    return zoo.load_recipe(data)


def history_of(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    return zoo.run(recipe(log=["tensorboard"]), out=tmp_path_factory.mktemp("tb") / "run",
                   progress=False, log=quiet)


# --- TensorBoard ---------------------------------------------------------------------------------


def test_tensorboard_event_files_hold_the_scalars_histograms_and_pictures(tensorboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_run.folder / "tensorboard"),
                              size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    events.Reload()
    history = history_of(tensorboard_run.folder)
    for tag, key in (("val/nll", "val_nll"), ("train/loss", "train_loss"), ("train/lr", "lr")):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in history], tag
    metrics = tensorboard_run.metrics
    assert events.Scalars("test/nll")[0].value == pytest.approx(metrics["test_nll"], rel=1e-6)
    assert events.Scalars("time/ms_per_batch")[0].value == pytest.approx(metrics["ms_per_batch"], rel=1e-6)
    histograms = events.Tags()["histograms"]
    assert sorted(histograms) == sorted(f"logdet/{name}" for name in LAYERS)
    assert [h.step for h in events.Histograms("logdet/1_affine_coupling")] == [1, 2, 3]
    assert all(h.histogram_value.num == 64 for h in events.Histograms("logdet/0_actnorm"))  # one batch
    # epochs 1 and 2 (sample_every) and the final density: one tag, the epoch as its step
    assert [e.step for e in events.Images("samples/density")] == [1, 2, 3]
    assert "recipe" in " ".join(events.Tags()["tensors"])


def test_tracking_leaves_the_training_unchanged(tmp_path):
    """Image data draw their dequantization noise from the global random stream in training:
    the histogram pass (a validation batch, dequantized too) must not draw from it."""
    digits = {"name": "tracked_digits", "dataset": {"name": "digits", "batch_size": 32},
              "model": {"layers": [{"name": "dequantize"}, {"name": "normalize", "scale": 17.0},
                                   {"name": "logit"}, {"name": "squeeze"}, {"name": "affine_coupling", "hidden": 8}]},
              "train": {"epochs": 3, "max_steps_per_epoch": 2, "max_eval_examples": 64, "n_samples": 4}}
    plain = zoo.run(zoo.load_recipe(digits), out=tmp_path / "plain", progress=False, log=quiet)
    digits["train"]["log"] = ["tensorboard"]
    tracked = zoo.run(zoo.load_recipe(digits), out=tmp_path / "tracked", progress=False, log=quiet)
    assert [r["val_nll"] for r in history_of(plain.folder)] == [r["val_nll"] for r in history_of(tracked.folder)]
    assert [r["train_loss"] for r in history_of(plain.folder)] == [r["train_loss"] for r in history_of(tracked.folder)]
    assert plain.metrics["test_nll"] == tracked.metrics["test_nll"]
    plain_weights = load_file(plain.folder / "model.safetensors")
    tracked_weights = load_file(tracked.folder / "model.safetensors")
    assert plain_weights.keys() == tracked_weights.keys()
    assert all(torch.equal(plain_weights[k], tracked_weights[k]) for k in plain_weights)
    assert not (plain.folder / "tensorboard").exists()  # train.log defaults to []


def test_overwriting_a_tracked_run_drops_its_old_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    zoo.run(recipe(log=["tensorboard"], epochs=3), out=out, progress=False, log=quiet)
    zoo.run(recipe(log=["tensorboard"], epochs=1, sample_every=None), out=out, progress=False, log=quiet,
            overwrite=True)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/nll")] == [1]


# --- Weights & Biases, offline -------------------------------------------------------------------


def wandb_records(path):
    """The records of a wandb run log (``run-ID.wandb``): its 7-byte header, then LevelDB-style
    blocks of 32 KiB holding chunks (checksum, length, type: full / first / middle / last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb run log"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0:
            position += block - position % block if position % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow
def test_wandb_offline_run_logs_the_scalars_histograms_pictures_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    result = zoo.run(recipe(log=["wandb"]), out=tmp_path / "run", progress=False, log=quiet)
    logs = list((result.folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    history, summary, config, exit_codes, names = {}, {}, {}, [], []
    for record in wandb_records(logs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            names.append((record.run.project, record.run.display_name))
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "exit":
            exit_codes.append(record.exit.exit_code)
    for record in history_of(result.folder):
        row = history[record["epoch"]]
        assert row["val/nll"] == record["val_nll"] and row["train/loss"] == record["train_loss"]
        assert {f"logdet/{name}/_type" for name in LAYERS} <= set(row)
        assert row["logdet/1_affine_coupling/_type"] == "histogram"
        assert row["samples/density/_type"] == "image-file"
    assert summary["test_nll"] == result.metrics["test_nll"]
    assert summary["ms_per_sample"] == result.metrics["ms_per_sample"]
    assert config["name"] == "tracked_moons" and config["train"]["log"] == ["wandb"]  # the recipe
    assert names == [("zoo", "run")]  # project zoo, named after the run folder
    assert exit_codes == [0]
    assert list((result.folder / "wandb").glob("offline-run-*/files/media/images/samples/*.png"))


def test_wandb_that_cannot_start_says_how_to_run_offline(tmp_path, monkeypatch):
    import wandb

    def no_key(**kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", no_key)
    with pytest.raises(TrackingError, match="wandb could not start a run .*api_key.*WANDB_MODE=offline"):
        zoo.run(recipe(log=["wandb"], epochs=1), out=tmp_path / "run", progress=False, log=quiet)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed"


# --- refusals and closing ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_a_missing_extra_is_refused_before_anything_is_built(tmp_path, monkeypatch, capsys, name):
    monkeypatch.setitem(tracking.MODULES, name, "zoo_tests_no_such_module")
    with pytest.raises(TrackingError, match=rf"train.log names {name}.*pip install 'zoo-flows\[{name}\]'"):
        zoo.run(recipe(log=[name]), out=tmp_path / "run", progress=False, log=quiet)
    assert not (tmp_path / "run").exists()
    (tmp_path / "r.yaml").write_text(json.dumps({**MOONS, "train": {"log": [name]}}))
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "cli"), "--no-progress"]) == 2
    assert f"pip install 'zoo-flows[{name}]'" in capsys.readouterr().err


def test_an_unknown_tracker_is_a_recipe_error():
    with pytest.raises(zoo.ZooError, match=r"\$.train.log\[0\]: 'tensorbord' is not one of"):
        zoo.load_recipe({**MOONS, "train": {"log": ["tensorbord"]}})


def test_a_failed_run_closes_its_trackers(tmp_path):
    with pytest.raises(TrainingError):
        zoo.run(recipe(log=["tensorboard"], lr=1e6, epochs=3), out=tmp_path / "run", progress=False, log=quiet)
    gc.collect()  # the failed run's state is gone: its trackers closed with it
    assert tracking._OPEN == {}


# --- the per-layer log-determinants --------------------------------------------------------------


def test_layer_logdets_add_up_to_the_models_and_leave_the_layers_as_they_were():
    model = zoo.build_model({
        "name": "multiscale", "dataset": {"name": "digits"},
        "model": {"layers": [{"name": "dequantize"}, {"name": "normalize", "scale": 17.0}, {"name": "logit"},
                             {"name": "squeeze"}, {"name": "actnorm"}, {"name": "affine_coupling", "hidden": 8},
                             {"name": "split"}, {"name": "affine_coupling", "hidden": 8}]},
    })
    model.initialize(torch.rand(32, 1, 8, 8) * 16)
    model.eval()
    x = torch.rand(16, 1, 8, 8) * 16
    squeeze, split = model.layers[3], model.layers[6]
    rng = torch.get_rng_state()
    per_layer = tracking.layer_logdets(model, x)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [key.split("_")[0] for key in per_layer] == [str(i) for i in range(8)]  # every layer, the split too
    assert all(v.shape == (16,) for v in per_layer.values())
    torch.manual_seed(tracking.HISTOGRAM_SEED)  # the same dequantization noise as the pass
    total = model(x)[1]
    assert torch.allclose(sum(per_layer.values()), total, rtol=1e-5, atol=1e-3)
    assert "factor" not in vars(split) and isinstance(squeeze.factor, int)  # Squeeze's own attribute kept
    assert not any(m._forward_hooks for m in model.layers)


def test_scalar_tags_name_what_was_measured():
    record = {"epoch": 3, "train_loss": 1.5, "val_nll": 1.2, "val_bpd": None, "lr": 1e-3, "time": 1e9, "best": True}
    assert tracking.scalar_tags(record) == {"train/loss": 1.5, "val/nll": 1.2, "train/lr": 1e-3}
    assert tracking.final_tags({"test_nll": 1.0, "test_examples": 128, "ms_per_batch": 2.0, "dataset": "moons"}) == {
        "test/nll": 1.0, "time/ms_per_batch": 2.0}
    assert [tracking.picture_tag(n) for n in ("epoch0005.png", "final.png", "epoch0002_density.png",
                                              "final_target.png", "sample_t0.7.png")] == [
        "samples/grid", "samples/grid", "samples/density", "samples/target", "samples/sample_t0.7"]
    assert tracking.picture_step("epoch0005_density.png", 9) == 5 and tracking.picture_step("final.png", 9) == 9


def test_an_energy_run_logs_its_free_energy_and_no_data_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_energy import energy_recipe

    base = energy_recipe(steps=10, epochs=2)
    tracked = zoo.load_recipe({**base, "train": {**base["train"], "log": ["tensorboard"]}})
    result = zoo.run(tracked, out=tmp_path / "run", progress=False, log=quiet)
    events = EventAccumulator(str(result.folder / "tensorboard"))
    events.Reload()
    history = history_of(result.folder)
    assert [e.value for e in events.Scalars("val/free_energy")] == pytest.approx([r["val_free_energy"] for r in history])
    assert events.Tags()["histograms"] == []  # an energy target has no data batch to push through
    assert [e.step for e in events.Images("samples/target")] == [2]
