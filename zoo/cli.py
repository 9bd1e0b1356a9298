"""The ``zoo`` command.

    zoo run RECIPE [key=value ...] [--out DIR] [--overwrite]     zoo validate RECIPE...
    zoo run --resume RUN
    zoo list [KIND] [NAME|PATTERN] [-v] [--json]                 zoo plugins      zoo schema
    zoo sample RUN|NAME [-n N] [--temperature T | --temperatures T,T,...]    zoo eval RUN|NAME [--seed S]
    zoo score RUN|NAME FILE...|FOLDER [--outlier CLASS]    zoo manipulate RUN|NAME --attribute NAME [--from CLASS]
    zoo interpolate RUN|NAME A.png B.png [--steps N] [--path linear|slerp]
    zoo pull NAME|ORG/REPO          zoo push RUN --repo-id ORG/NAME
    zoo report RUN [RUN2 ...] [--out FILE]

A RECIPE is a file or the name of a shipped recipe (`zoo list recipes`). Options and positionals
mix freely (`zoo list layers -v actnorm`, `zoo run toydensity --out r train.epochs=2`). Every
ZooError prints one message and exits 2; ``--debug`` (anywhere) or ZOO_DEBUG=1 shows the
traceback. Ctrl-C exits 130; during training, Ctrl-C or SIGTERM first writes a checkpoint
(`zoo run --resume RUN` continues) and SIGTERM exits 143.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

from zoo.errors import UnknownComponentError, ZooError

MAX_SAMPLES = 100_000  # `zoo sample -n`: bounded time and memory
MAX_GRID = 1_024  # image samples tile one picture; beyond 32 x 32 of them it is no longer readable
# What a file argument ends with; an ORG/NAME repo id may contain dots, so only these count.


class UsageError(ZooError):
    """A command-line value out of its range (``-n 0``, ``--temperature nan``)."""


# --- commands ------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from zoo.recipe import load_recipe
    from zoo.train import run

    if args.data_dir:
        os.environ["ZOO_DATA_DIR"] = args.data_dir
    if args.resume is not None:
        from zoo.checkpoint import check_resume_arguments
        from zoo.train import resume

        check_resume_arguments(args)
        if getattr(args, "nproc", None) is not None:  # the resumed run under torchrun
            from zoo.checkpoint import open_for_resume
            from zoo.distributed import launch

            recipe, point = open_for_resume(args.resume)  # refused here, once, not by every rank
            if point.lock is not None:
                point.lock.close()  # rank 0 of the launched run takes it
            return launch(recipe, args.nproc, args.argv)
        resume(args.resume, progress=not args.no_progress)
        return 0
    if args.recipe is None:
        raise UsageError("zoo run: give a RECIPE to train (`zoo list recipes`), or --resume RUN to "
                         "continue a stopped run")
    recipe = load_recipe(args.recipe, overrides=args.overrides)  # a path or a recipe's name
    # `overwrite` is passed only when asked for, so this works with a run() that predates it.
    extra = {"overwrite": True} if args.overwrite else {}
    if getattr(args, "nproc", None) is not None:  # torchrun on this machine (zoo.distributed)
        from zoo.distributed import launch

        return launch(recipe, args.nproc, args.argv)
    run(recipe, out=args.out, progress=not args.no_progress, **extra)
    return 0


def cmd_validate(args) -> int:
    from zoo.recipe import load_recipe

    failures = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path, overrides=args.overrides)
        except ZooError as exc:
            failures += 1
            print(str(exc), file=sys.stderr)
        else:
            print(f"{path}: ok ({recipe.sha256[:12]})")
    if failures:
        print(f"{failures} of {len(args.recipes)} recipes have errors", file=sys.stderr)
        return 2
    return 0


def cmd_schema(args) -> int:
    from zoo.recipe import composed_schema

    print(json.dumps(composed_schema(), indent=2))
    return 0


def cmd_list(args) -> int:
    from zoo.registry import KINDS, get_registry, kind_named

    registry = get_registry()
    kinds = list(KINDS.values()) if args.kind is None else [kind_named(args.kind)]
    if args.kind is not None and args.pattern and not _is_pattern(args.pattern):
        _check_exact_name(registry, kinds[0], args.pattern)
    if args.json:
        print(json.dumps({k.title: _components_json(registry, k, args.pattern) for k in kinds}, indent=2))
        return 0
    if [k.name for k in kinds] == ["pretrained"]:
        return _list_models(registry, args.pattern, args.verbose)
    for kind in kinds:
        components = registry.components(kind.name, args.pattern)
        print(f"{kind.title} ({len(components)}):")
        width = max((len(c.name) for c in components), default=0)
        for c in components:
            print(f"  {c.name:<{width}}  {c.summary}  [{c.plugin}]")
            if args.verbose:
                _print_details(kind, c)
        print()
    if [k.name for k in kinds] == ["recipes"]:
        print("Run one by name: `zoo run NAME` (check it first: `zoo validate NAME`).")
    return 0


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _check_exact_name(registry, kind, name: str) -> None:
    """An exact name that is not registered is a typo: say so, with the close names."""
    from zoo._suggest import did_you_mean

    if not registry.has(kind.name, name):
        raise UnknownComponentError(
            f"no {kind.singular} named {name!r}.{did_you_mean(name, registry.names(kind.name))} "
            f"`zoo list {kind.title}` shows them all."
        )


def _components_json(registry, kind, pattern) -> list[dict]:
    rows = []
    for c in registry.components(kind.name, pattern):
        row = {"name": c.name, "summary": c.summary, "plugin": c.plugin}
        if kind.entry == "factory":
            row["params_schema"] = c.params_schema
        elif kind.entry == "path":
            row["path"] = os.fspath(c.factory)
        else:
            row.update({k: v for k, v in c.factory.items() if k != "summary"})
        if c.error:
            row["error"] = c.error
        rows.append(row)
    return rows


def _print_details(kind, component) -> None:
    """What -v adds: a factory's full docstring and parameters; a recipe's file; a model's repo."""
    import inspect
    import textwrap

    if component.error:
        print(f"      BROKEN: {component.error}")
    if kind.entry == "path":
        print(f"      file: {component.factory}")
        print(f"      run:  zoo run {component.name}")
        print()
        return
    if kind.entry == "mapping":
        for key, value in component.factory.items():
            if key != "summary" and value not in (None, ""):
                print(f"      {key}: {value}")
        print()
        return
    doc = inspect.getdoc(component.factory) or ""
    body = "\n".join(doc.splitlines()[1:]).strip()
    if body:
        print(textwrap.indent(body, "      "))
    if getattr(component.factory, "takes_context", False):
        print("      conditional: takes the context of a recipe with context: (conditioned: false opts out)")
    properties = (component.params_schema or {}).get("properties", {})
    required = set((component.params_schema or {}).get("required", []))
    for name, prop in properties.items():
        kind_text = prop.get("type") or ("one of " + ", ".join(map(str, prop["enum"])) if "enum" in prop else "any")
        default = "required" if name in required else f"default {prop.get('default')!r}"
        print(f"      - {name}: {kind_text}, {default}")
    print()


