"""Conditional flows: what a model is conditioned on, and how the context reaches its layers.

A recipe's ``context:`` says what the flow is conditioned on: the data set's labels (``y`` of each
``(x, y)`` item, see ``zoo.data``)::

    context: {type: class}                # a class label, one-hot
    context: {type: class, embed: 16}     # a class label through a learned 16-d embedding
    context: {type: attributes}           # a 0/1 vector of attributes (CelebA's 40)
    context: {type: observed}             # a vector of observed values (an inverse problem)

The model's ``ContextEncoder`` turns the raw context (class indices, 0/1 vectors, observed
values) into one float feature vector per sample, ``(batch, features)``; every layer and base
that takes a context receives that vector. A layer factory that can take one declares
``takes_context = True`` and is then called as ``factory(shape, context_features=K, **params)``;
the module it returns has ``context_features = K`` and ``forward(x, context)``,
``inverse(y, context)`` (factoring layers: ``factor(x, context)``, ``unfactor(y, z, context)``).
Layers without the declaration (actnorm, 1x1 convolutions, permutations) do not depend on the
context; they keep today's contract unchanged. A base that can take one is declared the same way
and has ``log_prob(z, context)``, ``sample(shape, context=..., temperature=...)``.

Raw contexts are checked here (``ContextEncoder.encode``): a wrong shape or dtype, or a class index
out of range, is a ``ContextError`` saying what the model expects.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from zoo.errors import ContextError

CONTEXT_TYPES = ("class", "attributes", "observed")
LABEL_KIND_NAMES = {"class": "class labels", "attributes": "binary attributes",
                    "observed": "observed values"}


def takes_context(factory_or_module: Any) -> bool:
    """True when a layer or base factory declares that it can be conditioned."""
    return bool(getattr(factory_or_module, "takes_context", False))


def is_conditioned(module: nn.Module) -> bool:
    """True when a built layer or base depends on a context (``context_features > 0``)."""
    return int(getattr(module, "context_features", 0) or 0) > 0


def with_context(h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``h`` with the context appended as extra channels (broadcast over the pixels of an image)
    or extra features (vectors): how a coupling's network sees the context."""
    if context is None:
        return h
    context = context.to(h.dtype)
    if h.dim() > 2:
        context = context.view(*context.shape, *([1] * (h.dim() - 2))).expand(-1, -1, *h.shape[2:])
    return torch.cat([h, context], dim=1)


