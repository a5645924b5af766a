"""Op-profile rows -> graph ops (host/modeler/xnnpack_match.py, predictor.training_tables).

Real rows: the recorded excerpts listed in tests/fakeadb/recordings/SOURCES.md and
tests/fixtures/benchmark_model/SOURCES.md. Their models are not public, so the graphs they
are matched against are stand-ins built from what the excerpts themselves say (named
``standin``). The ``synthetic`` op profile below is written by us in the layout of the
real excerpt B (current benchmark_model, XNNPACK operator rows).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from device_bench.parsers import parse_op_profile_text
from host.modeler.xnnpack_match import load_operator_rules, match_op_rows, rows_from_records

HERE = Path(__file__).parent
RECORDED_XNNPACK = HERE / "fakeadb" / "recordings" / "benchmark_model_op_profiling_xnnpack_excerpt.txt"
EFFICIENTDET = HERE / "fixtures" / "benchmark_model" / "real_op_profile_new_layout_xnnpack_efficientdet.txt"
LITERT_FC = HERE / "fixtures" / "benchmark_model" / "real_litert_sme2_fc_fp32_op_profile_arm.txt"
LITERT_FC_SPACES = HERE / "fixtures" / "benchmark_model" / "synthetic_spaces_from_real_litert_sme2.txt"


def _rows(path_or_text) -> pd.DataFrame:
    text = path_or_text.read_text() if isinstance(path_or_text, Path) else path_or_text
    return rows_from_records(parse_op_profile_text(text))


def _graph(types) -> pd.DataFrame:
    return pd.DataFrame({"op_index": range(len(types)), "op_type": list(types)})


# --- real excerpts ------------------------------------------------------------------------
@pytest.mark.parametrize("path", [LITERT_FC, LITERT_FC_SPACES])
def test_real_litert_fc_rows_match_the_one_fc_op(path):
    """The log says 'Replacing 1 out of 1 node(s)' for fc_fp32.tflite: one FULLY_CONNECTED
    op (standin graph). XNNPACK ran it as a Static Reshape plus the GEMM: the reshape is
    layout work (ignored), the GEMM row is the op's time."""
    m = match_op_rows(_rows(path), _graph(["FULLY_CONNECTED"]), delegate="xnnpack")
    assert m.skipped is None
    assert m.latency_ms == {0: pytest.approx(0.382)}
    assert (m.n_assigned_rows, m.n_ignored_rows, m.n_delegate_rows) == (1, 1, 2)


def test_real_litert_fc_rows_refuse_a_graph_of_another_type():
    m = match_op_rows(_rows(LITERT_FC), _graph(["CONV_2D"]), delegate="xnnpack")
    assert m.latency_ms == {} and "cannot run graph op 0 (CONV_2D)" in m.skipped


@pytest.mark.parametrize("path", [RECORDED_XNNPACK, EFFICIENTDET])
def test_real_efficientdet_rows_merged_across_partitions_are_skipped(path):
    """Excerpt B: 'Delegate/Convolution (NHWC, QC8) DWConv:1' is called 13 times per run,
    i.e. operator 1 of 13 delegate partitions merged into one row: its time belongs to no
    single op, so no XNNPACK row of this measurement is used. The TFLite QUANTIZE row
    ([tfl.quantize]:0, node 0) is still an op's own time (standin graph: op 0 QUANTIZE)."""
    graph = _graph(["QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"])
    m = match_op_rows(_rows(path), graph, delegate="xnnpack")
    assert "13 times per run" in m.skipped and "merged" in m.skipped
    assert m.latency_ms == {0: pytest.approx(0.203)}
    assert m.n_skipped_rows == 2 and m.n_assigned_rows == 1


def test_real_rows_against_the_wrong_graph_assign_nothing():
    """A TFLite row whose node type disagrees with the graph: the file is not the one
    measured, so nothing of the measurement is used."""
    m = match_op_rows(_rows(RECORDED_XNNPACK), _graph(["CONV_2D", "CONV_2D"]), delegate="xnnpack")
    assert m.latency_ms == {} and "QUANTIZE but graph op 0 is a CONV_2D" in m.skipped
    assert m.n_skipped_rows == 3


