"""Fusion rules vs single-op / pair timings (host/modeler/fusion_check.py)."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from host.modeler.fusion_check import (PairCase, agreement, check_rules, extra_cost_share, find_pairs,
                                       pairs_in_graph, rules_say_fused, summarize)
from models_zoo.graph import read_graph
from models_zoo.slicing import slice_ops
from opcost.errors import UsageError
from opcost.records import BenchmarkOutput, DeviceInfo, E2EStats, Measurement, ModelRef, RunSpec


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    """conv -> sigmoid; conv -> relu and add -> relu (their outputs are read twice, so
    the converter cannot fold the relu); concat -> relu."""
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    L = keras.layers
    inp = keras.Input((16, 16, 8), batch_size=1)
    c = L.Conv2D(8, 3, padding="same")(inp)
    s = L.Activation("sigmoid")(c)
    a = L.Add()([s, inp])
    r = L.ReLU()(a)
    o = L.Add()([r, a])
    c2 = L.Conv2D(8, 1)(o)
    o2 = L.Add()([L.ReLU()(c2), c2])
    cat = L.Concatenate()([o2, inp])
    out = L.ReLU()(cat)
    m = keras.Model(inp, out)
    path = tmp_path_factory.mktemp("fusion") / "pairs.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return str(path)


def _kinds(cases):
    return {c.kind for c in cases}


@pytest.mark.tf
def test_pairs_found_in_real_graph(pair_model):
    g = read_graph(pair_model)
    kinds = _kinds(pairs_in_graph(g, pair_model))
    assert {"CONV_2D->LOGISTIC", "CONV_2D->RELU", "ADD->RELU", "CONCATENATION->RELU"} <= kinds
    # ADDs with two activation inputs are producers, never consumers
    assert not any(k.endswith("->ADD") for k in kinds)


@pytest.mark.tf
def test_pair_slice_keeps_producer_output_internal(pair_model, tmp_path):
    g = read_graph(pair_model)
    case = next(c for c in pairs_in_graph(g, pair_model) if c.kind == "ADD->RELU")
    plain = read_graph(slice_ops(g, [case.producer_index, case.consumer_index], tmp_path / "a.tflite"))
    sinks = read_graph(slice_ops(g, [case.producer_index, case.consumer_index], tmp_path / "b.tflite",
                                 sinks_only=True))
    assert len(plain.outputs) == 2  # the add's output is also read outside the pair
    assert len(sinks.outputs) == 1
    assert [op.type for op in sinks.main_ops] == ["ADD", "RELU"]


@pytest.mark.tf
def test_rules_verdict_on_pair_slices(pair_model, tmp_path):
    g = read_graph(pair_model)
    by_kind = {c.kind: c for c in pairs_in_graph(g, pair_model)}
    verdicts = {}
    for kind, c in by_kind.items():
        p = slice_ops(g, [c.producer_index, c.consumer_index], tmp_path / f"{c.consumer_index}.tflite",
                      sinks_only=True)
        verdicts[kind] = {rt: rules_say_fused(p, rt) for rt in ("xnnpack", "cpu")}
    # rules/xnnpack.yaml, as measured by benchmarks/fusion_check.py: a standalone RELU
    # joins a convolution, not an ADD
    assert verdicts["CONV_2D->RELU"] == {"xnnpack": True, "cpu": False}
    assert verdicts["ADD->RELU"] == {"xnnpack": False, "cpu": False}
    assert verdicts["CONV_2D->LOGISTIC"] == {"xnnpack": False, "cpu": False}
    assert verdicts["CONCATENATION->RELU"] == {"xnnpack": False, "cpu": False}


def test_extra_cost_share():
    assert extra_cost_share(1.0, 1.0, 0.5) == pytest.approx(0.0)
    assert extra_cost_share(1.5, 1.0, 0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        extra_cost_share(1.0, 1.0, 0.0)


def _row(kind, share, rules, conclusive=True):
    return {"kind": kind, "extra_cost_share": share, "rules_fused": rules, "conclusive": conclusive}


def test_verdict_bands():
    from host.modeler.fusion_check import verdict

    assert verdict(-0.2) is True and verdict(0.29) is True
    assert verdict(0.5) is None
    assert verdict(0.71) is False and verdict(1.6) is False


def test_summarize_majority_and_inconclusive():
    rows = [_row("A->RELU", 0.05, True), _row("A->RELU", 0.2, True), _row("A->RELU", 0.9, True),
            _row("B->RELU", 1.0, True), _row("B->RELU", 0.95, True),
            _row("C->MUL", 0.1, False, conclusive=False), _row("D->ADD", 0.5, False)]
    s = summarize(rows)
    assert s["A->RELU"]["measured_fused"] is True and s["A->RELU"]["agree"] is True
    assert s["B->RELU"]["measured_fused"] is False and s["B->RELU"]["agree"] is False
    assert s["C->MUL"]["n"] == 0 and s["C->MUL"]["agree"] is None
    assert s["D->ADD"]["n"] == 1 and s["D->ADD"]["measured_fused"] is None and s["D->ADD"]["agree"] is None
    assert agreement({"kinds": s}) == (1, 2)


class TimedDevice:
    """A device whose latencies come from a table keyed by slice role (test double)."""

    serial = "timed"

    def __init__(self, ms):
        self.ms = ms
        self.calls = []

    def measure(self, model_path, spec, *, model_name=None):
        role = model_name.rsplit("-", 1)[1]
        self.calls.append((role, spec.delegate))
        t = self.ms[role]
        e2e = E2EStats(count=10, mean_ms=t, median_ms=t, min_ms=t, max_ms=t)
        return Measurement(device=DeviceInfo(serial=self.serial, kind="local"),
                           model=ModelRef(sha256="0" * 64, name=model_name), spec=spec,
                           output=BenchmarkOutput(e2e=e2e))


@pytest.mark.tf
@pytest.mark.parametrize("pair_ms,fused", [(1.05, True), (1.5, False)])
def test_check_rules_with_timed_device(pair_model, pair_ms, fused):
    cases = [c for c in find_pairs([pair_model]) if c.kind == "CONV_2D->RELU"]
    dev = TimedDevice({"producer": 1.0, "consumer": 0.5, "pair": pair_ms})
    res = check_rules(dev, "xnnpack", cases, rounds=2)
    k = res["kinds"]["CONV_2D->RELU"]
    assert k["measured_fused"] is fused
    assert k["rules_fused"] is True
    assert k["agree"] is fused
    assert len(dev.calls) == 3 * 2 * len(cases)
    assert {d for _, d in dev.calls} == {"xnnpack"}


class InterleavedDevice(TimedDevice):
    """A test double with per-round medians, as LocalDevice.measure_interleaved gives."""

    binary_path = None

    def __init__(self, rounds_ms):
        super().__init__({})
        self.rounds_ms = rounds_ms

    def measure_interleaved(self, model_paths, spec, *, rounds):
        self.calls.append(("interleaved", len(model_paths), rounds))
        return [self.rounds_ms[k][:rounds] for k in ("producer", "consumer", "pair")]


@pytest.mark.tf
def test_check_rules_uses_interleaved_rounds(pair_model):
    cases = [c for c in find_pairs([pair_model]) if c.kind == "CONV_2D->RELU"]
    # round 2 has a slow producer (drift); the median of the per-round shares ignores it
    dev = InterleavedDevice({"producer": [1.0, 2.0, 1.0], "consumer": [0.5, 0.5, 0.5],
                             "pair": [1.0, 1.05, 1.02]})
    res = check_rules(dev, "xnnpack", cases, rounds=3)
    row = res["cases"][0]
    assert row["timing"] == "interleaved"
    assert row["extra_cost_share"] == pytest.approx(0.0)  # median of 0.0, -1.9, 0.04
    assert res["kinds"]["CONV_2D->RELU"]["agree"] is True
    assert dev.calls == [("interleaved", 3, 3)] * len(cases)


@pytest.mark.tf
def test_local_measure_interleaved_real(pair_model, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from device_bench.local import LocalDevice

    g = read_graph(pair_model)
    case = next(c for c in pairs_in_graph(g, pair_model) if c.kind == "CONV_2D->RELU")
    paths = [slice_ops(g, [case.producer_index], tmp_path / "p.tflite"),
             slice_ops(g, [case.consumer_index], tmp_path / "c.tflite")]
    spec = RunSpec(delegate="xnnpack", num_runs=5, min_secs=0.01, warmup_runs=1, warmup_min_secs=0.01)
    out = LocalDevice().measure_interleaved(paths, spec, rounds=3)
    assert len(out) == 2 and all(len(r) == 3 for r in out)
    assert all(v > 0 for r in out for v in r)


def test_check_rules_refuses_empty_and_wrong_delegate():
    with pytest.raises(UsageError):
        check_rules(TimedDevice({}), "xnnpack", [])
    case = PairCase("x.tflite", 0, 1, "ADD", "RELU", 4)
    with pytest.raises(UsageError):
        check_rules(TimedDevice({}), "xnnpack", [case], spec=RunSpec(delegate="cpu"))


def test_cli_missing_model(tmp_path):
    from host.cli import main

    r = CliRunner().invoke(main, ["rules", "check", str(tmp_path / "nope.tflite")])
    assert r.exit_code == 2
    assert "no such model file" in r.output


@pytest.mark.tf
def test_cli_real_local_run(pair_model):
    """A real (short) measurement on this host; the verdicts depend on the machine,
    so only the shape of the answer is checked."""
    pytest.importorskip("ai_edge_litert")
    from host.cli import main

    r = CliRunner().invoke(main, ["rules", "check", pair_model, "--runtime", "cpu", "--per-kind", "1",
                                  "--rounds", "1", "--json"])
    assert r.exit_code in (0, 1), r.output
    import json

    res = json.loads(r.stdout)
    assert res["runtime"] == "cpu" and res["device"] == "local"
    assert {"CONV_2D->LOGISTIC", "CONV_2D->RELU", "ADD->RELU", "CONCATENATION->RELU"} <= set(res["kinds"])
    for case in res["cases"]:
        assert case["producer_ms"] > 0 and case["consumer_ms"] > 0 and case["pair_ms"] > 0
        assert case["rules_fused"] is False  # the cpu rules fuse nothing
    assert os.path.isfile(pair_model)
