"""Built-in plugin: the tabular density-estimation benchmarks of MAF and NSF.

POWER, GAS, HEPMASS, MINIBOONE and BSDS300 as preprocessed by Papamakarios, Pavlakou & Murray,
"Masked Autoregressive Flow for Density Estimation", 2017 (https://arxiv.org/abs/1705.07057;
files at https://zenodo.org/record/1161203), and used with the same splits by NSF
(https://arxiv.org/abs/1906.04032). Files are read from ``<data_dir>/<folder>/`` in that
archive's layout, ``data_dir`` being the dataset's param, else ``$ZOO_DATA_DIR``, else ``./data``.
Nothing is downloaded, and nothing is unpickled: ``.npy`` files load with ``allow_pickle=False``.

The preprocessing is the MAF code's, step by step (each factory's docstring says which):
held-out fractions are taken from the end of the (shuffled, for POWER) data, test first.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from zoo.data import DATA_DIR_ENV, FlowDataset, data_dir as default_data_dir, tensor_split
from zoo.errors import DataError
from zoo.hookspecs import hookimpl

SOURCE = "the preprocessed files of Papamakarios et al. (MAF), https://zenodo.org/record/1161203"


def _folder(data_dir: str | None, name: str) -> Path:
    return default_data_dir(data_dir) / name


def _missing(dataset: str, folder: Path, wanted: str, extra: str = "") -> DataError:
    return DataError(
        f"dataset {dataset!r}: {wanted} not found in {folder}. Put {SOURCE} there in that layout, "
        f"or point dataset.data_dir (or ${DATA_DIR_ENV}, or zoo run --data-dir) at the folder "
        f"holding {folder.name}/.{extra}"
    )


def _load_npy(dataset: str, path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"dataset {dataset!r}: {path} is not a plain .npy array ({exc}); zoo never unpickles "
            "data. Re-save it with numpy.save of a float array."
        ) from exc
    return _as_table(dataset, path, array)


def _as_table(dataset: str, path: Path, array: np.ndarray) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] < 1 or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            f"dataset {dataset!r}: {path} must hold a 2-D numeric table (rows x features); got "
            f"shape {array.shape}, dtype {array.dtype}"
        )
    return array.astype(np.float64)


def _read_csv(dataset: str, path: Path) -> tuple[list[str], np.ndarray]:
    """A CSV with a header line: (column names, float table). Empty trailing cells are dropped."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise DataError(f"dataset {dataset!r}: cannot read {path}: {exc}") from exc
    if len(rows) < 2:
        raise DataError(f"dataset {dataset!r}: {path} needs a header line and at least one row")
    header = [name.strip() for name in rows[0]]
    try:
        values = [[float(cell) for cell in row if cell.strip() != ""] for row in rows[1:] if row]
        table = np.array(values, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"dataset {dataset!r}: {path} has a non-numeric or ragged row ({exc})") from exc
    return header, _as_table(dataset, path, table)


def _tail_splits(data: np.ndarray, fraction: float = 0.1):
    """MAF's split: test = the last 10 %, then validation = the last 10 % of the rest."""
    n_test = int(fraction * data.shape[0])
    test, rest = data[data.shape[0] - n_test :], data[: data.shape[0] - n_test]
    n_val = int(fraction * rest.shape[0])
    return rest[: rest.shape[0] - n_val], rest[rest.shape[0] - n_val :], test


def _standardise(train, val, test, reference):
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(part - mean) / std for part in (train, val, test)]


def _dataset(name: str, train, val, test, **info) -> FlowDataset:
    for split, part in zip(("train", "val", "test"), (train, val, test)):
        if part.shape[0] < 1:
            raise DataError(f"dataset {name!r}: the {split} split is empty; the files hold too few rows")
    tensors = [tensor_split(torch.as_tensor(part, dtype=torch.float32)) for part in (train, val, test)]
    sizes = {"train": len(train), "val": len(val), "test": len(test)}
    return FlowDataset(*tensors, shape=(train.shape[1],), n_bits=None, info={"sizes": sizes, **info})


