"""Child process that times .tflite models with the TFLite interpreter on this host.

Run as ``python -m device_bench.local_worker``: reads one JSON request on stdin, writes
one JSON answer on stdout, exits. ``device_bench.local.LocalDevice`` starts a fresh
child per measurement so that memory is isolated, a crash or hang cannot take the host
process down, and the caller can enforce a hard wall-clock limit.

Request::

    {"cpu_mask": "2" | null, "nice": -10 | null, "interpreter": "auto"|"litert"|"tensorflow",
     "jobs": [{"model_path": "...", "spec": {RunSpec fields}}, ...]}

Answer (``ok`` true)::

    {"ok": true, "interpreter": {"name", "module", "version"},
     "results": [{"model_path", "e2e": {E2EStats fields}, "init_mem_mb",
                  "overall_mem_mb", "op_types", "delegate_nodes", "extra_threads",
                  "thread_cpu_ms_per_run", "peak_rss_mb"}]}

or ``{"ok": false, "error": {"kind": "model"|"load"|"delegate"|"usage"|"run",
"message", "job"}}``. Native libraries' own prints go to stderr (fd 1 is redirected)
so that stdout carries only the answer.
"""
from __future__ import annotations

import gc
import json
import os
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

INPUT_SEED = 0


class WorkerError(Exception):
    """A failure the parent maps to an OpcostError subclass by ``kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# ---------------------------------------------------------------- pure helpers


def percentile_nearest(sorted_ms: Sequence[float], pct: float) -> float:
    """Value at ``pct`` percent of an ascending list (index ``n*pct/100``, clipped),
    the rule benchmark_model's StatWithPercentiles uses for p5/p95."""
    if not sorted_ms:
        raise ValueError("no values")
    i = int(len(sorted_ms) * pct / 100.0)
    return sorted_ms[min(max(i, 0), len(sorted_ms) - 1)]


def summarize_ms(run_ms: Sequence[float], *, warmup_ms: Sequence[float] = (),
                 init_ms: Optional[float] = None) -> Dict[str, Any]:
    """E2EStats fields from per-run times in ms.

    ``first_ms`` is the first inference ever (first warm-up run if there was one), like
    benchmark_model's "First inference"; ``std_ms`` is the population std.
    """
    if not run_ms:
        raise ValueError("no regular runs")
    n = len(run_ms)
    s = sorted(run_ms)
    mean = sum(run_ms) / n
    var = sum((x - mean) ** 2 for x in run_ms) / n
    mid = n // 2
    median = s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0
    first = warmup_ms[0] if warmup_ms else run_ms[0]
    return {
        "count": n,
        "mean_ms": mean,
        "std_ms": var ** 0.5,
        "min_ms": s[0],
        "max_ms": s[-1],
        "median_ms": median,
        "p5_ms": percentile_nearest(s, 5),
        "p95_ms": percentile_nearest(s, 95),
        "first_ms": first,
        "init_ms": init_ms,
        "warmup_mean_ms": (sum(warmup_ms) / len(warmup_ms)) if warmup_ms else None,
        "warmup_count": len(warmup_ms),
    }


def timed_loop(invoke: Callable[[], Any], *, min_runs: int, min_secs: float, max_secs: float,
               clock_ns: Callable[[], int] = time.perf_counter_ns) -> List[float]:
    """Call ``invoke`` while fewer than ``min_runs`` runs or ``min_secs`` have passed,
    but never start a run after ``max_secs`` (benchmark_model's loop). Returns ms per run."""
    times_ms: List[float] = []
    start = clock_ns()
    min_ns = int(min_secs * 1e9)
    max_ns = int(max_secs * 1e9)
    while True:
        elapsed = clock_ns() - start
        if len(times_ms) >= min_runs and elapsed >= min_ns:
            break
        if elapsed > max_ns:
            break
        t0 = clock_ns()
        invoke()
        times_ms.append((clock_ns() - t0) / 1e6)
    return times_ms


