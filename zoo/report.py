"""The run report: one self-contained HTML page of a run (``zoo report RUN``, and ``zoo run`` at
its end writes ``RUN/report.html``), or of several runs side by side (``zoo report RUN1 RUN2
--out FILE``).

A run's page holds its headline numbers (test NLL, bits/dim, best epoch), the loss and
validation curves of metrics.jsonl, the sample pictures of ``samples/`` (for an image model also
grids drawn now at several temperatures), the model summary (each layer's parameters and
shapes, from ``model.shapes``), every number of metrics.json (time per batch and per sample
among them), the device, the plugins and versions of run.json, and the resolved recipe. A
comparison overlays the runs' curves, puts their metrics in one table and their final pictures
side by side.

The page is safe to open from a stranger's run folder: everything is read through ``zoo.runs``
(the one loader: bounded JSON, the weights checked), every string from the folder is
HTML-escaped, and the page has no script at all and a Content-Security-Policy that forbids
scripts and any network access; pictures are inlined as ``data:`` URIs and curves are inline SVG
(``zoo._svg_chart``), so it needs nothing but the file. Each number a table shows carries its
metrics.json key (``data-metric``), so tests compare what is shown with the file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

import zoo
from zoo import runs
from zoo._atomic import write_text
from zoo._svg_chart import PALETTE, Chart
from zoo.errors import TrackingError, WeightsError, ZooError

REPORT_FILE = runs.REPORT_FILE
TEMPERATURES = (0.5, 0.7, 1.0)  # the extra sample grids of an image model
GRID_SAMPLES = 16
GRID_SEED = 0
MAX_TEXT = 300  # characters of one string from the run folder shown in a cell
MAX_METRICS = 200  # metrics.json keys shown
MAX_RUNS = 16  # runs in one comparison
MIN_DISPLAY = 200  # pixels: narrower pictures are shown enlarged
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
UNITS = {
    "test_nll": "nats", "val_nll": "nats", "test_bpd": "bits/dim", "val_bpd": "bits/dim",
    "test_free_energy": "nats", "val_free_energy": "nats", "test_kl": "nats", "val_kl": "nats",
    "log_z": "nats", "ms_per_batch": "ms", "ms_per_sample": "ms", "train_loss": "nats",
}


@dataclass
class Picture:
    caption: str
    png: bytes
    width: int
    height: int

    def display_size(self) -> tuple[int, int]:
        """Small pictures (8x8 digits' grids) are shown enlarged by a whole factor, pixels sharp."""
        zoom = max(1, MIN_DISPLAY // max(self.width, 1))
        return self.width * zoom, self.height * zoom


@dataclass
class RunView:
    """What a report shows of one run, read through ``zoo.runs``."""

    folder: Path
    recipe: Any
    model: Any
    info: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.recipe.get("name", self.folder.name))


# --- reading -------------------------------------------------------------------------------------


def read_run(folder: str | os.PathLike, loaded: tuple[Any, Any] | None = None,
             temperature_grids: bool = True) -> RunView:
    """A run folder's view. ``loaded`` is its ``(recipe, model)`` when the caller holds them
    (the training loop), else ``zoo.runs.load_folder`` reads and checks them."""
    folder = Path(folder)
    if not folder.is_dir():
        runs.refuse_missing_run_folder(str(folder))
        raise WeightsError(f"no such run folder: {folder}. Pass the folder that `zoo run` printed.")
    config = runs.folder_config(folder)
    recipe, model = loaded if loaded is not None else runs.load_folder(folder)
    info = runs.read_json(config["where"])
    info = info if isinstance(info, dict) else {}
    notes = []
    metrics_path = folder / runs.METRICS_FILE
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        metrics = runs.read_json(metrics_path)
        if not isinstance(metrics, dict):
            raise WeightsError(f"{metrics_path}: not a mapping of metrics; the file is damaged")
    else:
        notes.append("metrics.json is missing: the run has not finished (no test metrics yet).")
    history, skipped = runs.read_metrics_log(folder)
    if skipped:
        notes.append(f"metrics.jsonl: {skipped} line(s) are not evaluation records and are left out.")
    view = RunView(folder, recipe, model, info, metrics, history, notes=notes)
    view.pictures = _decodable(runs.read_pictures(folder), notes)
    # (a conditional flow's own picture has a row per class; a classifier draws no samples)
    if (temperature_grids and model is not None and len(tuple(model.shape)) == 3
            and hasattr(model, "sample") and not getattr(model, "conditional", False)):
        view.pictures += temperature_pictures(model)
    return view


def _decodable(pictures: list[tuple[str, bytes]], notes: list[str]) -> list[Picture]:
    """The pictures that decode (Pillow), captioned with their file name; the others named in
    a note, so the page never holds an image that does not show."""
    from PIL import Image

    kept = []
    for name, data in pictures:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                width, height = image.size
        except Exception:  # noqa: BLE001 - whatever Pillow raises, the file is not a picture
            notes.append(f"samples/{name} does not decode as a PNG and is left out.")
            continue
        kept.append(Picture(f"samples/{name}", data, width, height))
    return kept


@torch.no_grad()
def temperature_pictures(model, temperatures: Sequence[float] = TEMPERATURES,
                         n: int = GRID_SAMPLES) -> list[Picture]:
    """Sample grids of an image model at several temperatures, drawn now from a fixed seed
    (the caller's random stream is left as it was)."""
    from PIL import Image

    from zoo.visualize import image_grid

    reference = next(model.parameters(), None)
    devices = [reference.device] if reference is not None and reference.device.type == "cuda" else []
    was_training = model.training
    pictures = []
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            for temperature in temperatures:
                torch.manual_seed(GRID_SEED)
                grid = image_grid(model.sample(n, temperature=temperature), model.n_bits)
                buffer = io.BytesIO()
                Image.fromarray(grid).save(buffer, format="PNG")
                pictures.append(Picture(f"{n} samples at temperature {temperature:g} (drawn for this report)",
                                        buffer.getvalue(), grid.shape[1], grid.shape[0]))
    finally:
        model.train(was_training)
    return pictures


# --- writing -------------------------------------------------------------------------------------


def write_run_report(folder: str | os.PathLike, loaded: tuple[Any, Any] | None = None,
                     out: str | os.PathLike | None = None) -> Path:
    """Write one run's page to ``out`` (default ``RUN/report.html``); return its path."""
    view = read_run(folder, loaded)
    return _write(Path(out) if out else Path(folder) / REPORT_FILE, render_run(view))


def write_comparison(folders: Sequence[str | os.PathLike], out: str | os.PathLike = REPORT_FILE) -> Path:
    """Write the side-by-side page of several runs to ``out``; return its path."""
    if len(folders) > MAX_RUNS:
        raise TrackingError(f"zoo report: {len(folders)} runs; a comparison shows at most {MAX_RUNS}. "
                            "Compare fewer at a time.")
    views = [read_run(folder, temperature_grids=False) for folder in folders]
    return _write(Path(out), render_comparison(views))


def write_after_run(state, log=print) -> Path | None:
    """``zoo run``'s last step: ``RUN/report.html`` from the run still in memory. A report that
    cannot be written is said, and the finished run stays as it is."""
    try:
        path = write_run_report(state.folder, loaded=(state.recipe, state.model))
    except ZooError as exc:
        log(f"note: the run is complete, but its report was not written: {exc}")
        return None
    log(f"report: {path}")
    return path


def _write(path: Path, page: str) -> Path:
    if path.is_dir():
        raise TrackingError(f"--out {path}: is a folder; name the report's file, e.g. {path / REPORT_FILE}")
    if not path.parent.is_dir():
        raise TrackingError(f"--out {path}: the folder {path.parent} does not exist; create it or choose another")
    return write_text(path, page)


# --- formatting ----------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Any value from a run folder as HTML text: a string, shortened to MAX_TEXT, escaped."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "\u2026"
    return html.escape(text, quote=True)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_number(value: int | float) -> str:
    """Integers with thousands separators; floats to 6 significant digits (``nan``, ``inf``)."""
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.6g}"


