"""Dataset import, predictor files, and fit / predict / evaluate from the store.

Uses slices of the real li2024 files shipped in data/li2024 (no synthetic latencies).
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from predictor_helpers import as_if_saved_by_other_sklearn
from host.cli import main
from host.modeler.importers import default_data_dir, import_dataset
from host.modeler.predictor_file import load_predictor, read_meta
from host.modeler.service import fit_from_store
from host.store import Store
from opcost.errors import DatasetError, PredictorError

LI = Path(default_data_dir("li2024"))


@pytest.fixture(scope="module")
def li_slice(tmp_path_factory) -> Path:
    """The first 40 CNNs of the real li2024 CNN files (e2e + per-op GPU rows)."""
    d = tmp_path_factory.mktemp("li2024_slice")
    e2e = pd.read_csv(LI / "tflite_cnn_e2e.csv")
    keep = list(e2e["model"][:40])
    e2e[e2e["model"].isin(keep)].to_csv(d / "tflite_cnn_e2e.csv", index=False)
    ops = pd.read_csv(LI / "tflite_cnn_ops_gpu.csv")
    ops[ops["model"].isin(keep)].to_csv(d / "tflite_cnn_ops_gpu.csv", index=False)
    return d


@pytest.fixture(scope="module")
def li_store(tmp_path_factory, li_slice) -> Path:
    path = tmp_path_factory.mktemp("store") / "li.db"
    with Store.open(str(path)) as store:
        counts = import_dataset("li2024", str(li_slice), store)
    assert counts["runs"] > 0 and counts["ops"] > 0
    return path


def test_import_li2024_slice_matches_source(li_store, li_slice):
    e2e = pd.read_csv(li_slice / "tflite_cnn_e2e.csv")
    with Store.open(str(li_store)) as store:
        runs = store.runs_df(device="li2024/pixel4", delegate="gpu")
        assert len(runs) == 40
        row = runs[runs["model_name"] == e2e["model"][0]].iloc[0]
        assert row["mean_ms"] == pytest.approx(e2e["pixel4|gpu|float|mean"][0] / 1000.0)
        m = store.get_measurement(int(row["run_id"]))
        src_ops = pd.read_csv(li_slice / "tflite_cnn_ops_gpu.csv")
        src_ops = src_ops[src_ops["model"] == e2e["model"][0]]
        assert len(m.output.ops) == len(src_ops)
        assert m.output.ops[1].avg_ms == pytest.approx(src_ops["pixel4|gpu|float"].iloc[1] / 1000.0)
        assert m.output.ops[1].attrs["kernel_name"] == src_ops["pixel4|gpu|kernel"].iloc[1]
        # CPU configurations become thread counts.
        cpu = store.runs_df(device="li2024/s10", delegate="xnnpack")
        assert set(cpu["threads"]) >= {1, 2}


def test_reimport_replaces(li_store, li_slice):
    with Store.open(str(li_store)) as store:
        before = store.count_runs(origin="dataset:li2024")
        counts = import_dataset("li2024", str(li_slice), store)
        assert counts["replaced_runs"] == before
        assert store.count_runs(origin="dataset:li2024") == before


def test_import_missing_folder_is_clear(tmp_path):
    with Store.open(str(tmp_path / "x.db")) as store:
        with pytest.raises(DatasetError, match="does not exist"):
            import_dataset("li2024", str(tmp_path / "nope"), store)
        (tmp_path / "empty").mkdir()
        with pytest.raises(DatasetError, match="no li2024"):
            import_dataset("li2024", str(tmp_path / "empty"), store)


def test_import_renamed_layout_keeps_families(li_slice, tmp_path):
    """The li2024 repository's newer file names import as the same CNN family."""
    d = tmp_path / "dataset" / "cnn"
    d.mkdir(parents=True)
    (d / "tflite_cnn_real_e2e.csv").write_bytes((li_slice / "tflite_cnn_e2e.csv").read_bytes())
    (d / "tflite_cnn_real_ops_gpu.csv").write_bytes((li_slice / "tflite_cnn_ops_gpu.csv").read_bytes())
    with Store.open(str(tmp_path / "x.db")) as store:
        counts = import_dataset("li2024", str(tmp_path), store)
        assert counts["ops"] > 0
        runs = store.runs_df(device="li2024/pixel4", delegate="gpu")
        assert len(runs) == 40
        m = store.get_measurement(int(runs["run_id"].iloc[0]))
        assert m.runtime["family"] == "cnn"


