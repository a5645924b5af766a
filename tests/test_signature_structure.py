"""Networks no training device measured, predicted from their structure on a phone known
by its signature (host/modeler/signature_structure.py). Real-data tests use
data/ganesan2020; synthetic_additive builds latencies that are exactly additive in the
structure features (synthetic, seeded)."""
from __future__ import annotations

import numpy as np
import pytest

from host.modeler import data_ganesan2020 as g20
from host.modeler.signature import LatencyMatrix, PhonePredictor, SignatureLatencyModel, adapt_phone
from host.modeler.signature_structure import ADDITIVE_FEATURES, StructureLatentMap
from opcost.errors import PredictorError, UsageError


@pytest.fixture(scope="module")
def real():
    return g20.load(g20.default_data_dir())


def synthetic_additive(n_dev=30, n_net=80, seed=0):
    """Latency = sum over features of (device cost per unit) x (network amount): two
    device 'kinds' of cost vectors mixed per device (synthetic)."""
    rng = np.random.default_rng(seed)
    names = list(ADDITIVE_FEATURES) + ["extra_unused"]
    feats = rng.uniform(0.0, 50.0, size=(n_net, len(names)))
    kinds = rng.uniform(0.2, 2.0, size=(2, len(ADDITIVE_FEATURES)))
    mix = rng.uniform(0, 1, size=(n_dev, 1))
    cost = (mix * kinds[0] + (1 - mix) * kinds[1]) * rng.uniform(0.5, 2.0, size=(n_dev, 1))
    lat = cost @ feats[:, :len(ADDITIVE_FEATURES)].T + 1.0
    return lat, feats, names


def test_structure_map_follows_sklearn_conventions():
    m = StructureLatentMap(n_estimators=10)
    assert vars(m) == {"n_estimators": 10, "min_samples_leaf": 2, "random_state": 0}


def test_unseen_networks_of_an_additive_world_are_predicted_closely():
    lat, feats, names = synthetic_additive()
    train_nets, test_nets = np.arange(60), np.arange(60, 80)
    train_dev, new_dev = np.arange(25), np.arange(25, 30)
    sig = list(range(8))
    model = SignatureLatencyModel(rank=3, n_neighbors=0).fit(
        lat[np.ix_(train_dev, train_nets)], sig, network_features=feats[train_nets], feature_names=names)
    pred = model.predict_structure(lat[np.ix_(new_dev, sig)], feats[test_nets])
    err = np.abs(pred / lat[np.ix_(new_dev, test_nets)] - 1)
    assert pred.shape == (5, 20)
    assert np.median(err) < 0.01, np.median(err)


def _fit_without(real, unseen):
    """(model, held-out phone rows, signature) fitted without the networks ``unseen``
    and a quarter of the phone models."""
    models = sorted(set(real.phone_models))
    held = set(models[::4])
    test = np.array([m in held for m in real.phone_models])
    known = np.array([j for j in range(len(real.networks)) if j not in set(unseen)])
    sig = [5, 17, 33, 48, 61, 77, 101, 105, 110, 115]
    sig_local = [int(np.flatnonzero(known == s)[0]) for s in sig]
    model = SignatureLatencyModel(rank=3, n_neighbors=0).fit(
        real.latency_ms[~test][:, known], sig_local, network_features=real.network_features[known],
        feature_names=real.feature_names)
    return model, test, sig


