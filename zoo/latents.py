"""What a trained flow is for: its latent space (Glow's temperatures, attributes, interpolation).

    import zoo
    recipe, model = zoo.runs.open_model("runs/digits")      # a run folder or a pulled model
    z = zoo.encode(model, images)                # (N, D) latents of (N, C, H, W) images
    x = zoo.decode(model, z)                     # the images again, exactly
    grid = zoo.temperature_grid(model, [0, 0.5, 1], n=8, seed=0)    # (3, 8, C, H, W)
    path = zoo.interpolate(model, a, b, steps=8, path="slerp")      # (8, C, H, W), a ... b
    direction = zoo.attribute_direction(model, dataset, "8", against="3")
    strip = zoo.manipulate(model, image, direction, alphas=[0, 0.5, 1, 1.5])

Encoding is deterministic: discrete data are dequantized at the centre of their cell (x + 1/2
instead of x + U[0, 1)), so a latent names one image and ``decode(encode(x)) == x`` (the
``dequantize`` inverse floors). An attribute's direction is the seed's (kamenbliznashki Glow):
``dz = mean z(with) - mean z(without)`` over N training images, where "with" is a
class (``FlowDataset.classes``; ``against`` another class gives the class-to-class direction,
"3 -> 8") or a binary attribute (``FlowDataset.attributes``, CelebA's "Smiling"); the latents of
the training images are cached (``zoo._latent_cache``). ``zoo.score_folder`` (``zoo.score``)
ranks a folder of images by bits/dim and by latent distance.

The function is ``encode``, not ``latents``: ``zoo.latents`` is this module.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from zoo import _latent_cache
from zoo.data import FlowDataset, first_tensor, split_labels
from zoo.errors import LabelError, ZooError
from zoo.flow import FlowModel, fast_inverses

BATCH = 256  # images encoded per forward pass
DEFAULT_EXAMPLES = 30_000  # the seed's "first 30,000 training images"
PATHS = ("linear", "slerp")


# --- encoding and decoding ------------------------------------------------------------------------


@contextmanager
def centred_dequantization(model: torch.nn.Module):
    """Within the block, ``dequantize`` layers add 1/2 instead of uniform noise."""
    from zoo.plugins.layers_basic import Dequantize

    layers = [m for m in model.modules() if isinstance(m, Dequantize)]
    saved = [m.noise for m in layers]
    for m in layers:
        m.noise = False
    try:
        yield
    finally:
        for m, value in zip(layers, saved):
            m.noise = value


@contextmanager
def evaluating(model: torch.nn.Module):
    """Eval mode and no gradients within the block; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _reference(model: FlowModel) -> torch.Tensor | None:
    return next(model.parameters(), None)


def _batch(model: FlowModel, images: torch.Tensor) -> torch.Tensor:
    """``images`` as a batch of the model's data shape, on its device and dtype."""
    images = torch.as_tensor(images)
    shape = tuple(model.shape)
    if tuple(images.shape) == shape:
        images = images[None]
    if tuple(images.shape[1:]) != shape:
        raise ZooError(f"images of shape {tuple(images.shape)} do not fit this model: it takes "
                       f"(N, {', '.join(map(str, shape))}) batches or single {shape} images")
    reference = _reference(model)
    return images.to(reference.device, reference.dtype) if reference is not None else images.float()


