"""The run folder, both ways: created (exclusively, atomically written) and loaded (the only loader).

A run folder holds:

    recipe.yaml         the fully resolved recipe
    run.json            zoo version, recipe sha256, data shape, device, plugins, status, and the
                        sha256 of model.safetensors (updated with every save)
    model.safetensors   the best model by validation likelihood
    metrics.jsonl       one line per evaluation
    metrics.json        final test metrics (NLL in nats, bits/dim for images, timing)
    samples/*.png       sample grids (images) or density plots (2-D data)
    report.html         the run's page (``zoo.report``); tensorboard/, wandb/: ``zoo.tracking``'s
    checkpoint.safetensors  while training: where ``zoo run --resume`` continues (``zoo.checkpoint``)

A pulled Hub snapshot holds ``config.json`` (the same facts, recipe inlined) instead of
``run.json``. ``load_folder`` reads both with the same checks, the strictest of each: the files'
JSON is bounded and typed, the recipe is self-contained (no ``extends:``), the plugins it needs
are installed, the weights are the ones recorded (sha256), were trained from this recipe (the
recipe sha256 in their metadata), and every tensor has the model's shape and dtype and is finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from zoo._atomic import remove_stale_temporaries, write_json
from zoo.errors import WeightsError, ZooError
from zoo.weights import WEIGHTS_FILE, load_weights, read_metadata

RUNS_DIR_ENV = "ZOO_RUNS_DIR"
RECIPE_FILE = "recipe.yaml"
INFO_FILE = "run.json"
CONFIG_FILE = "config.json"  # a Hub snapshot's
METRICS_FILE = "metrics.json"
LATEST_LINK = "latest"
RUN_FILES = (RECIPE_FILE, INFO_FILE, WEIGHTS_FILE, "metrics.jsonl", METRICS_FILE)
REPORT_FILE = "report.html"  # zoo.report's page of the run
CHECKPOINT_FILE = "checkpoint.safetensors"  # zoo.checkpoint's, while the run trains

MAX_JSON_BYTES = 4 * 2**20     # run.json, config.json, metrics.json are a few KiB
MAX_JSON_DEPTH = 64
MAX_INPUT_VALUES = 2**28       # one sample of 2^28 values (1 GiB as float32) is beyond any recipe
MAX_RECIPE_BYTES = 2**20


# --- creating ------------------------------------------------------------------------------------


def runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def check_output_folder(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an ``--out`` that cannot become a run folder, before anything is built."""
    folder = Path(out)
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == folder else f"is under {parent}, which is a file"
            raise ZooError(f"--out {folder}: {what}. Choose a folder for the run.")
    if folder.is_dir() and any(folder.iterdir()):
        is_run = any((folder / name).exists() for name in RUN_FILES)
        if not is_run:
            raise ZooError(
                f"--out {folder}: the folder is not empty and is not a run folder; zoo will not mix "
                "a run into it. Choose a new or empty folder."
            )
        if not overwrite:
            raise ZooError(
                f"--out {folder}: already holds a run (its model would be replaced). Pass "
                "--overwrite to replace it, or choose another folder."
            )
    return folder


