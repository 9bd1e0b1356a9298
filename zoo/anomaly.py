"""Rank a folder of images by how unusual a trained flow finds them (the flow_models seed).

Two scores per image, high = unusual:

- ``bits_per_dim``: the negative log-likelihood per dimension (uniform dequantization, noise
  seeded so a second run gives the same numbers);
- ``latent_distance``: the flow_models method. PCA of N training latents, then the Euclidean
  distance of the image's latent from the training latents' mean in the first k components
  (the seed: N = 1,000, k = 100). Without training latents (the data set is not on this
  machine) it is the distance from the base's centre, ``|z|``, over all dimensions.

When the folder's images sit in sub-folders (``cat/``, ``beachball/``), the first-level
sub-folder is each image's class and ``auc`` holds, per class, the ROC AUC of each score for
telling that class from the rest (1: the class always scores higher, 0.5: chance).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from zoo.errors import DataError, LabelError
from zoo.flow import FlowModel
from zoo.latents import BATCH, encode, evaluating
from zoo.score import IMAGE_SUFFIXES, load_image_as

SCORES = ("bits_per_dim", "latent_distance")
DEFAULT_COMPONENTS = 100  # the flow_models seed's PCA size
DEFAULT_REFERENCE = 1_000  # training latents the PCA is fitted on (the seed's)
MAX_FILES = 1_000_000


@dataclass
class FolderScores:
    """Per image of a folder (in sorted path order): its scores, ranks and class."""

    folder: Path
    files: list[Path]                 # relative to ``folder``
    classes: list[str]                # first-level sub-folder, "" for images directly in the folder
    bits_per_dim: torch.Tensor        # (N,)
    latent_distance: torch.Tensor     # (N,)
    components: int                   # PCA components used (0: |z| over all dimensions)
    seconds_per_image: float
    notices: list[str] = field(default_factory=list)

    def rank(self, score: str = "bits_per_dim") -> torch.Tensor:
        """1 for the most unusual image by ``score``, N for the most typical."""
        order = torch.argsort(getattr(self, score), descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, len(order) + 1)
        return ranks

    def auc(self) -> dict[str, dict[str, float]]:
        """Per class (when there are two or more), the ROC AUC of each score for it vs the rest."""
        names = sorted(set(self.classes))
        if len(names) < 2:
            return {}
        out = {}
        for name in names:
            positive = torch.tensor([c == name for c in self.classes])
            out[name] = {score: roc_auc(getattr(self, score), positive) for score in SCORES}
        return out

    def csv_text(self) -> str:
        """``file, class, bits_per_dim, latent_distance, rank, latent_rank``, most unusual first."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "class", "bits_per_dim", "latent_distance", "rank", "latent_rank"])
        rank, latent_rank = self.rank("bits_per_dim"), self.rank("latent_distance")
        for i in torch.argsort(rank).tolist():
            writer.writerow([self.files[i].as_posix(), self.classes[i], f"{float(self.bits_per_dim[i]):.6f}",
                             f"{float(self.latent_distance[i]):.6f}", int(rank[i]), int(latent_rank[i])])
        return buffer.getvalue()


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The probability that a random positive scores above a random negative (ties count half):
    the Mann-Whitney U statistic over the product of the two counts."""
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    positive = torch.as_tensor(positive, dtype=torch.bool).reshape(-1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N of ``values``, tied values sharing the mean of their ranks."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty_like(values)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def image_files(folder: Path) -> tuple[list[Path], int]:
    """The images under ``folder`` (recursively, sorted, hidden entries skipped) and how many
    other files were passed over."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    images, skipped = [], 0
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(relative)
            if len(images) > MAX_FILES:
                raise DataError(f"{folder}: more than {MAX_FILES:,} images; score a sub-folder at a time")
        else:
            skipped += 1
    if not images:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or its sub-folders; "
                        "pass a folder of images (sub-folders are read as classes)")
    return images, skipped


