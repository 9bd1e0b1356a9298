"""The run report (zoo.report): what `zoo run` and `zoo report` write, checked with html.parser
and Pillow, and in a real headless browser (Chromium) where one is installed."""

import json
import os
import shutil

import pytest
import torch
import yaml

import zoo
from zoo import report, runs
from zoo._svg_chart import Chart
from zoo.cli import main
from zoo.errors import WeightsError

from browser import PAGE_FACTS, REQUIRE_ENV, Browser, find_browser
from report_checks import (assert_images_decode, assert_numbers_match, assert_self_contained,
                           page_facts)

MOONS = {
    "name": "report_moons",
    "description": "two moons for the report tests",
    "dataset": {"name": "moons", "n_train": 256, "n_val": 128, "n_test": 128, "batch_size": 64},
    "model": {"layers": [{"repeat": 2, "layers": [{"name": "actnorm"}, {"name": "affine_coupling", "hidden": 8},
                                                  {"name": "reverse"}]}]},
    "train": {"epochs": 3, "lr": 1e-2, "seed": 0, "sample_every": 1},
}
DIGITS = {
    "name": "report_digits",
    "dataset": {"name": "digits", "batch_size": 64},
    "model": {"layers": [{"name": "dequantize"}, {"name": "normalize", "scale": 17.0},
                         {"name": "logit", "alpha": 1e-6}, {"name": "squeeze"},
                         {"name": "affine_coupling", "hidden": 8}, {"name": "split"}]},
    "train": {"epochs": 1, "lr": 1e-3, "max_steps_per_epoch": 2, "n_samples": 4},
}
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'


def quiet(*_):
    pass


