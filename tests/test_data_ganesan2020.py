"""Loaders of the ganesan2020 dataset, on the real files in data/ganesan2020 (public
repository of Ganesan et al., IISWC 2020, cost_model/, Apache-2.0) plus small inline
texts for the error cases."""
from __future__ import annotations

import csv
import os
import shutil

import numpy as np
import pytest

from bench_helpers import write_ganesan2020_copy
from host.modeler import data_ganesan2020 as g20
from opcost.errors import DatasetError

DATA = g20.default_data_dir()


@pytest.fixture(scope="module")
def data():
    return g20.load(DATA)


def test_load_real_matrix_shape_and_devices(data):
    files = sorted(f for f in os.listdir(os.path.join(DATA, "mobileData")) if f.endswith(".txt"))
    assert data.latency_ms.shape == (len(files), 118)
    assert sorted(data.devices) == sorted(f[:-4] for f in files)
    assert np.all(data.latency_ms > 0)
    assert data.networks[0] == "rand000" and data.networks[99] == "rand099" and data.networks[100] == "pub100"
    assert data.network_features.shape == (118, len(data.feature_names))


def test_statistic_is_median_of_runs_after_the_first(data):
    path = os.path.join(DATA, "mobileData", "GM1901_0.txt")
    with open(path) as f:
        rows = [[float(x) for x in r] for r in csv.reader(f)]
    i = data.devices.index("GM1901_0")
    for net in (0, 57, 117):
        assert data.latency_ms[i, net] == pytest.approx(float(np.median(rows[net][1:])))
    mean_all = g20.load(DATA, statistic="mean")
    assert mean_all.latency_ms[i, 0] == pytest.approx(float(np.mean(rows[0])))


def test_phone_model_grouping(data):
    groups = dict(zip(data.devices, data.phone_models))
    assert groups["GM1901_3"] == "GM1901"
    assert groups["SM-G935F"] == groups["SM-G935F_1"] == "SM-G935F"
    assert groups["Pixel_3_XL"] == "Pixel_3_XL"
    assert groups["Pixel_4_XL_0"] == "Pixel_4_XL" != groups["Pixel_4_0"]
    assert sum(1 for g in data.phone_models if g == "GM1901") == 4
    assert g20.phone_model_of("mobileData/Redmi_Note5_Pro_4.txt") == "Redmi_Note5_Pro"


def test_network_features_from_embeddings(data):
    with open(os.path.join(DATA, "onnxEmbeddings.csv")) as f:
        first = [float(x) for x in f.readline().strip().rstrip(",").split(",")]
    layers = np.array(first).reshape(-1, 13)
    layers = layers[np.any(layers != 0, axis=1)]
    feats = dict(zip(data.feature_names, data.network_features[0]))
    assert feats["n_layers"] == len(layers)
    assert feats["mflops_total"] == pytest.approx(layers[:, 12].sum() / 1e6)
    assert feats["n_conv"] + feats["n_dwconv"] + feats["n_add"] + feats["n_relu"] + feats["n_pool"] == len(layers)
    # first layer: conv 3x3 stride 2, 224 -> 112, 3 -> 32 channels
    assert list(layers[0, :5]) == [1, 0, 0, 0, 0] and layers[0, 5] == 224 and layers[0, 8] == 32


def test_hardware_table(data):
    assert data.hardware["CPH1923_0"] == {"cpu": "Cortex-A53", "ghz": 2.0, "ram_gb": 2.0}


def test_finds_files_recursively_in_a_bigger_tree(tmp_path):
    nested = tmp_path / "copy" / "cost_model"
    (nested / "mobileData").mkdir(parents=True)
    (tmp_path / "more" / "mobileData").mkdir(parents=True)
    shutil.copy(os.path.join(DATA, "onnxEmbeddings.csv"), nested)
    for name in ("GM1901_0.txt", "Pixel_4_0.txt"):
        shutil.copy(os.path.join(DATA, "mobileData", name), nested / "mobileData")
    shutil.copy(os.path.join(DATA, "mobileData", "Pixel_4_1.txt"), tmp_path / "more" / "mobileData")
    (tmp_path / "notes.txt").write_text("not a latency file\n")  # outside mobileData: ignored
    d = g20.load(str(tmp_path))
    assert sorted(d.devices) == ["GM1901_0", "Pixel_4_0", "Pixel_4_1"]
    assert d.summary()["n_phone_models"] == 2


