"""Writers of tiny dataset files in each real on-disk format, for the dataset tests.

Each writer builds the file byte by byte from the format's specification (not with the reader
under test), so a reader that misreads the format fails the tests. Pixel values are chosen so
every image is recognisable: image i of a file has ``pixels_of(i, offset)`` values.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np


def pixels(count: int, shape: Sequence[int], offset: int = 0) -> np.ndarray:
    """``count`` uint8 images of ``shape``: value j (in C order) of image i is
    ``(offset + i + j) % 256``, so any mix-up of images, channels, rows or columns shows."""
    ramp = np.arange(int(np.prod(shape))).reshape(shape)
    return np.stack([(offset + i + ramp) % 256 for i in range(count)]).astype(np.uint8)


# --- MNIST (IDX) -------------------------------------------------------------------------------


def idx_bytes(images: np.ndarray) -> bytes:
    """IDX3 unsigned-byte file: magic 00 00 08 03, three big-endian uint32 sizes, the values."""
    n, h, w = images.shape
    return bytes([0, 0, 0x08, 3]) + struct.pack(">III", n, h, w) + images.astype(np.uint8).tobytes()


def idx_label_bytes(labels: np.ndarray) -> bytes:
    """IDX1 unsigned-byte file: magic 00 00 08 01, one big-endian uint32 count, the labels."""
    return bytes([0, 0, 8, 1]) + struct.pack(">I", len(labels)) + labels.astype(np.uint8).tobytes()


def mnist_labels(count: int, offset: int = 0) -> np.ndarray:
    return ((np.arange(count) + offset) * 7) % 10


def write_mnist(folder: Path, n_train: int = 12, n_test: int = 5, gz: bool = True,
                labels: bool = False) -> Path:
    """train-images-idx3-ubyte and t10k-images-idx3-ubyte (``.gz`` if ``gz``) in ``folder``, and
    with ``labels`` their label files (``mnist_labels``)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [("train-images-idx3-ubyte", idx_bytes(pixels(n_train, (28, 28)))),
             ("t10k-images-idx3-ubyte", idx_bytes(pixels(n_test, (28, 28), offset=100)))]
    if labels:
        files += [("train-labels-idx1-ubyte", idx_label_bytes(mnist_labels(n_train))),
                  ("t10k-labels-idx1-ubyte", idx_label_bytes(mnist_labels(n_test, offset=3)))]
    for name, data in files:
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_BATCHES = [f"data_batch_{k}" for k in range(1, 6)]


def cifar_images(batch: int, per_batch: int) -> np.ndarray:
    """The (per_batch, 3, 32, 32) images of batch ``batch`` (0..4 train, 5 test)."""
    return pixels(per_batch, (3, 32, 32), offset=batch * per_batch)


def write_cifar_binary(folder: Path, per_batch: int = 4) -> Path:
    """cifar-10-batches-bin/ with data_batch_{1..5}.bin and test_batch.bin: records of one label
    byte + 3072 pixel bytes (R plane, G plane, B plane, rows of 32)."""
    out = folder / "cifar-10-batches-bin"
    out.mkdir(parents=True, exist_ok=True)
    for batch, name in enumerate([*CIFAR_BATCHES, "test_batch"]):
        images = cifar_images(batch, per_batch)
        records = b"".join(bytes([i % 10]) + image.tobytes() for i, image in enumerate(images))
        (out / f"{name}.bin").write_bytes(records)
    return out


def write_cifar_python(folder: Path, per_batch: int = 4) -> Path:
    """cifar-10-batches-py/ with pickled dicts like the official (Python 2) ones: bytes keys,
    ``data`` (N, 3072) uint8 and ``labels``."""
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for batch, name in enumerate([*CIFAR_BATCHES, "test_batch"]):
        images = cifar_images(batch, per_batch)
        record = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(per_batch)],
                  b"data": images.reshape(per_batch, -1), b"filenames": [b"x.png"] * per_batch}
        (out / name).write_bytes(pickle.dumps(record, protocol=2))
    return out


class _RunsCode:
    """Pickles to a call of ``os.getcwd``: a stand-in for a malicious payload."""

    def __reduce__(self):
        import os

        return (os.getcwd, ())


def malicious_pickle() -> bytes:
    return pickle.dumps({b"data": _RunsCode()}, protocol=2)


# --- downsampled ImageNet ----------------------------------------------------------------------


