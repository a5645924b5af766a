"""Predictor transfer to a new device (host.modeler.transfer, `opcost adapt --from`).

Real data: slices of the li2024 files shipped in data/li2024 (as test_modeler_service.py
does). The one synthetic case says so in its name: a target device whose kernel times are
a known per-type multiple of a real device's.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.base import clone
from sklearn.utils.estimator_checks import (check_get_params_invariance, check_no_attributes_set_in_init,
                                            check_parameters_default_constructible, check_set_params)

from predictor_helpers import as_if_saved_by_other_sklearn, with_meta_edited
from host.cli import main
from host.modeler import data_li2024
from host.modeler.importers import default_data_dir
from host.modeler.metrics import mape_pct
from host.modeler.predictor import LatencyPredictor
from host.modeler.predictor_file import load_predictor, read_meta
from host.modeler.transfer import (METHODS, TransferKernelRegressor, TransferLatencyPredictor,
                                   choose_networks, source_tables)
from host.modeler.transfer_select import (DEFAULT_SELECTION, SEEDED_SELECTIONS, SELECTIONS, candidate_table,
                                          select_networks)
from host.store import Store
from opcost.errors import PredictorError

LI = Path(default_data_dir("li2024"))
N_NETS = 40
TARGET = "s10"


def _write_slice(d: Path, keep, target_keep=None) -> Path:
    """The li2024 CNN files restricted to the networks ``keep``; with ``target_keep``,
    the TARGET device's GPU columns are blanked for every other network (as if only those
    had been measured on it)."""
    e2e = pd.read_csv(LI / "tflite_cnn_e2e.csv")
    e2e = e2e[e2e["model"].isin(keep)].copy()
    ops = pd.read_csv(LI / "tflite_cnn_ops_gpu.csv")
    ops = ops[ops["model"].isin(keep)].copy()
    if target_keep is not None:
        e2e.loc[~e2e["model"].isin(target_keep), [c for c in e2e.columns if c.startswith(f"{TARGET}|")]] = np.nan
        ops.loc[~ops["model"].isin(target_keep), [f"{TARGET}|gpu|float"]] = np.nan
    d.mkdir(parents=True, exist_ok=True)
    e2e.to_csv(d / "tflite_cnn_e2e.csv", index=False)
    ops.to_csv(d / "tflite_cnn_ops_gpu.csv", index=False)
    return d


@pytest.fixture(scope="module")
def nets():
    return list(pd.read_csv(LI / "tflite_cnn_e2e.csv")["model"][:N_NETS])


@pytest.fixture(scope="module")
def tables(tmp_path_factory, nets):
    """gpu_tables of the first 40 real li2024 CNNs."""
    return data_li2024.gpu_tables(str(_write_slice(tmp_path_factory.mktemp("li_tables"), nets)))


@pytest.fixture(scope="module")
def sources(tables):
    """Source predictors (all 40 networks) of the two devices other than TARGET."""
    return {d: LatencyPredictor(runtime="gpu").fit(**data_li2024.gpu_device_tables(tables, d))
            for d in ("mi8se", "pixel4")}


def _source_tables(tables, names):
    return source_tables({d: data_li2024.gpu_device_tables(tables, d) for d in names})


# ------------------------------------------------------------------ conventions

@pytest.mark.parametrize("est", [TransferLatencyPredictor(), TransferLatencyPredictor(method="ratio"),
                                 TransferKernelRegressor()])
def test_sklearn_parameter_conventions(est):
    name = type(est).__name__
    check_no_attributes_set_in_init(name, est)
    check_parameters_default_constructible(name, est)
    check_get_params_invariance(name, est)
    check_set_params(name, est)
    assert clone(est).get_params() == est.get_params()


@pytest.mark.parametrize("method", [m for m in METHODS])
def test_fit_returns_self_keeps_params_and_sets_underscore_state(tables, sources, nets, method):
    tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=choose_networks(nets, 6, 0))
    sops, snets = _source_tables(tables, list(sources))
    est = TransferLatencyPredictor(method=method)
    params = est.get_params()
    before = set(vars(est))
    assert est.fit(**tgt, source_ops=sops, source_networks=snets, prefit_sources=sources) is est
    assert est.get_params() == params
    new = set(vars(est)) - before
    assert new and all(a.endswith("_") for a in new), new
    pred = est.predict_ops(data_li2024.gpu_device_tables(tables, TARGET)["ops"])
    assert len(pred) == N_NETS and np.all(pred["pred_ms"] > 0)


def test_unfitted_and_bad_inputs_are_clear(tables, nets, sources):
    from sklearn.exceptions import NotFittedError

    ops = data_li2024.gpu_device_tables(tables, TARGET)["ops"]
    with pytest.raises(NotFittedError):
        TransferLatencyPredictor().predict_ops(ops)
    few = data_li2024.gpu_device_tables(tables, TARGET, networks=nets[:3])
    with pytest.raises(PredictorError, match="3 target network.*at least 5"):
        TransferLatencyPredictor().fit(**few, prefit_sources=sources)
    five = data_li2024.gpu_device_tables(tables, TARGET, networks=nets[:5])
    with pytest.raises(PredictorError, match="no source predictors"):
        TransferLatencyPredictor().fit(**five)
    with pytest.raises(PredictorError, match="unknown transfer method"):
        TransferLatencyPredictor(method="magic").fit(**five, prefit_sources=sources)
    with pytest.raises(PredictorError, match="needs the sources' training tables"):
        TransferLatencyPredictor(method="pooled").fit(**five, prefit_sources=sources)


def test_choose_networks_is_deterministic():
    names = [f"n{i}" for i in range(30)]
    a = choose_networks(names, 10, 3)
    assert a == choose_networks(list(reversed(names)), 10, 3) and len(set(a)) == 10
    assert a != choose_networks(names, 10, 4)


# ------------------------------------------------------------------ synthetic scaled target

SCALE = {"conv2d": 2.0, "depthwise": 3.0, "fully_connected": 1.5, "mean": 1.5, "concat": 1.5,
         "pooling": 1.5, "conv2d_grouped": 2.5}


@pytest.mark.parametrize("method", [m for m in METHODS])
def test_enough_target_networks_for_the_network_stage_cv(tables, sources, nets, method):
    """With 10+ target networks the network stage fits by inner CV over the kernel model
    (a regression: TransferKernelRegressor once rejected the keyword that CV passes)."""
    tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=choose_networks(nets, 12, 0))
    sops, snets = _source_tables(tables, list(sources))
    est = TransferLatencyPredictor(method=method).fit(**tgt, source_ops=sops, source_networks=snets,
                                                      prefit_sources=sources)
    pred = est.predict_ops(data_li2024.gpu_device_tables(tables, TARGET)["ops"])
    assert len(pred) == N_NETS and np.all(pred["pred_ms"] > 0)


def test_transfer_beats_source_unchanged_on_synthetic_scaled_target(tables, nets):
    """Source = real pixel4 (li2024); synthetic target = each pixel4 kernel time times a
    known per-type factor, end to end = 1.2 x kernel sum + 0.01 ms per kernel."""
    src_tables = data_li2024.gpu_device_tables(tables, "pixel4")
    src = LatencyPredictor(runtime="gpu").fit(**src_tables)
    ops = src_tables["ops"].copy()
    kernels = src.grouper_.transform(ops)
    factor = kernels["kernel_type"].map(SCALE).fillna(1.5).to_numpy()
    # li2024 tables hold one op per kernel: op times scale like their kernel's.
    assert (kernels["n_ops"] == 1).all()
    ops.loc[[r[0] for r in kernels["op_rows"]], "latency_ms"] = ops["latency_ms"].to_numpy()[
        [r[0] for r in kernels["op_rows"]]] * factor
    ksum = ops.groupby("network")["latency_ms"].sum()
    n_k = ops.groupby("network").size()
    target_nets = pd.DataFrame({"network": ksum.index, "latency_ms": 1.2 * ksum.to_numpy() + 0.01 * n_k.to_numpy()})
    train = choose_networks(nets, 8, 0)
    test = [n for n in nets if n not in set(train)]
    tr = {"ops": ops[ops["network"].isin(train)], "networks": target_nets[target_nets["network"].isin(train)]}
    truth = target_nets.set_index("network")["latency_ms"]
    te_ops = ops[ops["network"].isin(test)]
    err = {}
    fitted = {}
    for method in ("source", "ratio", "stack"):
        est = TransferLatencyPredictor(method=method).fit(**tr, prefit_sources={"synthetic_source": src})
        p = est.predict_ops(te_ops)["pred_ms"]
        err[method] = mape_pct(truth.loc[p.index], p)
        fitted[method] = est
    assert err["ratio"] < 0.25 * err["source"] and err["stack"] < 0.25 * err["source"], err
    assert err["ratio"] < 6.0 and err["stack"] < 6.0, err
    # The ratio method recovers the known factors of the types the 8 networks have.
    corr = fitted["ratio"].model_.kernel_model_.corrections_
    for t in ("conv2d", "depthwise"):
        assert np.exp(corr[t][0]) == pytest.approx(SCALE[t], rel=0.1)


# ------------------------------------------------------------------ CLI

@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, nets):
    """A store of the 40-network slice, source predictor files of mi8se and pixel4, and a
    store where TARGET has only 3 networks measured."""
    d = tmp_path_factory.mktemp("transfer_cli")
    full = _write_slice(d / "full", nets)
    few = _write_slice(d / "few", nets, target_keep=nets[:3])
    runner = CliRunner()
    out = {"dir": d, "db": str(d / "full.db"), "few_db": str(d / "few.db")}
    for src, db in ((full, out["db"]), (few, out["few_db"])):
        r = runner.invoke(main, ["dataset", "import", "li2024", str(src), "--store", db])
        assert r.exit_code == 0, r.output
    for dev in ("mi8se", "pixel4"):
        out[dev] = str(d / f"{dev}.predictor")
        r = runner.invoke(main, ["fit", "--store", out["db"], "--device", f"li2024/{dev}", "--delegate", "gpu",
                                 "--out", out[dev]])
        assert r.exit_code == 0, r.output
    return out


def test_cli_adapt_from_all_measured_networks(cli_files, tmp_path):
    """No --max-networks: all 40 of the target's networks, enough for the network stage's
    inner CV (this crashed once; see test_enough_target_networks_for_the_network_stage_cv)."""
    new = str(tmp_path / "s10_all.predictor")
    r = CliRunner().invoke(main, ["adapt", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"],
                                  "--store", cli_files["db"], "--device", f"li2024/{TARGET}", "--out", new, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["n_target_networks"] == N_NETS


def test_cli_adapt_from_predictors_then_evaluate(cli_files, tables, tmp_path):
    runner = CliRunner()
    new = str(tmp_path / "s10.predictor")
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"],
                             "--store", cli_files["db"], "--device", f"li2024/{TARGET}", "--max-networks", "8",
                             "--out", new, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["n_target_networks"] == 8 and summary["method"] == "stack"
    meta = read_meta(new)
    assert meta["kind"] == "network-latency" and meta["source"] == "transfer"
    assert meta["device"] == f"li2024/{TARGET}" and meta["delegate"] == "gpu"
    assert sorted(o["device"] for o in meta["transferred_from"]) == ["li2024/mi8se", "li2024/pixel4"]
    assert meta["n_target_networks"] == 8 and len(meta["training_networks"]) == 8
    lo_pct, hi_pct = summary["interval_pct"]
    assert lo_pct < 0 < hi_pct and summary["interval_coverage"] == 0.9
    assert summary["interval_from"] == "sources" and summary["interval_devices"] == ["li2024/mi8se", "li2024/pixel4"]
    assert summary["interval_networks"] == 2 * (N_NETS - 8)
    d = load_predictor(new)[0].predict_ops(data_li2024.gpu_device_tables(tables, TARGET)["ops"])
    assert np.allclose(d["lo_ms"] / d["pred_ms"], 1 + lo_pct / 100, atol=1e-3)
    assert meta["target_selection"] == {"max_networks": 8, "seed": 0, "selection": DEFAULT_SELECTION,
                                        "rule": "host.modeler.transfer_select.select_networks"}
    r = runner.invoke(main, ["evaluate", "--store", cli_files["db"], "--predictor", new, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["metrics"]["n"] == N_NETS - 8
    assert res["metrics"]["mape_pct"] < 25  # a sanity bound; accuracy is benchmarks/gpu_transfer.py's job
    r = runner.invoke(main, ["evaluate", "--store", cli_files["db"], "--predictor", new])
    assert r.exit_code == 0 and "32 networks (held-out)" in r.output
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"], "--store",
                             cli_files["db"], "--device", f"li2024/{TARGET}", "--max-networks", "8", "--out", new])
    assert r.exit_code == 0, r.output
    assert ("around each prediction (from the same transfer simulated on 2 source device(s), li2024/mi8se, "
            "li2024/pixel4: errors on 64 of their networks it was not fitted on)") in r.output
    # --interval-from target: the bounds from the new phone's own networks, as before.
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"], "--store",
                             cli_files["db"], "--device", f"li2024/{TARGET}", "--max-networks", "8",
                             "--interval-from", "target", "--out", new, "--json"])
    assert r.exit_code == 0, r.output
    target_only = json.loads(r.stdout.strip().splitlines()[-1])
    assert target_only["interval_from"] == "target" and target_only["interval_networks"] == 8
    assert target_only["interval_pct"] != summary["interval_pct"]
    # --interval-from sources with one old phone cannot simulate: a clear error, no traceback.
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--store", cli_files["db"], "--device",
                             f"li2024/{TARGET}", "--max-networks", "8", "--interval-from", "sources",
                             "--out", new])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "no source device allows a simulated transfer" in r.output
    assert "no other source device to transfer from" in r.output
    # Text output says what was done.
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--store", cli_files["db"], "--device",
                             f"li2024/{TARGET}", "--max-networks", "6", "--method", "ratio", "--out", new])
    assert r.exit_code == 0, r.output
    assert "transferred from li2024/pixel4 with 6 measured network(s)" in r.output and "method ratio" in r.output
    assert "90% interval: -" in r.output
    # One old phone: the bounds come from the new phone's networks, and the line says why.
    assert ("around each prediction (from held-out errors of 6 of the new device's networks alone; not simulated "
            "on the source devices: li2024/pixel4: no other source device to transfer from)") in r.output
    assert "selection coverage, seed 0" in r.output
    # --max-networks follows the library's selection; --selection random is the old rule.
    with Store.open(cli_files["db"]) as store:
        from host.modeler.service import dataset_training_tables

        tgt = dataset_training_tables(store, device=f"li2024/{TARGET}", delegate="gpu")
    srcs = {"pixel4": load_predictor(cli_files["pixel4"])[0]}
    for selection in ("coverage", "random"):
        r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--store", cli_files["db"], "--device",
                                 f"li2024/{TARGET}", "--max-networks", "6", "--selection", selection, "--seed", "3",
                                 "--out", new])
        assert r.exit_code == 0, r.output
        meta = read_meta(new)
        assert meta["target_selection"]["selection"] == selection and meta["target_selection"]["seed"] == 3
        assert meta["training_networks"] == sorted(select_networks(tgt["ops"], 6, srcs, strategy=selection, seed=3))


def test_transferred_predictor_file_refits_on_other_sklearn(cli_files, tmp_path):
    new = tmp_path / "s10.predictor"
    r = CliRunner().invoke(main, ["adapt", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"],
                                  "--store", cli_files["db"], "--device", f"li2024/{TARGET}",
                                  "--max-networks", "6", "--out", str(new)])
    assert r.exit_code == 0, r.output
    est, meta = load_predictor(new)
    assert meta["loaded_by"] == "pickle" and isinstance(est, TransferLatencyPredictor)
    patched = tmp_path / "other_sklearn.predictor"
    as_if_saved_by_other_sklearn(new, patched)
    est2, meta2 = load_predictor(patched)
    assert meta2["loaded_by"] == "refit"
    with Store.open(cli_files["db"]) as store:
        from host.modeler.service import dataset_training_tables

        ops = dataset_training_tables(store, device=f"li2024/{TARGET}", delegate="gpu")["ops"]
    np.testing.assert_allclose(est.predict_ops(ops)["pred_ms"].to_numpy(),
                               est2.predict_ops(ops)["pred_ms"].to_numpy(), rtol=1e-6)
    assert est2.interval_from_ == est.interval_from_ == "sources"
    np.testing.assert_allclose(est2.model_.interval_log_bounds_, est.model_.interval_log_bounds_, rtol=1e-6)
    # A file from before interval_from existed (meta without it) is refitted with the
    # target-only bounds it was written with, and its pickle reads back with them too.
    old = tmp_path / "older.predictor"
    with_meta_edited(patched, old, lambda meta: meta["estimator_params"].pop("interval_from"))
    est3, _ = load_predictor(old)
    assert est3.interval_from_ == "target" and est3.get_params()["interval_from"] == "target"
    state = est.__getstate__()
    del state["interval_from"]
    unpickled = TransferLatencyPredictor.__new__(TransferLatencyPredictor)
    unpickled.__setstate__(state)
    assert unpickled.get_params()["interval_from"] == "target" and repr(unpickled)



def test_cli_adapt_from_with_too_few_target_runs(cli_files, tmp_path):
    runner = CliRunner()
    src = str(tmp_path / "pixel4_few.predictor")
    r = runner.invoke(main, ["fit", "--store", cli_files["few_db"], "--device", "li2024/pixel4", "--delegate", "gpu",
                             "--out", src])
    assert r.exit_code == 0, r.output
    with Store.open(cli_files["few_db"]) as store:
        assert len(store.runs_df(device=f"li2024/{TARGET}", delegate="gpu")) == 3
    r = runner.invoke(main, ["adapt", "--from", src, "--store", cli_files["few_db"], "--device",
                             f"li2024/{TARGET}", "--out", str(tmp_path / "new.predictor")])
    assert r.exit_code == 2, r.output
    assert "li2024/s10 has 3 network(s) with per-op and end-to-end gpu times" in r.output
    assert "needs at least 5" in r.output and "opcost profile" in r.output and "--op-profiling" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "new.predictor").exists()
    # A device with no runs at all, and argument mistakes.
    r = runner.invoke(main, ["adapt", "--from", src, "--store", cli_files["few_db"], "--device", "nobody",
                             "--out", str(tmp_path / "n.predictor")])
    assert r.exit_code == 2 and "nobody has 0 network(s)" in r.output
    r = runner.invoke(main, ["adapt", "--from", src, "--signature", "sig.json", "--out", "x"])
    assert r.exit_code == 2 and "either --signature FILE or --from" in r.output
    r = runner.invoke(main, ["adapt", "--from", src, "--out", "x"])
    assert r.exit_code == 2 and "--from needs --store" in r.output
    r = runner.invoke(main, ["adapt", "--from", src, "--store", cli_files["few_db"], "--device", f"li2024/{TARGET}",
                             "--selection", "spread", "--out", "x"])
    assert r.exit_code == 2 and "--selection chooses among the new phone's networks with --max-networks" in r.output
    r = runner.invoke(main, ["adapt", "--signature", "sig.json", "--latencies", "x.csv", "--max-networks", "5",
                             "--out", "x"])
    assert r.exit_code == 2 and "go with --from" in r.output
    r = runner.invoke(main, ["adapt", "--signature", "sig.json", "--latencies", "x.csv", "--interval-from",
                             "target", "--out", "x"])
    assert r.exit_code == 2 and "--interval-from go with --from" in r.output
    r = runner.invoke(main, ["adapt", "--from", src, "--store", cli_files["few_db"], "--device", "li2024/pixel4",
                             "--out", "x"])
    assert r.exit_code == 2 and "one of the source predictors' devices" in r.output


def test_cli_short_device_names_are_the_store_serials(cli_files, tmp_path):
    """`--device pixel4` (the device model name) means the store's li2024/pixel4: a
    predictor records the serial, and the same-device checks of a transfer see through
    short names, also in files written before this was so."""
    runner = CliRunner()
    short = str(tmp_path / "pixel4_short.predictor")
    r = runner.invoke(main, ["fit", "--store", cli_files["db"], "--device", "pixel4", "--delegate", "gpu",
                             "--out", short])
    assert r.exit_code == 0, r.output
    assert read_meta(short)["device"] == "li2024/pixel4"
    old_style = str(tmp_path / "pixel4_old.predictor")  # as written before: the name as given
    with_meta_edited(short, old_style, lambda meta: meta.__setitem__("device", "pixel4"))
    r = runner.invoke(main, ["adapt", "--from", old_style, "--from", cli_files["mi8se"], "--store", cli_files["db"],
                             "--device", "pixel4", "--out", str(tmp_path / "self.predictor")])
    assert r.exit_code == 2 and "li2024/pixel4 is one of the source predictors' devices" in r.output
    new = str(tmp_path / "s10.predictor")
    r = runner.invoke(main, ["adapt", "--from", old_style, "--from", cli_files["pixel4"], "--store", cli_files["db"],
                             "--device", TARGET, "--max-networks", "8", "--out", new, "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["device"] == f"li2024/{TARGET}"
    assert [o["device"] for o in summary["transferred_from"]] == ["li2024/pixel4", "li2024/pixel4"]
    # one phone given twice under two names is not simulated as its own source
    assert summary["interval_from"] == "target" and "li2024/pixel4 (given again)" in summary["interval_fallback"]
    r = runner.invoke(main, ["fit", "--store", cli_files["db"], "--device", "li2024/pixel5", "--delegate", "gpu",
                             "--out", str(tmp_path / "x.predictor")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "devices in the store: li2024/mi8se, li2024/pixel4, li2024/s10" in r.output
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--store", cli_files["db"], "--device", TARGET,
                             "--max-networks", "3", "--out", str(tmp_path / "x.predictor")])
    assert r.exit_code == 2 and "pass --max-networks 5 or more" in r.output


def test_device_identity_beyond_one_store(cli_files, tmp_path):
    """A predictor records its device's serial and model. evaluate finds the phone under
    another serial by its model; an older file that recorded only the model name is the
    same phone as another source file recording that model, even when the store does not
    know the phone; an ambiguous model name for the new device is refused."""
    import shutil

    from test_store import synthetic_measurement

    runner = CliRunner()
    assert read_meta(cli_files["pixel4"])["device_model"] == "pixel4"
    wifi = str(tmp_path / "wifi.predictor")  # as if fitted where the phone had another serial
    with_meta_edited(cli_files["pixel4"], wifi, lambda meta: meta.__setitem__("device", "192.168.1.5:5555"))
    r = runner.invoke(main, ["evaluate", "--store", cli_files["db"], "--predictor", wifi, "--all", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["metrics"]["n"] == N_NETS
    # The same lab phone in two files: one new (serial + model), one older (model name only).
    lab = str(tmp_path / "lab.predictor")
    with_meta_edited(cli_files["pixel4"], lab, lambda meta: meta.update(device="lab/p4-A", device_model="p4-A"))
    old = str(tmp_path / "old.predictor")

    def as_before(meta):
        meta.update(device="p4-A")
        meta.pop("device_model")
    with_meta_edited(cli_files["pixel4"], old, as_before)
    r = runner.invoke(main, ["adapt", "--from", lab, "--from", old, "--store", cli_files["db"], "--device",
                             f"li2024/{TARGET}", "--max-networks", "8", "--out", str(tmp_path / "n.predictor"),
                             "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert [o["device"] for o in summary["transferred_from"]] == ["lab/p4-A", "lab/p4-A"]
    assert summary["interval_from"] == "target" and "lab/p4-A (given again)" in summary["interval_fallback"]
    # Two devices of the new phone's model: which one is meant is not guessed.
    two = str(tmp_path / "two.db")
    shutil.copy(cli_files["db"], two)
    m = synthetic_measurement()
    with Store.open(two) as store:
        store.add_measurement(dataclasses.replace(m, device=dataclasses.replace(m.device, serial="SER9",
                                                                                model=TARGET)))
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"], "--store", two,
                             "--device", TARGET, "--out", str(tmp_path / "t.predictor")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"2 devices in {two} are a {TARGET}: SER9, li2024/{TARGET}" in r.output and "by its serial" in r.output
    # A stored device without a model name is itself, not whichever device has the file's model.
    with Store.open(two) as store:
        store.add_measurement(dataclasses.replace(m, device=dataclasses.replace(m.device, serial="SERX",
                                                                                model=None)))
    nomodel = str(tmp_path / "nomodel.predictor")
    with_meta_edited(cli_files["pixel4"], nomodel, lambda meta: meta.__setitem__("device", "SERX"))
    r = runner.invoke(main, ["evaluate", "--store", two, "--predictor", nomodel, "--all"])
    assert r.exit_code == 2 and "no measured runs of device 'SERX' with delegate gpu" in r.output


def test_transfer_source_of_another_kind_says_what_from_takes(tmp_path):
    from sklearn.linear_model import LinearRegression

    from host.modeler.predictor_file import save_predictor
    from host.modeler.service import _transfer_sources

    sig = str(tmp_path / "phone.predictor")
    save_predictor(sig, LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]),
                   meta={"kind": "signature-phone", "device": "x"})
    with pytest.raises(PredictorError, match="is a signature-phone predictor, not a network-latency") as err:
        _transfer_sources([sig])
    assert "--from takes predictors written by `opcost fit`" in err.value.hint


def test_cli_methods_match_library():
    from host.cli.signature_cmds import TRANSFER_METHODS as cli_methods
    from host.cli.transfer_cmds import SELECTIONS as cli_selections
    from host.modeler.service import TRANSFER_METHODS

    assert cli_methods == TRANSFER_METHODS and set(TRANSFER_METHODS) <= set(METHODS)
    assert cli_selections == SELECTIONS and cli_selections[0] == DEFAULT_SELECTION
    from host.cli.transfer_cmds import INTERVAL_FROM as cli_interval_from
    from host.modeler.transfer import INTERVAL_FROM

    assert cli_interval_from == INTERVAL_FROM
    assert TransferLatencyPredictor().get_params()["interval_from"] == INTERVAL_FROM[0]


# ------------------------------------------------------------------ which networks to measure

@pytest.fixture(scope="module")
def target_structure(tables):
    """The TARGET's op table of all 40 networks, as a selection pool (with its times)."""
    return data_li2024.gpu_device_tables(tables, TARGET)["ops"]


