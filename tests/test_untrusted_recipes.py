"""Bad input must never take the process down: hostile recipes, files and command-line values.

Every case ends in a ZooError (a RecipeError) whose message names the file, the place and the fix,
in well under a second. The cases that used to eat memory or the stack (the YAML alias bomb, deep
nesting) run in a child process with an address-space limit, so a regression fails the test
instead of the machine. The last part fuzzes ``load_recipe`` with hypothesis.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from zoo import budget
from zoo.errors import RecipeError, ZooError
from zoo.hookspecs import hookimpl
from zoo.recipe import Recipe, _marks, load_recipe, shipped_recipes_dir
from zoo.recipe._load import MAX_FILE_BYTES, MAX_RECIPE_FILES
from zoo.registry import build_registry

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(shipped_recipes_dir().glob("*.yaml"))

# --- a small registry of fake components (no torch), like tests/test_recipe.py's ----------------


def coupling(shape, hidden: int = 32):
    """Fake coupling layer."""


def flip(shape):
    """Fake flip layer."""


def shift(shape, offset: float = 0.0):
    """Fake shift layer."""


def blobs(n_train: int = 100, noise: float = 0.1):
    """Fake dataset."""


def wide(shape, width: int = 1):
    """Fake layer whose schema allows widths past 2**31."""


wide.params_schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"width": {"type": "integer", "minimum": 1, "maximum": 2**40}},
}


def clamp(shape, low: float = 0.0, high: float = 1.0):
    """Fake layer whose `high` may be infinite."""


clamp.params_schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"low": {"type": "number"}, "high": {"type": "number", "allow_nonfinite": True}},
}


def nll():
    """Fake loss."""


def exact():
    """Fake exact gradient."""


class FakePlugin:
    @staticmethod
    @hookimpl
    def zoo_layers():
        return {"coupling": coupling, "flip": flip, "shift": shift, "wide": wide, "clamp": clamp}

    @staticmethod
    @hookimpl
    def zoo_datasets():
        return {"blobs": blobs}

    @staticmethod
    @hookimpl
    def zoo_losses():
        return {"nll": nll}

    @staticmethod
    @hookimpl
    def zoo_gradient_modes():
        return {"exact": exact}


@pytest.fixture(scope="module")
def reg():
    from zoo.plugins import bases

    return build_registry(
        extra_plugins=[("testplugin", FakePlugin), ("bases", bases)], load_entry_points=False
    )


@pytest.fixture
def load(reg):
    def _load(source, *overrides, **kwargs):
        return load_recipe(source, overrides, registry=reg, **kwargs)

    return _load


MINIMAL = """\
name: tiny
dataset: blobs
model:
  layers:
    - {name: coupling, hidden: 8}
    - {name: flip}
"""


def write(folder, text, name="r.yaml"):
    path = Path(folder) / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return path


def refused(load, *args, **kwargs) -> str:
    """The message of the RecipeError that loading raises, which must come in under a second."""
    start = time.perf_counter()
    with pytest.raises(RecipeError) as excinfo:
        load(*args, **kwargs)
    assert time.perf_counter() - start < 1.0
    return str(excinfo.value)


# --- a child process with an address-space limit ------------------------------------------------

CHILD = """\
import json, os, resource, sys, time
from zoo.errors import ZooError
from zoo.recipe import load_recipe
cases = json.loads(sys.argv[2])
if any(overrides for _, overrides in cases):  # overrides look keys up in the registry: build it first
    from zoo.registry import get_registry
    get_registry()
# The limit is headroom above what the imports took: torch builds differ by gigabytes of address
# space (a CUDA build maps far more than the CPU one), the attacks by nothing.
with open("/proc/self/statm") as f:
    size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
limit = size + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = []
for source, overrides in cases:
    start = time.perf_counter()
    try:
        load_recipe(source, overrides, validate=False)
        outcome = "loaded"
    except ZooError as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
    except BaseException as exc:  # what the test is there to catch: MemoryError, RecursionError
        outcome = "CRASH " + type(exc).__name__ + ": " + str(exc)[:200]
    results.append([outcome, time.perf_counter() - start])