def imagenet_images(side: int, batch: int, per_batch: int) -> np.ndarray:
    return pixels(per_batch, (3, side, side), offset=batch * per_batch)


def write_imagenet(folder: Path, side: int = 32, per_batch: int = 3, n_val: int = 4) -> Path:
    """Imagenet{side}_train_npz/train_data_batch_{1..10}.npz and Imagenet{side}_val_npz/val_data.npz
    with ``data`` (N, 3*side*side) uint8 channel-major and ``labels`` (1..1000)."""
    train = folder / f"Imagenet{side}_train_npz"
    val = folder / f"Imagenet{side}_val_npz"
    train.mkdir(parents=True, exist_ok=True)
    val.mkdir(parents=True, exist_ok=True)
    for k in range(10):
        data = imagenet_images(side, k, per_batch).reshape(per_batch, -1)
        np.savez(train / f"train_data_batch_{k + 1}.npz", data=data, labels=np.arange(1, per_batch + 1))
    data = pixels(n_val, (3, side, side), offset=200).reshape(n_val, -1)
    np.savez(val / "val_data.npz", data=data, labels=np.arange(1, n_val + 1))
    return folder


# --- CelebA ------------------------------------------------------------------------------------

CELEBA_ATTRIBUTE_NAMES = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling"]


def celeba_colour(i: int) -> tuple[int, int, int]:
    """Face i's colour: every value is 4 mod 8, mid-way in its 5-bit bucket, so JPEG's small
    errors cannot move it to another bucket."""
    return ((16 * i + 4) % 256, 100, 196)


def celeba_face(i: int) -> np.ndarray:
    """A 218x178 RGB 'face' (the aligned CelebA size): a flat colour per image inside the central
    148x148 square, and white outside it, so the centre crop is visible in the result."""
    image = np.full((218, 178, 3), 255, dtype=np.uint8)
    top, left = (218 - 148) // 2, (178 - 148) // 2
    image[top:top + 148, left:left + 148] = celeba_colour(i)
    return image


def write_celeba(folder: Path, partition: Sequence[int] = (0, 0, 0, 1, 1, 2, 2, 0),
                 attributes: bool = True, layout: str = "torchvision") -> Path:
    """CelebA files: img_align_celeba/000001.jpg..., list_eval_partition.txt (``<name> <0|1|2>``)
    and list_attr_celeba.txt (a count line, the attribute names, ``<name>`` and -1/1 values).
    ``layout="official"`` uses Img/, Eval/ and Anno/ sub-folders like the Google Drive download."""
    from PIL import Image

    official = layout == "official"
    images = folder / ("Img/img_align_celeba" if official else "img_align_celeba")
    images.mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(partition))]
    for i, name in enumerate(names):
        Image.fromarray(celeba_face(i)).save(images / name, quality=95)
    text_dir = folder / "Eval" if official else folder
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "list_eval_partition.txt").write_text(
        "".join(f"{name} {split}\n" for name, split in zip(names, partition)))
    if attributes:
        attr_dir = folder / "Anno" if official else folder
        attr_dir.mkdir(parents=True, exist_ok=True)
        width = len(CELEBA_ATTRIBUTE_NAMES)
        rows = [f"{name} " + " ".join(" 1" if (i + j) % 2 else "-1" for j in range(width))
                for i, name in enumerate(names)]
        (attr_dir / "list_attr_celeba.txt").write_text(
            f"{len(names)}\n" + " ".join(CELEBA_ATTRIBUTE_NAMES) + "\n" + "\n".join(rows) + "\n")
    return folder


# --- a folder of images ------------------------------------------------------------------------


def write_image_folder(folder: Path, classes: dict[str, int], size: tuple[int, int] = (12, 8)) -> Path:
    """``folder/<class>/<k>.png`` RGB images of ``size`` (width, height); image k of a class is a
    flat colour (k, 10 * class index, 200), with a black left column the centre crop removes."""
    from PIL import Image

    for c, (name, count) in enumerate(sorted(classes.items())):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for k in range(count):
            image = np.empty((size[1], size[0], 3), dtype=np.uint8)
            image[:] = (k, 10 * c, 200)
            image[:, 0] = 0
            Image.fromarray(image).save(folder / name / f"{k:03d}.png")
    return folder


# --- hostile files -----------------------------------------------------------------------------
# Small on disk, huge in what they announce (and, for the bombs, in what they really expand to).


