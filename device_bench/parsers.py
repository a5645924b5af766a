"""Pure parsers of what TFLite ``benchmark_model`` prints and writes.

- :func:`parse_benchmark_output`: stdout+stderr text -> :class:`BenchmarkOutput`, or an
  error (:class:`BenchmarkFailed`, :class:`DelegateError`, :class:`RunTimeout`,
  :class:`BinaryError`, :class:`ParseError`) -- never a record made of zeros. (Old
  summary-only formats print no run count: those records carry ``count=0`` and say so
  in ``warnings``.)
- :func:`parse_op_profile_text` / :func:`parse_op_row`: the op-profiling tables.
- :func:`parse_op_profile_csv`: the file of ``--op_profiling_output_mode=csv``.
- :func:`parse_result_file`: the protobuf of ``--result_file_path``.

Formats handled (all whitespace/tab tolerant; ``INFO:``-style, logcat and
``[file.h:NN]`` line prefixes are stripped): the ``count=... p5= median= p95=`` stats
lines (also ``count=1``, ``(all same)``, scientific notation, no percentiles), the
``Inference timings in us:`` summary, the 2018-2019 ``Average inference timings in us:``
summary (with its ``no stats:`` variant), memory lines, delegate messages and the
op-profiling tables with and without the ``[start]`` column. All times are converted
from microseconds to milliseconds.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

from device_bench.benchmark_args import EXIT_MARKER, TIMEOUT_EXIT_CODE, split_exit_marker
from device_bench.result_proto import decode_benchmark_result
from opcost.errors import (BenchmarkFailed, BinaryError, DelegateError, ParseError,
                           RunTimeout)
from opcost.records import BenchmarkOutput, E2EStats, OpRecord

MAX_WARNINGS = 20

# a number as C++ ostreams print it: 12, 0.203, 1.24027e+06, nan
_NUM = r"(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf))"

# "INFO: ", "VERBOSE: " ...; logcat "07-08 15:33:55.768 I/tflite  ( 5395): " (brief) and
# "10-05 01:41:22.349 23361 23361 I tflite  : " (threadtime); LiteRT "[file.h:81] ".
_PREFIX_RE = re.compile(
    r"(?:\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+"
    r"(?:\d+\s+\d+\s+[VDIWEF]\s+\S+\s*:\s?|[VDIWEF]/[^(:]*\(\s*\d+\):\s?))?"
    r"(?:(?:INFO|WARN|WARNING|ERROR|VERBOSE|DEBUG|FATAL):\s?)?"
    r"(?:\[[^\]\s]+:\d+\]\s?)?"
)
_RUNNING_RE = re.compile(r"^Running benchmark for at least (\d+) iterations")
_KV_RE = re.compile(r"(\w+)=([-+\w.]+)")
_SUMMARY_RE = re.compile(r"^Inference timings in us:\s*(.*)$")
_LEGACY_RE = re.compile(r"^Average inference timings in us:\s*(.*)$")
_SUMMARY_ITEM_RE = re.compile(r"([A-Za-z][A-Za-z ()]*?)\s*:\s*(" + _NUM + r")")
_MEM_DELTA_RE = re.compile(
    r"^Memory footprint delta from the start of the tool \(MB\):\s*init=(" + _NUM + r")\s+overall=(" + _NUM + r")")
_MEM_PEAK_OLD_RE = re.compile(
    r"^Peak memory footprint \(MB\):\s*init=(" + _NUM + r")\s+overall=(" + _NUM + r")")
_MEM_PEAK_MON_RE = re.compile(
    r"^Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUM + r")")
_MODEL_SIZE_RE = re.compile(r"^The input model file size \(MB\):\s*(" + _NUM + r")")
_INIT_SESSION_RE = re.compile(r"^Initialized session in (" + _NUM + r")\s*ms")
_REPLACING_RE = re.compile(
    r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]+)\) node, yielding (\d+) partition"
    r"(?:s)?(?: for (?:subgraph (\d+)|the whole graph))?")
_EXPLICIT_RE = re.compile(
    r"Explicitly applied (.+?) delegate, and the model graph will be (completely|partially) "
    r"executed by the delegate(?: w/ (\d+) delegate kernels)?")
_NOT_EXECUTED_RE = re.compile(
    r"Though (.+?) delegate is explicitly applied, the model graph will not be executed by the delegate")
_VERSION_RE = re.compile(
    r"(?i)\b(?:tensorflow lite|tflite|tf lite|litert)\b[^\n]*?\bversion\b\s*[:=]?\s*\[?v?"
    r"(\d+\.\d+(?:\.\d+)?(?:[-.+][\w.]+)?)")
_UNCONSUMED_RE = re.compile(r"Unconsumed cmdline flags:\s*(.*)")
_DEFAULT_DELEGATE_FAIL_RE = re.compile(r"Failed to apply the default TensorFlow Lite delegate")
_DELEGATE_FAIL_RE = re.compile(
    r"Failed to apply (?:the )?\S.*? delegate"
    r"|Didn't find op for builtin opcode"
    r"|Node number \d+ \([^)]*\) failed to prepare"
    r"|failed to prepare"
    r"|Disallowed CPU fallback detected"
    r"|Encountered unresolved custom op"
    r"|TfLiteGpuDelegate (?:Init|Prepare|Invoke):"
    r"|Failed to create \S+ delegate",
    re.IGNORECASE)
_BENCH_FAILED_RE = re.compile(r"Benchmarking failed")
_BINARY_FAIL_RE = re.compile(
    r"(?:: not found$|: inaccessible or not found$|Permission denied$|Exec format error"
    r"|not executable: |cannot execute|CANNOT LINK EXECUTABLE|No such file or directory$)")
# the wrapper's own helpers (device_bench.benchmark_args.device_shell_command)
_SHELL_TOOL_MISSING_RE = re.compile(r"(?:^|[\s/:])(timeout|taskset)(?::| ?:)? (?:inaccessible or )?not found")
_TASKSET_FAIL_RE = re.compile(r"^taskset: .*(?:Invalid argument|sched_setaffinity)")
_MODEL_FAIL_RE = re.compile(
    r"Failed to (?:mmap|load|open|read) model|Could not open '|Failed to initialize model loader"
    r"|The model is not a valid Flatbuffer|Model provided has model identifier")
_ERROR_LINE_RE = re.compile(r"^(?:ERROR|FATAL|E/\S+|F/\S+)\b|^\s*(?:ERROR|FATAL):", re.IGNORECASE)
_WARN_LINE_RE = re.compile(r"^(?:WARN|WARNING):")

# op-profiling tables. Rows are matched over a whole table at once (re.M) for speed;
# [ \t] instead of \s keeps every match on one line.
_N = _NUM
_W = r"[ \t]+"
_ROW_TAIL = (r"(" + _N + r")" + _W + r"(" + _N + r")%" + _W + r"(" + _N + r")%" + _W + r"(" + _N + r")"
             + _W + r"(-?\d+)" + _W + r"(\S[^\n]*?)[ \t\r]*$")
_ROW_NOSTART_RE = re.compile(
    r"^[ \t]*(\S[^\t\n]*?)" + _W + r"()(" + _N + r")" + _W + _ROW_TAIL, re.M)
_ROW_START_RE = re.compile(
    r"^[ \t]*(\S[^\t\n]*?)" + _W + r"(" + _N + r")" + _W + r"(" + _N + r")" + _W + _ROW_TAIL, re.M)
_C = r",[ \t]*"
_CSV_TAIL = (r"(" + _N + r")%" + _C + r"(" + _N + r")%" + _C + r"(" + _N + r")" + _C + r"(-?\d+),[ \t]?"
             r"([^\n]*?)[ \t\r]*$")
_CSV_NOSTART_RE = re.compile(
    r"^([^\n,][^\n]*?)" + _C + r"()(" + _N + r")" + _C + r"(" + _N + r")" + _C + _CSV_TAIL, re.M)
_CSV_START_RE = re.compile(
    r"^([^\n,][^\n]*?)" + _C + r"(" + _N + r")" + _C + r"(" + _N + r")" + _C + r"(" + _N + r")" + _C
    + _CSV_TAIL, re.M)
# table titles and the lines that say which section / subgraph the next tables belong to;
# found with str.find (fast) and then read with these
_MARK_LITERALS = ("=====", "Profiling Info for ", "Primary graph ", "Subgraph (index: ", "Delegate internal:")
_TITLE_RE = re.compile(r"={5,}[ \t]*([^=\n]*?)[ \t]*={5,}")
_SUB_RE = re.compile(r"Subgraph \(index: (\d+)\) (?:profile|summary):")
_LOGCAT_LINE_RE = re.compile(r"^\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s", re.M)
_DELEGATE_TYPE_RE = re.compile(r"^(?:TfLite\w*Delegate\w*|DELEGATE|Delegate)$")

_FAILED_HINT = ("read the last output lines above; to reproduce, run the same command with "
                "`adb shell` by hand")


def _strip_prefix(raw: str) -> str:
    c = raw[:1]
    if c == "\t" or c == " " or not c:
        return raw
    end = _PREFIX_RE.match(raw).end()
    return raw[end:] if end else raw


def _flag(argv: Optional[Sequence[str]], name: str) -> Optional[str]:
    if not argv:
        return None
    key = f"--{name}="
    value = None
    for a in argv:
        a = str(a)
        if a.startswith(key):
            value = a[len(key):]
    return value


def _int_flag(argv, name) -> Optional[int]:
    v = _flag(argv, name)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _requested_delegate(argv) -> Optional[str]:
    if (_flag(argv, "use_gpu") or "").lower() == "true":
        return "gpu"
    if (_flag(argv, "use_nnapi") or "").lower() == "true":
        return "nnapi"
    if (_flag(argv, "use_xnnpack") or "").lower() == "true":
        return "xnnpack"
    return None


_DELEGATE_NAME_HINTS = {"gpu": ("gpu", "_cl", "opencl", "opengl", "drift"),
                        "nnapi": ("nnapi",), "xnnpack": ("xnnpack",)}


ACCELERATOR_DELEGATES = ("gpu", "nnapi")


def partial_delegate_note(output: BenchmarkOutput, delegate: str) -> Optional[str]:
    """A one-line note when an accelerator ``delegate`` took only part of the graph (the
    rest ran on the CPU, so the time is a mix); None when it took all of it or says nothing."""
    if delegate not in ACCELERATOR_DELEGATES:
        return None
    if output.fully_delegated is None and output.delegated_nodes is None:
        # Older builds print no delegate lines at all.
        return (f"the output does not say how much of the graph the {delegate} delegate took; "
                f"check the run's output (`opcost export`) before using it as a {delegate} time")
    if output.fully_delegated is not False:
        return None
    if output.delegated_nodes == 0:
        return f"the {delegate} delegate executed no node of the model: it ran on the CPU"
    if output.delegated_nodes is not None and output.total_nodes is not None:
        part = f"{output.delegated_nodes} of {output.total_nodes} nodes"
    else:
        part = "only part of the graph"
    return f"the {delegate} delegate took {part}; the rest ran on the CPU"


def run_notes(output: BenchmarkOutput, delegate: str, op_profiling: bool) -> List[str]:
    """What a user should know about a run that parsed fine: a delegate that took only part
    of the graph, or op profiling asked for but no op table printed."""
    notes = [n for n in [partial_delegate_note(output, delegate)] if n]
    if op_profiling and not output.ops:
        notes.append("op profiling was asked for but benchmark_model printed no op table "
                     "(this build may lack the profiler); no per-op times")
    return notes


def check_delegate(output: BenchmarkOutput, delegate: str, **ctx) -> Optional[str]:
    """DelegateError when an accelerator ``delegate`` executed no node (benchmark_model then
    times the whole graph on the CPU and says so only in a log line, so the run is not a
    ``delegate`` measurement); else :func:`partial_delegate_note`. ``ctx``: the error's
    serial, argv, exit_code, output_tail."""
    if delegate in ACCELERATOR_DELEGATES and output.delegated_nodes == 0:
        raise DelegateError(f"the {delegate} delegate executed no node of the model; benchmark_model "
                            f"ran it on the CPU, so this is not a {delegate} measurement",
                            hint=f"the {delegate} delegate does not take this model on this device (see the "
                                 f"output above); measure it with --delegate xnnpack or cpu", **ctx)
    return partial_delegate_note(output, delegate)


def _names_delegate(name: str, delegate: str) -> bool:
    return any(h in name.lower() for h in _DELEGATE_NAME_HINTS.get(delegate, ()))


def _parse_stats(rest: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key, value in _KV_RE.findall(rest):
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def _summary_items(body: str) -> Dict[str, float]:
    return {k.strip().lower(): float(v) for k, v in _SUMMARY_ITEM_RE.findall(body)}


def _ms(us: Optional[float]) -> Optional[float]:
    # the tool prints 6 significant digits; drop the binary noise of dividing by 1000
    return None if us is None else float(f"{us / 1000.0:.12g}")


def _e2e_from_stats(stats: Dict[str, float]) -> E2EStats:
    count = int(stats["count"])
    curr = stats.get("curr")
    # "count=1 curr=X ..." and "count=N curr=X(all same) ...": every run took X
    same = "avg" not in stats and curr is not None
    avg = stats.get("avg", curr)
    return E2EStats(
        count=count,
        mean_ms=_ms(avg),
        std_ms=_ms(stats.get("std", 0.0 if same else None)),
        min_ms=_ms(stats.get("min", curr if same else None)),
        max_ms=_ms(stats.get("max", curr if same else None)),
        median_ms=_ms(stats.get("median")),
        p5_ms=_ms(stats.get("p5")),
        p95_ms=_ms(stats.get("p95")),
        first_ms=_ms(stats.get("first", curr if same else None)),
    )


_delegate_type_cache: Dict[str, bool] = {}


def _is_delegate_type(node_type: str) -> bool:
    hit = _delegate_type_cache.get(node_type)
    if hit is None:
        hit = bool(_DELEGATE_TYPE_RE.match(node_type))
        if len(_delegate_type_cache) < 4096:
            _delegate_type_cache[node_type] = hit
    return hit


def _rows_to_ops(rows, ops: List[OpRecord], section: str, subgraph: int,
                 delegate_internal: bool, csv: bool) -> None:
    # rows: (type, start or '', first, avg, %, cdf%, mem, times, name) strings; float() and
    # int() accept the padding spaces of the tab layout
    append = ops.append
    for node_type, start, first, avg, pct, cdf, mem, times, name in rows:
        try:
            values = (float(avg), float(first), float(start) if start else None, float(pct),
                      float(cdf), float(mem), int(times))
        except ValueError:
            continue   # not a row after all
        node_type = node_type.strip()
        if csv:
            name = name.replace("\t", ",")   # the CSV writer puts '\t' where names had ','
        _, sep, tail = name.rpartition(":")
        append(OpRecord(
            node_type=node_type,
            name=name,
            avg_ms=values[0],
            first_ms=values[1],
            start_ms=values[2],
            pct=values[3],
            cdf_pct=values[4],
            mem_kb=values[5],
            times_called=values[6],
            index=int(tail) if sep and tail.isdigit() else None,
            section=section,
            subgraph=subgraph,
            delegated=(delegate_internal or name.startswith("Delegate/") or _is_delegate_type(node_type)),
        ))


def _tab_rows(segment: str) -> list:
    """Rows in the exact layout the tool prints: a leading tab, tab-separated columns."""
    rows = []
    for line in segment.split("\n"):
        if line[:1] != "\t":
            continue
        parts = line.split("\t")
        n = len(parts)
        if n == 9:
            _, node_type, first, avg, pct, cdf, mem, times, name = parts
            start = ""
        elif n == 10:
            _, node_type, start, first, avg, pct, cdf, mem, times, name = parts
        else:
            continue
        if pct[-1:] != "%" or cdf[-1:] != "%" or not name.strip() or not node_type.strip():
            continue   # e.g. the "[node type] ... [%]" header
        rows.append((node_type, start, first, avg, pct[:-1], cdf[:-1], mem, times, name.rstrip("\r \t")))
    return rows


def _guess_layout(segment: str, csv: bool) -> Optional[bool]:
    """True: a [start] column; False: none; None: no header line seen."""
    head = segment[:600]
    i = head.find("node type,") if csv else head.lower().find("[node type]")
    if i < 0:
        return None
    j = head.find("\n", i)
    header = head[i:j] if j >= 0 else head[i:]
    return (", start," in header) if csv else ("[start]" in header)


def _table_rows(segment: str, csv: bool) -> list:
    if _LOGCAT_LINE_RE.search(segment):
        segment = "\n".join(_strip_prefix(ln) for ln in segment.split("\n"))
    if not csv and "\t" in segment:
        rows = _tab_rows(segment)
        if rows:
            return rows
    # tabs turned into spaces (copied output), odd spacing, or CSV
    with_start = _guess_layout(segment, csv)
    start_re, nostart_re = (_CSV_START_RE, _CSV_NOSTART_RE) if csv else (_ROW_START_RE, _ROW_NOSTART_RE)
    if with_start is not None:
        return (start_re if with_start else nostart_re).findall(segment)
    rows = start_re.findall(segment)
    return rows if rows else nostart_re.findall(segment)


def _marks(text: str):
    """(position, end, kind, value) of table titles and section/subgraph lines, in order."""
    found = []
    for lit in _MARK_LITERALS:
        i = text.find(lit)
        while i >= 0:
            if lit == "=====":
                m = _TITLE_RE.match(text, i)
                if m:
                    found.append((i, m.end(), "title", m.group(1)))
                    i = text.find(lit, m.end())
                    continue
                j = text.find("\n", i)
                i = text.find(lit, j) if j >= 0 else -1
                continue
            if lit == "Profiling Info for ":
                rest = text[i + len(lit): i + len(lit) + 24]
                if rest.startswith("Benchmark Initialization"):
                    found.append((i, i + len(lit), "section", "init"))
                elif rest.startswith("Regular Benchmark Runs"):
                    found.append((i, i + len(lit), "section", "run"))
            elif lit == "Primary graph ":
                if text.startswith(("profile:", "summary:"), i + len(lit)):
                    found.append((i, i + len(lit), "subgraph", 0))
            elif lit == "Subgraph (index: ":
                m = _SUB_RE.match(text, i)
                if m:
                    found.append((i, m.end(), "subgraph", int(m.group(1))))
            else:
                found.append((i, i + len(lit), "delegate_internal", True))
            i = text.find(lit, i + len(lit))
    found.sort()
    return found


def _parse_op_tables(text: str, *, csv: bool) -> List[OpRecord]:
    ops: List[OpRecord] = []
    section, subgraph, delegate_internal = "run", 0, False
    run_order_from = None   # where the rows of an open "Run Order" table start
    for pos, end, kind, value in _marks(text):
        if run_order_from is not None:
            _rows_to_ops(_table_rows(text[run_order_from:pos], csv), ops,
                         section, subgraph, delegate_internal, csv)
            run_order_from = None
        if kind == "title":
            if value == "Run Order":
                run_order_from = end
        elif kind == "section":
            section, subgraph, delegate_internal = value, 0, False
        elif kind == "subgraph":
            subgraph, delegate_internal = value, False
        else:
            delegate_internal = True
    if run_order_from is not None:
        _rows_to_ops(_table_rows(text[run_order_from:], csv), ops, section, subgraph,
                     delegate_internal, csv)
    return ops


def parse_op_row(line: str, *, with_start: Optional[bool] = None, section: str = "run",
                 subgraph: int = 0) -> Optional[OpRecord]:
    """One run-order row of the text table, or None if the line is not one.

    ``with_start``: True for the older layout with a ``[start]`` column, False for the
    current one, None to guess from the line.
    """
    line = _strip_prefix(line.split("\n", 1)[0])
    if with_start is None:
        rows = _ROW_START_RE.findall(line) or _ROW_NOSTART_RE.findall(line)
    else:
        rows = (_ROW_START_RE if with_start else _ROW_NOSTART_RE).findall(line)
    ops: List[OpRecord] = []
    _rows_to_ops(rows, ops, section, subgraph, False, False)
    return ops[0] if ops else None


def parse_op_profile_text(text: str) -> List[OpRecord]:
    """The "Run Order" rows of every op-profiling table in benchmark_model's stdout.

    "Top by Computation Time", "Top by Memory Use" and "Summary by node type" tables
    repeat or aggregate those rows and are skipped. Rows after "Profiling Info for
    Benchmark Initialization" get ``section="init"``; rows after "Subgraph (index: N)"
    get ``subgraph=N``; rows of the "Delegate internal" table are marked delegated.
    """
    return _parse_op_tables(text or "", csv=False)


def parse_op_profile_csv(text: str) -> List[OpRecord]:
    """Rows of the file written by ``--op_profiling_output_mode=csv``.

    Header (current): ``node type, first, avg_ms, %, cdf%, mem KB, times called, name``;
    older tools add ``start`` after ``node type``. The tool writes ',' inside node names
    as a tab; it is turned back into ','.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if text is None or not text.strip():
        raise ParseError("the op-profiling CSV file is empty",
                         hint="check that the run finished and enable_op_profiling was on")
    ops = _parse_op_tables(text, csv=True)
    if not ops:
        raise ParseError("no op rows found in the op-profiling CSV file",
                         hint="expected a 'Run Order' table with the header "
                              "'node type, first, avg_ms, %, cdf%, mem KB, times called, name'",
                         output_tail=text)
    return ops