@pytest.mark.parametrize("strategy", SELECTIONS)
def test_selection_is_deterministic_and_returns_k_distinct_candidates(target_structure, sources, strategy):
    pool = set(target_structure["network"])
    for k in (1, 5, 12):
        a = select_networks(target_structure, k, sources, strategy=strategy, seed=4)
        assert len(a) == k == len(set(a)) and set(a) <= pool
        assert a == sorted(a)
        assert a == select_networks(target_structure.sample(frac=1.0, random_state=1), k, sources,
                                    strategy=strategy, seed=4)
    if strategy in SEEDED_SELECTIONS:
        assert any(select_networks(target_structure, 5, sources, strategy=strategy, seed=s) != a5
                   for a5 in [select_networks(target_structure, 5, sources, strategy=strategy, seed=0)]
                   for s in range(1, 6))


@pytest.mark.parametrize("strategy", SELECTIONS)
def test_selection_uses_no_target_times(target_structure, sources, strategy):
    """Shuffling the measured-time columns across rows, or removing them, changes nothing."""
    base = select_networks(target_structure, 8, sources, strategy=strategy, seed=2)
    shuffled = target_structure.copy()
    rng = np.random.default_rng(0)
    for col in ("latency_ms", "kernel_name"):
        shuffled[col] = shuffled[col].to_numpy()[rng.permutation(len(shuffled))]
    assert select_networks(shuffled, 8, sources, strategy=strategy, seed=2) == base
    bare = target_structure.drop(columns=["latency_ms", "kernel_name"])
    assert select_networks(bare, 8, sources, strategy=strategy, seed=2) == base