print(json.dumps(results))
"""


def run_limited(cases, limit=512 << 20, timeout=60):
    """``[(outcome, seconds)]`` of ``load_recipe(source, overrides, validate=False)`` for each case,
    run in a child whose address space may grow only ``limit`` bytes past its size after its
    imports (torch is imported only when a case has overrides, which need the registry)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(limit), json.dumps([[str(s), list(o)] for s, o in cases])],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def alias_bomb(levels=9, width=9):
    """The billion laughs: each level a list of `width` aliases of the level before."""
    lines = ["name: bomb", "dataset: blobs", "model: {layers: [{name: flip}]}", "laughs:",
             "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"  l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_in_bounded_memory_and_time(tmp_path):
    bomb = write(tmp_path, alias_bomb(), "bomb.yaml")
    ((outcome, seconds),) = run_limited([(bomb, [])])
    assert outcome.startswith(f"RecipeError: {bomb}:9:7: this list expands to more than 20,000 values")
    assert "aliases" in outcome and "instead of nesting aliases" in outcome  # the fix
    assert seconds < 1.0


def test_aliases_that_stay_small_load_and_stay_independent(load, tmp_path):
    # three levels of nine aliases: 820 values, well inside the limit
    recipe = load(write(tmp_path, alias_bomb(levels=3)), validate=False)
    laughs = recipe["laughs"]
    assert len(laughs["l2"]) == 9 and laughs["l2"][0] == laughs["l1"] == [["lol"] * 9] * 9
    assert laughs["l2"][0] is not laughs["l2"][1] and laughs["l2"][0] is not laughs["l1"]
    # an alias constructs an independent copy: an override of one place leaves the others
    changed = load(write(tmp_path, (
        "name: a\ndataset: blobs\nmodel:\n  layers:\n"
        "    - &c {name: coupling, hidden: 4}\n    - *c\n"
    ), "alias.yaml"), "model.layers.0.hidden=9")
    assert [layer["hidden"] for layer in changed["model"]["layers"]] == [9, 4]


def test_merge_key_bomb_is_refused(load, tmp_path):
    text = "a0: &a0 {k0: 1, k1: 1, k2: 1}\n" + "".join(
        f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}]}}\n" for i in range(1, 9)
    )
    assert "expands to more than 20,000 values" in refused(load, write(tmp_path, text))


def test_deep_nesting_in_files_and_overrides_is_refused(tmp_path):
    depth = 3000
    lists = write(tmp_path, MINIMAL + "tags: " + "[" * depth + "]" * depth + "\n", "lists.yaml")
    maps = write(tmp_path, MINIMAL + "extra: " + "{a: " * depth + "1" + "}" * depth + "\n", "maps.yaml")
    block = write(tmp_path, MINIMAL + "extra:\n" + "".join(" " * i + "a:\n" for i in range(1, 1000)), "block.yaml")
    deep_alias = write(tmp_path, MINIMAL + (
        "x: &x " + "[" * 90 + "]" * 90 + "\n" + "y: " + "[" * 20 + "*x" + "]" * 20 + "\n"
    ), "alias.yaml")
    deep_value = "+extra=" + "[" * depth + "]" * depth
    deep_key = "+" + ".".join(["a"] * depth) + "=1"
    cases = [(lists, []), (maps, []), (block, []), (deep_alias, []),
             (write(tmp_path, MINIMAL, "ok.yaml"), [deep_value]),
             (write(tmp_path, MINIMAL, "ok.yaml"), [deep_key])]
    results = run_limited(cases)
    for (source, _), (outcome, seconds) in zip(cases, results):
        assert outcome.startswith("RecipeError: "), (source, outcome)
        assert "nest more than 100 levels deep" in outcome, outcome
        assert seconds < 1.0, (source, seconds)
    assert f"{lists}:7:" in results[0][0] and f"{maps}:7:" in results[1][0]
    assert f"{deep_alias}:7:" in results[3][0] and "(its aliases included)" in results[3][0]
    assert results[4][0].startswith("RecipeError: override '+extra=[[[[[[[")
    assert "a shorter key path" in results[5][0]