def test_fit_from_dataset_store_and_roundtrip(li_store, tmp_path):
    out = tmp_path / "pixel4.predictor"
    with Store.open(str(li_store)) as store:
        summary = fit_from_store(store, device="li2024/pixel4", delegate="gpu", out_path=str(out))
    assert summary["n_networks"] == 40
    meta = read_meta(out)
    assert meta["device"] == "li2024/pixel4" and meta["delegate"] == "gpu"
    assert meta["versions"]["sklearn"]
    est, meta2 = load_predictor(out)
    assert meta2["loaded_by"] == "pickle"
    # Refit path: pretend the file came from another scikit-learn version.
    patched = tmp_path / "other_sklearn.predictor"
    as_if_saved_by_other_sklearn(out, patched)
    est2, meta3 = load_predictor(patched)
    assert meta3["loaded_by"] == "refit"
    with Store.open(str(li_store)) as store:
        from host.modeler.service import dataset_training_tables

        tables = dataset_training_tables(store, device="li2024/pixel4", delegate="gpu")
    p1 = est.predict_ops(tables["ops"])["pred_ms"]
    p2 = est2.predict_ops(tables["ops"])["pred_ms"]
    np.testing.assert_allclose(p1.to_numpy(), p2.to_numpy(), rtol=1e-6)
    # In-sample the predictions must follow the measured end-to-end latencies.
    truth = tables["networks"].set_index("network")["latency_ms"].loc[p1.index]
    assert np.corrcoef(np.log(truth), np.log(p1))[0, 1] > 0.9


def test_bad_predictor_files(tmp_path):
    with pytest.raises(PredictorError, match="does not exist"):
        load_predictor(tmp_path / "none.predictor")
    junk = tmp_path / "junk.predictor"
    junk.write_bytes(b"not a zip")
    with pytest.raises(PredictorError, match="not an opcost predictor"):
        load_predictor(junk)
    newer = tmp_path / "newer.predictor"
    with zipfile.ZipFile(newer, "w") as z:
        z.writestr("meta.json", json.dumps({"format": "opcost-predictor", "format_version": 99,
                                            "versions": {"opcost": "9.9"}}))
    with pytest.raises(PredictorError, match="newer opcost"):
        load_predictor(newer)