def _list_models(registry, pattern, verbose: bool = False) -> int:
    import fnmatch

    from zoo import hub

    rows = [r for r in hub.list_models(registry) if pattern is None or fnmatch.fnmatch(r["name"], pattern)]
    print(f"models ({len(rows)}):")
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        status = "weights published" if r.get("published") else "no weights yet"
        print(f"  {r['name']:<{width}}  {r.get('repo_id', '')}  ({status})  {r.get('summary', '')}")
        if verbose:
            for key in ("recipe", "revision"):
                if r.get(key):
                    print(f"      {key}: {r[key]}")
    if rows:
        print("\nDownload one: `zoo pull NAME`; sample it: `zoo sample NAME`.")
    return 0


def cmd_plugins(args) -> int:
    from zoo.registry import get_registry

    for p in get_registry().plugins:
        version = f" {p.version}" if p.version else ""
        dist = f" ({p.distribution})" if p.distribution else ""
        if p.blocked:
            print(f"{p.name}{version}{dist}: disabled by ZOO_DISABLE_PLUGINS")
            continue
        if p.error:
            print(f"{p.name}{version}{dist}: BROKEN: {p.error}")
            continue
        print(f"{p.name}{version}{dist}")
        for kind, names in p.components.items():
            print(f"    {kind}: {', '.join(sorted(names))}")
    return 0


