"""Parsers of benchmark_model output, op-profiling CSV and the result protobuf.

Expected values are read off the fixture files (tests/fixtures/benchmark_model/,
see SOURCES.md there); microseconds in the text become milliseconds in the records.
"""
from __future__ import annotations

import pathlib
import struct

import pytest

from device_bench.parsers import (parse_benchmark_output, parse_op_profile_csv,
                                  parse_op_profile_text, parse_op_row, parse_result_file,
                                  result_to_e2e)
from device_bench.result_proto import decode_fields, read_varint
from opcost.errors import (BenchmarkFailed, BinaryError, DelegateError, OpcostError,
                           ParseError, RunTimeout)
from opcost.records import BenchmarkOutput

FIX = pathlib.Path(__file__).parent / "fixtures" / "benchmark_model"
ARGV = ["/data/local/tmp/opcost/benchmark_model", "--graph=/data/local/tmp/opcost/m.tflite",
        "--num_runs=50", "--warmup_runs=1"]


def fixture(name: str) -> str:
    return (FIX / name).read_bytes().decode("utf-8")


approx = pytest.approx


# --- real outputs ----------------------------------------------------------------------

def test_current_format_ti_am62x():
    out = parse_benchmark_output(fixture("real_current_format_ti_am62x.txt"))
    e = out.e2e
    # INFO: count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06
    #       std=2565 p5=1238753 median=1239807 p95=1247415
    assert e.count == 50
    assert e.mean_ms == approx(1240.27)
    assert e.first_ms == approx(1249.964)
    assert e.min_ms == approx(1238.588)
    assert e.max_ms == approx(1252.566)
    assert e.std_ms == approx(2.565)
    assert e.p5_ms == approx(1238.753)
    assert e.median_ms == approx(1239.807)
    assert e.p95_ms == approx(1247.415)
    # warm-up: INFO: count=1 curr=1357602 ...; summary: Init: 5579, First inference: 1357602
    assert e.warmup_count == 1
    assert e.warmup_mean_ms == approx(1357.602)
    assert e.warmup_first_ms == approx(1357.602)
    assert e.init_ms == approx(5.579)
    # Memory footprint delta ... init=6.36328 overall=109.832
    assert out.init_mem_mb == approx(6.36328)
    assert out.overall_mem_mb == approx(109.832)
    assert out.peak_mem_mb is None
    assert out.ops == [] and out.warnings == []
    assert out.delegate_name is None


def test_regular_run_is_not_the_warmup_even_when_argv_is_given():
    text = fixture("real_current_format_ti_am62x.txt")
    out = parse_benchmark_output(text, argv=ARGV, serial="abc", exit_code=0)
    assert out.e2e.count == 50 and out.e2e.mean_ms == approx(1240.27)
    # argv whose --num_runs matches the *first* block would pick it; prove the choice is argv-driven
    odd = parse_benchmark_output(text, argv=["bm", "--num_runs=1", "--warmup_runs=50"])
    assert odd.e2e.count == 1


def test_crlf_line_endings_from_adb_pty():
    out = parse_benchmark_output(fixture("synthetic_crlf_from_real_ti_am62x.txt"))
    assert out.e2e.count == 50 and out.e2e.mean_ms == approx(1240.27)
    assert out.overall_mem_mb == approx(109.832)


def test_logcat_prefixed_run_oppo_a3x():
    out = parse_benchmark_output(fixture("real_logcat_oppo_a3x_yolo26l_fp16.txt"))
    e = out.e2e
    # count=10 first=2653894 curr=2709263 min=2640862 max=3025403 avg=2.71985e+06 std=105101
    assert e.count == 10
    assert e.mean_ms == approx(2719.85)
    assert e.min_ms == approx(2640.862) and e.max_ms == approx(3025.403)
    assert e.std_ms == approx(105.101)
    assert e.median_ms == approx(2709.263)
    assert e.init_ms == approx(458.883)        # Init: 458883
    assert e.warmup_first_ms == approx(2732.148)
    assert e.warmup_count == 1
    # Replacing 1036 out of 1097 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 23 partitions
    assert out.delegate_name == "TfLiteXNNPackDelegate"
    assert (out.delegated_nodes, out.total_nodes) == (1036, 1097)
    assert out.fully_delegated is False
    assert out.init_mem_mb == approx(286.73) and out.overall_mem_mb == approx(337.0)
    assert out.model_size_mb == approx(49.9313)   # The input model file size (MB): 49.9313


