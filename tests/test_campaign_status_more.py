"""`campaign status` after a runner died or while one runs, before the first run, with
failures grouped across models; and `campaign run` when the plan's binary changed."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from fakeadb.phone import fake_adb, fake_elf, install_phone  # noqa: F401
from host import campaign
from host.cli import main
from host.store import Store
from opcost.errors import RunTimeout
from opcost.records import BenchmarkOutput, DeviceInfo, DeviceState, E2EStats, Measurement, ModelRef, sha256_file


class Device:
    """Answers at once; runtime = the benchmark_model file it was opened with."""

    def __init__(self, serial, binary_path=None, timeout_models=(), interrupt_at=None, **kw):
        self.serial = serial
        self.binary_path = binary_path
        self.timeout_models = timeout_models
        self.interrupt_at = interrupt_at
        self.n = 0

    def info(self):
        return DeviceInfo(serial=self.serial, kind="android", model="FakePhone", abi="arm64-v8a")

    def state(self):
        return DeviceState()

    def measure(self, model_path, spec, *, model_name=None):
        self.n += 1
        if self.interrupt_at == self.n:
            raise KeyboardInterrupt
        if model_name in self.timeout_models:
            raise RunTimeout(f"{model_name} did not finish within the 1 s limit on {self.serial}")
        runtime = {"name": "benchmark_model", "version": "2.16",
                   "sha256": sha256_file(self.binary_path) if self.binary_path else ""}
        return Measurement(device=self.info(), model=ModelRef(sha256=sha256_file(model_path), name=model_name,
                                                             path=model_path),
                           spec=spec, output=BenchmarkOutput(e2e=E2EStats(count=1, mean_ms=2.0)), runtime=runtime)


def factory(**kw):
    return lambda serial, **more: Device(serial, **{**more, **kw})


def write_plan(tmp_path, n_models=3, extra=""):
    (tmp_path / "models").mkdir(exist_ok=True)
    for i in range(n_models):
        (tmp_path / "models" / f"synthetic_net_{i}.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes([i]) * 8)
    p = tmp_path / "plan.yaml"
    p.write_text(f"models: models\ndevices: [A]\nstore: s.db\n{extra}")
    return str(p)


def status(*args):
    return CliRunner().invoke(main, ["campaign", "status", *args], catch_exceptions=False)


# ---------------------------------------------------------------- a runner that is gone / alive
def test_jobs_left_running_by_an_interrupted_runner_are_shown_as_interrupted(tmp_path):
    plan = write_plan(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the 2nd run: that job stays 'running'
        campaign.run_campaign(plan, str(tmp_path / "s.db"), device_factory=factory(interrupt_at=2), progress=False)
    res = status(plan)
    assert res.exit_code == 0, res.output
    assert "A: 1/3 done, 2 pending (1 interrupted), 0 running, 0 failed" in res.stdout
    assert "note: 1 job was left running by a runner that is gone" in res.stdout
    assert f"`opcost campaign run {plan}` resumes it" in res.stdout
    rep = json.loads(status(plan, "--json").stdout)
    assert rep["runner"] is None and rep["interrupted"] == 1
    assert rep["devices"]["A"]["interrupted"] == 1 and rep["devices"]["A"]["running"] == 0


_RUNNER = textwrap.dedent('''
    import sys, time
    from host.campaign import load_plan
    from host.store import Store
    plan = load_plan(sys.argv[1])
    with Store.open(plan.store) as store:
        with store.campaign_lock():
            jobs = plan.jobs()
            store.sync_jobs([j.to_row() for j in jobs])
            store.job_started(jobs[0].job_id)
            print("ready", flush=True)
            time.sleep(60)
''')


def test_status_names_a_live_runner_and_sees_it_killed(tmp_path):
    plan = write_plan(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, plan], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        res = status(plan)
        assert res.exit_code == 0, res.output
        assert "A: 0/3 done, 2 pending, 1 running, 0 failed" in res.stdout
        assert f"a campaign runner is working on this store now (pid {proc.pid})" in res.stdout
        rep = json.loads(status(plan, "--json").stdout)
        assert rep["runner"]["pid"] == proc.pid and rep["interrupted"] == 0
        # The probe did not disturb the runner: a second runner is still refused.
        res = CliRunner().invoke(main, ["campaign", "run", plan, "--no-progress"])
        assert res.exit_code == 2 and "a campaign is already running on store" in res.output
        assert f"(pid {proc.pid})" in res.output
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    res = status(plan)  # kill -9: the 'running' row stays, the lock is gone
    assert "A: 0/3 done, 3 pending (1 interrupted), 0 running, 0 failed" in res.stdout
    assert "runner is working" not in res.stdout and "left running by a runner that is gone" in res.stdout


def test_jobs_of_an_earlier_runner_while_another_runs(tmp_path):
    """A live runner that started after a job was left running did not start that job."""
    plan = write_plan(tmp_path)
    db = str(tmp_path / "s.db")
    with pytest.raises(KeyboardInterrupt):
        campaign.run_campaign(plan, db, device_factory=factory(interrupt_at=1), progress=False)
    with Store.open(db) as store:
        store._conn().execute("UPDATE jobs SET started_at = started_at - 10")  # it ran a while ago
        with store.campaign_lock():  # a runner (this process) holds the lock now
            rep = campaign.campaign_report(plan, db)
    assert rep["runner"]["pid"] == os.getpid()
    assert (rep["devices"]["A"]["running"], rep["devices"]["A"]["interrupted"]) == (0, 1)


# ---------------------------------------------------------------- before the first run
def test_status_before_the_first_run_creates_nothing(tmp_path):
    plan = write_plan(tmp_path)
    rep = campaign.campaign_report(plan, str(tmp_path / "s.db"))
    assert rep["store_exists"] is False and rep["runner"] is None
    assert rep["devices"]["A"]["pending"] == rep["devices"]["A"]["total"] == 3
    res = status(plan)
    assert res.exit_code == 0, res.output
    assert f"store {tmp_path / 's.db'} does not exist yet" in res.stdout
    assert "A: 0/3 done, 3 pending, 0 running, 0 failed" in res.stdout
    assert sorted(os.listdir(tmp_path)) == ["models", "plan.yaml"]


# ---------------------------------------------------------------- failure reasons grouped
def test_failures_naming_the_model_are_grouped(tmp_path):
    plan = write_plan(tmp_path, n_models=4)
    names = [f"synthetic_net_{i}" for i in range(3)]
    campaign.run_campaign(plan, str(tmp_path / "s.db"), device_factory=factory(timeout_models=names), progress=False)
    res = status(plan)
    assert res.exit_code == 0, res.output
    lines = [ln.strip() for ln in res.stdout.splitlines() if " x " in ln]
    assert lines == ["3 x RunTimeout: <model> did not finish within the 1 s limit on A "
                     "(3 models: synthetic_net_0, synthetic_net_1, synthetic_net_2)"]
    dev = json.loads(status(plan, "--json").stdout)["devices"]["A"]
    assert len(dev["reasons"]) == 3  # every message in full
    assert [(g["reason"], g["count"], g["models"]) for g in dev["reason_groups"]] == [
        ("RunTimeout: <model> did not finish within the 1 s limit on A", 3, names)]


def test_one_failing_model_keeps_its_message(tmp_path):
    plan = write_plan(tmp_path, n_models=2)
    campaign.run_campaign(plan, str(tmp_path / "s.db"), device_factory=factory(timeout_models=["synthetic_net_1"]),
                 progress=False)
    res = status(plan)
    assert "    1 x RunTimeout: synthetic_net_1 did not finish within the 1 s limit on A" in res.stdout


# ---------------------------------------------------------------- the plan's binary changed
def test_changed_binary_warns_and_remeasures_on_request(tmp_path, caplog):
    fake_elf(str(tmp_path / "bm_old"))
    with open(tmp_path / "bm_new", "wb") as f:
        f.write(open(tmp_path / "bm_old", "rb").read() + b"another build\n")
    plan_path = write_plan(tmp_path, n_models=2, extra="binary: bm_old\n")
    db = str(tmp_path / "s.db")
    assert campaign.run_campaign(plan_path, db, device_factory=factory(), progress=False).done == 2

    (tmp_path / "plan.yaml").write_text(open(plan_path).read().replace("bm_old", "bm_new"))
    caplog.set_level(logging.WARNING, logger="opcost.campaign")
    s = campaign.run_campaign(plan_path, db, device_factory=factory(), progress=False)
    assert (s.done, s.skipped_done, s.other_binary) == (0, 2, 2)
    msg = "\n".join(r.getMessage() for r in caplog.records)
    assert "2 done job(s) (on A) were measured with another benchmark_model" in msg
    assert "--remeasure-other-binary" in msg

    caplog.clear()
    s = campaign.run_campaign(plan_path, db, device_factory=factory(), progress=False, remeasure_other_binary=True)
    assert (s.done, s.skipped_done, s.other_binary) == (2, 0, 0)
    with Store.open(db, readonly=True) as store:
        runs = store.runs_df()
        assert len(runs) == 4  # the runs of the old build stay
        assert sorted(set(runs["runtime_sha256"])) == sorted({sha256_file(str(tmp_path / b))
                                                              for b in ("bm_old", "bm_new")})
    caplog.clear()
    s = campaign.run_campaign(plan_path, db, device_factory=factory(), progress=False)
    assert (s.done, s.skipped_done, s.other_binary) == (0, 2, 0)
    assert "another benchmark_model" not in "\n".join(r.getMessage() for r in caplog.records)


def test_changed_binary_through_the_cli(fake_adb, tmp_path, caplog):
    """The real device factory (adbutils -> fake adb phone) records the binary's sha256."""
    phone = install_phone(fake_adb, "SYN8250A")
    fake_elf(str(tmp_path / "bm_old"))
    with open(tmp_path / "bm_new", "wb") as f:
        f.write(open(tmp_path / "bm_old", "rb").read() + b"another build\n")
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"z" * 8)
    plan = tmp_path / "plan.yaml"
    plan.write_text("models: [m.tflite]\ndevices: [SYN8250A]\nbinary: bm_old\n")
    run = lambda *a: CliRunner().invoke(main, ["campaign", "run", str(plan), "--no-progress", *a],  # noqa: E731
                                        catch_exceptions=False)
    assert run().exit_code == 0
    plan.write_text(plan.read_text().replace("bm_old", "bm_new"))
    res = run()
    assert res.exit_code == 0, res.output
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "1 done job(s) (on SYN8250A) were measured with another benchmark_model" in warnings
    assert "1 jobs: 0 measured now, 1 already done" in res.stdout and "--remeasure-other-binary" in res.stdout
    res = run("--remeasure-other-binary")
    assert res.exit_code == 0, res.output
    assert "1 jobs: 1 measured now, 0 already done" in res.stdout
    assert len([c for c in phone.commands if "--graph=" in c]) == 2


def test_a_status_probe_does_not_turn_a_starting_runner_away(tmp_path):
    """`campaign status` holds the lock shared for an instant; a runner starting then waits
    for it (briefly) instead of refusing as if another campaign ran."""
    import fcntl
    import threading

    db = str(tmp_path / "s.db")
    with Store.open(db) as store:
        probe = open(db + ".campaign.lock", "a+")
        fcntl.flock(probe.fileno(), fcntl.LOCK_SH)   # what Store.campaign_runner does
        timer = threading.Timer(0.3, fcntl.flock, (probe.fileno(), fcntl.LOCK_UN))
        timer.start()
        try:
            with store.campaign_lock():
                assert store.campaign_runner() is not None   # this process is the runner now
        finally:
            timer.join()
            probe.close()