def test_selection_errors_are_clear(target_structure, sources):
    with pytest.raises(PredictorError, match="cannot select 41 of 40 candidate networks"):
        select_networks(target_structure, 41, sources)
    with pytest.raises(PredictorError, match="unknown selection"):
        select_networks(target_structure, 5, sources, strategy="magic")
    with pytest.raises(PredictorError, match="k must be at least 1"):
        select_networks(target_structure, 0, sources)
    with pytest.raises(PredictorError, match="no source predictors"):
        select_networks(target_structure, 5, {})


def test_selection_spans_sizes_on_synthetic_pool(target_structure, sources):
    """Synthetic pool: 25 prefixes of the largest real li2024 network of the slice, 5
    tiny, 15 middling and 5 nearly whole. The size-aware strategies choose at least one
    tiny and one large network of 5; random choices often miss one end."""
    n_ops = target_structure.groupby("network").size()
    ops = target_structure[target_structure["network"] == n_ops.idxmax()]
    fracs = {"tiny": np.linspace(0.03, 0.08, 5), "mid": np.linspace(0.3, 0.55, 15), "large": np.linspace(0.85, 1, 5)}
    parts, group = [], {}
    for g, fs in fracs.items():
        for i, f in enumerate(fs):
            keep = ops[ops["op_index"] < max(2, int(round(len(ops) * f)))].copy()
            keep["network"] = name = f"synthetic_{g}_{i:02d}"
            group[name] = g
            parts.append(keep)
    pool = pd.concat(parts, ignore_index=True)
    pred = candidate_table(pool, sources)["networks"]["pred_ms"]
    assert pred[[n for n in pred.index if group[n] == "tiny"]].max() < pred[[n for n in pred.index
                                                                            if group[n] == "mid"]].min()

    def spans(chosen):
        return {"tiny", "large"} <= {group[n] for n in chosen}

    for strategy in ("spread", "balanced", "doptimal", "coverage"):
        chosen = select_networks(pool, 5, sources, strategy=strategy, seed=0)
        assert spans(chosen), (strategy, pred.loc[chosen].round(2).to_dict())
    misses = sum(not spans(choose_networks(list(pred.index), 5, s)) for s in range(20))
    assert misses >= 6, misses


