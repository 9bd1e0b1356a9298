"""What a zoo model repo says about itself: ``config.json`` and the ``README.md`` model card.

``config.json``::

    {"zoo_version": "0.1.0", "schema_version": 1,
     "recipe": {...the fully resolved recipe...}, "recipe_sha256": "<hex>",
     "input_shape": [2], "n_bits": null,
     "plugins": {"layers_glow": {"distribution": "zoo-flows", "version": "0.1.0"}, ...}}

The model card's YAML front matter follows the Hub's model-card metadata (``library_name``,
``license``, ``tags``, ``datasets``, and ``model-index`` with the test NLL and bits/dim).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import yaml

SCHEMA_VERSION = 1
CARD_TAGS = ("normalizing-flows", "zoo")


def dataset_name(recipe: Mapping[str, Any]) -> str:
    dataset = recipe.get("dataset")
    return str(dataset.get("name")) if isinstance(dataset, Mapping) else str(dataset)


def front_matter(recipe: Mapping[str, Any], metrics: Mapping[str, Any], repo_id: str) -> dict[str, Any]:
    """The model card metadata: Hub fields plus the test metrics under ``model-index``."""
    tags = list(CARD_TAGS) + [t for t in recipe.get("tags", []) or [] if isinstance(t, str) and t not in CARD_TAGS]
    data = dataset_name(recipe)
    results = []
    for key, type_, label in (("test_nll", "nll", "Test NLL (nats)"), ("test_bpd", "bits_per_dim", "Test bits/dim")):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            results.append({"type": type_, "value": round(float(value), 6), "name": label})
    meta: dict[str, Any] = {
        "library_name": "zoo",
        "license": str(recipe.get("license") or "mit"),
        "tags": tags,
        "datasets": [data],
    }
    if results:
        meta["model-index"] = [
            {
                "name": repo_id.split("/")[-1],
                "results": [
                    {
                        "task": {"type": "density-estimation", "name": "Density estimation"},
                        "dataset": {"type": data, "name": data},
                        "metrics": results,
                    }
                ],
            }
        ]
    return meta


def model_card(config: Mapping[str, Any], metrics: Mapping[str, Any], repo_id: str, has_sample: bool) -> str:
    """``README.md``: front matter, what the model is, its test metrics, and how to use it."""
    recipe = config["recipe"]
    meta = yaml.safe_dump(front_matter(recipe, metrics, repo_id), sort_keys=False, allow_unicode=True)
    name = recipe.get("name", repo_id)
    lines = [f"---\n{meta}---", "", f"# {name}", ""]
    if recipe.get("description"):
        lines += [str(recipe["description"]), ""]
    if recipe.get("paper"):
        lines += [f"Paper: {recipe['paper']}", ""]
    lines += [
        f"A normalizing flow trained with zoo (a declarative model zoo of normalizing flows) on `{dataset_name(recipe)}`; "
        f"input shape {tuple(config.get('input_shape') or ())}.",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("test_nll", "test_bpd", "val_nll", "best_epoch", "epochs", "parameters"):
        if metrics.get(key) is not None:
            lines.append(f"| {key} | {metrics[key]} |")
    lines += [
        "",
        "NLL is in nats per example; bits/dim (image data) is the NLL on the data's discrete scale "
        "divided by (dimensions x ln 2).",
        "",
        "## Use it",
        "",
        "```bash",
        f"zoo pull {repo_id}               # download into the Hugging Face cache",
        f"zoo sample {repo_id} --temperature 0.7",
        "```",
        "",
        "```python",
        "import zoo",
        f'model = zoo.from_pretrained("{repo_id}")   # FlowModel, eval mode',
        "log_p = model.log_prob(x)                  # nats per example",
        "x = model.sample(16, temperature=0.7)",
        "```",
        "",
        "## Reproduce it",
        "",
        "`recipe.yaml` in this repo is the fully resolved recipe "
        f"(sha256 `{config['recipe_sha256']}`): `zoo run recipe.yaml`.",
        "",
        "Plugins it needs: "
        + ", ".join(f"{n} ({p.get('distribution') or '?'} {p.get('version') or ''})".strip() for n, p in config.get("plugins", {}).items())
        + ".",
    ]
    if has_sample:
        lines += ["", "![samples](sample.png)"]
    return "\n".join(lines) + "\n"


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a model card (empty if it has none)."""
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    return yaml.safe_load(text[3:end]) or {} if end > 0 else {}
