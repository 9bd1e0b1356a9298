"""Built-in plugin: the tasks (``zoo.tasks``): density, generative_classify, inverse_problem,
classify.

- ``density`` (the default): a flow of p(x), or of p(x | y) with ``context:``; NLL and bits/dim.
- ``generative_classify`` (flow_models applications 3-4): a class-conditional flow; the class of
  x is predicted as argmax_y log p(x | y) + log p(y); metrics: NLL given the true class, accuracy.
- ``inverse_problem`` (flow_models applications 5-7, Ardizzone et al. 2019, arXiv 1808.04730): a
  flow of p(parameters | observation); metrics: NLL, the calibration of the posterior's
  quantile intervals, and how far the forward model of posterior samples lands from the
  observation (when the data set gives its forward model).
- ``classify``: a classifier of the data set's classes (``zoo.classify``): cross-entropy, or the
  ELBO of Bayesian layers (MNF); accuracy, NLL, expected calibration error.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from zoo.data import split_labels
from zoo.errors import ContextError, RecipeError
from zoo.hookspecs import hookimpl
from zoo.tasks import Evaluation, context_of, nll_evaluation, split_item

CALIBRATION_LEVELS = (0.5, 0.68, 0.9, 0.95)


class DensityTask:
    """Density estimation: maximum likelihood of p(x), or p(x | y) for a conditional flow."""

    name = "density"
    model_kind = "flow"

    def check(self, recipe, dataset) -> None:
        pass

    def initialize(self, model, x, y) -> None:
        model.initialize(x, context_of(model, y))

    def step_loss(self, model, x, y, mode, loss_fn):
        with model.given(context_of(model, y)):
            return mode.loss(model, x, loss_fn)

    def evaluate(self, model, loader: DataLoader, device) -> Evaluation:
        return nll_evaluation(model, loader, device, len(model.shape) == 3)

    def outputs(self, model, dataset, folder, recipe, log) -> dict[str, Any]:
        return {}


def _require_labels(recipe, dataset, task: str, kind: str, example: str) -> None:
    context = recipe.context
    if context is None or context["type"] != kind:
        raise RecipeError(f"{recipe.where}: $.task: {task!r} needs a flow conditioned on the data "
                          f"set's {'classes' if kind == 'class' else 'observations'}: add "
                          f"`context: {example}` to the recipe")


class GenerativeClassifyTask(DensityTask):
    """A class-conditional flow p(x | y) as a classifier: y* = argmax_y log p(x | y) + log p(y)."""

    name = "generative_classify"

    def __init__(self, prior: str = "empirical"):
        self.prior = prior
        self.log_prior: torch.Tensor | None = None

    def check(self, recipe, dataset) -> None:
        _require_labels(recipe, dataset, self.name, "class", "{type: class}")
        labels = split_labels(dataset.train)
        if labels is None:
            raise ContextError(f"{recipe.where}: $.dataset: the training split has no labels")
        counts = torch.bincount(labels.long(), minlength=len(dataset.classes)).double()
        if self.prior == "uniform":
            counts = torch.ones_like(counts)
        self.log_prior = (counts / counts.sum()).log()

    @torch.no_grad()
    def class_log_joint(self, model, x: torch.Tensor) -> torch.Tensor:
        """log p(x | y) + log p(y) for every class y: (batch, classes)."""
        classes = model.context_encoder.num_classes
        prior = self.log_prior if self.log_prior is not None else torch.full((classes,), -math.log(classes))
        columns = [model.log_prob(x, torch.full((x.shape[0],), k, dtype=torch.long)).double()
                   for k in range(classes)]
        return torch.stack(columns, dim=1) + prior.to(x.device)

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, device) -> Evaluation:
        base = nll_evaluation(model, loader, device, len(model.shape) == 3)
        model.eval()
        correct, count = 0, 0
        for item in loader:
            x, y = split_item(item, device)
            correct += int((self.class_log_joint(model, x).argmax(1) == y).sum())
            count += x.shape[0]
        model.train()
        accuracy = correct / max(count, 1)
        return Evaluation(base.score, {**base.values, "accuracy": accuracy},
                          f"{base.line}, accuracy {accuracy:.4f}", base.examples)

    def outputs(self, model, dataset, folder, recipe, log) -> dict[str, Any]:
        return {"prior": self.prior}


class InverseProblemTask(DensityTask):
    """A flow of the posterior p(parameters | observation), trained by maximum likelihood on
    (parameters, observation) pairs; checked by the calibration of its quantile intervals."""

    name = "inverse_problem"

    def __init__(self, posterior_samples: int = 500, calibration_examples: int = 200,
                 example: int = 0):
        if posterior_samples < 10 or calibration_examples < 1:
            raise RecipeError("inverse_problem: posterior_samples must be >= 10 and "
                              "calibration_examples >= 1")
        self.posterior_samples = int(posterior_samples)
        self.calibration_examples = int(calibration_examples)
        self.example = int(example)

    def check(self, recipe, dataset) -> None:
        _require_labels(recipe, dataset, self.name, "observed", "{type: observed}")

    def outputs(self, model, dataset, folder, recipe, log) -> dict[str, Any]:
        from zoo.inverse import calibration, posterior_picture

        forward = dataset.info.get("forward_model")
        metrics = calibration(model, dataset.test, self.posterior_samples, self.calibration_examples,
                              CALIBRATION_LEVELS, forward)
        if forward is not None and "draw" in dataset.info:
            from zoo.visualize import save_png

            x, y = dataset.test[self.example]
            picture = posterior_picture(model, y, x, dataset.info["draw"], self.posterior_samples,
                                        title=f"{recipe['name']}: posterior for end point "
                                        f"({float(y[0]):.2f}, {float(y[1]):.2f})")
            save_png(picture, folder / "samples" / "final_posterior.png")
        log("posterior calibration: " + ", ".join(
            f"{q:g}: {metrics['calibration'][str(q)]:.3f}" for q in CALIBRATION_LEVELS)
            + (f"; forward-model error {metrics['forward_error']:.4f}" if "forward_error" in metrics else ""))
        return metrics


def density() -> DensityTask:
    """Density estimation (the default): maximum likelihood of p(x), or p(x | context)."""
    return DensityTask()


def generative_classify(prior: Literal["empirical", "uniform"] = "empirical") -> GenerativeClassifyTask:
    """A class-conditional flow as classifier: argmax_y log p(x | y) + log p(y) (flow_models 3-4)."""
    return GenerativeClassifyTask(prior)


def inverse_problem(posterior_samples: int = 500, calibration_examples: int = 200,
                    example: int = 0) -> InverseProblemTask:
    """Posterior p(parameters | observation) by a conditional flow (Ardizzone et al. 2019)."""
    return InverseProblemTask(posterior_samples, calibration_examples, example)


def _tasks() -> dict[str, Any]:
    tasks: dict[str, Any] = {"density": density, "generative_classify": generative_classify,
                             "inverse_problem": inverse_problem}
    try:
        from zoo.classify import classify
    except ImportError:  # zoo.classify not there (a partial install): the other tasks still work
        return tasks
    tasks["classify"] = classify
    return tasks


@hookimpl
def zoo_tasks():
    return _tasks()
