"""KernelLatencyRegressor(baseline="roofline"): synthetic kernels (latency = work /
throughput with a shape-dependent efficiency), no measurements."""
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from host.modeler.regressors import KernelLatencyRegressor, RooflineBaselineRegressor
from opcost.errors import PredictorError


def _synthetic_kernels(n, rng, flops_range):
    flops = np.exp(rng.uniform(np.log(flops_range[0]), np.log(flops_range[1]), n))
    bytes_ = flops / rng.uniform(5, 50, n)
    c_out = rng.choice([16, 32, 64, 128], n).astype(float)
    eff = 1.0 + 0.3 * (c_out < 32)  # narrow outputs run less efficiently
    lat = (flops / 50e6 + bytes_ / 10e6) * eff + 0.002  # ms
    df = pd.DataFrame({"kernel_type": "conv", "log_flops": np.log1p(flops), "log_bytes_in": np.log1p(bytes_ / 2),
                       "log_bytes_out": np.log1p(bytes_ / 2), "log_weights_bytes": np.log1p(0.0 * flops),
                       "c_out": c_out, "n_ops": 1.0})
    return df, lat


def test_roofline_extrapolates_where_trees_flatten():
    rng = np.random.default_rng(0)
    X, y = _synthetic_kernels(300, rng, (1e5, 1e8))
    Xt, yt = _synthetic_kernels(50, rng, (1e9, 1e10))  # 10-100x larger than any training kernel
    plain = KernelLatencyRegressor(random_state=0).fit(X, y)
    roof = KernelLatencyRegressor(baseline="roofline", random_state=0).fit(X, y)
    err_plain = np.mean(np.abs(plain.predict(Xt) / yt - 1))
    err_roof = np.mean(np.abs(roof.predict(Xt) / yt - 1))
    assert err_roof < 0.1 < err_plain
    # inside the training range both are fine
    Xi, yi = _synthetic_kernels(50, rng, (1e6, 1e7))
    assert np.mean(np.abs(roof.predict(Xi) / yi - 1)) < 0.1


def test_roofline_sub_model_is_an_sklearn_estimator():
    rng = np.random.default_rng(1)
    X, y = _synthetic_kernels(100, rng, (1e5, 1e8))
    cols = ["log_flops", "log_bytes_in", "log_bytes_out", "log_weights_bytes", "c_out"]
    m = RooflineBaselineRegressor(flops_index=0, bytes_index=[1, 2, 3])
    assert m.get_params()["flops_index"] == 0 and not hasattr(m, "coef_")
    fitted = m.fit(X[cols].to_numpy(), np.log(y))
    assert fitted is m and np.all(m.coef_ >= 0) and m.coef_[2] > 0
    assert np.mean(np.abs(np.exp(m.predict(X[cols].to_numpy())) / y - 1)) < 0.05
    assert not hasattr(clone(m), "coef_")


def test_roofline_intervals_and_unknown_types_still_work():
    rng = np.random.default_rng(2)
    X, y = _synthetic_kernels(120, rng, (1e5, 1e8))
    r = KernelLatencyRegressor(baseline="roofline", random_state=0).fit(X, y)
    Xu = X.head(3).assign(kernel_type="never_seen")
    d = r.predict_detail(Xu)
    assert d["unknown_type"].all() and np.all(d["pred"] > 0)
    assert np.all(d["lo"] <= d["pred"]) and np.all(d["pred"] <= d["hi"])


@pytest.mark.parametrize("kw, msg", [({"baseline": "magic"}, "unknown baseline"),
                                     ({"baseline": "roofline", "log_target": False}, "log_target")])
def test_bad_baseline_settings_are_predictor_errors(kw, msg):
    rng = np.random.default_rng(3)
    X, y = _synthetic_kernels(30, rng, (1e5, 1e8))
    with pytest.raises(PredictorError, match=msg):
        KernelLatencyRegressor(**kw).fit(X, y)


def test_roofline_needs_a_flops_column():
    rng = np.random.default_rng(4)
    X, y = _synthetic_kernels(30, rng, (1e5, 1e8))
    with pytest.raises(PredictorError, match="log_flops"):
        KernelLatencyRegressor(baseline="roofline", features=["c_out", "n_ops"]).fit(X, y)


def test_predictor_uses_roofline_on_cpu_runtimes_only():
    from host.modeler.predictor import LatencyPredictor

    assert LatencyPredictor(runtime="xnnpack")._kernel_baseline() == "roofline"
    assert LatencyPredictor(runtime="cpu")._kernel_baseline() == "roofline"
    assert LatencyPredictor(runtime="gpu")._kernel_baseline() == "none"
    assert LatencyPredictor(runtime="gpu", kernel_baseline="roofline")._kernel_baseline() == "roofline"
