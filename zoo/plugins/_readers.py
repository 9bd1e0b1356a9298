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
  arXiv 1707.08819): ``.npz`` with ``data`` (N, 3*s*s) uint8, channel-major; the ``.npy`` member
  is read by ``read_npy``, never unpickled.
- CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html): ``list_eval_partition.txt`` and
  ``list_attr_celeba.txt`` text files, JPEGs read with Pillow.

Hostile files. A header is a claim, not a fact: a 3 MB gzip can announce (and hold) 3 GiB, an
``.npy`` header can announce 10^9 images, a 60-byte PNG can announce 10^10 pixels. So every size a
header declares is checked, before anything is allocated, against what the file really holds
(decompressing no further than the declared size) and against ``memory_budget()``, a fraction
of the memory this process can still get; only then is the array allocated and filled in place.
Paths must be regular files (a FIFO or ``/dev/zero`` would block or never end).
"""

from __future__ import annotations

import functools
import gzip
import math
import io
import os
import pickle
import pickletools
import stat
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np

from zoo._memory import format_bytes, host_memory_available
from zoo.errors import DataError

# --- memory limits -----------------------------------------------------------------------------

MEMORY_FRACTION_ENV = "ZOO_DATA_MEMORY_FRACTION"
DEFAULT_MEMORY_FRACTION = 0.8
FALLBACK_AVAILABLE = 8 << 30  # when neither /proc/meminfo nor sysconf says what is free


def available_memory() -> int:
    """Bytes this process can still allocate: the least of the machine's available memory
    (``MemAvailable`` of /proc/meminfo, else sysconf's free pages, else 8 GiB), what the cgroup
    (a container's limit) leaves, and what ``RLIMIT_AS`` (``ulimit -v``) leaves of the address space."""
    available = host_memory_available()
    return FALLBACK_AVAILABLE if available is None else available


def memory_fraction() -> float:
    value = os.environ.get(MEMORY_FRACTION_ENV)
    if not value:
        return DEFAULT_MEMORY_FRACTION
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not 0 < fraction <= 1:
        raise DataError(f"{MEMORY_FRACTION_ENV}={value!r} is not a fraction in (0, 1]; unset it "
                        f"(default {DEFAULT_MEMORY_FRACTION}) or set e.g. 0.9")
    return fraction


def memory_budget() -> int:
    """The most bytes one array read from a data file may take: ``memory_fraction()`` (0.8, or
    ``$ZOO_DATA_MEMORY_FRACTION``) of ``available_memory()``, read now."""
    return int(memory_fraction() * available_memory())


def check_memory(path: Path | str, nbytes: int, what: str, fix: str) -> None:
    """DataError unless ``nbytes`` (what ``what`` would take) fits in ``memory_budget()``."""
    fraction, available = memory_fraction(), available_memory()
    budget = int(fraction * available)
    if nbytes > budget:
        raise DataError(
            f"{path}: {what} would take {format_bytes(nbytes)}, more than the {format_bytes(budget)} zoo lets a "
            f"data file take ({fraction:g} of the {format_bytes(available)} this process can still get); "
            f"{fix}. If the file is genuine, free memory, use fewer images, or raise "
            f"{MEMORY_FRACTION_ENV} (now {fraction:g})"
        )


# --- reading files -----------------------------------------------------------------------------

CHUNK = 1 << 20  # bytes read at a time: a huge read() request would allocate its size up front


def file_size(path: Path) -> int:
    """The size of ``path``, which must be a regular file (a FIFO would block, /dev/zero never end)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: not a regular file (a folder, device or pipe); replace it with the "
                        "downloaded data file")
    return info.st_size


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """At most ``n`` bytes, fewer only at the end of the stream."""
    parts, left = [], n
    while left > 0:
        part = stream.read(min(left, CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _fill(stream: BinaryIO, out: np.ndarray, head: bytes = b"") -> int:
    """Fill the contiguous ``out`` from ``head`` then ``stream``; the bytes filled (fewer than
    ``out.nbytes`` when the stream ends early). Reads at most one byte past ``out``, to tell
    whether the stream is longer: then returns ``out.nbytes + 1``."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    filled = min(len(head), len(view))
    view[:filled] = head[:filled]
    if len(head) > len(view):
        return len(view) + 1
    while filled < len(view):
        got = stream.readinto(view[filled:filled + CHUNK])
        if not got:
            return filled
        filled += got
    return filled + 1 if stream.read(1) else filled


def _read_file(path: Path, fix: str, expansion: int = 1) -> bytes:
    """All of the regular file ``path``, once its size (times ``expansion``, the memory its parsing
    takes) fits in the memory budget."""
    size = file_size(path)
    check_memory(path, size * expansion, f"reading this {format_bytes(size)} file", fix)
    try:
        with open(path, "rb") as handle:
            return _read_up_to(handle, size)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc


# --- IDX (MNIST) -------------------------------------------------------------------------------

IDX_UBYTE = 0x08  # the only value type MNIST uses
IDX_FIX = ("re-download it from https://yann.lecun.com/exdb/mnist/ (or the mirror "
           "https://ossci-datasets.s3.amazonaws.com/mnist/) and put it in {folder}")


def read_idx_images(path: Path, height: int = 28, width: int = 28) -> np.ndarray:
    """The (N, height, width) uint8 images of an IDX3 file (``.gz`` or raw).

    The header's image count is checked before the images are allocated: against the file's
    size (raw files), against the memory budget, and (gzip) by decompressing no more than the
    announced bytes plus one, so a file that decompresses to more or less is refused.
    """
    return _read_idx(path, (height, width))


def read_idx_labels(path: Path) -> np.ndarray:
    """The (N,) uint8 labels of an IDX1 file (MNIST's ``*-labels-idx1-ubyte``), checked as
    ``read_idx_images`` checks images; every label must be a digit 0..9."""
    labels = _read_idx(path, ())
    if labels.size and labels.max() > 9:
        raise DataError(f"{path}: holds label {int(labels.max())}; MNIST labels are 0..9; "
                        + IDX_FIX.format(folder=path.parent))
    return labels


def _read_idx(path: Path, item_shape: tuple[int, ...]) -> np.ndarray:
    fix = IDX_FIX.format(folder=path.parent)
    size = file_size(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
            return _read_idx_stream(path, stream, None if path.suffix == ".gz" else size,
                                    item_shape, fix)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; EOF: truncated
        raise DataError(f"{path}: cannot be read ({exc}); the file is truncated or corrupt, "
                        f"{fix}") from exc


def _read_idx_stream(path: Path, stream: BinaryIO, raw_size: int | None,
                     item_shape: tuple[int, ...], fix: str) -> np.ndarray:
    what = "images" if item_shape else "labels"
    magic = _read_up_to(stream, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number); {fix}")
    value_type, ndim = magic[2], magic[3]
    if value_type != IDX_UBYTE or ndim != 1 + len(item_shape):
        raise DataError(
            f"{path}: IDX magic says type 0x{value_type:02x} with {ndim} dimensions; a file of "
            f"{what} has type 0x08 (unsigned byte) and {1 + len(item_shape)} dimensions (is this "
            f"{'a labels' if item_shape else 'an image'} file?); {fix}"
        )
    sizes = _read_up_to(stream, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header; {fix}")
    count, *shape = struct.unpack(f">{ndim}I", sizes)
    if tuple(shape) != tuple(item_shape):
        raise DataError(f"{path}: images are {shape[0]}x{shape[1]}, expected "
                        f"{item_shape[0]}x{item_shape[1]}; {fix}")
    if count == 0:
        raise DataError(f"{path}: its IDX header announces 0 {what}; {fix}")
    header, nbytes = 4 + 4 * ndim, count * math.prod(item_shape)
    if raw_size is not None and raw_size != header + nbytes:
        raise DataError(
            f"{path}: {raw_size} bytes, but its header announces {count} {what} ({header + nbytes} "
            f"bytes); the file is truncated or corrupt, {fix}"
        )
    shown = "x".join(map(str, item_shape))
    check_memory(path, nbytes, f"the {count} {what}{' of ' + shown if shown else ''} its IDX "
                 "header announces", fix)
    items = np.empty((count, *item_shape), dtype=np.uint8)
    filled = _fill(stream, items)
    if filled > nbytes:
        raise DataError(f"{path}: decompresses to more than the {count} {what} ({nbytes} bytes) its "
                        f"header announces: not an MNIST file (a decompression bomb?); {fix}")
    if filled < nbytes:
        raise DataError(f"{path}: holds {filled} bytes of {'pixels' if item_shape else what}, but its header announces {count} "
                        f"{what} ({nbytes} bytes); the file is truncated or corrupt, {fix}")
    return items


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_PIXELS = 3 * 32 * 32
CIFAR_RECORD = 1 + CIFAR_PIXELS  # one label byte, then the pixels
CIFAR_FIX = ("re-download the CIFAR-10 batches from https://www.cs.toronto.edu/~kriz/cifar.html and "
             "extract them again")
PICKLE_EXPANSION = 4  # the file, the unpickled string, its bytes and the array


def read_cifar_binary(path: Path) -> np.ndarray:
    """The (N, 3, 32, 32) uint8 images of a CIFAR-10 binary batch (labels are dropped)."""
    size = file_size(path)
    if not size or size % CIFAR_RECORD:
        raise DataError(
            f"{path}: {size} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 "
            f"records (1 label byte + 3072 pixel bytes); the file is truncated or corrupt, {CIFAR_FIX}"
        )
    raw = _read_file(path, CIFAR_FIX, expansion=2)  # the file, then its pixels without labels
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers, and refuses any other global.

    A pickle can name any importable callable and have it called while loading; this one only
    resolves the few names that numpy's array pickles use, so a tampered batch file cannot run
    code, it fails to load. Even those are guarded, each to the one use numpy's pickles make of
    it: ``_codecs.encode`` only encodes to latin1 (a chain of 'hex' encodings would double a
    string per call), ``_reconstruct`` only makes the empty array that ``__setstate__`` then
    fills from the file's bytes, and no dtype may hold Python objects.
    Use ``load_restricted_pickle``, which also checks the opcodes before unpickling.
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
        return _GUARDED.get(name) or super().find_class(module, name)


class _ArrayType:
    """Stands for numpy.ndarray inside a restricted pickle: an argument, never called."""


def _latin1_encode(text, encoding="latin1", *_):
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode to {encoding!r}")
    return text.encode("latin1")


def _empty_array(subtype, shape, dtype):
    if subtype is not _ArrayType or tuple(shape) != (0,):
        raise pickle.UnpicklingError("refusing to build an array other than numpy's empty stand-in")
    return np.ndarray((0,), dtype=_object_free(np.dtype(dtype)))


def _object_free(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing an array of Python objects")
    return dtype


_GUARDED = {"encode": _latin1_encode, "ndarray": _ArrayType, "_reconstruct": _empty_array,
            "dtype": lambda *args: _object_free(np.dtype(*args))}
PICKLE_OPCODES = {op.code.encode("latin1"): op for op in pickletools.opcodes}
PICKLE_COUNTS = {  # how a counted argument (a string, bytes, a long) gives its length
    pickletools.TAKEN_FROM_ARGUMENT1: "<B", pickletools.TAKEN_FROM_ARGUMENT4: "<i",
    pickletools.TAKEN_FROM_ARGUMENT4U: "<I", pickletools.TAKEN_FROM_ARGUMENT8U: "<Q",
}
MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def check_pickle_sizes(raw: bytes) -> None:
    """UnpicklingError unless every length in the pickle ``raw`` fits in it.

    The C unpickler allocates a counted string's declared length before reading it, a frame's,
    and a memo of twice a declared index (cleared, so touched), so a 20-byte pickle could ask for
    2**64 bytes. This walks the opcodes (``pickletools.opcodes`` says each one's argument),
    skipping counted arguments without decoding them, and checks those numbers against the end.
    """
    stream = io.BytesIO(raw)
    while True:
        position = stream.tell()
        op = PICKLE_OPCODES.get(stream.read(1))
        if op is None:
            raise pickle.UnpicklingError(f"no valid opcode at byte {position} (and no STOP before it)")
        if op.name == "STOP":
            return
        if op.arg is None:
            continue
        if op.arg.n in PICKLE_COUNTS:
            count_format = PICKLE_COUNTS[op.arg.n]
            (value,) = struct.unpack(count_format, stream.read(struct.calcsize(count_format)))
            if not 0 <= value <= len(raw) - stream.tell():
                raise pickle.UnpicklingError(f"{op.name} at byte {position} announces {value} bytes; "
                                             f"{len(raw) - stream.tell()} remain")
            stream.seek(value, io.SEEK_CUR)
            continue
        value = op.arg.reader(stream)
        if op.name in MEMO_PUTS and int(value) > len(raw):
            raise pickle.UnpicklingError(f"memo index {value} at byte {position} is past the pickle's end")
        if op.name == "FRAME" and value > len(raw) - stream.tell():
            raise pickle.UnpicklingError(f"frame of {value} bytes at byte {position} is past the pickle's end")


def load_restricted_pickle(raw: bytes):
    """Unpickle ``raw`` with ``RestrictedUnpickler`` once ``check_pickle_sizes`` passed."""
    check_pickle_sizes(raw)
    return RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()


def read_cifar_python(path: Path) -> np.ndarray:
    """The (N, 3, 32, 32) uint8 images of a CIFAR-10 python batch, unpickled with restrictions."""
    raw = _read_file(path, CIFAR_FIX, expansion=PICKLE_EXPANSION)
    try:
        # latin1: the official batches were pickled by Python 2 (str keys and array bytes)
        batch = load_restricted_pickle(raw)
    except Exception as exc:  # any unpickling failure: corrupt file or a disallowed global
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc}); {CIFAR_FIX}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds a {type(batch).__name__})")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise DataError(f"{path}: no 'data' array of shape (N, {CIFAR_PIXELS}) in this batch")
    return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)


# --- .npy arrays, alone or in .npz archives ----------------------------------------------------

NPY_PREFIX_LIMIT = 10_000 + 12  # numpy's own header limit (max_header_size), magic and length
NPZ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, NotImplementedError,
              RuntimeError)  # RuntimeError: an encrypted member; NotImplementedError: a method