def test_deep_recipe_given_as_data_is_refused(load):
    deep: list = []
    for _ in range(3000):
        deep = [deep]
    data = yaml.safe_load(MINIMAL) | {"tags": deep}
    assert "nest more than 100 levels deep" in refused(load, data)
    assert "bytes values are not allowed" in refused(load, yaml.safe_load(MINIMAL) | {"tags": [b"x"]})


@pytest.mark.parametrize("bad, where, message", [
    ("description: a\x01b\n", ":7:15:", "the control character U+0001 is not allowed"),
    ("description: é\x7f\n", ":7:15:", "the control character U+007F"),
    ("train: {lr: !!float abc}\n", ":7:13:", "cannot read the value 'abc' as float"),
    ("train: {epochs: " + "9" * 5000 + "}\n", ":7:17:", "cannot read the value '9999"),
    ("x: !!binary aGVsbG8=\n", ":7:4:", "bytes values are not allowed"),
    ("x: &a [*a]\n", ":7:4:", "a recursive YAML alias"),
    ("tags: [" + ", ".join(["t"] * 30000) + "]\n", ":7:", "holds more than 20,000 values"),
])
def test_every_yaml_problem_is_a_recipe_error_at_file_line_col(load, tmp_path, bad, where, message):
    path = write(tmp_path, MINIMAL + bad)
    text = refused(load, path)
    assert text.startswith(f"{path}{where}") and message in text
    assert "Traceback" not in text


@pytest.mark.parametrize("loader", [_marks.PyRecipeLoader, _marks.RecipeLoader], ids=["python", "default"])
def test_both_yaml_parsers_keep_the_limits(monkeypatch, loader):
    monkeypatch.setattr(_marks, "RecipeLoader", loader)
    for text, message in [
        (alias_bomb(), "expands to more than"),
        ("a: " + "{a: " * 300 + "1" + "}" * 300, "nest more than 100 levels deep"),
        ("a: é\x01", r"t.yaml:1:5: YAML syntax error: the control character U\+0001"),
    ]:
        with pytest.raises(RecipeError, match=message):
            _marks.load_marked(text, "t.yaml")
    data, _ = _marks.load_marked("a: [1e-3, 5., .5, 7]\nb: 2021-05-01\n", "t.yaml")
    assert data == {"a": [0.001, 5.0, 0.5, 7], "b": "2021-05-01"}


def test_huge_and_non_utf8_files_are_refused(load, tmp_path):
    huge = write(tmp_path, MINIMAL + "# " + "x" * MAX_FILE_BYTES + "\n", "huge.yaml")
    assert "is larger than 1 MiB" in refused(load, huge)
    latin1 = write(tmp_path, (MINIMAL + "description: caf\xe9\n").encode("latin-1"), "latin1.yaml")
    text = refused(load, latin1)
    assert text.startswith(f"{latin1}:7:17: the file is not UTF-8 text (byte 0xe9)") and "save it as UTF-8" in text


# --- extends: only regular files -----------------------------------------------------------------


NOT_REGULAR = [
    ("/dev/zero", "is a character device, not a regular file"),
    ("/dev/urandom", "is a character device, not a regular file"),
    ("/proc/self/environ", "is a file of the operating system, not a recipe"),
    ("/proc/self/status", "is a file of the operating system, not a recipe"),
    ("folder", "is a folder, not a regular file"),
    ("pipe.yaml", "is a FIFO (named pipe), not a regular file"),  # a blocking open would hang
]


def test_extends_refuses_what_is_not_a_regular_file(tmp_path):
    # in a child with an address-space limit: read as a file, /dev/zero never ends
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe.yaml")
    cases = [(target, kind, write(tmp_path, f"extends: {target}\n" + MINIMAL, f"child{i}.yaml"))
             for i, (target, kind) in enumerate(NOT_REGULAR) if os.path.exists(target) or "/" not in target]
    assert len(cases) >= 4
    results = run_limited([(child, []) for _, _, child in cases], timeout=30)
    for (target, kind, child), (outcome, seconds) in zip(cases, results):
        assert outcome.startswith(f"RecipeError: {child}:1:10: extends: "), outcome
        assert kind in outcome and "Name a .yaml recipe file" in outcome and seconds < 1.0, outcome