class ContextEncoder(nn.Module):
    """Raw context -> features ``(batch, features)``.

    Args:
        kind: ``"class"``, ``"attributes"`` or ``"observed"``.
        names: the classes' (or attributes') names; for ``observed``, None.
        shape: the per-sample shape of an observed context.
        embed: for classes, the size of a learned embedding (None: one-hot).
    """

    def __init__(self, kind: str, names: Sequence[str] | None = None,
                 shape: Sequence[int] | None = None, embed: int | None = None):
        super().__init__()
        if kind not in CONTEXT_TYPES:
            raise ValueError(f"context type {kind!r}: use one of {CONTEXT_TYPES}")
        self.kind = kind
        self.names = tuple(names) if names is not None else None
        self.prior: tuple[float, ...] | None = None  # p(y) of the training classes, when known
        if kind == "class":
            self.shape: tuple[int, ...] = ()  # one index per sample
        else:
            self.shape = tuple(shape) if shape is not None else (len(self.names),)
        self.embedding = None
        if kind == "class":
            self.num_classes = len(self.names)
            self.embedding = nn.Embedding(self.num_classes, embed) if embed else None
            self.features = embed or self.num_classes
        else:
            self.features = math.prod(self.shape)

    def describe(self) -> str:
        if self.kind == "class":
            shown = ", ".join(self.names[:12]) + (", ..." if len(self.names) > 12 else "")
            return f"a class index 0..{self.num_classes - 1} (or a class name: {shown})"
        if self.kind == "attributes":
            return f"a 0/1 vector of the {len(self.names)} attributes"
        return f"observed values of shape {self.shape}"

    def check(self, raw: torch.Tensor, where: str = "context") -> torch.Tensor:
        """The raw context as a batch the encoder takes, or a ContextError saying why not."""
        if not isinstance(raw, torch.Tensor):
            try:
                raw = torch.as_tensor(raw)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ContextError(f"{where}: cannot read {type(raw).__name__} as a context ({exc}); "
                                   f"the model expects {self.describe()}") from None
        if raw.dim() == len(self.shape) and (self.kind == "class" or tuple(raw.shape) == self.shape):
            raw = raw.unsqueeze(0)  # one context, no batch dimension
        if self.kind == "class":
            if raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool:
                raise ContextError(f"{where}: class labels must be integers, got dtype {raw.dtype}; "
                                   f"the model expects {self.describe()}")
            if raw.dim() != 1:
                raise ContextError(f"{where}: class labels must have shape (batch,), got "
                                   f"{tuple(raw.shape)}; the model expects {self.describe()}")
            if raw.numel() and (int(raw.min()) < 0 or int(raw.max()) >= self.num_classes):
                bad = int(raw.min()) if int(raw.min()) < 0 else int(raw.max())
                raise ContextError(f"{where}: class index {bad} is out of range; the model expects "
                                   f"{self.describe()}")
            return raw.long()
        if raw.dim() < 1 or tuple(raw.shape[1:]) != self.shape:
            raise ContextError(f"{where}: the context has shape {tuple(raw.shape)}, but the model "
                               f"expects (batch, {', '.join(map(str, self.shape))}): {self.describe()}")
        if raw.is_complex():
            raise ContextError(f"{where}: the context must be real, got dtype {raw.dtype}")
        raw = raw.float() if not raw.is_floating_point() else raw
        if not torch.isfinite(raw).all():
            raise ContextError(f"{where}: the context holds non-finite values")
        return raw

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        raw = self.check(raw)
        reference = next(self.parameters(), None)
        if self.kind == "class":
            if self.embedding is not None:
                return self.embedding(raw.to(self.embedding.weight.device))
            return nn.functional.one_hot(raw, self.num_classes).float()
        out = raw.flatten(1)
        return out if reference is None else out.to(reference.dtype)

    def parse(self, text: str, where: str = "--context") -> torch.Tensor:
        """A context written on the command line: a class name or index ("7", "upper"), or
        comma-separated numbers for attributes and observed values ("0.5,1.2")."""
        text = text.strip()
        if self.kind == "class":
            if text in self.names:
                return torch.tensor([self.names.index(text)])
            try:
                index = int(text)
            except ValueError:
                raise ContextError(f"{where}: {text!r} is not a class of this model; it expects "
                                   f"{self.describe()}") from None
            return self.check(torch.tensor([index]), where)
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ContextError(f"{where}: {text!r} is not a comma-separated list of numbers; the "
                               f"model expects {self.describe()}") from None
        if len(values) != self.features:
            raise ContextError(f"{where}: {len(values)} values given; the model expects "
                               f"{self.describe()} ({self.features} values)")
        return self.check(torch.tensor(values).reshape(1, *self.shape), where)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, features={self.features}"


def context_spec(recipe_context: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The recipe's ``context:`` mapping with defaults, or None for an unconditional recipe."""
    if not recipe_context:
        return None
    return {"type": recipe_context["type"], "embed": recipe_context.get("embed")}


def encoder_for(spec: Mapping[str, Any], dataset_labels: Mapping[str, Any], where: str) -> ContextEncoder:
    """The ContextEncoder of a recipe's ``context:`` for a data set whose labels are described
    by ``dataset_labels`` (``kind``, ``names``, ``shape``; see ``zoo.assemble.label_facts``)."""
    wanted, have = spec["type"], dataset_labels.get("kind")
    if have is None:
        fix = dataset_labels.get("fix")
        raise ContextError(
            f"{where}: $.context: the recipe is conditioned on {LABEL_KIND_NAMES[wanted]}, but the "
            f"dataset {dataset_labels.get('dataset')!r} has no labels"
            + (f" here: {fix}" if fix else "; pick a labelled data set or remove context:")
        )
    if have != wanted:
        raise ContextError(
            f"{where}: $.context: type {wanted!r}, but the dataset {dataset_labels.get('dataset')!r} "
            f"has {LABEL_KIND_NAMES[have]}; use context: {{type: {have}}}"
        )
    if spec.get("embed") and wanted != "class":
        raise ContextError(f"{where}: $.context.embed: only class labels are embedded; remove it")
    encoder = ContextEncoder(wanted, names=dataset_labels.get("names"), shape=dataset_labels.get("shape"),
                             embed=spec.get("embed"))
    prior = dataset_labels.get("prior")
    encoder.prior = tuple(prior) if prior is not None else None
    return encoder
