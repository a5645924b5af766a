"""Tests of `opcost campaign status`, `opcost campaign run` (error paths) and `opcost export`.

The store is filled by run_campaign with fake devices; models are synthetic (tmp_path).
"""
from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from host.campaign import load_plan, run_campaign
from host.cli import main
from host.store import Store
from opcost.records import BenchmarkOutput, DeviceInfo, DeviceState, E2EStats, Measurement, ModelRef, sha256_file
from opcost.errors import BenchmarkFailed
from fakeadb.phone import _benchmark_handler, fake_adb, fake_elf, install_phone, recording  # noqa: F401


class QuickDevice:
    def __init__(self, serial, **kw):
        self.serial = serial
        self.n = 0

    def info(self):
        return DeviceInfo(serial=self.serial, model="Quick")

    def state(self):
        return DeviceState()

    def measure(self, model_path, spec, *, model_name=None):
        self.n += 1
        if self.serial == "B" and self.n == 2:
            raise BenchmarkFailed("benchmark_model crashed (signal 11)")
        return Measurement(device=self.info(), model=ModelRef(sha256=sha256_file(model_path), name=model_name),
                           spec=spec, output=BenchmarkOutput(e2e=E2EStats(count=1, mean_ms=2.5 * self.n)))


@pytest.fixture
def plan_path(tmp_path):
    (tmp_path / "models").mkdir()
    for i in range(2):
        (tmp_path / "models" / f"synthetic_{i}.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes([i]) * 8)
    p = tmp_path / "plan.yaml"
    p.write_text("models: models\ndevices: [A, B]\nrepeats: 2\nstore: results/c.db\n")
    return str(p)


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_status_and_export_after_a_campaign(plan_path, tmp_path):
    plan = load_plan(plan_path)
    with Store.open(plan.store) as store:
        run_campaign(plan, store, device_factory=QuickDevice, progress=False)

    res = run("campaign", "status", plan_path, "--json")
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)["devices"]
    assert st["A"] == {"done": 4, "pending": 0, "running": 0, "failed": 0, "total": 4, "interrupted": 0,
                       "reasons": {}, "reason_groups": []}
    assert st["B"]["done"] == 3 and st["B"]["reasons"] == {"BenchmarkFailed: benchmark_model crashed (signal 11)": 1}

    res = run("campaign", "status", plan_path)
    assert res.exit_code == 0
    assert "A: 4/4 done, 0 pending, 0 running, 0 failed" in res.output
    assert "1 x BenchmarkFailed: benchmark_model crashed (signal 11)" in res.output

    for fmt in ("csv", "parquet"):
        out = tmp_path / f"out_{fmt}"
        res = run("export", "--store", plan.store, "--format", fmt, "--out", str(out), "--json")
        assert res.exit_code == 0, res.output
        files = json.loads(res.output)["files"]
        assert [os.path.basename(f) for f in files] == [f"{t}.{fmt}" for t in ("runs", "ops", "devices", "models")]
        runs = pd.read_csv(files[0]) if fmt == "csv" else pd.read_parquet(files[0])
        assert len(runs) == 7 and sorted(set(runs["device_serial"])) == ["A", "B"]