def test_extends_may_name_regular_files_anywhere(load, tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "recipes").mkdir()
    base = write(tmp_path / "shared", "train: {epochs: 4}\n", "base.yaml")
    up = load(write(tmp_path / "recipes", "extends: ../shared/base.yaml\n" + MINIMAL))
    absolute = load(write(tmp_path / "recipes", f"extends: {base}\n" + MINIMAL, "abs.yaml"))
    assert up["train"]["epochs"] == absolute["train"]["epochs"] == 4


def test_extends_trees_are_bounded(load, tmp_path):
    # a diamond doubles the reads at each level: 2**6 files reached through six levels
    write(tmp_path, "train: {epochs: 2}\n", "d0.yaml")
    for level in range(1, 7):
        write(tmp_path, f"extends: [d{level - 1}.yaml, d{level - 1}.yaml]\n", f"d{level}.yaml")
    text = refused(load, write(tmp_path, "extends: d6.yaml\n" + MINIMAL))
    assert f"zoo reads at most {MAX_RECIPE_FILES}" in text and "Extend fewer files" in text
    many = "extends: [" + ", ".join(["d0.yaml"] * 1000) + "]\n"
    assert f"at most {MAX_RECIPE_FILES}" in refused(load, write(tmp_path, many + MINIMAL, "many.yaml"))


# --- numbers: YAML 1.2 floats, non-finite values, sizes -------------------------------------------


def test_yaml_1_2_floats_in_files_and_overrides(load, tmp_path):
    path = write(tmp_path, MINIMAL + (
        "train: {lr: 1e-3, weight_decay: 1E-5, sample_temperature: .5, lr_decay: 1., grad_clip_norm: -2.5e+3}\n"
        "tags: ['1e3', 2021-05-01]\n"
    ))
    with pytest.raises(RecipeError, match=r"grad_clip_norm: -2500.0 is less than or equal to the minimum of 0"):
        load(path)
    recipe = load(path, "train.grad_clip_norm=1E5")
    train = recipe["train"]
    assert (train["lr"], train["weight_decay"], train["sample_temperature"], train["lr_decay"]) == (0.001, 1e-5, 0.5, 1.0)
    assert train["grad_clip_norm"] == 100000.0 and isinstance(train["grad_clip_norm"], float)
    assert recipe["tags"] == ["1e3", "2021-05-01"]  # quoted stays a string, dates too
    for text, value in [("1e-3", 0.001), ("5.", 5.0), (".5", 0.5), ("-2.5e+3", -2500.0), ("+1E5", 1e5)]:
        lr = load(write(tmp_path, MINIMAL), f"train.lr={text}", validate=False)["train"]["lr"]
        assert lr == value and isinstance(lr, float)
    assert load(write(tmp_path, MINIMAL), "train.epochs=3")["train"]["epochs"] == 3  # still an int
    # written back out, a string that reads as a YAML 1.2 float is quoted, so it stays a string
    again = load(write(tmp_path, recipe.to_yaml(), "again.yaml"))
    assert again == recipe and again["tags"][0] == "1e3"


@pytest.mark.parametrize("override, path", [
    ("train.lr=.nan", "$.train.lr"),
    ("train.sample_temperature=.inf", "$.train.sample_temperature"),
    ("train.betas=[.nan, 0.9]", "$.train.betas[0]"),
    ("model.layers.1={name: shift, offset: .nan}", "$.model.layers[1].offset"),
    ("dataset={name: blobs, noise: -.inf}", "$.dataset.noise"),
])
def test_nan_and_infinity_are_refused_where_the_schema_does_not_allow_them(load, tmp_path, override, path):
    text = refused(load, write(tmp_path, MINIMAL), override)
    assert f"<command line> ({override})  {path}: " in text and "is not a finite number" in text
    assert "Write a finite value" in text


def test_a_schema_may_allow_nonfinite_values(load, tmp_path):
    recipe = load(write(tmp_path, MINIMAL), "+model.layers.2={name: clamp, high: .inf}")
    assert recipe["model"]["layers"][2]["high"] == float("inf")
    text = refused(load, write(tmp_path, MINIMAL), "+model.layers.2={name: clamp, low: -.inf}")
    assert "$.model.layers[2].low: -inf is not a finite number (layer 'clamp')" in text


