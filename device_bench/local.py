"""The host CPU as a measuring device.

``LocalDevice`` implements ``opcost.interfaces.Device``. Without a binary it times the
model with the TFLite interpreter (ai-edge-litert) in a fresh child process
(``python -m device_bench.local_worker``, JSON over stdin/stdout), so memory is
isolated, a crash cannot take this process down and ``spec.timeout_s`` is a hard
wall-clock limit. With ``binary_path`` it runs a Linux ``benchmark_model`` and reads its
output with the same parsers as on a phone.
"""
from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from device_bench.local_worker import mask_to_cpus, set_priority
from device_bench.files import HOST_MACHINE, check_model_file, elf_machine, machine_name
from opcost.errors import (BenchmarkFailed, BinaryError, DelegateError, ModelFileError, OpcostError,
                           RunTimeout, UsageError)
from opcost.records import (BenchmarkOutput, BlockRecord, DeviceInfo, DeviceState, E2EStats, Measurement,
                            ModelRef, OpRecord, RunSpec, sha256_file)

HOST_DELEGATES = ("cpu", "xnnpack")
# Per sliced op: this fraction of the model's time budget, and at least this many runs.
OP_BUDGET_FRACTION = 0.1
OP_MIN_RUNS = 20


# ---------------------------------------------------------------- pure parsers


def parse_cpuinfo(text: str) -> Dict[str, Any]:
    """CPU model name and number of logical CPUs from the text of /proc/cpuinfo."""
    model = None
    for key in ("model name", "Hardware", "Processor", "cpu model", "uarch"):
        m = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", text, re.M)
        if m and m.group(1).strip():
            model = m.group(1).strip()
            break
    cpus = len(re.findall(r"^processor\s*:\s*\d+", text, re.M))
    return {"model": model, "cpus": cpus or None}


