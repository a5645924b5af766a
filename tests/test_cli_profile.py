"""`opcost devices` and `opcost profile` end to end: click CliRunner -> adbutils -> fake adb
server on loopback (ADB_SERVER_PORT) -> SQLite store."""
import json
import os
import re
import socket

import pytest
from click.testing import CliRunner

from fakeadb.phone import fake_adb, fake_elf, install_phone  # noqa: F401
from host.cli import main
from host.store import Store

SERIAL = "SYN8250A"


@pytest.fixture
def files(tmp_path):
    binary = fake_elf(str(tmp_path / "benchmark_model"))
    models = []
    for name in ("m_a", "m_b", "m_c"):
        p = tmp_path / f"{name}.tflite"
        p.write_bytes(b"\x1c\x00\x00\x00TFL3" + name.encode() * 50)
        models.append(str(p))
    return binary, models, str(tmp_path / "runs.db")


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def stored(db):
    with Store.open(db) as s:
        return s.count_runs()


def test_devices_json_and_table(fake_adb):
    install_phone(fake_adb, SERIAL)
    fake_adb.add_device("UNAUTH1", state="unauthorized")
    r = run("devices", "--json")
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["serial"] for d in recs] == [SERIAL, "UNAUTH1"]
    assert recs[0]["soc"] == "SM8250" and recs[0]["sdk"] == 31 and recs[0]["extra"]["state"] == "device"
    assert recs[1]["extra"]["state"] == "unauthorized"
    r = run("devices")
    assert r.exit_code == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith(SERIAL))
    assert "SM8250" in line and "arm64-v8a" in line and "4x1.80+3x2.42+1x2.84 GHz" in line


def test_devices_none_connected(fake_adb):
    r = run("devices", "--json")
    assert r.exit_code == 0 and r.stdout == ""
    assert "no Android device" in r.stderr


def test_devices_without_adb_server(monkeypatch):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("ADB_SERVER_PORT", str(port))
    r = run("devices")
    assert r.exit_code == 2
    assert f"cannot reach the adb server at 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.output


def test_profile_json_stores_each_model(fake_adb, files):
    phone = install_phone(fake_adb, SERIAL)
    binary, models, db = files
    r = run("profile", *models[:2], "--device", SERIAL, "--binary", binary, "--threads", "4",
            "--cpu-mask", "f0", "--runs", "50", "--timeout-s", "90", "--store", db, "--json")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["model"]["name"] for x in recs] == ["m_a", "m_b"]
    assert recs[0]["output"]["e2e"]["mean_ms"] == pytest.approx(1240.27)
    assert recs[0]["spec"]["threads"] == 4 and recs[0]["spec"]["cpu_mask"] == "f0"
    assert stored(db) == 2
    with Store.open(db) as s:
        m = s.get_measurement(recs[1]["run_id"])
    assert m.device.serial == SERIAL and m.model.name == "m_b"
    assert phone.runs == 2
    assert "[1/2] m_a on SYN8250A" in r.stderr


def test_profile_table_output(fake_adb, files):
    install_phone(fake_adb, SERIAL)
    binary, models, db = files
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--store", db)
    assert r.exit_code == 0, r.stderr
    assert re.search(r"^m_a\s+1240\.270\s+2\.565\s+1238\.588\s+", r.stdout, re.M), r.stdout


def test_profile_android_requires_binary(fake_adb, files, tmp_path):
    install_phone(fake_adb, SERIAL)
    _, models, db = files
    r = run("profile", models[0], "--device", SERIAL, "--store", db)
    assert r.exit_code == 2 and "--binary is required" in r.stderr and "what to do" in r.stderr
    r = run("profile", models[0], "--device", SERIAL, "--binary", str(tmp_path / "nope"), "--store", db)
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_profile_bad_args_are_clear(fake_adb, files):
    binary, models, db = files
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--cpu-mask", "zz", "--store", db)
    assert r.exit_code == 2 and "cpu mask 'zz'" in r.stderr
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--per-op", "--store", db)
    assert r.exit_code == 2 and "--per-op works only with --device local" in r.stderr
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--nice", "-10", "--store", db)
    assert r.exit_code == 2 and "--nice works only with --device local" in r.stderr
    assert not os.path.exists(db)  # refused before anything ran


