"""benchmarks/litepred_side_by_side.py (LitePred's transfer re-implemented) on a slice of the
real li2024 GPU files in data/li2024 (copied from the li2024 public repository, MIT; see
data/li2024/LICENSE): finite positive predictions, only the target's chosen networks are
used, and the similar-device choice finds a pool device that is a scaled copy of the
target (that pool device is SYNTHETIC: real s10 rows with every time multiplied by 0.4)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench_helpers import load_benchmark, write_li2024_slice

# 15 small real CNNs covering every li2024 op type (as tests/test_nnmeter_side_by_side.py).
NETS = ["resnet10", "preresnet10", "resnet12", "preresnet12", "resnext14_16x4d", "resnext14_32x4d",
        "diracnet18v2", "fdmobilenet_wd2", "fdmobilenet_w1", "mobilenet_wd4", "mobilenet_w1",
        "seresnet10", "sepreresnet10", "squeezenet_v1_1", "mobilenetv2b_wd4"]
TARGET = "s10"


def _load_benchmark():
    return load_benchmark("litepred_side_by_side")


@pytest.fixture(scope="module")
def bench():
    return _load_benchmark()


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    from host.modeler import data_li2024

    return data_li2024.gpu_tables(write_li2024_slice(tmp_path_factory.mktemp("li2024_litepred"), NETS))


@pytest.fixture(scope="module")
def device_tables(tables):
    from host.modeler import data_li2024

    return {d: data_li2024.gpu_device_tables(tables, d) for d in ("mi8se", "pixel4", TARGET)}


@pytest.fixture(scope="module")
def pool(bench, device_tables):
    return {d: bench.PoolDevice(d).fit(**device_tables[d]) for d in ("mi8se", "pixel4")}


def _split(device_tables, n=6, seed=0):
    from host.modeler.transfer import choose_networks

    T = device_tables[TARGET]
    nets = sorted(T["networks"]["network"])
    train = choose_networks(nets, n, seed)
    held = sorted(set(nets) - set(train))
    return (T["ops"][T["ops"]["network"].isin(train)], T["networks"][T["networks"]["network"].isin(train)],
            T["ops"][T["ops"]["network"].isin(held)], held)


def test_kl_similarity_is_zero_for_a_scaled_copy(bench):
    y = np.array([0.5, 1.0, 2.0, 4.0])
    assert bench.kl_divergence(3.0 * y, y) == pytest.approx(0.0, abs=1e-12)
    assert bench.kl_divergence(y[::-1], y) > 0.1


def test_predictions_finite_positive_for_every_held_out_network(bench, pool, device_tables):
    tr_ops, tr_nets, te_ops, held = _split(device_tables)
    p = bench.LitePredTransfer(pool).fit(tr_ops, tr_nets).predict(te_ops)
    assert sorted(p.index) == held
    for col in ("litepred", "litepred+overhead"):
        v = p[col].to_numpy(dtype=float)
        assert np.all(np.isfinite(v)) and np.all(v > 0), col


def test_test_networks_times_are_never_read(bench, pool, device_tables):
    tr_ops, tr_nets, te_ops, held = _split(device_tables)
    lp = bench.LitePredTransfer(pool).fit(tr_ops, tr_nets)
    before = lp.predict(te_ops)
    changed = te_ops.copy()
    changed["latency_ms"] = changed["latency_ms"] * 7.0 + 1.0
    changed["kernel_name"] = "convolution_winograd_4x4_6x6_0"
    after = lp.predict(changed)
    pd.testing.assert_frame_equal(before, after)


def test_benchmark_run_ignores_changed_times_of_test_networks(bench, pool, tables):
    """Through the benchmark's own loop: the target's non-chosen networks get other op
    times and kernel names; the litepred results do not move."""
    from host.modeler.transfer import choose_networks

    kw = dict(ns=(5,), seeds=(0,), devices=[TARGET], methods=("litepred", "litepred+overhead"), pool=pool)
    a = bench.run(tables, **kw)
    nets = sorted(tables["e2e"][tables["e2e"]["device"] == TARGET]["network"])
    train = set(choose_networks(nets, 5, 0))
    t2 = dict(tables)
    times = tables["times"].copy()
    m = (times["device"] == TARGET) & ~times["network"].isin(train)
    times.loc[m, "latency_ms"] = times.loc[m, "latency_ms"] * 3.0
    times.loc[m, "kernel_name"] = "convolution_winograd_4x4_6x6_0"
    t2["times"] = times
    b = bench.run(t2, **kw)
    assert a["results"] == b["results"]
    r = a["results"][TARGET]["5"]
    for method in ("litepred", "litepred+overhead"):
        assert math.isfinite(r[method]["mape_pct"]) and r[method]["n_test_networks"] == len(nets) - 5


def test_picks_the_pool_device_that_is_a_scaled_copy_of_the_target(bench, device_tables):
    """SYNTHETIC pool device "s10_scaled": the real s10 rows, every op and end-to-end time
    x 0.4. Pool: it and the real pixel4. Target: s10's chosen networks (real)."""
    T = device_tables[TARGET]
    twin_ops = T["ops"].assign(latency_ms=T["ops"]["latency_ms"] * 0.4)
    twin_nets = T["networks"].assign(latency_ms=T["networks"]["latency_ms"] * 0.4)
    pool = {"s10_scaled": bench.PoolDevice("s10_scaled").fit(twin_ops, twin_nets),
            "pixel4": bench.PoolDevice("pixel4").fit(**device_tables["pixel4"])}
    tr_ops, tr_nets, _, _ = _split(device_tables)
    km = bench.LitePredTransfer(pool).fit(tr_ops, tr_nets).kernel_model_
    assert km.global_device_ == "s10_scaled"
    big = [t for t, c in km.type_counts_.items() if c >= bench.MIN_FINETUNE_SAMPLES]
    assert big
    for t in big:
        assert km.chosen_[t] == "s10_scaled", (t, km.similarity_[t])
        assert km.adaptation_[t] == "finetune"
