"""Readers of the on-disk formats of the image datasets; each returns numpy arrays.

Every reader checks what it reads and raises ``DataError`` naming the file when it is truncated,
corrupt or not of the expected kind. Formats:

- IDX (MNIST, http://yann.lecun.com/exdb/mnist/): a big-endian header ``00 00 <type> <ndim>``,
  ``ndim`` uint32 sizes, then the values; optionally gzipped.
- CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html): records of 1 label byte
  + 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32).
- CIFAR-10 python batches: pickled dicts with ``data`` (N, 3072) uint8 and ``labels``. They are
  unpickled by ``RestrictedUnpickler``, which can build nothing but numpy arrays (no code runs).
- Downsampled ImageNet (https://image-net.org/download-images, Chrabaszcz et al. 2017,
  arXiv 1707.08819): ``.npz`` with ``data`` (N, 3*s*s) uint8, channel-major, loaded with
  ``allow_pickle=False``.
- CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html): ``list_eval_partition.txt`` and
  ``list_attr_celeba.txt`` text files, JPEGs read with Pillow.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from zoo.errors import DataError

# --- IDX (MNIST) -------------------------------------------------------------------------------

IDX_UBYTE = 0x08  # the only value type MNIST uses


def read_idx_images(path: Path, height: int = 28, width: int = 28) -> np.ndarray:
    """The (N, height, width) uint8 images of an IDX3 file (``.gz`` or raw)."""
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); re-download it")
    value_type, ndim = raw[2], raw[3]
    if value_type != IDX_UBYTE or ndim != 3:
        raise DataError(
            f"{path}: IDX magic says type 0x{value_type:02x} with {ndim} dimensions; an image file "
            f"has type 0x08 (unsigned byte) and 3 dimensions (is this a labels file?)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; re-download it")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if dims[1:] != [height, width]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected {height}x{width}")
    expected = header + dims[0] * height * width
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes, but its header announces {dims[0]} images ({expected} "
            f"bytes); the file is truncated or corrupt, re-download it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:  # BadGzipFile is an OSError; EOF: truncated
        raise DataError(f"{path}: cannot be read ({exc}); the file is truncated or corrupt") from exc


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_PIXELS = 3 * 32 * 32
CIFAR_RECORD = 1 + CIFAR_PIXELS  # one label byte, then the pixels


def read_cifar_binary(path: Path) -> np.ndarray:
    """The (N, 3, 32, 32) uint8 images of a CIFAR-10 binary batch (labels are dropped)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    if not raw or len(raw) % CIFAR_RECORD:
        raise DataError(
            f"{path}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 "
            "records (1 label byte + 3072 pixel bytes); the file is truncated or corrupt"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers, and refuses any other global.

    A pickle can name any importable callable and have it called while loading; this one only
    resolves the few names that numpy's array pickles use, so a tampered batch file cannot run
    code, it fails to load.
    """

    ALLOWED = {
        ("_codecs", "encode"),  # how protocol-2 pickles spell bytes objects
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def read_cifar_python(path: Path) -> np.ndarray:
    """The (N, 3, 32, 32) uint8 images of a CIFAR-10 python batch, unpickled with restrictions."""
    try:
        with open(path, "rb") as handle:
            # latin1: the official batches were pickled by Python 2 (str keys and array bytes)
            batch = RestrictedUnpickler(handle, encoding="latin1").load()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    except Exception as exc:  # any unpickling failure: corrupt file or a disallowed global
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds a {type(batch).__name__})")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise DataError(f"{path}: no 'data' array of shape (N, {CIFAR_PIXELS}) in this batch")
    return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)


# --- downsampled ImageNet ----------------------------------------------------------------------


def npz_data_count(path: Path, side: int) -> int:
    """How many images an ImageNet ``.npz`` batch holds, read from the array header only."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("data.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(member)
    except KeyError as exc:
        raise DataError(f"{path}: no 'data' array in this .npz file") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); re-download it") from exc
    _check_imagenet_array(path, shape, dtype, side)
    return int(shape[0])