def test_profile_unknown_device(fake_adb, files):
    install_phone(fake_adb, SERIAL)
    binary, models, db = files
    r = run("profile", models[0], "--device", "NOPE", "--binary", binary, "--store", db)
    assert r.exit_code == 2 and "NOPE" in r.stderr and SERIAL in r.stderr


def test_one_bad_model_does_not_stop_the_others(fake_adb, files, tmp_path):
    install_phone(fake_adb, SERIAL)
    binary, models, db = files
    missing = str(tmp_path / "missing.tflite")
    r = run("profile", models[0], missing, models[1], "--device", SERIAL, "--binary", binary,
            "--store", db, "--json")
    assert r.exit_code == 1
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x.get("error") for x in recs] == [None, "ModelFileError", None]
    assert recs[1]["model_path"] == missing
    assert stored(db) == 2
    assert "1 of 3 model(s) failed" in r.stderr


def test_phone_disappears_mid_campaign_keeps_what_is_stored(fake_adb, files):
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    from fakeadb.phone import _benchmark_handler, recording

    ok = _benchmark_handler(recording("benchmark_model_ti_am62x_excerpt.txt"))
    phone.add_rule(re.compile(r"benchmark_model .*--graph=\S*"), ok, times=1)
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), "INFO: STARTING!\n", disconnect=True)
    binary, models, db = files
    r = run("profile", *models, "--device", SERIAL, "--binary", binary, "--store", db, "--json")
    assert r.exit_code == 1
    assert stored(db) == 1  # the first model's run survived
    assert "device SYN8250A disconnected while running m_b" in r.stderr
    assert "not measured: " + models[2] in r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert recs[0]["model"]["name"] == "m_a" and recs[1]["error"] == "DeviceDisconnected"
    # a script reading --json sees every model: the one never tried is a record too
    assert len(recs) == 3 and recs[2]["model_path"] == models[2] and recs[2]["error"] == "NotMeasured"
    assert "the device is gone" in recs[2]["message"]


def test_wall_clock_limit_and_garbage_are_per_model_errors(fake_adb, files):
    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    binary, models, db = files
    from fakeadb.phone import _benchmark_handler, recording

    phone.add_rule(re.compile(r"--graph=\S*" + re.escape(_sha(models[0]))), "INFO: STARTING!\n", hang=True)
    fake_adb.hang_sleep_s = 1.0  # the device's `timeout 1` really takes its second (a 124 sooner is a crash)
    phone.add_rule(re.compile(r"--graph=\S*" + re.escape(_sha(models[1]))),
                   recording("benchmark_model_synthetic_garbage.txt"))
    phone.add_rule(re.compile(r"benchmark_model .*--graph="),
                   _benchmark_handler(recording("benchmark_model_ti_am62x_excerpt.txt")))
    r = run("profile", *models, "--device", SERIAL, "--binary", binary, "--store", db, "--timeout-s", "1")
    assert r.exit_code == 1
    assert "did not finish within the 1 s limit" in r.stderr and "exit code: 124" in r.stderr
    assert "ParseError" not in r.stderr  # messages, not class names
    assert "lorem ipsum" in r.stderr and "device: SYN8250A" in r.stderr
    assert stored(db) == 1 and "2 of 3 model(s) failed" in r.stderr


def test_full_disk_is_reported(fake_adb, files):
    phone = install_phone(fake_adb, SERIAL)
    binary, models, db = files
    phone.storage_free_bytes = os.path.getsize(binary) + 10
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--store", db)
    assert r.exit_code == 1
    assert "out of space" in r.stderr and "No space left on device" in r.stderr and "rm -r" in r.stderr
    assert stored(db) == 0


def _sha(path):
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.phone
@pytest.mark.skipif(not os.environ.get("ANDROID_SERIAL") or not os.environ.get("OPCOST_TEST_BINARY"),
                    reason="needs a phone (ANDROID_SERIAL) and its benchmark_model (OPCOST_TEST_BINARY)")
