"""Signature selection and adaptation with an opcost store as the data source.

The store is built in the test from the real ganesan2020 files (data/ganesan2020) with
the product's importer; the "measured phones" added on top are synthetic (their
latencies are copies of real rows, rescaled), and their serials start with `synthetic/`.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import zipfile

import numpy as np
import pytest

from host.modeler import data_ganesan2020 as g20
from host.modeler.importers import import_dataset
from host.modeler.predictor_file import load_predictor, read_meta, save_predictor
from host.modeler.signature import (PHONE_PREDICTOR_KIND, PhonePredictor, adapt_phone, select_signature,
                                    store_device_latency_ms, store_latency_matrix)
from host.store import Store
from opcost.errors import PredictorError
from opcost.records import BenchmarkOutput, DeviceInfo, E2EStats, Measurement, ModelRef, RunSpec

HELD_OUT = "GM1901"  # a phone model with 4 device runs in the dataset


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sigstore") / "runs.db")
    with Store.open(path) as store:
        import_dataset("ganesan2020", g20.default_data_dir(), store)
    return path


@pytest.fixture(scope="module")
def real():
    return g20.load(g20.default_data_dir())


@pytest.fixture(scope="module")
def held_out(store_path):
    """Select on the store without the held-out phone model, adapt its first device
    from its store runs (product defaults for the model's hyper-parameters)."""
    with Store.open(store_path, create=False) as store:
        train = store_latency_matrix(store, exclude=[f"ganesan2020/{HELD_OUT}_*"])
        sig = select_signature(train.latency_ms, 10, "mis", groups=train.phone_models, networks=train.networks)
        serial = f"ganesan2020/{HELD_OUT}_0"
        phone = adapt_phone(train, sig, store_device_latency_ms(store, serial, sig),
                            {"method": "mis", "device": serial, "delegate": "cpu", "threads": 1})
        measured = store_device_latency_ms(store, serial, phone.networks)
    return {"train": train, "sig": sig, "phone": phone, "measured": measured}


def _copy(store_path, tmp_path) -> str:
    dst = str(tmp_path / "runs.db")
    shutil.copy(store_path, dst)
    return dst


def _add_phone(store, serial, latency_ms_by_name, *, with_median=True, threads=1):
    """Synthetic measured phone: runs named like .tflite stems, sha256 of a 'file'."""
    dev = DeviceInfo(serial=serial, kind="android", model="SyntheticPhone")
    ms = []
    for name, value in latency_ms_by_name.items():
        e2e = E2EStats(count=20, mean_ms=value * (1.2 if with_median else 1.0),
                       median_ms=value if with_median else None)
        ms.append(Measurement(device=dev, model=ModelRef(sha256=hashlib.sha256(f"file:{name}".encode()).hexdigest(),
                                                         name=name),
                              spec=RunSpec(delegate="cpu", threads=threads), output=BenchmarkOutput(e2e=e2e),
                              runtime={"name": "tflite"}))
    store.add_measurements(ms, origin="measured")


def test_store_matrix_equals_the_dataset_statistic(store_path, real):
    """median_ms of the imported runs is the statistic the dataset loader uses."""
    with Store.open(store_path, create=False) as store:
        m = store_latency_matrix(store)
    assert m.left_out == {} and len(m.devices) == len(real.devices) == 87
    assert sorted(m.networks) == sorted(real.networks) and m.networks == sorted(m.networks)
    rows = [m.devices.index(f"ganesan2020/{d}") for d in real.devices]
    cols = [m.networks.index(n) for n in real.networks]
    np.testing.assert_allclose(m.latency_ms[np.ix_(rows, cols)], real.latency_ms, rtol=1e-12)
    assert [m.phone_models[i] for i in rows] == real.phone_models
    assert m.summary()["dataset"] == "store" and m.summary()["n_phone_models"] == len(set(real.phone_models))


def test_held_out_phone_model_is_predicted_from_its_store_runs(held_out, real):
    train, sig, phone, measured = held_out["train"], held_out["sig"], held_out["phone"], held_out["measured"]
    assert not any(d.startswith(f"ganesan2020/{HELD_OUT}_") for d in train.devices)
    assert len(train.devices) == 87 - 4 and len(sig) == 10
    pred = phone.predict()
    keep = np.array([n not in sig for n in phone.networks])
    mape = float(np.mean(np.abs(pred[keep] / measured[keep] - 1)))
    # baseline: the training devices' mean log profile, scaled to the signature
    prof = np.exp(np.log(train.latency_ms).mean(axis=0))
    idx = [train.networks.index(n) for n in sig]
    base_pred = prof * np.exp(np.mean(np.log(measured[idx] / prof[idx])))
    base = float(np.mean(np.abs(base_pred[keep] / measured[keep] - 1)))
    # observed: MAPE 1.6% on the 108 non-signature networks (baseline larger); bound is loose
    assert mape < 0.05, mape
    assert mape < base, (mape, base)
    np.testing.assert_array_equal(phone.predict(sig), measured[idx])  # measured values kept


def test_partial_devices_are_left_out_and_mean_is_used_without_median(store_path, tmp_path, real, caplog):
    path = _copy(store_path, tmp_path)
    row = real.latency_ms[real.devices.index("Pixel_4_0")]
    with Store.open(path) as store:
        _add_phone(store, "synthetic/partial", {n: 10.0 + i for i, n in enumerate(real.networks[:10])})
        full = {n: 1.5 * v for n, v in zip(real.networks, row)}
        _add_phone(store, "synthetic/mean-only", dict(full, mobilenet_v2=7.0), with_median=False)
        with caplog.at_level(logging.WARNING, logger="host.modeler.signature"):
            m = store_latency_matrix(store)
    assert "synthetic/partial" not in m.devices and set(m.left_out["synthetic/partial"]) == set(real.networks[10:])
    assert "left out 1 device(s)" in caplog.text and "synthetic/partial (missing 108)" in caplog.text
    assert "mobilenet_v2" not in m.networks and len(m.networks) == 118  # measured on one device only
    i = m.devices.index("synthetic/mean-only")
    assert m.phone_models[i] == "SyntheticPhone"
    np.testing.assert_allclose(m.latency_ms[i], [full[n] for n in m.networks])  # mean_ms, no median


def test_missing_signature_networks_are_listed(store_path, tmp_path, real):
    path = _copy(store_path, tmp_path)
    sig = ["rand001", "rand002", "pub100", "pub101"]
    with Store.open(path) as store:
        _add_phone(store, "synthetic/new", {"rand001": 5.0, "pub100": 9.0, "rand002": 3.0}, threads=1)
        _add_phone(store, "synthetic/new", {"pub101": 4.0}, threads=4)  # other threads do not count
        with pytest.raises(PredictorError) as err:
            store_device_latency_ms(store, "synthetic/new", sig)
        text = str(err.value)
        assert "has not measured 1 of the 4 signature networks" in text and ": pub101" in text
        assert "opcost profile pub101.tflite --device synthetic/new" in text and "--threads 1" in text
        assert err.value.serial == "synthetic/new"
        np.testing.assert_array_equal(store_device_latency_ms(store, "synthetic/new", sig[:3]), [5.0, 3.0, 9.0])
        with pytest.raises(PredictorError, match="'synthetic/none' has no runs in the store"):
            store_device_latency_ms(store, "synthetic/none", sig)
        with pytest.raises(PredictorError, match="no runs with delegate cpu, threads 2"):
            store_latency_matrix(store, threads=2)


def test_phone_predictor_file_round_trip(held_out, tmp_path):
    phone = held_out["phone"]
    path = str(tmp_path / "new.predictor")
    phone.save(path)
    back = PhonePredictor.load(path)
    np.testing.assert_array_equal(back.predict(), phone.predict())
    np.testing.assert_array_equal(back.predict(["rand003", "pub110"]), phone.predict(["rand003", "pub110"]))
    assert back.networks == phone.networks and back.signature_networks == phone.signature_networks
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["arrays.npz", "meta.json"]  # no pickle
    meta = read_meta(path)
    assert meta["format"] == "opcost-predictor" and meta["kind"] == PHONE_PREDICTOR_KIND
    assert meta["method"] == "mis" and meta["k"] == 10 and meta["device"] == f"ganesan2020/{HELD_OUT}_0"
    assert meta["training_devices"] == held_out["train"].devices
    assert meta["data"]["dataset"] == "store" and meta["data"]["n_device_runs"] == 83
    assert meta["estimator_class"] == "host.modeler.signature.PhonePredictor"
    assert load_predictor(path)[1]["loaded_by"] == "arrays"


def test_predictor_file_of_another_kind_is_rejected(tmp_path):
    from sklearn.linear_model import LinearRegression

    other = str(tmp_path / "net.predictor")
    save_predictor(other, LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]),
                   meta={"kind": "network-latency", "device": "x"})
    with pytest.raises(PredictorError, match="is a network-latency predictor, not a signature-phone") as err:
        PhonePredictor.load(other)
    assert "opcost adapt" in err.value.hint
    bad = tmp_path / "bad.predictor"
    bad.write_text("hello")
    with pytest.raises(PredictorError, match="not an opcost predictor file"):
        PhonePredictor.load(str(bad))
    with pytest.raises(PredictorError, match="does not exist") as err:
        PhonePredictor.load(str(tmp_path / "missing.predictor"))
    assert "opcost adapt --signature" in err.value.hint


