"""Android phones as ``Device``s, and turning a serial into a device.

``AndroidDevice`` drives the TFLite ``benchmark_model`` binary over a ``host.adb.Transport``:
it pushes the binary once (skipped when the device copy has the same sha256), pushes each
model once to a content-addressed path, probes the device state before and after each run,
optionally waits for the phone to cool down, runs the model under a hard wall-clock limit
and parses the output into a ``Measurement``.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from device_bench.files import ABI_MACHINE, elf_machine, machine_name
from opcost.errors import (BenchmarkFailed, BinaryError, DeviceDisconnected, DeviceError,
                           OpcostError, ParseError, RunTimeout, UsageError)
from opcost.records import DeviceInfo, DeviceState, Measurement, ModelRef, RunSpec, sha256_file

log = logging.getLogger("opcost.devices")

DEFAULT_WORK_DIR = "/data/local/tmp/opcost"
# ELF e_machine values of the Android ABIs.
_SHA_RE = re.compile(r"^([0-9a-f]{64})\b")
_HOST_SLACK_S = 30.0  # the device's own `timeout` fires first; the host waits this much longer
KILLED_EXIT_CODE = 137  # 128 + SIGKILL: what toybox `timeout -k` returns when it had to kill
# A `timeout` exit status counts as the time limit only when the run lasted at least this
# fraction of spec.timeout_s (see AndroidDevice._check_limit_exit).
_LIMIT_WALL_FRACTION = 0.9
# Options that only the local device (device_bench.local.LocalDevice) takes.
_LOCAL_ONLY_OPTIONS = ("nice", "interpreter")


class AndroidDevice:
    """A phone reached through ``transport`` (see ``host.adb``). No I/O until used.

    ``thermal_max_c``: before each run, poll the probe every ``thermal_poll_s`` until the
    hottest sensor is at or below this, for at most ``thermal_max_wait_s`` (then run anyway,
    with a warning in the output). ``artifacts_dir``: also ask benchmark_model for its
    result proto (and op-profile CSV) and pull them there. ``clock`` (the ``time`` module,
    or a stand-in with ``time()``, ``monotonic()`` and ``sleep()``) also times each run.
    """

    def __init__(self, serial: str, transport: Any, *, binary_path: Optional[str] = None,
                 work_dir: str = DEFAULT_WORK_DIR, thermal_max_c: Optional[float] = None,
                 thermal_max_wait_s: float = 300.0, thermal_poll_s: float = 10.0,
                 probe_timeout_s: float = 60.0, artifacts_dir: Optional[str] = None,
                 clock: Any = time) -> None:
        self.serial = serial
        self.transport = transport
        self.binary_path = binary_path
        self.work_dir = work_dir.rstrip("/")
        self.thermal_max_c = thermal_max_c
        self.thermal_max_wait_s = thermal_max_wait_s
        self.thermal_poll_s = thermal_poll_s
        self.probe_timeout_s = probe_timeout_s
        self.artifacts_dir = artifacts_dir
        self.clock = clock
        self._info: Optional[DeviceInfo] = None
        self._binary: Optional[Tuple[str, str]] = None  # (remote path, sha256)
        self._answered = False

    # -- small helpers ---------------------------------------------------------------------
    def _t(self, method: str, *args: Any, **kw: Any) -> Any:
        """Call ``transport.<method>(serial, ...)``. Once the phone has answered, "no such
        device" means it went away: that is DeviceDisconnected, as a campaign needs to know."""
        try:
            result = getattr(self.transport, method)(self.serial, *args, **kw)
        except DeviceDisconnected:
            raise
        except DeviceError as err:
            if self._answered and type(err) is DeviceError:
                raise DeviceDisconnected(f"device {self.serial} disconnected ({err.message})",
                                         serial=self.serial) from None
            raise
        self._answered = True
        return result

    def _sh(self, cmd: str, timeout_s: Optional[float] = None) -> str:
        return self._t("shell", cmd, timeout_s=timeout_s or self.probe_timeout_s)

    def _still_connected(self) -> bool:
        try:
            return any(s == self.serial and st == "device" for s, st, _ in self.transport.list_devices())
        except OpcostError:
            return False

    # -- Device protocol -------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        """getprop identity and CPU clusters (cached after the first call)."""
        if self._info is not None:
            return self._info
        from device_bench.probes import PROBE_SCRIPT, parse_cpu_clusters, parse_getprop

        text = self._sh("getprop")
        props = parse_getprop(text)
        if not props:
            raise ParseError("`getprop` printed no properties", serial=self.serial, output_tail=text)
        sdk_raw = props.get("ro.build.version.sdk", "")
        extra: Dict[str, Any] = {}
        for key, name in (("ro.board.platform", "board_platform"), ("ro.soc.manufacturer", "soc_manufacturer"),
                          ("ro.hardware", "hardware"), ("ro.build.version.release", "android_release"),
                          ("ro.build.fingerprint", "fingerprint"), ("ro.product.cpu.abilist", "abilist")):
            if props.get(key):
                extra[name] = props[key]
        probe = self._sh(PROBE_SCRIPT)
        self._info = DeviceInfo(
            serial=self.serial, kind="android",
            model=props.get("ro.product.model"),
            manufacturer=props.get("ro.product.manufacturer"),
            soc=props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware"),
            abi=props.get("ro.product.cpu.abi"),
            sdk=int(sdk_raw) if sdk_raw.isdigit() else None,
            cpu_clusters=parse_cpu_clusters(probe),
            extra=extra,
        )
        return self._info

    def check_spec(self, spec: RunSpec) -> None:
        """UsageError for settings this phone cannot honour: a CPU mask naming none of its CPUs."""
        if not spec.cpu_mask:
            return
        from device_bench.local_worker import mask_to_cpus

        cpus = sorted({c for cl in (self.info().cpu_clusters or []) for c in cl.get("cpus", [])})
        if cpus and not set(mask_to_cpus(spec.cpu_mask)) & set(cpus):
            raise UsageError(f"cpu mask {spec.cpu_mask!r} selects no CPU of {self.serial} (CPUs {cpus[0]}-{cpus[-1]})",
                             serial=self.serial,
                             hint=f"e.g. --cpu-mask {1 << cpus[-1]:x} for CPU {cpus[-1]}; "
                                  "`opcost devices` shows each phone's clusters")

    def state(self) -> DeviceState:
        """Governors, frequencies, temperatures and battery now (one shell round trip)."""
        from device_bench.probes import PROBE_SCRIPT, parse_probe

        text = self._sh(PROBE_SCRIPT)
        try:
            return parse_probe(text, timestamp=self.clock.time())
        except ParseError as err:
            err.serial = self.serial
            raise

    def measure(self, model_path: str, spec: RunSpec, *, model_name: Optional[str] = None,
                **unsupported: Any) -> Measurement:
        """Run ``model_path`` with benchmark_model as ``spec`` says and return the measurement."""
        if unsupported:
            raise UsageError(f"{', '.join(sorted(unsupported))} is not supported on an Android device",
                             hint="per-op slicing (--per-op) runs on --device local; on a phone use --op-profiling")
        from device_bench.benchmark_args import (KILL_GRACE_S, build_argv, device_shell_command,
                                                 split_exit_marker)
        from device_bench.files import check_model_file
        from device_bench.parsers import check_delegate, parse_benchmark_output, run_notes

        path = check_model_file(model_path)
        size = path.stat().st_size
        model = ModelRef(sha256=sha256_file(str(path)), name=model_name or Path(model_path).stem,
                         path=str(path), size_bytes=size)
        info = self.info()
        self.check_spec(spec)
        remote_bin, bin_sha = self._ensure_binary(info)
        remote_model = self._ensure_model(str(path), model.sha256, size)

        state_before, thermal_wait_s, warnings = self._wait_cool()
        token = uuid.uuid4().hex[:12]
        tmp_dir = f"{self.work_dir}/tmp"
        remote_files: Dict[str, str] = {}
        if self.artifacts_dir:
            remote_files["result.pb"] = f"{tmp_dir}/{token}.pb"
            if spec.op_profiling:
                remote_files["ops.csv"] = f"{tmp_dir}/{token}.csv"
        argv = build_argv(spec, binary=remote_bin, model=remote_model,
                          result_file=remote_files.get("result.pb"),
                          op_profile_csv=remote_files.get("ops.csv"))
        cmd = device_shell_command(argv, timeout_s=spec.timeout_s, cpu_mask=spec.cpu_mask)
        if remote_files:
            cmd = f"mkdir -p {shlex.quote(tmp_dir)} && {cmd}"
        started = self.clock.time()
        t0 = self.clock.monotonic()
        artifacts: Dict[str, str] = {}
        try:
            raw = self._sh(cmd, timeout_s=spec.timeout_s + KILL_GRACE_S + _HOST_SLACK_S)
            wall_s = self.clock.monotonic() - t0
            text, code = split_exit_marker(raw)
            if code is None:
                if not self._still_connected():
                    raise DeviceDisconnected(f"device {self.serial} disconnected while running {model.name}",
                                             serial=self.serial, argv=argv, output_tail=raw)
                raise BenchmarkFailed(f"benchmark_model output for {model.name} ended without an exit status",
                                      serial=self.serial, argv=argv, output_tail=raw,
                                      hint="the adb connection was cut; run again")
            self._check_limit_exit(code, wall_s, spec, model.name, argv, text)
            if code in (126, 127):
                raise BinaryError(f"the device could not execute {remote_bin}", serial=self.serial,
                                  argv=argv, exit_code=code, output_tail=text)
            output = parse_benchmark_output(text, argv=argv, serial=self.serial, exit_code=code)
            check_delegate(output, spec.delegate, serial=self.serial, argv=argv, exit_code=code, output_tail=text)
            if self.artifacts_dir:
                artifacts = self._pull_artifacts(remote_files, token)
                if "ops.csv" in artifacts and not output.ops:
                    from device_bench.parsers import parse_op_profile_csv

                    with open(artifacts["ops.csv"], encoding="utf-8", errors="replace") as f:
                        output.ops = parse_op_profile_csv(f.read())
        finally:
            self._cleanup(list(remote_files.values()))
        output.warnings = list(output.warnings) + warnings + run_notes(output, spec.delegate, spec.op_profiling)
        try:
            state_after = self.state()
        except DeviceError as err:  # the run itself is done and valid: keep it
            log.warning("device %s: no state after the run (%s)", self.serial, err.message)
            state_after = None
        runtime: Dict[str, Any] = {"name": "benchmark_model", "sha256": bin_sha, "version": output.version}
        if artifacts:
            runtime["artifacts"] = artifacts
        return Measurement(device=info, model=model, spec=spec, output=output, runtime=runtime,
                           state_before=state_before, state_after=state_after,
                           thermal_wait_s=thermal_wait_s, started_at=started, wall_s=wall_s,
                           raw_output=text, argv=argv)

    # -- steps ------------------------------------------------------------------------------
    def _check_limit_exit(self, code: int, wall_s: float, spec: RunSpec, name: str, argv: List[str],
                          text: str) -> None:
        """Raise for the exit statuses of toybox ``timeout`` (124, 137), told apart by wall time.

        Device quirk: older toybox ``timeout`` also returns 124 when the child died of a
        signal other than KILL (e.g. SIGSEGV), so a 124 long before the limit is a crash of
        benchmark_model, not a timeout (the parser cannot tell: it maps 124 to RunTimeout
        and knows no wall time). Newer toybox returns 137 (128 + SIGKILL) when the child
        ignored SIGTERM and the KILL after the grace period was needed: that is the time
        limit too when it comes after ~``timeout_s``; a 137 well before is some other
        kill (out of memory) and is left to the parser.
        """
        from device_bench.benchmark_args import KILL_GRACE_S, TIMEOUT_EXIT_CODE

        if code not in (TIMEOUT_EXIT_CODE, KILLED_EXIT_CODE):
            return
        ctx = dict(serial=self.serial, argv=argv, exit_code=code, output_tail=text)
        at_limit = wall_s >= _LIMIT_WALL_FRACTION * spec.timeout_s
        if code == TIMEOUT_EXIT_CODE and not at_limit:
            raise BenchmarkFailed(
                f"benchmark_model died while running {name} on {self.serial}, after {wall_s:.1f} s of "
                f"the {spec.timeout_s:g} s limit (exit code {code}: this device's toybox `timeout` also "
                f"reports a child killed by a signal such as SIGSEGV this way)",
                hint="the binary crashed: read its last output above; try another --delegate or "
                     "benchmark_model build (raising --timeout-s does not help)", **ctx)
        if code == TIMEOUT_EXIT_CODE:
            raise RunTimeout(f"{name} did not finish within the {spec.timeout_s:g} s limit on {self.serial}",
                             **ctx)
        if at_limit:
            raise RunTimeout(f"{name} did not finish within the {spec.timeout_s:g} s limit on {self.serial} "
                             f"and was killed {KILL_GRACE_S} s after SIGTERM", **ctx)

    def _ensure_binary(self, info: DeviceInfo) -> Tuple[str, str]:
        if self._binary is not None:
            return self._binary
        if not self.binary_path:
            raise BinaryError(f"no benchmark_model binary given for Android device {self.serial}",
                              serial=self.serial)
        local = self.binary_path
        if not os.path.isfile(local):
            raise BinaryError(f"benchmark_model binary not found: {local}", serial=self.serial)
        machine = elf_machine(local)
        if machine is None:
            raise BinaryError(f"{local} is not an ELF executable", serial=self.serial)
        abis = [a.strip() for a in (info.extra.get("abilist") or info.abi or "").split(",") if a.strip()]
        if abis and machine not in {ABI_MACHINE.get(a) for a in abis}:
            raise BinaryError(f"{local} is built for {machine_name(machine)}"
                              f" but device {self.serial} runs {', '.join(abis)}", serial=self.serial)
        sha = sha256_file(local)
        remote = f"{self.work_dir}/benchmark_model"
        out = self._sh(f"sha256sum {shlex.quote(remote)}")
        m = _SHA_RE.match(out.strip())
        if m and m.group(1) == sha:
            log.info("device %s: benchmark_model already present (%s)", self.serial, sha[:12])
        else:
            log.info("device %s: pushing %s", self.serial, local)
            self._t("push", local, remote, mode=0o755)
            out = self._sh(f"chmod 755 {shlex.quote(remote)}")
            if out.strip():
                raise BinaryError(f"cannot make {remote} executable: {out.strip()}", serial=self.serial,
                                  output_tail=out)
        self._binary = (remote, sha)
        return self._binary

    def _ensure_model(self, local: str, sha: str, size: int) -> str:
        remote = f"{self.work_dir}/models/{sha}.tflite"
        st = self._t("stat", remote)
        if st.exists and st.size == size:
            return remote
        part = f"{remote}.{uuid.uuid4().hex[:8]}.part"
        try:
            self._t("push", local, part)
            out = self._sh(f"mv {shlex.quote(part)} {shlex.quote(remote)}")
            if out.strip():
                raise DeviceError(f"cannot move the pushed model into place: {out.strip()}",
                                  serial=self.serial, output_tail=out)
        except OpcostError:
            self._cleanup([part])
            raise
        return remote

    def _wait_cool(self) -> Tuple[DeviceState, float, List[str]]:
        start = self.clock.monotonic()
        state = self.state()
        if self.thermal_max_c is None:
            return state, 0.0, []
        while True:
            hottest = state.max_temp_c()
            waited = self.clock.monotonic() - start
            if hottest is None or hottest <= self.thermal_max_c:
                return state, waited, []
            if waited >= self.thermal_max_wait_s:
                msg = (f"thermal guard: still {hottest:.1f} C > {self.thermal_max_c:g} C after "
                       f"{waited:.0f} s; ran anyway")
                log.warning("device %s: %s", self.serial, msg)
                return state, waited, [msg]
            log.info("device %s: %.1f C > %g C, waiting", self.serial, hottest, self.thermal_max_c)
            self.clock.sleep(min(self.thermal_poll_s, self.thermal_max_wait_s - waited))
            state = self.state()

    def _pull_artifacts(self, remote_files: Dict[str, str], token: str) -> Dict[str, str]:
        os.makedirs(self.artifacts_dir, exist_ok=True)
        got: Dict[str, str] = {}
        for kind, remote in remote_files.items():
            if not self._t("exists", remote):
                log.warning("device %s: benchmark_model wrote no %s", self.serial, kind)
                continue
            local = os.path.join(self.artifacts_dir, f"{token}.{kind}")
            self._t("pull", remote, local)
            got[kind] = local
        return got

    def _cleanup(self, remote_paths: List[str]) -> None:
        if not remote_paths:
            return
        try:
            self._sh("rm -f " + " ".join(shlex.quote(p) for p in remote_paths))
        except OpcostError as err:  # the device may be gone; the files are in a tmp dir anyway
            log.info("device %s: cleanup skipped (%s)", self.serial, err.message)


