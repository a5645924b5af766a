"""Tests of host/campaign.py with fake devices (objects implementing opcost.interfaces.Device).

Model files are synthetic: a few bytes with the 'TFL3' identifier, made in tmp_path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

from host.campaign import (
    DEVICE_LOST,
    campaign_status,
    job_id,
    load_plan,
    plan_from_dict,
    run_campaign,
)
from host.store import Store
from opcost.errors import (
    AdbError,
    BenchmarkFailed,
    DeviceDisconnected,
    DeviceError,
    OpcostError,
    PlanError,
)
from opcost.interfaces import Device
from opcost.records import (
    BenchmarkOutput,
    DeviceInfo,
    DeviceState,
    E2EStats,
    Measurement,
    ModelRef,
    RunSpec,
    sha256_file,
)


class FakeDevice:
    """A device that answers instantly; ``fail(call_index, path)`` may raise to script failures."""

    def __init__(self, serial, abi="arm64-v8a", fail=None, binary_path=None, **kw):
        self.serial = serial
        self.abi = abi
        self.fail = fail
        self.binary_path = binary_path
        self.kw = kw
        self.calls = []
        self.lock = threading.Lock()

    def info(self):
        return DeviceInfo(serial=self.serial, kind="android", model="FakePhone", abi=self.abi)

    def state(self):
        return DeviceState(temps_c={"cpu": 30.0})

    def check_spec(self, spec):
        pass

    def measure(self, model_path, spec, *, model_name=None):
        with self.lock:
            k = len(self.calls)
            self.calls.append((model_path, spec.key()))
        if self.fail is not None:
            self.fail(k, model_path)
        return Measurement(
            device=self.info(),
            model=ModelRef(sha256=sha256_file(model_path), name=model_name or "m", path=model_path,
                           size_bytes=os.path.getsize(model_path)),
            spec=spec,
            output=BenchmarkOutput(e2e=E2EStats(count=spec.num_runs, mean_ms=1.0 + k)),
            raw_output=f"fake run {k}",
        )


class Factory:
    """device_factory for run_campaign: hands out FakeDevices and records how it was called."""

    def __init__(self, **per_serial):
        self.per_serial = per_serial  # serial -> dict of FakeDevice kwargs, or an exception to raise
        self.opened = []
        self.devices = {}

    def __call__(self, serial, **kw):
        self.opened.append((serial, kw))
        spec = self.per_serial.get(serial, {})
        if isinstance(spec, BaseException):
            raise spec
        dev = FakeDevice(serial, **{**spec, **kw})
        self.devices[serial] = dev
        return dev


def make_models(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"synthetic_m{i}.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes([i]) * 16)
    return folder


def make_plan(tmp_path, *, n_models=3, devices=("A", "B"), repeats=2, **extra):
    make_models(tmp_path / "models", n_models)
    data = {"models": ["models/*.tflite"], "devices": list(devices), "repeats": repeats,
            "settings": [{"delegate": "xnnpack", "threads": 1}], "num_runs": 5, **extra}
    return plan_from_dict(data, base_dir=str(tmp_path))


@pytest.fixture
def store(tmp_path):
    with Store.open(str(tmp_path / "c.db")) as s:
        yield s


def run_ids_by_job(store):
    return Counter(store.runs_df()["job_id"])


def test_fake_device_implements_protocol():
    assert isinstance(FakeDevice("x"), Device)


# ---------------------------------------------------------------- happy path and resume
def test_full_campaign_then_nothing_to_do(tmp_path, store):
    plan = make_plan(tmp_path)
    fac = Factory()
    s = run_campaign(plan, store, device_factory=fac, progress=False)
    assert (s.jobs, s.done, s.failed, s.skipped_done) == (12, 12, 0, 0)
    counts = run_ids_by_job(store)
    assert len(counts) == 12 and set(counts.values()) == {1}
    assert {j.job_id for j in plan.jobs()} == set(counts)
    assert campaign_status(plan, store) == {
        d: {"done": 6, "pending": 0, "running": 0, "failed": 0, "total": 6, "interrupted": 0, "reasons": {},
            "reason_groups": []} for d in "AB"}

    assert len(store._conns) == 1  # the workers closed their connections

    fac2 = Factory()
    s2 = run_campaign(plan, store, device_factory=fac2, progress=False)
    assert (s2.done, s2.skipped_done) == (0, 12)
    assert fac2.opened == []  # nothing to do: no device is even opened
    assert store.count_runs() == 12


def test_plan_file_and_store_paths_are_accepted(tmp_path):
    make_models(tmp_path / "models", 2)
    (tmp_path / "p.yaml").write_text("models: models\ndevices: [A]\nstore: s.db\n")
    db = str(tmp_path / "s.db")
    s = run_campaign(str(tmp_path / "p.yaml"), db, device_factory=Factory(), progress=False)
    assert s.done == 2
    assert campaign_status(str(tmp_path / "p.yaml"), db)["A"]["done"] == 2


def test_two_runners_on_one_store_are_refused(tmp_path, store):
    from opcost.errors import StoreError

    plan = make_plan(tmp_path, n_models=1, devices=("A",), repeats=1)
    with store.campaign_lock():
        with pytest.raises(StoreError, match=r"a campaign is already running on store .* \(pid \d+\)"):
            run_campaign(plan, store, device_factory=Factory(), progress=False)
    assert run_campaign(plan, store, device_factory=Factory(), progress=False).done == 1


def test_job_ids_are_content_based_so_renamed_plan_resumes(tmp_path, store):
    make_models(tmp_path / "models", 2)
    text = "models: [models/*.tflite]\ndevices: [A]\nrepeats: 2\nsettings: [{delegate: cpu, threads: 2}]\n"
    (tmp_path / "first.yaml").write_text(text)
    run_campaign(load_plan(str(tmp_path / "first.yaml")), store, device_factory=Factory(), progress=False)
    # Move the models and the plan, rename both: same content, same jobs.
    os.rename(tmp_path / "models", tmp_path / "moved")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "renamed.yaml").write_text(text.replace("models/*", "../moved/*"))
    fac = Factory()
    s = run_campaign(load_plan(str(tmp_path / "other" / "renamed.yaml")), store, device_factory=fac,
                     progress=False)
    assert (s.done, s.skipped_done) == (0, 4)
    # The id depends on exactly model content, serial, spec key and repeat.
    spec = RunSpec(delegate="cpu", threads=2)
    sha = sha256_file(str(tmp_path / "moved" / "synthetic_m0.tflite"))
    assert job_id(sha, "A", spec.key(), 1) in set(store.runs_df()["job_id"])
    assert job_id(sha, "A", spec.key(), 1) != job_id(sha, "B", spec.key(), 1)


def test_interrupt_mid_campaign_then_resume_redoes_only_missing(tmp_path, store):
    plan = make_plan(tmp_path, n_models=4, repeats=2)  # 8 jobs per device

    def crash_on_5th(k, path):
        if k == 4:
            raise KeyboardInterrupt

    fac = Factory(A={"fail": crash_on_5th})
    with pytest.raises(KeyboardInterrupt):
        run_campaign(plan, store, device_factory=fac, progress=False)
    committed = run_ids_by_job(store)
    a_done = sum(1 for j in plan.jobs() if j.device_serial == "A" and j.job_id in committed)
    assert a_done == 4
    assert set(committed.values()) == {1}
    status = campaign_status(plan, store)
    # The job in flight when the crash hit: its runner is gone, so it is pending again.
    assert (status["A"]["running"], status["A"]["interrupted"]) == (0, 1)

    fac2 = Factory()
    s = run_campaign(plan, store, device_factory=fac2, progress=False)
    redone = len(fac2.devices["A"].calls) + len(fac2.devices.get("B", FakeDevice("B")).calls)
    assert redone == 16 - len(committed) == s.done
    counts = run_ids_by_job(store)
    assert len(counts) == 16 and set(counts.values()) == {1}
    # The job that was in flight is measured exactly once, on resume.
    assert campaign_status(plan, store)["A"] == {"done": 8, "pending": 0, "running": 0, "failed": 0,
                                                 "total": 8, "interrupted": 0, "reasons": {},
                                                 "reason_groups": []}


_KILL_SCRIPT = textwrap.dedent('''
    import os, sys, time
    from host.campaign import plan_from_dict, run_campaign
    from host.store import Store
    from opcost.records import BenchmarkOutput, DeviceInfo, E2EStats, Measurement, ModelRef, sha256_file

    class SlowDevice:
        def __init__(self, serial, **kw):
            self.serial = serial
        def info(self):
            return DeviceInfo(serial=self.serial)
        def state(self):
            raise NotImplementedError
        def measure(self, model_path, spec, *, model_name=None):
            time.sleep(0.1)
            return Measurement(device=self.info(), model=ModelRef(sha256=sha256_file(model_path),
                               name=model_name), spec=spec, output=BenchmarkOutput(e2e=E2EStats(1, 1.0)))

    base, db = sys.argv[1], sys.argv[2]
    plan = plan_from_dict({"models": ["models/*.tflite"], "devices": ["A", "B"], "repeats": 10},
                          base_dir=base)
    with Store.open(db) as store:
        run_campaign(plan, store, device_factory=SlowDevice, progress=False)
''')


def test_killed_process_loses_nothing_committed(tmp_path):
    """SIGKILL a real campaign process mid-run; resume measures only what is missing."""
    make_models(tmp_path / "models", 3)
    db = str(tmp_path / "k.db")
    script = tmp_path / "run_slow.py"
    script.write_text(_KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), db])
    try:
        deadline = time.monotonic() + 30
        n = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if os.path.exists(db):
                try:
                    with Store.open(db, create=False) as s:
                        n = s.count_runs()
                except Exception:  # noqa: BLE001 - the store may be half-created
                    n = 0
                if n >= 8:
                    break
        assert proc.poll() is None, "campaign finished before it could be killed"
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    plan = plan_from_dict({"models": ["models/*.tflite"], "devices": ["A", "B"], "repeats": 10},
                          base_dir=str(tmp_path))
    with Store.open(db) as store:
        before = run_ids_by_job(store)
        assert len(before) >= 8 and set(before.values()) == {1}
        fac = Factory()
        s = run_campaign(plan, store, device_factory=fac, progress=False)
        after = run_ids_by_job(store)
        assert len(after) == 60 and set(after.values()) == {1}
        assert s.done == 60 - len(before) == sum(len(d.calls) for d in fac.devices.values())
        assert s.skipped_done == len(before)


# ---------------------------------------------------------------- failures
def test_disconnecting_device_fails_its_jobs_and_others_go_on(tmp_path, store):
    plan = make_plan(tmp_path, n_models=3, repeats=2, retries=2, backoff_s=1.5)  # 6 jobs per device
    sleeps = []

    def unplugged_after_2(k, path):
        if k >= 2:
            raise DeviceDisconnected("device 'B' not found", serial="B")

    fac = Factory(B={"fail": unplugged_after_2})
    s = run_campaign(plan, store, device_factory=fac, progress=False, sleep=sleeps.append)
    assert s.devices["A"].done == 6 and s.devices["A"].failed == 0
    assert s.devices["B"].done == 2 and s.devices["B"].failed == 4
    assert "device lost after 3 attempts" in s.devices["B"].lost
    assert len(fac.devices["B"].calls) == 2 + 3  # 2 good, then 1 try + 2 retries
    assert sleeps == [1.5, 3.0]
    st = campaign_status(plan, store)
    assert st["B"]["done"] == 2 and st["B"]["failed"] == 4
    reasons = st["B"]["reasons"]
    assert sum(reasons.values()) == 4
    assert any(r.startswith("device lost after 3 attempts: DeviceDisconnected") for r in reasons)
    assert any(r.startswith("not run: device lost") for r in reasons)
    assert st["A"]["done"] == 6

    # The phone is back: jobs lost with the device are retried without --retry-failed.
    fac2 = Factory()
    s2 = run_campaign(plan, store, device_factory=fac2, progress=False, sleep=sleeps.append)
    assert s2.done == 4 and list(fac2.devices) == ["B"]
    assert campaign_status(plan, store)["B"]["done"] == 6
    assert set(run_ids_by_job(store).values()) == {1}


def test_retries_are_bounded_with_exponential_backoff(tmp_path, store):
    plan = make_plan(tmp_path, n_models=1, devices=("A",), repeats=1, retries=3, backoff_s=2.0,
                     backoff_max_s=5.0)

    def flaky(k, path):
        if k < 3:
            raise AdbError("adb server answered: FAIL")

    sleeps = []
    s = run_campaign(plan, store, device_factory=Factory(A={"fail": flaky}), progress=False, sleep=sleeps.append)
    assert s.done == 1 and s.failed == 0
    assert sleeps == [2.0, 4.0, 5.0]  # doubling, capped by backoff_max_s
    jid = plan.jobs()[0].job_id
    assert store.job_rows([jid])[jid]["attempts"] == 4


def test_zero_retries_means_one_attempt(tmp_path, store):
    plan = make_plan(tmp_path, n_models=2, devices=("A",), repeats=1, retries=0)

    def always(k, path):
        raise DeviceDisconnected("gone")

    sleeps = []
    fac = Factory(A={"fail": always})
    s = run_campaign(plan, store, device_factory=fac, progress=False, sleep=sleeps.append)
    assert sleeps == [] and len(fac.devices["A"].calls) == 1
    assert s.failed == 2


def test_per_job_failure_is_recorded_and_campaign_continues(tmp_path, store):
    plan = make_plan(tmp_path, n_models=3, devices=("A",), repeats=1)
    bad = plan.models[1].path

    def gpu_rejects_model_1(k, path):
        if path == bad:
            raise BenchmarkFailed("benchmark_model exited with code 1", exit_code=1, output_tail="ERROR: x")

    s = run_campaign(plan, store, device_factory=Factory(A={"fail": gpu_rejects_model_1}), progress=False)
    assert (s.done, s.failed) == (2, 1)
    st = campaign_status(plan, store)["A"]
    assert st["reasons"] == {"BenchmarkFailed: benchmark_model exited with code 1": 1}

    # Not retried by default ...
    fac = Factory()
    s2 = run_campaign(plan, store, device_factory=fac, progress=False)
    assert (s2.done, s2.skipped_failed) == (0, 1) and fac.opened == []
    # ... but with retry_failed.
    s3 = run_campaign(plan, store, device_factory=Factory(), progress=False, retry_failed=True)
    assert s3.done == 1
    assert campaign_status(plan, store)["A"]["done"] == 3


def test_full_device_storage_stops_that_device_without_retries(tmp_path, store):
    from opcost.errors import DeviceStorageFull

    plan = make_plan(tmp_path, n_models=3, repeats=1)

    def full(k, path):
        raise DeviceStorageFull("push failed: No space left on device", serial="B")

    sleeps = []
    fac = Factory(B={"fail": full})
    s = run_campaign(plan, store, device_factory=fac, progress=False, sleep=sleeps.append)
    assert len(fac.devices["B"].calls) == 1 and sleeps == []
    assert s.devices["B"].failed == 3 and s.devices["A"].done == 3
    assert s.devices["B"].lost.startswith("device unusable: DeviceStorageFull: push failed")
    # After freeing space, running the plan again measures them.
    s2 = run_campaign(plan, store, device_factory=Factory(), progress=False)
    assert s2.done == 3


def test_unexpected_exception_in_device_is_a_job_failure(tmp_path, store):
    plan = make_plan(tmp_path, n_models=2, devices=("A",), repeats=1)

    def bug(k, path):
        if k == 0:
            raise ValueError("oops")

    s = run_campaign(plan, store, device_factory=Factory(A={"fail": bug}), progress=False)
    assert (s.done, s.failed) == (1, 1)
    assert list(s.devices["A"].reasons) == ["internal error: ValueError: oops"]


def test_device_that_cannot_be_opened(tmp_path, store):
    plan = make_plan(tmp_path, n_models=2, repeats=1)
    fac = Factory(B=DeviceError("device 'B' is unauthorized", serial="B"))
    s = run_campaign(plan, store, device_factory=fac, progress=False)
    assert s.devices["A"].done == 2
    assert s.devices["B"].failed == 2
    assert "cannot open device: DeviceError: device 'B' is unauthorized" in s.devices["B"].lost
    jid = [j.job_id for j in plan.jobs() if j.device_serial == "B"][0]
    assert store.job_rows([jid])[jid]["error_type"] == DEVICE_LOST


def test_unexpected_error_opening_a_device_does_not_stop_the_others(tmp_path, store):
    plan = make_plan(tmp_path, n_models=1, repeats=1)
    s = run_campaign(plan, store, device_factory=Factory(A=RuntimeError("usb stack exploded")), progress=False)
    assert s.devices["B"].done == 1
    assert s.devices["A"].lost == "cannot open device: RuntimeError: usb stack exploded"


def test_device_without_model_hash_gets_the_plans(tmp_path, store):
    plan = make_plan(tmp_path, n_models=1, devices=("A",), repeats=1)

    class NoHashDevice(FakeDevice):
        def measure(self, model_path, spec, *, model_name=None):
            m = super().measure(model_path, spec, model_name=model_name)
            m.model = ModelRef(sha256="", name="?")
            return m

    run_campaign(plan, store, device_factory=lambda serial, **kw: NoHashDevice(serial), progress=False)
    assert list(store.runs_df()["model_sha256"]) == [plan.models[0].sha256]
    assert store.models()[0].name == "synthetic_m0"


def test_binary_by_abi_and_thermal_options_reach_the_factory(tmp_path, store):
    (tmp_path / "bin").mkdir()
    for name in ("bm64", "bm32"):
        (tmp_path / "bin" / name).write_bytes(b"\x7fELF")
    plan = make_plan(tmp_path, n_models=1, devices=("A", "B", "C", "local"), repeats=1,
                     binary={"arm64-v8a": "bin/bm64", "armeabi-v7a": "bin/bm32"}, thermal={"max_c": 42, "max_wait_s": 120},
                     device_options={"work_dir": "/data/local/tmp/x"}, nice=-5)
    fac = Factory(B={"abi": "armeabi-v7a"}, C={"abi": "x86_64"})
    s = run_campaign(plan, store, device_factory=fac, progress=False)
    assert fac.devices["A"].binary_path == str(tmp_path / "bin" / "bm64")
    assert fac.devices["B"].binary_path == str(tmp_path / "bin" / "bm32")
    assert fac.devices["local"].binary_path is None
    assert fac.devices["A"].kw == {"thermal_max_c": 42.0, "thermal_max_wait_s": 120.0,
                                   "work_dir": "/data/local/tmp/x"}  # nice: only for the local device
    assert fac.devices["local"].kw == {"thermal_max_c": 42.0, "thermal_max_wait_s": 120.0,
                                       "work_dir": "/data/local/tmp/x", "nice": -5}
    assert s.devices["C"].failed == 1 and "no benchmark_model binary for ABI 'x86_64'" in s.devices["C"].lost
    assert s.done == 3


def test_store_error_while_writing_stops_the_campaign(tmp_path):
    plan = make_plan(tmp_path, n_models=2, devices=("A",), repeats=1)

    class BrokenStore:
        """A store whose disk is full: every write of a measurement fails."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def add_measurement(self, m, **kw):
            from opcost.errors import StoreError
            raise StoreError("cannot commit: database or disk is full")

    from opcost.errors import StoreError
    with Store.open(str(tmp_path / "c.db")) as inner:
        with pytest.raises(StoreError, match="disk is full"):
            run_campaign(plan, BrokenStore(inner), device_factory=Factory(), progress=False)
        assert campaign_status(plan, inner)["A"]["interrupted"] == 1  # left running, runner gone