# --- model sources -------------------------------------------------------------------------------


def load_model(spec: str):
    """(recipe, model) of a run folder, or of a pulled model by name or repo id."""
    from zoo.runs import open_model

    return open_model(spec)


# --- sample, eval, score -------------------------------------------------------------------------


def check_sampling(n: int, temperature: float) -> None:
    if not 1 <= n <= MAX_SAMPLES:
        raise UsageError(f"-n {n}: the number of samples must be 1 to {MAX_SAMPLES:,}. "
                         "For example `zoo sample RUN -n 64`.")
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(
            f"--temperature {temperature}: must be a finite number >= 0 (1 samples the model, "
            "below 1 sharper, 0 the mode). For example `zoo sample RUN --temperature 0.7`."
        )


def sampling_context(model, text: str | None, source: str):
    """The raw context of ``--context`` for a conditional model (None for an unconditional one)."""
    from zoo.errors import ContextError

    encoder = getattr(model, "context_encoder", None)
    if not hasattr(model, "sample"):
        raise UsageError(f"{source} is a classifier: it draws no samples; "
                         f"`zoo predict {source} IMAGE` gives its class probabilities")
    if encoder is None:
        if text is not None:
            raise ContextError(f"--context {text}: {source} is an unconditional model; drop --context")
        return None
    if text is None:
        raise ContextError(f"{source} is a conditional model: give --context, {encoder.describe()}; "
                           f"for example `zoo sample {source} --context "
                           f"{encoder.names[0] if encoder.kind == 'class' else ','.join(['0'] * encoder.features)}`")
    return encoder.parse(text)


def cmd_sample(args) -> int:
    import contextlib


    check_sampling(args.n, args.temperature)
    recipe, model = load_model(args.source)
    context = sampling_context(model, args.context, args.source)
    with model.given(context) if context is not None else contextlib.nullcontext():
        return _sample(args, recipe, model)