def mask_to_cpus(cpu_mask: str) -> List[int]:
    """CPU numbers whose bit is set in a hex mask ("f0" -> [4, 5, 6, 7])."""
    value = int(cpu_mask, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def read_proc_status(text: str) -> Dict[str, int]:
    """VmRSS / VmHWM (kB) and Threads from the text of /proc/<pid>/status."""
    out: Dict[str, int] = {}
    for key in ("VmRSS", "VmHWM", "Threads"):
        m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        if m:
            out[key] = int(m.group(1))
    return out


# ---------------------------------------------------------------- process state


def _status() -> Dict[str, int]:
    try:
        with open("/proc/self/status") as f:
            return read_proc_status(f.read())
    except OSError:
        return {}


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def set_priority(nice: int) -> None:
    """Set this process's nice value, and its autogroup's when it leads its own session.

    With CONFIG_SCHED_AUTOGROUP (on by default in desktop/VM kernels) the scheduler first
    shares CPU time between sessions and a nice value only ranks a process inside its own
    session; the parent starts us in a new session, so the session's weight
    (/proc/self/autogroup) is what counts against other users' processes.
    """
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass  # no autogroup support, or not allowed: the per-process nice still applies


def _load_interpreter_module(which: str = "auto"):
    """The interpreter module: ai-edge-litert, or TensorFlow's copy when it is missing
    (``which``: "auto", "litert" or "tensorflow")."""
    from importlib.metadata import PackageNotFoundError, version

    mod = None
    if which in ("auto", "litert"):
        try:
            from ai_edge_litert import interpreter as mod

            name, dists = "ai_edge_litert", ("ai-edge-litert",)
        except ImportError:
            if which == "litert":
                raise WorkerError("usage", "ai-edge-litert is not installed (pip install ai-edge-litert)") from None
    if mod is None:
        if which not in ("auto", "tensorflow"):
            raise WorkerError("usage", f"unknown interpreter {which!r}: use auto, litert or tensorflow")
        try:
            from tensorflow.lite.python import interpreter as mod  # type: ignore[no-redef]

            name, dists = "tensorflow.lite", ("tensorflow", "tensorflow-cpu")
        except ImportError:
            raise WorkerError("usage", "neither ai-edge-litert nor tensorflow is installed "
                                       "(pip install ai-edge-litert)") from None
    ver = None
    for dist in dists:
        try:
            ver = version(dist)
            break
        except PackageNotFoundError:
            continue
    return mod, {"name": "litert-interpreter", "module": name, "version": ver}


def _random_inputs(interp, rng) -> None:
    import numpy as np

    for d in interp.get_input_details():
        shape = [int(x) for x in d["shape"]]
        dtype = np.dtype(d["dtype"])
        if dtype == np.bool_:
            arr = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dtype, np.floating):
            arr = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
        elif dtype in (np.int8, np.uint8, np.int16, np.uint16):
            info = np.iinfo(dtype)
            arr = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            # Small non-negative values: integer inputs are often indices (gather, embedding).
            arr = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            raise WorkerError("load", f"input {d['name']!r} has dtype {dtype} that we cannot fill")
        interp.set_tensor(d["index"], arr)


def _make_interpreter(mod, model_path: str, spec: Dict[str, Any]):
    delegate = spec.get("delegate", "xnnpack")
    kwargs: Dict[str, Any] = {"model_path": model_path, "num_threads": int(spec.get("threads", 1))}
    if delegate == "cpu":
        # Plain builtin kernels: this resolver type turns off the default (XNNPACK) delegate.
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate != "xnnpack":
        raise WorkerError("delegate", f"delegate {delegate!r} is not available on this host")
    try:
        interp = mod.Interpreter(**kwargs)
    except ValueError as err:
        # Raised for files that are not a readable TFLite flatbuffer.
        raise WorkerError("model", f"cannot load {model_path}: {err}") from None
    except RuntimeError as err:
        raise WorkerError("load", f"cannot create an interpreter for {model_path}: {err}") from None
    try:
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        kind = "delegate" if delegate == "xnnpack" and "elegate" in str(err) else "load"
        raise WorkerError(kind, f"allocate_tensors failed for {model_path}: {err}") from None
    return interp


def _warmup_loop(invoke: Callable[[], Any], spec: Dict[str, Any]) -> List[float]:
    return timed_loop(invoke, min_runs=int(spec.get("warmup_runs", 1)),
                      min_secs=float(spec.get("warmup_min_secs", 0.5)), max_secs=float(spec.get("max_secs", 150.0)))


def _regular_loop(invoke: Callable[[], Any], spec: Dict[str, Any]) -> List[float]:
    return timed_loop(invoke, min_runs=int(spec.get("num_runs", 50)),
                      min_secs=float(spec.get("min_secs", 1.0)), max_secs=float(spec.get("max_secs", 150.0)))