def number_cell(key: str, value: Any, run: int | None = None) -> str:
    """A table cell with a metrics.json value; numbers carry their key for the page's tests."""
    if not is_number(value):
        return f"<td class=\"str\">{'&mdash;' if value is None else esc(value)}</td>"
    at = f' data-run="{run}"' if run is not None else ""
    return f'<td class="num" data-metric="{esc(key)}"{at}>{format_number(value)}</td>'


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --- the pages -----------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0 auto;max-width:1180px;padding:16px 24px}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:3px}
.sub{color:#666}.notes{background:#fff6e0;border:1px solid #ecd08a;padding:6px 10px}
table{border-collapse:collapse;margin:4px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.str{max-width:360px;overflow-wrap:anywhere}td.num{text-align:right;font-variant-numeric:tabular-nums}
.headline{display:flex;gap:14px;flex-wrap:wrap}.headline div{border:1px solid #ddd;border-radius:6px;padding:6px 12px}
.headline .v{font-size:20px}.pics{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0}figcaption{color:#555;font-size:12px;max-width:640px}img{image-rendering:pixelated;max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;overflow:auto;max-height:520px}
svg.chart{background:#fff}svg.chart text{font:11px sans-serif;fill:#333}svg.chart text.title{font-size:13px}
svg.chart .frame{fill:none;stroke:#999}svg.chart .grid{stroke:#eee}svg.chart .tick{stroke:#999}
.charts{display:flex;gap:14px;flex-wrap:wrap}.cols{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
details{margin:6px 0}summary{cursor:pointer}
"""


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        *body,
        f'<p class="sub">Written by zoo {esc(zoo.__version__)} (torch {esc(torch.__version__)}).</p>',
        "</body></html>",
    ]) + "\n"


def render_run(view: RunView) -> str:
    """One run's page (HTML text)."""
    body = [f"<h1>{esc(view.name)}</h1>", f'<p class="sub">{_subtitle(view)}</p>']
    if view.recipe.get("description"):
        body.append(f"<p>{esc(view.recipe['description'])}</p>")
    if view.notes:
        body.append('<div class="notes">' + "".join(f"<p>{esc(n)}</p>" for n in view.notes) + "</div>")
    body += [_headline(view), "<h2>Curves</h2>", _charts([view])]
    body += ["<h2>Samples</h2>", _pictures(view)]
    body += ["<h2>Metrics (metrics.json)</h2>", _metrics_table([view])]
    body += ["<h2>Model</h2>", _model_summary(view)]
    body += ["<h2>Run: time, device, plugins and versions</h2>", _run_facts(view)]
    body += ["<h2>Recipe</h2>", f"<pre>{esc_block(view.recipe.to_yaml())}</pre>"]
    return _page(f"{view.name}: zoo run report", body)


def render_comparison(views: Sequence[RunView]) -> str:
    """Several runs' page: curves overlaid, one metrics table, final pictures side by side."""
    names = ", ".join(v.name for v in views)
    body = [f"<h1>{len(views)} runs compared</h1>", f'<p class="sub">{esc(names)}</p>',
            "<h2>Runs</h2>", _runs_legend(views), "<h2>Curves</h2>", _charts(views),
            "<h2>Metrics (metrics.json)</h2>", _metrics_table(views), "<h2>Final pictures</h2>",
            '<div class="cols">']
    for index, view in enumerate(views):
        final = [p for p in view.pictures if "final" in p.caption] or view.pictures[-1:]
        pictures = "".join(_figure(p) for p in final) or "<p>no pictures</p>"
        body.append(f"<div><h3>{index + 1}. {esc(view.name)}</h3>{pictures}</div>")
    body.append("</div><h2>Each run</h2>")
    for index, view in enumerate(views):
        notes = "".join(f"<p>{esc(n)}</p>" for n in view.notes)
        body.append(f"<details><summary>{index + 1}. {esc(view.name)} ({esc(str(view.folder))})</summary>"
                    f'{f"<div class=notes>{notes}</div>" if notes else ""}'
                    f"<h3>Model</h3>{_model_summary(view)}<h3>Run</h3>{_run_facts(view, index)}"
                    f"<h3>Recipe</h3><pre>{esc_block(view.recipe.to_yaml())}</pre></details>")
    return _page(f"zoo runs compared: {names}", body)


def esc_block(text: str) -> str:
    """A long text (the recipe) escaped whole, not shortened."""
    return html.escape(text, quote=True)


def _subtitle(view: RunView) -> str:
    info = view.info
    parts = [f"run folder {esc(str(view.folder))}", f"status {esc(info.get('status', 'unknown'))}"]
    if info.get("started"):
        parts.append(f"started {esc(info['started'])}")
    if info.get("ended"):
        parts.append(f"ended {esc(info['ended'])}")
    return " &middot; ".join(parts)


def _headline(view: RunView) -> str:
    m = view.metrics
    if "test_free_energy" in m:
        keys = ["test_free_energy", "test_kl", "best_epoch", "parameters"]
    elif "test_accuracy" in m:  # a classifier, or a generative one
        keys = ["test_accuracy", "test_nll", "best_epoch", "parameters"]
    elif "calibration_error" in m:  # an inverse problem's posterior
        keys = ["test_nll", "calibration_error", "best_epoch", "parameters"]
    else:
        keys = ["test_nll", "test_bpd", "best_epoch", "parameters"]
    labels = {"test_nll": "test NLL", "test_bpd": "bits/dim", "best_epoch": "best epoch",
              "parameters": "parameters", "test_free_energy": "test free energy", "test_kl": "KL(q || p)",
              "test_accuracy": "test accuracy", "calibration_error": "calibration error"}
    boxes = []
    for key in keys:
        value = m.get(key)
        unit = UNITS.get(key, "")
        if is_number(value):
            shown = f'<span class="v" data-metric="{key}">{format_number(value)}</span> {unit}'
        elif key == "test_bpd":
            shown = '<span class="v">&mdash;</span> (bits/dim: image data only)'
        else:
            shown = '<span class="v">&mdash;</span>'
        boxes.append(f"<div>{labels[key]}<br>{shown}</div>")
    return '<div class="headline">' + "".join(boxes) + "</div>"


def _series(view: RunView, key: str) -> list[tuple[float, float]]:
    return [(r["epoch"], float(r[key])) for r in view.history
            if is_number(r.get("epoch")) and is_number(r.get(key))]


def _charts(views: Sequence[RunView]) -> str:
    """Loss and validation curves per epoch; one run: its train and validation lines together;
    several: one line per run and chart."""
    energy = any(any("val_free_energy" in r for r in v.history) for v in views)
    val_key, val_label = ("val_free_energy", "validation free energy") if energy else ("val_nll", "validation NLL")
    charts = []
    if len(views) == 1:
        view = views[0]
        loss = Chart("loss and validation", "epoch", "nats")
        loss.add("train loss", _series(view, "train_loss"), PALETTE[1], dashed=True)
        loss.add(val_label, _series(view, val_key), PALETTE[0])
        charts.append(loss)
        for key, title, unit in (("val_bpd", "validation bits/dim", "bits/dim"), ("val_kl", "validation KL(q || p)", "nats")):
            if any(is_number(r.get(key)) for r in view.history) and (key != "val_bpd" or _is_image(view)):
                chart = Chart(title, "epoch", unit)
                chart.add(title, _series(view, key))
                charts.append(chart)
        lr = Chart("learning rate (at the epoch's end)", "epoch", "lr")
        lr.add("lr", _series(view, "lr"), PALETTE[2])
        charts.append(lr)
    else:
        val = Chart(val_label, "epoch", "nats")
        train = Chart("train loss", "epoch", "nats")
        for index, view in enumerate(views):
            label = f"{index + 1}. {view.name}"
            val.add(label, _series(view, val_key), PALETTE[index % len(PALETTE)])
            train.add(label, _series(view, "train_loss"), PALETTE[index % len(PALETTE)], dashed=True)
        charts += [val, train]
        if all(_is_image(v) for v in views):
            bpd = Chart("validation bits/dim", "epoch", "bits/dim")
            for index, view in enumerate(views):
                bpd.add(f"{index + 1}. {view.name}", _series(view, "val_bpd"), PALETTE[index % len(PALETTE)])
            charts.append(bpd)
    return '<div class="charts">' + "".join(c.to_svg() for c in charts) + "</div>"


def _is_image(view: RunView) -> bool:
    return view.model is not None and len(tuple(view.model.shape)) == 3


def _figure(picture: Picture) -> str:
    width, height = picture.display_size()
    return (f'<figure><img src="{data_uri(picture.png)}" width="{width}" height="{height}" '
            f'alt="{esc(picture.caption)}"><figcaption>{esc(picture.caption)}</figcaption></figure>')


def _pictures(view: RunView) -> str:
    if not view.pictures:
        shape = tuple(view.model.shape)
        if len(shape) == 1 and shape != (2,):
            return f"<p>{shape[0]}-dimensional data have no pictures.</p>"
        return "<p>The run folder has no pictures in samples/.</p>"
    return '<div class="pics">' + "".join(_figure(p) for p in view.pictures) + "</div>"


def _metrics_table(views: Sequence[RunView]) -> str:
    keys: list[str] = []
    for view in views:
        keys += [k for k in view.metrics if k not in keys]
    keys = keys[:MAX_METRICS]
    several = len(views) > 1
    head = "".join(f"<th>{index + 1}. {esc(v.name)}</th>" for index, v in enumerate(views)) if several else "<th>value</th>"
    rows = [f"<table><tr><th>metric</th><th>unit</th>{head}</tr>"]
    for key in keys:
        cells = "".join(number_cell(key, v.metrics.get(key), index if several else None)
                        for index, v in enumerate(views))
        rows.append(f"<tr><th>{esc(key)}</th><td>{esc(UNITS.get(key, ''))}</td>{cells}</tr>")
    rows.append("</table>")
    return "".join(rows) if keys else "<p>no metrics.json yet.</p>"


def _model_summary(view: RunView) -> str:
    model, recipe = view.model, view.recipe
    if not hasattr(model, "base"):  # a classifier (task classify): its layers and their sizes
        return _classifier_summary(view)
    layers = list(model.layers)
    entries = recipe.layers()
    base_name, base_params = recipe.component("base")
    total = sum(p.numel() for p in model.parameters())
    base_count = sum(p.numel() for p in model.base.parameters())
    rows = [f"<p>{len(layers)} layers, {total:,} parameters; data shape {esc(list(model.shape))}, "
            f"latent {esc(list(model.latent_shape))}; base <code>{esc(base_name)}</code> "
            f"{esc(base_params) if base_params else ''} ({base_count:,} parameters).</p>",
            "<table><tr><th>#</th><th>layer</th><th>settings</th><th>parameters</th>"
            "<th>input shape</th><th>output shape</th><th>factored out</th></tr>"]
    for index, layer in enumerate(layers):
        name, params = (entries[index][1], entries[index][2]) if index < len(entries) else (type(layer).__name__, {})
        count = sum(p.numel() for p in layer.parameters())
        factored = getattr(layer, "factored_shape", None) if hasattr(layer, "factor") else None
        shapes = model.shapes[index], model.shapes[index + 1]
        rows.append(f"<tr><td>{index}</td><td><code>{esc(name)}</code></td>"
                    f"<td>{esc(params) if params else ''}</td><td class=\"num\">{count:,}</td>"
                    f"<td>{esc(list(shapes[0]))}</td><td>{esc(list(shapes[1]))}</td>"
                    f"<td>{esc(list(factored)) if factored else ''}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _classifier_summary(view: RunView) -> str:
    model, entries = view.model, view.recipe.layers()
    total = sum(p.numel() for p in model.parameters())
    rows = [f"<p>a classifier: {len(model.layers)} layers, {total:,} parameters; data shape "
            f"{esc(list(model.shape))}, {len(getattr(model, 'class_names', ()))} classes.</p>",
            "<table><tr><th>#</th><th>layer</th><th>settings</th><th>parameters</th>"
            "<th>output shape</th></tr>"]
    for index, layer in enumerate(model.layers):
        name, params = (entries[index][1], entries[index][2]) if index < len(entries) else (type(layer).__name__, {})
        count = sum(p.numel() for p in layer.parameters())
        rows.append(f"<tr><td>{index}</td><td><code>{esc(name)}</code></td>"
                    f"<td>{esc(params) if params else ''}</td><td class=\"num\">{count:,}</td>"
                    f"<td>{esc(list(getattr(layer, 'out_shape', ())))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _run_facts(view: RunView, run: int | None = None) -> str:
    info, m = view.info, view.metrics
    rows = ["<table>"]
    for key, label in (("ms_per_batch", "time per training batch"), ("ms_per_sample", "time per sample")):
        rows.append(f"<tr><th>{label}</th>{number_cell(key, m.get(key), run)}<td>ms</td></tr>")
    for key in ("device", "threads", "zoo_version", "recipe_sha256", "weights_sha256", "input_shape", "n_bits"):
        if key in info:
            rows.append(f"<tr><th>{esc(key)}</th><td colspan=2>{esc(info[key])}</td></tr>")
    rows.append("</table>")
    plugins = info.get("plugins") if isinstance(info.get("plugins"), Mapping) else {}
    rows.append("<table><tr><th>plugin</th><th>distribution</th><th>version</th></tr>")
    for name, facts in list(plugins.items())[:MAX_METRICS]:
        facts = facts if isinstance(facts, Mapping) else {}
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(facts.get('distribution', ''))}</td>"
                    f"<td>{esc(facts.get('version', ''))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _runs_legend(views: Sequence[RunView]) -> str:
    rows = ["<table><tr><th>#</th><th>run</th><th>folder</th><th>status</th><th>recipe sha256</th></tr>"]
    for index, view in enumerate(views):
        color = PALETTE[index % len(PALETTE)]
        rows.append(f'<tr><td style="color:{color}">&#9632; {index + 1}</td><td>{esc(view.name)}</td>'
                    f"<td>{esc(str(view.folder))}</td><td>{esc(view.info.get('status', 'unknown'))}</td>"
                    f"<td><code>{esc(str(view.info.get('recipe_sha256', ''))[:12])}</code></td></tr>")
    rows.append("</table>")
    return "".join(rows)
