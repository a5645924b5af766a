"""Read-only stores: writers are refused at Store.open (before anything is measured), write
errors are StoreErrors naming the store, and reading commands open the store read-only.

Tests run as root, for whom chmod does not make a file read-only: ``read_only`` uses
``chattr +i`` then (and chmod for other users), and skips where neither works.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess

import pytest
from click.testing import CliRunner

from fakeadb.phone import fake_adb, fake_elf, install_phone  # noqa: F401
from host.cli import main
from host.store import Store
from opcost.errors import StoreError
from opcost.records import BenchmarkOutput, DeviceInfo, E2EStats, Measurement, ModelRef, RunSpec

PHONE = "SYN8250A"


@contextlib.contextmanager
def read_only(path):
    """Make the file or folder ``path`` read-only for this process, also for root."""
    path = str(path)
    if os.geteuid() != 0:
        mode = os.stat(path).st_mode
        os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
        try:
            yield
        finally:
            os.chmod(path, mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", path], capture_output=True).returncode != 0:
        pytest.skip("cannot make a path read-only for root here (no chattr +i on this file system)")
    try:
        assert not os.access(path, os.W_OK)
        yield
    finally:
        subprocess.run([chattr, "-i", path], check=True)


def measurement(i=0, serial="SER1"):
    return Measurement(device=DeviceInfo(serial=serial, model="Phone"),
                       model=ModelRef(sha256=f"{i:064x}", name=f"synthetic_{i}"),
                       spec=RunSpec(), output=BenchmarkOutput(e2e=E2EStats(count=3, mean_ms=1.0 + i)))


@pytest.fixture
def filled(tmp_path):
    """A store with two runs, in its own folder, closed (no -wal/-shm files left)."""
    folder = tmp_path / "stores"
    folder.mkdir()
    db = str(folder / "runs.db")
    with Store.open(db) as s:
        s.add_measurement(measurement(0))
        s.add_measurement(measurement(1))
    assert not os.path.exists(db + "-wal")
    return db


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ---------------------------------------------------------------- writers: refused up front
def test_open_for_writing_refuses_a_read_only_file(filled):
    with read_only(filled):
        with pytest.raises(StoreError, match=r"store .*runs\.db' is read-only") as exc:
            Store.open(filled)
        assert "writable" in exc.value.hint and "opcost export" in exc.value.hint
    with Store.open(filled) as s:  # writable again: nothing was changed
        assert s.count_runs() == 2


def test_open_for_writing_refuses_a_read_only_folder(filled):
    folder = os.path.dirname(filled)
    new = os.path.join(folder, "new.db")
    with read_only(folder):
        with pytest.raises(StoreError, match=r"folder of store .*runs\.db' is read-only"):
            Store.open(filled)
        with pytest.raises(StoreError, match=r"folder of store .*new\.db' is read-only"):
            Store.open(new)
    assert not os.path.exists(new)


def test_writes_through_a_read_only_store_are_store_errors(filled):
    """A write that SQLite refuses is a StoreError naming the store, never sqlite3.Error."""
    with Store.open(filled, readonly=True) as s:
        with pytest.raises(StoreError, match=r"store .*runs\.db' is read-only") as exc:
            s.add_measurement(measurement(2))
        assert not isinstance(exc.value, sqlite3.Error) and exc.value.hint
        with pytest.raises(StoreError, match=r"runs\.db"):
            s.sync_jobs([{"job_id": "j", "device_serial": "A", "model_sha256": "a" * 64, "spec_key": "k",
                          "spec": {}, "repeat": 0}])
        assert s.count_runs() == 2  # the store still reads


# ---------------------------------------------------------------- readers: read-only open
def test_read_only_open_works_in_a_read_only_folder(filled):
    folder = os.path.dirname(filled)
    with read_only(folder):
        with Store.open(filled, readonly=True) as s:
            assert s.count_runs() == 2
            assert sorted(s.runs_df()["model_name"]) == ["synthetic_0", "synthetic_1"]
        assert sorted(os.listdir(folder)) == ["runs.db"]  # no side files, nothing created
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(os.path.join(folder, "none.db"), readonly=True)
    assert not os.path.exists(os.path.join(folder, "none.db"))


def test_read_only_open_of_a_read_only_file(filled):
    with read_only(filled):
        with Store.open(filled, readonly=True) as s:
            assert s.count_runs() == 2


def test_export_and_status_read_a_store_in_a_read_only_folder(filled, tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"x" * 8)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"models: [m.tflite]\ndevices: [A]\nstore: {filled}\n")
    with read_only(os.path.dirname(filled)):
        res = run("export", "--store", filled, "--out", str(tmp_path / "out"), "--json")
        assert res.exit_code == 0, res.output
        assert len(json.loads(res.stdout)["files"]) == 4
        res = run("campaign", "status", str(plan))
        assert res.exit_code == 0, res.output
        assert "A: 0/1 done, 1 pending, 0 running, 0 failed" in res.stdout
    assert "runs.csv" in os.listdir(tmp_path / "out")


def test_reading_commands_leave_no_side_files_in_a_writable_folder(filled, tmp_path):
    res = run("export", "--store", filled, "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(os.path.dirname(filled))) == ["runs.db"]   # no -wal / -shm left behind


def test_commands_that_only_read_open_a_shared_read_only_store(filled):
    """fit / evaluate / adapt / signature commands read a store in a read-only folder (e.g.
    a lab's shared mount); where the store can be written they open it as before."""
    with Store.open_reader(filled) as s:
        assert not s.readonly and s.count_runs() == 2
    with read_only(os.path.dirname(filled)):
        with Store.open_reader(filled) as s:
            assert s.readonly and s.count_runs() == 2
        res = run("fit", "--store", filled, "--device", "SER1", "--delegate", "xnnpack", "--out",
                  os.path.join(os.path.dirname(os.path.dirname(filled)), "p.predictor"))
    assert res.exit_code == 2 and "unable to open" not in res.output
    assert "measured models' .tflite files were found" in res.output   # the store was read


# ---------------------------------------------------------------- CLI: stop before measuring
def _phone_plan(fake_adb, tmp_path, store):
    phone = install_phone(fake_adb, PHONE)
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"y" * 8)
    fake_elf(str(tmp_path / "benchmark_model"))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"models: [m.tflite]\ndevices: [{PHONE}]\nbinary: benchmark_model\nstore: {store}\n")
    return phone, str(plan)