def test_store_networks_imported_from_ganesan2020_carry_their_structure(store_path, real):
    from host.modeler.signature_structure import attach_store_structure, store_structure

    with Store.open(store_path, create=False) as store:
        feats, names, missing = store_structure(store, ["rand003", "pub104"])
        assert missing == [] and names == real.feature_names
        np.testing.assert_allclose(feats, real.network_features[[3, 104]])
        feats, _, missing = store_structure(store, ["rand003", "no_such_network"])
        assert feats is None and missing == ["no_such_network"]
        train = attach_store_structure(store_latency_matrix(store, exclude=[f"ganesan2020/{HELD_OUT}_*"]), store)
    assert train.network_features.shape == (len(train.networks), len(real.feature_names))
    sig = select_signature(train.latency_ms, 10, "pqr", groups=train.phone_models, networks=train.networks)
    with Store.open(store_path, create=False) as store:
        serial = f"ganesan2020/{HELD_OUT}_0"
        phone = adapt_phone(train, sig, store_device_latency_ms(store, serial, sig), {"method": "pqr"},
                            rank=3, n_neighbors=0)
        measured = store_device_latency_ms(store, serial, ["rand003"])
    assert phone.knows_structure
    by_structure = phone.predict_structure(real.network_features[[3]])
    assert abs(by_structure[0] / measured[0] - 1) < 0.25