def open_device(serial: str, *, transport: Any = None, binary_path: Optional[str] = None, **kw: Any):
    """``LocalDevice`` for ``"local"``, else an ``AndroidDevice`` for a connected serial
    (DeviceError if it is unknown, unauthorized or offline).

    For ``"local"``, ``binary_path`` and the local-only options ``nice`` and
    ``interpreter`` go to ``LocalDevice`` (None keeps its default); the phone-only
    options (``thermal_*``, ``work_dir``, ...) are ignored, so one set of options can
    serve a campaign over phones and this host. A local-only option given for a phone is
    a UsageError.
    """
    local_kw = {k: kw.pop(k) for k in _LOCAL_ONLY_OPTIONS if k in kw}
    if serial == "local":
        from device_bench.local import LocalDevice

        return LocalDevice(binary_path=binary_path, **{k: v for k, v in local_kw.items() if v is not None})
    given = sorted(k for k, v in local_kw.items() if v is not None)
    if given:
        raise UsageError(f"{' and '.join(given)} can only be set for the local device, not for {serial}",
                         serial=serial, hint="measure on --device local, or leave these options out for a phone")
    from host.adb import OFFLINE_HINT, UNAUTHORIZED_HINT, AdbTransport

    if transport is None:
        transport = AdbTransport()
    entries = transport.list_devices()
    states = {s: st for s, st, _ in entries}
    if serial not in states:
        known = ", ".join(f"{s} ({st})" for s, st in states.items()) or "none"
        raise DeviceError(f"no device with serial {serial!r}; connected: {known}", serial=serial)
    st = states[serial]
    if st == "unauthorized":
        raise DeviceError(f"device {serial} is unauthorized", serial=serial, hint=UNAUTHORIZED_HINT)
    if st != "device":
        raise DeviceError(f"device {serial} is {st}", serial=serial, hint=OFFLINE_HINT)
    return AndroidDevice(serial, transport, binary_path=binary_path, **kw)


def list_devices(transport: Any) -> List[DeviceInfo]:
    """Every device the adb server knows. Ready ones are described from getprop; others
    carry their state (and the adb error, if describing failed) in ``extra``."""
    out: List[DeviceInfo] = []
    for serial, st, tags in transport.list_devices():
        if st == "device":
            try:
                info = AndroidDevice(serial, transport).info()
                info.extra = dict(info.extra, state=st)
                out.append(info)
                continue
            except OpcostError as err:
                extra = {"state": st, "error": err.message}
        else:
            extra = {"state": st}
        out.append(DeviceInfo(serial=serial, kind="android",
                              model=(tags.get("model") or "").replace("_", " ") or None, extra=extra))
    return out