def power(data_dir: str | None = None) -> FlowDataset:
    """UCI household electric power (MAF's POWER), 6-D: ``power/data.npy``.

    MAF's steps: shuffle with RandomState(42); drop columns 3 and 1 (of 8); add uniform noise
    (0.001 to the first column, 0.01 to the second, 1 to the next three, none to time); test =
    last 10 %, validation = last 10 % of the rest; standardise with the mean and std of
    train + validation. 1,659,917 / 184,435 / 204,928 rows.
    """
    folder = _folder(data_dir, "power")
    path = folder / "data.npy"
    if not path.is_file():
        raise _missing("power", folder, "data.npy")
    data = _load_npy("power", path)
    if data.shape[1] != 8:
        raise DataError(f"dataset 'power': {path} must have the 8 columns of MAF's file; got {data.shape[1]}")
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, [1, 3], axis=1)
    # MAF draws the voltage noise before the gap noise: the same order gives the same values.
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    noise = np.hstack([gap_noise, voltage_noise, rng.rand(n, 3), np.zeros((n, 1))])
    train, val, test = _tail_splits(data + noise)
    train, val, test = _standardise(train, val, test, np.vstack([train, val]))
    return _dataset("power", train, val, test)


GAS_DROPPED = ("Meth", "Eth", "Time")


def gas(data_dir: str | None = None) -> FlowDataset:
    """UCI gas sensors, ethylene and CO (MAF's GAS), 8-D: ``gas/ethylene_CO.npy`` or ``.csv``.

    MAF's file is a pandas pickle (``ethylene_CO.pickle``), which zoo does not read; convert it
    once with ``pandas.read_pickle(p).drop(columns=["Meth", "Eth", "Time"]).to_csv("ethylene_CO.csv",
    index=False)`` (or ``numpy.save`` of the same 16 sensor columns as ``ethylene_CO.npy``).
    MAF's steps: drop Meth, Eth, Time (if present); repeatedly drop the first column correlated
    above 0.98 with another; standardise (std with ddof 1); test = last 10 %, validation =
    last 10 % of the rest.
    """
    folder = _folder(data_dir, "gas")
    npy, table_csv = folder / "ethylene_CO.npy", folder / "ethylene_CO.csv"
    if npy.is_file():
        data = _load_npy("gas", npy)
    elif table_csv.is_file():
        header, data = _read_csv("gas", table_csv)
        keep = [i for i, name in enumerate(header[: data.shape[1]]) if name not in GAS_DROPPED]
        data = data[:, keep]
    else:
        pickle_note = ""
        if (folder / "ethylene_CO.pickle").is_file():
            pickle_note = " (ethylene_CO.pickle is there, but zoo never unpickles data)"
        raise _missing(
            "gas", folder, f"ethylene_CO.npy or ethylene_CO.csv{pickle_note}",
            " Convert MAF's pickle once: python -c \"import pandas as pd; pd.read_pickle('ethylene_CO."
            "pickle').drop(columns=['Meth', 'Eth', 'Time']).to_csv('ethylene_CO.csv', index=False)\"",
        )
    while data.shape[1] > 1:
        correlated = (np.corrcoef(data, rowvar=False) > 0.98).sum(axis=1)
        if not (correlated > 1).any():
            break
        data = np.delete(data, int(np.flatnonzero(correlated > 1)[0]), axis=1)
    data = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
    train, val, test = _tail_splits(data)
    return _dataset("gas", train, val, test)


