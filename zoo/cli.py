"""The ``zoo`` command.

    zoo run RECIPE [key=value ...] [--out DIR] [--data-dir DIR]
    zoo validate RECIPE...          zoo schema
    zoo list [KIND] [PATTERN]       zoo plugins
    zoo sample RUN|NAME [--temperature T]      zoo eval RUN|NAME      zoo score RUN|NAME FILE...
    zoo pull NAME|ORG/REPO          zoo push RUN --repo-id ORG/NAME

Every ZooError prints one message and exits 2; ``--debug`` (or ZOO_DEBUG=1) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from zoo.errors import ZooError



# --- commands ------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from zoo.recipe import load_recipe
    from zoo.train import run

    if args.data_dir:
        os.environ["ZOO_DATA_DIR"] = args.data_dir
    recipe = load_recipe(args.recipe, overrides=args.overrides)
    run(recipe, out=args.out, progress=not args.no_progress)
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
    if args.json:
        print(json.dumps({k.title: _components_json(registry, k, args.pattern) for k in kinds}, indent=2))
        return 0
    if [k.name for k in kinds] == ["pretrained"]:
        return _list_models(registry, args.pattern)
    for kind in kinds:
        components = registry.components(kind.name, args.pattern)
        if args.kind is not None and args.pattern and not components and not any(c in args.pattern for c in "*?["):
            from zoo._suggest import did_you_mean

            raise ZooError(f"no {kind.singular} named {args.pattern!r}."
                           f"{did_you_mean(args.pattern, registry.names(kind.name))} "
                           f"`zoo list {kind.title}` shows them all.")
        print(f"{kind.title} ({len(components)}):")
        width = max((len(c.name) for c in components), default=0)
        for c in components:
            print(f"  {c.name:<{width}}  {c.summary}  [{c.plugin}]")
            if args.verbose:
                _print_details(c)
        print()
    return 0


def _components_json(registry, kind, pattern) -> list[dict]:
    rows = []
    for c in registry.components(kind.name, pattern):
        row = {"name": c.name, "summary": c.summary, "plugin": c.plugin}
        if kind.entry == "factory":
            row["params_schema"] = c.params_schema
        elif kind.entry == "path":
            row["path"] = c.factory
        else:
            row.update({k: v for k, v in c.factory.items() if k != "summary"})
        if c.error:
            row["error"] = c.error
        rows.append(row)
    return rows


def _print_details(component) -> None:
    """The full docstring and the parameters (type, default) of a component."""
    import inspect
    import textwrap

    doc = inspect.getdoc(component.factory) or ""
    body = "\n".join(doc.splitlines()[1:]).strip()
    if body:
        print(textwrap.indent(body, "      "))
    properties = (component.params_schema or {}).get("properties", {})
    required = set((component.params_schema or {}).get("required", []))
    for name, prop in properties.items():
        kind = prop.get("type") or ("one of " + ", ".join(map(str, prop["enum"])) if "enum" in prop else "any")
        default = "required" if name in required else f"default {prop.get('default')!r}"
        print(f"      - {name}: {kind}, {default}")
    print()


def _list_models(registry, pattern) -> int:
    from zoo import hub

    rows = hub.list_models(registry)
    rows = [r for r in rows if pattern is None or __import__("fnmatch").fnmatch(r["name"], pattern)]
    print(f"models ({len(rows)}):")
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        status = "weights published" if r.get("published") else "no weights yet"
        print(f"  {r['name']:<{width}}  {r.get('repo_id', '')}  ({status})  {r.get('summary', '')}")
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


def load_model(spec: str):
    """(recipe, model) of a run folder, or of a pulled model by name or repo id."""
    from zoo.train import load_run

    if Path(spec).is_dir():
        return load_run(spec)
    from zoo import hub

    return hub.load_pretrained(spec)


def cmd_sample(args) -> int:
    import torch

    from zoo.visualize import density_picture, image_grid, save_png

    recipe, model = load_model(args.source)
    torch.manual_seed(args.seed)
    out = Path(args.out) if args.out else _default_output(args.source, f"sample_t{args.temperature:g}.png")
    if len(model.shape) == 3:
        samples = model.sample(args.n, temperature=args.temperature, exact_inverse=args.exact_inverse)
        save_png(image_grid(samples, model.n_bits), out)
    elif tuple(model.shape) == (2,):
        save_png(density_picture(model), out)
    else:
        samples = model.sample(args.n, temperature=args.temperature, exact_inverse=args.exact_inverse)
        out = out.with_suffix(".json")
        out.write_text(json.dumps(samples.tolist()))
    print(f"wrote {out}")
    return 0


def _default_output(source: str, filename: str) -> Path:
    folder = Path(source) if Path(source).is_dir() else Path(".")
    return folder / "samples" / filename if Path(source).is_dir() else folder / filename


def cmd_eval(args) -> int:
    from zoo import assemble
    from zoo.train import evaluate, make_loaders

    if args.data_dir:
        os.environ["ZOO_DATA_DIR"] = args.data_dir
    recipe, model = load_model(args.source)
    dataset = assemble.build_dataset(recipe)
    if dataset.notice:
        print(f"note: {dataset.notice}")
    _, _, test_loader = make_loaders(dataset, recipe, seed=0)
    metrics = evaluate(model, test_loader, next(model.parameters()).device)
    line = f"test NLL {metrics['nll']:.4f} nats over {metrics['examples']} examples"
    if dataset.is_image:
        line += f", {metrics['bpd']:.4f} bits/dim"
    print(line)
    return 0


def cmd_score(args) -> int:
    from zoo.score import score_files

    recipe, model = load_model(args.source)
    for path, nll, bpd in score_files(model, args.files):
        print(f"{path}\t{nll:.4f} nats" + (f"\t{bpd:.4f} bits/dim" if bpd is not None else ""))
    return 0


def cmd_pull(args) -> int:
    from zoo import hub

    pulled = hub.pull(args.name, revision=args.revision)
    print(f"{pulled.repo_id}@{pulled.revision[:12] if pulled.revision else '?'}: files in {pulled.folder}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo", description="A declarative model zoo for normalizing flows."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate a recipe",
                       epilog="example: zoo run recipes/toydensity.yaml train.epochs=20")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, values in YAML")
    p.add_argument("--out", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--data-dir", help="where dataset files are (default $ZOO_DATA_DIR or ./data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check recipes against the schema without building anything")
    p.add_argument("recipes", nargs="+")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="key=value")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the composed JSON Schema of recipes (for editors)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("list", help="list registered components by kind",
                       epilog="examples: zoo list; zoo list layers 'coup*'; zoo list models")
    p.add_argument("kind", nargs="?", help="layers | datasets | losses | gradient_modes | models")
    p.add_argument("pattern", nargs="?", help="fnmatch filter on names, e.g. 'coup*'")
    p.add_argument("-v", "--verbose", action="store_true", help="full descriptions and parameters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="show plugins, their versions and components, and broken ones")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("sample", help="sample grid PNG (or density plot) from a run folder or model name")
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact-inverse", action="store_true",
                   help="invert self-normalizing layers exactly instead of through their learned inverse")
    p.add_argument("--out", help="output PNG")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="test metrics of a run folder or model name")
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="anomaly scores (NLL) of files under a model: high = unusual")
    p.add_argument("source", metavar="RUN|NAME")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("pull", help="download a named model or ORG/REPO from the Hub")
    p.add_argument("name", metavar="NAME|ORG/REPO")
    p.add_argument("--revision")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="publish a run folder to the Hub")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to")
    p.set_defaults(func=cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("ZOO_DEBUG") == "1"
    try:
        return args.func(args)
    except ZooError as exc:
        if debug:
            traceback.print_exc()
        print(f"zoo: error: {exc}", file=sys.stderr)
        if not debug:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