def test_real_phone_profile(tmp_path):
    serial = os.environ["ANDROID_SERIAL"]
    model = os.environ.get("OPCOST_TEST_MODEL")
    if not model:
        pytest.skip("set OPCOST_TEST_MODEL to a .tflite file")
    r = run("profile", model, "--device", serial, "--binary", os.environ["OPCOST_TEST_BINARY"],
            "--runs", "5", "--store", str(tmp_path / "r.db"), "--json")
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert rec["output"]["e2e"]["mean_ms"] > 0 and rec["device"]["serial"] == serial


def test_profile_table_names_are_not_cut_into_the_same_text(fake_adb, tmp_path):
    """Long names that differ only at the end (sliced blocks) stay apart in the table."""
    install_phone(fake_adb, SERIAL)
    binary = fake_elf(str(tmp_path / "benchmark_model"))
    names = ["synthetic_pair_conv2d_relu_block000", "synthetic_pair_conv2d_relu_block001",
             "a_very_long_model_name_from_a_nas_space_sample_" + "x" * 20 + "_0001",
             "a_very_long_model_name_from_a_nas_space_sample_" + "x" * 20 + "_0002"]
    models = []
    for name in names:
        p = tmp_path / f"{name}.tflite"
        p.write_bytes(b"\x1c\x00\x00\x00TFL3" + name.encode() * 5)
        models.append(str(p))
    r = run("profile", *models, "--device", SERIAL, "--binary", binary, "--store", str(tmp_path / "r.db"))
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("MODEL ") and len(lines) == 1 + len(names)
    shown = [ln.split()[0] for ln in lines[1:]]
    assert shown[:2] == names[:2]  # short enough: whole
    assert len(set(shown)) == len(names)
    assert shown[2].endswith("_0001") and shown[3].endswith("_0002") and "…" in shown[2]
    assert all(len(s) <= 48 for s in shown)


def test_profile_every_model_failed_prints_no_table(fake_adb, files, tmp_path):
    install_phone(fake_adb, SERIAL)
    binary, _, db = files
    missing = [str(tmp_path / "missing.tflite"), str(tmp_path / "gone.tflite")]
    r = run("profile", *missing, "--device", SERIAL, "--binary", binary, "--store", db)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "all 2 models failed (see the errors above); nothing was measured" in r.stderr
    assert "the others are stored" not in r.stderr
    r = run("profile", missing[0], "--device", SERIAL, "--binary", binary, "--store", db)
    assert r.exit_code == 1 and r.stdout == "" and "the model failed" in r.stderr


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "benchmark_model")


def _fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return f.read()


def _phone_printing(fake_adb, text):
    from fakeadb.phone import _benchmark_handler

    phone = install_phone(fake_adb, SERIAL, benchmark=None)
    phone.add_rule(re.compile(r"benchmark_model .*--graph="), _benchmark_handler(text))
    return phone


def test_delegate_that_ran_no_node_is_a_failure_not_a_result(fake_adb, files):
    """benchmark_model falls back to the CPU when the delegate takes no node and says so in
    one log line; such a run must not be stored as an accelerator measurement."""
    # the real NNAPI "will not be executed" lines followed by another real run's timing
    # block (a synthetic join, as in test_parsers)
    _phone_printing(fake_adb, _fixture("real_logcat_nnapi_not_executed_issue56301.txt") + "\n"
                    + _fixture("real_current_format_ti_am62x.txt"))
    binary, models, db = files
    r = run("profile", models[0], models[1], "--device", SERIAL, "--binary", binary, "--delegate", "nnapi",
            "--store", db, "--json")
    assert r.exit_code == 1 and "Traceback" not in r.output
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["error"] for x in recs] == ["DelegateError", "DelegateError"]
    assert "the nnapi delegate executed no node of the model" in recs[0]["message"]
    assert "--delegate xnnpack or cpu" in recs[0]["hint"] and recs[0]["serial"] == SERIAL
    assert stored(db) == 0
    # the same output asked for the CPU is a CPU run (the delegate line is about NNAPI)
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--delegate", "cpu", "--store", db)
    assert r.exit_code == 0 and stored(db) == 1


