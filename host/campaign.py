"""Campaigns: measure many models x devices x settings x repeats, resumably.

A plan file (YAML ``.yaml``/``.yml`` or TOML ``.toml``) says what to measure::

    models: [models/*.tflite, extra/net.tflite]   # paths, globs or folders, relative to the plan
    devices: [R58M123ABC, local]                  # adb serials, or "local" for this host
    num_runs: 50                                  # RunSpec fields at top level are defaults ...
    settings:                                     # ... for each entry here (default: one, [{}])
      - {delegate: xnnpack, threads: 1}
      - {delegate: gpu}
    repeats: 3                                    # measure every combination this many times
    retries: 2                                    # retries after a transient error (adb, unplug)
    backoff_s: 2.0                                # first retry wait; doubles each retry
    backoff_max_s: 60.0
    binary: bin/benchmark_model                   # or {arm64-v8a: bin/bm64, armeabi-v7a: bin/bm32}
    thermal: {max_c: 45, max_wait_s: 300, poll_s: 10}  # before a run, wait (at most max_wait_s)
                                                  # until the hottest sensor is <= max_c
    nice: -10                                     # local device only: priority of the measuring
                                                  # process (-20..19; negative values need root)
    device_options: {}                            # extra keyword arguments for open_device
    store: results/opcost.db                      # default: opcost.db next to the plan

Every (model content, device serial, settings, repeat) is a job whose id is a hash of that
content, stored in the store's ``jobs`` table; re-running a plan skips done jobs, so a
renamed or moved plan with the same content resumes. One campaign runs per store at a
time (a lock file next to the store refuses a second runner).
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from opcost.errors import (
    AdbError,
    BinaryError,
    DeviceDisconnected,
    DeviceError,
    OpcostError,
    PlanError,
    UsageError,
)
from opcost.records import Measurement, ModelRef, RunSpec, sha256_file

log = logging.getLogger("opcost.campaign")

PLAN_SUFFIXES = (".yaml", ".yml", ".toml")
TRANSIENT_ERRORS = (DeviceDisconnected, AdbError)
# Errors after which every further job on the device would fail the same way (storage full,
# unusable binary, device offline/unauthorized): stop that device at once, no retries.
DEVICE_FATAL_ERRORS = (DeviceError, BinaryError)
# error_type of jobs that failed because their device went away (not because of the job):
# the next run of the plan retries them without --retry-failed.
DEVICE_LOST = "DeviceLost"
LOCAL_SERIAL = "local"

_SPEC_FIELDS = {f.name: f for f in dataclasses.fields(RunSpec)}
_PLAN_KEYS = ("name", "description", "models", "devices", "settings", "defaults", "repeats", "retries",
              "backoff_s", "backoff_max_s", "binary", "thermal", "nice", "device_options", "store")
# thermal: {key: ...} -> open_device(thermal_<key>=...)
_THERMAL_KEYS = ("max_c", "max_wait_s", "poll_s")


# ---------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Job:
    """One measurement to take: a model file on a device with one spec, repeat ``repeat``."""

    job_id: str
    device_serial: str
    model: ModelRef
    spec: RunSpec
    repeat: int

    def to_row(self) -> Dict[str, Any]:
        return {"job_id": self.job_id, "device_serial": self.device_serial,
                "model_sha256": self.model.sha256, "model_path": self.model.path,
                "spec_key": self.spec.key(), "spec": self.spec.to_dict(), "repeat": self.repeat}


def job_id(model_sha256: str, device_serial: str, spec_key: str, repeat: int) -> str:
    """Content id of a job: independent of plan name, paths and order."""
    blob = json.dumps([model_sha256, device_serial, spec_key, int(repeat)])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Plan:
    """A validated campaign plan (paths absolute). Build with ``load_plan`` or ``plan_from_dict``."""

    models: List[ModelRef]
    devices: List[str]
    specs: List[RunSpec]
    repeats: int = 1
    retries: int = 2
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    binary: Union[None, str, Dict[str, str]] = None
    thermal_max_c: Optional[float] = None
    thermal_max_wait_s: Optional[float] = None
    thermal_poll_s: Optional[float] = None
    nice: Optional[int] = None  # priority of the measuring process on the local device
    device_options: Dict[str, Any] = field(default_factory=dict)
    store: Optional[str] = None
    name: Optional[str] = None
    source: Optional[str] = None

    def jobs(self) -> List[Job]:
        """All jobs, per device ordered repeat-major so repeats are spread over the campaign."""
        out = []
        for serial in self.devices:
            for rep in range(self.repeats):
                for model in self.models:
                    for spec in self.specs:
                        out.append(Job(job_id(model.sha256, serial, spec.key(), rep), serial, model, spec, rep))
        return out


def load_plan(path: str) -> Plan:
    """Read and validate a plan file; PlanError naming the bad key otherwise."""
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise PlanError(f"plan file {path!r} does not exist", hint="check the path of the plan file")
    if os.path.isdir(path):
        raise PlanError(f"plan path {path!r} is a folder", hint="pass a .yaml, .yml or .toml plan file")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in PLAN_SUFFIXES:
        raise PlanError(f"plan file {path!r} has extension {suffix or '(none)'!r}",
                        hint="name the plan *.yaml, *.yml (YAML) or *.toml (TOML)")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise PlanError(f"cannot read plan file {path!r}: {err}") from None
    if suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise PlanError(f"plan file {path!r} is not valid TOML: {err}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise PlanError(f"plan file {path!r} is not valid YAML: {err}") from None
    return plan_from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


PLAN_HELP_HINT = "see `opcost campaign --help` for the plan format"


def _err(source: str, key: str, what: str, hint: Optional[str] = None) -> PlanError:
    return PlanError(f"plan {source}: {key}: {what}", hint=hint or PLAN_HELP_HINT)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_list(data: Any, key: str, source: str) -> List[str]:
    if isinstance(data, str):
        data = [data]
    if not isinstance(data, list) or not data:
        raise _err(source, key, f"must be a non-empty list of strings, got {data!r}")
    for i, v in enumerate(data):
        if not isinstance(v, str) or not v.strip():
            raise _err(source, f"{key}[{i}]", f"must be a non-empty string, got {v!r}")
    return [v.strip() for v in data]


def _check_spec_fields(d: Any, key: str, source: str) -> Dict[str, Any]:
    if not isinstance(d, Mapping):
        raise _err(source, key, f"must be a mapping of run settings, got {d!r}",
                   hint=f"allowed settings: {', '.join(_SPEC_FIELDS)}")
    for name, value in d.items():
        if name not in _SPEC_FIELDS:
            raise _err(source, f"{key}.{name}", "is not a run setting",
                       hint=f"allowed settings: {', '.join(_SPEC_FIELDS)}")
        default = _SPEC_FIELDS[name].default
        if name == "cpu_mask":
            ok = value is None or isinstance(value, str)
            want = "a hex string such as \"f0\" (quote it)"
        elif isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, want = _is_int(value), "an integer"
        elif isinstance(default, float):
            ok, want = _is_num(value), "a number"
        else:
            ok, want = isinstance(value, str), "a string"
        if not ok:
            raise _err(source, f"{key}.{name}", f"must be {want}, got {value!r}")
    return dict(d)


def _resolve_models(patterns: List[str], base_dir: str, source: str) -> List[ModelRef]:
    models: List[ModelRef] = []
    seen: Dict[str, str] = {}
    for i, pat in enumerate(patterns):
        full = os.path.join(base_dir, os.path.expanduser(pat))
        if os.path.isdir(full):
            paths = sorted(glob.glob(os.path.join(full, "*.tflite")))
            if not paths:
                raise _err(source, f"models[{i}]", f"folder {pat!r} has no *.tflite files")
        elif glob.has_magic(pat):
            paths = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
            if not paths:
                raise _err(source, f"models[{i}]", f"pattern {pat!r} matches no file (relative to {base_dir})")
        else:
            if not os.path.isfile(full):
                raise _err(source, f"models[{i}]", f"model file {pat!r} does not exist (relative to {base_dir})")
            paths = [full]
        for p in paths:
            p = os.path.abspath(p)
            try:
                with open(p, "rb") as f:
                    head = f.read(8)
            except OSError as err:
                raise _err(source, f"models[{i}]", f"cannot read {p!r}: {err}") from None
            if head[4:8] != b"TFL3":
                raise _err(source, f"models[{i}]", f"{p!r} is not a TFLite model (no 'TFL3' identifier)",
                           hint="list only .tflite flatbuffers under models:")
            sha = sha256_file(p)
            if sha in seen:
                log.info("model %s has the same content as %s; measured once", p, seen[sha])
                continue
            seen[sha] = p
            name = os.path.splitext(os.path.basename(p))[0]
            models.append(ModelRef(sha256=sha, name=name, path=p, size_bytes=os.path.getsize(p), source="plan"))
    return models


def plan_from_dict(data: Any, *, base_dir: str = ".", source: str = "<dict>") -> Plan:
    """Validate a parsed plan; relative paths are taken from ``base_dir``."""
    if not isinstance(data, Mapping):
        raise PlanError(f"plan {source}: must be a mapping of keys (models, devices, settings, ...), "
                        f"got {type(data).__name__}", hint=PLAN_HELP_HINT)
    base_dir = os.path.abspath(base_dir)
    defaults: Dict[str, Any] = {}
    for key in data:
        if not isinstance(key, str) or (key not in _PLAN_KEYS and key not in _SPEC_FIELDS):
            raise _err(source, str(key), "unknown key",
                       hint=f"plan keys: {', '.join(_PLAN_KEYS)}; run settings (defaults): "
                            f"{', '.join(_SPEC_FIELDS)}")
        if key in _SPEC_FIELDS:
            defaults[key] = data[key]
    _check_spec_fields(defaults, "(top level)", source)
    if "defaults" in data:
        more = _check_spec_fields(data["defaults"], "defaults", source)
        both = set(more) & set(defaults)
        if both:
            raise _err(source, "defaults", f"{sorted(both)} also given at top level; give each once")
        defaults.update(more)

    for req in ("models", "devices"):
        if req not in data:
            raise _err(source, req, "is missing", hint="a plan needs at least models: and devices:")
    models = _resolve_models(_str_list(data["models"], "models", source), base_dir, source)
    devices = _str_list(data["devices"], "devices", source)
    dup = sorted({d for d in devices if devices.count(d) > 1})
    if dup:
        raise _err(source, "devices", f"lists {dup} more than once")

    settings = data.get("settings", [{}])
    if settings is None or (isinstance(settings, list) and not settings):
        settings = [{}]
    if isinstance(settings, Mapping):
        settings = [settings]
    if not isinstance(settings, list):
        raise _err(source, "settings", f"must be a list of run-setting mappings, got {settings!r}")
    specs: List[RunSpec] = []
    keys: Dict[str, int] = {}
    for i, s in enumerate(settings):
        s = _check_spec_fields(s, f"settings[{i}]", source)
        try:
            spec = RunSpec(**{**defaults, **s})
        except UsageError as err:
            raise _err(source, f"settings[{i}]", err.message, hint=err.hint or None) from None
        if spec.key() in keys:
            raise _err(source, f"settings[{i}]", f"is the same run as settings[{keys[spec.key()]}]",
                       hint="remove the duplicate; use repeats: to measure a setting more than once")
        keys[spec.key()] = i
        specs.append(spec)

    def int_key(key: str, default: int, minimum: int) -> int:
        v = data.get(key, default)
        if not _is_int(v) or v < minimum:
            raise _err(source, key, f"must be an integer >= {minimum}, got {v!r}")
        return v

    def num_key(key: str, default: float) -> float:
        v = data.get(key, default)
        if not _is_num(v) or v < 0:
            raise _err(source, key, f"must be a number >= 0 (seconds), got {v!r}")
        return float(v)

    repeats = int_key("repeats", 1, 1)
    retries = int_key("retries", 2, 0)
    backoff_s = num_key("backoff_s", 2.0)
    backoff_max_s = num_key("backoff_max_s", 60.0)

    binary: Union[None, str, Dict[str, str]] = None
    if data.get("binary") is not None:
        b = data["binary"]

        def bin_path(p: Any, key: str) -> str:
            if not isinstance(p, str) or not p:
                raise _err(source, key, f"must be a path to benchmark_model, got {p!r}")
            full = os.path.abspath(os.path.join(base_dir, os.path.expanduser(p)))
            if not os.path.isfile(full):
                raise _err(source, key, f"binary {p!r} does not exist (relative to {base_dir})",
                           hint="download the TFLite benchmark_model build for the device ABI")
            return full

        if isinstance(b, str):
            binary = bin_path(b, "binary")
        elif isinstance(b, Mapping) and b:
            binary = {}
            for abi, p in b.items():
                if not isinstance(abi, str) or not abi:
                    raise _err(source, "binary", f"ABI names must be strings such as arm64-v8a, got {abi!r}")
                binary[abi] = bin_path(p, f"binary.{abi}")
        else:
            raise _err(source, "binary", f"must be a path or a mapping ABI -> path, got {b!r}",
                       hint="e.g. binary: {arm64-v8a: bin/benchmark_model_arm64}")

    thermal_max_c = thermal_max_wait_s = thermal_poll_s = None
    th = data.get("thermal")
    if th is not None:
        if not isinstance(th, Mapping):
            raise _err(source, "thermal", f"must be a mapping such as {{max_c: 45}}, got {th!r}")
        for k in th:
            if k not in _THERMAL_KEYS:
                raise _err(source, f"thermal.{k}", "unknown key", hint=f"allowed: {', '.join(_THERMAL_KEYS)}")
        if th.get("max_c") is not None:
            v = th["max_c"]
            if not _is_num(v) or not 0 < v < 150:
                raise _err(source, "thermal.max_c", f"must be a temperature in deg C between 0 and 150, got {v!r}")
            thermal_max_c = float(v)
        for k in ("max_wait_s", "poll_s"):
            v = th.get(k)
            if v is None:
                continue
            if not _is_num(v) or v <= 0:
                raise _err(source, f"thermal.{k}", f"must be a number of seconds > 0, got {v!r}")
            if k == "max_wait_s":
                thermal_max_wait_s = float(v)
            else:
                thermal_poll_s = float(v)

    nice = data.get("nice")
    if nice is not None:
        if not _is_int(nice) or not -20 <= nice <= 19:
            raise _err(source, "nice", f"must be an integer from -20 to 19, got {nice!r}",
                       hint="e.g. nice: -10 (negative values need root)")
        if LOCAL_SERIAL not in devices:
            raise _err(source, "nice", f"applies only to the {LOCAL_SERIAL!r} device, which devices: does not list",
                       hint=f"add {LOCAL_SERIAL} to devices:, or remove nice:")

    opts = data.get("device_options") or {}
    if not isinstance(opts, Mapping) or not all(isinstance(k, str) for k in opts):
        raise _err(source, "device_options", f"must be a mapping of keyword arguments, got {opts!r}")
    clash = {"binary_path", "thermal_max_c", "thermal_max_wait_s", "thermal_poll_s", "nice", "transport"} & set(opts)
    if clash:
        raise _err(source, "device_options", f"{sorted(clash)} cannot be set here",
                   hint="use binary:, thermal: {max_c: ...} and nice: instead")

    store = data.get("store")
    if store is not None:
        if not isinstance(store, str) or not store:
            raise _err(source, "store", f"must be a file path, got {store!r}")
        store = os.path.abspath(os.path.join(base_dir, os.path.expanduser(store)))
    else:
        store = os.path.join(base_dir, "opcost.db")

    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise _err(source, "name", f"must be a string, got {name!r}")
    return Plan(models=models, devices=devices, specs=specs, repeats=repeats, retries=retries,
                backoff_s=backoff_s, backoff_max_s=backoff_max_s, binary=binary, thermal_max_c=thermal_max_c,
                thermal_max_wait_s=thermal_max_wait_s, thermal_poll_s=thermal_poll_s, nice=nice,
                device_options=dict(opts), store=store, name=name, source=source)


# ---------------------------------------------------------------------------- running
@dataclass
class DeviceSummary:
    done: int = 0          # measured in this call
    failed: int = 0        # failed in this call
    skipped_done: int = 0  # already done before this call
    skipped_failed: int = 0  # failed before and not retried
    lost: Optional[str] = None  # why the device stopped early, if it did
    reasons: Dict[str, int] = field(default_factory=dict)


@dataclass
class CampaignSummary:
    """What ``run_campaign`` did."""

    jobs: int
    done: int
    failed: int
    skipped_done: int
    skipped_failed: int
    not_run: int
    wall_s: float
    devices: Dict[str, DeviceSummary]
    # done jobs skipped although measured with another benchmark_model than the plan's binary
    other_binary: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _one_line(err: BaseException) -> str:
    msg = err.message if isinstance(err, OpcostError) else str(err)
    msg = " ".join(msg.split())
    return f"{type(err).__name__}: {msg}"[:500]


class _Run:
    """State shared by the worker threads of one run_campaign call."""

    def __init__(self, plan: Plan, store, factory: Callable, sleep: Optional[Callable[[float], None]],
                 progress: bool) -> None:
        self.plan = plan
        self.store = store
        self.factory = factory
        self.stop = threading.Event()
        self.sleep = sleep if sleep is not None else self.stop.wait
        self.progress = progress
        self.abort: Optional[BaseException] = None
        self.lock = threading.Lock()

    def open_device(self, serial: str):
        kw = dict(self.plan.device_options)
        for key in ("thermal_max_c", "thermal_max_wait_s", "thermal_poll_s"):
            if getattr(self.plan, key) is not None:
                kw[key] = getattr(self.plan, key)
        if serial == LOCAL_SERIAL and self.plan.nice is not None:
            kw["nice"] = self.plan.nice
        binary = self.plan.binary
        if serial == LOCAL_SERIAL or binary is None:
            return self.factory(serial, **kw)
        if isinstance(binary, dict):
            # The ABI is known only once we talk to the phone: ask, then open with the right build.
            abi = self.factory(serial, **kw).info().abi
            if abi not in binary:
                raise BinaryError(f"the plan has no benchmark_model binary for ABI {abi!r}", serial=serial,
                                  hint=f"add '{abi}: PATH' under binary: in the plan")
            binary = binary[abi]
        return self.factory(serial, binary_path=binary, **kw)

    def worker(self, index: int, serial: str, jobs: List[Job], total: int, already: int,
               summary: DeviceSummary) -> None:
        try:
            self._work(index, serial, jobs, total, already, summary)
        except BaseException as exc:  # a crash (or Ctrl-C) inside a worker stops the campaign
            with self.lock:
                if self.abort is None:
                    self.abort = exc
            self.stop.set()
        finally:
            release = getattr(self.store, "release_thread", None)
            if release is not None:
                try:
                    release()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    def _fail(self, summary: DeviceSummary, jobs: Sequence[Job], reason: str, etype: str) -> None:
        self.store.jobs_failed([j.job_id for j in jobs], reason, etype)
        summary.failed += len(jobs)
        summary.reasons[reason] = summary.reasons.get(reason, 0) + len(jobs)

    def _work(self, index: int, serial: str, jobs: List[Job], total: int, already: int,
              summary: DeviceSummary) -> None:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=already, desc=serial, position=index, unit="run", file=sys.stderr,
                   leave=True, dynamic_ncols=True, disable=not self.progress)
        try:
            try:
                device = self.open_device(serial)
            except Exception as err:  # an unexpected error here must not stop the other devices
                reason = f"cannot open device: {_one_line(err)}"
                log.error("%s: %s", serial, err)
                summary.lost = reason
                self._fail(summary, jobs, reason, DEVICE_LOST)
                return
            for i, job in enumerate(jobs):
                if self.stop.is_set():
                    return
                lost = self._run_job(device, job, summary)
                if lost:
                    summary.lost = lost
                    rest = jobs[i + 1:]
                    if rest:
                        self._fail(summary, rest, f"not run: {lost}", DEVICE_LOST)
                    log.error("%s: giving up on this device (%s); %d jobs marked failed",
                              serial, lost, len(rest) + 1)
                    return
                bar.update(1)
                if summary.failed:
                    bar.set_postfix(failed=summary.failed, refresh=False)
        finally:
            bar.close()

    def _run_job(self, device, job: Job, summary: DeviceSummary) -> Optional[str]:
        """Run one job with retries; return a reason if the device is lost, else None."""
        store, plan = self.store, self.plan
        store.job_started(job.job_id)
        for attempt in range(plan.retries + 1):
            try:
                m = device.measure(job.model.path, job.spec, model_name=job.model.name)
            except TRANSIENT_ERRORS as err:
                if self.stop.is_set():
                    return None  # the campaign is stopping: leave the job to the next run
                if attempt < plan.retries:
                    delay_s = min(plan.backoff_s * (2 ** attempt), plan.backoff_max_s)
                    log.warning("%s: %s; retry %d/%d in %.1f s", job.device_serial, _one_line(err),
                                attempt + 1, plan.retries, delay_s)
                    self.sleep(delay_s)
                    if self.stop.is_set():
                        return None
                    store.job_attempt(job.job_id)
                    continue
                reason = f"device lost after {attempt + 1} attempts: {_one_line(err)}"
                self._fail(summary, [job], reason, DEVICE_LOST)
                return reason
            except DEVICE_FATAL_ERRORS as err:
                if self.stop.is_set():
                    return None
                reason = f"device unusable: {_one_line(err)}"
                self._fail(summary, [job], reason, DEVICE_LOST)
                return reason
            except OpcostError as err:
                if self.stop.is_set():
                    return None  # likely killed by the same Ctrl-C: not the job's fault, run it again
                log.warning("%s: %s failed: %s", job.device_serial, job.model.name, _one_line(err))
                self._fail(summary, [job], _one_line(err), type(err).__name__)
                return None
            except Exception as err:  # a bug in a device implementation must not end the campaign
                log.exception("%s: unexpected error measuring %s", job.device_serial, job.model.name)
                self._fail(summary, [job], f"internal error: {_one_line(err)}", "InternalError")
                return None
            if not isinstance(m, Measurement):
                self._fail(summary, [job], f"internal error: device returned {type(m).__name__}, "
                                           f"not a Measurement", "InternalError")
                return None
            if not m.model.sha256:
                m = dataclasses.replace(m, model=job.model)
            elif m.model.sha256 != job.model.sha256:
                # The file changed since the plan was read: keep what was really measured.
                log.warning("%s: %s changed since the plan was read (sha256 %s, now %s)", job.device_serial,
                            job.model.path, job.model.sha256[:12], m.model.sha256[:12])
            store.add_measurement(m, job_id=job.job_id)
            summary.done += 1
            return None
        return None  # pragma: no cover - the loop always returns


def _default_factory() -> Callable:
    from host.devices import open_device

    return open_device


def run_campaign(plan: Union[Plan, str], store: Any, *, device_factory: Optional[Callable] = None,
                 progress: bool = True, retry_failed: bool = False,
                 sleep: Optional[Callable[[float], None]] = None,
                 remeasure_other_binary: bool = False) -> CampaignSummary:
    """Run every job of ``plan`` (a Plan or a plan file) not yet done in ``store`` (a
    ``host.store.Store`` or a path): one thread per device; returns a CampaignSummary.

    ``device_factory(serial, **kw) -> Device`` defaults to ``host.devices.open_device``.
    Transient errors (DeviceDisconnected, AdbError) are retried ``plan.retries`` times with
    exponential backoff (``sleep(seconds)`` waits; injectable for tests); after that, or
    at once after a DeviceError/BinaryError, the device's remaining jobs are marked failed
    and the other devices go on. Per-job errors (BenchmarkFailed, ParseError, ...) are
    recorded and the campaign continues. Jobs left running by a crash, and jobs failed
    because their device was lost, run again next time; other failed jobs only with
    ``retry_failed``. A crash or Ctrl-C in any worker stops all workers after their
    current run and is re-raised here.

    Job ids do not include the benchmark_model binary, so done jobs measured with another
    build than the plan's ``binary:`` are skipped with a warning (counted in
    ``other_binary``); ``remeasure_other_binary`` measures them again (the earlier runs
    stay in the store).
    """
    if isinstance(plan, (str, os.PathLike)):
        plan = load_plan(str(plan))
    if isinstance(store, (str, os.PathLike)):
        from host.store import Store

        with Store.open(str(store)) as opened:
            return run_campaign(plan, opened, device_factory=device_factory, progress=progress,
                                retry_failed=retry_failed, sleep=sleep,
                                remeasure_other_binary=remeasure_other_binary)
    factory = device_factory or _default_factory()
    with store.campaign_lock():
        return _run_locked(plan, store, factory, progress, retry_failed, sleep, remeasure_other_binary)


def _plan_binary_shas(plan: Plan, store: Any, serials: Iterable[str]) -> Dict[str, set]:
    """serial -> sha256s of the plan's benchmark_model binaries that phone may use (its ABI's
    binary when the store knows its ABI, else any of them); each binary is hashed once."""
    binary = plan.binary
    hashes: Dict[str, str] = {}

    def sha(path: str) -> str:
        if path not in hashes:
            hashes[path] = sha256_file(path)
        return hashes[path]

    out: Dict[str, set] = {}
    for serial in serials:
        if isinstance(binary, str):
            out[serial] = {sha(binary)}
            continue
        info = store.device(serial)
        abi = info.abi if info is not None else None
        out[serial] = {sha(binary[abi])} if abi in binary else {sha(p) for p in binary.values()}
    return out


def _other_binary_jobs(plan: Plan, store: Any, jobs: Sequence[Job], rows: Dict[str, Dict[str, Any]]) -> List[Job]:
    """Done phone jobs whose run was measured with a benchmark_model that is not the plan's binary."""
    if plan.binary is None:
        return []
    done = [j for j in jobs if j.device_serial != LOCAL_SERIAL and rows[j.job_id]["status"] == "done"]
    if not done:
        return []
    runtimes = store.job_runtimes(j.job_id for j in done)
    want = _plan_binary_shas(plan, store, {j.device_serial for j in done})
    out = []
    for j in done:
        rt = runtimes.get(j.job_id)
        if rt and rt.get("name") == "benchmark_model" and rt.get("sha256") \
                and rt["sha256"] not in want[j.device_serial]:
            out.append(j)
    return out


