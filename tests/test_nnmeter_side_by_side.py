"""benchmarks/nnmeter_side_by_side.py on a slice of the real li2024 files in data/li2024
(copied from the li2024 public repository, MIT; see data/li2024/LICENSE): JSON shape,
finite numbers; the nn-Meter part only where the optional nn-meter package is installed."""
from __future__ import annotations

import json
import math

import pytest

from bench_helpers import load_benchmark, write_li2024_slice

# 15 small real CNNs covering every li2024 op type (grouped conv, depthwise, concat,
# max/avg pool, mean, fully connected, 1x1-input SE convolutions).
NETS = ["resnet10", "preresnet10", "resnet12", "preresnet12", "resnext14_16x4d", "resnext14_32x4d",
        "diracnet18v2", "fdmobilenet_wd2", "fdmobilenet_w1", "mobilenet_wd4", "mobilenet_w1",
        "seresnet10", "sepreresnet10", "squeezenet_v1_1", "mobilenetv2b_wd4"]
METRICS = ("mape_pct", "acc10_pct", "acc5_pct", "n_networks")


def _load_benchmark():
    return load_benchmark("nnmeter_side_by_side")


@pytest.fixture(scope="module")
def li_slice(tmp_path_factory):
    return write_li2024_slice(tmp_path_factory.mktemp("li2024_nnm"), NETS)


def _finite_metrics(m):
    for k in METRICS:
        assert k in m, k
        assert math.isfinite(m[k]), (k, m[k])
    assert m["n_networks"] == len(NETS)
    assert 0 <= m["acc10_pct"] <= 100 and m["mape_pct"] >= 0


@pytest.mark.slow
def test_ours_only_when_nnmeter_is_missing(li_slice):
    bench = _load_benchmark()
    from host.modeler import data_li2024

    tables = data_li2024.gpu_tables(li_slice)
    out = bench.side_by_side(tables, None, devices=["mi8se"])
    info = bench.nnmeter_info(None, "ModuleNotFoundError: No module named 'nn_meter'")
    assert set(out["devices"]) == {"mi8se"}
    dev = out["devices"]["mi8se"]
    _finite_metrics(dev["full"])
    assert "nnmeter_method" not in dev
    assert info["available"] is False and f"nn-meter=={bench.NNMETER_VERSION}" in info["install"]


@pytest.mark.slow
def test_bad_data_dir_exits_2(tmp_path, capsys):
    bench = _load_benchmark()
    assert bench.main(["--data", str(tmp_path / "missing"), "--no-nnmeter"]) == 2
    assert "error:" in capsys.readouterr().err


def test_kernel_name_mapping_follows_the_delegate_names():
    bench = _load_benchmark()
    f = bench.nnmeter_op_from_kernel_name
    assert f("convolution_2d_16_linked_:_add_17_linked_:_relu_18", "CONV_2D") == "conv-bn-relu"
    assert f("convolution_winograd_4x4_6x6_1", "CONV_2D") == "conv-bn"
    assert f("depthwise_convolution_3_linked_:_hard_swish_4", "DEPTHWISE_CONV_2D") == "dwconv-bn-hswish"
    assert f("fully_connected_40", "CONV_2D") == "fc"  # a 1x1-input conv the GPU ran as FC
    assert f("mean_55", "AVERAGE_POOL_2D") == "global-avgpool"
    assert f("pooling_2d_3", "MAX_POOL_2D") == "maxpool"
    assert f("concat_9", "CONCATENATION") == "concat"
    row = {"h_in": 14.0, "c_in": 64.0, "c_out": 160.0, "n_inputs": 3.0, "kernel": float("nan"), "stride": float("nan")}
    assert bench.nnmeter_config("concat", row) == {"HW": 14.0, "CIN1": 64.0, "CIN2": 48.0, "CIN3": 48.0, "CIN4": 0.0}


@pytest.mark.slow
def test_nnmeter_side_by_side_json(li_slice, capsys):
    pytest.importorskip("nn_meter")
    bench = _load_benchmark()
    assert bench.main(["--data", li_slice, "--json", "--device", "pixel4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["nnmeter"]["available"] is True
    assert out["nnmeter"]["rf_configs"]["conv-bn-relu"]["n_estimators"] == 550  # nn-Meter's tflite_gpu config
    dev = out["devices"]["pixel4"]
    for method in ("full", "nnmeter_method", "nnmeter_method_rules"):
        _finite_metrics(dev[method])
    assert dev["nnmeter_method"]["nnmeter_headline_acc10_pct"] == dev["nnmeter_method"]["acc10_pct"]
    # squeezenet_v1_1 is the slice's only network with concatenations: in its test fold no
    # concat predictor exists, and nn-Meter's predict_model leaves such kernels out (0 ms).
    missing = dev["nnmeter_method"]["test_kernels_without_predictor"]
    assert set(missing) <= {"concat"} and all(isinstance(n, int) for n in missing.values())
    assert sum(dev["nnmeter_method"]["kernel_counts"].values()) > len(NETS)
    p = dev["paired_full_vs_nnmeter_method"]
    assert p["ours_better_on"] + p["nnmeter_better_on"] <= p["n_networks"] == len(NETS)