def train(tmp_path, name, recipe=MOONS, **train_overrides):
    data = json.loads(json.dumps(recipe))
    data["train"].update(train_overrides)
    return zoo.run(zoo.load_recipe(data), out=tmp_path / name, progress=False, log=quiet)


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("report"), "run").folder


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A run whose folder carries markup everywhere a string can be: the recipe's description
    and tags, a plugin's version in run.json, a picture's file name; and a damaged picture."""
    tmp = tmp_path_factory.mktemp("hostile")
    data = json.loads(json.dumps(MOONS))
    data.update(description=HOSTILE, tags=[HOSTILE])
    data["train"].update(epochs=1, sample_every=None)
    folder = zoo.run(zoo.load_recipe(data), out=tmp / "run", progress=False, log=quiet).folder
    info = json.loads((folder / "run.json").read_text())
    info["plugins"]["layers_basic"]["version"] = HOSTILE
    (folder / "run.json").write_text(json.dumps(info))
    shutil.copy(folder / "samples" / "final_density.png", folder / "samples" / '<img src=x onerror="alert(1)">.png')
    (folder / "samples" / "broken.png").write_bytes(runs.PNG_SIGNATURE + b"not a picture")
    assert main(["report", str(folder)]) == 0
    return folder


# --- the page of one run -------------------------------------------------------------------------


def test_zoo_run_writes_a_report_whose_numbers_are_metrics_json(moons_run):
    page = (moons_run / "report.html").read_text()
    assert_self_contained(page)
    facts = page_facts(page)
    assert_images_decode(facts, at_least=3)  # epoch 1 and 2 densities and the final one
    compared = assert_numbers_match(facts["numbers"], [metrics_of(moons_run)])
    assert compared >= 10
    assert facts["scripts"] == 0 and facts["svgs"] >= 2 and facts["polylines"] >= 2
    text = facts["text"]
    for shown in ("report_moons", "two moons for the report tests", "affine_coupling", "datasets_toy",
                  "time per training batch", "time per sample", "bits/dim", zoo.__version__):
        assert shown in text, shown


def test_the_curves_are_the_evaluations_of_metrics_jsonl(moons_run):
    history = [json.loads(line) for line in (moons_run / "metrics.jsonl").read_text().splitlines()]
    view = report.read_run(moons_run)
    assert report._series(view, "val_nll") == [(r["epoch"], r["val_nll"]) for r in history]
    assert report._series(view, "train_loss") == [(r["epoch"], r["train_loss"]) for r in history]


def test_the_model_summary_lists_every_layer_with_its_shapes_and_parameters(moons_run):
    recipe, model = runs.load_folder(moons_run)
    summary = report._model_summary(report.read_run(moons_run))
    rows = summary.split("<tr>")[2:]
    assert len(rows) == len(model.layers) == 6
    for row, layer in zip(rows, model.layers):
        assert f">{sum(p.numel() for p in layer.parameters()):,}<" in row
    assert f"{sum(p.numel() for p in model.parameters()):,} parameters" in summary


def test_a_chart_draws_lines_through_its_points_and_breaks_at_non_finite_ones():
    chart = Chart("t", "epoch", "nats")
    chart.add("a", [(1, 3.0), (2, 1.0), (3, float("nan")), (4, 2.0), (5, 2.5)])
    svg = chart.to_svg()
    assert svg.count("<polyline") == 2  # 1-2 and 4-5: the NaN breaks the line
    first = [tuple(map(float, p.split(","))) for p in svg.split('points="')[1].split('"')[0].split()]
    (x1, y1), (x2, y2) = first
    assert x2 > x1 and y2 > y1  # the value falls from 3 to 1: the line goes down the page
    assert "no finite values" in Chart("empty", "epoch", "nats").to_svg()


def test_every_string_from_the_run_folder_is_escaped(hostile_run):
    page = (hostile_run / "report.html").read_text()
    assert_self_contained(page)  # no <script>, no onerror=, nothing fetched
    facts = page_facts(page)
    assert_images_decode(facts)
    assert facts["text"].count(HOSTILE) >= 2  # shown as text: the description and a plugin's version
    assert '<img src=x onerror="alert(1)">.png' in facts["text"]  # the picture's name, as text
    assert "samples/broken.png does not decode" in facts["text"]


def test_a_cut_short_metrics_log_line_is_left_out_and_said(tmp_path, moons_run):
    folder = tmp_path / "run"
    shutil.copytree(moons_run, folder)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "val_nl')  # what SIGKILL mid-write leaves
    view = report.read_run(folder)
    assert len(view.history) == 3 and any("1 line(s)" in note for note in view.notes)


def test_an_oversized_metrics_log_is_refused(tmp_path, moons_run, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(moons_run, folder)
    monkeypatch.setattr(runs, "MAX_LOG_BYTES", 100)
    with pytest.raises(WeightsError, match="metrics.jsonl: .* more than the 100"):
        report.read_run(folder)


def test_a_picture_linked_from_outside_the_folder_is_not_inlined(tmp_path, moons_run):
    folder = tmp_path / "run"
    shutil.copytree(moons_run, folder)
    outside = tmp_path / "secret.png"
    shutil.copy(folder / "samples" / "final_density.png", outside)
    (folder / "samples" / "linked.png").symlink_to(outside)
    assert "linked.png" not in [name for name, _ in runs.read_pictures(folder)]


def test_overwriting_a_run_drops_the_old_runs_pictures_and_report(tmp_path):
    first = train(tmp_path, "run", epochs=2, sample_every=1).folder
    assert (first / "samples" / "epoch0001_density.png").is_file()
    data = json.loads(json.dumps(MOONS))
    data["train"].update(epochs=1, sample_every=None)
    zoo.run(zoo.load_recipe(data), out=first, progress=False, log=quiet, overwrite=True)
    assert sorted(p.name for p in (first / "samples").iterdir()) == ["final_density.png"]
    assert "epoch0001_density" not in (first / "report.html").read_text()


def test_an_image_run_shows_grids_at_several_temperatures_drawn_from_a_fixed_seed(tmp_path):
    folder = train(tmp_path, "digits", DIGITS).folder
    page = (folder / "report.html").read_text()
    facts = page_facts(page)
    assert_self_contained(page)
    assert_images_decode(facts, at_least=4)  # final.png and the three temperatures
    for temperature in report.TEMPERATURES:
        assert f"samples at temperature {temperature:g}" in facts["text"]
    assert_numbers_match(facts["numbers"], [metrics_of(folder)])
    assert "test_bpd" in [n["key"] for n in facts["numbers"]]
    model = runs.load_folder(folder)[1]
    state = torch.get_rng_state()
    drawn = [p.png for p in report.temperature_pictures(model)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert drawn == [p.png for p in report.temperature_pictures(model)] and len(set(drawn)) == 3
    shown = [p.png for p in report.read_run(folder).pictures if "temperature" in p.caption]
    assert shown == drawn  # the page's grids are these


# --- comparing runs and the command --------------------------------------------------------------


def test_zoo_report_compares_runs_side_by_side(tmp_path, moons_run, capsys):
    other = train(tmp_path, "other", lr=3e-3, epochs=2).folder
    out = tmp_path / "compare.html"
    assert main(["report", str(moons_run), str(other), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    assert_self_contained(page)
    facts = page_facts(page)
    assert_numbers_match(facts["numbers"], [metrics_of(moons_run), metrics_of(other)])
    assert facts["polylines"] >= 4  # validation and train loss, one line per run each
    assert_images_decode(facts, at_least=2)


def test_zoo_report_default_outputs(tmp_path, moons_run, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(moons_run, folder)
    (folder / "report.html").unlink()
    assert main(["report", str(folder)]) == 0 and (folder / "report.html").is_file()
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(folder), str(folder)]) == 0 and (tmp_path / "report.html").is_file()


def test_zoo_report_refusals_name_the_fix(tmp_path, moons_run, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["report", str(moons_run), "--out", str(tmp_path)]) == 2
    assert "is a folder; name the report's file" in capsys.readouterr().err
    assert main(["report", str(moons_run), "--out", str(tmp_path / "no" / "x.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    edited = tmp_path / "edited"
    shutil.copytree(moons_run, edited)
    recipe = yaml.safe_load((edited / "recipe.yaml").read_text())
    recipe["train"]["lr"] = 0.5
    (edited / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["report", str(edited)]) == 2
    assert "edited after training" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_does_not_undo_the_run(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise WeightsError("refused for the test")

    monkeypatch.setattr(report, "write_run_report", refuse)
    lines = []
    result = zoo.run(zoo.load_recipe({**MOONS, "train": {"epochs": 1}}), out=tmp_path / "run",
                     progress=False, log=lines.append)
    assert json.loads((result.folder / "run.json").read_text())["status"] == "complete"
    assert any("report was not written: refused for the test" in line for line in lines)


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable = find_browser()
    if executable is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{REQUIRE_ENV} is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("no chromium here (apt-get install chromium); the html.parser checks above still ran")
    instance = Browser(executable)
    yield instance
    instance.close()


def test_the_report_in_a_headless_browser(browser, moons_run, hostile_run, tmp_path):
    other = train(tmp_path, "other", lr=3e-3, epochs=2).folder
    compare = tmp_path / "compare.html"
    report.write_comparison([moons_run, other], compare)
    pages = [(moons_run / "report.html", [metrics_of(moons_run)], 2),  # train and validation lines
             (compare, [metrics_of(moons_run), metrics_of(other)], 4),
             (hostile_run / "report.html", [metrics_of(hostile_run)], 0)]  # 1 epoch: points, no lines
    for path, metrics, lines in pages:
        shown = browser.open_page(path, PAGE_FACTS)
        assert shown["errors"] == [], (path, shown["errors"])  # no console error, no CSP violation
        facts = shown["value"]
        assert_images_decode(facts)
        assert assert_numbers_match(facts["numbers"], metrics) >= 10
        assert facts["scripts"] == 0 and facts["svgs"] >= 2 and facts["polylines"] >= lines
        assert facts["title"] != "pwned" and "zoo" in facts["title"]
    assert HOSTILE in facts["text"]  # the hostile page shows the markup as text


def test_an_energy_run_reports_its_free_energy(tmp_path):
    from test_energy import energy_recipe

    recipe = energy_recipe(steps=10, epochs=2)
    folder = zoo.run(recipe, out=tmp_path / "run", progress=False, log=quiet).folder
    page = (folder / "report.html").read_text()
    assert_self_contained(page)
    facts = page_facts(page)
    assert_images_decode(facts)  # the target beside the learned q
    assert_numbers_match(facts["numbers"], [metrics_of(folder)])
    assert "test_free_energy" in [n["key"] for n in facts["numbers"][:4]]  # the headline
    assert "validation free energy" in facts["text"] and facts["polylines"] >= 2