def test_store_network_without_a_readable_file_has_no_structure(tmp_path):
    from host.modeler.signature_structure import store_structure

    path = str(tmp_path / "runs.db")
    dev = DeviceInfo(serial="synthetic/phone0", kind="android", model="synthetic")
    ref = ModelRef(sha256=hashlib.sha256(b"gone").hexdigest(), name="gone_net", path=str(tmp_path / "gone.tflite"))
    m = Measurement(device=dev, model=ref, spec=RunSpec(delegate="cpu", threads=1),
                    output=BenchmarkOutput(e2e=E2EStats(count=5, mean_ms=5.0, median_ms=5.0)))
    with Store.open(path) as store:
        store.add_measurement(m)
        feats, names, missing = store_structure(store, ["gone_net"])
    assert feats is None and names == [] and missing == ["gone_net"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorflow") is None,
                    reason="needs TensorFlow to build the .tflite")
def test_store_network_measured_from_a_tflite_takes_its_structure(tmp_path, real):
    from host.modeler.signature_structure import store_structure
    from models_zoo import ganesan2020

    built = str(ganesan2020.build_network("rand003", cache_dir=str(tmp_path / "cache")))
    dev = DeviceInfo(serial="synthetic/phone0", kind="android", model="synthetic")
    ref = ModelRef(sha256=hashlib.sha256(b"r3").hexdigest(), name="my_rand003", path=built)
    m = Measurement(device=dev, model=ref, spec=RunSpec(delegate="cpu", threads=1),
                    output=BenchmarkOutput(e2e=E2EStats(count=5, mean_ms=5.0, median_ms=5.0)))
    with Store.open(str(tmp_path / "runs.db")) as store:
        store.add_measurement(m)
        feats, names, missing = store_structure(store, ["my_rand003"])
    assert missing == [] and names == real.feature_names
    np.testing.assert_allclose(feats[0], real.network_features[3])