def test_cli_transfer_select_errors(cli_files, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.tflite"
    bad.write_text("not a model")
    r = runner.invoke(main, ["transfer", "select", "--from", cli_files["pixel4"], "--k", "3", str(bad),
                             str(tmp_path / "b.tflite")])
    assert r.exit_code == 2 and "cannot select 3 of 2 candidate model file(s)" in r.output, r.output
    r = runner.invoke(main, ["transfer", "select", "--from", cli_files["pixel4"], "--k", "1", str(bad)])
    assert r.exit_code == 2 and "bad.tflite: not a TFLite model" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["transfer", "select", "--from", str(bad), "--k", "1", str(bad)])
    assert r.exit_code == 2 and "is not an opcost predictor file" in r.output, r.output
    new = str(tmp_path / "s10.predictor")
    r = runner.invoke(main, ["adapt", "--from", cli_files["pixel4"], "--store", cli_files["db"], "--device",
                             f"li2024/{TARGET}", "--max-networks", "6", "--out", new])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["transfer", "select", "--from", new, "--k", "1", str(bad)])
    assert r.exit_code == 2 and "is itself a transferred predictor" in r.output, r.output
    r = runner.invoke(main, ["transfer", "select", "--from", cli_files["pixel4"], "--k", "0", str(bad)])
    assert r.exit_code == 2 and "--k must be at least 1" in r.output
    r = runner.invoke(main, ["transfer", "select", "--from", cli_files["pixel4"]])
    assert r.exit_code == 2 and "Missing argument" in r.output