def test_unseen_random_networks_on_held_out_real_phones(real):
    """ganesan2020: 20 random networks removed from training, 8 phone models held out."""
    unseen = np.arange(80, 100)
    model, test, sig = _fit_without(real, unseen)
    pred = model.predict_structure(real.latency_ms[test][:, sig], real.network_features[unseen])
    mape = float(np.mean(np.abs(pred / real.latency_ms[test][:, unseen] - 1)))
    # benchmarks/signature_unseen.py measures about 7% on random networks; FLOPs alone ~15%
    assert mape < 0.12, mape
    # 90% intervals, from the training phones' errors on networks left out of the structure map
    bounds = model.predict_structure_interval(real.latency_ms[test][:, sig], real.network_features[unseen])
    assert bounds.shape == pred.shape + (2,)
    assert np.all(bounds[..., 0] < pred) and np.all(pred < bounds[..., 1])
    truth = real.latency_ms[test][:, unseen]
    inside = float(np.mean((truth >= bounds[..., 0]) & (truth <= bounds[..., 1])))
    assert 0.8 < inside < 0.99, inside   # signature_unseen.py: 92.8% on random networks over 10 splits
    # wider than the intervals of networks known by name
    by_name = model.interval_factors(real.latency_ms[test][:, sig])
    from_structure = model.interval_factors(real.latency_ms[test][:, sig], structure=True)
    assert np.all(from_structure[:, 1] / from_structure[:, 0] > by_name[:, 1] / by_name[:, 0])


def test_structure_interval_scale_follows_the_spread_of_like_networks_and_distance_synthetic():
    """Training networks: a tight cluster with error spread 1 and a far group with spread
    e (log 1); a new network in the cluster gets about 1, one in the far group about e,
    and one beyond every training network no less than the far group (synthetic)."""
    from host.modeler.signature import _structure_log_scales

    rng = np.random.default_rng(3)
    near = rng.normal(0.0, 0.3, size=(40, 4))
    far = rng.normal(0.0, 0.3, size=(10, 4)) + 3.0
    train = np.vstack([near, far])
    log_spread = np.r_[rng.normal(0.0, 0.05, 40), rng.normal(1.0, 0.05, 10)]
    log_spread[0] = np.nan   # a signature network: no structure errors
    query = np.array([[0.0] * 4, [3.0] * 4, [6.0] * 4])
    train_scale, scale = _structure_log_scales(train, log_spread, query)
    assert train_scale.shape == (50,) and scale.shape == (3,)
    assert abs(scale[0]) < 0.3 and abs(scale[1] - 1.0) < 0.3, scale
    assert scale[2] > scale[1] - 0.05
    assert abs(train_scale[5]) < 0.3 and abs(train_scale[45] - 1.0) < 0.3   # each left out of its neighbours


def test_structure_intervals_widen_for_a_network_unlike_the_training_ones(real):
    """ganesan2020: random networks 80-99 and the public 100 and 114 (a structure no
    training network has) predicted from structure: the bounds differ by network and
    114's are wider than the median random network's; a file without the structure
    scale gives the phone-wide bounds."""
    unseen = np.r_[np.arange(80, 100), [100, 114]]
    model, test, sig = _fit_without(real, unseen)
    sig_ms = real.latency_ms[test][:, sig]
    bounds = model.predict_structure_interval(sig_ms, real.network_features[unseen])
    width = np.log(bounds[..., 1] / bounds[..., 0])
    assert np.all(np.isfinite(bounds)) and np.std(width[0]) > 0.05
    assert width[0, -1] > 1.2 * np.median(width[0, :20]), width[0]
    truth = real.latency_ms[test][:, unseen[:20]]
    inside = float(np.mean((truth >= bounds[:, :20, 0]) & (truth <= bounds[:, :20, 1])))
    assert 0.8 < inside < 0.99, inside
    model.structure_net_log_spread_ = None   # a file from before
    old = model.predict_structure_interval(sig_ms, real.network_features[unseen])
    np.testing.assert_allclose(old, model.predict_structure(sig_ms, real.network_features[unseen])[..., None]
                               * model.interval_factors(sig_ms, structure=True)[:, None, :])


def test_out_of_range_names_the_extrapolated_features():
    lat, feats, names = synthetic_additive()
    m = StructureLatentMap(n_estimators=10).fit(lat, feats, names, np.zeros((80, 2)), np.zeros((30, 2)))
    far = feats[:1].copy()
    far[0, names.index("mparams")] = 10_000.0
    assert m.out_of_range(far) == [["mparams"]]
    assert m.out_of_range(feats[:3]) == [[], [], []]


