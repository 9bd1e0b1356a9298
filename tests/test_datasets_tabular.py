"""The MAF/NSF tabular datasets, read from tiny files in the MAF archive's layout written here.

Each test writes a small table whose preprocessing result is known (splits, dropped columns,
standardisation) and checks it; missing files give a DataError naming the folder and the files.
"""

import numpy as np
import pytest

from zoo.errors import DataError
from zoo.plugins.datasets_tabular import bsds300, gas, hepmass, miniboone, power


def split_arrays(dataset):
    return [s.tensors[0].numpy().astype(np.float64) for s in (dataset.train, dataset.val, dataset.test)]


def test_power_follows_maf_preprocessing(tmp_path):
    rng = np.random.RandomState(0)
    raw = rng.randn(200, 8) * np.arange(1, 9)
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    train, val, test = split_arrays(power(str(tmp_path)))
    assert (len(train), len(val), len(test)) == (162, 18, 20)  # test 10 %, then val 10 % of the rest
    assert train.shape[1] == 6 and power.data_shape() == ((6,), None)
    both = np.vstack([train, val])
    assert np.allclose(both.mean(0), 0, atol=1e-5) and np.allclose(both.std(0), 1, atol=1e-5)
    # the same steps by hand: shuffle(42), drop columns 1 and 3, noise, split, standardise
    expected = raw.copy()
    r = np.random.RandomState(42)
    r.shuffle(expected)
    expected = np.delete(expected, [1, 3], axis=1)
    voltage, gap = 0.01 * r.rand(200, 1), 0.001 * r.rand(200, 1)
    expected = expected + np.hstack([gap, voltage, r.rand(200, 3), np.zeros((200, 1))])
    ref = expected[:180]
    expected = (expected - ref.mean(0)) / ref.std(0)
    assert np.allclose(test, expected[180:], atol=1e-5)


def test_miniboone_splits_and_standardises(tmp_path):
    raw = np.random.RandomState(1).rand(100, 5) * 7 + 3
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    train, val, test = split_arrays(miniboone(str(tmp_path)))
    assert (len(train), len(val), len(test)) == (81, 9, 10)
    ref = raw[:90]
    assert np.allclose(test, (raw[90:] - ref.mean(0)) / ref.std(0), atol=1e-5)


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in r) for r in rows) + "\n")


def test_gas_drops_labels_and_correlated_columns(tmp_path):
    rng = np.random.RandomState(2)
    sensors = rng.randn(50, 3)
    copy = sensors[:, :1] * 2 + 1e-4 * rng.randn(50, 1)  # correlated > 0.98 with sensor 0
    table = np.hstack([rng.rand(50, 3), sensors[:, :1], copy, sensors[:, 1:]])
    (tmp_path / "gas").mkdir()
    write_csv(tmp_path / "gas" / "ethylene_CO.csv", ["Time", "Meth", "Eth", "s1", "s2", "s3", "s4"], table)
    train, val, test = split_arrays(gas(str(tmp_path)))
    assert train.shape[1] == 3  # Time/Meth/Eth gone, then s1 (the first of the correlated pair)
    assert (len(train), len(val), len(test)) == (41, 4, 5)
    kept = table[:, [4, 5, 6]]
    assert np.allclose(test, ((kept - kept.mean(0)) / kept.std(0, ddof=1))[45:], atol=1e-4)


def test_gas_refuses_the_pickle_and_says_how_to_convert(tmp_path):
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas" / "ethylene_CO.pickle").write_bytes(b"\x80\x04not read")
    with pytest.raises(DataError, match="never unpickles.*to_csv"):
        gas(str(tmp_path))


def test_hepmass_keeps_signal_and_drops_repetitive_features(tmp_path):
    rng = np.random.RandomState(3)
    def table(n, extra):
        label = (np.arange(n) % 2).astype(float)
        features = rng.randn(n, 3)
        features[: n // 2, 2] = -9.0  # the smallest value repeats: MAF drops the feature
        cols = [label[:, None], features] + ([rng.randn(n, 1)] if extra else [])
        return np.hstack(cols)
    (tmp_path / "hepmass").mkdir()
    train_raw, test_raw = table(40, False), table(20, True)
    write_csv(tmp_path / "hepmass" / "1000_train.csv", ["# label", "f0", "f1", "f2"], train_raw)
    write_csv(tmp_path / "hepmass" / "1000_test.csv", ["# label", "f0", "f1", "f2", "mass"], test_raw)
    train, val, test = split_arrays(hepmass(str(tmp_path)))
    signal = train_raw[train_raw[:, 0] == 1][:, 1:3]
    assert (len(train), len(val), len(test)) == (18, 2, 10) and train.shape[1] == 2
    expected = (test_raw[test_raw[:, 0] == 1][:, 1:3] - signal.mean(0)) / signal.std(0, ddof=1)
    assert np.allclose(test, expected, atol=1e-4)


def test_bsds300_from_npy_arrays(tmp_path):
    (tmp_path / "BSDS300").mkdir()
    for split, n in (("train", 6), ("validation", 3), ("test", 2)):
        np.save(tmp_path / "BSDS300" / f"{split}.npy", np.full((n, 63), float(n)))
    data = bsds300(str(tmp_path))
    assert data.shape == (63,) and [len(s) for s in (data.train, data.val, data.test)] == [6, 3, 2]


def test_bsds300_hdf5_without_h5py_says_install_it(tmp_path, monkeypatch):
    import sys
    (tmp_path / "BSDS300").mkdir()
    (tmp_path / "BSDS300" / "BSDS300.hdf5").write_bytes(b"\x89HDF")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py then fails, as when absent
    with pytest.raises(DataError, match="pip install h5py"):
        bsds300(str(tmp_path))


@pytest.mark.parametrize("factory,folder,names", [
    (power, "power", "data.npy"),
    (gas, "gas", "ethylene_CO.npy or ethylene_CO.csv"),
    (hepmass, "hepmass", "1000_train.csv and 1000_test.csv"),
    (miniboone, "miniboone", "data.npy"),
    (bsds300, "BSDS300", "BSDS300.hdf5"),
])
def test_missing_files_name_the_files_and_the_folder(tmp_path, monkeypatch, factory, folder, names):
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as err:
        factory()
    message = str(err.value)
    assert names in message and str(tmp_path / folder) in message and "ZOO_DATA_DIR" in message


def test_pickled_npy_is_refused(tmp_path):
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="never unpickles"):
        miniboone(str(tmp_path))