@pytest.mark.parametrize("override, message", [
    ("model.layers.0.hidden=1000000000000", "1000000000000 is larger than 2,147,483,648 (2**31)"),
    ("model.layers.0.hidden=1e12", "1e+12 is larger than 2,147,483,648"),
    ("dataset={name: blobs, n_train: -10000000000}", "-10000000000 is smaller than -2,147,483,648"),
    ("train.seed=100000000000000000000", "is greater than the maximum of 9223372036854775807"),
    ("dataset={name: blobs, batch_size: 1000000000}", "is greater than the maximum of 1000000"),
    ("model.layers.1={repeat: 1000000000, layers: [flip]}", "is greater than the maximum of 10000"),
    ("train.epochs=10000000000", "is greater than the maximum of 1000000"),
    ("train.n_samples=100000000", "is greater than the maximum of 10000"),
    ("name=" + "n" * 500, "is too long"),
])
def test_sizes_have_upper_bounds(load, tmp_path, override, message):
    assert message in refused(load, write(tmp_path, MINIMAL), override)


def test_a_plugin_schema_may_allow_larger_integers(load, tmp_path):
    recipe = load(write(tmp_path, MINIMAL), f"+model.layers.2={{name: wide, width: {2**35}}}")
    assert recipe["model"]["layers"][2]["width"] == 2**35


def test_repeat_blocks_multiplied_out_are_bounded(load, tmp_path):
    nested = "{repeat: 10000, layers: [{repeat: 10000, layers: [{name: flip}]}]}"
    text = refused(load, write(tmp_path, MINIMAL), f"model.layers.1={nested}")
    assert "the model has 100,000,001 layers once its repeat blocks are multiplied out" in text
    assert "Lower the `repeat:` counts" in text


def test_odd_override_keys(load, tmp_path):
    path = write(tmp_path, MINIMAL)
    assert "use an index, not '²'" in refused(load, path, "model.layers.²=1")
    assert "index '99999" in refused(load, path, "model.layers." + "9" * 5000 + ".hidden=1")


# --- the memory budget ---------------------------------------------------------------------------


def _no_real_build(*args, **kwargs):
    raise AssertionError("the layers were built for real before the budget check")


@pytest.mark.parametrize("hidden, shown", [(100_000, "GiB of parameters"), (2**31 - 1, "more than PyTorch can size")])
def test_a_model_too_large_is_refused_before_any_layer_allocates(monkeypatch, hidden, shown):
    from zoo import assemble

    monkeypatch.setattr(assemble, "build_layers", _no_real_build)
    monkeypatch.delenv(budget.ALLOW_ENV, raising=False)
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 64 << 30)
    recipe = zoo.load_recipe("realnvp_moons", [f"model.layers.0.layers.1.hidden={hidden}"])
    budget.estimate_recipe(zoo.load_recipe("realnvp_moons"), (2,))  # torch's first meta ops import modules
    start = time.perf_counter()
    with pytest.raises(RecipeError) as excinfo:
        zoo.build_model(recipe)
    assert time.perf_counter() - start < 1.0
    text = str(excinfo.value)
    assert text.startswith(f"{recipe.where}: to build and evaluate with batches of 256 needs at least ")
    assert "but 64.0 GiB is available" in text and shown in text
    assert "the largest layer is $.model.layers[0].layers[1] ('affine_coupling'" in text
    assert "train.allow_large=true" in text and "ZOO_ALLOW_LARGE=1" in text


def test_allow_large_turns_the_refusal_into_a_go_ahead(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 1024)
    monkeypatch.delenv(budget.ALLOW_ENV, raising=False)
    recipe = zoo.load_recipe("realnvp_moons")
    with pytest.raises(RecipeError, match=r"needs at least [\d.]+ KiB of memory .* but 1.0 KiB is available"):
        zoo.build_model(recipe)
    assert zoo.build_model(zoo.load_recipe("realnvp_moons", ["train.allow_large=true"])) is not None
    monkeypatch.setenv(budget.ALLOW_ENV, "1")
    assert zoo.build_model(recipe) is not None