def test_cli_dataset_import_fit_evaluate(li_slice, tmp_path):
    runner = CliRunner()
    db = str(tmp_path / "cli.db")
    r = runner.invoke(main, ["dataset", "import", "li2024", str(li_slice), "--store", db, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["runs"] > 0
    pred = str(tmp_path / "s10.predictor")
    r = runner.invoke(main, ["fit", "--store", db, "--device", "li2024/s10", "--delegate", "gpu",
                             "--out", pred, "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["evaluate", "--store", db, "--predictor", pred, "--all", "--json",
                             "--plot", str(tmp_path / "p.png")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["metrics"]["n"] == 40 and os.path.getsize(tmp_path / "p.png") > 1000
    # Held-out only: every network was used in fitting, so this must say so clearly.
    r = runner.invoke(main, ["evaluate", "--store", db, "--predictor", pred])
    assert r.exit_code == 2 and "besides the training ones" in r.output
    assert "--hold-out" in r.output
    # Networks held out of fit are what evaluate scores.
    with Store.open(db, create=False) as store:
        names = sorted(store.runs_df(device="li2024/s10", delegate="gpu")["model_name"].unique())
    held = str(tmp_path / "held.predictor")
    r = runner.invoke(main, ["fit", "--store", db, "--device", "li2024/s10", "--delegate", "gpu", "--out", held,
                             "--hold-out", names[0], "--hold-out", names[1][:-1] + "*", "--json"])
    assert r.exit_code == 0, r.output
    fitted = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(names[:2]) <= set(fitted["held_out_model_names"])
    assert fitted["interval_pct"][0] < 0 < fitted["interval_pct"][1] and fitted["interval_coverage"] == 0.9
    assert fitted["n_networks"] == 40 - len(fitted["held_out_model_names"])
    assert not set(fitted["held_out_model_names"]) & set(fitted["training_model_names"])
    r = runner.invoke(main, ["evaluate", "--store", db, "--predictor", held, "--json"])
    assert r.exit_code == 0, r.output
    scored = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(n["model"] for n in scored["networks"]) == sorted(fitted["held_out_model_names"])
    # Each scored network says whether its measured latency is inside the predictor's interval.
    assert scored["interval_coverage"] == 0.9
    rows = scored["networks"]
    assert all(n["lo_ms"] < n["pred_ms"] < n["hi_ms"] for n in rows)
    assert all(n["inside_interval"] == (n["lo_ms"] <= n["measured_ms"] <= n["hi_ms"]) for n in rows)
    assert scored["inside_interval_pct"] == pytest.approx(100 * np.mean([n["inside_interval"] for n in rows]))
    r = runner.invoke(main, ["evaluate", "--store", db, "--predictor", held])
    assert r.exit_code == 0 and f"of {len(rows)} networks" in r.output
    assert "inside the predictor's 90% interval: " in r.output
    r = runner.invoke(main, ["fit", "--store", db, "--device", "li2024/s10", "--delegate", "gpu", "--out", held,
                             "--hold-out", "no_such_net*"])
    assert r.exit_code == 2 and "'no_such_net*' matches none of the 40 measured networks" in r.output
    r = runner.invoke(main, ["fit", "--store", db, "--device", "li2024/s10", "--delegate", "gpu", "--out", held,
                             "--hold-out", "*"])
    assert r.exit_code == 2 and "--hold-out leaves only 0 of the networks" in r.output
    r = runner.invoke(main, ["fit", "--store", db, "--device", "no-such-phone", "--delegate", "gpu",
                             "--out", pred])
    assert r.exit_code == 2 and "no measured runs of device 'no-such-phone'" in r.output
    r = runner.invoke(main, ["fit", "--store", str(tmp_path / "missing.db"), "--device", "x", "--out", pred])
    assert r.exit_code == 2 and "Traceback" not in r.output


@pytest.mark.tf
def test_predict_flags_unknown_kernel_types(li_store, tmp_path, caplog):
    """A network with an op type the predictor never saw: predicted, flagged, never zero;
    warned about once, although network, per-op and per-block predictions each ask."""
    tf = pytest.importorskip("tensorflow")
    m = tf.keras.Sequential([tf.keras.Input((16, 16, 8), batch_size=1),
                             tf.keras.layers.Conv2D(16, 3, padding="same"),
                             tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(10),
                             tf.keras.layers.Softmax()])
    model = tmp_path / "softmax_net.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    pred = tmp_path / "p.predictor"
    with Store.open(str(li_store)) as store:
        fit_from_store(store, device="li2024/mi8se", delegate="gpu", out_path=str(pred))
    r = CliRunner().invoke(main, ["predict", str(model), "--predictor", str(pred), "--per-op", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["n_unknown_kernels"] >= 1
    unknown = [k for k in rec["kernels"] if k["unknown_type"]]
    assert any(k["op_type"] == "SOFTMAX" for k in unknown)
    assert all(k["pred_ms"] > 0 for k in rec["kernels"])
    assert rec["pred_ms"] > 0
    r = CliRunner().invoke(main, ["predict", str(model), "--predictor", str(pred)])
    assert "unknown type" in r.output
    caplog.clear()
    with caplog.at_level("WARNING", logger="opcost.modeler"):
        r = CliRunner().invoke(main, ["predict", str(model), "--predictor", str(pred), "--per-op", "--per-block"])
    assert r.exit_code == 0, r.output
    assert caplog.text.count("never seen in training") == 1, caplog.text


@pytest.mark.tf
def test_predict_per_op_columns_are_labelled(li_store, tmp_path):
    """--per-op: a header row names the columns, so the ops fused into a kernel are not
    read as its op type (ADD -> RELU -> ADD: the RELU kernel absorbs the second ADD on GPU)."""
    tf = pytest.importorskip("tensorflow")
    a, b = tf.keras.Input((8, 8, 4), batch_size=1), tf.keras.Input((8, 8, 4), batch_size=1)
    x = tf.keras.layers.ReLU()(tf.keras.layers.Add()([a, b]))
    model = tmp_path / "add_relu_add.tflite"
    m = tf.keras.Model([a, b], tf.keras.layers.Add()([x, b]))
    model.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    pred = tmp_path / "p.predictor"
    with Store.open(str(li_store)) as store:
        fit_from_store(store, device="li2024/mi8se", delegate="gpu", out_path=str(pred))
    rec = json.loads(CliRunner().invoke(main, ["predict", str(model), "--predictor", str(pred), "--per-op",
                                               "--json"]).stdout.strip().splitlines()[-1])
    r = CliRunner().invoke(main, ["predict", str(model), "--predictor", str(pred), "--per-op"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["OP", "OP", "TYPE", "KERNEL", "TYPE", "OPS", "FUSED", "INTO", "IT", "PREDICTED", "ms"]
    rows = [ln.split() for ln in lines[2:]]
    assert len(rows) == len(rec["kernels"]) >= 1
    for row, k in zip(rows, rec["kernels"]):
        assert row[:4] == [f"#{k['op_index']}", k["op_type"], k["kernel_type"], k["fused_ops"] or "-"]
    assert any(k["fused_ops"] for k in rec["kernels"])


def test_evaluate_plot_into_a_missing_folder(li_store, tmp_path):
    """--plot creates a missing folder (as --store and --out do); an unwritable path is a
    clear error, not a traceback."""
    pred = tmp_path / "p.predictor"
    with Store.open(str(li_store)) as store:
        fit_from_store(store, device="li2024/mi8se", delegate="gpu", out_path=str(pred))
    plot = tmp_path / "new" / "sub" / "p.png"
    r = CliRunner().invoke(main, ["evaluate", "--store", str(li_store), "--predictor", str(pred), "--all",
                                  "--plot", str(plot)])
    assert r.exit_code == 0, r.output
    assert plot.stat().st_size > 1000
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = CliRunner().invoke(main, ["evaluate", "--store", str(li_store), "--predictor", str(pred), "--all",
                                  "--plot", str(blocker / "p.png")])
    assert r.exit_code == 2, r.output
    assert "error: cannot write the plot" in r.output and "what to do" in r.output


def test_fit_on_dataset_cpu_runs_says_what_can_be_fitted(li_store):
    """li2024 CPU runs are end-to-end only and ship no .tflite: the error says so and
    points at the GPU runs, not at --models-dir."""
    with Store.open(str(li_store)) as store:
        assert len(store.runs_df(device="li2024/s10", delegate="xnnpack"))
        with pytest.raises(PredictorError) as err:
            fit_from_store(store, device="li2024/s10", delegate="xnnpack")
    assert "imported from dataset:li2024" in str(err.value) and "--delegate gpu" in err.value.hint
    assert "--models-dir" not in err.value.hint


def test_dataset_latencies_prints_a_device_as_adapt_csv():
    from host.modeler import data_ganesan2020 as g20
    from host.modeler.signature import parse_latency_csv

    data = g20.load(g20.default_data_dir())
    r = CliRunner().invoke(main, ["dataset", "latencies", "ganesan2020", "SM-N975F_2"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "network,latency_ms"
    got = parse_latency_csv(r.stdout, data.networks)
    np.testing.assert_array_equal(got, data.latency_ms[data.devices.index("SM-N975F_2")])
    r2 = CliRunner().invoke(main, ["dataset", "latencies", "ganesan2020", "ganesan2020/SM-N975F_2"])
    assert r2.exit_code == 0 and r2.stdout == r.stdout   # the store's name for it works too
    r = CliRunner().invoke(main, ["dataset", "latencies", "ganesan2020", "NOPE_0"])
    assert r.exit_code == 2 and "no device 'NOPE_0' in ganesan2020" in r.output and "ASUS_X00TD_0" in r.output


def test_fit_by_model_name_records_the_serial_whose_runs_it_read(li_store, tmp_path):
    """A model name two stored devices share: when only one of them has the runs the fit
    reads (here the imported li2024 GPU runs beside a measured phone of the same model),
    the predictor records that one's serial, not the ambiguous name; a name whose devices
    all have runs pools them and says which."""
    import dataclasses
    import shutil

    from test_store import synthetic_measurement
    from host.modeler.service import _serials_used

    two = tmp_path / "two.db"
    shutil.copy(li_store, two)
    m = synthetic_measurement(delegate="gpu")
    with Store.open(str(two)) as store:
        store.add_measurement(dataclasses.replace(m, device=dataclasses.replace(m.device, serial="SER9",
                                                                                model="pixel4")))
        assert store.resolve_device("pixel4") == "pixel4"   # ambiguous: left as the name
        summary = fit_from_store(store, device="pixel4", delegate="gpu")
        assert summary["device"] == "li2024/pixel4" and summary["pooled_devices"] == []
        assert summary["device_model"] == "pixel4"
        for i, serial in enumerate(["SER1", "SER2"]):
            store.add_measurement(synthetic_measurement(i, serial=serial))   # both a "Pixel 7"
        assert _serials_used(store, "Pixel 7", "xnnpack", None, None) == ["SER1", "SER2"]
        assert _serials_used(store, "Pixel 7", "xnnpack", 4, None) == []
        assert _serials_used(store, "SER1", "gpu", None, None) == ["SER1"]