def parse_cpu_list(text: str) -> List[int]:
    """CPU numbers of a sysfs cpu list ("0-3,6" -> [0, 1, 2, 3, 6])."""
    out: List[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def group_clusters(max_khz: Dict[int, Optional[int]]) -> List[Dict[str, Any]]:
    """CPU clusters as [{"cpus": [...], "max_khz": ...}] grouped by maximum frequency,
    slowest first (unknown frequency: one group with max_khz None)."""
    groups: Dict[Optional[int], List[int]] = {}
    for cpu in sorted(max_khz):
        groups.setdefault(max_khz[cpu], []).append(cpu)
    order = sorted(groups, key=lambda k: (k is None, k or 0))
    return [{"cpus": groups[k], "max_khz": k} for k in order]


# ---------------------------------------------------------------- the device


class LocalDevice:
    """This host as a Device: TFLite interpreter in a child process, or a Linux
    ``benchmark_model`` binary when ``binary_path`` is given.

    ``nice`` sets the scheduling priority of the measuring process (e.g. -10; negative
    values need root): on a shared host it keeps other processes from taking the pinned
    CPU in the middle of a run, at their expense. ``interpreter`` picks the TFLite
    interpreter: "auto" (ai-edge-litert, else TensorFlow's), "litert" or "tensorflow".
    ``worker_argv`` replaces the child
    command (tests); ``root`` is the filesystem root for /proc and /sys reads (tests pass
    a synthetic tree).
    """

    def __init__(self, serial: str = "local", *, binary_path: Optional[str] = None,
                 nice: Optional[int] = None, interpreter: str = "auto",
                 worker_argv: Optional[Sequence[str]] = None, root: str = "/") -> None:
        self.serial = serial
        self.binary_path = binary_path
        self.nice = nice
        self.interpreter = interpreter
        self.worker_argv = list(worker_argv) if worker_argv else [sys.executable, "-m", "device_bench.local_worker"]
        self.root = root

    # ------------------------------------------------------------ files

    def _read(self, rel: str) -> Optional[str]:
        try:
            with open(os.path.join(self.root, rel.lstrip("/"))) as f:
                return f.read()
        except (OSError, UnicodeDecodeError):
            return None

    def _read_int(self, rel: str) -> Optional[int]:
        text = self._read(rel)
        try:
            return int(text.strip()) if text is not None else None
        except ValueError:
            return None

    def _cpus(self) -> List[int]:
        text = self._read("sys/devices/system/cpu/online")
        if text:
            try:
                return parse_cpu_list(text)
            except ValueError:
                pass
        return list(range(os.cpu_count() or 1))

    # ------------------------------------------------------------ Device protocol

    def info(self) -> DeviceInfo:
        """CPU model, ABI, clusters and runtime versions of this host."""
        cpuinfo = parse_cpuinfo(self._read("proc/cpuinfo") or "")
        cpus = self._cpus()
        max_khz = {c: self._read_int(f"sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq") for c in cpus}
        extra: Dict[str, Any] = {
            "cores": len(cpus),
            "python": platform.python_version(),
            "hostname": socket.gethostname(),
            "litert": _dist_version("ai-edge-litert"),
            "kernel": platform.release(),
        }
        if self.binary_path:
            extra["binary"] = self.binary_path
        return DeviceInfo(serial=self.serial, kind="local", model=cpuinfo["model"], manufacturer=None,
                          soc=cpuinfo["model"], abi=platform.machine(), sdk=None,
                          cpu_clusters=group_clusters(max_khz), extra=extra)

    def state(self) -> DeviceState:
        """Governors, frequencies and thermal zones that this host exposes (VMs often
        expose none: the fields are then empty)."""
        st = DeviceState(timestamp=time.time())
        for c in self._cpus():
            base = f"sys/devices/system/cpu/cpu{c}/cpufreq/"
            gov = self._read(base + "scaling_governor")
            if gov:
                st.governors[f"cpu{c}"] = gov.strip()
            cur = self._read_int(base + "scaling_cur_freq")
            if cur is not None:
                st.cur_freq_khz[f"cpu{c}"] = cur
            mx = self._read_int(base + "cpuinfo_max_freq")
            if mx is not None:
                st.max_freq_khz[f"cpu{c}"] = mx
        thermal = os.path.join(self.root, "sys/class/thermal")
        try:
            zones = sorted(z for z in os.listdir(thermal) if z.startswith("thermal_zone"))
        except OSError:
            zones = []
        for z in zones:
            kind = (self._read(f"sys/class/thermal/{z}/type") or z).strip()
            milli = self._read_int(f"sys/class/thermal/{z}/temp")
            if milli is not None:
                name = kind if kind not in st.temps_c else f"{kind}:{z}"
                st.temps_c[name] = milli / 1000.0
        return st

    def measure(self, model_path: str, spec: RunSpec, *, model_name: Optional[str] = None,
                per_op: Optional[bool] = None, per_block: bool = False) -> Measurement:
        """Measure ``model_path`` on this host as ``spec`` says.

        ``per_op`` (default: ``spec.op_profiling`` for the interpreter, False for a
        binary) also times every op of the model on its own, sliced into a one-op model,
        and puts the times into ``output.ops`` (section "run", index = op index).
        ``per_block`` times every block (``models_zoo.graph.Graph.blocks``) sliced into its
        own model the same way and puts the times into ``output.blocks`` (with each block's
        structural key; identical blocks of one model are timed once).
        """
        path = check_model_file(model_path)
        self.check_spec(spec)
        model = ModelRef(sha256=sha256_file(str(path)), name=model_name or Path(model_path).stem,
                         path=str(path), size_bytes=path.stat().st_size)
        state_before = self.state()
        started = time.time()
        if self.binary_path:
            output, runtime, raw, argv = self._measure_binary(str(path), spec)
            do_ops = bool(per_op)
        else:
            output, runtime, raw, argv = self._measure_interpreter(str(path), spec)
            do_ops = spec.op_profiling if per_op is None else per_op
        if do_ops:
            output.ops = self._measure_ops(str(path), spec, output, runtime.get("op_types"))
        if per_block:
            output.blocks = self._measure_blocks(str(path), spec, output)
        wall_s = time.time() - started
        return Measurement(device=self.info(), model=model, spec=spec, output=output, runtime=runtime,
                           state_before=state_before, state_after=self.state(), started_at=started,
                           wall_s=wall_s, raw_output=raw, argv=argv)

    # ------------------------------------------------------------ interpreter runner

    def check_spec(self, spec: RunSpec) -> None:
        """Settings this host cannot honour, before any run: a delegate the interpreter runner
        lacks (DelegateError), a CPU mask naming none of its usable CPUs (UsageError)."""
        if not self.binary_path:
            self._check_host_delegate(spec)
        self._check_mask(spec)

    def _check_host_delegate(self, spec: RunSpec) -> None:
        if spec.delegate not in HOST_DELEGATES:
            raise DelegateError(f"delegate {spec.delegate!r} is not available on the host CPU runner",
                                hint="use --delegate xnnpack or cpu on the host, or measure on a phone",
                                serial=self.serial)

    def _check_mask(self, spec: RunSpec) -> None:
        if not spec.cpu_mask:
            return
        usable = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(self._cpus())
        if not set(mask_to_cpus(spec.cpu_mask)) & usable:
            raise UsageError(f"cpu mask {spec.cpu_mask!r} selects no CPU of this host",
                             hint=f"this host's usable CPUs are {sorted(usable)}; e.g. --cpu-mask "
                                  f"{1 << max(usable):x} for CPU {max(usable)}")

    def _run_worker(self, request: Dict[str, Any], timeout_s: float) -> Tuple[Dict[str, Any], str]:
        """Run one child, return (answer, raw stdout). Raises RunTimeout / BenchmarkFailed."""
        argv = self.worker_argv
        env = dict(os.environ)
        # The child must import this package even when started from another directory.
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        out, err, code = _run_with_timeout(argv, json.dumps(request), timeout_s, env=env, serial=self.serial)
        try:
            answer = json.loads(out) if out.strip() else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "ok" not in answer:
            raise BenchmarkFailed("the local measuring process ended without a result"
                                  + (" (killed by a signal)" if code < 0 else ""),
                                  hint="the model probably crashed the TFLite runtime; the output above "
                                       "shows where; try --delegate cpu",
                                  serial=self.serial, argv=argv, exit_code=code, output_tail=err or out)
        if not answer["ok"]:
            raise _worker_error(answer.get("error") or {}, argv=argv, code=code, stderr=err, serial=self.serial)
        return answer, out

    def _measure_interpreter(self, path: str, spec: RunSpec):
        req = {"cpu_mask": spec.cpu_mask, "nice": self.nice, "interpreter": self.interpreter,
               "jobs": [{"model_path": path, "spec": spec.to_dict()}]}
        answer, raw = self._run_worker(req, spec.timeout_s)
        res = answer["results"][0]
        interp = answer.get("interpreter") or {}
        warnings: List[str] = []
        delegate_nodes = int(res.get("delegate_nodes") or 0)
        if spec.delegate == "xnnpack" and delegate_nodes == 0:
            warnings.append("XNNPACK was requested but took no node of this model; it ran on builtin kernels")
        if isinstance(answer.get("nice"), str):
            warnings.append(f"priority nice={self.nice} {answer['nice']}")
        output = BenchmarkOutput(
            e2e=E2EStats.from_dict(res["e2e"]),
            init_mem_mb=res.get("init_mem_mb"),
            overall_mem_mb=res.get("overall_mem_mb"),
            peak_mem_mb=res.get("peak_rss_mb"),
            delegate_name="XNNPACK" if delegate_nodes else None,
            total_nodes=len(res.get("op_types") or []) or None,
            version=interp.get("version"),
            warnings=warnings,
        )
        runtime = {"name": "litert-interpreter", "version": interp.get("version"),
                   "module": interp.get("module"), "num_threads": spec.threads,
                   "extra_threads": res.get("extra_threads"), "affinity": answer.get("affinity"),
                   "thread_cpu_ms_per_run": res.get("thread_cpu_ms_per_run"), "nice": answer.get("nice"),
                   "op_types": res.get("op_types")}
        return output, runtime, raw, list(self.worker_argv)

    def measure_interleaved(self, model_paths: Sequence[str], spec: RunSpec, *, rounds: int = 5) -> List[List[float]]:
        """Time several models alternately in one process (interpreter only): after a
        warm-up of each, ``rounds`` rounds each run every model's timed loop once.
        Returns per model the median latency (ms) of each round. For comparisons between
        models (an op, another op, the pair of them) on a host whose speed drifts."""
        if self.binary_path:
            raise UsageError("interleaved timing needs the TFLite interpreter, not a benchmark_model binary",
                             hint="leave out --binary on the host")
        self.check_spec(spec)
        paths = [str(check_model_file(p)) for p in model_paths]
        req = {"cpu_mask": spec.cpu_mask, "nice": self.nice, "interpreter": self.interpreter,
               "interleave_rounds": int(rounds),
               "jobs": [{"model_path": p, "spec": spec.to_dict()} for p in paths]}
        answer, _ = self._run_worker(req, spec.timeout_s)
        return [list(r["round_median_ms"]) for r in answer["results"]]

    def _op_spec(self, spec: RunSpec) -> RunSpec:
        return replace(spec,
                       num_runs=max(OP_MIN_RUNS, int(spec.num_runs * OP_BUDGET_FRACTION)),
                       min_secs=spec.min_secs * OP_BUDGET_FRACTION,
                       max_secs=max(spec.max_secs * OP_BUDGET_FRACTION, 1.0),
                       warmup_runs=max(1, spec.warmup_runs),
                       warmup_min_secs=spec.warmup_min_secs * OP_BUDGET_FRACTION,
                       op_profiling=False)

    def _measure_ops(self, path: str, spec: RunSpec, full: BenchmarkOutput,
                     full_op_types: Optional[List[str]] = None) -> List[OpRecord]:
        """Slice every op into its own model and time all of them (one child process
        for the interpreter, one binary run per op for a binary)."""
        from models_zoo.slicing import slice_all

        op_spec = self._op_spec(spec)
        with tempfile.TemporaryDirectory(prefix="opcost-slices-") as tmp:
            skipped: List[Any] = []
            slices = [s for s in slice_all(path, tmp, ops=True, blocks=False, skipped=skipped) if s[0] == "op"]
            for _kind, idx, reason in skipped:
                full.warnings.append(f"op {idx} not timed: {reason}")
            if not slices:
                full.warnings.append("slicing produced no single-op model; no per-op times")
                return []
            types = _op_types(path) or dict(enumerate(full_op_types or []))
            ops: List[OpRecord] = []
            if self.binary_path:
                for _kind, index, spath, _key in slices:
                    out, _rt, _raw, _argv = self._measure_binary(spath, op_spec)
                    ops.append(_op_record(index, types, out.e2e))
            else:
                req = {"cpu_mask": spec.cpu_mask, "nice": self.nice, "interpreter": self.interpreter,
                       "jobs": [{"model_path": s[2], "spec": op_spec.to_dict()} for s in slices]}
                answer, _raw = self._run_worker(req, spec.timeout_s)
                for (_kind, index, _spath, _key), res in zip(slices, answer["results"]):
                    names = res.get("op_types") or []
                    if index not in types and len(names) == 1:
                        types[index] = names[0]  # a one-op slice holds exactly that op
                    ops.append(_op_record(index, types, E2EStats.from_dict(res["e2e"])))
        n_total = full.total_nodes
        if n_total and len(ops) != n_total:
            full.warnings.append(f"per-op times for {len(ops)} of {n_total} ops (ops on constants only "
                                 "and ops that cannot be sliced are left out)")
        return ops

    def _measure_blocks(self, path: str, spec: RunSpec, full: BenchmarkOutput) -> List[BlockRecord]:
        """Slice every block into its own model and time each distinct structure once
        (same budget per slice as per-op timing)."""
        from models_zoo.graph import read_graph
        from models_zoo.slicing import slice_all

        op_spec = self._op_spec(spec)
        graph = read_graph(path)
        blocks = graph.blocks()
        with tempfile.TemporaryDirectory(prefix="opcost-blocks-") as tmp:
            skipped: List[Any] = []
            slices = slice_all(graph, tmp, ops=False, blocks=True, unique=True, skipped=skipped)
            for _kind, idx, reason in skipped:
                full.warnings.append(f"block {idx} not timed: {reason}")
            if not slices:
                full.warnings.append("slicing produced no block model; no per-block times")
                return []
            by_key: Dict[str, E2EStats] = {}
            if self.binary_path:
                for _kind, _index, spath, key in slices:
                    out, _rt, _raw, _argv = self._measure_binary(spath, op_spec)
                    by_key[key] = out.e2e
            else:
                req = {"cpu_mask": spec.cpu_mask, "nice": self.nice, "interpreter": self.interpreter,
                       "jobs": [{"model_path": s[2], "spec": op_spec.to_dict()} for s in slices]}
                answer, _raw = self._run_worker(req, spec.timeout_s)
                for s, res in zip(slices, answer["results"]):
                    by_key[s[3]] = E2EStats.from_dict(res["e2e"])
        ops = graph.main_ops
        out_blocks = []
        for b in blocks:
            st = by_key.get(b.key)
            if st is None:
                continue
            out_blocks.append(BlockRecord(index=b.index, key=b.key, avg_ms=st.mean_ms, ops=list(b.ops),
                                          op_types=[ops[i].type for i in b.ops], median_ms=st.median_ms,
                                          first_ms=st.first_ms, count=st.count))
        if len(out_blocks) != len(blocks):
            full.warnings.append(f"per-block times for {len(out_blocks)} of {len(blocks)} blocks")
        return out_blocks

    # ------------------------------------------------------------ binary runner

    def _measure_binary(self, path: str, spec: RunSpec):
        binary = self.binary_path
        assert binary is not None
        if not os.path.isfile(binary):
            raise BinaryError(f"benchmark_model binary not found: {binary}", serial=self.serial)
        machine = elf_machine(binary)
        if machine is not None and HOST_MACHINE.get(platform.machine().lower()) not in (None, machine):
            raise BinaryError(f"{binary} is built for {machine_name(machine)} but this host is "
                              f"{platform.machine()}", serial=self.serial,
                              hint="--device local needs a Linux benchmark_model built for this host; a "
                                   "phone's build runs with --device SERIAL")
        if not os.access(binary, os.X_OK):
            raise BinaryError(f"benchmark_model binary is not executable: {binary}",
                              hint=f"chmod +x {binary}, or pass the right file with --binary", serial=self.serial)
        from device_bench.benchmark_args import build_argv
        from device_bench.parsers import check_delegate, parse_benchmark_output, run_notes

        argv = [str(a) for a in build_argv(spec, binary=binary, model=path)]
        cpus = None
        if spec.cpu_mask:
            cpus = set(mask_to_cpus(spec.cpu_mask)) & set(os.sched_getaffinity(0))
        try:
            out, err, code = _run_with_timeout(argv, None, spec.timeout_s, serial=self.serial, cpus=cpus,
                                               nice=self.nice)
        except OSError as e:
            raise BinaryError(f"cannot run {binary}: {e}",
                              hint="the binary must be a Linux build for this host's ABI "
                                   f"({platform.machine()})", serial=self.serial, argv=argv) from None
        text = out + ("\n" + err if err else "")
        output = parse_benchmark_output(text, argv=argv, serial=self.serial, exit_code=code)
        check_delegate(output, spec.delegate, serial=self.serial, argv=argv, exit_code=code, output_tail=text)
        output.warnings = list(output.warnings) + run_notes(output, spec.delegate, spec.op_profiling)
        runtime = {"name": "benchmark_model", "version": output.version, "sha256": sha256_file(binary),
                   "path": binary}
        return output, runtime, text, argv


# ---------------------------------------------------------------- helpers


def _dist_version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def _op_types(path: str) -> Dict[int, str]:
    """Op index -> builtin name of subgraph 0, from models_zoo.graph when it can read the file."""
    try:
        from models_zoo.graph import read_graph

        g = read_graph(path)
        out = {}
        for op in getattr(g, "main_ops", g.ops):
            if getattr(op, "subgraph", 0) == 0 and op.type:
                out[int(op.index)] = str(op.type)
        return out
    except (ImportError, OpcostError, AttributeError):
        return {}


def _op_record(index: int, types: Dict[int, str], stats: E2EStats) -> OpRecord:
    node_type = types.get(index, "UNKNOWN")
    return OpRecord(node_type=node_type, name=f"op{index}:{node_type}", avg_ms=stats.mean_ms,
                    first_ms=stats.first_ms, times_called=1, index=index, section="run")


def _run_with_timeout(argv: Sequence[str], stdin_text: Optional[str], timeout_s: float, *,
                      env: Optional[Dict[str, str]] = None, serial: Optional[str] = None,
                      cpus: Optional[set] = None, nice: Optional[int] = None) -> Tuple[str, str, int]:
    """Run argv in its own process group; kill the whole group after ``timeout_s``."""
    def preexec() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice is not None:
            try:
                set_priority(nice)
            except OSError:
                pass  # not allowed (not root): run at the normal priority

    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,
                            preexec_fn=preexec if (cpus or nice is not None) else None)
    try:
        out, err = proc.communicate(stdin_text, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        raise RunTimeout(f"the run did not finish within timeout_s={timeout_s:g} s and was killed",
                         serial=serial, argv=list(argv), output_tail=err or out) from None
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    return out, err, proc.returncode


def _worker_error(error: Dict[str, Any], *, argv, code: int, stderr: str, serial: str) -> OpcostError:
    kind = error.get("kind")
    msg = error.get("message") or "the local measuring process failed"
    ctx = dict(serial=serial, argv=argv, exit_code=code, output_tail=stderr)
    if kind == "model":
        return ModelFileError(msg, **ctx)
    if kind == "delegate":
        return DelegateError(msg, **ctx)
    if kind == "usage":
        return UsageError(msg, hint="fix the setting named above (cpu mask, interpreter) or install "
                                    "ai-edge-litert", **ctx)
    if kind == "load":
        return BenchmarkFailed(msg, hint="the TFLite interpreter rejected the model (unsupported or custom op?); "
                                         "see the output above", **ctx)
    return BenchmarkFailed(msg, hint="see the output above; try --delegate cpu or fewer threads", **ctx)