def idx_header(count: int, height: int = 28, width: int = 28, value_type: int = 0x08) -> bytes:
    return bytes([0, 0, value_type, 3]) + struct.pack(">III", count, height, width)


def write_gzip_bomb(path: Path, declared_images: int, real_bytes: int,
                    member_bytes: int = 64 << 20) -> Path:
    """A gzipped IDX file announcing ``declared_images`` 28x28 images whose stream really
    decompresses to ``real_bytes`` bytes (header included, zeros after it).

    Zeros are streamed through gzip one ``member_bytes`` block at a time; the blocks after the
    first are identical, so one is compressed and written again and again: a gzip file is a
    series of members that decompressors join (RFC 1952, 2.2), and 3 GiB costs one 64 MiB
    compression and about 3 MB of disk.
    """
    header = idx_header(declared_images)
    first = min(real_bytes, member_bytes)
    zeros = gzip.compress(bytes(member_bytes), compresslevel=9, mtime=0)
    with open(path, "wb") as handle:
        handle.write(gzip.compress(header + bytes(first - len(header)), compresslevel=9, mtime=0))
        left = real_bytes - first
        while left >= member_bytes:
            handle.write(zeros)
            left -= member_bytes
        if left:
            handle.write(gzip.compress(bytes(left), compresslevel=9, mtime=0))
    return path


def png_bytes(width: int, height: int, rows: bytes = b"") -> bytes:
    """An 8-bit RGB PNG (signature, IHDR, one IDAT of ``rows`` deflated, IEND; each chunk with
    its CRC) announcing ``width`` x ``height``: ``rows`` are the filtered scanlines (a filter
    byte, then 3 bytes per pixel), all of them for a real image, a few for a bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # depth 8, colour type 2: RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def npy_header(descr: str, shape: tuple) -> bytes:
    """A .npy 1.0 header (NEP 1): magic, version, little-endian uint16 length, then the dict
    literal padded with spaces and a newline to a multiple of 64 bytes."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    padding = -(10 + len(text) + 1) % 64
    text += " " * padding + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def write_npz(path: Path, members: dict[str, bytes]) -> Path:
    """An .npz archive (a zip) of ``members``: name (without .npy) -> the .npy file's bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def write_npz_of_zeros(path: Path, shape: tuple, chunk: int = 16 << 20) -> Path:
    """An .npz whose deflated ``data`` member is an honest uint8 array of ``shape``, all zeros:
    streamed through the compressor, so the file is small and the array real."""
    total = int(np.prod(shape))
    zeros = bytes(chunk)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("data.npy", "w", force_zip64=True) as member:
            member.write(npy_header("|u1", shape))
            for start in range(0, total, chunk):
                member.write(zeros[:min(chunk, total - start)])
    return path


def pickle_of(*ops: bytes) -> bytes:
    """A protocol-2 pickle made of raw opcodes ``ops``, then STOP."""
    return b"\x80\x02" + b"".join(ops) + b"."


def unicode_op(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def hex_bomb_pickle(levels: int = 40) -> bytes:
    """``_codecs.encode`` applied ``levels`` times with the 'hex' codec: each call doubles the
    bytes, so 500 bytes of pickle ask for 3 * 2**levels."""
    body = b"h\x00" + unicode_op("abc") + unicode_op("latin1") + b"\x86R"  # encode('abc', 'latin1')
    for _ in range(levels):
        body = b"h\x00" + body + unicode_op("hex") + b"\x86R"  # encode(previous, 'hex')
    return pickle_of(b"c_codecs\nencode\nq\x000", body)  # the global in memo 0, popped


def huge_bytes_pickle(length: int = 10 ** 12) -> bytes:
    """BINBYTES8 announcing ``length`` bytes and holding three (protocol 4's opcode)."""
    return b"\x80\x04\x8e" + struct.pack("<Q", length) + b"abc."


def huge_memo_pickle(index: int = 2 ** 31) -> bytes:
    """An empty dict stored at memo ``index`` (LONG_BINPUT): the C unpickler grows its memo to
    twice the index and clears it, 32 GiB for 2**31."""
    return pickle_of(b"}", b"r" + struct.pack("<I", index))


def huge_array_pickle(count: int = 10 ** 12) -> bytes:
    """numpy's ``_reconstruct(ndarray, (count,), 'B')``: an array allocated from a shape."""
    return pickle_of(b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n",
                     b"\x8a\x08" + count.to_bytes(8, "little") + b"\x85", unicode_op("B"),
                     b"\x87R")
