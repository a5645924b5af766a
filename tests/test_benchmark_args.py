"""benchmark_model argv building and the adb-shell command line around it."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest

from device_bench.benchmark_args import (EXIT_MARKER, build_argv, device_shell_command,
                                         split_exit_marker)
from opcost.errors import UsageError
from opcost.records import RunSpec

BIN = "/data/local/tmp/opcost/benchmark_model"
MODEL = "/data/local/tmp/opcost/m.tflite"


def flags(argv):
    """--name=value words as a dict (every flag must appear once)."""
    out = {}
    for a in argv[1:]:
        assert a.startswith("--") and "=" in a, a
        k, v = a[2:].split("=", 1)
        assert k not in out, f"duplicate flag {k}"
        out[k] = v
    return out


def test_common_flags_and_units():
    spec = RunSpec(delegate="xnnpack", threads=4, warmup_runs=2, num_runs=30, min_secs=2.5,
                   max_secs=60.0, warmup_min_secs=0.25, report_peak_memory=False)
    argv = build_argv(spec, binary=BIN, model=MODEL)
    assert argv[0] == BIN
    f = flags(argv)
    assert f == {"graph": MODEL, "num_threads": "4", "warmup_runs": "2", "warmup_min_secs": "0.25",
                 "num_runs": "30", "min_secs": "2.5", "max_secs": "60", "use_xnnpack": "true"}


@pytest.mark.parametrize("spec, expected, absent", [
    (RunSpec(delegate="cpu"), {"use_xnnpack": "false"}, ["use_gpu", "use_nnapi"]),
    (RunSpec(delegate="xnnpack"), {"use_xnnpack": "true"}, ["use_gpu", "use_nnapi"]),
    (RunSpec(delegate="gpu"), {"use_gpu": "true", "gpu_precision_loss_allowed": "true"},
     ["use_nnapi", "use_xnnpack"]),
    (RunSpec(delegate="gpu", gpu_precision="fp32"),
     {"use_gpu": "true", "gpu_precision_loss_allowed": "false"}, ["use_nnapi"]),
    (RunSpec(delegate="nnapi"), {"use_nnapi": "true"}, ["use_gpu", "use_xnnpack"]),
])
def test_delegate_flags(spec, expected, absent):
    f = flags(build_argv(spec, binary=BIN, model=MODEL))
    for k, v in expected.items():
        assert f[k] == v
    for k in absent:
        assert k not in f


def test_profiling_memory_and_result_file():
    spec = RunSpec(op_profiling=True, report_peak_memory=True)
    f = flags(build_argv(spec, binary=BIN, model=MODEL, result_file="/data/local/tmp/r.pb",
                         op_profile_csv="/data/local/tmp/ops.csv"))
    assert f["enable_op_profiling"] == "true"
    assert f["op_profiling_output_mode"] == "csv"
    assert f["op_profiling_output_file"] == "/data/local/tmp/ops.csv"
    assert f["report_peak_memory_footprint"] == "true"
    assert f["result_file_path"] == "/data/local/tmp/r.pb"
    plain = flags(build_argv(RunSpec(report_peak_memory=False), binary=BIN, model=MODEL))
    assert not {"enable_op_profiling", "op_profiling_output_mode", "report_peak_memory_footprint",
                "result_file_path"} & set(plain)
    only_stdout = flags(build_argv(RunSpec(op_profiling=True), binary=BIN, model=MODEL))
    assert only_stdout["enable_op_profiling"] == "true" and "op_profiling_output_mode" not in only_stdout


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError) as ei:
        build_argv(RunSpec(), binary=BIN, model=MODEL, op_profile_csv="/x.csv")
    assert "op_profiling" in ei.value.hint
    with pytest.raises(UsageError):
        build_argv(RunSpec(), binary="", model=MODEL)
    with pytest.raises(UsageError):
        build_argv(RunSpec(), binary=BIN, model=" ")
    with pytest.raises(UsageError):
        build_argv({"delegate": "cpu"}, binary=BIN, model=MODEL)


def test_shell_command_shape():
    argv = [BIN, "--graph=/data/local/tmp/my models/a'b.tflite", "--num_threads=1"]
    cmd = device_shell_command(argv, timeout_s=90.5, cpu_mask="f0")
    assert cmd.startswith("timeout -k 5 91 taskset f0 ")
    assert cmd.endswith(f" 2>&1; echo {EXIT_MARKER}=$?")
    words = shlex.split(cmd.split(" 2>&1;")[0])
    assert words[:6] == ["timeout", "-k", "5", "91", "taskset", "f0"]
    assert words[6:] == argv          # quoting round-trips: space and quote survive
    no_mask = device_shell_command(argv, timeout_s=10, cpu_mask=None)
    assert "taskset" not in no_mask and no_mask.startswith("timeout -k 5 10 ")
    assert device_shell_command(argv, timeout_s=1, cpu_mask="0x0F").split()[5] == "0F"


@pytest.mark.parametrize("kwargs", [
    dict(timeout_s=0, cpu_mask=None), dict(timeout_s=-3, cpu_mask=None),
    dict(timeout_s=float("nan"), cpu_mask=None), dict(timeout_s="soon", cpu_mask=None),
    dict(timeout_s=5, cpu_mask="zz"), dict(timeout_s=5, cpu_mask="0"), dict(timeout_s=5, cpu_mask="f0; reboot"),
])
def test_shell_command_rejects_bad_values(kwargs):
    with pytest.raises(UsageError):
        device_shell_command([BIN], **kwargs)


def test_shell_command_rejects_empty_argv():
    with pytest.raises(UsageError):
        device_shell_command([], timeout_s=5, cpu_mask=None)


def test_exit_marker_round_trip():
    text = "INFO: line 1\nINFO: line 2\n"
    assert split_exit_marker(text + f"{EXIT_MARKER}=0\n") == (text, 0)
    assert split_exit_marker(text.replace("\n", "\r\n") + f"{EXIT_MARKER}=124\r\n") == (
        text.replace("\n", "\r\n"), 124)
    # output without a final newline shares the marker's line
    assert split_exit_marker("partial" + f"{EXIT_MARKER}=1\n") == ("partial\n", 1)
    # the last marker wins; no marker -> None
    assert split_exit_marker(f"{EXIT_MARKER}=3\nmore\n{EXIT_MARKER}=7\n") == (f"{EXIT_MARKER}=3\nmore\n", 7)
    assert split_exit_marker(text) == (text, None)
    assert split_exit_marker("") == ("", None)


needs_tools = pytest.mark.skipif(
    not (shutil.which("sh") and shutil.which("timeout") and shutil.which("taskset")),
    reason="needs sh, timeout and taskset on this host")


def _fake_binary(tmp_path, body: str) -> str:
    d = tmp_path / "dir with space"
    d.mkdir()
    path = d / "bench mark"
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


@needs_tools
def test_shell_command_runs_in_a_real_sh(tmp_path):
    """The same string adb hands to the device's sh: args intact, stderr merged, code back."""
    binary = _fake_binary(tmp_path, (
        "import sys\n"
        "print('\\n'.join(sys.argv[1:]))\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)\n"))
    argv = [binary, "--graph=/m dir/it's $HOME `x`.tflite", "--num_threads=2"]
    cmd = device_shell_command(argv, timeout_s=30, cpu_mask="1")
    done = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    assert done.stderr == ""
    out, code = split_exit_marker(done.stdout)
    assert code == 3
    assert out.splitlines() == argv[1:] + ["to stderr"]


@needs_tools
def test_shell_command_hard_timeout_gives_124(tmp_path):
    binary = _fake_binary(tmp_path, "import time\ntime.sleep(30)\n")
    cmd = device_shell_command([binary], timeout_s=1, cpu_mask=None)
    done = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, text=True, timeout=60)
    assert split_exit_marker(done.stdout) == ("", 124)
