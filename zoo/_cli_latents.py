"""The commands of a trained flow's latent space: ``zoo manipulate``, ``zoo interpolate``, the
folder form of ``zoo score`` and ``zoo sample --temperatures``.

Each takes RUN|NAME like ``zoo sample``: a run folder, or a pulled model's name or ORG/NAME
(``zoo.runs.open_model``). Training latents are cached in the run folder (``latents.safetensors``)
or, for a pulled model, in zoo's cache dir. Pictures go to RUN/samples/ (a run) or the current
folder (a pulled model) unless ``--out`` says where.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from zoo.cli import MAX_GRID, UsageError
from zoo.errors import ZooError

MAX_TEMPERATURES = 32
MAX_STRIP = 64  # alphas or interpolation steps in one strip


# --- shared -------------------------------------------------------------------------------------


def open_source(spec: str):
    """``(recipe, model, run folder or None)``; the folder is where the latents are cached."""
    from zoo.runs import open_model

    import torch

    from zoo.train import pick_threads

    recipe, model = open_model(spec)
    # as `zoo run`: a small model runs on one thread (on 2 shared cores a second one made
    # encoding 2.5x slower, not faster)
    torch.set_num_threads(pick_threads(recipe.train.get("threads", "auto"), model))
    folder = Path(spec).expanduser()
    return recipe, model, folder if folder.is_dir() else None


def latent_cache(model, folder: Path | None) -> Path:
    from zoo._latent_cache import cache_file, weights_sha256

    return cache_file(folder, weights_sha256(model))


def require_images(model, spec: str, command: str, conditional: bool = False) -> None:
    """Refuse what has no latent space of images: a classifier, a non-image model, and (unless
    ``conditional``) a conditional flow, whose latents depend on the context it is given."""
    if not hasattr(model, "inverse") or not hasattr(model, "latent_dim"):
        raise UsageError(f"{spec} is a classifier: it has no latent space; `zoo {command}` takes a flow")
    if getattr(model, "conditional", False) and not conditional:
        raise UsageError(f"{spec} is a conditional model: its latents depend on the context; `zoo {command}` "
                         f"takes unconditional flows (`zoo sample {spec} --context C --temperatures 0,0.5,1` "
                         "draws one context's temperature grid)")
    if len(model.shape) != 3:
        raise UsageError(f"{spec}: `zoo {command}` works on image models; this model's data have "
                         f"shape {tuple(model.shape)}")


def output_path(out: str | None, folder: Path | None, filename: str) -> Path:
    if out:
        return Path(out)
    return folder / "samples" / filename if folder is not None else Path(filename)


def numbers(text: str, option: str) -> list[float]:
    """``"-2,-1,0"`` as floats: finite, at least one."""
    import math

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{option} {text!r}: give finite numbers separated by commas, e.g. {option} -2,-1,0,1,2")
    return values


def build_data(recipe, data_dir: str | None):
    from zoo import assemble

    if data_dir:
        os.environ["ZOO_DATA_DIR"] = data_dir
    dataset = assemble.build_dataset(recipe)
    if dataset.notice:
        print(f"note: {dataset.notice}")
    return dataset


def read_image(path: str, model):
    from zoo.score import IMAGE_SUFFIXES, load_image_as
    from zoo.errors import DataError

    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such file")
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{file}: expected an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    notes: list[str] = []
    image = load_image_as(file, model.shape, model.n_bits, notes)
    if notes:
        print(f"note: {file}: {' and '.join(notes)} to fit the model", file=sys.stderr)
    return image


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


# --- sample --temperatures ----------------------------------------------------------------------


def sample_temperatures(args, recipe, model) -> int:
    from zoo.latents import temperature_grid
    from zoo.visualize import image_rows, save_png

    require_images(model, args.source, "sample --temperatures", conditional=True)  # inside model.given
    temperatures = numbers(args.temperatures, "--temperatures")
    if any(t < 0 for t in temperatures) or len(temperatures) > MAX_TEMPERATURES:
        raise UsageError(f"--temperatures {args.temperatures}: 1 to {MAX_TEMPERATURES} values, each >= 0")
    if args.n * len(temperatures) > MAX_GRID:
        raise UsageError(f"-n {args.n} x {len(temperatures)} temperatures: at most {MAX_GRID:,} images in one grid")
    folder = Path(args.source).expanduser()
    out = output_path(args.out, folder if folder.is_dir() else None, "sample_temperatures.png")
    grid = temperature_grid(model, temperatures, args.n, seed=args.seed, exact_inverse=args.exact_inverse)
    title = f"{recipe['name']}: {args.n} samples per temperature (seed {args.seed})"
    save_png(image_rows(list(grid), model.n_bits, [f"T = {t:g}" for t in temperatures], title=title), out)
    print(f"wrote {out} ({len(temperatures)} rows x {args.n})")
    return 0


# --- manipulate ---------------------------------------------------------------------------------


def cmd_manipulate(args) -> int:
    import torch

    from zoo.latents import attribute_direction, example_image, manipulate
    from zoo.visualize import image_rows, save_png

    if not 1 <= args.examples <= 10_000_000:
        raise UsageError(f"--examples {args.examples}: must be 1 to 10,000,000")
    alphas = numbers(args.alphas, "--alphas")
    if len(alphas) > MAX_STRIP:
        raise UsageError(f"--alphas: at most {MAX_STRIP} values")
    recipe, model, folder = open_source(args.source)
    require_images(model, args.source, "manipulate")
    dataset = build_data(recipe, args.data_dir)
    where = f"the data set of {args.source} ({recipe.component('dataset')[0]})"
    cache = latent_cache(model, folder)
    direction = attribute_direction(model, dataset, args.attribute, against=args.from_class,
                                    examples=args.examples, cache=cache, where=where, progress=print)
    if args.image:
        image, source = read_image(args.image, model), args.image
    else:
        image, index = example_image(dataset, direction)
        source = f"test image {index}"
    strip = manipulate(model, image, direction, alphas)
    toward = f"{direction.against} -> {direction.name}" if direction.against is not None else (
        f"towards {direction.name}")
    title = (f"{recipe['name']}: {toward}, z + alpha dz (dz over {direction.positives:,} + "
             f"{direction.negatives:,} training images)")
    out = output_path(args.out, folder, f"manipulate_{_slug(toward.replace(' -> ', '_to_').replace(' ', '_'))}.png")
    tiles = torch.cat([image[None].float(), strip])  # the input first: it may have been resized
    labels = ["input"] + [f"alpha {a:+g}" if a else "alpha 0" for a in alphas]
    save_png(image_rows([tiles], model.n_bits, tile_labels=[labels], title=title), out)
    norm = float(torch.linalg.vector_norm(direction.delta))
    print(f"direction {toward}: |dz| = {norm:.3f} from {direction.positives:,} vs {direction.negatives:,} "
          f"training images; applied to {source}")
    print(f"wrote {out}")
    return 0


# --- interpolate --------------------------------------------------------------------------------


def cmd_interpolate(args) -> int:
    from zoo.latents import interpolate
    from zoo.visualize import image_rows, save_png

    if not 2 <= args.steps <= MAX_STRIP:
        raise UsageError(f"--steps {args.steps}: must be 2 to {MAX_STRIP} (both ends included)")
    recipe, model, folder = open_source(args.source)
    require_images(model, args.source, "interpolate")
    a, b = read_image(args.a, model), read_image(args.b, model)
    strip = interpolate(model, a, b, steps=args.steps, path=args.path)
    out = output_path(args.out, folder, f"interpolate_{_slug(Path(args.a).stem)}_{_slug(Path(args.b).stem)}_{args.path}.png")
    ts = [i / (args.steps - 1) for i in range(args.steps)]
    title = f"{recipe['name']}: {Path(args.a).name} -> {Path(args.b).name}, {args.path} path in latent space"
    save_png(image_rows([strip], model.n_bits, tile_labels=[[f"t {t:.2f}" for t in ts]], title=title), out)
    print(f"wrote {out} ({args.steps} images, {args.path})")
    return 0


# --- score FOLDER -------------------------------------------------------------------------------


def cmd_score_folder(args, folder_arg: str) -> int:
    import torch

    from zoo import _atomic
    from zoo.anomaly import check_outlier, extremes, score_folder
    from zoo.latents import training_latents
    from zoo.visualize import image_rows, save_png

    if not 1 <= args.top <= 32:
        raise UsageError(f"-k {args.top}: the strip shows 1 to 32 images per row")
    recipe, model, run_folder = open_source(args.source)
    require_images(model, args.source, "score FOLDER")
    reference = None
    try:
        dataset = build_data(recipe, args.data_dir)
    except ZooError as exc:
        print(f"note: the training data are not here ({str(exc).splitlines()[0][:160]}); the latent "
              "distance is |z| from the base's centre, not the PCA distance from training latents",
              file=sys.stderr)
    else:
        reference, _ = training_latents(model, dataset, args.examples, latent_cache(model, run_folder), print)
    notify = lambda line: print(f"note: {line}", file=sys.stderr)  # noqa: E731
    result = score_folder(model, folder_arg, reference, components=args.components, notify=notify)
    if args.outlier is not None:
        check_outlier(result, args.outlier)
    name = _slug(Path(folder_arg).resolve().name)
    out = Path(args.out) if args.out else (run_folder / "scores" / name if run_folder is not None else Path(f"scores-{name}"))
    _atomic.write_text(out / "scores.csv", result.csv_text())
    rows, row_labels, tile_labels = [], [], []
    for score, unit in (("bits_per_dim", "bits/dim"), ("latent_distance", "latent distance")):
        unusual, typical = extremes(result, score, args.top)
        for kind, chosen in (("most unusual", unusual), ("most typical", typical)):
            rows.append(torch.stack([_load(result, i, model) for i in chosen]))
            row_labels.append(f"{kind} ({unit})")
            values = getattr(result, score)
            tile_labels.append([(f"{result.classes[i]}: " if result.classes[i] else "") + f"{float(values[i]):.2f}" for i in chosen])
    title = f"{recipe['name']}: {len(result.files):,} images of {Path(folder_arg).name}"
    save_png(image_rows(rows, model.n_bits, row_labels, tile_labels, title=title), out / "scores.png")
    auc = result.auc()
    summary = {"folder": str(folder_arg), "images": len(result.files), "seconds_per_image": result.seconds_per_image,
               "pca_components": result.components, "reference_latents": 0 if reference is None else len(reference),
               "auc": auc, "outlier": args.outlier}
    _atomic.write_json(out / "summary.json", summary)
    ms = 1000 * result.seconds_per_image
    print(f"scored {len(result.files):,} images of {folder_arg}: {ms:.1f} ms per image "
          f"(latent distance: {'PCA ' + str(result.components) + ' components of ' + format(len(reference), ',') + ' training latents' if result.components else '|z|'})")
    ranked = result.rank("bits_per_dim")
    for i in ranked.argsort()[:min(5, len(ranked))].tolist():
        print(f"  #{int(ranked[i])}  {result.files[i].as_posix()}  {float(result.bits_per_dim[i]):.4f} bits/dim  "
              f"latent distance {float(result.latent_distance[i]):.2f}")
    shown = {args.outlier: auc[args.outlier]} if args.outlier is not None and auc else auc
    for cls, values in shown.items():
        print(f"ROC AUC, {cls!r} vs the rest: bits/dim {values['bits_per_dim']:.3f}, "
              f"latent distance {values['latent_distance']:.3f}")
    print(f"wrote {out / 'scores.csv'}, {out / 'scores.png'}, {out / 'summary.json'}")
    return 0


def _load(result, index: int, model):
    from zoo.score import load_image_as

    return load_image_as(result.folder / result.files[index], model.shape, model.n_bits)


# --- parser -------------------------------------------------------------------------------------


def add_commands(command) -> None:
    """Add ``manipulate`` and ``interpolate`` with zoo.cli's ``command(name, func, help, examples)``."""
    p = command("manipulate", cmd_manipulate,
                "move an image along a class's or attribute's direction in latent space",
                ["zoo manipulate runs/digits --attribute 8 --from 3", "zoo manipulate runs/celeba --attribute Smiling "
                 "--alphas 0,0.4,0.8,1.2,1.6 --image me.png", "zoo manipulate glow-celeba-3x32 --attribute 31 --examples 5000"])
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("--attribute", required=True, metavar="NAME|INDEX",
                   help="a class of the data set (e.g. a digit, a sub-folder) or an attribute (CelebA's 'Smiling')")
    p.add_argument("--from", dest="from_class", metavar="CLASS",
                   help="class data: the direction from this class (default: from all other classes)")
    p.add_argument("--alphas", default="-2,-1,0,1,2", help="steps along the direction, comma-separated "
                   "(default -2,-1,0,1,2; the Glow seed used 1.6)")
    p.add_argument("--image", metavar="FILE", help="the image to move (default: a test image without the attribute)")
    p.add_argument("--examples", type=int, default=30_000,
                   help="training images the direction is averaged over (default 30,000, the seed's)")
    p.add_argument("--data-dir", help="where dataset files are (default $ZOO_DATA_DIR or ./data)")
    p.add_argument("--out", help="output PNG (default RUN/samples/manipulate_<attribute>.png)")

    p = command("interpolate", cmd_interpolate, "the images between two images through latent space",
                ["zoo interpolate runs/digits a.png b.png", "zoo interpolate runs/digits a.png b.png --steps 12 --path slerp"])
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("a", metavar="A.png")
    p.add_argument("b", metavar="B.png")
    p.add_argument("--steps", type=int, default=8, help="images in the strip, both ends included (default 8)")
    p.add_argument("--path", choices=("linear", "slerp"), default="linear",
                   help="straight line or great circle between the two latents (default linear)")
    p.add_argument("--out", help="output PNG (default RUN/samples/interpolate_<a>_<b>_<path>.png)")


def add_score_options(p) -> None:
    """The options of the folder form of `zoo score`."""
    p.add_argument("--outlier", metavar="CLASS", help="FOLDER: the sub-folder whose images should score as unusual "
                   "(its ROC AUC is printed; default: every sub-folder's)")
    p.add_argument("--examples", type=int, default=1_000,
                   help="FOLDER: training latents the PCA is fitted on (default 1,000, the flow_models seed's)")
    p.add_argument("--components", type=int, default=100, help="FOLDER: PCA components of the latent distance (default 100)")
    p.add_argument("-k", dest="top", type=int, default=8, help="FOLDER: images per row of the strip (default 8)")
    p.add_argument("--data-dir", help="FOLDER: where the training data are (default $ZOO_DATA_DIR or ./data)")
    p.add_argument("--out", help="FOLDER: output folder (default RUN/scores/<folder>/)")