def test_meta_estimate_matches_the_real_build_of_every_built_in_layer(registry):
    """Each registered layer, on the first shape it accepts: the parameter bytes and the output
    shape found on `meta` (nothing allocated) are those of the real layer."""
    checked = []
    for name in registry.names("layers"):
        factory = registry.get("layers", name).factory
        for shape in ((4, 8, 8), (3, 8, 8), (6,)):
            try:
                real = factory(shape)
            except (ValueError, ZooError):
                continue
            result = budget._meta_layer(factory, shape, {})
            assert result is not None and result is not budget._STOP, name
            assert result == (budget._tensor_bytes(real), tuple(getattr(real, "out_shape", shape))), name
            checked.append(name)
            break
    assert len(checked) == len(registry.names("layers"))


def test_estimates_of_a_built_model_and_the_sample_and_batch_checks(monkeypatch):
    monkeypatch.delenv(budget.ALLOW_ENV, raising=False)
    recipe = zoo.load_recipe("realnvp_moons")
    model = zoo.build_model(recipe)
    before = budget.estimate_recipe(recipe, (2,))
    after = budget.estimate_model(model)
    tensors = list(model.parameters()) + list(model.buffers())
    assert before.param_bytes == after.param_bytes == sum(t.numel() * t.element_size() for t in tensors)
    assert before.activation_bytes == after.activation_bytes == 8 * len(model.shapes)
    assert budget.check_sample_count(model, 64) == after
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 1 << 30)
    text = str(pytest.raises(RecipeError, budget.check_sample_count, model, 10**9).value)
    assert text.startswith("zoo sample: to draw 1,000,000,000 samples at once needs at least")
    assert "draw fewer samples (-n)" in text and "ZOO_ALLOW_LARGE=1" in text
    with pytest.raises(RecipeError, match="must be a whole number of at least 1, got 0"):
        budget.check_sample_count(model, 0)
    budget.check_batch(model, 1000)
    with pytest.raises(RecipeError, match="to train with batch_size 100000000 needs at least"):
        budget.check_batch(model, 10**8, where="zoo run")
    assert budget.check_batch(model, 10**8, allow_large=True) == after
    monkeypatch.setenv(budget.ALLOW_ENV, "1")
    assert budget.check_sample_count(model, 10**9) == after