# --- synthetic: two delegate partitions around an op XNNPACK does not take -------------------
SYNTHETIC_GRAPH = ["CONV_2D", "RELU", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "ARG_MAX",
                   "MEAN", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
_ROW = "{:>48}{:>17.3f}{:>16.3f}{:>15.3f}%{:>15.3f}%{:>18.3f}{:>17d}       {}"
SYNTHETIC_ROWS = [  # node type, avg ms, name  (times called 1)
    ("TfLiteXNNPackDelegate", 2.100, "[add]:10"),
    ("Convolution (NHWC, F32) IGEMM", 0.900, "Delegate/Convolution (NHWC, F32) IGEMM:0"),
    ("Convolution (NHWC, F32) DWConv", 0.300, "Delegate/Convolution (NHWC, F32) DWConv:1"),
    ("Convolution (NHWC, F32) GEMM", 0.700, "Delegate/Convolution (NHWC, F32) GEMM:2"),
    ("Add (ND, F32)", 0.100, "Delegate/Add (ND, F32):3"),
    ("ARG_MAX", 0.050, "[argmax]:5"),
    ("TfLiteXNNPackDelegate", 0.400, "[probs]:11"),
    ("Global Average Pooling (NWC, F32)", 0.020, "Delegate/Global Average Pooling (NWC, F32):0"),
    ("Copy (NC, X32)", 0.004, "Delegate/Copy (NC, X32):1"),
    ("Fully Connected (NC, F32) GEMM", 0.350, "Delegate/Fully Connected (NC, F32) GEMM:2"),
    ("SoftMax (NC, F32)", 0.010, "Delegate/SoftMax (NC, F32):3"),
]


def _synthetic_text(rows=SYNTHETIC_ROWS, times=None) -> str:
    head = ("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
            "============================== Run Order ==============================\n"
            "                                     [node type]          [first]        [avg ms]            [%]"
            "          [cdf%]          [mem KB]        [times called]  [Name]\n")
    lines = [_ROW.format(t, ms, ms, 1.0, 1.0, 0.0, (times or {}).get(i, 1), n) for i, (t, ms, n) in enumerate(rows)]
    return head + "\n".join(lines) + "\n"


def test_synthetic_two_partitions_match_in_execution_order():
    rows = _rows(_synthetic_text())
    assert len(rows) == len(SYNTHETIC_ROWS)  # the parser reads every synthetic row
    m = match_op_rows(rows, _graph(SYNTHETIC_GRAPH), delegate="xnnpack")
    assert m.skipped is None
    # conv + absorbed RELU = one XNNPACK operator; RESHAPE (a Copy here) gets no time.
    assert m.latency_ms == {0: 0.9, 1: 0.0, 2: 0.3, 3: 0.7, 4: 0.1, 5: 0.05, 6: 0.02, 8: 0.35, 9: 0.01}
    assert (m.n_assigned_rows, m.n_ignored_rows, m.n_skipped_rows) == (8, 1, 2)  # 2 partition rows


def _without(i):
    return [r for j, r in enumerate(SYNTHETIC_ROWS) if j != i]


@pytest.mark.parametrize("rows, times, graph, reason", [
    (_without(3), None, SYNTHETIC_GRAPH, "indices are not in execution order"),     # GEMM:2 lost
    (_without(4), None, SYNTHETIC_GRAPH, "4 graph kernel(s) but 3 XNNPACK"),        # last op of a partition lost
    (SYNTHETIC_ROWS, {2: 2}, SYNTHETIC_GRAPH, "called up to 2 times"),
    (SYNTHETIC_ROWS, None, [t if t != "DEPTHWISE_CONV_2D" else "MAX_POOL_2D" for t in SYNTHETIC_GRAPH],
     "cannot run graph op 2 (MAX_POOL_2D)"),
    (SYNTHETIC_ROWS, None, [t if t != "ARG_MAX" else "MUL" for t in SYNTHETIC_GRAPH],
     "ARG_MAX but graph op 5 is a MUL"),
    ([r if j != 5 else ("ARG_MAX", 0.05, "[argmax]:4") for j, r in enumerate(SYNTHETIC_ROWS)], None,
     SYNTHETIC_GRAPH, "ARG_MAX but graph op 4 is a ADD"),
    (SYNTHETIC_ROWS[:5] + SYNTHETIC_ROWS[6:], None, SYNTHETIC_GRAPH, "1 delegated run(s) of graph ops"),
])
def test_synthetic_mismatches_are_skipped_never_misassigned(rows, times, graph, reason):
    m = match_op_rows(_rows(_synthetic_text(rows, times)), _graph(graph), delegate="xnnpack")
    assert reason in m.skipped
    # Nothing from the XNNPACK rows is assigned when they do not line up.
    assert set(m.latency_ms) <= {5}


def test_synthetic_rows_of_other_delegates_are_not_matched():
    m = match_op_rows(_rows(_synthetic_text()), _graph(SYNTHETIC_GRAPH), delegate="gpu")
    assert m.latency_ms == {5: 0.05} and "gpu delegate operator row(s)" in m.skipped


def test_operator_table_covers_the_xnnpack_kernel_types():
    """Every op type that rules/xnnpack.yaml gives a kernel type is run by some operator."""
    from host.modeler.kernels import load_rules

    rules = load_operator_rules()
    runnable = set().union(*(ops for _, ops in rules["operators"]))
    for kt in load_rules("xnnpack")["kernel_types"]:
        assert set(kt["when"]["op_type"]) <= runnable, kt


# --- through the store: training_tables on a real .tflite with synthetic XNNPACK rows --------
_XNN_NAME = {"CONV_2D": "Convolution (NHWC, F32) IGEMM", "DEPTHWISE_CONV_2D": "Convolution (NHWC, F32) DWConv",
             "ADD": "Add (ND, F32)", "RELU": "Clamp (NC, F32)", "MEAN": "Global Average Pooling (NWC, F32)",
             "RESHAPE": "Copy (NC, X32)",
             "FULLY_CONNECTED": "Fully Connected (NC, F32) GEMM", "SOFTMAX": "SoftMax (NC, F32)"}


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> Path:
    pytest.importorskip("tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    L = tf.keras.layers
    x = inp = L.Input((16, 16, 3), batch_size=1)
    x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = L.DepthwiseConv2D(3, padding="same")(x)
    y = L.Conv2D(8, 1)(y)
    x = L.Add()([x, y])
    x = L.Reshape((8, 32, 8))(x)                  # RESHAPE: layout work, no time
    x = L.ReLU()(L.GlobalAveragePooling2D()(x))  # MEAN does not absorb it: its own kernel
    x = L.Dense(5, activation="softmax")(x)
    path = tmp_path_factory.mktemp("tiny") / "synthetic_tiny_xnnpack.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, x)).convert())
    return path


def _measurement(path: Path, op_rows, i: int):
    from opcost.records import (BenchmarkOutput, DeviceInfo, E2EStats, Measurement, ModelRef, OpRecord,
                                RunSpec, sha256_file)

    ops = [OpRecord(node_type=t, name=f"Delegate/{t}:{k}", avg_ms=ms, times_called=1, index=k,
                    section="run", delegated=True) for t, k, ms in op_rows]
    return Measurement(
        device=DeviceInfo(serial="SYNTH1", model="Synthetic Phone"),
        model=ModelRef(sha256=sha256_file(str(path)), name=path.stem, path=str(path)),
        spec=RunSpec(delegate="xnnpack", threads=1, op_profiling=True),
        output=BenchmarkOutput(e2e=E2EStats(count=10, mean_ms=5.0 + i), ops=ops))


def test_training_tables_uses_matched_xnnpack_rows_and_skips_the_rest(tiny_tflite, tmp_path, caplog):
    from host.modeler.kernels import group_ops, load_rules
    from host.modeler.predictor import graph_ops, training_tables
    from host.store import Store
    from models_zoo.graph import read_graph

    ops = graph_ops(read_graph(str(tiny_tflite)), "x")
    kernels = group_ops(ops, load_rules("xnnpack"))
    assert set(kernels["op_type"]) <= set(_XNN_NAME), set(kernels["op_type"])  # what the converter made
    assert "RESHAPE" in set(kernels["op_type"])
    good = [(_XNN_NAME[t], k, 0.1 * (k + 1)) for k, t in enumerate(kernels["op_type"])]
    with Store.open(str(tmp_path / "s.db")) as store:
        store.add_measurement(_measurement(tiny_tflite, good, 0))
        store.add_measurement(_measurement(tiny_tflite, good[:-1], 1))  # a row lost: counts differ
        with caplog.at_level(logging.WARNING):
            tables = training_tables(store, device="SYNTH1", delegate="xnnpack")
    assert "1 measurement(s) could not be matched" in caplog.text and "XNNPACK operator(s)" in caplog.text
    got = tables["ops"].set_index("op_index")["latency_ms"]
    for members, ktype, (_, _, ms) in zip(kernels["op_rows"], kernels["op_type"], good):
        idx = [int(ops.loc[r, "op_index"]) for r in members]
        if ktype == "RESHAPE":  # layout work: no time, left out of the kernel fit
            assert np.isnan(got[idx[0]])
            continue
        assert got[idx[0]] == pytest.approx(ms)  # the matched run only, not a median with the bad one
        assert all(got[j] == 0.0 for j in idx[1:])
    assert len(tables["networks"]) == 1 and tables["networks"]["latency_ms"].iloc[0] == 5.5