def test_predictor_file_round_trip_keeps_structure_predictions(real, tmp_path):
    full = LatencyMatrix.from_dataset(real)
    train = full.restrict(full.devices[:-3])
    sig = [real.networks[j] for j in (3, 20, 41, 66, 90, 104, 108, 112)]
    new = len(full.devices) - 1
    phone = adapt_phone(train, sig, full.latency_ms[new, [full.networks.index(n) for n in sig]],
                        {"method": "test"}, rank=3, n_neighbors=0)
    assert phone.knows_structure
    path = phone.save(str(tmp_path / "p.predictor"))
    loaded = PhonePredictor.load(path)
    a = phone.predict_structure(real.network_features[100:110])
    b = loaded.predict_structure(real.network_features[100:110])
    np.testing.assert_allclose(a, b, rtol=1e-12)
    np.testing.assert_allclose(phone.predict(), loaded.predict(), rtol=1e-12)
    np.testing.assert_allclose(phone.predict_structure_interval(real.network_features[100:110]),
                               loaded.predict_structure_interval(real.network_features[100:110]), rtol=1e-12)
    assert loaded.model.structure_net_log_spread_ is not None   # per-network structure scale kept
    loaded.model.structure_interval_residuals_ = None   # a file from before these intervals
    assert loaded.predict_structure_interval(real.network_features[:2]) is None
    with pytest.raises(PredictorError, match="no interval data for networks predicted from their structure"):
        loaded.model.predict_structure_interval(loaded.signature_latency_ms, real.network_features[:2])


def test_model_without_structure_says_how_to_get_it(real):
    y = real.latency_ms[:30]
    model = SignatureLatencyModel(rank=2, n_neighbors=0).fit(y, [0, 5, 9, 40])
    with pytest.raises(PredictorError) as exc:
        model.predict_structure(y[:1, [0, 5, 9, 40]], real.network_features[:2])
    assert "opcost adapt" in exc.value.hint


def test_bad_feature_input_is_a_usage_error():
    lat, feats, names = synthetic_additive()
    with pytest.raises(UsageError):
        StructureLatentMap().fit(lat, feats[:, :5], names[:5], np.zeros((80, 2)), np.zeros((30, 2)))
    m = StructureLatentMap(n_estimators=5).fit(lat, feats, names, np.zeros((80, 2)), np.zeros((30, 2)))
    with pytest.raises(UsageError):
        m.transform(feats[:2, :4])
    bad = feats[:1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(UsageError):
        m.transform(bad)


def test_unseen_benchmark_never_trains_on_the_networks_it_scores(monkeypatch, capsys):
    """benchmarks/signature_unseen.py: every scored network is absent from the training
    matrix of the fit that predicts it, and the JSON has the documented keys."""
    import json

    from bench_helpers import load_benchmark

    bench = load_benchmark("signature_unseen")
    seen = []
    orig = bench._predict_fold

    def spy(method, data, train, test, sig, te_nets, bounds=None):
        assert not set(te_nets.tolist()) & set(sig)
        seen.append(set(te_nets.tolist()))
        return orig(method, data, train, test, sig, te_nets, bounds)

    monkeypatch.setattr(bench, "_predict_fold", spy)
    assert bench.main(["--reps", "1", "--methods", "flops_scaling", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["methods"]["flops_scaling"]) == {"all", "random", "public"}
    assert len(seen) == bench.N_NETWORK_FOLDS
    assert len(set().union(*seen)) == sum(len(s) for s in seen) == 118 - 10


def test_too_few_networks_for_structure_intervals_is_said_not_crashed():
    lat, feats, names = synthetic_additive(n_dev=30, n_net=16)
    sig = list(range(8))   # 8 other networks: too few for 5 folds of 2+
    model = SignatureLatencyModel(rank=2, n_neighbors=0).fit(lat[:25], sig, network_features=feats,
                                                             feature_names=names)
    assert model.structure_interval_residuals_ is None
    assert model.predict_structure(lat[25:, sig], feats[:3]).shape == (5, 3)
    with pytest.raises(PredictorError, match="no interval data for networks predicted from their structure"):
        model.predict_structure_interval(lat[25:, sig], feats[:3])
    assert model.predict_interval(lat[25:, sig]).shape == (5, 16, 2)   # by name: still there