def _run_locked(plan: Plan, store: Any, factory: Callable, progress: bool, retry_failed: bool,
                sleep: Optional[Callable[[float], None]], remeasure_other_binary: bool = False) -> CampaignSummary:
    t0 = time.monotonic()
    jobs = plan.jobs()
    store.sync_jobs([j.to_row() for j in jobs], reset_running=True, retry_failed=retry_failed,
                    retry_error_types=(DEVICE_LOST,))
    rows = store.job_rows(j.job_id for j in jobs)
    other = _other_binary_jobs(plan, store, jobs, rows)
    other_binary = 0
    if other and remeasure_other_binary:
        log.warning("measuring %d done job(s) again: their runs were measured with another benchmark_model "
                    "than the plan's binary (the earlier runs stay in the store)", len(other))
        store.jobs_pending([j.job_id for j in other])
        rows = store.job_rows(j.job_id for j in jobs)
    elif other:
        other_binary = len(other)
        devices = sorted({j.device_serial for j in other})
        log.warning("%d done job(s) (on %s) were measured with another benchmark_model than the plan's binary "
                    "now; they are not measured again (job ids do not depend on the binary). To measure them "
                    "with this binary, add --remeasure-other-binary to `opcost campaign run` (the earlier "
                    "runs stay in the store)", len(other), ", ".join(devices))

    per_device: Dict[str, List[Job]] = {s: [] for s in plan.devices}
    summaries = {s: DeviceSummary() for s in plan.devices}
    for j in jobs:
        status = rows[j.job_id]["status"]
        if status == "done":
            summaries[j.device_serial].skipped_done += 1
        elif status == "failed":
            summaries[j.device_serial].skipped_failed += 1
        else:
            per_device[j.device_serial].append(j)

    show = progress and sys.stderr.isatty()
    run = _Run(plan, store, factory, sleep, show)
    threads = []
    for index, serial in enumerate(s for s in plan.devices if per_device[s]):
        total = sum(1 for j in jobs if j.device_serial == serial)
        t = threading.Thread(target=run.worker, name=f"opcost-{serial}", daemon=True,
                             args=(index, serial, per_device[serial], total,
                                   summaries[serial].skipped_done, summaries[serial]))
        threads.append(t)
        t.start()
    redirect = contextlib.nullcontext()
    if show:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()  # log lines above the bars, not through them
    try:
        with redirect:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
    except BaseException:
        run.stop.set()  # workers finish their current run; unfinished jobs stay 'running'
        raise
    if run.abort is not None:
        raise run.abort

    d = summaries.values()
    done = sum(s.done for s in d)
    failed = sum(s.failed for s in d)
    return CampaignSummary(
        jobs=len(jobs), done=done, failed=failed,
        skipped_done=sum(s.skipped_done for s in d), skipped_failed=sum(s.skipped_failed for s in d),
        not_run=sum(len(v) for v in per_device.values()) - done - failed,
        wall_s=round(time.monotonic() - t0, 3), devices=summaries, other_binary=other_binary)


