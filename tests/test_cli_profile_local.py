"""`opcost profile --device local`: the same command measures on this host (no adb)."""
import json

import pytest
from click.testing import CliRunner

from host.cli import main
from host.store import Store


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    m = keras.Sequential([keras.Input((16, 16, 3), batch_size=1),
                          keras.layers.Conv2D(8, 3, activation="relu"),
                          keras.layers.GlobalAveragePooling2D(),
                          keras.layers.Dense(4)])
    path = tmp_path_factory.mktemp("cli_local") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
    return str(path)


def test_local_needs_no_adb_and_reports_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ADB_SERVER_PORT", "1")  # adb must not be touched for --device local
    r = CliRunner().invoke(main, ["profile", str(tmp_path / "none.tflite"), "--device", "local",
                                  "--store", str(tmp_path / "r.db"), "--json"])
    assert r.exit_code == 1
    rec = json.loads(r.stdout)
    assert rec["error"] == "ModelFileError" and rec["device"] == "local"


def test_local_thermal_guard_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["profile", "x.tflite", "--device", "local", "--thermal-max-c", "40",
                                  "--store", str(tmp_path / "r.db")])
    assert r.exit_code == 2 and "only with an Android device" in r.stderr


def test_local_nice_out_of_range_is_refused(tmp_path):
    r = CliRunner().invoke(main, ["profile", "x.tflite", "--device", "local", "--nice", "20",
                                  "--store", str(tmp_path / "r.db")])
    assert r.exit_code == 2 and "--nice" in r.stderr and "-20<=x<=19" in r.stderr


@pytest.mark.tf
def test_local_nice_reaches_the_measuring_process(tiny_model, tmp_path):
    # 19 (lowest priority) is allowed without root; the worker reports what it applied
    r = CliRunner().invoke(main, ["profile", tiny_model, "--device", "local", "--runs", "3", "--warmup", "1",
                                  "--min-secs", "0", "--nice", "19", "--store", str(tmp_path / "r.db"),
                                  "--json"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["runtime"]["nice"] == 19
    assert not any("priority" in w for w in rec["output"]["warnings"])


@pytest.mark.tf
def test_local_per_op_is_passed_through(tiny_model, tmp_path):
    db = str(tmp_path / "r.db")
    r = CliRunner().invoke(main, ["profile", tiny_model, "--device", "local", "--runs", "3", "--warmup", "1",
                                  "--min-secs", "0", "--per-op", "--store", db, "--json"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["device"]["kind"] == "local" and rec["output"]["e2e"]["mean_ms"] > 0
    assert len(rec["output"]["ops"]) >= 3  # conv, mean, fully-connected timed one by one
    with Store.open(db) as s:
        assert s.count_runs() == 1