def _copy_with_bad_files(tmp_path):
    """Two real device files plus two broken ones (synthetic: a truncated copy, and a copy
    with a zero latency), the way a larger copy of the dataset could hold them."""
    write_ganesan2020_copy(tmp_path, ("GM1901_0.txt", "Pixel_4_0.txt"))
    mobile = tmp_path / "mobileData"
    lines = open(os.path.join(DATA, "mobileData", "Pixel_4_1.txt")).read().splitlines()
    (mobile / "synthetic_truncated_0.txt").write_text("\n".join(lines[:50]) + "\n")
    zero = list(lines)
    zero[3] = "0," + zero[3].split(",", 1)[1]
    (mobile / "synthetic_zero_0.txt").write_text("\n".join(zero) + "\n")
    return tmp_path


def test_bad_files_stop_the_load_or_are_left_out(tmp_path, caplog):
    root = _copy_with_bad_files(tmp_path)
    with pytest.raises(DatasetError, match="synthetic_truncated_0"):
        g20.load(str(root))
    with caplog.at_level("WARNING"):
        d = g20.load(str(root), skip_bad_files=True)
    assert sorted(d.devices) == ["GM1901_0", "Pixel_4_0"]
    assert d.latency_ms.shape == (2, 118) and d.run_spread.shape == (2, 118)
    assert len(d.skipped_files) == 2
    assert "50 network rows" in d.skipped_files[0] and "line 4" in d.skipped_files[1]
    assert d.summary()["skipped_files"] == d.skipped_files
    assert "synthetic_zero_0" in caplog.text
    for name in ("GM1901_0.txt", "Pixel_4_0.txt"):
        os.remove(root / "mobileData" / name)
    with pytest.raises(DatasetError, match="no usable latency file"):
        g20.load(str(root), skip_bad_files=True)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        g20.load(str(tmp_path / "nope"))
    (tmp_path / "mobileData").mkdir()
    with pytest.raises(DatasetError, match="no latency files"):
        g20.load(str(tmp_path))
    shutil.copy(os.path.join(DATA, "mobileData", "GM1901_0.txt"), tmp_path / "mobileData")
    with pytest.raises(DatasetError, match="onnxEmbeddings") as err:
        g20.load(str(tmp_path))
    assert "mobileData" in err.value.hint


def test_malformed_latency_text():
    good = "\n".join("1.0,2.0,3.0" for _ in range(118))
    assert len(g20.parse_latency_runs(good, "x.txt")) == 118
    with pytest.raises(DatasetError, match="has 2 network rows"):
        g20.parse_latency_runs("1,2\n3,4\n", "short.txt")
    with pytest.raises(DatasetError, match="line 3 is not a list of numbers"):
        g20.parse_latency_runs("1,2\n1,2\n1,abc\n" + good, "bad.txt")
    with pytest.raises(DatasetError, match="non-positive"):
        g20.parse_latency_runs("1,-2\n" + good, "neg.txt")


def test_malformed_embeddings_and_hardware():
    with pytest.raises(DatasetError, match="not a multiple of 13"):
        g20.parse_embeddings("1,2,3\n")
    with pytest.raises(DatasetError, match="header"):
        g20.parse_hardware("foo,bar\n")
    with pytest.raises(DatasetError, match="not numbers"):
        g20.parse_hardware("Device,CPU,Frequency,RAM\nX_0,A53,fast,2\n")


def test_unknown_statistic():
    with pytest.raises(DatasetError, match="unknown latency statistic"):
        g20.load(DATA, statistic="p99")
