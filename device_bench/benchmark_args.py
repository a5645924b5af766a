"""RunSpec -> argv of the classic TFLite ``benchmark_model``, and the ``adb shell`` line.

Flag names are those of ``tensorflow/lite/tools/benchmark`` (benchmark_model.cc,
benchmark_tflite_model.cc and the delegate providers). Unknown flags do not make the
tool fail: it logs ``Unconsumed cmdline flags: ...`` and goes on, which the parser
reports as a warning.
"""
from __future__ import annotations

import math
import re
import shlex
from typing import List, Optional, Sequence

from opcost.errors import UsageError
from opcost.records import RunSpec

EXIT_MARKER = "__OPCOST_EXIT__"
TIMEOUT_EXIT_CODE = 124  # what `timeout` returns when it had to stop the command
KILL_GRACE_S = 5  # after SIGTERM, `timeout -k` sends SIGKILL this much later

_EXIT_LINE_RE = re.compile(r"^(?P<pre>.*?)" + EXIT_MARKER + r"=(?P<code>\d+)\s*$")
_HEX_RE = re.compile(r"^(?:0[xX])?[0-9a-fA-F]+$")


def _num(x: float) -> str:
    """A float as the C++ flag parser wants it: plain decimal, no exponent."""
    text = format(float(x), "f").rstrip("0").rstrip(".")
    return text if text not in ("", "-", "-0") else "0"


def _flag_bool(value: bool) -> str:
    return "true" if value else "false"


def build_argv(
    spec: RunSpec,
    *,
    binary: str,
    model: str,
    result_file: Optional[str] = None,
    op_profile_csv: Optional[str] = None,
) -> List[str]:
    """The argv that runs ``model`` with ``binary`` as ``spec`` says.

    ``delegate``: ``cpu`` -> ``--use_xnnpack=false`` (plain TFLite kernels, the default
    XNNPACK delegate is skipped); ``xnnpack`` -> ``--use_xnnpack=true``; ``gpu`` ->
    ``--use_gpu=true`` with fp16 allowed unless ``gpu_precision == "fp32"`` (ops the GPU
    rejects fall back to the default CPU path); ``nnapi`` -> ``--use_nnapi=true``.
    ``result_file`` adds ``--result_file_path`` (a serialized BenchmarkResult proto;
    written by the LiteRT benchmark tool, ignored with a warning by older binaries).
    ``op_profile_csv`` writes the op-profiling tables to that file as CSV and needs
    ``spec.op_profiling``.
    """
    if not isinstance(spec, RunSpec):
        raise UsageError(f"spec must be a RunSpec, got {type(spec).__name__}")
    if not binary or not str(binary).strip():
        raise UsageError("no benchmark_model binary path given", hint="pass --binary PATH")
    if not model or not str(model).strip():
        raise UsageError("no model path given", hint="pass the .tflite path to run")
    if op_profile_csv is not None and not spec.op_profiling:
        raise UsageError(
            "an op-profiling CSV file was requested but the run spec has op_profiling off",
            hint="set op_profiling=True in the RunSpec (profiling changes the measured latency)",
        )

    argv = [
        str(binary),
        f"--graph={model}",
        f"--num_threads={spec.threads}",
        f"--warmup_runs={spec.warmup_runs}",
        f"--warmup_min_secs={_num(spec.warmup_min_secs)}",
        f"--num_runs={spec.num_runs}",
        f"--min_secs={_num(spec.min_secs)}",
        f"--max_secs={_num(spec.max_secs)}",
    ]
    if spec.delegate == "cpu":
        argv.append("--use_xnnpack=false")
    elif spec.delegate == "xnnpack":
        argv.append("--use_xnnpack=true")
    elif spec.delegate == "gpu":
        argv.append("--use_gpu=true")
        argv.append(f"--gpu_precision_loss_allowed={_flag_bool(spec.gpu_precision != 'fp32')}")
    elif spec.delegate == "nnapi":
        argv.append("--use_nnapi=true")
    else:  # RunSpec validates this; keep the error in case the tuple grows
        raise UsageError(f"no benchmark_model flags known for delegate {spec.delegate!r}")

    if spec.op_profiling:
        argv.append("--enable_op_profiling=true")
        if op_profile_csv is not None:
            argv.append("--op_profiling_output_mode=csv")
            argv.append(f"--op_profiling_output_file={op_profile_csv}")
    if spec.report_peak_memory:
        argv.append("--report_peak_memory_footprint=true")
    if result_file is not None:
        argv.append(f"--result_file_path={result_file}")
    return argv


def device_shell_command(argv: Sequence[str], *, timeout_s: float, cpu_mask: Optional[str]) -> str:
    """One ``sh`` command line for ``adb shell`` that runs ``argv`` safely.

    - a hard wall-clock limit with toybox ``timeout`` (SIGTERM, SIGKILL 5 s later): the
      adb client's own timeout only fires on silence, and benchmark_model is silent for
      the whole measuring phase;
    - CPU affinity with ``taskset MASK`` when ``cpu_mask`` is given;
    - every word shell-quoted, stderr merged into stdout;
    - the exit code printed last as ``__OPCOST_EXIT__=<code>`` because the legacy
      ``shell:`` service (no shell v2 protocol) does not return it.

    Exit codes of toybox ``timeout``: 124 = time limit hit (SIGTERM sufficed), 137 = the
    SIGKILL 5 s later was needed, 125 = ``timeout`` itself failed. Device quirk: older
    toybox versions also return 124 when the child died of another signal (SIGSEGV...),
    so a 124 long before ``timeout_s`` is a crash, not a timeout.
    """
    argv = [str(a) for a in argv]
    if not argv or not argv[0].strip():
        raise UsageError("empty command: nothing to run on the device")
    try:
        timeout_f = float(timeout_s)
    except (TypeError, ValueError):
        raise UsageError(f"timeout_s must be a number of seconds, got {timeout_s!r}") from None
    if not math.isfinite(timeout_f) or timeout_f <= 0:
        raise UsageError(f"timeout_s must be > 0, got {timeout_s!r}", hint="e.g. --timeout-s 600")
    words = ["timeout", "-k", str(KILL_GRACE_S), str(max(1, math.ceil(timeout_f)))]
    if cpu_mask is not None:
        mask = str(cpu_mask).strip()
        if not _HEX_RE.match(mask) or int(mask, 16) <= 0:
            raise UsageError(f"cpu mask {cpu_mask!r} is not a positive hex number",
                             hint="e.g. --cpu-mask f0 for cores 4-7")
        words += ["taskset", mask[2:] if mask.lower().startswith("0x") else mask]
    command = " ".join(shlex.quote(w) for w in words + argv)
    return f"{command} 2>&1; echo {EXIT_MARKER}=$?"


def split_exit_marker(text: str) -> tuple:
    """``(output without the marker line, exit code or None)``; pure.

    The last marker wins (a program could print one itself). A pty over the old
    ``shell:`` service turns ``\\n`` into ``\\r\\n``; that is tolerated, and so is output
    whose last line had no newline (the marker then ends that line).
    """
    if not text:
        return ("" if text is None else text), None
    lines = text.splitlines(keepends=True)
    for i in range(len(lines) - 1, -1, -1):
        m = _EXIT_LINE_RE.match(lines[i].rstrip("\r\n"))
        if m:
            # output that did not end with a newline shares the marker's line
            keep = [m.group("pre") + "\n"] if m.group("pre") else []
            return "".join(lines[:i] + keep + lines[i + 1:]), int(m.group("code"))
    return text, None
