"""``zoo predict``: the class probabilities of a classifier run for images or vectors.

A ``classify`` run gives ``samples`` forward passes per input (its Bayesian layers draw new noise
each time; a plain network gives the same answer every time); a class-conditional flow
(``generative_classify``, or any recipe with ``context: {type: class}``) gives
p(y | x) = softmax_y(log p(x | y) + log p(y)) with the training classes' frequencies as p(y)
(recorded with the labels in run.json / config.json; uniform when missing). Other runs have no classes to
predict: a ZooError says what to use instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from zoo.errors import RecipeError

MAX_PREDICT_SAMPLES = 10_000


@dataclass
class Prediction:
    """One input's predictive distribution: per-class mean and spread over the samples."""

    name: str
    classes: tuple[str, ...]
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def best(self) -> tuple[str, float]:
        k = int(self.mean.argmax())
        return self.classes[k], float(self.mean[k])


def predict(recipe, model, inputs: torch.Tensor, names: Sequence[str], samples: int = 500
            ) -> list[Prediction]:
    """Predictions for a batch ``inputs`` of a classify or generative_classify run."""
    if not 1 <= samples <= MAX_PREDICT_SAMPLES:
        raise RecipeError(f"--samples {samples}: must be 1 to {MAX_PREDICT_SAMPLES:,}")
    task = recipe.task[0]
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    if task == "classify":
        from zoo.classify import predictive

        probs = predictive(model, inputs, samples if model.bayesian else 1).probs
        classes = tuple(model.class_names)
    elif getattr(getattr(model, "context_encoder", None), "kind", None) == "class":
        # a class-conditional flow (generative_classify, or a conditional density recipe)
        from zoo.tasks import class_log_joint

        classes = tuple(model.context_encoder.names)
        log_joint = class_log_joint(model, inputs, uniform=recipe.task[1].get("prior") == "uniform")
        probs = torch.softmax(log_joint, dim=1)[None]
    else:
        raise RecipeError(
            f"{recipe['name']} is a {task} model without classes: it predicts none. `zoo predict` is for "
            "classifiers (task classify) and class-conditional flows (context: {type: class}); "
            "`zoo score` gives a density model's NLL"
        )
    mean, std = probs.mean(0), probs.std(0, unbiased=False)
    return [Prediction(name, classes, mean[i].cpu(), std[i].cpu()) for i, name in enumerate(names)]


def read_inputs(model, files: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """Image files (image models) or rows of vector files, as one batch and a name per input."""
    from pathlib import Path

    from zoo.score import read_file

    batches, names = [], []
    for name in files:
        batch, labels = read_file(model, Path(name))
        batches.append(batch)
        names += labels
    return torch.cat(batches), names


def format_prediction(p: Prediction, top: int | None = None) -> str:
    """The prediction and, per class, mean +- spread (sorted by mean)."""
    best, confidence = p.best
    order = torch.argsort(p.mean, descending=True).tolist()[: top or len(p.classes)]
    rows = [f"  {p.classes[k]:>12}  {float(p.mean[k]):.4f} +- {float(p.std[k]):.4f}" for k in order]
    return f"{p.name}: {best} ({confidence:.3f})\n" + "\n".join(rows)