def encode(model: FlowModel, images: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """The flat latents (N, D) of ``images`` (N, *model.shape) on the data's scale (float32, CPU).

    Deterministic: discrete data are dequantized at the centre of their cell."""
    x = _batch(model, images)
    parts = []
    with evaluating(model), centred_dequantization(model):
        for chunk in x.split(batch_size):
            z, _ = model(chunk)
            parts.append(z.flatten(1).float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, model.latent_dim)


def decode(model: FlowModel, z: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """The images (N, *model.shape) of flat latents (N, D), through the exact inverse (CPU)."""
    z = torch.as_tensor(z)
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise ZooError(f"latents of shape {tuple(z.shape)}: this model's are (N, {model.latent_dim})")
    reference = _reference(model)
    if reference is not None:
        z = z.to(reference.device, reference.dtype)
    parts = []
    with evaluating(model), fast_inverses(model, enabled=False):
        for chunk in z.split(batch_size):
            parts.append(model.inverse(chunk.reshape(len(chunk), *model.latent_shape)).float().cpu())
    return torch.cat(parts)


# --- temperatures ---------------------------------------------------------------------------------


def temperature_grid(model: FlowModel, temperatures: Sequence[float], n: int, seed: int = 0,
                     exact_inverse: bool = False) -> torch.Tensor:
    """(len(temperatures), n, *shape): row t holds ``n`` samples at temperature t.

    Every row starts from the same seeded base noise, so column i shows one sample as the
    temperature rises; temperature 0 is the base's mode, the same whatever the seed."""
    rows = []
    with evaluating(model):
        for temperature in temperatures:
            with torch.random.fork_rng(devices=_cuda_devices(model)):
                torch.manual_seed(seed)
                rows.append(model.sample(n, temperature=float(temperature), exact_inverse=exact_inverse).float().cpu())
    return torch.stack(rows)


def _cuda_devices(model: FlowModel) -> list:
    reference = _reference(model)
    return [reference.device] if reference is not None and reference.device.type == "cuda" else []


# --- interpolation --------------------------------------------------------------------------------


def latent_path(za: torch.Tensor, zb: torch.Tensor, steps: int, path: str = "linear") -> torch.Tensor:
    """``steps`` latents from ``za`` to ``zb`` (both ends included), (steps, D).

    ``linear``: (1 - t) za + t zb. ``slerp``: along the great circle between them, the norm
    interpolated too (so the path stays at typical latent norms, as the flow_models seed)."""
    if path not in PATHS:
        raise ZooError(f"--path {path!r}: choose {' or '.join(PATHS)}")
    if steps < 2:
        raise ZooError(f"--steps {steps}: a path needs at least 2 steps (its two ends)")
    za, zb = za.reshape(-1).double(), zb.reshape(-1).double()
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
    if path == "linear":
        out = (1 - t) * za + t * zb
    else:
        na, nb = za.norm(), zb.norm()
        cos = torch.dot(za, zb) / (na * nb).clamp_min(1e-300)
        omega = torch.arccos(cos.clamp(-1, 1))
        if omega < 1e-6 or na == 0 or nb == 0:  # (anti-)parallel or zero: the line is the path
            out = (1 - t) * za + t * zb
        else:
            ua, ub = za / na, zb / nb
            direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
            out = direction * ((1 - t) * na + t * nb)
    out[0], out[-1] = za, zb  # the ends exactly, whatever rounding did
    return out.float()


def interpolate(model: FlowModel, a: torch.Tensor, b: torch.Tensor, steps: int = 8,
                path: str = "linear") -> torch.Tensor:
    """(steps, *shape): the images along the latent path from image ``a`` to image ``b``; the
    first is ``a`` and the last ``b`` again (the flow's exact inverse)."""
    za, zb = encode(model, torch.stack([_batch(model, a)[0], _batch(model, b)[0]]))
    return decode(model, latent_path(za, zb, steps, path))


# --- attributes -----------------------------------------------------------------------------------


@dataclass
class Direction:
    """A latent direction: ``delta = mean z(positives) - mean z(negatives)``."""

    name: str            # what the positives are: a class ("8") or an attribute ("Smiling")
    against: str | None  # what the negatives are: a class ("3"), or None: all others / without
    delta: torch.Tensor  # (D,)
    positives: int
    negatives: int
    kind: str            # "class" or "attributes"
    index: int           # the class's or attribute's index
    against_index: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "class":
            return f"{self.against} -> {self.name}" if self.against is not None else f"not {self.name} -> {self.name}"
        return f"{self.name} (+) / (-)"


def label_names(dataset: FlowDataset, where: str = "the data set") -> tuple[str, tuple[str, ...]]:
    """``(kind, names)`` of a data set's labels: ``("class", classes)`` or ``("attributes", ...)``."""
    if dataset.classes is not None:
        return "class", tuple(dataset.classes)
    if dataset.attributes is not None:
        return "attributes", tuple(dataset.attributes)
    raise LabelError(
        f"{where} has no labels (no classes, no attributes), so there is no attribute to find a "
        "direction for. Manipulation needs a labelled data set: digits or MNIST classes, CelebA "
        "with list_attr_celeba.txt, or an image_folder with one sub-folder per class."
    )


def resolve_label(names: Sequence[str], wanted: str | int, kind: str, where: str = "the data set") -> int:
    """The index of a class or attribute given by name (exact, else the one case-insensitive
    match) or by index; anything else is a LabelError listing the names."""
    text = str(wanted)
    if text in names:
        return list(names).index(text)
    folded = [i for i, name in enumerate(names) if name.lower() == text.lower()]
    if len(folded) == 1:
        return folded[0]
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    from zoo._suggest import did_you_mean

    what = "class" if kind == "class" else "attribute"
    shown = ", ".join(repr(n) for n in names)
    raise LabelError(f"{where} has no {what} {text!r}.{did_you_mean(text, list(names))} Its "
                     f"{what}{'es' if what == 'class' else 's'} (by name or index 0..{len(names) - 1}): {shown}")


def example_indices(size: int, examples: int) -> torch.Tensor:
    """``min(examples, size)`` indices spread evenly over a split of ``size`` items (all of
    them when ``examples >= size``): a folder's split sorted by class gives every class its share."""
    count = min(int(examples), size)
    if count < 1:
        raise ZooError(f"--examples {examples}: must be at least 1")
    return torch.arange(size) if count == size else torch.linspace(0, size - 1, count).round().long()


def training_latents(model: FlowModel, dataset: FlowDataset, examples: int = DEFAULT_EXAMPLES,
                     cache: Path | None = None,
                     progress: Callable[[str], None] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Latents (N, D) and labels (N, ...) or None of N = min(examples, len(train)) training
    images spread evenly over the split (``example_indices``); read from / written to ``cache``
    (a file) when given."""
    split = dataset.train
    indices = example_indices(len(split), examples)
    labels = split_labels(split)
    labels = None if labels is None else labels[indices]
    key = cached = None
    if cache is not None:
        key = {"weights_sha256": _latent_cache.weights_sha256(model),
               "data": _latent_cache.data_fingerprint(dataset)}
        cached = _latent_cache.read(cache, key, model.latent_dim)
        # the indices depend on the two counts only: a cache of as many images is of these ones,
        # and one of the whole split holds every subset
        if cached is not None and len(cached[0]) in (len(indices), len(split)):
            return (cached[0] if len(cached[0]) == len(indices) else cached[0][indices]), labels
    if progress is not None:
        progress(f"encoding {len(indices):,} training images" + (" (cached for the next call)" if cache is not None else ""))
    parts = []
    for chunk in indices.split(BATCH):
        parts.append(encode(model, torch.stack([first_tensor(split[int(i)]) for i in chunk])))
    z = torch.cat(parts)
    if cache is not None and not (cached is not None and len(cached[0]) == len(split)):
        _latent_cache.write(cache, key, z, labels)  # never replacing the whole split's by a subset
    return z, labels


def attribute_direction(model: FlowModel, dataset: FlowDataset, attribute: str | int, *,
                        against: str | int | None = None, examples: int = DEFAULT_EXAMPLES,
                        cache: Path | None = None, where: str = "the data set",
                        progress: Callable[[str], None] | None = None) -> Direction:
    """The latent direction of a class or attribute over ``examples`` training images (spread
    evenly over the split; the seed took the first 30,000 of CelebA's 162,770).

    Classes: positives are the images of class ``attribute``, negatives those of class
    ``against`` (or every other class). Attributes: positives have it, negatives do not."""
    kind, names = label_names(dataset, where)
    index = resolve_label(names, attribute, kind, where)
    against_index = None
    if against is not None:
        if kind != "class":
            raise LabelError(f"{where}: --from names a class to move away from; its labels are binary "
                             "attributes, whose direction is always with minus without")
        against_index = resolve_label(names, against, kind, where)
        if against_index == index:
            raise LabelError(f"--from {against}: the same class as --attribute; choose another class")
    z, labels = training_latents(model, dataset, examples, cache, progress)
    if kind == "class":
        labels = labels.reshape(-1)
        positive = labels == index
        negative = labels == against_index if against_index is not None else ~positive
    else:
        if labels.ndim != 2 or labels.shape[1] <= index:
            raise LabelError(f"{where}: its labels are not one 0/1 vector of {len(names)} attributes per image")
        positive = labels[:, index] == 1
        negative = ~positive
    for count, what in ((int(positive.sum()), names[index]),
                        (int(negative.sum()), names[against_index] if against_index is not None else f"not {names[index]}")):
        if count == 0:
            raise LabelError(f"none of the {len(z):,} training images used is {what!r}, so its mean latent "
                             "is unknown; raise --examples (the training split has "
                             f"{len(dataset.train):,} images)")
    delta = z[positive].double().mean(0) - z[negative].double().mean(0)
    return Direction(names[index], None if against_index is None else names[against_index], delta.float(),
                     int(positive.sum()), int(negative.sum()), kind, index, against_index)


def manipulate(model: FlowModel, image: torch.Tensor, direction: Direction | torch.Tensor,
               alphas: Sequence[float]) -> torch.Tensor:
    """(len(alphas), *shape): ``image`` moved by ``alpha * delta`` in latent space, per alpha
    (0 gives the image back). ``direction`` is a ``Direction`` or a (D,) latent vector."""
    delta = direction.delta if isinstance(direction, Direction) else torch.as_tensor(direction).float()
    if delta.numel() != model.latent_dim:
        raise ZooError(f"a direction of {delta.numel()} values for a model with {model.latent_dim} latent dimensions")
    z = encode(model, image)[0]
    alphas = torch.as_tensor([float(a) for a in alphas])
    return decode(model, z[None] + alphas[:, None] * delta.reshape(1, -1))


def example_image(dataset: FlowDataset, direction: Direction) -> tuple[torch.Tensor, int]:
    """A test image to manipulate, and its index: the first of class ``against`` (or, without
    it, the first without the attribute); the first test image when there is none."""
    labels = split_labels(dataset.test)
    chosen = 0
    if labels is not None and len(labels):
        if direction.kind == "class":
            flat = labels.reshape(-1)
            wanted = flat == direction.against_index if direction.against_index is not None else flat != direction.index
        else:
            wanted = labels[:, direction.index] == 0
        hits = torch.nonzero(wanted).reshape(-1)
        chosen = int(hits[0]) if len(hits) else 0
    return first_tensor(dataset.test[chosen]), chosen


def check_finite(values: Sequence[float], option: str) -> list[float]:
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ZooError(f"{option}: give finite numbers separated by commas, e.g. {option} 0,0.5,1")
    return values
