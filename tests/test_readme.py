"""The README's set-up commands are the ones CI runs, and its recipe table matches recipes/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def setup_commands():
    block = re.search(r"## Set up\n.*?```bash\n(.*?)```", README, re.S)
    assert block, "README has no '## Set up' bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    assert "zoo run realnvp_moons" in commands[0] and "pip install torch==2.13.0 . " in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert setup_commands()[1] in ci.splitlines()


def test_every_recipe_is_in_the_readme_catalogue():
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        assert f"`{recipe.stem}`" in README, f"{recipe.name} missing from the README's recipe table"