def test_partly_delegated_run_is_stored_with_a_note(fake_adb, files):
    _phone_printing(fake_adb, _fixture("synthetic_multi_subgraph_gpu_profile.txt"))
    binary, models, db = files
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--delegate", "gpu", "--store", db)
    assert r.exit_code == 0, r.output
    note = "the gpu delegate took 13 of 15 nodes; the rest ran on the CPU"
    assert f"note: m_a: {note}" in r.stderr
    with Store.open(db) as store:
        assert note in store.get_measurement(int(store.runs_df()["run_id"][0])).output.warnings


def test_op_profiling_without_an_op_table_says_so(fake_adb, files):
    install_phone(fake_adb, SERIAL)   # the recorded run prints no op table
    binary, models, db = files
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--op-profiling", "--store", db)
    assert r.exit_code == 0 and "printed no op table" in r.stderr and stored(db) == 1


def test_a_file_that_is_not_tflite_is_not_pushed(fake_adb, files, tmp_path):
    phone = install_phone(fake_adb, SERIAL)
    binary, models, db = files
    bad = tmp_path / "notmodel.tflite"
    bad.write_text("hello\n")
    r = run("profile", str(bad), models[0], "--device", SERIAL, "--binary", binary, "--store", db)
    assert r.exit_code == 1 and "is not a TFLite model (no 'TFL3' identifier)" in r.stderr
    assert stored(db) == 1 and getattr(phone, "runs", 0) == 1
    assert not any(f.endswith(_sha(str(bad)) + ".tflite") for f in phone.files)


def test_a_binary_the_phone_cannot_run_stops_after_the_first_model(fake_adb, files, tmp_path):
    install_phone(fake_adb, SERIAL)
    _, models, db = files
    x86 = fake_elf(str(tmp_path / "benchmark_model_x86"), machine=62)
    r = run("profile", *models, "--device", SERIAL, "--binary", x86, "--store", db, "--json")
    assert r.exit_code == 1
    assert r.stderr.count("is built for x86_64 but device SYN8250A runs") == 1
    assert "stopping: the binary cannot run there; not measured: " + ", ".join(models[1:]) in r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["error"] for x in recs] == ["BinaryError", "NotMeasured", "NotMeasured"]


def test_local_runner_refuses_a_phone_delegate_and_a_foreign_binary_up_front(files, tmp_path, monkeypatch):
    import platform

    monkeypatch.setenv("ADB_SERVER_PORT", "1")
    _, models, db = files
    r = run("profile", *models, "--device", "local", "--delegate", "gpu", "--store", db)
    assert r.exit_code == 2 and r.stderr.count("delegate 'gpu' is not available on the host CPU runner") == 1
    assert not os.path.exists(db)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the foreign-binary check below assumes an x86_64 host")
    arm = fake_elf(str(tmp_path / "benchmark_model_arm"), machine=183)
    r = run("profile", models[0], "--device", "local", "--binary", arm, "--store", db)
    assert r.exit_code == 1 and "is built for arm64 (aarch64) but this host is x86_64" in r.stderr
    assert "chmod" not in r.stderr


def test_a_cpu_mask_naming_no_cpu_of_the_phone_fails_once_up_front(fake_adb, files):
    phone = install_phone(fake_adb, SERIAL)   # the recorded probe: CPUs 0-7
    binary, models, db = files
    r = run("profile", *models, "--device", SERIAL, "--binary", binary, "--cpu-mask", "100", "--store", db)
    assert r.exit_code == 2 and r.stderr.count("cpu mask '100' selects no CPU of SYN8250A (CPUs 0-7)") == 1
    assert "--cpu-mask 80" in r.stderr and getattr(phone, "runs", 0) == 0 and not os.path.exists(db)
    r = run("profile", models[0], "--device", SERIAL, "--binary", binary, "--cpu-mask", "1f0", "--store", db)
    assert r.exit_code == 0 and stored(db) == 1   # CPUs 4-7 exist; taskset ignores the missing one
