"""Tests of the host CPU runner (device_bench/local.py, device_bench/local_worker.py).

The measuring tests time a tiny Conv/DepthwiseConv/Mean/FC model built here with
TensorFlow (marked ``tf``) in real child processes, with small time budgets.
"""
from __future__ import annotations

import os
import stat
import sys
import textwrap

import pytest

from device_bench import local_worker as lw
from device_bench.local import (LocalDevice, group_clusters, parse_cpu_list, parse_cpuinfo)
from opcost.errors import (BenchmarkFailed, BinaryError, DelegateError, ModelFileError, RunTimeout,
                           UsageError)
from opcost.interfaces import Device
from opcost.records import RunSpec

FAST = dict(num_runs=10, min_secs=0.05, warmup_runs=1, warmup_min_secs=0.01, timeout_s=60)

# Recorded from this project's dev VM (`head -12 /proc/cpuinfo`, processor 0 and 1 headers).
CPUINFO_X86_RECORDED = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
cpu MHz\t\t: 2596.134

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
"""


# ---------------------------------------------------------------- pure helpers


def test_summarize_ms_matches_hand_computed_stats():
    runs = [4.0, 1.0, 3.0, 2.0]
    s = lw.summarize_ms(runs, warmup_ms=[10.0, 6.0], init_ms=7.5)
    assert s["count"] == 4
    assert s["mean_ms"] == pytest.approx(2.5)
    assert s["std_ms"] == pytest.approx(1.118033988749895)  # population std
    assert (s["min_ms"], s["max_ms"], s["median_ms"]) == (1.0, 4.0, 2.5)
    assert s["first_ms"] == 10.0  # first inference ever = first warm-up run
    assert s["warmup_mean_ms"] == 8.0 and s["warmup_count"] == 2
    assert s["init_ms"] == 7.5
    no_warm = lw.summarize_ms([5.0, 3.0, 4.0])
    assert no_warm["first_ms"] == 5.0 and no_warm["median_ms"] == 4.0 and no_warm["warmup_mean_ms"] is None


def test_percentile_nearest_uses_benchmark_model_index_rule():
    vals = list(range(100))
    assert lw.percentile_nearest(vals, 5) == 5
    assert lw.percentile_nearest(vals, 95) == 95
    assert lw.percentile_nearest([3.0], 95) == 3.0
    with pytest.raises(ValueError):
        lw.percentile_nearest([], 5)


class FakeClock:
    """Each reading advances 1 ms; each invoke advances ``step_ns`` more."""

    def __init__(self, step_ns: int) -> None:
        self.now = 0
        self.step_ns = step_ns

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now

    def invoke(self) -> None:
        self.now += self.step_ns


def test_timed_loop_honours_min_runs_min_secs_and_max_secs():
    c = FakeClock(step_ns=0)
    runs = lw.timed_loop(c.invoke, min_runs=5, min_secs=0.0, max_secs=10, clock_ns=c)
    assert len(runs) == 5
    c = FakeClock(step_ns=10_000_000)  # 10 ms per run (+ clock reads)
    runs = lw.timed_loop(c.invoke, min_runs=1, min_secs=0.1, max_secs=10, clock_ns=c)
    assert 7 <= len(runs) <= 10 and all(r >= 10.0 for r in runs)
    c = FakeClock(step_ns=100_000_000)  # 100 ms per run, but max 0.25 s
    runs = lw.timed_loop(c.invoke, min_runs=1000, min_secs=0.0, max_secs=0.25, clock_ns=c)
    assert 2 <= len(runs) <= 4


def test_mask_and_proc_status_and_cpu_parsers():
    assert lw.mask_to_cpus("f0") == [4, 5, 6, 7]
    assert lw.mask_to_cpus("1") == [0]
    st = lw.read_proc_status("Name:\tpython\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\nThreads:\t3\n")
    assert st == {"VmRSS": 10240, "VmHWM": 20480, "Threads": 3}
    assert parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6]
    info = parse_cpuinfo(CPUINFO_X86_RECORDED)
    assert info == {"model": "AMD EPYC", "cpus": 2}
    assert parse_cpuinfo("") == {"model": None, "cpus": None}
    assert group_clusters({0: 1800000, 1: 1800000, 2: 2400000}) == [
        {"cpus": [0, 1], "max_khz": 1800000}, {"cpus": [2], "max_khz": 2400000}]


def _synthetic_sysfs(root):
    """A synthetic /proc + /sys tree: 4 CPUs in two clusters, one thermal zone."""
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text(CPUINFO_X86_RECORDED)
    cpu = root / "sys" / "devices" / "system" / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "online").write_text("0-3\n")
    for i, mx in enumerate([1800000, 1800000, 2400000, 2400000]):
        fq = cpu / f"cpu{i}" / "cpufreq"
        fq.mkdir(parents=True)
        (fq / "cpuinfo_max_freq").write_text(f"{mx}\n")
        (fq / "scaling_cur_freq").write_text(f"{mx // 2}\n")
        (fq / "scaling_governor").write_text("schedutil\n")
    tz = root / "sys" / "class" / "thermal" / "thermal_zone0"
    tz.mkdir(parents=True)
    (tz / "type").write_text("x86_pkg_temp\n")
    (tz / "temp").write_text("47500\n")


def test_info_and_state_from_synthetic_sysfs(tmp_path):
    _synthetic_sysfs(tmp_path)
    dev = LocalDevice(root=str(tmp_path))
    info = dev.info()
    assert info.kind == "local" and info.serial == "local" and info.model == "AMD EPYC"
    assert info.cpu_clusters == [{"cpus": [0, 1], "max_khz": 1800000}, {"cpus": [2, 3], "max_khz": 2400000}]
    assert info.extra["cores"] == 4 and info.extra["python"] and "hostname" in info.extra
    st = dev.state()
    assert st.governors == {f"cpu{i}": "schedutil" for i in range(4)}
    assert st.cur_freq_khz["cpu2"] == 1200000 and st.max_freq_khz["cpu3"] == 2400000
    assert st.temps_c == {"x86_pkg_temp": 47.5} and st.max_temp_c() == 47.5


def test_state_on_empty_tree_and_real_host_never_fails(tmp_path):
    st = LocalDevice(root=str(tmp_path)).state()
    assert st.governors == {} and st.temps_c == {} and st.timestamp
    real = LocalDevice()
    assert isinstance(real, Device)
    real.state()
    assert real.info().abi


def test_constructor_does_no_io(tmp_path):
    LocalDevice(binary_path=str(tmp_path / "does-not-exist"), root=str(tmp_path / "nope"))


# ---------------------------------------------------------------- errors without a model run


def test_worker_request_errors_are_reported_not_raised(tmp_path):
    bad_mask = lw.run_request({"cpu_mask": "100000000", "jobs": []})
    assert bad_mask["ok"] is False and bad_mask["error"]["kind"] == "usage"
    missing = lw.run_request({"jobs": [{"model_path": str(tmp_path / "gone.tflite"), "spec": {}}]})
    assert missing["ok"] is False and missing["error"]["kind"] == "model" and missing["error"]["job"] == 0
    gpu = lw.run_request({"jobs": [{"model_path": str(tmp_path / "x.tflite"), "spec": {"delegate": "gpu"}}]})
    assert gpu["error"]["kind"] == "delegate"


def test_bad_model_files_give_model_file_error(tmp_path):
    dev = LocalDevice()
    with pytest.raises(ModelFileError, match="not found"):
        dev.measure(str(tmp_path / "missing.tflite"), RunSpec(**FAST))
    txt = tmp_path / "notes.tflite"
    txt.write_text("this is not a model at all")
    with pytest.raises(ModelFileError, match="not a TFLite model") as e:
        dev.measure(str(txt), RunSpec(**FAST))
    assert e.value.hint


def test_truncated_flatbuffer_fails_in_child_with_clear_error(tmp_path):
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 16)
    with pytest.raises((ModelFileError, BenchmarkFailed)) as e:
        LocalDevice().measure(str(bad), RunSpec(**FAST))
    assert e.value.argv and "device_bench.local_worker" in " ".join(e.value.argv)
    assert e.value.hint


@pytest.fixture
def header_only_model(tmp_path):
    """Synthetic: only a flatbuffer header with the TFLite identifier, enough for errors
    that must fire before the model is loaded."""
    path = tmp_path / "synthetic_header_only.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 24)
    return str(path)


def test_gpu_and_nnapi_are_delegate_errors(header_only_model):
    for d in ("gpu", "nnapi"):
        with pytest.raises(DelegateError, match="not available"):
            LocalDevice().measure(header_only_model, RunSpec(delegate=d, **FAST))


def test_cpu_mask_outside_host_is_usage_error(header_only_model):
    with pytest.raises(UsageError, match="selects no CPU"):
        LocalDevice().measure(header_only_model, RunSpec(cpu_mask="100000000", **FAST))


def test_child_crash_is_benchmark_failed_with_exit_code(header_only_model):
    dev = LocalDevice(worker_argv=[sys.executable, "-c",
                                   "import os,sys; sys.stderr.write('boom in native code\\n'); os.abort()"])
    with pytest.raises(BenchmarkFailed) as e:
        dev.measure(header_only_model, RunSpec(**FAST))
    assert e.value.exit_code is not None and e.value.exit_code != 0
    assert "boom in native code" in e.value.output_tail


def test_hung_child_is_killed_at_timeout(header_only_model):
    dev = LocalDevice(worker_argv=[sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(RunTimeout) as e:
        dev.measure(header_only_model, RunSpec(num_runs=1, timeout_s=0.5))
    assert e.value.argv[0] == sys.executable


# ---------------------------------------------------------------- real measurements


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    m = keras.Sequential([
        keras.Input((32, 32, 3), batch_size=1),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.DepthwiseConv2D(3),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    path = tmp_path_factory.mktemp("local") / "tiny_conv.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return str(path)


def _plausible(e2e, num_runs):
    assert e2e.count >= num_runs
    assert 0 < e2e.min_ms <= e2e.median_ms <= e2e.max_ms
    assert e2e.min_ms <= e2e.mean_ms <= e2e.max_ms
    assert e2e.p5_ms <= e2e.p95_ms and e2e.std_ms >= 0
    assert e2e.init_ms > 0 and e2e.first_ms > 0 and e2e.warmup_count >= 1


@pytest.mark.tf
def test_measure_xnnpack_and_cpu(tiny_model):
    dev = LocalDevice()
    x = dev.measure(tiny_model, RunSpec(delegate="xnnpack", **FAST), model_name="tiny")
    c = dev.measure(tiny_model, RunSpec(delegate="cpu", **FAST))
    for m in (x, c):
        _plausible(m.output.e2e, FAST["num_runs"])
        assert m.output.total_nodes == 4
        assert m.runtime["name"] == "litert-interpreter" and m.runtime["version"]
        assert m.device.kind == "local" and m.model.name in ("tiny", "tiny_conv")
        assert m.model.sha256 and m.wall_s > 0 and m.state_before is not None
        assert m.output.overall_mem_mb is not None and m.output.overall_mem_mb >= 0
        assert m.output.init_mem_mb is not None
        # Peak RSS increase over the whole run cannot be below the increase after init,
        # and the child's absolute peak RSS holds at least that increase.
        assert m.output.overall_mem_mb >= m.output.init_mem_mb
        assert m.output.peak_mem_mb > m.output.overall_mem_mb
    assert x.model.name == "tiny"
    assert x.output.delegate_name == "XNNPACK"
    assert c.output.delegate_name is None  # XNNPACK really off with BUILTIN_WITHOUT_DEFAULT_DELEGATES


@pytest.mark.tf
def test_threads_and_cpu_mask_are_applied_in_the_child(tiny_model):
    dev = LocalDevice()
    one = dev.measure(tiny_model, RunSpec(delegate="cpu", threads=1, **FAST))
    two = dev.measure(tiny_model, RunSpec(delegate="cpu", threads=2, **FAST))
    # The interpreter starts threads-1 worker threads of its own for 2 threads.
    assert two.runtime["extra_threads"] > one.runtime["extra_threads"]
    last = max(os.sched_getaffinity(0))
    pinned = dev.measure(tiny_model, RunSpec(cpu_mask=f"{1 << last:x}", **FAST))
    assert pinned.runtime["affinity"] == [last]
    lower = LocalDevice(nice=5).measure(tiny_model, RunSpec(**FAST))  # raising nice needs no root
    assert lower.runtime["nice"] == 5


@pytest.mark.tf
def test_real_timeout_kills_a_long_run(tiny_model):
    with pytest.raises(RunTimeout, match="timeout_s=1"):
        LocalDevice().measure(tiny_model, RunSpec(num_runs=1, min_secs=60, max_secs=120, timeout_s=1.0))


@pytest.mark.tf
def test_measurement_lands_in_store_and_reads_back(tiny_model, tmp_path):
    store_mod = pytest.importorskip("host.store")
    m = LocalDevice().measure(tiny_model, RunSpec(**FAST), model_name="tiny")
    with store_mod.Store.open(str(tmp_path / "s.sqlite")) as store:
        run_id = store.add_measurement(m)
        back = store.get_measurement(run_id)
    assert back.device.kind == "local" and back.device.model == m.device.model
    assert back.output.e2e.mean_ms == pytest.approx(m.output.e2e.mean_ms)
    assert back.output.e2e.count == m.output.e2e.count
    assert back.runtime["name"] == "litert-interpreter"
    assert back.spec == m.spec and back.model.sha256 == m.model.sha256


@pytest.mark.tf
def test_per_op_gives_one_record_per_op_and_stores_them(tiny_model, tmp_path):
    pytest.importorskip("models_zoo.slicing")
    store_mod = pytest.importorskip("host.store")
    m = LocalDevice().measure(tiny_model, RunSpec(delegate="cpu", **FAST), per_op=True)
    ops = m.output.ops
    assert [o.index for o in ops] == [0, 1, 2, 3]
    assert [o.node_type for o in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert all(o.section == "run" and o.avg_ms > 0 for o in ops)
    # On plain kernels the two convolutions dominate this model; MEAN over 28x28x16 is cheap.
    assert ops[0].avg_ms > ops[2].avg_ms
    with store_mod.Store.open(str(tmp_path / "ops.sqlite")) as store:
        back = store.get_measurement(store.add_measurement(m))
    assert [(o.index, o.node_type) for o in back.output.ops] == [(o.index, o.node_type) for o in ops]
    assert [o.avg_ms for o in back.output.ops] == pytest.approx([o.avg_ms for o in ops])


@pytest.mark.tf
@pytest.mark.slow
def test_tensorflow_interpreter_fallback_measures_too(tiny_model):
    m = LocalDevice(interpreter="tensorflow").measure(tiny_model, RunSpec(delegate="cpu", **FAST))
    _plausible(m.output.e2e, FAST["num_runs"])
    assert m.runtime["module"] == "tensorflow.lite" and m.runtime["version"]
    with pytest.raises(UsageError, match="unknown interpreter"):
        LocalDevice(interpreter="onnx").measure(tiny_model, RunSpec(**FAST))


@pytest.mark.tf
def test_relative_model_path_works(tiny_model, monkeypatch):
    monkeypatch.chdir(os.path.dirname(tiny_model))
    m = LocalDevice().measure(os.path.basename(tiny_model), RunSpec(**FAST))
    assert os.path.isabs(m.model.path) and m.output.e2e.count >= FAST["num_runs"]


# ---------------------------------------------------------------- benchmark_model binary path


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "benchmark_model")


def _synthetic_binary(tmp_path, body: str):
    """A synthetic stand-in for a Linux benchmark_model: a Python script."""
    path = tmp_path / "synthetic_benchmark_model"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _replaying_binary(tmp_path, fixture: str, exit_code: int = 0):
    """Stand-in that records its argv and prints a recorded output file."""
    return _synthetic_binary(tmp_path, f"""
        import sys
        open({str(tmp_path / "argv.txt")!r}, "w").write("\\n".join(sys.argv[1:]))
        sys.stdout.write(open({os.path.join(FIXTURES, fixture)!r}).read())
        sys.exit({exit_code})
    """)


@pytest.mark.tf
def test_binary_path_parses_recorded_output(tiny_model, tmp_path):
    pytest.importorskip("device_bench.parsers")
    binary = _replaying_binary(tmp_path, "real_current_format_ti_am62x.txt")
    m = LocalDevice(binary_path=binary).measure(tiny_model, RunSpec(delegate="cpu", **FAST))
    e2e = m.output.e2e
    assert e2e.count == 50 and e2e.mean_ms == pytest.approx(1240.27) and e2e.init_ms == pytest.approx(5.579)
    assert m.output.overall_mem_mb == pytest.approx(109.832)
    assert m.runtime["name"] == "benchmark_model" and len(m.runtime["sha256"]) == 64
    passed = (tmp_path / "argv.txt").read_text().splitlines()
    assert any(tiny_model in a for a in passed) and "--use_xnnpack=false" in passed
    assert m.argv[0] == binary and m.raw_output.startswith("INFO: Running benchmark")


def test_binary_failure_output_is_a_clear_error(header_only_model, tmp_path):
    pytest.importorskip("device_bench.parsers")
    binary = _replaying_binary(tmp_path, "synthetic_model_missing.txt", exit_code=1)
    with pytest.raises(BenchmarkFailed) as e:
        LocalDevice(binary_path=binary).measure(header_only_model, RunSpec(**FAST))
    assert e.value.exit_code == 1 and "Could not open" in e.value.output_tail and e.value.hint


def test_missing_or_non_executable_binary_is_binary_error(header_only_model, tmp_path):
    tiny_model = header_only_model
    with pytest.raises(BinaryError, match="not found"):
        LocalDevice(binary_path=str(tmp_path / "nope")).measure(tiny_model, RunSpec(**FAST))
    plain = tmp_path / "benchmark_model"
    plain.write_text("not executable")
    with pytest.raises(BinaryError, match="not executable") as e:
        LocalDevice(binary_path=str(plain)).measure(tiny_model, RunSpec(**FAST))
    assert "chmod" in e.value.hint


def test_binary_that_hangs_is_killed(header_only_model, tmp_path):
    binary = _synthetic_binary(tmp_path, "import time\ntime.sleep(60)\n")
    with pytest.raises(RunTimeout) as e:
        LocalDevice(binary_path=binary).measure(header_only_model, RunSpec(num_runs=1, timeout_s=0.5))
    assert e.value.argv[0] == binary