def hepmass(data_dir: str | None = None) -> FlowDataset:
    """UCI HEPMASS signal events (MAF's HEPMASS), 21-D: ``hepmass/1000_train.csv``, ``1000_test.csv``.

    MAF's steps: keep rows whose first column (the class) is 1 and drop that column; drop the
    test file's last column (the files differ by one); standardise both with the train mean and
    std (ddof 1); drop every feature whose smallest value occurs more than 5 times in train;
    validation = the last 10 % of train.
    """
    folder = _folder(data_dir, "hepmass")
    paths = [folder / "1000_train.csv", folder / "1000_test.csv"]
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise _missing("hepmass", folder, " and ".join(absent))
    (_, train), (_, test) = (_read_csv("hepmass", p) for p in paths)
    train = train[train[:, 0] == 1][:, 1:]
    test = test[test[:, 0] == 1][:, 1:-1]
    if train.shape[1] != test.shape[1]:
        raise DataError(
            f"dataset 'hepmass': after MAF's column drops, {paths[0].name} has {train.shape[1]} "
            f"features and {paths[1].name} {test.shape[1]}; the test file needs one more column"
        )
    mean, std = train.mean(axis=0), train.std(axis=0, ddof=1)
    std = np.where(std > 0, std, 1.0)
    train, test = (train - mean) / std, (test - mean) / std
    keep = [j for j in range(train.shape[1]) if Counter(train[:, j])[train[:, j].min()] <= 5]
    train, test = train[:, keep], test[:, keep]
    n_val = int(0.1 * train.shape[0])
    return _dataset("hepmass", train[: train.shape[0] - n_val], train[train.shape[0] - n_val :], test)


def miniboone(data_dir: str | None = None) -> FlowDataset:
    """MiniBooNE particle identification (MAF's MINIBOONE), 43-D: ``miniboone/data.npy``.

    MAF's steps: test = last 10 %, validation = last 10 % of the rest; standardise with the mean
    and std of train + validation.
    """
    folder = _folder(data_dir, "miniboone")
    path = folder / "data.npy"
    if not path.is_file():
        raise _missing("miniboone", folder, "data.npy")
    train, val, test = _tail_splits(_load_npy("miniboone", path))
    train, val, test = _standardise(train, val, test, np.vstack([train, val]))
    return _dataset("miniboone", train, val, test)


BSDS_SPLITS = ("train", "validation", "test")


def bsds300(data_dir: str | None = None) -> FlowDataset:
    """8x8 patches of BSDS300 images, monochrome, last pixel dropped (MAF's BSDS300), 63-D.

    ``BSDS300/BSDS300.hdf5`` (groups train, validation, test; needs h5py), or the same three
    arrays saved as ``BSDS300/train.npy``, ``validation.npy``, ``test.npy``. Used as they are.
    """
    folder = _folder(data_dir, "BSDS300")
    arrays = [folder / f"{split}.npy" for split in BSDS_SPLITS]
    if all(p.is_file() for p in arrays):
        return _dataset("bsds300", *(_load_npy("bsds300", p) for p in arrays))
    hdf5 = folder / "BSDS300.hdf5"
    if not hdf5.is_file():
        raise _missing("bsds300", folder, "BSDS300.hdf5 (or train.npy, validation.npy, test.npy)")
    try:
        import h5py
    except ImportError as exc:
        raise DataError(
            f"dataset 'bsds300': reading {hdf5} needs h5py: pip install h5py (or save its train, "
            "validation and test arrays as train.npy, validation.npy, test.npy beside it)"
        ) from exc
    try:
        with h5py.File(hdf5, "r") as f:
            parts = [_as_table("bsds300", hdf5, np.asarray(f[split])) for split in BSDS_SPLITS]
    except (OSError, KeyError) as exc:
        raise DataError(f"dataset 'bsds300': {hdf5} is not MAF's file ({exc})") from exc
    return _dataset("bsds300", *parts)


power.data_shape = lambda **params: ((6,), None)


@hookimpl
def zoo_datasets():
    return {"power": power, "gas": gas, "hepmass": hepmass, "miniboone": miniboone, "bsds300": bsds300}