def test_litert_tool_with_op_profile_tabs():
    out = parse_benchmark_output(fixture("real_litert_sme2_fc_fp32_op_profile_arm.txt"))
    e = out.e2e
    # regular: count=2112 first=463 curr=459 min=442 max=979 avg=464.545 std=13 p5=460 median=462 p95=478
    assert e.count == 2112 and e.mean_ms == approx(0.464545)
    assert e.p95_ms == approx(0.478)
    # warm-up ran 1055 times: count=1055 first=1033 ... avg=465.319
    assert e.warmup_count == 1055
    assert e.warmup_mean_ms == approx(0.465319)
    assert e.warmup_first_ms == approx(1.033)
    assert e.init_ms == approx(4.478)          # Initialized session in 4.478ms.
    assert out.model_size_mb == approx(3.27774)
    assert out.delegate_name == "TfLiteXNNPackDelegate"
    assert (out.delegated_nodes, out.total_nodes, out.fully_delegated) == (1, 1, True)
    # Run Order has 5 rows; "Top by Computation Time" repeats them and must not be added
    assert len(out.ops) == 5
    fc = out.ops[3]
    assert fc.node_type == "Fully Connected (NC, PF32) GEMM"
    assert fc.name == "Delegate/Fully Connected (NC, PF32) GEMM:1"
    assert (fc.first_ms, fc.avg_ms, fc.pct, fc.cdf_pct) == (0.538, 0.382, 92.948, 97.018)
    assert fc.times_called == 1 and fc.index == 1 and fc.delegated and fc.start_ms is None
    alloc = out.ops[1]
    assert alloc.node_type == "AllocateTensors" and alloc.mem_kb == 452.0
    assert alloc.times_called == 0 and not alloc.delegated
    # the profiler's own "Timings (microseconds): count=3166 ..." is not the e2e result
    assert e.count != 3166


def test_same_output_with_tabs_turned_into_spaces():
    real = parse_benchmark_output(fixture("real_litert_sme2_fc_fp32_op_profile_arm.txt"))
    spaced = parse_benchmark_output(fixture("synthetic_spaces_from_real_litert_sme2.txt"))
    assert spaced.e2e == real.e2e
    assert [o.to_dict() for o in spaced.ops] == [o.to_dict() for o in real.ops]


def test_new_layout_efficientdet_rows_and_no_timing_is_parse_error():
    text = fixture("real_op_profile_new_layout_xnnpack_efficientdet.txt")
    ops = parse_op_profile_text(text)
    # 3 run-order rows; the "Summary by node type" row (count 62) is not one of them
    assert [o.node_type for o in ops] == ["QUANTIZE", "Convolution (NHWC, QC8) IGEMM",
                                          "Convolution (NHWC, QC8) DWConv"]
    q, igemm, dw = ops
    assert (q.first_ms, q.avg_ms, q.pct, q.cdf_pct, q.times_called) == (0.199, 0.203, 1.328, 1.328, 1)
    assert q.name == "[tfl.quantize]:0" and q.index == 0 and not q.delegated
    assert igemm.delegated and igemm.name == "Delegate/Convolution (NHWC, QC8) IGEMM:0"
    assert dw.times_called == 13 and dw.avg_ms == 0.051 and dw.index == 1
    assert all(o.section == "run" and o.subgraph == 0 for o in ops)
    # the excerpt has only the profiler summary "Timings (microseconds): count=64 ..."
    with pytest.raises(ParseError) as ei:
        parse_benchmark_output(text, serial="S1", argv=ARGV)
    assert "no end-to-end timing" in ei.value.message
    assert ei.value.serial == "S1" and ei.value.argv == ARGV
    assert "171 nodes observed" in ei.value.output_tail


def test_tabs_variant_of_efficientdet_rows():
    assert ([o.to_dict() for o in parse_op_profile_text(fixture("synthetic_tabs_from_real_efficientdet.txt"))]
            == [o.to_dict() for o in parse_op_profile_text(
                fixture("real_op_profile_new_layout_xnnpack_efficientdet.txt"))])