def pca(reference: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), the first ``components`` principal axes (k, D)) of reference latents (N, D)."""
    reference = reference.double()
    mean = reference.mean(0)
    k = max(1, min(components, reference.shape[0] - 1, reference.shape[1]))
    _, _, vh = torch.linalg.svd(reference - mean, full_matrices=False)
    return mean, vh[:k]


def latent_distances(z: torch.Tensor, reference: torch.Tensor | None,
                     components: int = DEFAULT_COMPONENTS) -> tuple[torch.Tensor, int]:
    """Distance of each latent from the reference latents' mean in their first ``components``
    principal components, and how many were used; without a reference (or with fewer than two
    latents in it), ``|z|`` over all dimensions and 0."""
    if reference is None or len(reference) < 2:
        return z.double().norm(dim=1).float(), 0
    mean, axes = pca(reference, components)
    return ((z.double() - mean) @ axes.T).norm(dim=1).float(), axes.shape[0]


def score_folder(model: FlowModel, folder: str | Path, reference: torch.Tensor | None = None, *,
                 components: int = DEFAULT_COMPONENTS, seed: int = 0, batch_size: int = BATCH,
                 notify: Callable[[str], None] | None = None) -> FolderScores:
    """Score every image under ``folder`` by bits/dim and latent distance (see the module).

    ``reference``: training latents (N, D) for the PCA (``zoo.latents.training_latents``).
    Images of another size or mode are resized and converted; ``notify`` hears one line about
    it (and about skipped files), also kept in ``FolderScores.notices``."""
    if len(model.shape) != 3:
        raise DataError(f"scoring a folder needs an image model; this one's data have shape {tuple(model.shape)}")
    folder = Path(folder)
    files, skipped = image_files(folder)
    notices = []
    if skipped:
        notices.append(f"{folder}: skipped {skipped:,} files that are not images")
    started = time.perf_counter()
    changed: dict[str, int] = {}
    bpd, latents = [], []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images = []
        for relative in chunk:
            notes: list[str] = []
            images.append(load_image_as(folder / relative, model.shape, model.n_bits, notes))
            for note in notes:
                changed[note] = changed.get(note, 0) + 1
        x = torch.stack(images)
        bpd.append(_bits_per_dim(model, x, seed + start))
        latents.append(encode(model, x))
    z = torch.cat(latents)
    distance, used = latent_distances(z, reference, components)
    elapsed = time.perf_counter() - started
    for note, count in sorted(changed.items(), key=lambda item: -item[1]):
        notices.append(f"{count:,} of {len(files):,} images {note}")
    if notify is not None:
        for notice in notices:
            notify(notice)
    classes = [f.parts[0] if len(f.parts) > 1 else "" for f in files]
    return FolderScores(folder, files, classes, torch.cat(bpd), distance, used,
                        elapsed / len(files), notices)


def _bits_per_dim(model: FlowModel, x: torch.Tensor, seed: int) -> torch.Tensor:
    reference = next(model.parameters(), None)
    if reference is not None:
        x = x.to(reference.device, reference.dtype)
    devices = [reference.device] if reference is not None and reference.device.type == "cuda" else []
    with evaluating(model), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # the dequantization noise: the same folder, the same scores
        return (-model.log_prob(x) / (model.dim * math.log(2))).float().cpu()


def check_outlier(result: FolderScores, outlier: str) -> None:
    names = sorted(set(result.classes) - {""})
    if outlier not in names:
        listed = ", ".join(repr(n) for n in names) if names else "none: its images are not in sub-folders"
        raise LabelError(f"--outlier {outlier!r}: no sub-folder of {result.folder} is named so. Its "
                         f"classes (first-level sub-folders): {listed}")


def extremes(result: FolderScores, score: str, k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` most unusual and the ``k`` most typical images by ``score``."""
    order = torch.argsort(getattr(result, score), descending=True, stable=True).tolist()
    k = min(k, len(order))
    return order[:k], order[::-1][:k]

