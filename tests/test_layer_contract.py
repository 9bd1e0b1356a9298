"""Every registered layer, built-in or from an installed plugin, passes the contract checks
on each example it declares. Parameterised over the registry: a new layer is tested the moment
it registers."""

import pytest

from zoo.registry import get_registry
from zoo.testing import check_layer, layer_examples

LAYERS = get_registry().components("layers")
CASES = [
    pytest.param(c, ex, id=f"{c.name}-{i}")
    for c in LAYERS
    for i, ex in enumerate(layer_examples(c.factory))
]


def test_every_layer_declares_examples():
    missing = [c.name for c in LAYERS if not layer_examples(c.factory)]
    assert not missing, f"layers without contract examples: {missing}"


def test_every_layer_has_a_summary():
    missing = [c.name for c in LAYERS if not c.summary]
    assert not missing, f"layers without a one-line docstring: {missing}"


@pytest.mark.parametrize("component,example", CASES)
def test_layer_contract(component, example):
    check_layer(
        component.factory,
        example["shape"],
        example["params"],
        input=example["input"],
        atol=example["atol"],
        perturb=example["perturb"],
        context=example["context"],
    )