@pytest.mark.tf
def test_cli_transfer_select_happy_path(cli_files, tmp_path):
    """Six small .tflite files of different sizes: `transfer select` prints K of them,
    one per line (and writes them with --out); --json says how they were chosen."""
    tf = pytest.importorskip("tensorflow")
    paths = []
    for i, (size, ch, depth) in enumerate([(16, 8, 1), (32, 16, 2), (64, 16, 2), (64, 32, 3), (96, 32, 4),
                                            (128, 48, 4)]):
        layers = [tf.keras.Input((size, size, 3), batch_size=1)]
        for _ in range(depth):
            layers += [tf.keras.layers.Conv2D(ch, 3, padding="same"),
                       tf.keras.layers.DepthwiseConv2D(3, padding="same")]
        layers += [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)]
        path = tmp_path / f"net_{i}.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Sequential(layers)).convert())
        paths.append(str(path))
    runner = CliRunner()
    out = tmp_path / "list.txt"
    args = ["transfer", "select", "--from", cli_files["pixel4"], "--from", cli_files["mi8se"], "--k", "3", *paths]
    r = runner.invoke(main, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    chosen = r.stdout.strip().splitlines()
    assert len(chosen) == 3 == len(set(chosen)) and set(chosen) <= set(paths)
    assert out.read_text().splitlines() == chosen
    assert "chose 3 of 6 model(s) by coverage (seed 0)" in r.stderr
    r = runner.invoke(main, [*args, "--json", "--selection", "spread", "--seed", "1"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["selection"] == "spread" and rec["seed"] == 1 and rec["n_candidates"] == 6 and rec["k"] == 3
    assert len(rec["selected"]) == 3 and set(rec["source_pred_ms"]) == set(rec["selected"])
    assert sorted(o["device"] for o in rec["sources"]) == ["li2024/mi8se", "li2024/pixel4"]
    # spread: one network from each third of the sources' predicted sizes (the files are
    # in increasing size order).
    names = [Path(p).name for p in rec["selected"]]
    assert len({"net_0.tflite", "net_1.tflite"} & set(names)) == 1, names
    assert len({"net_4.tflite", "net_5.tflite"} & set(names)) == 1, names


@pytest.mark.tf
def test_predict_tflite_with_transferred_predictor(cli_files, tmp_path):
    tf = pytest.importorskip("tensorflow")
    m = tf.keras.Sequential([tf.keras.Input((16, 16, 8), batch_size=1),
                             tf.keras.layers.Conv2D(16, 3, padding="same"),
                             tf.keras.layers.DepthwiseConv2D(3, padding="same"),
                             tf.keras.layers.GlobalAveragePooling2D(),
                             tf.keras.layers.Dense(10)])
    model = tmp_path / "small_net.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    new = str(tmp_path / "s10.predictor")
    r = CliRunner().invoke(main, ["adapt", "--from", cli_files["pixel4"], "--store", cli_files["db"],
                                  "--device", f"li2024/{TARGET}", "--max-networks", "6", "--out", new])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", str(model), "--predictor", new, "--per-op", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["device"] == f"li2024/{TARGET}" and rec["pred_ms"] > 0
    assert all(k["pred_ms"] > 0 for k in rec["kernels"])


# ------------------------------------------------------------------ intervals with few networks

@pytest.mark.parametrize("method", ["stack", "scratch"])
def test_interval_with_few_target_networks_covers_the_others(tables, sources, nets, method):
    """Below 10 target networks the kernel stage is fitted in-sample; the 90% interval
    must still hold the real held-out networks (in-sample residuals gave 70-83% here)."""
    full = data_li2024.gpu_device_tables(tables, TARGET)
    truth = full["networks"].set_index("network")["latency_ms"]
    inside = []
    for seed in range(6):
        train = choose_networks(nets, 8, seed)
        tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=train)
        est = TransferLatencyPredictor(method=method).fit(**tgt, prefit_sources=sources)
        p = est.predict_ops(full["ops"][~full["ops"]["network"].isin(train)])
        y = truth.loc[p.index]
        inside.append(float(np.mean((y >= p["lo_ms"]) & (y <= p["hi_ms"]))))
    assert np.mean(inside) >= 0.88, inside


def test_network_model_from_before_the_pipeline_interval_still_predicts(tables, sources, nets):
    tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=choose_networks(nets, 6, 0))
    est = TransferLatencyPredictor().fit(**tgt, prefit_sources=sources)
    ops = data_li2024.gpu_device_tables(tables, TARGET)["ops"]
    wide = est.predict_ops(ops)
    del est.model_.interval_quantiles_    # as unpickled from an older file
    old = est.predict_ops(ops)
    assert np.allclose(old["pred_ms"], wide["pred_ms"])
    lo_q, hi_q = est.model_.overhead_model_.residual_quantiles_
    assert np.allclose(old["hi_ms"], old["pred_ms"] * np.exp(hi_q))


def test_network_interval_with_one_timed_network_or_three_networks(tables, nets):
    """Real li2024 s10 networks. Leaving out the only network with per-op times leaves
    nothing to fit kernels on: that network is skipped, not a crash (it once was). With 3
    networks the left-out fits use the one-parameter overhead form."""
    six = data_li2024.gpu_device_tables(tables, TARGET, networks=nets[:6])
    ops = six["ops"].copy()
    ops.loc[ops["network"] != ops["network"].iloc[0], "latency_ms"] = np.nan
    est = LatencyPredictor(runtime="gpu").fit(ops, six["networks"])
    assert est.model_.interval_n_networks_ == 5
    lo, hi = est.model_.interval_log_bounds_
    assert lo < 0 < hi and np.isfinite([lo, hi]).all()
    three = data_li2024.gpu_device_tables(tables, TARGET, networks=nets[:3])
    est = LatencyPredictor(runtime="gpu").fit(**three)
    assert est.model_.interval_n_networks_ == 3
    assert est.model_.interval_log_bounds_ != est.model_.overhead_model_.residual_quantiles_


# ------------------------------------------------------------------ intervals simulated on the sources

@pytest.fixture(scope="module")
def source_training(tables):
    return _source_tables(tables, ("mi8se", "pixel4"))


def test_interval_simulated_on_sources_for_selected_networks(tables, sources, source_training):
    """Networks chosen by `transfer select` (coverage) are extremes: leaving one out is an
    extrapolation and the target-only interval is needlessly wide. Simulating the transfer
    on each source (real li2024 phones) gives bounds that still hold the real held-out
    networks of the target, and are narrower."""
    full = data_li2024.gpu_device_tables(tables, TARGET)
    truth = full["networks"].set_index("network")["latency_ms"]
    so, sn = source_training
    inside, ratio = {"auto": [], "target": []}, {"auto": [], "target": []}
    for n in (6, 8, 10):
        train = select_networks(full["ops"].drop(columns=["latency_ms", "kernel_name"]), n, sources)
        tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=train)
        for how in inside:
            est = TransferLatencyPredictor(interval_from=how).fit(**tgt, source_ops=so, source_networks=sn,
                                                                  prefit_sources=sources)
            assert est.interval_from_ == ("sources" if how == "auto" else "target")
            if how == "auto":
                assert est.interval_devices_ == ["mi8se", "pixel4"]
                assert est.model_.interval_n_networks_ == 2 * (N_NETS - n)
            p = est.predict_ops(full["ops"][~full["ops"]["network"].isin(train)])
            y = truth.loc[p.index]
            inside[how].append(float(np.mean((y >= p["lo_ms"]) & (y <= p["hi_ms"]))))
            ratio[how].append(float(np.median(p["hi_ms"] / p["lo_ms"])))
    assert np.mean(inside["auto"]) >= 0.8, inside
    assert np.mean(ratio["auto"]) < np.mean(ratio["target"]), ratio