def read_npy(stream: BinaryIO, size: int, path: Path | str, check: Callable[[tuple, np.dtype], None],
             fix: str) -> np.ndarray:
    """The array of a ``.npy`` stream of ``size`` bytes, read without pickle.

    The header (shape, dtype, order) is parsed from at most ``NPY_PREFIX_LIMIT`` bytes; then,
    before anything is allocated, object dtypes are refused, ``check(shape, dtype)`` (the caller's
    expectations) runs, the announced bytes must equal what the stream holds, and they must fit
    in the memory budget.
    """
    shape, fortran, dtype, rest = _npy_header(stream, size, path, check, fix)
    out = np.empty(int(np.prod(shape, dtype=object)), dtype=dtype)
    if _fill(stream, out, rest) != out.nbytes:
        raise DataError(f"{path}: the array's data are shorter or longer than its header announces; "
                        f"the file is truncated or corrupt, {fix}")
    return out.reshape(shape[::-1]).transpose() if fortran else out.reshape(shape)


def npy_header(stream: BinaryIO, size: int, path: Path | str, check: Callable[[tuple, np.dtype], None],
               fix: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of a ``.npy`` stream of ``size`` bytes, checked as ``read_npy`` does."""
    shape, _, dtype, _ = _npy_header(stream, size, path, check, fix)
    return shape, dtype


def _npy_header(stream, size, path, check, fix) -> tuple[tuple, bool, np.dtype, bytes]:
    prefix = _read_up_to(stream, min(size, NPY_PREFIX_LIMIT))
    head = io.BytesIO(prefix)
    try:
        version = np.lib.format.read_magic(head)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version[0]}.{version[1]} (zoo reads 1.0 and 2.0)")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(head)
    except (ValueError, TypeError, SyntaxError, struct.error) as exc:
        raise DataError(f"{path}: not a valid .npy array ({exc}); {fix}") from exc
    if dtype.hasobject:
        raise DataError(f"{path}: the array holds Python objects (dtype {dtype}), which zoo never "
                        f"unpickles; {fix}")
    check(tuple(shape), dtype)
    count = int(np.prod(shape, dtype=object))  # Python ints: no overflow
    announced, held = count * dtype.itemsize, size - head.tell()
    if announced != held:
        raise DataError(f"{path}: its header announces {dtype} of shape {tuple(shape)} "
                        f"({format_bytes(announced)}) but it holds {format_bytes(held)} of data; the file is "
                        f"truncated or corrupt, {fix}")
    check_memory(path, announced, f"the {dtype} array of shape {tuple(shape)} its header announces", fix)
    return tuple(shape), fortran, dtype, prefix[head.tell():]


def read_npy_file(path: Path, check: Callable[[tuple, np.dtype], None], fix: str) -> np.ndarray:
    """The array of the ``.npy`` file ``path`` (see ``read_npy``)."""
    size = file_size(path)
    try:
        with open(path, "rb") as handle:
            return read_npy(handle, size, path, check, fix)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc


def _with_npz_member(path: Path, name: str, fix: str, read: Callable[[BinaryIO, int], object]):
    """``read(member, size)`` on the member ``name`` of the ``.npz`` archive ``path``."""
    file_size(path)
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise DataError(f"{path}: no {name.removesuffix('.npy')!r} array in this .npz file "
                                f"(has {[n.removesuffix('.npy') for n in archive.namelist()]}); "
                                f"{fix}") from None
            with archive.open(info) as member:  # zipfile never yields more than file_size bytes
                return read(member, info.file_size)
    except NPZ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); {fix}") from exc


# --- downsampled ImageNet ----------------------------------------------------------------------

IMAGENET_FIX = "re-download it from https://image-net.org/download-images (Downsampled ImageNet)"


def npz_data_count(path: Path, side: int) -> int:
    """How many images an ImageNet ``.npz`` batch holds, read from the array header only."""
    check = functools.partial(_check_imagenet_array, path, side=side)
    shape, _ = _with_npz_member(path, "data.npy", IMAGENET_FIX,
                                lambda member, size: npy_header(member, size, path, check, IMAGENET_FIX))
    return int(shape[0])


def read_imagenet_npz(path: Path, side: int) -> np.ndarray:
    """The (N, 3, side, side) uint8 images of a downsampled-ImageNet ``.npz`` batch."""
    check = functools.partial(_check_imagenet_array, path, side=side)
    data = _with_npz_member(path, "data.npy", IMAGENET_FIX,
                            lambda member, size: read_npy(member, size, path, check, IMAGENET_FIX))
    return data.reshape(-1, 3, side, side)


def _check_imagenet_array(path: Path, shape: tuple, dtype: np.dtype, side: int) -> None:
    if len(shape) != 2 or shape[1] != 3 * side * side or dtype != np.uint8:
        raise DataError(
            f"{path}: 'data' is {dtype} of shape {tuple(shape)}; expected uint8 of shape "
            f"(N, {3 * side * side}) for {side}x{side} images (wrong resolution?)"
        )


# --- CelebA ------------------------------------------------------------------------------------

CELEBA_SPLITS = {"0": "train", "1": "val", "2": "test"}
CELEBA_FIX = "re-download it from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
TEXT_LINE_LIMIT = 4096  # characters; CelebA's longest lines (attributes) have about 130
TEXT_EXPANSION = 12  # the parsed rows (strings, lists, small arrays) take about this times the file


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
    """The numbered, split non-blank lines of an ASCII text file, read a line at a time."""
    size = file_size(path)
    check_memory(path, size * TEXT_EXPANSION, f"parsing this {format_bytes(size)} text file", CELEBA_FIX)
    try:
        with open(path, encoding="ascii", newline=None) as handle:
            number = 0
            while line := handle.readline(TEXT_LINE_LIMIT + 1):
                number += 1
                if len(line) > TEXT_LINE_LIMIT:
                    raise DataError(f"{path}, line {number}: longer than {TEXT_LINE_LIMIT} characters; "
                                    f"not a CelebA list file, {CELEBA_FIX}")
                if line.strip():
                    yield number, line.split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as a text file ({exc})") from exc


# --- image files (CelebA, image folders) -------------------------------------------------------

# What Pillow raises on files it cannot decode, besides OSError (struct.error: a short header)
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError,
                ZeroDivisionError)


def read_image(path: Path, channels: int, size: int, crop: int | None = None) -> np.ndarray:
    """A (channels, size, size) uint8 image from any file Pillow reads.

    With ``crop``, the central ``crop`` x ``crop`` square (smaller when the image is) is cut first
    and resized to ``size`` (the Glow CelebA preprocessing, CenterCrop(148) then Resize(64)).
    Without it, the shorter side is resized to ``size`` and the centre cropped to a square.
    Resampling is bilinear with Pillow's antialiasing, like torchvision's ``Resize``.
    An image announcing more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's
    decompression-bomb limit, 89 million) is refused before it is decoded.
    """
    from PIL import Image

    file_size(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc}); if the image is genuine, "
                        "shrink it, or raise PIL.Image.MAX_IMAGE_PIXELS") from exc
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); replace or "
                        "remove it") from exc
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
