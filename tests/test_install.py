"""zoo as a user gets it: a wheel built from this tree, installed in a fresh virtual environment
outside it, runs its shipped recipes by name from a folder that is not the source tree.

The fresh environment does not reinstall torch and the other dependencies (a full install from
scratch takes ~3 minutes and 2.4 GB here; .ci/run already does one): a ``.pth`` file points it at
a folder of links to the running environment's distributions, minus every ``zoo*`` one (the
editable zoo of a development environment among them), and the wheel is installed with
``--no-index`` so that pip must find each declared dependency there. The tests then check that
the ``zoo`` they run is the wheel's, inside the new environment's site-packages.

Also here, and fast: the repository's top-level ``recipes/`` and ``schemas/recipe.schema.json``
are the package's own files, not copies that could drift.
"""

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"
SHIPPED_RECIPES = PACKAGE / "recipes"
SHIPPED_SCHEMA = PACKAGE / "recipe" / "recipe.schema.json"
# What a build of the tree must not see: caches, environments, outputs of earlier builds and runs.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "runs", "data", "results", "__pycache__", "*.pyc",
    "*.egg-info", ".pytest_cache",
)


def package_files() -> dict[str, Path]:
    """``{path inside the wheel: source file}`` of every file under zoo/ (caches excluded)."""
    return {
        path.relative_to(ROOT).as_posix(): path
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


# --- the repository's links into the package (fast) ------------------------------------------


def test_top_level_recipes_and_schema_are_the_packages_files():
    assert (ROOT / "recipes").resolve() == SHIPPED_RECIPES.resolve()
    assert (ROOT / "schemas" / "recipe.schema.json").resolve() == SHIPPED_SCHEMA.resolve()
    top = sorted(p.relative_to(ROOT / "recipes") for p in (ROOT / "recipes").rglob("*.yaml"))
    shipped = sorted(p.relative_to(SHIPPED_RECIPES) for p in SHIPPED_RECIPES.rglob("*.yaml"))
    assert top == shipped and len(shipped) >= 20
    for rel in shipped:
        assert (ROOT / "recipes" / rel).read_bytes() == (SHIPPED_RECIPES / rel).read_bytes(), rel
    assert (ROOT / "schemas" / "recipe.schema.json").read_bytes() == SHIPPED_SCHEMA.read_bytes()


# --- the wheel and a fresh environment (slow) -------------------------------------------------


def has_distribution(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of a copy of the tree (a build writes build/ and *.egg-info beside its sources, and
    setuptools would reuse a stale build/lib of the tree itself)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE, symlinks=True)
    out = work / "dist"
    # Asked by distribution, not by import: a build/ folder in the working directory is a
    # namespace package named build.
    if has_distribution("build"):
        command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)]
    else:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(source)]
    done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = out.glob("zoo_flows-*.whl")
    return built


class Installed:
    """A virtual environment with the wheel installed, and a way to run its ``zoo`` from
    ``elsewhere``, a folder outside the source tree."""

    def __init__(self, wheel: Path, prefix: Path, elsewhere: Path):
        self.wheel = wheel
        self.prefix = prefix
        self.python = prefix / "bin" / "python"
        self.site_packages = next((prefix / "lib").glob("python*/site-packages"))
        self.elsewhere = elsewhere
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.env.update(
            VIRTUAL_ENV=str(prefix),
            PATH=f"{prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONNOUSERSITE="1",
            HF_HUB_OFFLINE="1",
            ZOO_DATA_DIR=str(elsewhere / "data"),
        )

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.prefix / "bin" / args[0]), *args[1:]], cwd=self.elsewhere, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done