def _sample(args, recipe, model) -> int:
    import torch

    from zoo.budget import check_sample_count

    check_sample_count(model, args.n, where=f"zoo sample {args.source}")
    if args.temperatures is not None:
        from zoo._cli_latents import sample_temperatures

        return sample_temperatures(args, recipe, model)
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else _default_output(args.source, f"sample_t{args.temperature:g}.png")
    shape = tuple(model.shape)
    if len(shape) == 3:
        if args.n > MAX_GRID:
            raise UsageError(f"-n {args.n}: an image model's samples are tiled into one picture, at "
                             f"most {MAX_GRID:,} of them. Run `zoo sample {args.source} -n {MAX_GRID}` "
                             "several times with different --seed for more.")
        from zoo.visualize import image_grid, save_png

        with torch.no_grad():
            samples = model.sample(args.n, temperature=args.temperature, exact_inverse=args.exact_inverse)
        save_png(image_grid(samples, model.n_bits), out)
    elif shape == (2,):
        _save_2d_samples(model, recipe, out, args, title=f"{recipe['name']}: {args.n} samples, T={args.temperature:g}"
                         + (f", context {args.context}" if args.context else ""))
    else:
        with torch.no_grad():
            samples = model.sample(args.n, temperature=args.temperature, exact_inverse=args.exact_inverse)
        out = out.with_suffix(".json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(samples.tolist()))
    print(f"wrote {out}")
    return 0


def _save_2d_samples(model, recipe, out: Path, args, title: str) -> None:
    """``args.n`` samples beside the training data (when the data can be built here)."""
    from zoo import assemble
    from zoo.visualize import data_points, save_2d_samples

    try:
        data = data_points(assemble.build_dataset(recipe))
    except ZooError:  # e.g. a pulled model whose data files are not on this machine
        data = None
    save_2d_samples(model, out, args.n, args.temperature, data=data, title=title,
                    exact_inverse=args.exact_inverse)


def _default_output(source: str, filename: str) -> Path:
    folder = Path(source).expanduser()
    return folder / "samples" / filename if folder.is_dir() else Path(filename)


def cmd_eval(args) -> int:
    import torch

    from zoo import assemble
    from zoo.train import make_loaders

    if args.data_dir:
        os.environ["ZOO_DATA_DIR"] = args.data_dir
    recipe, model = load_model(args.source)
    dataset = assemble.build_dataset(recipe)
    if dataset.notice:
        print(f"note: {dataset.notice}")
    task = assemble.build_task(recipe)
    task.check(recipe, dataset)
    _, _, test_loader = make_loaders(dataset, recipe, seed=args.seed)
    torch.manual_seed(args.seed)  # the dequantization noise: the same seed, the same NLL
    evaluation = task.evaluate(model, test_loader, next(model.parameters()).device)
    print(f"test {evaluation.line} over {evaluation.examples} examples (seed {args.seed})")
    return 0


def cmd_score(args) -> int:
    from zoo.score import score_files

    folders = [f for f in args.files if Path(f).is_dir()]
    if folders:
        if len(args.files) > 1:
            raise UsageError(f"{folders[0]} is a folder: score one folder (`zoo score RUN FOLDER`) or "
                             "image files (`zoo score RUN a.png b.png`), not both")
        from zoo._cli_latents import cmd_score_folder

        return cmd_score_folder(args, folders[0])
    recipe, model = load_model(args.source)

    def notify(line: str) -> None:
        print(f"note: {line} to fit the model", file=sys.stderr)

    for path, nll, bpd in score_files(model, args.files, notify=notify):
        print(f"{path}\t{nll:.4f} nats" + (f"\t{bpd:.4f} bits/dim" if bpd is not None else ""))
    return 0


def cmd_predict(args) -> int:
    from zoo.predict import format_prediction, predict, read_inputs

    recipe, model = load_model(args.source)
    inputs, names = read_inputs(model, args.files)
    for prediction in predict(recipe, model, inputs, names, samples=args.samples):
        print(format_prediction(prediction, top=args.top))
    return 0


def cmd_report(args) -> int:
    from zoo import report

    if len(args.runs) == 1:
        path = report.write_run_report(args.runs[0], out=args.out)
    else:
        path = report.write_comparison(args.runs, out=args.out or report.REPORT_FILE)
    print(f"wrote {path}")
    return 0


def cmd_pull(args) -> int:
    from zoo import hub

    pulled = hub.pull(args.name, revision=args.revision, allow_unverified=args.allow_unverified or None)
    print(f"{pulled.repo_id}@{pulled.revision[:12] if pulled.revision else '?'}: files in {pulled.folder}")
    if pulled.unverified:
        print(f"warning: accepted without a content hash (--allow-unverified): {', '.join(pulled.unverified)}",
              file=sys.stderr)
    for key, value in (pulled.metrics or {}).items():
        if isinstance(value, (int, float)) and value is not None:
            print(f"  {key}: {value:.6g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"use it: zoo sample {args.name} --temperature 0.7 | zoo.from_pretrained({args.name!r})")
    return 0


def cmd_push(args) -> int:
    from zoo import hub

    url = hub.push(args.run, args.repo_id, private=args.private, revision=args.revision)
    print(f"pushed {args.run} to {args.repo_id}: {url}")
    return 0


# --- parser --------------------------------------------------------------------------------------


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: options and positionals mix freely (`zoo list layers -v NAME`,
    `zoo run R --out D key=value`), which plain argparse refuses once a positional is complete."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._mixing:  # parse_known_intermixed_args calls back here (Python < 3.13)
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


class _Version(argparse.Action):
    """``--version``: zoo's, torch's and Python's versions (torch imported only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def version_line() -> str:
    import platform

    import torch

    import zoo

    return f"zoo {zoo.__version__} (torch {torch.__version__}, python {platform.python_version()})"


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="A declarative model zoo for normalizing flows.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("zoo list recipes", "zoo run toydensity train.epochs=20",
                         "zoo sample runs/latest -n 500 --temperature 0.7", "zoo COMMAND --help"),
    )
    parser.add_argument("--version", action=_Version, help="print zoo's, torch's and Python's versions")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors (or ZOO_DEBUG=1)")
    # Every command takes --debug too, after its own arguments; SUPPRESS keeps a `zoo --debug run`
    # from being reset by the command's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors (or ZOO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    def command(name, func, help, examples):
        p = sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                           epilog=_examples(*examples), parents=[common],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("run", cmd_run, "train and evaluate a recipe (a file or a shipped recipe's name)",
                ["zoo run toydensity train.epochs=20", "zoo run recipes/emerging_cnn_mnist.yaml --out runs/emerging",
                 "zoo run my.yaml --out runs/mine --overwrite train.lr=1e-4",
                 "zoo run --resume runs/glow_mnist_small-20250101-120000"])
    p.add_argument("recipe", metavar="RECIPE", nargs="?")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, values in YAML")
    p.add_argument("--out", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    p.add_argument("--resume", metavar="RUN",
                   help="continue a stopped run (killed, SIGTERM, Ctrl-C) from its checkpoint, as its "
                        "recipe.yaml says (no RECIPE, overrides or --out then)")
    p.add_argument("--data-dir", help="where dataset files are (default $ZOO_DATA_DIR or ./data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train data-parallel in N processes on this machine (starts torchrun; "
                        "dataset.batch_size is the global batch, split across them)")

    p = command("validate", cmd_validate, "check recipes against the schema without building anything",
                ["zoo validate toydensity", "zoo validate recipes/*.yaml",
                 "zoo validate my.yaml --set train.epochs=3"])
    p.add_argument("recipes", nargs="+", metavar="RECIPE")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value")

    command("schema", cmd_schema, "print the composed JSON Schema of recipes (for editors)",
            ["zoo schema > recipe.schema.json"])

    p = command("list", cmd_list, "list registered components by kind",
                ["zoo list", "zoo list recipes", "zoo list layers 'coup*'", "zoo list layers -v actnorm",
                 "zoo list models", "zoo list datasets --json"])
    p.add_argument("kind", nargs="?",
                   help="layers | bases | datasets | losses | gradient_modes | models | recipes")
    p.add_argument("pattern", nargs="?", metavar="NAME|PATTERN",
                   help="an exact name, or an fnmatch pattern such as 'coup*'")
    p.add_argument("-v", "--verbose", action="store_true", help="full descriptions and parameters")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    command("plugins", cmd_plugins, "show plugins, their versions and components, and broken ones",
            ["zoo plugins", "ZOO_DISABLE_PLUGINS=example zoo plugins"])

    p = command("sample", cmd_sample,
                "draw samples of a run folder or model name: a picture (images, 2-D) or JSON",
                ["zoo sample runs/latest --temperature 0.7", "zoo sample runs/moons -n 2000 --out moons.png",
                 "zoo sample glow-celeba-3x32 -n 16 --seed 3",
                 "zoo sample runs/cglow_mnist_small --context 7 --temperature 0.7"])
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the latent (default 1)")
    p.add_argument("--temperatures", metavar="T,T,...",
                   help="image models: one grid, a row of -n samples per temperature (e.g. 0,0.25,0.5,0.7,1)")
    p.add_argument("-n", type=int, default=64, help=f"number of samples, 1 to {MAX_SAMPLES:,} (default 64)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--exact-inverse", action="store_true",
                   help="invert self-normalizing layers exactly instead of through their learned inverse")
    p.add_argument("--context", help="conditional models: what to condition on, a class name or index "
                   "('7', 'upper') or comma-separated observed values ('1.5,0.3')")
    p.add_argument("--out", help="output file (default RUN/samples/sample_t<T>.png)")

    p = command("predict", cmd_predict,
                "class probabilities of a classifier run (task classify or generative_classify)",
                ["zoo predict runs/mnf_lenet_mnist digit.png --samples 500",
                 "zoo predict runs/cglow_digits_classify a.png b.png --top 3"])
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("files", nargs="+", metavar="FILE", help="images, or .npy/.csv/.txt rows of vectors")
    p.add_argument("--samples", type=int, default=500,
                   help="forward passes per input of a Bayesian classifier (default 500)")
    p.add_argument("--top", type=int, default=None, help="show only the TOP most probable classes")

    p = command("eval", cmd_eval, "test metrics of a run folder or model name",
                ["zoo eval runs/latest", "zoo eval runs/mnist --seed 1 --data-dir /data"])
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the dequantization noise (default 0): the same seed, the same NLL")
    p.add_argument("--data-dir", help="where dataset files are (default $ZOO_DATA_DIR or ./data)")

    p = command("score", cmd_score, "anomaly scores (NLL) of files, or a folder ranked, under a model: high = unusual",
                ["zoo score runs/latest points.txt", "zoo score runs/faces odd.png usual.png",
                 "zoo score runs/digits data/digits-scored --outlier 7"])
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("files", nargs="+", metavar="FILE|FOLDER")
    from zoo._cli_latents import add_commands, add_score_options

    add_score_options(p)
    add_commands(command)

    p = command("report", cmd_report,
                "write a run's page (RUN/report.html), or compare runs side by side (--out, default ./report.html)",
                ["zoo report runs/latest", "zoo report runs/a runs/b --out compare.html"])
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--out", help="the page's file (default RUN/report.html for one run, ./report.html for several)")

    p = command("pull", cmd_pull, "download a named model or ORG/REPO from the Hub",
                ["zoo pull glow-celeba-3x32", "zoo pull you/realnvp-moons --revision main"])
    p.add_argument("name", metavar="NAME|ORG/REPO")
    p.add_argument("--revision")
    p.add_argument("--allow-unverified", action="store_true",
                   help="accept files the Hub gives no content hash for (default: refuse them; "
                        "also ZOO_ALLOW_UNVERIFIED=1)")

    p = command("push", cmd_push, "publish a run folder to the Hub",
                ["zoo push runs/realnvp_moons-20250101-120000 --repo-id you/realnvp-moons",
                 "zoo push runs/mine --repo-id you/mine --private --revision dev"])
    p.add_argument("run", metavar="RUN")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to")
    return parser


def overview(parser: argparse.ArgumentParser) -> str:
    """What bare `zoo` prints: the commands and their one-line help."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows = [(choice.dest, choice.help) for choice in sub._choices_actions]
    width = max(len(name) for name, _ in rows)
    lines = [f"{parser.description}", "", "commands:"]
    lines += [f"  {name:<{width}}  {help}" for name, help in rows]
    lines += ["", "`zoo COMMAND --help` shows a command's options and examples; "
              "start with `zoo list recipes`."]
    return "\n".join(lines)


def _debug_requested(args) -> bool:
    return getattr(args, "debug", False) or os.environ.get("ZOO_DEBUG", "").lower() in ("1", "true", "yes")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: `run --nproc` passes it on
    if args.command is None:
        print(overview(parser))
        return 0
    debug = _debug_requested(args)
    try:
        return args.func(args)
    except ZooError as exc:
        if debug:
            traceback.print_exc()
        print(f"zoo: error: {exc}", file=sys.stderr)
        if not debug:
            print("(run with --debug or ZOO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        said = str(exc)  # zoo.checkpoint.Interrupted says how to resume
        print(f"zoo: interrupted: {said}" if said else "zoo: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except BrokenPipeError:  # `zoo list | head`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