# ---------------------------------------------------------------- plan files
def test_yaml_and_toml_plans_are_equivalent(tmp_path):
    make_models(tmp_path / "models", 2)
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""
        models: [models/synthetic_m0.tflite, models]
        devices: [A, local]
        num_runs: 7
        settings:
          - {delegate: xnnpack, threads: 2}
          - {delegate: gpu, gpu_precision: fp32}
        repeats: 3
        retries: 1
        thermal: {max_c: 40}
        store: out/results.db
    """))
    (tmp_path / "p.toml").write_text(textwrap.dedent("""
        models = ["models/synthetic_m0.tflite", "models"]
        devices = ["A", "local"]
        num_runs = 7
        repeats = 3
        retries = 1
        store = "out/results.db"
        [thermal]
        max_c = 40
        [[settings]]
        delegate = "xnnpack"
        threads = 2
        [[settings]]
        delegate = "gpu"
        gpu_precision = "fp32"
    """))
    py, pt = load_plan(str(tmp_path / "p.yaml")), load_plan(str(tmp_path / "p.toml"))
    assert [j.job_id for j in py.jobs()] == [j.job_id for j in pt.jobs()]
    assert len(py.models) == 2  # m0 listed twice (file and folder) is measured once
    assert len(py.jobs()) == 2 * 2 * 2 * 3
    assert py.specs[0] == RunSpec(delegate="xnnpack", threads=2, num_runs=7)
    assert py.specs[1].num_runs == 7 and py.specs[1].gpu_precision == "fp32"
    assert py.store == str(tmp_path / "out" / "results.db")
    assert py.thermal_max_c == 40.0 and py.retries == 1


def test_default_store_is_next_to_the_plan(tmp_path):
    make_models(tmp_path / "models", 1)
    (tmp_path / "p.yml").write_text("models: models\ndevices: local\n")
    plan = load_plan(str(tmp_path / "p.yml"))
    assert plan.store == str(tmp_path / "opcost.db")
    assert plan.specs == [RunSpec()] and plan.repeats == 1 and plan.retries == 2


@pytest.mark.parametrize("data, key, words", [
    ([1, 2], None, "must be a mapping"),
    ({"devices": ["A"]}, "models", "is missing"),
    ({"models": ["models/*.tflite"]}, "devices", "is missing"),
    ({"models": [], "devices": ["A"]}, "models", "non-empty list"),
    ({"models": ["nothing/*.tflite"], "devices": ["A"]}, "models[0]", "matches no file"),
    ({"models": ["absent.tflite"], "devices": ["A"]}, "models[0]", "does not exist"),
    ({"models": ["notes.txt"], "devices": ["A"]}, "models[0]", "not a TFLite model"),
    ({"models": ["empty"], "devices": ["A"]}, "models[0]", "no *.tflite files"),
    ({"models": ["models"], "devices": ["A", "A"]}, "devices", "more than once"),
    ({"models": ["models"], "devices": [3]}, "devices[0]", "non-empty string"),
    ({"models": ["models"], "devices": ["A"], "colour": "red"}, "colour", "unknown key"),
    ({"models": ["models"], "devices": ["A"], "settings": [{"delegat": "gpu"}]}, "settings[0].delegat",
     "not a run setting"),
    ({"models": ["models"], "devices": ["A"], "settings": [{"delegate": "tpu"}]}, "settings[0]",
     "unknown delegate 'tpu'"),
    ({"models": ["models"], "devices": ["A"], "settings": [{"threads": "4"}]}, "settings[0].threads",
     "must be an integer"),
    ({"models": ["models"], "devices": ["A"], "settings": [{"threads": 0}]}, "settings[0]", "threads must be >= 1"),
    ({"models": ["models"], "devices": ["A"], "settings": [{"op_profiling": "yes"}]}, "settings[0].op_profiling",
     "true or false"),
    ({"models": ["models"], "devices": ["A"], "settings": [{"cpu_mask": 240}]}, "settings[0].cpu_mask",
     "hex string"),
    ({"models": ["models"], "devices": ["A"], "settings": [{}, {"timeout_s": 5.0}]}, "settings[1]",
     "same run as settings[0]"),
    ({"models": ["models"], "devices": ["A"], "settings": "gpu"}, "settings", "must be a list"),
    ({"models": ["models"], "devices": ["A"], "num_runs": 2.5}, "(top level).num_runs", "must be an integer"),
    ({"models": ["models"], "devices": ["A"], "num_runs": 3, "defaults": {"num_runs": 4}}, "defaults",
     "also given at top level"),
    ({"models": ["models"], "devices": ["A"], "repeats": 0}, "repeats", "integer >= 1"),
    ({"models": ["models"], "devices": ["A"], "retries": -1}, "retries", "integer >= 0"),
    ({"models": ["models"], "devices": ["A"], "retries": True}, "retries", "integer >= 0"),
    ({"models": ["models"], "devices": ["A"], "backoff_s": "1s"}, "backoff_s", "number >= 0"),
    ({"models": ["models"], "devices": ["A"], "binary": "bin/nope"}, "binary", "does not exist"),
    ({"models": ["models"], "devices": ["A"], "binary": {"arm64-v8a": 5}}, "binary.arm64-v8a", "path"),
    ({"models": ["models"], "devices": ["A"], "binary": []}, "binary", "path or a mapping"),
    ({"models": ["models"], "devices": ["A"], "thermal": {"max_c": 500}}, "thermal.max_c", "between 0 and 150"),
    ({"models": ["models"], "devices": ["A"], "thermal": {"maxc": 40}}, "thermal.maxc", "unknown key"),
    ({"models": ["models"], "devices": ["A"], "thermal": 40}, "thermal", "must be a mapping"),
    ({"models": ["models"], "devices": ["A"], "thermal": {"poll_s": 0}}, "thermal.poll_s", "seconds > 0"),
    ({"models": ["models"], "devices": ["A"], "device_options": {"binary_path": "x"}}, "device_options",
     "cannot be set here"),
    ({"models": ["models"], "devices": ["A"], "store": 3}, "store", "must be a file path"),
    ({"models": ["models"], "devices": ["local"], "nice": 20}, "nice", "integer from -20 to 19, got 20"),
    ({"models": ["models"], "devices": ["local"], "nice": "-10"}, "nice", "integer from -20 to 19"),
    ({"models": ["models"], "devices": ["local"], "nice": -2.5}, "nice", "integer from -20 to 19"),
    ({"models": ["models"], "devices": ["A"], "nice": -10}, "nice", "applies only to the 'local' device"),
    ({"models": ["models"], "devices": ["local"], "device_options": {"nice": -10}}, "device_options",
     "cannot be set here"),
])
def test_plan_validation_names_the_key(tmp_path, data, key, words):
    make_models(tmp_path / "models", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model at all")
    with pytest.raises(PlanError) as ei:
        plan_from_dict(data, base_dir=str(tmp_path), source="p.yaml")
    msg = str(ei.value)
    assert msg.startswith("plan p.yaml: ")
    if key is not None:
        assert f": {key}: " in msg
    assert words in msg


def test_plan_file_errors(tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(str(tmp_path / "absent.yaml"))
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(PlanError, match="extension '.json'") as ei:
        load_plan(str(tmp_path / "p.json"))
    assert "*.toml" in ei.value.hint
    (tmp_path / "bad.yaml").write_text("models: [a, b\ndevices: x\n")
    with pytest.raises(PlanError, match="not valid YAML"):
        load_plan(str(tmp_path / "bad.yaml"))
    (tmp_path / "bad.toml").write_text("models = [\n")
    with pytest.raises(PlanError, match="not valid TOML"):
        load_plan(str(tmp_path / "bad.toml"))
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(PlanError, match="must be a mapping"):
        load_plan(str(tmp_path / "empty.yaml"))
    with pytest.raises(PlanError, match="is a folder"):
        load_plan(str(tmp_path))


def test_plan_errors_are_opcost_errors_with_hint(tmp_path):
    make_models(tmp_path / "models", 1)
    with pytest.raises(OpcostError) as ei:
        plan_from_dict({"models": ["models"], "devices": ["A"], "settings": [{"delegat": "gpu"}]},
                       base_dir=str(tmp_path))
    assert "allowed settings: delegate, threads" in ei.value.hint