def _ran_benchmark(phone):
    return [c for c in phone.commands if re.search(r"benchmark_model .*--graph=", c)]


def test_campaign_run_on_a_read_only_store_stops_before_measuring(fake_adb, filled, tmp_path):
    phone, plan = _phone_plan(fake_adb, tmp_path, filled)
    with read_only(filled):
        res = run("campaign", "run", plan, "--no-progress")
    assert res.exit_code == 2, res.output
    assert "is read-only" in res.output and "what to do:" in res.output
    assert "Traceback" not in res.output and "OperationalError" not in res.output
    assert _ran_benchmark(phone) == []
    res = run("campaign", "run", plan, "--no-progress")  # writable again: it measures
    assert res.exit_code == 0, res.output
    assert len(_ran_benchmark(phone)) == 1


@pytest.mark.parametrize("what", ["file", "folder"])
def test_profile_into_a_read_only_store_stops_before_measuring(fake_adb, filled, tmp_path, what):
    phone, _ = _phone_plan(fake_adb, tmp_path, filled)
    with read_only(filled if what == "file" else os.path.dirname(filled)):
        res = run("profile", str(tmp_path / "m.tflite"), "--device", PHONE, "--binary",
                  str(tmp_path / "benchmark_model"), "--store", filled)
    assert res.exit_code == 2, res.output
    assert "is read-only" in res.output and "Traceback" not in res.output
    assert _ran_benchmark(phone) == []


def test_profile_stops_when_the_store_stops_taking_runs(fake_adb, tmp_path):
    """A store that fails mid-run (here its -wal file turns immutable, as a full or failing
    disk would): the run just measured is printed (nothing else keeps it), the rest is not
    measured, and every model is accounted for in --json."""
    from fakeadb.phone import BENCH_RE, _benchmark_handler, recording

    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make the store fail mid-run")
    db = str(tmp_path / "runs.db")
    wal = db + "-wal"
    phone = install_phone(fake_adb, PHONE, benchmark=None)
    ok = _benchmark_handler(recording("benchmark_model_ti_am62x_excerpt.txt"))
    frozen = []

    def handler(dev, cmd, m):
        if len(_ran_benchmark(dev)) == 2:   # before the second model's result comes back
            frozen.append(subprocess.run(["chattr", "+i", wal], capture_output=True).returncode == 0)
        return ok(dev, cmd, m)

    phone.add_rule(BENCH_RE, handler)
    binary = fake_elf(str(tmp_path / "benchmark_model"))
    models = []
    for name in ("m_a", "m_b", "m_c"):
        (tmp_path / f"{name}.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + name.encode() * 20)
        models.append(str(tmp_path / f"{name}.tflite"))
    try:
        res = run("profile", *models, "--device", PHONE, "--binary", binary, "--store", db, "--json")
    finally:
        subprocess.run(["chattr", "-i", wal], capture_output=True)
    if frozen != [True]:
        pytest.skip("chattr +i does not work on this file system")
    assert res.exit_code == 1 and "Traceback" not in res.output
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r.get("run_id") for r in recs[:2]] == [1, None] and recs[1]["model"]["name"] == "m_b"
    assert recs[2]["model_path"] == models[2] and recs[2]["error"] == "NotMeasured"
    assert "m_b.tflite: measured but not stored" in res.stderr and "the store cannot be written" in res.stderr
    assert len(_ran_benchmark(phone)) == 2   # m_c was not run
    with Store.open(db) as s:
        assert s.count_runs() == 1


def test_write_probe_refuses_what_sqlite_cannot_write_and_waits_for_no_lock(filled):
    import time

    # Another process in the middle of a write: the store is writable, open does not wait.
    other = sqlite3.connect(filled, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        with Store.open(filled) as s:
            assert s.count_runs() == 2
        assert time.monotonic() - t0 < 10   # the busy timeout is 30 s
    finally:
        other.execute("ROLLBACK")
        other.close()
    # What os.access cannot see (a read-only mount, an immutable file for root): SQLite says.
    with Store.open(filled) as s:
        ro = sqlite3.connect("file:" + filled + "?mode=ro", uri=True, isolation_level=None)
        try:
            with pytest.raises(StoreError, match="is read-only") as exc:
                s._check_writable(ro)
            assert "chmod" in exc.value.hint
        finally:
            ro.close()
