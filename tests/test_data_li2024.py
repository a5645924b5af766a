"""li2024 loaders and op features, on slices of the real files in data/li2024
(copied from the li2024 public repository, MIT; see data/li2024/LICENSE)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from host.modeler import data_li2024
from host.modeler.features import BASE_COLUMNS, DERIVED_COLUMNS, ops_from_li2024
from opcost.errors import DatasetError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "li2024")
E2E = os.path.join(DATA, data_li2024.E2E_CNN_FILE)
OPS = os.path.join(DATA, data_li2024.OPS_GPU_FILE)


@pytest.fixture()
def e2e_slice(tmp_path):
    df = pd.read_csv(E2E).head(5)
    p = tmp_path / "tflite_cnn_e2e.csv"
    df.to_csv(p, index=False)
    return str(p), df


@pytest.fixture()
def ops_slice(tmp_path):
    df = pd.read_csv(OPS)
    df = df[df["model"].isin(["bagnet9", "mobilenet_wd4"])]
    p = tmp_path / "tflite_cnn_ops_gpu.csv"
    df.to_csv(p, index=False)
    return str(p), df


def test_load_e2e_discovers_devices_and_converts_units(e2e_slice):
    path, raw = e2e_slice
    out = data_li2024.load_e2e(path)
    assert set(out["device"]) == {"pixel4", "s10", "mi8se"}
    gpu = out[(out["config"] == "gpu") & (out["precision"] == "float") & (out["device"] == "s10")]
    assert len(gpu) == 5
    row = gpu[gpu["model"] == raw["model"].iloc[0]].iloc[0]
    assert row["latency_us"] == pytest.approx(raw["s10|gpu|float|mean"].iloc[0])
    assert row["latency_ms"] == pytest.approx(row["latency_us"] / 1000.0)
    assert row["std_us"] == pytest.approx(raw["s10|gpu|float|std"].iloc[0])
    assert row["flops"] == raw["FLOPS"].iloc[0]
    assert set(out["source"]) == {"li2024"}


def test_load_e2e_tolerates_extra_devices_and_columns(e2e_slice, tmp_path):
    _, raw = e2e_slice
    df = raw.copy()
    # Synthetic extra device and an unrelated column: both must be tolerated.
    df["newphone|gpu|float|mean"] = df["s10|gpu|float|mean"] * 2
    df["notes"] = "x"
    root = tmp_path / "more"
    p = root / "sub" / "deeper"
    p.mkdir(parents=True)
    df.to_csv(p / "tflite_cnn_e2e.csv", index=False)
    found = data_li2024.find_file(str(root), "tflite_cnn_e2e.csv")
    out = data_li2024.load_e2e(found)
    assert "newphone" in set(out["device"])
    new = out[out["device"] == "newphone"]
    assert new["std_us"].isna().all()
    assert len(new) == 5


def test_load_ops_gpu_long_format(ops_slice):
    path, raw = ops_slice
    out = data_li2024.load_ops_gpu(path)
    assert set(out["device"]) == {"pixel4", "s10", "mi8se"}
    assert len(out) == 3 * len(raw)
    b = out[(out["model"] == "bagnet9") & (out["device"] == "s10")].sort_values("op_index")
    assert list(b["op_index"]) == list(range(len(b)))
    assert b["kernel_name"].iloc[1] == "convolution_winograd_4x4_6x6_1"
    assert b["feature"].iloc[0]["Input_channel"] == 3
    assert b["latency_ms"].iloc[0] == pytest.approx(0.343532)


def test_missing_and_bad_files_raise_dataset_error(tmp_path):
    with pytest.raises(DatasetError) as e:
        data_li2024.load_e2e(str(tmp_path / "nope.csv"))
    assert e.value.hint
    with pytest.raises(DatasetError):
        data_li2024.find_file(str(tmp_path), "tflite_cnn_e2e.csv")
    with pytest.raises(DatasetError):
        data_li2024.load_gpu_dataset(str(tmp_path / "missing_dir"))
    bad = tmp_path / "tflite_cnn_ops_gpu.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError) as e:
        data_li2024.load_ops_gpu(str(bad))
    assert "model" in str(e.value)
    nodev = tmp_path / "x.csv"
    nodev.write_text("model,operation,feature\nm,CONV_2D,{}\n")
    with pytest.raises(DatasetError, match="gpu\\|float"):
        data_li2024.load_ops_gpu(str(nodev))


def test_bad_feature_cell_is_a_dataset_error():
    with pytest.raises(DatasetError):
        data_li2024.parse_feature("{not a dict")


def test_ops_from_li2024_schema_and_values(ops_slice):
    path, _ = ops_slice
    ops = data_li2024.load_ops_gpu(path)
    ops = ops[ops["device"] == "pixel4"].reset_index(drop=True)
    f = ops_from_li2024(ops)
    assert list(f.columns) == BASE_COLUMNS + DERIVED_COLUMNS
    assert f.index.equals(ops.index)
    first = f.iloc[0]  # bagnet9: 1x1 conv 224x224x3 -> 64
    assert (first["op_type"], first["h_in"], first["c_in"], first["c_out"], first["kernel"]) == (
        "CONV_2D", 224, 3, 64, 1)
    assert first["flops"] == 19267584
    assert first["macs"] == 224 * 224 * 64 * 3
    assert first["bytes_out"] == 224 * 224 * 64 * 4
    assert first["weights_bytes"] == (3 * 64 + 64) * 4
    dw = f[f["op_type"] == "DEPTHWISE_CONV_2D"].iloc[0]
    assert dw["c_out"] == dw["c_in"] and dw["groups"] == dw["c_in"]
    fc = f[f["op_type"] == "FULLY_CONNECTED"].iloc[0]
    assert fc["h_in"] == 1 and fc["c_out"] == 1000
    mean = f[f["op_type"] == "MEAN"].iloc[0]
    assert mean["h_out"] == 1 and mean["c_out"] == mean["c_in"]
    assert np.isfinite(f["log_flops"]).all()


def _renamed_layout(root, e2e_df, ops_df):
    """The li2024 repository's newer layout: dataset/cnn/tflite_cnn_real_{e2e,ops_gpu}.csv
    (same content, new names)."""
    d = root / "dataset" / "cnn"
    d.mkdir(parents=True)
    e2e_df.to_csv(d / "tflite_cnn_real_e2e.csv", index=False)
    ops_df.to_csv(d / "tflite_cnn_real_ops_gpu.csv", index=False)
    return d


def test_renamed_repository_layout_is_found(e2e_slice, ops_slice, tmp_path):
    _, e2e = e2e_slice
    _, ops = ops_slice
    root = tmp_path / "repo"
    _renamed_layout(root, e2e, ops)
    ds = data_li2024.load_gpu_dataset(str(root))
    assert set(ds["e2e"]["model"]) == set(e2e["model"])
    assert set(ds["ops"]["model"]) == set(ops["model"])
    # with both layouts present the original names win, whatever their depth
    old = root / "old" / "deeper"
    old.mkdir(parents=True)
    e2e.head(2).to_csv(old / "tflite_cnn_e2e.csv", index=False)
    assert data_li2024.find_file(str(root), data_li2024.E2E_FILES["cnn"]) == str(old / "tflite_cnn_e2e.csv")


def test_git_lfs_pointer_says_how_to_fetch_the_data(tmp_path):
    # What a clone without git-lfs holds instead of the CSV (format of the repository's
    # dataset/cnn/*.csv pointers).
    p = tmp_path / "tflite_cnn_real_e2e.csv"
    p.write_text("version https://git-lfs.github.com/spec/v1\n"
                 "oid sha256:5b3c09597c3ccb85cb461178d497b914b0facc104b9626fa199fe51ce2bdba14\nsize 138284\n")
    with pytest.raises(DatasetError, match="Git LFS pointer") as e:
        data_li2024.load_e2e(str(p))
    assert "git lfs pull" in e.value.hint