def test_available_memory_counts_the_address_space_limit():
    script = textwrap.dedent("""
        import os, resource
        from zoo.budget import available_memory
        free = available_memory()
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), size + (2 << 30)))
        print(free, available_memory())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    free, limited = map(int, done.stdout.split())
    assert free > 0 and 0 < limited <= 2 << 30 and limited <= free


def test_cli_validate_of_a_bomb_is_one_clear_error(tmp_path):
    bomb = write(tmp_path, alias_bomb(), "bomb.yaml")
    deep = write(tmp_path, "name: x\n" + "a: " + "[" * 3000 + "]" * 3000 + "\n", "deep.yaml")
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
              "from zoo.cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "validate", str(bomb), str(deep)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{bomb}:9:7: this list expands to more than 20,000 values" in done.stderr
    assert f"{deep}:2:" in done.stderr and "2 of 2 recipes have errors" in done.stderr


# --- fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
HUGE = [10**20, 2**63, -(2**63) - 1, 2**31 + 1, 10**12, 1e300, -1e300, float("nan"), float("inf"), 0, -1]
DEEP = "__DEEP__"

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(HUGE))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    """A copy of the shipped recipes (their `extends:` targets included), the registry warmed."""
    folder = tmp_path_factory.mktemp("fuzz") / "recipes"
    shutil.copytree(shipped_recipes_dir(), folder)
    for path in SHIPPED:
        load_recipe(path)
    return folder


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, path + (index,))


def _mutate(data, draw):
    """One random change at a random place: delete, replace, change the type, nest deeply."""
    paths = list(_paths(data))[1:]
    if not paths:
        return data
    path = draw(st.sampled_from(paths))
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    old = parent[path[-1]]
    op = draw(st.sampled_from(["delete", "value", "huge", "swap", "deep", "wrap"]))
    if op == "delete":
        del parent[path[-1]]
    elif op == "value":
        parent[path[-1]] = draw(values)
    elif op == "huge":
        parent[path[-1]] = draw(st.sampled_from(HUGE))
    elif op == "swap":  # the same content as another type
        parent[path[-1]] = str(old) if not isinstance(old, str) else [old] if draw(st.booleans()) else {old: old}
    elif op == "deep":
        parent[path[-1]] = DEEP
    else:
        parent[path[-1]] = [old] * draw(st.integers(0, 3))
    return data


@st.composite
def mutated_recipes(draw):
    source = draw(st.sampled_from(SHIPPED))
    data = yaml.safe_load(source.read_text())
    for _ in range(draw(st.integers(1, 4))):
        data = _mutate(data, draw)
    text = yaml.safe_dump(data, allow_unicode=True)
    depth = draw(st.sampled_from([5, 99, 150, 3000]))
    return source.name, text.replace(DEEP, "[" * depth + "]" * depth)


def _load_or_zoo_error(path, overrides=()):
    start = time.perf_counter()
    try:
        result = load_recipe(path, list(overrides))
    except ZooError as exc:
        assert str(exc).strip()
        result = None
    assert result is None or isinstance(result, Recipe)
    assert time.perf_counter() - start < 2.0
    return result


@FUZZ
@given(case=mutated_recipes())
def test_fuzz_mutated_shipped_recipes(fuzz_dir, case):
    name, text = case
    path = fuzz_dir / f"_fuzz_{name}"  # beside the originals, so `extends: base/...` resolves
    path.write_text(text)
    _load_or_zoo_error(path)


yaml_ish = st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#?%@`\n\t ab1.e+_<=~\\\x00\x01é")), max_size=120)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), yaml_ish,
                      st.builds(lambda head, tail: MINIMAL + head + tail, yaml_ish, st.text(max_size=20))))
def test_fuzz_random_yaml_text(fuzz_dir, text):
    path = fuzz_dir / "_fuzz_text.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    _load_or_zoo_error(path)


overrides = st.one_of(
    st.text(max_size=60),
    st.builds(lambda key, value: f"{key}={value}",
              st.sampled_from(["train.lr", "train.epochs", "train.seed", "dataset.batch_size", "model.layers.0",
                               "model.layers.0.repeat", "+tags", "~train", "model.base", "train.betas", "a.b.c"]),
              st.one_of(yaml_ish, st.sampled_from(["1e-3", ".nan", "-.inf", "1e999", str(10**20), "[" * 200]))),
)


@FUZZ
@given(source=st.sampled_from(SHIPPED), given_overrides=st.lists(overrides, max_size=3))
def test_fuzz_overrides_of_shipped_recipes(fuzz_dir, source, given_overrides):
    _load_or_zoo_error(source, given_overrides)


def test_zoo_run_refuses_a_batch_that_cannot_fit_before_making_a_run_folder(monkeypatch, tmp_path, capsys):
    from zoo.cli import main

    monkeypatch.delenv(budget.ALLOW_ENV, raising=False)
    monkeypatch.setattr(budget, "available_memory", lambda device=None: 1 << 20)  # a 1 MiB machine
    code = main(["run", "realnvp_moons", "dataset.batch_size=1000000", "dataset.n_train=64",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "realnvp_moons.yaml" in err and "1000000 needs at least" in err and "ZOO_ALLOW_LARGE=1" in err
    assert not (tmp_path / "run").exists()


def test_the_model_catalogue_skips_a_bomb_among_its_recipes(tmp_path):
    from zoo.plugins.pretrained import catalogue

    write(tmp_path, alias_bomb(), "bomb.yaml")
    write(tmp_path, "name: ok\ndataset: moons\nmodel: {layers: []}\nhub: {repo_id: org/ok}\n", "ok.yaml")
    start = time.perf_counter()
    found = catalogue(tmp_path)
    assert time.perf_counter() - start < 1.0
    assert list(found) == ["ok"] and found["ok"]["repo_id"] == "org/ok"


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null"])
def test_a_device_named_as_the_recipe_is_refused_without_reading(special):
    with pytest.raises(RecipeError, match="is not a regular file"):
        zoo.load_recipe(special)