def test_old_layout_issue42507_summary_and_peak_memory_lines():
    out = parse_benchmark_output(fixture("real_old_layout_issue42507.txt"))
    e = out.e2e
    # Inference timings in us: Init: 855, First inference: 49060, Warmup (avg): 34825.1, Inference (avg): 33209.4
    assert e.mean_ms == approx(33.2094)
    assert e.init_ms == approx(0.855)
    assert e.warmup_first_ms == approx(49.06)
    assert e.warmup_mean_ms == approx(34.8251)
    assert e.count == 0 and any("count unknown" in w for w in out.warnings)
    # Peak memory footprint (MB): init=0 overall=12.8672
    assert out.init_mem_mb == 0.0 and out.overall_mem_mb == approx(12.8672)
    assert out.ops == []  # only the table header is in the excerpt


def test_old_layout_nnapi_delegate_row():
    line = fixture("real_old_layout_nnapi_row_deeplabv3.txt").rstrip("\n")
    op = parse_op_row(line)
    assert op.node_type == "TfLiteNnapiDelegate"
    assert op.name == "[MobilenetV2/expanded_conv_16/project/add_fold, aspp0/Relu]:71"
    assert (op.start_ms, op.first_ms, op.avg_ms, op.pct, op.cdf_pct) == (0.0, 11.665, 11.422, 21.939, 21.939)
    assert op.mem_kb == 0.0 and op.times_called == 1 and op.index == 71 and op.delegated
    assert parse_op_row(line.expandtabs(8), with_start=True).to_dict() == op.to_dict()
    assert parse_op_row("Number of nodes executed: 171") is None


def test_tf_readme_mobilenet_table_with_start_column():
    text = fixture("real_tf_readme_mobilenet_op_profile_start_column.txt")
    out = parse_benchmark_output(text)
    # "Number of nodes executed: 31": the Run Order table only, not the Top-10 table
    assert len(out.ops) == 31
    first, last = out.ops[0], out.ops[-1]
    assert (first.node_type, first.start_ms, first.first_ms, first.avg_ms) == ("CONV_2D", 0.0, 4.269, 4.269)
    assert first.name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]" and first.times_called == 0
    assert (last.node_type, last.start_ms, last.avg_ms, last.cdf_pct) == ("SOFTMAX", 79.443, 0.029, 1.993)
    assert sum(o.node_type == "CONV_2D" for o in out.ops) == 15        # Summary by node type: 15
    assert sum(o.node_type == "DEPTHWISE_CONV_2D" for o in out.ops) == 13
    # e2e from "Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9"
    # (the profiler's "Timings (microseconds): count=50 ... avg=79732" is not used)
    assert out.e2e.mean_ms == approx(79.7609)
    assert out.e2e.init_ms == approx(38.467) and out.e2e.warmup_mean_ms == approx(83.235)


def test_legacy_summary_lines():
    out = parse_benchmark_output(fixture("real_legacy_summary_tf_readme.txt"))
    assert out.e2e.mean_ms == approx(79.7609)
    assert out.e2e.init_ms == approx(38.467) and out.e2e.warmup_mean_ms == approx(83.235)
    nostats = parse_benchmark_output(fixture("real_legacy_summary_nostats_yuenshome77.txt"))
    # Warmup: 76605.9, Init: 9933, no stats: 66767.6
    assert nostats.e2e.mean_ms == approx(66.7676)
    assert nostats.e2e.init_ms == approx(9.933) and nostats.e2e.warmup_mean_ms == approx(76.6059)
    assert any("no stats" in w for w in nostats.warnings)


# --- synthetic: everything the current tool can print at once ------------------------