def test_interval_falls_back_to_target_when_sources_cannot_be_simulated(tables, sources, nets, source_training):
    so, sn = source_training
    train = choose_networks(nets, 6, 0)
    tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=train)
    # One source: nothing left to transfer from when it plays the target.
    one = {"pixel4": sources["pixel4"]}
    keep = so["source"] == "pixel4"
    est = TransferLatencyPredictor().fit(**tgt, source_ops=so[keep], source_networks=sn[sn["source"] == "pixel4"],
                                         prefit_sources=one)
    assert est.interval_from_ == "target" and est.interval_devices_ == []
    assert est.interval_fallback_ == "pixel4: no other source device to transfer from"
    with pytest.raises(PredictorError, match="simulated transfer"):
        TransferLatencyPredictor(interval_from="sources").fit(
            **tgt, source_ops=so[keep], source_networks=sn[sn["source"] == "pixel4"], prefit_sources=one)
    # Without source tables, or when the sources never measured the target's networks.
    assert TransferLatencyPredictor().fit(**tgt, prefit_sources=sources).interval_from_ == "target"
    renamed = (so.assign(network=so["network"] + "_other"), sn.assign(network=sn["network"] + "_other"))
    est = TransferLatencyPredictor().fit(**tgt, source_ops=renamed[0], source_networks=renamed[1],
                                         prefit_sources=sources)
    assert est.interval_from_ == "target"
    # One device given twice (service names the second "pixel4+"): as a source of itself it
    # would see its own held-out networks, so it is not simulated.
    twice = {"pixel4": sources["pixel4"], "pixel4+": sources["pixel4"]}
    so2 = pd.concat([so[keep], so[keep].assign(source="pixel4+")], ignore_index=True)
    sn1 = sn[sn["source"] == "pixel4"]
    sn2 = pd.concat([sn1, sn1.assign(source="pixel4+")], ignore_index=True)
    est = TransferLatencyPredictor().fit(**tgt, source_ops=so2, source_networks=sn2, prefit_sources=twice)
    assert est.interval_from_ == "target"
    assert est.interval_fallback_ == ("pixel4: no other source device to transfer from; "
                                      "pixel4 (given again): no other source device to transfer from")
    # `scratch` needs no second source to simulate.
    est = TransferLatencyPredictor(method="scratch").fit(**tgt, source_ops=so[keep],
                                                         source_networks=sn[sn["source"] == "pixel4"])
    assert est.interval_from_ == "sources" and est.interval_devices_ == ["pixel4"]
    with pytest.raises(PredictorError, match="interval_from"):
        TransferLatencyPredictor(interval_from="sideways").fit(**tgt, prefit_sources=sources)


def test_interval_from_target_is_the_target_only_interval(tables, sources, nets, source_training):
    so, sn = source_training
    tgt = data_li2024.gpu_device_tables(tables, TARGET, networks=choose_networks(nets, 8, 1))
    plain = TransferLatencyPredictor().fit(**tgt, prefit_sources=sources)
    target = TransferLatencyPredictor(interval_from="target").fit(**tgt, source_ops=so, source_networks=sn,
                                                                  prefit_sources=sources)
    sim = TransferLatencyPredictor().fit(**tgt, source_ops=so, source_networks=sn, prefit_sources=sources)
    assert target.model_.interval_log_bounds_ == plain.model_.interval_log_bounds_
    assert target.interval_fallback_ == sim.interval_fallback_ == ""  # asked for, and not needed
    assert sim.model_.interval_log_bounds_ != plain.model_.interval_log_bounds_
    ops = data_li2024.gpu_device_tables(tables, TARGET)["ops"]
    assert np.allclose(sim.predict_ops(ops)["pred_ms"], target.predict_ops(ops)["pred_ms"])
