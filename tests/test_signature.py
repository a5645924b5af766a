"""Signature selection and the cross-device model. Real-data tests use data/ganesan2020;
the synthetic_* helpers build exactly low-rank latency matrices (synthetic, seeded)."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from bench_helpers import load_benchmark, write_ganesan2020_copy
from host.modeler import data_ganesan2020 as g20
from host.modeler.predictor_file import read_meta
from host.modeler.signature import (PhonePredictor, SignatureGBMModel, SignatureLatencyModel,
                                    parse_latency_csv, parse_signature_document, select_signature,
                                    signature_document)
from opcost.errors import PredictorError, UsageError


def synthetic_lowrank(n_dev=40, n_net=60, rank=3, seed=0):
    """exp(device offset + network offset + U V): exactly rank-`rank` in log space (synthetic)."""
    rng = np.random.default_rng(seed)
    dev = rng.normal(3.0, 0.5, size=(n_dev, 1))
    net = rng.normal(0.0, 0.7, size=(1, n_net))
    u = rng.normal(0, 0.3, size=(n_dev, rank))
    v = rng.normal(0, 1.0, size=(rank, n_net))
    return np.exp(dev + net + u @ v)


@pytest.fixture(scope="module")
def real():
    return g20.load(g20.default_data_dir())


@pytest.mark.parametrize("method", ["mis", "sccs", "random", "pqr", "greedy"])
def test_selection_is_deterministic_and_valid(real, method):
    y = real.latency_ms[:50]
    a = select_signature(y, 8, method, seed=3, groups=real.phone_models[:50], networks=real.networks)
    b = select_signature(y, 8, method, seed=3, groups=real.phone_models[:50], networks=real.networks)
    assert a == b
    assert len(a) == 8 and len(set(a)) == 8 and set(a) <= set(real.networks)


def test_random_selection_depends_on_seed(real):
    y = real.latency_ms
    assert select_signature(y, 10, "random", seed=0) != select_signature(y, 10, "random", seed=1)


def test_selection_uses_only_the_rows_it_is_given(real):
    y = real.latency_ms.copy()
    train = np.arange(len(y)) < 60
    before = select_signature(y[train], 10, "mis")
    y[~train] *= np.random.default_rng(0).uniform(0.2, 5.0, size=y[~train].shape)  # scramble held-out rows
    assert select_signature(y[train], 10, "mis") == before
    # ...and it does depend on the training rows
    y2 = real.latency_ms[train] * np.random.default_rng(1).uniform(0.2, 5.0, size=(60, 118))
    assert select_signature(y2, 10, "mis") != before


def test_auto_reports_nested_cv_choice(real):
    report = {}
    sig = select_signature(real.latency_ms, 10, "auto", groups=real.phone_models, report=report)
    assert report["chosen"] in ("pqr", "mis", "sccs")
    assert set(report["inner_cv_mean_abs_log_error"]) == {"pqr", "mis", "sccs"}
    assert sig == select_signature(real.latency_ms, 10, report["chosen"])


def test_bad_selection_arguments(real):
    with pytest.raises(UsageError, match="unknown signature selection method"):
        select_signature(real.latency_ms, 10, "magic")
    with pytest.raises(UsageError, match="k must be between"):
        select_signature(real.latency_ms, 118, "pqr")
    with pytest.raises(UsageError, match="non-positive"):
        select_signature(np.array([[1.0, 0.0], [1.0, 2.0]]), 1, "pqr")


def test_model_recovers_exact_low_rank_synthetic():
    y = synthetic_lowrank(n_dev=41, seed=0)
    train, new = y[:40], y[40:]
    sig = select_signature(train, 6, "pqr")
    model = SignatureLatencyModel(rank=3, n_neighbors=0, robust=False).fit(train, sig)
    pred = model.predict(new[:, sig])
    assert np.max(np.abs(pred / new - 1)) < 1e-4
    # too few factors cannot: the test above is not trivially satisfied
    low = SignatureLatencyModel(rank=1, n_neighbors=0, robust=False).fit(train, sig)
    assert np.max(np.abs(low.predict(new[:, sig]) / new - 1)) > 0.05


def test_robust_fit_resists_one_disturbed_signature_run_synthetic():
    y = synthetic_lowrank(n_dev=41, seed=1)
    train, new = y[:40], y[40]
    sig = select_signature(train, 10, "pqr")
    s = new[sig].copy()
    s[0] *= 3.0  # one signature network measured while throttled
    keep = np.ones(y.shape[1], bool)
    keep[sig] = False
    err = {}
    for robust in (False, True):
        m = SignatureLatencyModel(rank=3, n_neighbors=0, robust=robust).fit(train, sig)
        err[robust] = np.mean(np.abs(m.predict(s)[keep] / new[keep] - 1))
    assert err[True] < err[False] / 2


def test_auto_hyperparameters_on_real_data_beat_plain_mean(real):
    g = np.array(real.phone_models)
    test = np.isin(g, sorted(set(g))[::3])
    y = real.latency_ms
    sig = select_signature(y[~test], 10, "pqr")
    m = SignatureLatencyModel().fit(y[~test], sig, groups=g[~test])
    assert m.rank_ in (2, 3, 5, 8) and m.n_neighbors_ in (0, 3, 5, 10)
    pred = m.predict(y[test][:, sig])
    keep = np.ones(118, bool)
    keep[sig] = False
    mape = np.mean(np.abs(pred[:, keep] / y[test][:, keep] - 1))
    # baseline: the training devices' mean profile scaled by the signature mean
    prof = np.exp(np.log(y[~test]).mean(axis=0))
    scale = np.exp(np.mean(np.log(y[test][:, sig] / prof[sig]), axis=1, keepdims=True))
    base = np.mean(np.abs((prof * scale)[:, keep] / y[test][:, keep] - 1))
    assert mape < base


def test_signature_check_flags_a_disturbed_signature_synthetic():
    y = synthetic_lowrank(n_dev=61, seed=2)
    noise = np.random.default_rng(3).normal(0, 0.02, size=y.shape)  # measurement noise (synthetic)
    y = y * np.exp(noise)
    train, new = y[:60], y[60]
    sig = select_signature(train, 10, "pqr")
    m = SignatureLatencyModel(rank=3, n_neighbors=0).fit(train, sig)
    assert m.check_rms_train_.shape == (60,) and m.check_error_train_.shape == (60,)
    clean = m.check_signature(new[sig])[0]
    disturbed_sig = new[sig].copy()
    disturbed_sig[[1, 4]] *= 1.6  # two signature networks measured while the phone throttled
    disturbed = m.check_signature(disturbed_sig)[0]
    assert clean["consistent"] and not disturbed["consistent"]
    assert disturbed["residual_rms"] > clean["limit"] > clean["residual_rms"]
    worst = sorted(disturbed["residual_pct"], key=lambda n: -abs(disturbed["residual_pct"][n]))[:2]
    assert sorted(worst) == sorted(str(sig[i]) for i in (1, 4))


def test_signature_check_separates_good_and_bad_held_out_phones(real):
    """On real held-out phones, flagged ones are predicted worse than consistent ones."""
    g = np.array(real.phone_models)
    test = np.isin(g, sorted(set(g))[1::3])
    y = real.latency_ms
    sig = select_signature(y[~test], 10, "pqr")
    m = SignatureLatencyModel(rank=5, n_neighbors=5).fit(y[~test], sig, groups=g[~test])
    checks = m.check_signature(y[test][:, sig])
    ok = np.array([c["consistent"] for c in checks])
    keep = np.ones(118, bool)
    keep[sig] = False
    err = np.mean(np.abs(m.predict(y[test][:, sig])[:, keep] / y[test][:, keep] - 1), axis=1)
    assert 0 < ok.sum() < len(ok)
    assert np.median(err[ok]) < np.median(err[~ok])
    assert checks[0]["typical_error_pct"] > 0


def test_predictor_saved_before_the_check_still_loads(tmp_path):
    y = synthetic_lowrank()
    model = SignatureLatencyModel(rank=2, n_neighbors=0).fit(y[1:], [0, 1, 2])
    model.check_rms_train_ = model.check_error_train_ = None  # what files of the previous version hold
    model.interval_residuals_ = None
    path = str(tmp_path / "old.predictor")
    phone = PhonePredictor(model, y[0, :3])
    phone.save(path)
    back = PhonePredictor.load(path)
    assert back.check() is None
    assert not back.has_interval
    with pytest.raises(PredictorError, match="no interval data for its predictions"):
        back.predict_interval()
    np.testing.assert_array_equal(back.predict(), phone.predict())
    with pytest.raises(PredictorError, match="without its consistency data"):
        back.model.check_signature(y[0, :3])


def test_noisy_network_counts_less_in_the_signature_fit_synthetic():
    y = synthetic_lowrank(n_dev=81, n_net=60, rank=3, seed=4)
    rng = np.random.default_rng(5)
    sd = np.full(60, 0.01)
    sd[0] = 0.3  # one network measured badly on every phone (synthetic)
    y = y * np.exp(rng.normal(0, 1, size=y.shape) * sd)
    train, new = y[:80], y[80:]
    sig = [0] + select_signature(train[:, 1:], 7, "pqr")
    sig = [0] + [i + 1 for i in sig[1:]]
    m = SignatureLatencyModel(rank=3, n_neighbors=0, robust=False).fit(train, sig)
    assert m.net_var_[0] > 100 * np.median(m.net_var_)
    keep = np.ones(60, bool)
    keep[sig] = False
    weighted = np.mean(np.abs(m.predict(new[:, sig])[:, keep] / new[:, keep] - 1))
    m.net_var_ = None  # every network trusted alike
    uniform = np.mean(np.abs(m.predict(new[:, sig])[:, keep] / new[:, keep] - 1))
    assert weighted < uniform / 2


def test_predict_input_errors():
    y = synthetic_lowrank()
    m = SignatureLatencyModel(rank=2, n_neighbors=0).fit(y, [0, 1, 2])
    with pytest.raises(UsageError, match="got 2 signature latencies, the model needs 3"):
        m.predict([1.0, 2.0])
    with pytest.raises(UsageError, match="> 0 ms"):
        m.predict([1.0, -2.0, 3.0])
    with pytest.raises(PredictorError, match="not fitted"):
        SignatureLatencyModel().predict([1.0])
    with pytest.raises(UsageError, match="not one of the model's networks"):
        SignatureLatencyModel().fit(y, ["nope"], networks=[f"n{i}" for i in range(y.shape[1])])


def test_phone_predictor_save_load_identical(tmp_path, real):
    sig = select_signature(real.latency_ms[1:], 10, "pqr", networks=real.networks)
    model = SignatureLatencyModel(rank=5, n_neighbors=5).fit(real.latency_ms[1:], sig, networks=real.networks,
                                                            groups=real.phone_models[1:], devices=real.devices[1:])
    cols = [real.networks.index(n) for n in sig]
    phone = PhonePredictor(model, real.latency_ms[0, cols], {"note": "test"})
    path = str(tmp_path / "p.predictor")
    phone.save(path)
    back = PhonePredictor.load(path)
    np.testing.assert_array_equal(back.predict(), phone.predict())
    np.testing.assert_array_equal(back.predict(["rand003", "pub110"]), phone.predict(["rand003", "pub110"]))
    assert back.predict(sig[:1])[0] == real.latency_ms[0, cols[0]]  # measured value kept
    with zipfile.ZipFile(path) as z:
        assert "estimator.pkl" not in z.namelist()
    meta = read_meta(path)
    assert meta["kind"] == "signature-phone" and meta["k"] == 10 and meta["note"] == "test"
    assert meta["training_devices"] == real.devices[1:] and meta["versions"]["opcost"]
    assert meta["format_version"] == 1  # nothing a format-1 reader would miss
    assert back.info["note"] == "test"
    assert back.check() == phone.check() and meta["signature_check"] == phone.check()
    assert set(phone.check()) == {"residual_rms", "limit", "consistent", "typical_error_pct", "residual_pct",
                                  "residual_rms_pct", "limit_pct"}
    assert phone.check()["limit_pct"] == pytest.approx(np.expm1(phone.check()["limit"]) * 100)


def test_interval_widens_for_networks_whose_errors_spread_more_synthetic():
    """Low-rank latencies with log noise of sd 0.01 on even networks and 0.15 on odd ones
    (the signature on even ones): the noisy networks get wider bounds and both kinds are
    covered about as nominal (here 87% / 93%); one factor per phone covered the quiet ones
    100% and the noisy ones 83%. Without the per-network scale (a file from before) the
    bounds are the phone-wide ones (synthetic)."""
    rng = np.random.default_rng(5)
    n_dev, n_net = 200, 40
    y = synthetic_lowrank(n_dev=n_dev, n_net=n_net, rank=2, seed=5)
    noisy = np.arange(n_net) % 2 == 1
    y = y * np.exp(rng.normal(0, 1, size=y.shape) * np.where(noisy, 0.15, 0.01))
    sig = [0, 2, 4, 6, 8, 10]
    groups = np.arange(n_dev) // 2   # two runs per phone model
    model = SignatureLatencyModel(rank=2, n_neighbors=0, robust=False).fit(y[:140], sig, groups=groups[:140])
    iv = model.predict_interval(y[140:, sig])
    inside = (y[140:] >= iv[..., 0]) & (y[140:] <= iv[..., 1])
    quiet = ~noisy
    quiet[sig] = False
    assert 0.8 < inside[:, noisy].mean() < 0.97, inside[:, noisy].mean()
    assert 0.8 < inside[:, quiet].mean() < 0.97, inside[:, quiet].mean()
    width = np.log(iv[..., 1] / iv[..., 0])
    assert np.median(width[:, noisy]) > 4 * np.median(width[:, quiet])
    assert model.interval_net_scale_.shape == (n_net,)
    # a subset of networks by name gets the same bounds as in the full prediction
    np.testing.assert_allclose(model.predict_interval(y[140:, sig], networks=["7", "12"]), iv[:, [7, 12]])
    # saved and loaded: the same bounds; a file without the scale: one factor per phone
    meta, arrays = model.to_state()
    np.testing.assert_array_equal(SignatureLatencyModel.from_state(meta, arrays).predict_interval(y[140:, sig]), iv)
    old = SignatureLatencyModel.from_state(meta, {k: v for k, v in arrays.items()
                                                  if k not in ("interval_net_scale_", "interval_scaled_residuals_")})
    assert old.interval_net_scale_ is None
    old_iv = old.predict_interval(y[140:, sig])
    pred = old.predict(y[140:, sig])
    np.testing.assert_allclose(old_iv, pred[..., None] * old.interval_factors(y[140:, sig])[:, None, :])
    old_inside = (y[140:] >= old_iv[..., 0]) & (y[140:] <= old_iv[..., 1])
    assert old_inside[:, quiet].mean() > 0.99 and old_inside[:, noisy].mean() < 0.86


def test_interval_coverage_is_kept_and_default_files_stay_readable_by_older_versions(tmp_path):
    """A file at the default 90% carries no new parameter (a session-6 reader, whose
    constructor lacks ``interval``, reads it and just has no intervals); another coverage
    is format 3, which older readers refuse with "upgrade" instead of a confusing error."""
    y = synthetic_lowrank()
    for interval, version in ((0.9, 1), (0.8, 3)):
        model = SignatureLatencyModel(rank=2, n_neighbors=0, interval=interval).fit(y[1:], [0, 1, 2])
        path = str(tmp_path / f"p{interval}.predictor")
        PhonePredictor(model, y[0, :3]).save(path)
        meta = read_meta(path)
        assert meta["format_version"] == version
        assert ("interval" in meta["model"]["params"]) == (interval != 0.9)
        back = PhonePredictor.load(path)
        assert back.model.interval == interval
        np.testing.assert_array_equal(back.predict_interval(), PhonePredictor(model, y[0, :3]).predict_interval())
    lo8, hi8 = PhonePredictor(model, y[0, :3]).model.interval_factors(y[0, :3])[0]
    lo9, hi9 = SignatureLatencyModel(rank=2, n_neighbors=0).fit(y[1:], [0, 1, 2]).interval_factors(y[0, :3])[0]
    assert lo9 <= lo8 < 1 < hi8 <= hi9


def test_newer_predictor_format_asks_to_upgrade(tmp_path):
    y = synthetic_lowrank()
    phone = PhonePredictor(SignatureLatencyModel(rank=2, n_neighbors=0).fit(y, [0, 1, 2]), y[0, :3])
    newer = str(tmp_path / "newer.predictor")
    phone.save(newer)
    with zipfile.ZipFile(newer) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(members["meta.json"])
    meta["format_version"] = 99
    members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(newer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(PredictorError, match="written by a newer opcost") as err:
        PhonePredictor.load(newer)
    assert "upgrade opcost" in err.value.hint


def test_latency_csv_and_signature_document():
    nets = ["rand001", "pub100"]
    assert list(parse_latency_csv("network,latency_ms\nrand001,1.5\npub100,20\nrand009,3\n", nets)) == [1.5, 20.0]
    with pytest.raises(UsageError, match="no latency for signature network\\(s\\) pub100"):
        parse_latency_csv("rand001,1.5\n", nets)
    with pytest.raises(UsageError, match="must be > 0 ms"):
        parse_latency_csv("rand001,0\npub100,2\n", nets)
    with pytest.raises(UsageError, match="listed twice"):
        parse_latency_csv("rand001,1\nrand001,2\npub100,2\n", nets)
    with pytest.raises(UsageError, match="x.csv holds no latencies \\(the file is empty\\)"):
        parse_latency_csv("", nets, "x.csv")
    with pytest.raises(UsageError, match="x.csv holds no latencies\n"):
        parse_latency_csv("network,latency_ms\n", nets, "x.csv")
    doc = signature_document(nets, "auto", ["A_0"], {"dataset": "ganesan2020"}, chosen_method="pqr")
    assert parse_signature_document(json.dumps(doc))["chosen_method"] == "pqr"
    with pytest.raises(UsageError, match="not JSON"):
        parse_signature_document("{", "s.json")
    with pytest.raises(UsageError, match="not an opcost signature file"):
        parse_signature_document("{}", "s.json")


def test_gbm_model_shapes(real):
    y = real.latency_ms
    sig = select_signature(y[:40], 5, "pqr")
    m = SignatureGBMModel(n_estimators=20).fit(y[:40], sig, real.network_features)
    pred = m.predict(y[40:43][:, sig], real.network_features)
    assert pred.shape == (3, 118) and np.all(pred > 0)


def _benchmark_module():
    return load_benchmark("signature_set")


def test_benchmark_split_holds_out_whole_phone_models(real):
    bench = _benchmark_module()
    groups = np.array(real.phone_models)
    for seed in range(3):
        test = bench.split(groups, seed)
        assert not set(groups[test]) & set(groups[~test])
        assert len(set(groups[test])) == round(0.3 * len(set(groups)))
    assert not np.array_equal(bench.split(groups, 0), bench.split(groups, 1))


def test_benchmark_leaves_out_a_broken_file_and_says_so(tmp_path, capsys):
    """A larger copy of the dataset with one unusable file (synthetic: truncated) still
    gives the benchmark's JSON, which names the file left out."""
    src = os.path.join(g20.default_data_dir(), "mobileData")
    names = sorted(f for f in os.listdir(src) if f.endswith(".txt"))[:24]
    write_ganesan2020_copy(tmp_path, names)
    (tmp_path / "mobileData" / "synthetic_truncated_0.txt").write_text("1.0,2.0\n" * 10)
    bench = _benchmark_module()
    assert bench.main(["--data", str(tmp_path), "--reps", "1", "--methods", "pqr+lowrank", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_device_runs"] == len(names)
    assert len(out["skipped_files"]) == 1 and "synthetic_truncated_0" in out["skipped_files"][0]
    assert 0 < out["methods"]["pqr+lowrank"]["mape_pct"] < 50


def synthetic_spread_matrix(n_dev=81, seed=6):
    """Low-rank latencies where about 8% of measurements were disturbed (x1.3-1.8) and a
    disturbed measurement's repeated runs are widely spread (synthetic)."""
    rng = np.random.default_rng(seed)
    y = synthetic_lowrank(n_dev=n_dev, n_net=60, rank=3, seed=seed)
    y = y * np.exp(rng.normal(0, 0.01, size=y.shape))
    spread = np.exp(rng.normal(np.log(0.02), 0.2, size=y.shape))
    bad = rng.random(y.shape) < 0.08
    y[bad] *= rng.uniform(1.3, 1.8, size=bad.sum())
    spread[bad] = rng.uniform(0.15, 0.4, size=bad.sum())
    return y, spread


def test_signature_value_with_spread_out_runs_counts_less_synthetic():
    y, spread = synthetic_spread_matrix()
    train = y[:80]
    sig = select_signature(train, 10, "pqr")
    clean = y[80] / np.where(spread[80] > 0.1, 1.55, 1.0)  # what the new phone would give undisturbed
    new_sig, new_spread = clean[sig].copy(), spread[80, sig].copy()
    new_sig[2] *= 1.6
    new_spread[2] = 0.3  # one signature network measured while the phone was disturbed
    m = SignatureLatencyModel(rank=3, n_neighbors=0, robust=False).fit(train, sig, run_spread=spread[:80])
    assert m.spread_weight_ > 0, m.cv_scores_  # inner CV finds that spread predicts error here
    keep = np.ones(60, bool)
    keep[sig] = False
    weighted = np.mean(np.abs(m.predict(new_sig, signature_spread=new_spread)[keep] / clean[keep] - 1))
    unweighted = np.mean(np.abs(m.predict(new_sig)[keep] / clean[keep] - 1))
    assert weighted < unweighted / 2, (weighted, unweighted)
    assert any(",spread_weight=" in key for key in m.cv_scores_)
    off = SignatureLatencyModel(rank=3, n_neighbors=0, robust=False, spread_weight=0).fit(
        train, sig, run_spread=spread[:80])
    assert off.spread_weight_ == 0 and off.spread_center_ is None
    np.testing.assert_array_equal(off.predict(new_sig, signature_spread=new_spread), off.predict(new_sig))


def test_run_spread_errors_and_unknown_values_synthetic():
    y, spread = synthetic_spread_matrix(n_dev=41, seed=7)
    m = SignatureLatencyModel(rank=3, n_neighbors=0, spread_weight=1.0).fit(y, [0, 1, 2], run_spread=spread)
    assert m.spread_weight_ == 1.0
    with pytest.raises(UsageError, match="run spreads of shape"):
        m.predict(y[0, :3], signature_spread=[0.1, 0.2])
    with pytest.raises(UsageError, match="must be >= 0"):
        m.predict(y[0, :3], signature_spread=[0.1, -0.2, 0.1])
    with pytest.raises(UsageError, match="run_spread has shape"):
        SignatureLatencyModel(rank=2, n_neighbors=0).fit(y, [0, 1, 2], run_spread=spread[:, :5])
    # an unknown spread (NaN) is weighted like a typical one
    typical = np.median(spread[:, :3], axis=0)
    np.testing.assert_allclose(m.predict(y[0, :3], signature_spread=[np.nan, typical[1], typical[2]]),
                               m.predict(y[0, :3], signature_spread=typical))
    # no spread known on the signature networks at all: fitted without weighting
    none = np.full_like(spread, np.nan)
    assert SignatureLatencyModel(rank=2, n_neighbors=0).fit(y, [0, 1, 2], run_spread=none).spread_weight_ == 0


def test_spread_weighted_predictor_round_trip_and_older_file(tmp_path):
    y, spread = synthetic_spread_matrix(n_dev=41, seed=8)
    m = SignatureLatencyModel(rank=3, n_neighbors=3, spread_weight=0.5).fit(y[1:], [0, 1, 2, 3], run_spread=spread[1:])
    sig_spread = spread[0, :4] * np.array([1, 10, 1, 1])
    phone = PhonePredictor(m, y[0, :4], signature_spread=sig_spread)
    assert not np.array_equal(phone.predict(), PhonePredictor(m, y[0, :4]).predict())
    path = str(tmp_path / "spread.predictor")
    phone.save(path)
    back = PhonePredictor.load(path)
    np.testing.assert_array_equal(back.predict(), phone.predict())
    np.testing.assert_array_equal(back.signature_spread, sig_spread)
    assert back.model.spread_weight_ == 0.5 and back.check() == phone.check()
    assert read_meta(path)["signature_run_spread_pct"]["1"] == pytest.approx(sig_spread[1] * 100, rel=1e-3)
    # a file from before spread weighting: no spread_weight_ in its meta, no reference arrays
    old = SignatureLatencyModel(rank=3, n_neighbors=0).fit(y[1:], [0, 1, 2, 3])
    meta, arrays = old.to_state()
    del meta["spread_weight_"], meta["params"]["spread_weight"]
    loaded = SignatureLatencyModel.from_state(meta, arrays)
    assert loaded.spread_weight_ == 0.0
    np.testing.assert_array_equal(loaded.predict(y[0, :4], signature_spread=sig_spread), old.predict(y[0, :4]))
    # a damaged file: weighting on, reference missing
    meta, arrays = m.to_state()
    del arrays["spread_center_"]
    with pytest.raises(PredictorError, match="run-spread reference"):
        SignatureLatencyModel.from_state(meta, arrays)


def test_dataset_run_spread_is_std_over_mean_of_regular_runs(real):
    assert real.run_spread.shape == real.latency_ms.shape
    assert np.all(np.isfinite(real.run_spread)) and np.all(real.run_spread >= 0)
    runs = g20.parse_latency_runs(open(g20.find_files(g20.default_data_dir())["latency"][0]).read())
    regular = np.asarray(runs[5][1:], dtype=float)
    assert real.run_spread[0, 5] == pytest.approx(regular.std() / regular.mean(), rel=1e-12)


def test_noise_floor_session_drift_finds_drift_in_row_order_synthetic():
    """Files whose measurements drift in blocks along the row order (a session state)
    are found, and shuffling the rows removes what neighbours explain (synthetic)."""
    bench = load_benchmark("signature_noise_floor")
    y = synthetic_lowrank(n_dev=40, n_net=118, rank=3, seed=9)
    y = y * np.exp(np.random.default_rng(10).normal(0, 0.02, size=y.shape))
    for i in range(8):  # throttles on and off every 5-9 networks, each file at its own times
        period = 5 + i % 5
        y[i] *= np.exp(np.where(((np.arange(118) + 3 * i) // period) % 2 == 0, 0.25, -0.25))
    out = bench.session_drift(y, [f"model{i}" for i in range(40)])
    shares = out["share_explained_by_row_neighbours"]
    assert sorted(int(i) for i in out["worst_files"]) == list(range(8))
    assert shares["worst_20pct_files"] > 0.5 > shares["worst_20pct_files_shuffled"]
    assert shares["other_files"] < 0.2
    assert out["oracle_plus_row_neighbours"]["mape_pct"] < out["oracle_leave_phone_model_out"]["mape_pct"]


@pytest.fixture(scope="module")
def boosted(real):
    """Fitted once on 2/3 of the real phone models, with and without the boosted correction."""
    g = np.array(real.phone_models)
    test = np.isin(g, sorted(set(g))[2::3])
    y = real.latency_ms
    sig = select_signature(y[~test], 10, "pqr", groups=g[~test])
    kw = dict(groups=g[~test], run_spread=real.run_spread[~test], network_features=real.network_features,
              feature_names=real.feature_names)
    on = SignatureLatencyModel(boost="auto").fit(y[~test], sig, **kw)
    off = SignatureLatencyModel(boost="off").fit(y[~test], sig, **kw)
    return {"on": on, "off": off, "sig": sig, "test": test}


def test_boosted_correction_is_chosen_and_helps_on_held_out_real_phones(real, boosted):
    on, off, sig, test = boosted["on"], boosted["off"], boosted["sig"], boosted["test"]
    assert on.boost_ is not None and on.boost_.shrink > 0, on.boost_scores_
    assert off.boost_ is None and on.rank_ == off.rank_ and on.spread_weight_ == off.spread_weight_
    keep = np.ones(118, bool)
    keep[sig] = False
    y = real.latency_ms[test]
    err = {}
    for name, m in (("on", on), ("off", off)):
        pred = m.predict(y[:, sig], signature_spread=real.run_spread[test][:, sig])
        err[name] = np.mean(np.abs(pred[:, keep] / y[:, keep] - 1))
    # Observed 4.79% with vs 4.78% without on these held-out runs: on one split it need not
    # help (benchmarks/signature_set.py compares over 10 splits). A sanity bound only:
    assert err["on"] < 1.05 * err["off"], err
    pred_on = on.predict(y[:, sig], signature_spread=real.run_spread[test][:, sig])
    pred_off = off.predict(y[:, sig], signature_spread=real.run_spread[test][:, sig])
    assert 0 < np.max(np.abs(np.log(pred_on / pred_off))) < 0.5
    # the structure path does not use it: identical with and without
    np.testing.assert_allclose(on.predict_structure(y[:2, sig], real.network_features[:5]),
                               off.predict_structure(y[:2, sig], real.network_features[:5]))


def test_boosted_predictor_round_trip_without_pickle_and_damaged_model(real, boosted, tmp_path):
    on, sig, test = boosted["on"], boosted["sig"], boosted["test"]
    i = int(np.flatnonzero(test)[0])
    phone = PhonePredictor(on, real.latency_ms[i, sig], signature_spread=real.run_spread[i, sig])
    path = str(tmp_path / "boosted.predictor")
    phone.save(path)
    with zipfile.ZipFile(path) as z:
        assert "estimator.pkl" not in z.namelist()
    back = PhonePredictor.load(path)
    np.testing.assert_array_equal(back.predict(), phone.predict())
    assert read_meta(path)["model"]["boost_"]["shrink"] == on.boost_.shrink
    assert read_meta(path)["format_version"] == 2  # a format-1 reader would drop the correction
    meta, arrays = on.to_state()
    arrays["boost.model_text"] = np.frombuffer(b"not a lightgbm model", dtype=np.uint8)
    broken = SignatureLatencyModel.from_state(meta, arrays)
    with pytest.raises(PredictorError, match="cannot be read by LightGBM"):
        broken.predict(real.latency_ms[i, sig])
    with pytest.raises(UsageError, match="boost must be 'auto' or 'off'"):
        SignatureLatencyModel(boost="yes").fit(real.latency_ms, sig)


def test_interval_covers_held_out_real_phones_and_widens_when_the_signature_fits_badly(real, boosted):
    on, sig, test = boosted["on"], boosted["sig"], boosted["test"]
    keep = np.ones(118, bool)
    keep[sig] = False
    y = real.latency_ms[test]
    spread = real.run_spread[test][:, sig]
    iv = on.predict_interval(y[:, sig], signature_spread=spread)
    pred = on.predict(y[:, sig], signature_spread=spread)
    assert iv.shape == pred.shape + (2,)
    assert np.all(iv[..., 0] < pred) and np.all(pred < iv[..., 1])
    inside = (y[:, keep] >= iv[:, keep, 0]) & (y[:, keep] <= iv[:, keep, 1])
    # 90% nominal; held-out phones of one split (signature_set.py measures over 10 splits)
    assert 0.8 < inside.mean() < 0.97, inside.mean()
    width = np.median(iv[:, keep, 1] / iv[:, keep, 0], axis=1)
    flagged = np.array([not c["consistent"] for c in on.check_signature(y[:, sig], signature_spread=spread)])
    assert 0 < flagged.sum() < len(flagged)
    assert np.median(width[flagged]) > np.median(width[~flagged])
    # a single phone gives its own (networks, 2) and the saved model the same bounds
    np.testing.assert_allclose(on.predict_interval(y[0, sig], signature_spread=spread[0]), iv[0])
    back = SignatureLatencyModel.from_state(*on.to_state())
    np.testing.assert_array_equal(back.predict_interval(y[:3, sig], signature_spread=spread[:3]), iv[:3])
    with pytest.raises(UsageError, match="interval must be a coverage between 0 and 1"):
        SignatureLatencyModel(interval=90).fit(real.latency_ms, sig)


def test_boosted_correction_learns_a_threshold_effect_synthetic():
    """Low-rank latencies plus a non-separable effect: +30% x relu(phone trait + network
    trait), the phone trait visible in its signature (two signature networks carry it);
    the network trait is seen only through the training phones' latencies (synthetic)."""
    rng = np.random.default_rng(11)
    n_dev, n_net = 120, 50
    y = synthetic_lowrank(n_dev=n_dev, n_net=n_net, rank=2, seed=11)
    a = rng.normal(0, 1, size=(n_dev, 1))
    b = rng.normal(0, 1, size=(1, n_net))
    b[0, :2] = 3.0   # the signature networks 0, 1 show the phone trait strongly
    y = y * np.exp(0.3 * np.maximum(a + b, 0) - 0.3 * np.maximum(b, 0))
    sig = [0, 1] + select_signature(y[:80, 2:], 6, "pqr")
    sig = sig[:2] + [i + 2 for i in sig[2:]]
    keep = np.ones(n_net, bool)
    keep[sig] = False
    err = {}
    for boost in ("auto", "off"):
        m = SignatureLatencyModel(rank=2, n_neighbors=0, robust=False, boost=boost).fit(y[:80], sig)
        err[boost] = np.mean(np.abs(m.predict(y[80:][:, sig])[:, keep] / y[80:][:, keep] - 1))
    assert err["auto"] < 0.7 * err["off"], err
