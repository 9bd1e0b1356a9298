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

from typing import Any, Literal, Optional

import torch
from torch.utils.data import DataLoader

from zoo.data import split_labels
from zoo.errors import ContextError, RecipeError, ZooError
from zoo.hookspecs import hookimpl
from zoo.tasks import Evaluation, class_log_joint, context_of, nll_evaluation, split_item

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
        self.prior = prior  # log p(y): the frequencies recorded with the model's labels, or uniform

    def check(self, recipe, dataset) -> None:
        _require_labels(recipe, dataset, self.name, "class", "{type: class}")
        if dataset.classes is None:
            raise ContextError(f"{recipe.where}: $.dataset: the training split has no labels")

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, device) -> Evaluation:
        base = nll_evaluation(model, loader, device, len(model.shape) == 3)
        model.eval()
        correct, count = 0, 0
        for item in loader:
            x, y = split_item(item, device)
            correct += int((class_log_joint(model, x, self.prior == "uniform").argmax(1) == y).sum())
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


class FlowFeatures(torch.nn.Module):
    """A flow layer inside a classifier: its output y, its log-determinant dropped (Inverse-Flow's
    classifier stacks inverse convolutions before a linear head)."""

    def __init__(self, layer: torch.nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.layer = layer
        self.out_shape = tuple(getattr(layer, "out_shape", shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)[0]


class ClassifyTask:
    """A classifier p(y | x) of the data set's classes, trained by cross-entropy, or by the ELBO
    (NLL + KL / N) when it has Bayesian layers (MNF); metrics from ``eval_samples`` forward
    passes per test input (one pass without Bayesian layers)."""

    name = "classify"
    model_kind = "classifier"

    def __init__(self, eval_samples: int = 10, rotated_digit: int | None = 9, figure_samples: int = 500,
                 beside: str | None = None):
        if eval_samples < 1 or figure_samples < 1:
            raise RecipeError("classify: eval_samples and figure_samples must be >= 1")
        self.eval_samples, self.figure_samples = int(eval_samples), int(figure_samples)
        self.rotated_digit = rotated_digit
        self.beside = beside  # a classifier's run folder (or model name) drawn beside in the figure
        self.n_train: int | None = None

    def build_model(self, recipe, shape, n_bits, registry, labels):
        from zoo.assemble import call_factory
        from zoo.classify import Classifier

        if not labels or labels.get("kind") != "class":
            raise ContextError(f"{recipe.where}: $.task: classify needs a data set with classes; "
                               f"{labels.get('dataset') if labels else 'this one'!r} has none")
        if recipe.context is not None:
            raise RecipeError(f"{recipe.where}: $.context: a classifier is not conditioned on its "
                              "labels, it predicts them; remove context:")
        modules, shape = [], tuple(shape)
        input_shape = shape
        for index, (path, name, params) in enumerate(recipe.layers()):
            where = f"{path} (layer {index}, {name!r})"
            kind = "network_layers" if registry.has("network_layers", name) else "layers"
            module = call_factory(recipe, kind, name, where, lambda f, s=shape: f(s, **params), registry)
            if kind == "layers":
                if hasattr(module, "factor"):
                    raise RecipeError(f"{recipe.where}: {where}: a factoring layer cannot be part of "
                                      "a classifier")
                module = FlowFeatures(module, shape)
            shape = tuple(getattr(module, "out_shape", shape))
            modules.append(module)
        classes = len(labels["names"])
        if shape != (classes,):
            raise RecipeError(f"{recipe.where}: $.model.layers: the classifier ends with shape {shape}, "
                              f"but the data set has {classes} classes; end with "
                              f"{{name: linear, out_features: {classes}}} (or mnf_linear)")
        model = Classifier(modules)
        model.shape, model.n_bits = input_shape, n_bits  # what the weights' metadata records
        model.class_names = tuple(labels["names"])
        return model

    def check(self, recipe, dataset) -> None:
        if dataset.label_kind != "class":
            raise ContextError(f"{recipe.where}: $.task: classify needs a data set with classes")
        mode = recipe.component("gradient_mode")[0]
        if mode != "exact":
            raise RecipeError(f"{recipe.where}: $.gradient_mode: {mode!r} is for flows; a classifier "
                              "trains with gradient_mode: exact")
        self.n_train = len(dataset.train)

    def initialize(self, model, x, y) -> None:
        pass

    def step_loss(self, model, x, y, mode, loss_fn):
        from zoo.classify import elbo_loss

        logits = model(x)
        loss = elbo_loss(logits, y, model.kl_divergence(), self.n_train or x.shape[0])
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model, loader: DataLoader, device) -> Evaluation:
        from zoo.classify import classification_metrics, predictive

        samples = self.eval_samples if model.bayesian else 1
        probs, labels = [], []
        for item in loader:
            x, y = split_item(item, device)
            probs.append(predictive(model, x, samples).mean.cpu())
            labels.append(y.cpu())
        values = classification_metrics(torch.cat(probs), torch.cat(labels))
        line = f"accuracy {values['accuracy']:.4f}, NLL {values['nll']:.4f} nats, ECE {values['ece']:.4f}"
        return Evaluation(values["nll"], values, line, sum(len(y) for y in labels))

    def _beside_model(self, recipe):
        """(name, model) of ``beside``: a classifier's run folder or model name."""
        from zoo.runs import open_model

        other_recipe, other = open_model(self.beside)
        if other_recipe.task[0] != "classify":
            raise RecipeError(f"{recipe.where}: $.task.beside: {self.beside} is a "
                              f"{other_recipe.task[0]} run, not a classifier")
        return other_recipe["name"], other

    def outputs(self, model, dataset, folder, recipe, log) -> dict[str, Any]:
        """torch-mnf's rotated-digit figure (when the data set has that class): the per-class
        softmax of ``figure_samples`` passes at 0..180 degrees, and its predictive entropies;
        with ``beside``, that classifier's beside it (torch-mnf: MNF beside LeNet)."""
        from zoo.classify import predictive_entropy, rotation_predictions, save_rotation_figure

        if self.rotated_digit is None or str(self.rotated_digit) not in (dataset.classes or ()):
            return {}
        labels = split_labels(dataset.test)
        wanted = dataset.classes.index(str(self.rotated_digit))
        index = int((labels == wanted).nonzero()[0]) if (labels == wanted).any() else None
        if index is None:
            return {}
        image = dataset.test[index][0].to(next(model.parameters()).device)
        rotated, probs = rotation_predictions(model, image, samples=self.figure_samples)
        panels = {recipe["name"]: probs.cpu()}
        metrics: dict[str, Any] = {"rotated_entropy": [float(e) for e in predictive_entropy(probs.mean(1))]}
        beside = None
        if self.beside is not None:
            try:  # a wrong task.beside must not cost the finished run
                beside = self._beside_model(recipe)
            except ZooError as exc:
                log(f"note: the rotated-digit figure leaves out task.beside: {exc}")
        if beside is not None:
            name, other = beside
            other_probs = rotation_predictions(other.to(image.device), image, samples=self.figure_samples)[1]
            panels[name if name != recipe["name"] else f"{name} ({self.beside})"] = other_probs.cpu()
            metrics["beside_rotated_entropy"] = [float(e) for e in predictive_entropy(other_probs.mean(1))]
        try:
            save_rotation_figure(folder / "samples" / f"final_rotated_{self.rotated_digit}.png",
                                 rotated.cpu() / max(float(rotated.max()), 1e-12), panels)
        except ImportError:
            log("note: the rotated-digit figure needs matplotlib (pip install matplotlib)")
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


def classify(eval_samples: int = 10, rotated_digit: Optional[int] = 9,
             figure_samples: int = 500, beside: Optional[str] = None) -> ClassifyTask:
    """A classifier of the data set's classes: cross-entropy, or the ELBO with MNF layers."""
    return ClassifyTask(eval_samples, rotated_digit, figure_samples, beside)


classify.params_schema = {
    "type": "object",
    "properties": {
        "eval_samples": {"description": "Predictive samples per test input (Bayesian layers).",
                         "type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "rotated_digit": {"description": "The class whose rotated test image the figure shows (null: none).",
                          "type": ["integer", "null"], "minimum": 0, "maximum": 9, "default": 9},
        "figure_samples": {"description": "Softmax samples per angle in the rotated-digit figure.",
                           "type": "integer", "minimum": 1, "maximum": 5000, "default": 500},
        "beside": {"description": "A classifier's run folder or model name drawn beside this one in "
                   "the rotated-digit figure (torch-mnf: MNF beside LeNet).",
                   "type": ["string", "null"], "maxLength": 1000, "default": None},
    },
    "additionalProperties": False,
}
generative_classify.params_schema = {
    "type": "object",
    "properties": {"prior": {"description": "log p(y): the training classes' frequencies, or uniform.",
                             "enum": ["empirical", "uniform"], "default": "empirical"}},
    "additionalProperties": False,
}
inverse_problem.params_schema = {
    "type": "object",
    "properties": {
        "posterior_samples": {"type": "integer", "minimum": 10, "maximum": 100000, "default": 500},
        "calibration_examples": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 200},
        "example": {"description": "The test pair whose posterior the picture shows.",
                    "type": "integer", "minimum": 0, "default": 0},
    },
    "additionalProperties": False,
}


@hookimpl
def zoo_tasks():
    return {"density": density, "generative_classify": generative_classify,
            "inverse_problem": inverse_problem, "classify": classify}