def parse_result_file(data: bytes) -> dict:
    """Latency (ms), memory (MB) and run counts from a ``--result_file_path`` file."""
    return decode_benchmark_result(data)


def result_to_e2e(result: dict) -> E2EStats:
    """An :class:`E2EStats` from :func:`parse_result_file`'s dict."""
    if "avg_ms" not in result:
        raise ParseError("the benchmark result has no average latency",
                         hint="the file may come from a run that failed")
    return E2EStats(
        count=int(result.get("num_runs", 0)),
        mean_ms=result["avg_ms"],
        std_ms=result.get("stddev_ms"),
        min_ms=result.get("min_ms"),
        max_ms=result.get("max_ms"),
        median_ms=result.get("median_ms"),
        p5_ms=result.get("p5_ms"),
        p95_ms=result.get("p95_ms"),
        init_ms=result.get("init_ms"),
        warmup_mean_ms=result.get("average_warm_up_ms"),
        warmup_count=result.get("num_warmup_runs"),
        warmup_first_ms=result.get("first_inference_ms"),
    )


def parse_benchmark_output(
    text: str,
    *,
    argv: Optional[Sequence[str]] = None,
    serial: Optional[str] = None,
    exit_code: Optional[int] = None,
) -> BenchmarkOutput:
    """Understand one run of ``benchmark_model`` (its merged stdout and stderr).

    The result is the stats line of the regular runs: the one after the last "Running
    benchmark for at least N iterations" line (the one before it is the warm-up); with
    ``argv`` the block whose N equals ``--num_runs`` is preferred. A ``__OPCOST_EXIT__``
    marker line left in ``text`` is removed and gives ``exit_code`` if none was passed.
    Error lines of a run that still succeeded end up in ``warnings``. Raises RunTimeout
    (exit code 124), BinaryError (binary missing / not executable), DelegateError (the
    delegate could not take the model), BenchmarkFailed ("Benchmarking failed." or a
    non-zero exit code) and ParseError (no timing at all: garbage or truncated output).
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    text = text if text is not None else ""
    if EXIT_MARKER in text:   # the caller passed the raw `adb shell` output
        text, marker_code = split_exit_marker(text)
        if exit_code is None:
            exit_code = marker_code
    ctx = dict(serial=serial, argv=argv, exit_code=exit_code, output_tail=text)

    blocks: List[dict] = []          # one per "Running benchmark ..." line
    summary: Optional[Dict[str, float]] = None
    legacy: Optional[Dict[str, float]] = None
    init_mem = overall_mem = peak_mem = None
    init_session_ms = None
    model_size_mb = None
    replacing: Dict[tuple, tuple] = {}   # (delegate, subgraph) -> (n, total, partitions)
    explicit: List[tuple] = []           # (delegate, completely?, kernels)
    version = None
    warnings: List[str] = []
    delegate_failures: List[str] = []
    error_lines: List[str] = []
    bench_failed = False
    binary_failure = None
    tool_failure = None
    model_failure = None
    has_profile = False

    lines = text.splitlines()
    last_line_cut = bool(text) and text[-1] not in "\r\n"
    n_lines = len(lines)
    for i, raw in enumerate(lines):
        line = _strip_prefix(raw)
        s = line.strip()
        if not s:
            continue
        c = s[0]
        if c == "c" and s.startswith("count="):
            if blocks and blocks[-1]["stats"] is None:
                blocks[-1]["stats"] = _parse_stats(s)
                blocks[-1]["same"] = "(all same)" in s
                blocks[-1]["cut"] = last_line_cut and i == n_lines - 1
            continue
        if c == "=" or c == "[" or raw[:1] in ("\t", " "):   # table rows and rules
            if c == "=" and "Run Order" in s:
                has_profile = True
            continue
        if c == "R":
            m = _RUNNING_RE.match(s)
            if m:
                blocks.append({"iters": int(m.group(1)), "stats": None})
                continue
            m = _REPLACING_RE.search(s)
            if m:
                n, total, name, parts, sub = m.groups()
                replacing[(name, int(sub) if sub is not None else 0)] = (
                    int(n), int(total) if total is not None else None, int(parts))
                continue
        if c == "T":
            m = _MODEL_SIZE_RE.match(s)
            if m:
                model_size_mb = float(m.group(1))
                continue
        if c == "I":
            m = _SUMMARY_RE.match(s)
            if m:
                summary = _summary_items(m.group(1))
                continue
            m = _INIT_SESSION_RE.match(s)
            if m:
                init_session_ms = float(m.group(1))
                continue
        if c == "A":
            m = _LEGACY_RE.match(s)
            if m:
                legacy = _summary_items(m.group(1))
                continue
        if c == "M":
            m = _MEM_DELTA_RE.match(s)
            if m:
                init_mem, overall_mem = float(m.group(1)), float(m.group(2))
                continue
        if c == "P":
            m = _MEM_PEAK_OLD_RE.match(s)
            if m:
                init_mem, overall_mem = float(m.group(1)), float(m.group(2))
                continue
        if c == "O":
            m = _MEM_PEAK_MON_RE.match(s)
            if m:
                peak_mem = float(m.group(1))
                continue
        if c == "E":
            m = _EXPLICIT_RE.search(s)
            if m:
                explicit.append((m.group(1), m.group(2) == "completely",
                                 int(m.group(3)) if m.group(3) else None))
                continue
        if c == "T":
            m = _NOT_EXECUTED_RE.search(s)
            if m:
                explicit.append((m.group(1), False, 0))
                warnings.append(s)
                continue
        if _BENCH_FAILED_RE.search(s):
            bench_failed = True
            continue
        if _DEFAULT_DELEGATE_FAIL_RE.search(s):
            warnings.append(s)
            continue
        if _DELEGATE_FAIL_RE.search(s):
            delegate_failures.append(s)
            continue
        m = _UNCONSUMED_RE.search(s)
        if m:
            warnings.append(f"benchmark_model ignored unknown flags: {m.group(1).strip()}")
            continue
        if _MODEL_FAIL_RE.search(s):
            model_failure = model_failure or s
        elif tool_failure is None and (_SHELL_TOOL_MISSING_RE.search(s) or _TASKSET_FAIL_RE.match(s)):
            tool_failure = s
        elif binary_failure is None and _BINARY_FAIL_RE.search(s):
            binary_failure = s
        if _ERROR_LINE_RE.match(raw.lstrip()) or raw.startswith("ERROR"):
            error_lines.append(s)
        elif _WARN_LINE_RE.match(raw):
            warnings.append(s)
        if version is None:
            m = _VERSION_RE.search(s)
            if m:
                version = m.group(1)

    # --- failures first: a failed run must never become a record --------------------
    if exit_code == TIMEOUT_EXIT_CODE:
        # toybox `timeout` before ~0.8.x also answers 124 when the child died of any signal
        # but KILL (e.g. a SIGSEGV): the caller's wall time tells the two apart
        raise RunTimeout("benchmark_model was stopped at the hard wall-clock limit (exit 124; old "
                         "toybox `timeout` also reports a crash by signal this way)", **ctx)
    if tool_failure is not None and not blocks:
        missing = _SHELL_TOOL_MISSING_RE.search(tool_failure)
        if missing:
            raise BenchmarkFailed(
                f"the device shell has no `{missing.group(1)}` command: {tool_failure}",
                hint="opcost needs toybox `timeout` and `taskset` (Android 7 and later)", **ctx)
        raise BenchmarkFailed(f"taskset could not pin the benchmark: {tool_failure}",
                              hint="the --cpu-mask selects no usable core of this device; "
                                   "see `opcost devices` for its CPU clusters", **ctx)
    if binary_failure is not None and (exit_code in (126, 127) or not blocks):
        raise BinaryError(f"the benchmark binary could not be started: {binary_failure}", **ctx)
    if exit_code in (126, 127):
        raise BinaryError(f"the benchmark binary could not be started (exit code {exit_code})", **ctx)
    if delegate_failures:
        raise DelegateError(f"the delegate could not run the model: {delegate_failures[0]}", **ctx)
    if bench_failed or (exit_code is not None and exit_code != 0):
        detail = model_failure or (error_lines[0] if error_lines else None)
        what = "benchmark_model reported 'Benchmarking failed.'" if bench_failed else \
            f"benchmark_model exited with code {exit_code}"
        hint = ("check that the model path exists on the device and is a .tflite file"
                if model_failure else
                "the process was killed (SIGKILL): out of memory, or the hard time limit's kill"
                if exit_code == 137 else _FAILED_HINT)
        raise BenchmarkFailed(what + (f": {detail}" if detail else ""), hint=hint, **ctx)

    # --- the regular-run stats ---------------------------------------------------------
    e2e: Optional[E2EStats] = None
    num_runs = _int_flag(argv, "num_runs")
    warmup_runs = _int_flag(argv, "warmup_runs")
    if blocks:
        reg = len(blocks) - 1
        if num_runs is not None and warmup_runs is not None and num_runs != warmup_runs:
            matching = [i for i, b in enumerate(blocks) if b["iters"] == num_runs]
            if matching:
                reg = matching[-1]
        known_regular = (num_runs is not None and warmup_runs is not None
                         and num_runs != warmup_runs and blocks[reg]["iters"] == num_runs)
        if len(blocks) == 1 and summary is None and legacy is None and not known_regular:
            raise ParseError("the output ends after the warm-up runs: no regular-run timing",
                             hint="the run was cut short; run again (raise --timeout-s if it was killed)",
                             **ctx)
        stats = blocks[reg]["stats"]
        if stats is None or "count" not in stats:
            raise ParseError("the output ends while the regular runs were going: no timing line",
                             hint="the run was cut short; run again (raise --timeout-s if it was killed)",
                             **ctx)
        if int(stats["count"]) <= 0:
            raise BenchmarkFailed("benchmark_model made no regular runs (count=0)",
                                  hint="use --runs >= 1 and a positive --max-secs", **ctx)
        # a complete line: "count=1 curr=X", "count=N curr=X(all same)" or the full set
        complete = ("curr" in stats and (int(stats["count"]) == 1 or blocks[reg]["same"])) or all(
            k in stats for k in ("first", "curr", "min", "max", "avg", "std"))
        if not complete or blocks[reg]["cut"]:
            raise ParseError("the regular-run stats line is cut short",
                             hint="the output was truncated; run again", **ctx)
        e2e = _e2e_from_stats(stats)
        if len(blocks) == 1:
            warnings.append("only one 'Running benchmark' block found; it was taken as the regular runs")
        if reg >= 1 and blocks[reg - 1]["stats"]:
            w = blocks[reg - 1]["stats"]
            e2e.warmup_count = int(w.get("count", 0))
            if e2e.warmup_count > 0:
                e2e.warmup_mean_ms = _ms(w.get("avg", w.get("curr")))
                e2e.warmup_first_ms = _ms(w.get("first", w.get("curr")))
    if summary is not None:
        inf = summary.get("inference (avg)")
        if e2e is None:
            if inf is None:
                raise ParseError("the timing summary line has no 'Inference (avg)' value", **ctx)
            e2e = E2EStats(count=0, mean_ms=_ms(inf))
            warnings.append("no per-run stats line: count unknown (0), only the average is known")
        elif inf is not None and e2e.mean_ms and abs(inf / 1000.0 - e2e.mean_ms) > 1e-3 * e2e.mean_ms:
            warnings.append(f"summary average {inf / 1000.0:g} ms differs from the stats line "
                            f"{e2e.mean_ms:g} ms")
        if "init" in summary:
            e2e.init_ms = _ms(summary["init"])
        if "first inference" in summary:
            e2e.warmup_first_ms = _ms(summary["first inference"])
        if "warmup (avg)" in summary and e2e.warmup_mean_ms is None:
            e2e.warmup_mean_ms = _ms(summary["warmup (avg)"])
    elif legacy is not None:
        # 2018-19 tools: "Warmup: W, Init: I, Inference: A" (some builds print "no stats: A")
        inf = legacy.get("inference", legacy.get("no stats"))
        if e2e is None:
            if inf is None:
                raise ParseError("the legacy timing line has no inference value", **ctx)
            e2e = E2EStats(count=0, mean_ms=_ms(inf))
            warnings.append("legacy summary only: count unknown (0), only the average is known")
            if "no stats" in legacy:
                warnings.append("the tool labelled the inference average 'no stats'")
        if "init" in legacy:
            e2e.init_ms = _ms(legacy["init"])
        if "warmup" in legacy and e2e.warmup_mean_ms is None:
            e2e.warmup_mean_ms = _ms(legacy["warmup"])
    if e2e is None:
        if not text.strip():
            raise ParseError("benchmark_model printed nothing", hint=_FAILED_HINT, **ctx)
        what = ("only op-profiling tables, no end-to-end timing line" if has_profile
                else "no timing line found in the benchmark output")
        raise ParseError(what, **ctx)
    if e2e.init_ms is None and init_session_ms is not None:
        e2e.init_ms = init_session_ms

    # --- delegate -----------------------------------------------------------------------
    delegate_name = delegated_nodes = total_nodes = fully = None
    if replacing:
        names = list(dict.fromkeys(k[0] for k in replacing))
        chosen = names[0]
        wanted = _requested_delegate(argv)
        if wanted:
            chosen = next((n for n in names if _names_delegate(n, wanted)), chosen)
        rows = [v for k, v in replacing.items() if k[0] == chosen]
        delegate_name = chosen
        delegated_nodes = sum(r[0] for r in rows)
        totals = [r[1] for r in rows]
        total_nodes = sum(totals) if all(t is not None for t in totals) else None
        if total_nodes is not None:
            fully = delegated_nodes == total_nodes and all(r[2] == 1 for r in rows)
    if explicit:
        name, completely, kernels = explicit[-1]
        fully = completely
        wanted = _requested_delegate(argv)
        other = (delegate_name is not None and wanted is not None
                 and not _names_delegate(delegate_name, wanted) and _names_delegate(name, wanted))
        if delegate_name is None or other:
            # e.g. XNNPACK's "Replacing" counts beside "Though GPU delegate is explicitly
            # applied, ... will not be executed": the counts are not the requested delegate's.
            delegate_name = name
            delegated_nodes = 0 if kernels == 0 else None
            total_nodes = None

    return BenchmarkOutput(
        e2e=e2e,
        init_mem_mb=init_mem,
        overall_mem_mb=overall_mem,
        peak_mem_mb=peak_mem,
        delegate_name=delegate_name,
        delegated_nodes=delegated_nodes,
        total_nodes=total_nodes,
        fully_delegated=fully,
        ops=_parse_op_tables(text, csv=False) if has_profile else [],
        version=version,
        warnings=(warnings + error_lines)[:MAX_WARNINGS],
        model_size_mb=model_size_mb,
    )