def measure_one(mod, model_path: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Time one model as ``spec`` (a RunSpec dict) says, in this process."""
    import numpy as np

    gc.collect()
    before = _status()
    _reset_peak_rss()
    base = _status()
    t0 = time.perf_counter_ns()
    interp = _make_interpreter(mod, model_path, spec)
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    after_init = _status()
    _random_inputs(interp, np.random.default_rng(INPUT_SEED))

    def invoke() -> None:
        interp.invoke()

    max_secs = float(spec.get("max_secs", 150.0))
    gc_was = gc.isenabled()
    gc.disable()
    try:
        try:
            warm = _warmup_loop(invoke, spec)
            cpu0 = time.thread_time_ns()
            runs = _regular_loop(invoke, spec)
            cpu_ns = time.thread_time_ns() - cpu0
        except RuntimeError as err:
            raise WorkerError("run", f"invoke failed for {model_path}: {err}") from None
    finally:
        if gc_was:
            gc.enable()
    if not runs:
        raise WorkerError("run", f"no regular run finished within max_secs={max_secs}")
    end = _status()
    op_types: List[str] = []
    delegate_nodes = 0
    try:
        for d in interp._get_ops_details():
            if d.get("op_name") == "DELEGATE":
                delegate_nodes += 1
            else:
                op_types.append(str(d.get("op_name")))
    except Exception:  # private API; the op list is optional information
        op_types = []
    res: Dict[str, Any] = {
        "model_path": model_path,
        "e2e": summarize_ms(runs, warmup_ms=warm, init_ms=init_ms),
        "op_types": op_types,
        "delegate_nodes": delegate_nodes,
        # CPU time of the calling thread per regular run: with 1 thread all work runs in
        # it, so wall >> cpu means the process was descheduled (a busy host), not slow.
        "thread_cpu_ms_per_run": cpu_ns / 1e6 / len(runs),
    }
    if "VmRSS" in base and "VmRSS" in after_init:
        res["init_mem_mb"] = (after_init["VmRSS"] - base["VmRSS"]) / 1024.0
    if "VmRSS" in base and "VmHWM" in end:
        res["overall_mem_mb"] = max(end["VmHWM"] - base["VmRSS"], 0) / 1024.0
    if "VmHWM" in end:
        res["peak_rss_mb"] = end["VmHWM"] / 1024.0  # whole child process, interpreter included
    if "Threads" in before and "Threads" in end:
        res["extra_threads"] = end["Threads"] - before["Threads"]
    del interp
    return res


def measure_interleaved(mod, jobs: Sequence[Dict[str, Any]], rounds: int) -> List[Dict[str, Any]]:
    """Time several models alternately in this process: every model is loaded and warmed
    up, then each round runs every model's timed loop once, in order. Models compared
    with each other (an op, another op, the pair) then see the same machine state; on a
    shared host that drifts over seconds, which separate processes would turn into
    differences between the models. Returns per job its e2e summary over all rounds and
    the median of each round (``round_median_ms``)."""
    import numpy as np

    interps, inits = [], []
    rng = np.random.default_rng(INPUT_SEED)
    for job in jobs:
        t0 = time.perf_counter_ns()
        interp = _make_interpreter(mod, job["model_path"], job["spec"])
        inits.append((time.perf_counter_ns() - t0) / 1e6)
        _random_inputs(interp, rng)
        interps.append(interp)
    warm: List[List[float]] = []
    per_round: List[List[List[float]]] = [[] for _ in jobs]
    gc_was = gc.isenabled()
    gc.disable()
    try:
        try:
            for job, interp in zip(jobs, interps):
                warm.append(_warmup_loop(interp.invoke, job["spec"]))
            for _ in range(max(1, int(rounds))):
                for i, (job, interp) in enumerate(zip(jobs, interps)):
                    per_round[i].append(_regular_loop(interp.invoke, job["spec"]))
        except RuntimeError as err:
            raise WorkerError("run", f"invoke failed: {err}") from None
    finally:
        if gc_was:
            gc.enable()
    out = []
    for i, job in enumerate(jobs):
        runs = [t for r in per_round[i] for t in r]
        if not runs:
            raise WorkerError("run", f"no regular run of {job['model_path']} finished within max_secs")
        out.append({"model_path": job["model_path"],
                    "e2e": summarize_ms(runs, warmup_ms=warm[i], init_ms=inits[i]),
                    "round_median_ms": [float(np.median(r)) for r in per_round[i] if r]})
    return out


def run_request(req: Dict[str, Any]) -> Dict[str, Any]:
    """Handle one request dict; returns the answer dict (never raises WorkerError)."""
    job_i: Optional[int] = None
    try:
        mask = req.get("cpu_mask")
        if mask:
            if not hasattr(os, "sched_setaffinity"):
                raise WorkerError("usage", "CPU pinning (cpu_mask) is not supported on this OS")
            cpus = set(mask_to_cpus(mask)) & set(os.sched_getaffinity(0))
            if not cpus:
                raise WorkerError("usage", f"cpu mask {mask!r} selects no CPU this process may use "
                                           f"(allowed: {sorted(os.sched_getaffinity(0))})")
            os.sched_setaffinity(0, cpus)
        nice_applied = None
        if req.get("nice") is not None:
            # Per-thread on Linux; threads the interpreter starts later inherit it.
            try:
                set_priority(int(req["nice"]))
                nice_applied = os.getpriority(os.PRIO_PROCESS, 0)
            except OSError as err:
                nice_applied = f"not applied: {err}"
        mod, interp_info = _load_interpreter_module(req.get("interpreter") or "auto")
        results = []
        if req.get("interleave_rounds"):
            results = measure_interleaved(mod, req["jobs"], int(req["interleave_rounds"]))
        else:
            for job_i, job in enumerate(req["jobs"]):
                results.append(measure_one(mod, job["model_path"], job["spec"]))
        return {"ok": True, "interpreter": interp_info, "results": results,
                "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "nice": nice_applied}
    except WorkerError as err:
        return {"ok": False, "error": {"kind": err.kind, "message": err.message, "job": job_i}}


def main() -> int:
    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything native code prints goes to stderr, stdout is ours
    sys.stdout = sys.stderr
    try:
        req = json.loads(sys.stdin.read())
    except ValueError as err:
        answer = {"ok": False, "error": {"kind": "usage", "message": f"bad request: {err}", "job": None}}
    else:
        answer = run_request(req)
    with os.fdopen(out_fd, "w") as out:
        out.write(json.dumps(answer))
        out.flush()
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
