"""AndroidDevice / open_device / list_devices through adbutils against the fake adb server."""
import hashlib
import os
import re

import pytest

from fakeadb.phone import fake_adb, fake_elf, install_phone, recording  # noqa: F401
from device_bench.probes import PROBE_SCRIPT
from host.adb import AdbTransport
from host.devices import AndroidDevice, list_devices, open_device
from opcost.errors import (BenchmarkFailed, BinaryError, DeviceDisconnected, DeviceError, DeviceStorageFull,
                           ModelFileError, ParseError, RunTimeout, UsageError)
from opcost.interfaces import Device
from opcost.records import RunSpec

SERIAL = "SYN8250A"
WORK = "/data/local/tmp/opcost"


class FakeClock:
    """Stands in for the ``time`` module: sleeping only advances the clock."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def time(self):
        return self.now

    def monotonic(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def phone(fake_adb):
    return install_phone(fake_adb, SERIAL)


@pytest.fixture
def binary(tmp_path):
    return fake_elf(str(tmp_path / "benchmark_model"))


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "mobilenet_tiny.tflite"
    p.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"synthetic model bytes" * 10)
    return str(p)


def make(binary=None, **kw):
    return AndroidDevice(SERIAL, AdbTransport(), binary_path=binary, **kw)


def test_is_a_device_and_info_from_getprop_and_sysfs(phone):
    dev = make()
    assert isinstance(dev, Device)
    info = dev.info()
    assert (info.model, info.manufacturer, info.soc, info.abi, info.sdk) == (
        "Synthetic Phone 8250", "SyntheticMaker", "SM8250", "arm64-v8a", 31)
    assert [c["cpus"] for c in info.cpu_clusters] == [[0, 1, 2, 3], [4, 5, 6], [7]]
    assert info.cpu_clusters[2]["max_khz"] == 2841600
    assert info.extra["board_platform"] == "kona"
    n = len(phone.commands)
    dev.info()
    assert len(phone.commands) == n  # cached


def test_measure_pushes_once_and_parses(phone, binary, model):
    dev = make(binary)
    spec = RunSpec(delegate="xnnpack", threads=2, cpu_mask="f0", num_runs=50, timeout_s=120)
    m = dev.measure(model, spec, model_name="tiny")
    sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
    remote_model = f"{WORK}/models/{sha}.tflite"
    # the binary went once, executable; the model to its content address
    assert phone.pushes[0] == f"{WORK}/benchmark_model"
    assert phone.modes[f"{WORK}/benchmark_model"] & 0o111
    assert remote_model in phone.files and phone.files[remote_model] == open(model, "rb").read()
    run_cmd = next(c for c in phone.commands if "--graph=" in c)
    assert run_cmd.startswith("timeout -k 5 120 taskset f0 ")
    assert f"--graph={remote_model}" in run_cmd and "--num_threads=2" in run_cmd
    # the recorded run: count=50 ... avg=1.24027e+06 us
    assert m.output.e2e.count == 50
    assert m.output.e2e.mean_ms == pytest.approx(1240.27)
    assert m.model.sha256 == sha and m.model.name == "tiny"
    assert m.runtime == {"name": "benchmark_model", "sha256": hashlib.sha256(open(binary, "rb").read()).hexdigest(),
                         "version": m.output.version}
    assert m.device.serial == SERIAL and m.device.soc == "SM8250"
    assert m.state_before.max_temp_c() == pytest.approx(38.9) and m.state_after is not None
    assert m.argv[0] == f"{WORK}/benchmark_model"
    assert m.thermal_wait_s == 0.0 and m.wall_s is not None and m.wall_s >= 0
    # probe before and after the run
    idx = phone.commands.index(run_cmd)
    assert phone.commands[idx - 1] == PROBE_SCRIPT and phone.commands[idx + 1] == PROBE_SCRIPT

    pushes = len(phone.pushes)
    dev.measure(model, spec)
    assert len(phone.pushes) == pushes  # nothing pushed again
    assert phone.runs == 2
    assert not any(p.endswith(".part") for p in phone.files)


def test_binary_already_on_device_is_not_pushed(phone, binary, model):
    phone.add_file(f"{WORK}/benchmark_model", open(binary, "rb").read(), 0o755)
    make(binary).measure(model, RunSpec(timeout_s=60))
    assert f"{WORK}/benchmark_model" not in phone.pushes
    assert any(c.startswith("sha256sum ") for c in phone.commands)


def test_stale_binary_on_device_is_replaced(phone, binary, model):
    phone.add_file(f"{WORK}/benchmark_model", b"\x7fELF an older build", 0o755)
    make(binary).measure(model, RunSpec(timeout_s=60))
    assert phone.files[f"{WORK}/benchmark_model"] == open(binary, "rb").read()


def test_missing_binary(phone, model, tmp_path):
    with pytest.raises(BinaryError, match="no benchmark_model binary"):
        make(None).measure(model, RunSpec())
    with pytest.raises(BinaryError, match="not found"):
        make(str(tmp_path / "nope")).measure(model, RunSpec())


def test_binary_of_wrong_abi_or_not_elf(phone, model, tmp_path):
    x86 = fake_elf(str(tmp_path / "bm_x86"), machine=62)
    with pytest.raises(BinaryError) as e:
        make(x86).measure(model, RunSpec())
    assert "x86_64" in str(e.value) and "arm64-v8a" in str(e.value) and SERIAL in str(e.value)
    script = tmp_path / "bm.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(BinaryError, match="not an ELF"):
        make(str(script)).measure(model, RunSpec())
    assert phone.pushes == []


def test_armv7_binary_runs_on_arm64_phone(phone, model, tmp_path):
    make(fake_elf(str(tmp_path / "bm32"), machine=40)).measure(model, RunSpec(timeout_s=60))


def test_missing_model_file(phone, binary, tmp_path):
    with pytest.raises(ModelFileError):
        make(binary).measure(str(tmp_path / "none.tflite"), RunSpec())


def test_per_op_is_refused_on_android(phone, binary, model):
    with pytest.raises(UsageError, match="per_op"):
        make(binary).measure(model, RunSpec(), per_op=True)


def test_thermal_guard_waits_until_cool(fake_adb, binary, model):
    phone = install_phone(fake_adb, SERIAL)
    clock = FakeClock()
    dev = make(binary, thermal_max_c=45, thermal_poll_s=15, clock=clock)
    dev.info()
    # the next two probes see a hot phone (58.3 C), then it is cool again (38.9 C)
    phone.rules.insert(0, type(phone.rules[0])(PROBE_SCRIPT, recording("probe_synthetic_hot.txt"), times=2))
    m = dev.measure(model, RunSpec(timeout_s=60))
    assert clock.sleeps == [15, 15]
    assert m.thermal_wait_s == pytest.approx(30.0)
    assert m.state_before.max_temp_c() == pytest.approx(38.9)
    assert not any("thermal guard" in w for w in m.output.warnings)


def test_thermal_guard_is_bounded(fake_adb, binary, model):
    phone = install_phone(fake_adb, SERIAL, probe="probe_synthetic_hot.txt")
    clock = FakeClock()
    m = make(binary, thermal_max_c=45, thermal_poll_s=40, thermal_max_wait_s=100, clock=clock).measure(
        model, RunSpec(timeout_s=60))
    assert clock.sleeps == [40, 40, 20]
    assert m.thermal_wait_s == pytest.approx(100.0)
    assert any("thermal guard" in w and "58.3" in w for w in m.output.warnings)
    assert phone.runs == 1


def test_artifacts_are_pulled_and_temp_files_removed(fake_adb, binary, model, tmp_path):
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    csv_text = recording("benchmark_model_ti_am62x_excerpt.txt")

    def run(dev, cmd, _m):  # benchmark_model writes the result proto where --result_file_path says
        path = re.search(r"--result_file_path=(\S+)", cmd).group(1)
        dev.add_file(path, b"\x08\x01synthetic-proto")
        return csv_text, 0

    phone.add_rule(re.compile(r"benchmark_model .*--graph="), run)
    art = tmp_path / "artifacts"
    m = make(binary, artifacts_dir=str(art)).measure(model, RunSpec(timeout_s=60))
    local = m.runtime["artifacts"]["result.pb"]
    assert open(local, "rb").read() == b"\x08\x01synthetic-proto"
    assert not [p for p in phone.files if "/tmp/" in p[len(WORK):]]  # cleaned up on the device
    assert any(c.startswith("rm -f ") and ".pb" in c for c in phone.commands)


# -- faults -------------------------------------------------------------------------------
def test_phone_disappears_mid_run(fake_adb, binary, model):
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    partial = "INFO: STARTING!\nINFO: Running benchmark for at least 50 iterations\n"
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), partial, disconnect=True)
    with pytest.raises(DeviceDisconnected) as e:
        make(binary).measure(model, RunSpec(timeout_s=60))
    assert SERIAL in str(e.value) and "mobilenet_tiny" in str(e.value)
    assert "Running benchmark" in str(e.value)  # the output tail


def test_wall_clock_limit(fake_adb, binary, model):
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), "INFO: STARTING!\n", hang=True)
    fake_adb.hang_sleep_s = 1.0  # the device's `timeout 1` really takes its second
    with pytest.raises(RunTimeout) as e:
        make(binary).measure(model, RunSpec(timeout_s=1))
    assert "1 s limit" in str(e.value) and SERIAL in str(e.value) and "exit code: 124" in str(e.value)


def _timed_run(clock, run_s, code, timeout_s):
    """A benchmark_model run that the device's `timeout` ends with ``code`` after ``run_s``
    seconds of the host clock (the recording stops during the warm-up run)."""

    def run(dev, cmd, _m):
        assert cmd.startswith(f"timeout -k 5 {timeout_s} ")
        clock.now += run_s
        return recording("benchmark_model_synthetic_died_mid_run.txt"), code

    return run


@pytest.mark.parametrize("run_s", [0.4, 53.9])  # well under 90 % of the 60 s limit
def test_exit_124_long_before_the_limit_is_a_crash_not_a_timeout(fake_adb, binary, model, run_s):
    # older toybox `timeout` returns 124 also when the child died of SIGSEGV
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    clock = FakeClock()
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), _timed_run(clock, run_s, 124, 60))
    with pytest.raises(BenchmarkFailed) as e:
        make(binary, clock=clock).measure(model, RunSpec(timeout_s=60))
    err = e.value
    assert not isinstance(err, RunTimeout)
    assert "benchmark_model died" in err.message and f"after {run_s:.1f} s of the 60 s limit" in err.message
    assert err.exit_code == 124 and err.serial == SERIAL
    assert "Running benchmark for at least 1 iterations" in err.output_tail  # the output tail
    assert "--timeout-s does not help" in err.hint
    assert "exit code: 124" in str(err) and "last output:" in str(err)


@pytest.mark.parametrize("code, run_s", [(124, 54.0), (124, 60.2), (137, 65.3)])
def test_exit_124_or_137_at_the_limit_is_a_timeout(fake_adb, binary, model, code, run_s):
    # 137: newer toybox, the KILL after the 5 s grace period was needed
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    clock = FakeClock()
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), _timed_run(clock, run_s, code, 60))
    with pytest.raises(RunTimeout) as e:
        make(binary, clock=clock).measure(model, RunSpec(timeout_s=60))
    assert "did not finish within the 60 s limit" in e.value.message and e.value.exit_code == code
    assert ("killed 5 s after SIGTERM" in e.value.message) == (code == 137)
    assert "--timeout-s" in e.value.hint


def test_exit_137_long_before_the_limit_is_not_a_timeout(fake_adb, binary, model):
    # killed by something else than the time limit (the low-memory killer)
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    clock = FakeClock()
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), _timed_run(clock, 3.0, 137, 60))
    with pytest.raises(BenchmarkFailed) as e:
        make(binary, clock=clock).measure(model, RunSpec(timeout_s=60))
    assert not isinstance(e.value, RunTimeout)
    assert e.value.exit_code == 137 and "out of memory" in e.value.hint


def test_garbage_output(fake_adb, binary, model):
    install_phone(fake_adb, SERIAL, benchmark="benchmark_model_synthetic_garbage.txt")
    with pytest.raises(ParseError) as e:
        make(binary).measure(model, RunSpec(timeout_s=60))
    assert SERIAL in str(e.value) and "lorem ipsum" in str(e.value)


def test_full_disk_on_model_push(fake_adb, binary, model):
    phone = install_phone(fake_adb, SERIAL)
    phone.storage_free_bytes = os.path.getsize(binary) + 10  # the binary fits, the model not
    with pytest.raises(DeviceStorageFull) as e:
        make(binary).measure(model, RunSpec(timeout_s=60))
    assert SERIAL in str(e.value) and "No space left" in str(e.value)
    assert not any(p.startswith(f"{WORK}/models/") for p in phone.files)


# -- resolution ---------------------------------------------------------------------------
def test_open_device_states(fake_adb):
    install_phone(fake_adb, SERIAL)
    fake_adb.add_device("UNAUTH1", state="unauthorized")
    fake_adb.add_device("OFF1", state="offline")
    assert isinstance(open_device(SERIAL), AndroidDevice)
    with pytest.raises(DeviceError) as e:
        open_device("NOPE")
    assert "NOPE" in str(e.value) and SERIAL in str(e.value) and "UNAUTH1 (unauthorized)" in str(e.value)
    with pytest.raises(DeviceError, match="Allow USB debugging"):
        open_device("UNAUTH1")
    with pytest.raises(DeviceError, match="offline"):
        open_device("OFF1")


def test_open_device_local_needs_no_adb(monkeypatch):
    monkeypatch.setenv("ADB_SERVER_PORT", "1")  # would fail if touched
    dev = open_device("local")
    assert dev.serial == "local" and type(dev).__name__ == "LocalDevice"
    assert (dev.nice, dev.interpreter, dev.binary_path) == (None, "auto", None)


def test_open_device_local_takes_its_options_and_ignores_phone_ones(monkeypatch, tmp_path):
    monkeypatch.setenv("ADB_SERVER_PORT", "1")
    dev = open_device("local", binary_path="/opt/bm", nice=-10, interpreter="tensorflow",
                      thermal_max_c=45.0, thermal_poll_s=5.0, work_dir="/data/local/tmp/x")
    assert (dev.nice, dev.interpreter, dev.binary_path) == (-10, "tensorflow", "/opt/bm")
    dev = open_device("local", nice=None, interpreter=None)  # None keeps the defaults
    assert (dev.nice, dev.interpreter) == (None, "auto")


def test_open_device_refuses_local_only_options_for_a_phone(fake_adb):
    install_phone(fake_adb, SERIAL)
    with pytest.raises(UsageError) as e:
        open_device(SERIAL, nice=-10)
    assert "nice can only be set for the local device" in str(e.value) and SERIAL in str(e.value)
    with pytest.raises(UsageError, match="interpreter and nice"):
        open_device(SERIAL, nice=5, interpreter="litert")
    assert isinstance(open_device(SERIAL, nice=None), AndroidDevice)


def test_list_devices(fake_adb):
    install_phone(fake_adb, SERIAL)
    fake_adb.add_device("UNAUTH1", state="unauthorized", tags={"model": "Pixel_7"})
    infos = list_devices(AdbTransport())
    assert [(i.serial, i.extra["state"]) for i in infos] == [(SERIAL, "device"), ("UNAUTH1", "unauthorized")]
    assert infos[0].soc == "SM8250" and infos[1].model == "Pixel 7"


def test_phone_gone_right_after_a_complete_run_keeps_the_measurement(fake_adb, binary, model):
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    replay = recording("benchmark_model_ti_am62x_excerpt.txt")

    def run_then_vanish(dev, cmd, _m):
        dev.disconnect_after_commands = dev.requests  # the next request finds no phone
        return replay, 0

    phone.add_rule(re.compile(r"benchmark_model .*--graph="), run_then_vanish)
    dev = make(binary)
    m = dev.measure(model, RunSpec(timeout_s=60))
    assert m.output.e2e.count == 50 and m.state_before is not None
    assert m.state_after is None
    # the same device object knows the phone was there: it went away
    with pytest.raises(DeviceDisconnected, match=f"device {SERIAL} disconnected"):
        dev.measure(model, RunSpec(timeout_s=60))
    # a fresh lookup only knows that there is no such phone
    with pytest.raises(DeviceError) as e:
        make(binary).measure(model, RunSpec(timeout_s=60))
    assert type(e.value) is DeviceError and "known: none" in str(e.value)


@pytest.mark.phone
@pytest.mark.skipif(not os.environ.get("ANDROID_SERIAL"), reason="needs a phone: set ANDROID_SERIAL")
def test_real_phone_info_and_probe():
    serial = os.environ["ANDROID_SERIAL"]
    dev = open_device(serial)  # the real adb server (ADB_SERVER_PORT / 5037)
    info = dev.info()
    assert info.model and info.abi and info.sdk and info.cpu_clusters
    st = dev.state()
    assert st.cur_freq_khz and st.temps_c
    cpu_temps = {k: v for k, v in st.temps_c.items() if "cpu" in k.lower()}
    assert all(10 < v < 120 for v in cpu_temps.values()), cpu_temps  # units normalised