def _model_words(model: ModelRef) -> List[str]:
    """Strings that name ``model`` in an error message, longest first."""
    words = {model.path, os.path.basename(model.path) if model.path else None, model.name, model.sha256}
    if model.sha256:
        words.update(model.sha256[:n] for n in (8, 10, 12, 16))
    return sorted((w for w in words if w and len(w) >= 3), key=len, reverse=True)


def group_reason(reason: str, model: ModelRef) -> str:
    """``reason`` with the model's path, name and sha256 (or prefix) replaced by ``<model>``,
    so the same failure of many models reads as one."""
    for w in _model_words(model):  # whole words only: a model named "conv" leaves "conversion"
        reason = re.sub(r"(?<!\w)" + re.escape(w) + r"(?!\w)", "<model>", reason)
    return reason


def _status(plan: Plan, store: Any, runner: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per-device counts; ``runner`` is the live runner ({"since": ...}) or None for none."""
    jobs = plan.jobs()
    rows = store.job_rows(j.job_id for j in jobs) if store is not None else {}
    out: Dict[str, Dict[str, Any]] = {
        s: {"done": 0, "pending": 0, "running": 0, "failed": 0, "total": 0, "interrupted": 0,
            "reasons": {}, "reason_groups": []} for s in plan.devices}
    groups: Dict[str, Dict[str, Dict[str, Any]]] = {s: {} for s in plan.devices}
    for j in jobs:
        d = out[j.device_serial]
        row = rows.get(j.job_id)
        status = row["status"] if row else "pending"
        if status == "running":
            since = (runner or {}).get("since")
            started = row.get("started_at")
            # No live runner, or one that started after this job: the job's runner is gone.
            if runner is None or (since is not None and started is not None and started < since - 1.0):
                status = "pending"
                d["interrupted"] += 1
        d[status] += 1
        d["total"] += 1
        if status == "failed":
            reason = row["last_error"] or "unknown"
            d["reasons"][reason] = d["reasons"].get(reason, 0) + 1
            key = group_reason(reason, j.model)
            g = groups[j.device_serial].setdefault(key, {"reason": key, "count": 0, "models": [],
                                                         "example": reason})
            g["count"] += 1
            if j.model.name not in g["models"]:
                g["models"].append(j.model.name)
    for serial, g in groups.items():
        out[serial]["reason_groups"] = sorted(g.values(), key=lambda x: (-x["count"], x["reason"]))
    return out


def campaign_status(plan: Union[Plan, str], store: Any) -> Dict[str, Dict[str, Any]]:
    """Per device: how many jobs are done, pending, running and failed, and why they failed.

    ``store`` is a Store or a path (only read, see ``Store.open_reader``; a store that does not exist yet
    means every job is pending). Jobs left ``running`` by a runner that is gone (no live
    process holds the store's campaign lock) count as pending and in ``interrupted``.
    ``reasons`` maps each distinct failure message to its count; ``reason_groups`` lists
    {reason, count, models, example}: ``reason`` is the message with the model's name,
    path and sha256 replaced by ``<model>``, ``example`` one message as it was.
    """
    return campaign_report(plan, store)["devices"]


def campaign_report(plan: Union[Plan, str], store: Any) -> Dict[str, Any]:
    """``campaign_status`` with the store's state: {"store": path, "store_exists": bool,
    "runner": {"pid", "since"} of a live runner or None, "interrupted": jobs left running
    by a runner that is gone, "devices": per-device status}."""
    if isinstance(plan, (str, os.PathLike)):
        plan = load_plan(str(plan))
    if isinstance(store, (str, os.PathLike)):
        from host.store import Store

        path = str(store)
        if not os.path.exists(path):  # not run yet: every job is pending; do not create the store
            runner = Store(path).campaign_runner()
            return _report(plan, None, path, False, runner)
        with Store.open_reader(path) as opened:
            return campaign_report(plan, opened)
    return _report(plan, store, store.path, True, store.campaign_runner())


def _report(plan: Plan, store: Any, path: Optional[str], exists: bool,
            runner: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    devices = _status(plan, store, runner)
    return {"store": path, "store_exists": exists, "runner": runner,
            "interrupted": sum(d["interrupted"] for d in devices.values()), "devices": devices}


__all__ = ["Job", "Plan", "CampaignSummary", "DeviceSummary", "job_id", "load_plan", "plan_from_dict",
           "run_campaign", "campaign_status", "campaign_report", "group_reason", "DEVICE_LOST"]