def test_multi_subgraph_gpu_profile():
    out = parse_benchmark_output(fixture("synthetic_multi_subgraph_gpu_profile.txt"),
                                 argv=["bm", "--use_gpu=true", "--num_runs=20", "--warmup_runs=3"])
    e = out.e2e
    # count=20 curr=4000(all same) p5=4000 median=4000 p95=4000
    assert e.count == 20 and e.mean_ms == 4.0 and e.std_ms == 0.0
    assert e.min_ms == e.max_ms == e.first_ms == 4.0
    assert e.warmup_count == 3 and e.warmup_mean_ms == approx(5.7)
    assert e.init_ms == approx(812.5) and e.warmup_first_ms == approx(9.0)
    assert out.delegate_name == "TfLiteGpuDelegateV2"
    assert (out.delegated_nodes, out.total_nodes) == (13, 15)  # 10/12 in subgraph 0 + 3/3 in 1
    assert out.fully_delegated is False                          # "partially executed"
    assert out.peak_mem_mb == approx(61.75)
    assert (out.init_mem_mb, out.overall_mem_mb) == (40.5, 52.25)
    assert out.version == "2.16.1"
    assert any("--result_file_path" in w for w in out.warnings)
    by = [(o.section, o.subgraph, o.node_type, o.delegated) for o in out.ops]
    assert by == [
        ("init", 0, "ModifyGraphWithDelegate", False),
        ("init", 0, "AllocateTensors", False),
        ("run", 0, "TfLiteGpuDelegateV2", True),
        ("run", 0, "CAST", False),
        ("run", 1, "TfLiteGpuDelegateV2", True),
        ("run", 1, "CONVOLUTION_2D", True),   # "Delegate internal" table
    ]
    assert out.ops[2].name == "[conv1, conv2, add]:12" and out.ops[2].index == 12
    # the record round-trips through its dict form (it is stored as JSON)
    assert BenchmarkOutput.from_dict(out.to_dict()) == out


def test_delegate_pick_follows_requested_delegate():
    text = ("Replacing 5 out of 9 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 2 partitions.\n"
            "Replacing 9 out of 9 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions.\n"
            "Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
            "count=1 curr=100 p5=100 median=100 p95=100\n"
            "Running benchmark for at least 5 iterations and at least 1 seconds\n"
            "count=5 first=90 curr=80 min=80 max=90 avg=84 std=4\n")
    gpu = parse_benchmark_output(text, argv=["bm", "--use_gpu=true"])
    assert (gpu.delegate_name, gpu.delegated_nodes, gpu.fully_delegated) == ("TfLiteGpuDelegateV2", 9, True)
    xnn = parse_benchmark_output(text, argv=["bm", "--use_xnnpack=true"])
    assert (xnn.delegate_name, xnn.delegated_nodes, xnn.total_nodes) == ("TfLiteXNNPackDelegate", 5, 9)
    # stats without percentiles (older tools)
    assert gpu.e2e.count == 5 and gpu.e2e.mean_ms == approx(0.084) and gpu.e2e.median_ms is None


# --- failures become errors, never records ---------------------------------------------

@pytest.mark.parametrize("name, exc, needle", [
    ("synthetic_gpu_delegate_failed.txt", DelegateError, "TfLiteGpuDelegate Init"),
    ("synthetic_node_failed_to_prepare.txt", DelegateError, "Node number 7 (TfLiteNnapiDelegate) failed to prepare"),
    ("synthetic_op_not_found.txt", DelegateError, "Didn't find op for builtin opcode 'FULLY_CONNECTED'"),
    ("synthetic_model_missing.txt", BenchmarkFailed, "Could not open"),
    ("synthetic_binary_not_found.txt", BinaryError, "not found"),
    ("synthetic_truncated_after_warmup.txt", ParseError, "after the warm-up"),
    ("synthetic_truncated_during_regular.txt", ParseError, "regular runs were going"),
    ("synthetic_garbage.txt", ParseError, ""),
])
def test_failure_outputs_raise(name, exc, needle):
    text = fixture(name)
    with pytest.raises(exc) as ei:
        parse_benchmark_output(text, argv=ARGV, serial="R58M", exit_code=None)
    err = ei.value
    assert type(err) is exc
    assert needle in err.message
    assert err.serial == "R58M" and err.argv == ARGV
    assert err.output_tail and err.output_tail.splitlines()[-1] in text
    assert err.hint
    rendered = str(err)
    assert "R58M" in rendered and "what to do:" in rendered


def test_delegate_failure_wins_over_a_timing_line():
    text = fixture("real_current_format_ti_am62x.txt") + "ERROR: Failed to apply GPU delegate.\n"
    with pytest.raises(DelegateError):
        parse_benchmark_output(text, exit_code=0)


def test_default_delegate_fallback_is_only_a_warning():
    text = ("WARNING: Failed to apply the default TensorFlow Lite delegate indexed at 0.\n"
            + fixture("real_current_format_ti_am62x.txt"))
    out = parse_benchmark_output(text, exit_code=0)
    assert out.e2e.count == 50
    assert any("default TensorFlow Lite delegate" in w for w in out.warnings)


