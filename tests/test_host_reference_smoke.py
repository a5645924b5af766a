"""Smoke tests of benchmarks/host_reference.py that need no TensorFlow and measure nothing
(the accuracy target itself lives in the benchmark, never in unit tests)."""
import json

import pytest

from bench_helpers import load_benchmark
from host.store import Store


def _bench():
    return load_benchmark("host_reference")


def test_unknown_network_is_a_usage_error_as_json(capsys, tmp_path):
    bench = _bench()
    code = bench.main(["--json", "--store", str(tmp_path), "--networks", "mobilenet_v2,no_such_net"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert out["error"]["error"] == "UsageError"
    assert "no_such_net" in out["error"]["message"]
    assert "mobilenet_v2" in out["error"]["hint"]


def test_negative_count_is_a_usage_error(capsys, tmp_path):
    bench = _bench()
    code = bench.main(["--json", "--store", str(tmp_path), "--networks", "mobilenet_v2", "--mbv2", "-1"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and "--mbv2" in out["error"]["message"]


def test_cpu_mask_choices():
    bench = _bench()
    assert bench.cpu_mask_of("none") is None
    assert bench.cpu_mask_of("4") == "4"
    auto = int(bench.cpu_mask_of("auto"), 16)
    assert auto and auto & (auto - 1) == 0  # exactly one CPU


def test_empty_store_has_nothing_measured(tmp_path):
    bench = _bench()
    with Store.open(str(tmp_path / "s.sqlite")) as store:
        assert bench.runs_measured(store, "0" * 64, "abc", per_op=False) == 0
        assert bench.runs_measured(store, "0" * 64, "abc", per_op=True) == 0


@pytest.mark.parametrize("arg", ["all", "ALL"])
def test_all_networks_parse(arg):
    bench = _bench()
    a = bench.parse_args(["--networks", arg])
    assert a.networks.lower() == "all"