def wheel_entry_points(archive: zipfile.ZipFile) -> dict[str, dict[str, str]]:
    """``{group: {name: target}}`` of the wheel's entry_points.txt."""
    (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # entry-point names are case-sensitive
    parser.read_string(archive.read(name).decode())
    return {group: dict(parser[group]) for group in parser.sections()}


def link_dependencies(folder: Path) -> None:
    """Link every entry of the running environment's site-packages into ``folder``, except zoo's
    own (and any zoo plugin's) files, ``.pth`` files and editable-install hooks."""
    folder.mkdir()
    paths = sysconfig.get_paths()
    for outer in dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")):
        for entry in outer.iterdir():
            name = entry.name.lower()
            if name.startswith(("zoo", "__editable__", "__pycache__")) or name.endswith((".pth", ".egg-link")):
                continue
            if not (folder / entry.name).exists():
                (folder / entry.name).symlink_to(entry)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Installed:
    work = tmp_path_factory.mktemp("installed")
    prefix = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], cwd=work, check=True, timeout=120)
    env = Installed(wheel, prefix, work / "elsewhere")
    env.elsewhere.mkdir()
    link_dependencies(work / "dependencies")
    (env.site_packages / "_zoo_test_dependencies.pth").write_text(f"{work / 'dependencies'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env.python), "install", "--no-index", str(wheel)],
        cwd=work, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return env


@pytest.mark.slow
def test_wheel_ships_every_file_of_the_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("zoo/")}
        expected = package_files()
        assert set(expected) == shipped, {
            "missing from the wheel": sorted(set(expected) - shipped),
            "in the wheel, not in zoo/": sorted(shipped - set(expected)),
        }
        for name, source in expected.items():
            assert archive.read(name) == source.read_bytes(), name
        entry_points = wheel_entry_points(archive)
    # The recipes and the schema, named explicitly: they are what this issue is about.
    assert {f"zoo/recipes/{p.relative_to(SHIPPED_RECIPES).as_posix()}" for p in SHIPPED_RECIPES.rglob("*.yaml")} <= shipped
    assert "zoo/recipe/recipe.schema.json" in shipped
    assert entry_points["console_scripts"]["zoo"] == "zoo.cli:main"
    assert entry_points["zoo"]["recipes"] == "zoo.plugins.recipes"


@pytest.mark.slow
def test_the_installed_zoo_is_the_wheels_not_the_source_tree(installed):
    done = subprocess.run(
        [str(installed.python), "-c", "import zoo, zoo.recipe as r; print(zoo.__file__); print(r.shipped_recipes_dir())"],
        cwd=installed.elsewhere, env=installed.env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    module, recipes = (Path(line) for line in done.stdout.split())
    assert module.is_relative_to(installed.site_packages), module
    assert recipes.is_relative_to(installed.site_packages) and recipes.is_dir(), recipes
    assert not module.is_relative_to(ROOT)


@pytest.mark.slow
def test_installed_cli_lists_validates_and_prints_the_schema(installed):
    assert "validate" in installed.run("zoo", "--help").stdout
    recipes = json.loads(installed.run("zoo", "list", "recipes", "--json").stdout)["recipes"]
    names = {r["name"] for r in recipes}
    assert names == {p.stem for p in SHIPPED_RECIPES.glob("*.yaml")} and len(names) >= 20
    assert all(Path(r["path"]).is_relative_to(installed.site_packages) for r in recipes), recipes
    assert "recipes (" in installed.run("zoo", "list", "recipes").stdout
    assert "glow-celeba-3x32" in installed.run("zoo", "list", "models").stdout
    schema = json.loads(installed.run("zoo", "schema").stdout)
    assert schema["title"] == json.loads(SHIPPED_SCHEMA.read_text())["title"]
    assert "glow_mnist_small: ok" in installed.run("zoo", "validate", "glow_mnist_small").stdout
    # Every built-in plugin loads from the wheel's own entry points, none broken, no other zoo.
    plugins = installed.run("zoo", "plugins").stdout
    headers = [line for line in plugins.splitlines() if line and not line.startswith(" ")]
    with zipfile.ZipFile(installed.wheel) as archive:
        builtin = wheel_entry_points(archive)["zoo"]
    version = installed.wheel.name.split("-")[1]
    assert headers == [f"{name} {version} (zoo-flows)" for name in sorted(builtin)], plugins


@pytest.mark.slow
def test_installed_zoo_runs_a_shipped_recipe_by_name(installed):
    run = installed.elsewhere / "RUN"
    installed.run(
        "zoo", "run", "realnvp_moons", "train.epochs=1", "dataset.n_train=512", "--out", str(run),
        "--no-progress",
    )
    assert (run / "model.safetensors").stat().st_size > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "moons" and metrics["epochs"] == 1
    assert 0 < metrics["test_nll"] < 10, metrics