def test_exit_code_124_is_timeout_even_with_partial_output():
    text = fixture("synthetic_truncated_during_regular.txt")
    with pytest.raises(RunTimeout) as ei:
        parse_benchmark_output(text, argv=ARGV, serial="X", exit_code=124)
    assert ei.value.exit_code == 124 and "--timeout-s" in ei.value.hint


def test_nonzero_exit_code_is_failure_even_with_a_timing_line():
    with pytest.raises(BenchmarkFailed) as ei:
        parse_benchmark_output(fixture("real_current_format_ti_am62x.txt"), exit_code=139)
    assert ei.value.exit_code == 139 and "139" in ei.value.message
    with pytest.raises(BinaryError):
        parse_benchmark_output("", exit_code=127)


def test_benchmarking_failed_line_without_other_detail():
    with pytest.raises(BenchmarkFailed) as ei:
        parse_benchmark_output("INFO: STARTING!\nERROR: Benchmarking failed.\n", exit_code=1)
    assert not isinstance(ei.value, (DelegateError, RunTimeout))


def test_empty_output_and_zero_runs():
    with pytest.raises(ParseError) as ei:
        parse_benchmark_output("", argv=ARGV)
    assert "printed nothing" in ei.value.message
    zero = ("Running benchmark for at least 1 iterations\ncount=1 curr=5 p5=5 median=5 p95=5\n"
            "Running benchmark for at least 0 iterations\ncount=0\n"
            "Inference timings in us: Init: 1, First inference: 5, Warmup (avg): 5, Inference (avg): nan\n")
    with pytest.raises(BenchmarkFailed) as ei:
        parse_benchmark_output(zero)
    assert "count=0" in ei.value.message


def test_errors_are_opcost_errors_with_dict_form():
    try:
        parse_benchmark_output(fixture("synthetic_gpu_delegate_failed.txt"), argv=ARGV, serial="S")
    except OpcostError as err:
        d = err.to_dict()
        assert d["error"] == "DelegateError" and d["serial"] == "S" and d["argv"] == ARGV
        assert "Benchmarking failed." in d["output_tail"]
    else:  # pragma: no cover
        pytest.fail("no error raised")


# --- op-profiling CSV ----------------------------------------------------------------

def test_op_profile_csv_current_header():
    ops = parse_op_profile_csv(fixture("synthetic_op_profile.csv"))
    # 2 init rows + 4 run rows; "Top by Computation Time" / "Summary by node type" skipped
    assert [(o.section, o.node_type) for o in ops] == [
        ("init", "ModifyGraphWithDelegate"), ("init", "AllocateTensors"),
        ("run", "QUANTIZE"), ("run", "Convolution (NHWC, QC8) IGEMM"),
        ("run", "Convolution (NHWC, QC8) DWConv"), ("run", "TfLiteXNNPackDelegate")]
    igemm = ops[3]
    # the CSV writer turns ',' in names into tabs; they come back as ','
    assert igemm.name == "Delegate/Convolution (NHWC, QC8) IGEMM:0"
    assert (igemm.first_ms, igemm.avg_ms, igemm.pct, igemm.cdf_pct) == (0.398, 0.407, 2.65803, 3.98584)
    assert igemm.delegated and igemm.index == 0
    assert ops[2].delegated is False
    assert ops[4].times_called == 13
    tiny = ops[5]   # default ostream formatting can print scientific notation
    assert (tiny.first_ms, tiny.avg_ms, tiny.pct) == (1e-05, 2.5e-05, 0.000163)
    assert tiny.name == "[a, b]:5" and tiny.delegated
    assert ops[0].mem_kb == 1024.0


def test_op_profile_csv_start_column():
    ops = parse_op_profile_csv(fixture("synthetic_op_profile_start_column.csv"))
    assert [(o.node_type, o.start_ms, o.first_ms, o.avg_ms) for o in ops] == [
        ("CONV_2D", 0.0, 4.269, 4.269), ("DEPTHWISE_CONV_2D", 4.27, 2.15, 2.15)]


@pytest.mark.parametrize("text", ["", "   \n", "garbage, 1, 2\n", fixture("real_current_format_ti_am62x.txt")])
def test_op_profile_csv_garbage(text):
    with pytest.raises(ParseError):
        parse_op_profile_csv(text)


# --- result protobuf (--result_file_path) -----------------------------------------------
# No real result file was available: the bytes below are encoded in the test following
# tensorflow/lite/tools/benchmark/proto/benchmark_result.proto (synthetic).