def test_status_of_a_plan_never_run(plan_path, tmp_path):
    """Before the first run every job is pending; status says the store does not exist
    yet and does not create it (nor its folder)."""
    res = CliRunner().invoke(main, ["campaign", "status", plan_path])
    assert res.exit_code == 0, res.output
    assert "does not exist yet" in res.output and "campaign run" in res.output
    assert "A: 0/4 done, 4 pending, 0 running, 0 failed" in res.output
    assert "B: 0/4 done, 4 pending, 0 running, 0 failed" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(main, ["campaign", "status", plan_path, "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["store_exists"] is False and rep["runner"] is None
    assert {s: (d["pending"], d["total"]) for s, d in rep["devices"].items()} == {"A": (4, 4), "B": (4, 4)}
    assert not (tmp_path / "results").exists()


def test_run_with_missing_plan():
    res = CliRunner().invoke(main, ["campaign", "run", "no/such/plan.yaml"])
    assert res.exit_code == 2
    assert "error: plan file 'no/such/plan.yaml' does not exist" in res.output
    assert "Traceback" not in res.output


def test_run_with_invalid_plan(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('models = "m.tflite"\ndevices = ["A"]\nrepeats = "many"\n')
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3xx")
    res = CliRunner().invoke(main, ["campaign", "run", str(p)])
    assert res.exit_code == 2
    assert "repeats: must be an integer >= 1, got 'many'" in res.output


def test_run_with_unreadable_store(plan_path, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite " * 100)
    res = CliRunner().invoke(main, ["campaign", "run", plan_path, "--store", str(bad)])
    assert res.exit_code == 2
    assert "not an opcost store" in res.output


def test_export_errors(tmp_path):
    res = CliRunner().invoke(main, ["export", "--store", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(main, ["export", "--store", str(tmp_path / "none.db"), "--format", "xls",
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "'xls' is not one of 'csv', 'parquet'" in res.output


# ---------------------------------------------------------------- exit status of `campaign run`
PHONE = "SYN8250A"


def test_run_exits_1_while_jobs_fail_or_are_left_failed(fake_adb, tmp_path):
    """Through the real device factory: adbutils -> fake adb server -> recorded phone."""
    phone = install_phone(fake_adb, PHONE, benchmark=None)
    (tmp_path / "models").mkdir()
    shas = []
    for i in range(2):
        p = tmp_path / "models" / f"synthetic_{i}.tflite"
        p.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes([i]) * 8)
        shas.append(sha256_file(str(p)))
    fake_elf(str(tmp_path / "benchmark_model"))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"models: models\ndevices: [{PHONE}]\nbinary: benchmark_model\nretries: 0\n")
    garbage = phone.add_rule(re.compile(r"--graph=\S*" + shas[1]), recording("benchmark_model_synthetic_garbage.txt"))
    phone.add_rule(re.compile(r"benchmark_model .*--graph="),
                   _benchmark_handler(recording("benchmark_model_ti_am62x_excerpt.txt")))

    res = run("campaign", "run", str(plan), "--no-progress")  # model 1 prints garbage
    assert res.exit_code == 1, res.output
    assert "2 jobs: 1 measured now, 0 already done, 1 failed now, 0 failed before" in res.output
    assert f"{PHONE}: 1 measured, 1 failed" in res.output and "1 x ParseError" in res.output

    res = run("campaign", "run", str(plan), "--no-progress", "--json")  # nothing run, one left failed
    assert res.exit_code == 1, res.output
    summary = json.loads(res.output)  # the summary is printed before exiting
    assert (summary["done"], summary["failed"], summary["skipped_done"], summary["skipped_failed"]) == (0, 0, 1, 1)

    phone.rules.remove(garbage)  # model 1 runs fine now
    res = run("campaign", "run", str(plan), "--no-progress", "--retry-failed")
    assert res.exit_code == 0, res.output
    assert "2 jobs: 1 measured now, 1 already done, 0 failed now, 0 failed before" in res.output
    res = run("campaign", "run", str(plan), "--no-progress")
    assert res.exit_code == 0 and "0 measured now, 2 already done" in res.output


def test_run_exits_1_when_a_device_is_missing(fake_adb, plan_path):
    install_phone(fake_adb, PHONE)  # the plan's devices A and B are not connected
    res = run("campaign", "run", plan_path, "--no-progress")
    assert res.exit_code == 1, res.output
    assert "8 jobs: 0 measured now, 0 already done, 8 failed now" in res.output
    assert "A: 0 measured, 4 failed (stopped: cannot open device: DeviceError: no device with serial 'A'" \
        in res.output


# ---------------------------------------------------------------- end to end on this host
@pytest.fixture(scope="module")
def real_tiny_model(tmp_path_factory):
    """A real .tflite converted here with TensorFlow (a 2-layer conv net)."""
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    m = keras.Sequential([keras.Input((16, 16, 3), batch_size=1), keras.layers.Conv2D(8, 3),
                          keras.layers.GlobalAveragePooling2D()])
    path = tmp_path_factory.mktemp("e2e") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return str(path)


@pytest.mark.tf
@pytest.mark.slow
def test_campaign_run_on_local_device_end_to_end(real_tiny_model, tmp_path):
    """`opcost campaign run` with the real device factory and the host as device."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"models: [{real_tiny_model}]\ndevices: [local]\nrepeats: 2\n"
                    "settings: [{delegate: xnnpack}, {delegate: cpu}]\n"
                    "num_runs: 3\nwarmup_runs: 1\nmin_secs: 0.0\nwarmup_min_secs: 0.0\n")
    db = str(tmp_path / "e2e.db")
    res = run("campaign", "run", str(plan), "--store", db, "--json", "--no-progress")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert (summary["jobs"], summary["done"], summary["failed"]) == (4, 4, 0)
    with Store.open(db, create=False) as store:
        runs = store.runs_df()
        assert len(runs) == 4 and (runs["mean_ms"] > 0).all()
        assert sorted(runs["delegate"]) == ["cpu", "cpu", "xnnpack", "xnnpack"]
        assert set(runs["device_kind"]) == {"local"}
        m = store.get_measurement(int(runs["run_id"].iloc[0]))
        assert m.model.sha256 == sha256_file(real_tiny_model) and m.output.e2e.count >= 3
    res = run("campaign", "run", str(plan), "--store", db, "--no-progress")
    assert res.exit_code == 0
    assert "4 jobs: 0 measured now, 4 already done, 0 failed now" in res.output


def test_plan_example_in_help_is_a_valid_plan(tmp_path):
    """The example plan shown by `opcost campaign --help` loads (given its files exist)."""
    help_text = CliRunner().invoke(main, ["campaign", "--help"]).output
    lines = help_text.split("it:\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    (tmp_path / "plan.yaml").write_text("\n".join(ln[4:] for ln in lines) + "\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "synthetic_a.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3a")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "net.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3b")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "benchmark_model").write_bytes(b"\x7fELF")
    plan = load_plan(str(tmp_path / "plan.yaml"))
    assert len(plan.jobs()) == 2 * 2 * 2 * 3
    assert plan.thermal_max_c == 45 and plan.binary == {"arm64-v8a": str(tmp_path / "bin" / "benchmark_model")}
    assert plan.nice == -10