def create_run_folder(name: str, out: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """A new run folder: ``out``, or ``runs/<name>-<time>`` created exclusively (``-2``, ``-3``...
    when runs of one recipe start in the same second), and ``runs/latest`` pointed at it."""
    if out is not None:
        folder = check_output_folder(out, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in (*RUN_FILES, REPORT_FILE, CHECKPOINT_FILE):  # the replaced run's checkpoint too
            (folder / stale).unlink(missing_ok=True)
        samples = folder / "samples"  # the replaced run's pictures would pass for this one's
        if samples.is_dir() and not samples.is_symlink():
            for picture in samples.glob("*.png"):
                picture.unlink(missing_ok=True)
        remove_stale_temporaries(folder)
        return folder
    root = runs_dir()
    _check_run_name(name)
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        folder = root / (f"{name}-{stamp}" if attempt == 1 else f"{name}-{stamp}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        _point_latest(root, folder)
        return folder
    raise ZooError(f"{root}: could not create a new run folder for {name!r}; pass --out DIR")


def _check_run_name(name: str) -> None:
    """A recipe's name becomes a folder name: it must stay one plain name inside the runs folder."""
    if (
        not isinstance(name, str) or not name or name.startswith(".") or len(name) > 200
        or any(c in name for c in "/\\\0") or name != os.path.basename(name)
    ):
        raise ZooError(
            f"recipe name {name!r} cannot name a run folder: use letters, digits, '_', '.', '-', "
            "not starting with '.'"
        )


def _point_latest(root: Path, folder: Path) -> None:
    """``runs/latest`` -> the newest run, replaced atomically (a link where links work)."""
    link = root / LATEST_LINK
    tmp = root / f".{LATEST_LINK}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(folder.name, tmp)
        os.replace(tmp, link)
    except OSError:  # no symlinks here (some Windows set-ups): the link is a convenience
        tmp.unlink(missing_ok=True)


def write_info(folder: Path, info: Mapping[str, Any]) -> None:
    write_json(folder / INFO_FILE, dict(info))


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading: bounded, typed JSON ----------------------------------------------------------------


def read_json(path: Path, error=WeightsError) -> Any:
    """A small JSON file, refused (``error`` naming it) when too large, too deep or not JSON."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise error(f"{path}: not a regular file")
        if size > MAX_JSON_BYTES:
            raise error(f"{path}: {size:,} bytes, more than the {MAX_JSON_BYTES:,} such a file can be")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc})") from None
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{path}: nested {depth} levels deep (at most {MAX_JSON_DEPTH}); the file is not one zoo wrote")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise error(f"{path}: not valid JSON ({exc}); the file is damaged") from None


def _nesting_depth(text: str) -> int:
    """The bracket depth of JSON text, counted without parsing it (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _expect(value: Any, kinds: type | tuple, path: Path, key: str, error=WeightsError) -> Any:
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in _as_tuple(kinds):
        wanted = " or ".join(k.__name__ for k in _as_tuple(kinds))
        raise error(f"{path}: `{key}` must be {wanted}, not {type(value).__name__}; the file is damaged")
    return value


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def checked_input_shape(value: Any, path: Path, error=WeightsError) -> tuple[int, ...] | None:
    """A per-sample data shape: 1 to 4 positive integers whose product is sane, or None."""
    if value is None:
        return None
    _expect(value, list, path, "input_shape", error)
    if not 1 <= len(value) <= 4 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise error(f"{path}: `input_shape` must be 1 to 4 positive integers, not {value!r}")
    if math.prod(value) > MAX_INPUT_VALUES:
        raise error(f"{path}: `input_shape` {value} has {math.prod(value):,} values per sample; refused")
    return tuple(value)


def checked_n_bits(value: Any, path: Path, error=WeightsError) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16:
        raise error(f"{path}: `n_bits` must be an integer from 1 to 16 or null, not {value!r}")
    return value


def checked_sha256(value: Any, path: Path, key: str, error=WeightsError) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise error(f"{path}: `{key}` must be a sha256 (64 lower-case hex digits), not {value!r}")
    return value


def checked_plugins(value: Any, path: Path, error=WeightsError) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    _expect(value, dict, path, "plugins", error)
    for name, info in value.items():
        if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
            raise error(f"{path}: `plugins.{name}` must map distribution/version to strings")
    return value


# --- reading: the evaluation log and the pictures (the report's and the trackers' files) -------

MAX_LOG_BYTES = 64 * 2**20     # metrics.jsonl: a line per evaluation, ~200 bytes each
MAX_LOG_LINE = 64 * 2**10
MAX_PICTURE_BYTES = 16 * 2**20  # one sample grid or density plot (a few hundred KiB)
MAX_PICTURES = 200
MAX_PICTURES_BYTES = 128 * 2**20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_metrics_log(folder: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The records of a run's ``metrics.jsonl`` (one mapping per evaluation) and how many lines
    were skipped as not one (the last line of a killed run may be cut short); bounded in size."""
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return [], 0
    if path.is_symlink() or not path.is_file():
        raise WeightsError(f"{path}: not a regular file; the run folder is not one zoo wrote")
    size = path.stat().st_size
    if size > MAX_LOG_BYTES:
        raise WeightsError(f"{path}: {size:,} bytes, more than the {MAX_LOG_BYTES:,} such a log can be")
    records, skipped = [], 0
    with open(path, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            if len(line) > MAX_LOG_LINE or _nesting_depth(line) > MAX_JSON_DEPTH:
                skipped += 1
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError, ValueError):
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                skipped += 1
    return records, skipped


def read_pictures(folder: str | os.PathLike) -> list[tuple[str, bytes]]:
    """``(file name, PNG bytes)`` of the run's ``samples/*.png`` in name order: regular files
    (no links out of the folder) that start as a PNG, each and all together bounded; others
    are left out (``zoo.report`` checks that each decodes)."""
    samples = Path(folder) / "samples"
    if samples.is_symlink() or not samples.is_dir():
        return []
    import itertools

    names = sorted(p.name for p in itertools.islice(samples.iterdir(), 10 * MAX_PICTURES) if p.suffix == ".png")
    pictures, total = [], 0
    for name in names[:MAX_PICTURES]:
        path = samples / name
        if path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        if size > MAX_PICTURE_BYTES or total + size > MAX_PICTURES_BYTES:
            continue
        data = path.read_bytes()[:MAX_PICTURE_BYTES]
        if data.startswith(PNG_SIGNATURE):
            pictures.append((name, data))
            total += len(data)
    return pictures


# --- loading: the one loader ---------------------------------------------------------------------


def folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The facts of a model folder as one mapping, the same for a Hub snapshot (its
    ``config.json``) and a run folder (``recipe.yaml`` + ``run.json`` + the weights' metadata);
    every field typed and bounded. ``recipe`` is a mapping (snapshot) or the recipe file (run)."""
    from zoo.hub._card import SCHEMA_VERSION

    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    if config_path.is_file():
        config = read_json(config_path)
        _expect(config, dict, config_path, "the top level")
        if "recipe" not in config:
            raise WeightsError(f"{config_path}: not a zoo config (no 'recipe'); was this repo pushed by `zoo push`?")
        _expect(config["recipe"], dict, config_path, "recipe")
        version = config.get("schema_version", 1)
        _expect(version, int, config_path, "schema_version")
        if version > SCHEMA_VERSION:
            raise WeightsError(
                f"{config_path}: schema version {version} is newer than this zoo reads "
                f"({SCHEMA_VERSION}); upgrade zoo (pip install -U zoo-flows)."
            )
        return {"kind": "snapshot", "recipe": config["recipe"], **_checked_facts(config, config_path)}
    recipe_path = folder / RECIPE_FILE
    if not recipe_path.is_file():
        raise WeightsError(
            f"{folder}: neither a run folder (no recipe.yaml) nor a pulled model (no config.json). "
            "Pass the folder that `zoo run` printed, or a model name / ORG/NAME to pull."
        )
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise WeightsError(
            f"{info_path}: missing, so nothing says which weights and recipe belong together. "
            "Re-run training with this zoo (`zoo run recipe.yaml`)."
        )
    info = read_json(info_path)
    _expect(info, dict, info_path, "the top level")
    return {"kind": "run", "recipe": recipe_path, **_checked_facts(info, info_path),
            "status": info.get("status")}


def _checked_facts(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The facts a config.json and a run.json share, each typed and bounded (``where``: the file)."""
    return {
        "where": path,
        "recipe_sha256": checked_sha256(data.get("recipe_sha256"), path, "recipe_sha256"),
        "weights_sha256": checked_sha256(data.get("weights_sha256"), path, "weights_sha256"),
        "input_shape": checked_input_shape(data.get("input_shape"), path),
        "n_bits": checked_n_bits(data.get("n_bits"), path),
        "plugins": checked_plugins(data.get("plugins"), path),
        "zoo_version": data.get("zoo_version"),
        "labels": checked_labels(data.get("labels"), path),
    }


MAX_LABEL_NAMES = 100_000  # classes or attributes a model may name
MAX_LABEL_NAME_CHARS = 200


def checked_labels(value: Any, path: Path, error=WeightsError) -> dict[str, Any] | None:
    """The ``labels`` fact (what a conditional model or classifier was trained with): None, or
    ``{kind, names, shape}`` with bounded names and shape."""
    if value is None:
        return None
    _expect(value, dict, path, "labels", error)
    kind = value.get("kind")
    if kind not in ("class", "attributes", "observed"):
        raise error(f"{path}: `labels.kind` must be class, attributes or observed, not {kind!r}")
    names, shape = value.get("names"), value.get("shape")
    if kind in ("class", "attributes"):
        if (not isinstance(names, list) or not 1 <= len(names) <= MAX_LABEL_NAMES
                or not all(isinstance(n, str) and len(n) <= MAX_LABEL_NAME_CHARS for n in names)):
            raise error(f"{path}: `labels.names` must be 1 to {MAX_LABEL_NAMES:,} strings of at most "
                        f"{MAX_LABEL_NAME_CHARS} characters")
    else:
        names = None
    if shape is not None:
        shape = checked_input_shape(shape, path, error)
    if kind == "observed" and shape is None:
        raise error(f"{path}: `labels.shape` is required for observed values")
    prior = value.get("prior")
    if prior is not None and not (
            kind == "class" and isinstance(prior, list) and len(prior) == len(names)
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p)
                    and 0 <= p <= 1 for p in prior) and sum(prior) > 0):
        raise error(f"{path}: `labels.prior` must be one probability per class")
    return {"kind": kind, "names": names, "shape": list(shape) if shape else None, "prior": prior}


def check_plugins(config: Mapping[str, Any], where: str, registry=None) -> None:
    """Refuse a model whose recipe needs plugins that are not installed, naming the packages."""
    from zoo.hub._transport import missing_plugins_error
    from zoo.registry import get_registry

    registry = registry or get_registry()
    loaded = {p.name: p for p in registry.plugins}
    missing, broken = {}, {}
    for name, info in (config.get("plugins") or {}).items():
        plugin = loaded.get(name)
        if plugin is None or plugin.blocked:
            missing[name] = dict(info or {})
        elif plugin.error:
            broken[name] = plugin.error
    if missing or broken:
        raise missing_plugins_error(where, missing, broken)


def checked_recipe(folder: Path, config: Mapping[str, Any], registry=None):
    """The folder's recipe (``config`` from ``folder_config``), refused when it is not the one
    its run.json / config.json records (edited after training) or records none."""
    from zoo.recipe import load_recipe

    recipe_source = config["recipe"]
    if isinstance(recipe_source, Path) and recipe_source.stat().st_size > MAX_RECIPE_BYTES:
        raise WeightsError(f"{recipe_source}: larger than {MAX_RECIPE_BYTES:,} bytes; not a recipe zoo wrote")
    recipe = load_recipe(recipe_source, registry=registry, self_contained=True)
    where = config["where"]
    if config["recipe_sha256"] is None:
        raise WeightsError(f"{where}: records no recipe_sha256, so the recipe cannot be checked. Re-run or re-push.")
    if config["recipe_sha256"] != recipe.sha256:
        edited = folder / RECIPE_FILE if config["kind"] == "run" else where
        raise WeightsError(
            f"{edited}: the recipe has sha256 {recipe.sha256[:12]}..., but the run was trained from "
            f"{config['recipe_sha256'][:12]}... (recorded in {where.name}); the recipe was edited after "
            "training. Restore it, or re-run training."
        )
    return recipe


def load_folder(folder: str | os.PathLike, *, registry=None):
    """``(recipe, model)`` of a run folder or a pulled snapshot; the model is in eval mode.

    Every check passes before anything is loaded into the model (see the module docstring).
    """
    from zoo.assemble import build_model

    folder = Path(folder)
    config = folder_config(folder)
    if config["kind"] == "run":
        remove_stale_temporaries(folder)
    check_plugins(config, str(folder), registry)
    recipe = checked_recipe(folder, config, registry)
    weights = folder / WEIGHTS_FILE
    where = config["where"]
    meta = read_metadata(weights)
    if meta.get("recipe_sha256") != recipe.sha256:
        raise WeightsError(
            f"{weights}: these weights were trained from recipe {str(meta.get('recipe_sha256'))[:12]}..., "
            f"but the folder's recipe is {recipe.sha256[:12]}...; the files come from different runs. "
            "Re-run training (or re-push the run)."
        )
    recorded = config["weights_sha256"]
    if config["kind"] == "run" and recorded is None:
        raise WeightsError(f"{where}: records no weights_sha256 (a run that never saved a model, or an older zoo). Re-run training.")
    if recorded is not None and file_sha256(weights) != recorded:
        raise WeightsError(
            f"{weights}: its sha256 is not the one recorded in {where.name}; the file was changed "
            "after it was written. Re-run training, or pull the model again."
        )
    model = build_model(recipe, shape=config["input_shape"], n_bits=config["n_bits"], registry=registry,
                        labels=config["labels"])
    load_weights(model, weights)
    model.eval()
    return recipe, model


# A source with one of these endings is a local path, never a model name.
FILE_SUFFIXES = (".yaml", ".yml", ".json", ".safetensors", ".pt", ".pth", ".ckpt", ".png", ".jpg",
                 ".jpeg", ".npy", ".txt", ".csv")


def looks_like_path(spec: str) -> bool:
    """Whether ``spec`` is meant as a local path rather than a model name or ``ORG/NAME``.

    A backslash, a leading ``.``, ``~`` or ``/``, a file suffix, more than one ``/`` before an
    ``@REVISION``, or a first part that is a folder here (``runs/typo``) make a path. ``ORG/NAME``
    with no folder ``ORG`` here stays a Hub repo id.
    """
    if "\\" in spec or spec.startswith((".", "~", "/")) or spec.lower().endswith(FILE_SUFFIXES):
        return True
    repo = spec.partition("@")[0]
    if repo.count("/") > 1:
        return True
    return "/" in repo and Path(repo.partition("/")[0]).is_dir()


def refuse_missing_run_folder(spec: str) -> None:
    """A path that is not a folder is a typo or a file: say which, never ask the Hub for it."""
    from zoo._suggest import close_matches

    path = Path(spec).expanduser()
    if path.is_dir() or not looks_like_path(spec):
        return
    if path.is_file():
        if path.suffix in (".yaml", ".yml"):
            raise WeightsError(f"no such run folder: {spec} (it is a recipe file). Train it first: "
                               f"`zoo run {spec}`, then pass the run folder it prints.")
        if (path.parent / "recipe.yaml").is_file():
            raise WeightsError(f"no such run folder: {spec} (it is a file in the run folder "
                               f"{path.parent}). Pass the folder: `zoo sample {path.parent}`.")
        raise WeightsError(f"no such run folder: {spec} (it is a file). Pass the folder that "
                           "`zoo run` printed.")
    hint = ""
    if path.parent.is_dir():
        import itertools

        siblings = [p.name for p in itertools.islice(path.parent.iterdir(), 10_000) if p.is_dir()]
        close = close_matches(path.name, siblings)
        if close:
            hint = " Did you mean " + " or ".join(repr(str(Path(spec).parent / c)) for c in close) + "?"
    raise WeightsError(
        f"no such run folder: {spec}.{hint} Pass the folder that `zoo run` printed (`ls "
        f"{Path(spec).parent}`), or a model name from `zoo list models`."
    )


def load_model(spec: str):
    """(recipe, model) of a run folder, or of a pulled model by name or repo id."""
    refuse_missing_run_folder(str(spec))
    try:
        from zoo.runs import open_model
    except ImportError:  # before zoo.runs: the run folder loader and the Hub's, as they were
        from zoo.train import load_run

        if Path(spec).expanduser().is_dir():
            return load_run(Path(spec).expanduser())
        from zoo import hub

        return hub.load_pretrained(spec)
    return open_model(spec)


def open_model(source: str | os.PathLike, revision: str | None = None):
    """``(recipe, model)`` of a run folder, a pulled model's name, or ORG/NAME[@REVISION]. A
    source that looks like a path but is no folder is a typo: said so, never asked of the Hub."""
    text = os.fspath(source)
    if Path(text).expanduser().is_dir():
        return load_folder(Path(text).expanduser())
    refuse_missing_run_folder(text)
    from zoo import hub

    return hub.load_pretrained(text, revision=revision) if revision else hub.load_pretrained(text)