def test_store_run_spread_equals_the_dataset_and_reaches_the_phone(store_path, real, tmp_path):
    """std_ms / mean_ms of the imported runs is the dataset loader's run spread; adapt from
    a store weights the new phone's signature by it."""
    with Store.open(store_path, create=False) as store:
        m = store_latency_matrix(store)
        rows = [m.devices.index(f"ganesan2020/{d}") for d in real.devices]
        cols = [m.networks.index(n) for n in real.networks]
        np.testing.assert_allclose(m.run_spread[np.ix_(rows, cols)], real.run_spread, rtol=1e-9)
        serial = f"ganesan2020/{HELD_OUT}_0"
        train = m.restrict([d for d in m.devices if not d.startswith(f"ganesan2020/{HELD_OUT}_")])
        assert train.run_spread.shape == train.latency_ms.shape
        sig = select_signature(train.latency_ms, 10, "pqr", groups=train.phone_models, networks=train.networks)
        lat, spread = store_device_latency_ms(store, serial, sig, with_spread=True)
    d = real.devices.index(f"{HELD_OUT}_0")
    np.testing.assert_allclose(spread, real.run_spread[d, [real.networks.index(n) for n in sig]], rtol=1e-9)
    phone = adapt_phone(train, sig, lat, {"device": serial}, signature_spread=spread, spread_weight=1.0)
    assert phone.model.spread_weight_ == 1.0 and phone.info["spread_weight"] == 1.0
    path = phone.save(str(tmp_path / "s.predictor"))
    np.testing.assert_array_equal(PhonePredictor.load(path).predict(), phone.predict())


def test_runs_without_std_have_no_run_spread(tmp_path):
    path = str(tmp_path / "runs.db")
    with Store.open(path) as store:
        for i in range(3):
            _add_phone(store, f"phone{i}", {"a": 1.0 + i, "b": 2.0 + i, "c": 5.0})
        m = store_latency_matrix(store)
        assert m.run_spread is None
        lat, spread = store_device_latency_ms(store, "phone0", ["a", "b"], with_spread=True)
    assert list(lat) == [1.0, 2.0] and np.all(np.isnan(spread))


def test_exclude_patterns_match_without_the_dataset_prefix_and_never_silently(store_path):
    """`--exclude-device 'SM-N975F_*'` means the store's `ganesan2020/SM-N975F_*` too; a
    pattern that matches nothing is an error (the phone meant to be held out would stay)."""
    from opcost.errors import UsageError

    with Store.open(store_path, create=False) as store:
        full = store_latency_matrix(store)
        plain = store_latency_matrix(store, exclude=["SM-N975F_*"])
        prefixed = store_latency_matrix(store, exclude=["ganesan2020/SM-N975F_*"])
        assert plain.devices == prefixed.devices
        assert sorted(set(full.devices) - set(plain.devices)) == [f"ganesan2020/SM-N975F_{i}" for i in range(3)]
        with pytest.raises(UsageError, match="'NOPE_\\*' matches none of the 87 devices") as err:
            store_latency_matrix(store, exclude=["SM-N975F_*", "NOPE_*"])
        assert "ganesan2020/" in err.value.hint
        with pytest.raises(UsageError, match="'li2024/SM-N975F_\\*' matches none"):   # another dataset's prefix
            store_latency_matrix(store, exclude=["li2024/SM-N975F_*"])