def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _f32(number: int, value: float) -> bytes:
    return _key(number, 5) + struct.pack("<f", value)


def _vi(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _ld(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _synthetic_result() -> bytes:
    latency = (_f32(1, 12.5) + _f32(2, 11.0) + _f32(3, 20.25) + _f32(4, 0.75) + _f32(5, 12.25)
               + _f32(6, 11.5) + _f32(7, 14.0) + _f32(8, 300.5) + _f32(9, 40.0) + _f32(10, 13.0))
    memory = _vi(1, 2048) + _vi(2, 5120) + _f32(3, 9.5)
    misc = _f32(1, 3.27774) + _vi(2, 80) + _vi(3, 4) + _f32(4, 525.55)
    unknown = _key(15, 1) + (7).to_bytes(8, "little")   # a field from a newer proto: skipped
    return _ld(1, b"cpu_4threads") + _ld(2, latency) + _ld(3, memory) + _ld(4, misc) + unknown


def test_result_file_synthetic():
    r = parse_result_file(_synthetic_result())
    assert r["name"] == "cpu_4threads"
    assert (r["avg_ms"], r["min_ms"], r["max_ms"], r["stddev_ms"]) == (12.5, 11.0, 20.25, 0.75)
    assert (r["median_ms"], r["p5_ms"], r["p95_ms"]) == (12.25, 11.5, 14.0)
    assert (r["init_ms"], r["first_inference_ms"], r["average_warm_up_ms"]) == (300.5, 40.0, 13.0)
    assert (r["init_mem_mb"], r["overall_mem_mb"], r["peak_mem_mb"]) == (2.0, 5.0, 9.5)
    assert r["model_size_mb"] == approx(3.27774) and r["throughput_mb_per_s"] == approx(525.55)
    assert (r["num_runs"], r["num_warmup_runs"]) == (80, 4)
    e = result_to_e2e(r)
    assert (e.count, e.mean_ms, e.p95_ms, e.init_ms, e.warmup_count) == (80, 12.5, 14.0, 300.5, 4)


def test_result_file_from_protobuf_library_encoder():
    """Cross-check against an independent encoder (the protobuf package), when installed."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="opcost_test_benchmark_result.proto",
                                             package="opcost_test", syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto
    lat = fdp.message_type.add(name="LatencyMetrics")
    for i, n in enumerate(["avg_ms", "min_ms", "max_ms", "stddev_ms", "median_ms", "p5_ms",
                           "p95_ms", "init_ms", "first_inference_ms", "average_warm_up_ms"], 1):
        lat.field.add(name=n, number=i, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    mem = fdp.message_type.add(name="MemoryMetrics")
    mem.field.add(name="init_footprint_kb", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    mem.field.add(name="overall_footprint_kb", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    mem.field.add(name="peak_mem_mb", number=3, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    misc = fdp.message_type.add(name="MiscMetrics")
    misc.field.add(name="model_size_mb", number=1, type=F.TYPE_FLOAT, label=F.LABEL_OPTIONAL)
    misc.field.add(name="num_runs", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    misc.field.add(name="num_warmup_runs", number=3, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    res = fdp.message_type.add(name="BenchmarkResult")
    res.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    for num, (n, t) in enumerate([("latency_metrics", "LatencyMetrics"), ("memory_metrics", "MemoryMetrics"),
                                  ("misc_metrics", "MiscMetrics")], 2):
        res.field.add(name=n, number=num, type=F.TYPE_MESSAGE, type_name=f".opcost_test.{t}",
                      label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("opcost_test.BenchmarkResult"))
    msg = cls(name="gpu")
    msg.latency_metrics.avg_ms = 1.2402700185775757
    msg.latency_metrics.p95_ms = 1.247415
    msg.memory_metrics.init_footprint_kb = 6516
    msg.memory_metrics.overall_footprint_kb = -1024     # negative int64: 10-byte varint
    msg.misc_metrics.num_runs = 50
    r = parse_result_file(msg.SerializeToString())
    assert r["name"] == "gpu"
    assert r["avg_ms"] == approx(1.24027) and r["p95_ms"] == approx(1.247415)
    assert r["init_mem_mb"] == approx(6516 / 1024) and r["overall_mem_mb"] == -1.0
    assert r["num_runs"] == 50 and "peak_mem_mb" not in r


@pytest.mark.parametrize("data, needle", [
    (b"", "empty"),
    (_ld(2, _f32(1, 1.0))[:-2], "past the end"),      # truncated payload
    (b"\x12\x85", "ends inside a varint"),            # length varint cut
    (_key(2, 3), "wire type 3"),                      # groups are not used by this message
    (_ld(1, b"name-only"), "no latency metrics"),
    (_vi(2, 5), "should be a message"),
])
def test_result_file_errors(data, needle):
    with pytest.raises(ParseError) as ei:
        parse_result_file(data)
    assert needle in ei.value.message and ei.value.hint


def test_varint_reader():
    assert read_varint(b"\xac\x02", 0) == (300, 2)
    assert decode_fields(_vi(3, 1) + _vi(3, 2)) == {3: [(0, 1), (0, 2)]}


# --- wrapper-level situations ---------------------------------------------------------

def test_raw_adb_output_with_exit_marker():
    text = fixture("real_current_format_ti_am62x.txt") + "__OPCOST_EXIT__=0\n"
    out = parse_benchmark_output(text)
    assert out.e2e.count == 50
    with pytest.raises(BenchmarkFailed) as ei:
        parse_benchmark_output(fixture("synthetic_model_missing.txt") + "__OPCOST_EXIT__=1\n")
    assert ei.value.exit_code == 1 and "__OPCOST_EXIT__" not in ei.value.output_tail
    with pytest.raises(RunTimeout):
        parse_benchmark_output(fixture("synthetic_truncated_during_regular.txt") + "__OPCOST_EXIT__=124\n")


@pytest.mark.parametrize("text, needle", [
    ("/system/bin/sh: timeout: not found\n", "no `timeout` command"),
    ("/system/bin/sh: taskset: inaccessible or not found\n", "no `taskset` command"),
    ("taskset: sched_setaffinity: Invalid argument\n", "taskset could not pin"),
])
def test_wrapper_tools_failing(text, needle):
    with pytest.raises(BenchmarkFailed) as ei:
        parse_benchmark_output(text, exit_code=127 if "found" in text else 1)
    assert needle in ei.value.message and ei.value.hint


def test_logcat_threadtime_prefix_and_error_lines_as_warnings():
    # the OPPO run re-prefixed in logcat's "threadtime" layout, plus a benign GPU error line
    lines = fixture("real_logcat_oppo_a3x_yolo26l_fp16.txt").splitlines()
    text = "\n".join(ln.replace("I/tflite  ( 5395): ", "5395  5411 I tflite  : ") for ln in lines)
    text += "\nERROR: Falling back to OpenGL\n"
    out = parse_benchmark_output(text, exit_code=0)
    assert out.e2e.count == 10 and out.e2e.mean_ms == approx(2719.85)
    assert (out.delegated_nodes, out.total_nodes) == (1036, 1097)
    assert "Falling back to OpenGL" in out.warnings


def test_any_truncation_gives_a_record_or_an_opcost_error():
    """Cutting real outputs anywhere never crashes the parser with a non-Opcost error,
    and a cut that removes the regular-run stats line never yields a record."""
    import random

    rng = random.Random(7)
    for path in sorted(FIX.glob("real_*.txt")):
        text = path.read_text()
        cuts = sorted(set([0, len(text)] + [rng.randrange(len(text) + 1) for _ in range(40)]))
        for cut in cuts:
            part = text[:cut]
            try:
                out = parse_benchmark_output(part)
            except OpcostError:
                continue
            assert isinstance(out, BenchmarkOutput)
            assert out.e2e.mean_ms is not None and out.e2e.mean_ms > 0
            for o in parse_op_profile_text(part):
                assert o.node_type and o.name


def test_random_bytes_never_crash():
    import random

    rng = random.Random(11)
    alphabet = "count=0123456789.e+%\t\n :[]()=,RunigInfrectmsOD/"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
        try:
            parse_benchmark_output(text)
        except OpcostError:
            pass
        parse_op_profile_text(text)
        try:
            parse_op_profile_csv(text)
        except OpcostError:
            pass
        try:
            parse_result_file(text.encode())
        except OpcostError:
            pass


@pytest.mark.parametrize("cut_after", ["avg=1.24027e+0", "count=50 first=1249964 curr=12",
                                       "median=1239807 p95=1247415"])
def test_stats_line_cut_mid_line_is_parse_error(cut_after):
    text = fixture("real_current_format_ti_am62x.txt")
    part = text[:text.index(cut_after) + len(cut_after)]
    with pytest.raises(ParseError) as ei:
        parse_benchmark_output(part)
    assert "cut short" in ei.value.message


def test_gpu_completely_delegated_issue43541():
    out = parse_benchmark_output(fixture("real_gpu_complete_issue43541.txt"),
                                 argv=["bm", "--use_gpu=true", "--num_runs=50", "--warmup_runs=1"])
    e = out.e2e
    # count=50 first=119212 curr=118055 min=113737 max=124776 avg=119375 std=1948 (no percentiles)
    assert (e.count, e.mean_ms, e.std_ms, e.min_ms, e.max_ms) == (50, 119.375, 1.948, 113.737, 124.776)
    assert e.median_ms is None and e.p95_ms is None
    # warm-up ran 4 times: count=4 first=130565 ... avg=122373
    assert (e.warmup_count, e.warmup_mean_ms, e.warmup_first_ms) == (4, 122.373, 130.565)
    assert e.init_ms == approx(870.557)
    # "Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate."
    assert out.delegate_name == "GPU" and out.fully_delegated is True
    assert out.model_size_mb == approx(7.07479)


def test_real_output_cut_mid_stats_line_issue58379():
    with pytest.raises(ParseError) as ei:
        parse_benchmark_output(fixture("real_cut_mid_stats_windows_gpu_issue58379.txt"))
    assert "cut short" in ei.value.message
    assert ei.value.output_tail.endswith("count=600 f")


def test_nnapi_not_executed_issue56301():
    text = fixture("real_logcat_nnapi_not_executed_issue56301.txt")
    with pytest.raises(ParseError) as ei:          # the excerpt ends before any timing
        parse_benchmark_output(text)
    assert "no timing line" in ei.value.message
    # the same lines followed by the timing block of another real run (a synthetic join)
    joined = text + "\n" + fixture("real_current_format_ti_am62x.txt")
    out = parse_benchmark_output(joined, argv=["bm", "--use_nnapi=true"])
    assert out.delegate_name == "NNAPI" and out.fully_delegated is False and out.delegated_nodes == 0
    assert any(w.startswith("Though NNAPI delegate is explicitly applied") for w in out.warnings)


def test_delegate_counts_belong_to_the_requested_delegate():
    """XNNPACK's "Replacing" counts beside the requested delegate's "will not be executed"
    line (a synthetic join of two real outputs: the OPPO A3x XNNPACK run and the NNAPI line
    of tensorflow#56301) are not the requested delegate's: it took no node."""
    from device_bench.parsers import check_delegate, partial_delegate_note

    lines = fixture("real_logcat_oppo_a3x_yolo26l_fp16.txt").splitlines()
    nnapi = next(ln for ln in fixture("real_logcat_nnapi_not_executed_issue56301.txt").splitlines()
                 if "will not be executed" in ln)
    at = next(i for i, ln in enumerate(lines) if "Replacing" in ln) + 1
    joined = "\n".join(lines[:at] + [nnapi] + lines[at:])
    out = parse_benchmark_output(joined, argv=["bm", "--use_nnapi=true"])
    assert out.delegate_name == "NNAPI" and out.delegated_nodes == 0 and out.total_nodes is None
    with pytest.raises(DelegateError, match="the nnapi delegate executed no node"):
        check_delegate(out, "nnapi", serial="S")
    # the same output of a CPU run keeps XNNPACK's counts
    cpu = parse_benchmark_output(fixture("real_logcat_oppo_a3x_yolo26l_fp16.txt"), argv=["bm"])
    assert (cpu.delegated_nodes, cpu.total_nodes) == (1036, 1097)
    assert partial_delegate_note(cpu, "xnnpack") is None and check_delegate(cpu, "cpu") is None
    # a run asked for the GPU whose output names no delegate (older builds): said, not hidden
    # (a real CPU output paired with a GPU argv: synthetic)
    quiet = parse_benchmark_output(fixture("real_current_format_ti_am62x.txt"), argv=["bm", "--use_gpu=true"])
    note = check_delegate(quiet, "gpu")
    assert note and "does not say how much of the graph the gpu delegate took" in note