def read_imagenet_npz(path: Path, side: int) -> np.ndarray:
    """The (N, 3, side, side) uint8 images of a downsampled-ImageNet ``.npz`` batch."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "data" not in archive.files:
                raise DataError(f"{path}: no 'data' array in this .npz file (has {archive.files})")
            data = archive["data"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); re-download it") from exc
    _check_imagenet_array(path, data.shape, data.dtype, side)
    return data.reshape(-1, 3, side, side)


def _check_imagenet_array(path: Path, shape: tuple, dtype: np.dtype, side: int) -> None:
    if len(shape) != 2 or shape[1] != 3 * side * side or dtype != np.uint8:
        raise DataError(
            f"{path}: 'data' is {dtype} of shape {tuple(shape)}; expected uint8 of shape "
            f"(N, {3 * side * side}) for {side}x{side} images (wrong resolution?)"
        )


# --- CelebA ------------------------------------------------------------------------------------

CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}


def read_celeba_partition(path: Path) -> dict[str, list[str]]:
    """The image file names of each split in ``list_eval_partition.txt`` (0 train, 1 val, 2 test)."""
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for number, fields in _text_rows(path):
        if len(fields) != 2 or fields[1] not in CELEBA_SPLITS:
            raise DataError(
                f"{path}, line {number}: expected '<image>.jpg <0|1|2>', got {' '.join(fields)!r}"
            )
        splits[CELEBA_SPLITS[fields[1]]].append(fields[0])
    return splits


def read_celeba_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The attribute names and, per image file name, its attributes as 0/1 (the file has -1/1).

    Layout: a count line, a line of the 40 names, then ``<image>.jpg`` and 40 values of -1 or 1.
    """
    rows = list(_text_rows(path))
    if len(rows) < 2:
        raise DataError(f"{path}: expected a count line and a line of attribute names")
    names = rows[1][1]
    values: dict[str, np.ndarray] = {}
    for number, fields in rows[2:]:
        if len(fields) != len(names) + 1 or any(v not in ("-1", "1") for v in fields[1:]):
            raise DataError(
                f"{path}, line {number}: expected an image name and {len(names)} values of -1 or 1"
            )
        values[fields[0]] = np.array([v == "1" for v in fields[1:]], dtype=np.uint8)
    return names, values


def _text_rows(path: Path) -> Iterable[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a text file ({exc})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.split()


# --- image files (CelebA, image folders) -------------------------------------------------------


def read_image(path: Path, channels: int, size: int, crop: int | None = None) -> np.ndarray:
    """A (channels, size, size) uint8 image from any file Pillow reads.

    With ``crop``, the central ``crop`` x ``crop`` square (smaller when the image is) is cut first
    and resized to ``size`` (the Glow CelebA preprocessing, CenterCrop(148) then Resize(64)).
    Without it, the shorter side is resized to ``size`` and the centre cropped to a square.
    Resampling is bilinear with Pillow's antialiasing, like torchvision's ``Resize``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc
    if crop is not None:
        image = _centre_square(image, min(crop, *image.size))
        image = image.resize((size, size), Image.BILINEAR)
    else:
        width, height = image.size
        scale = size / min(width, height)
        resized = (max(size, round(width * scale)), max(size, round(height * scale)))
        image = _centre_square(image.resize(resized, Image.BILINEAR), size)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1).copy()


def _centre_square(image, side: int):
    width, height = image.size
    left = int(round((width - side) / 2.0))  # the rounding torchvision's CenterCrop uses
    top = int(round((height - side) / 2.0))
    return image.crop((left, top, left + side, top + side))


# --- shared ------------------------------------------------------------------------------------


def quantize(images: np.ndarray, n_bits: int) -> np.ndarray:
    """8-bit values reduced to ``n_bits``: ``floor(x / 2**(8 - n_bits))`` (Glow, arXiv 1807.03039)."""
    return images >> (8 - n_bits) if n_bits < 8 else images
