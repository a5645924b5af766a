"""host.adb.AdbTransport through real adbutils against the fake adb server (loopback)."""
import os
import socket

import pytest

from fakeadb.phone import fake_adb  # noqa: F401  (pytest fixture)
from host.adb import AdbTransport, server_address
from opcost.errors import AdbError, DeviceDisconnected, DeviceError, DeviceStorageFull, RunTimeout


def test_server_address_env_precedence(monkeypatch):
    for k in ("ADB_SERVER_HOST", "ADB_SERVER_PORT", "ANDROID_ADB_SERVER_HOST", "ANDROID_ADB_SERVER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert server_address() == ("127.0.0.1", 5037)
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "6000")
    assert server_address() == ("127.0.0.1", 6000)
    monkeypatch.setenv("ADB_SERVER_PORT", "7000")
    monkeypatch.setenv("ADB_SERVER_HOST", "10.0.0.2")
    assert server_address() == ("10.0.0.2", 7000)
    assert server_address("h", 1) == ("h", 1)
    monkeypatch.setenv("ADB_SERVER_PORT", "fivethousand")
    with pytest.raises(AdbError, match="not a number"):
        server_address()


def test_constructor_does_no_io():
    AdbTransport(host="192.0.2.1", port=1)  # TEST-NET address: any connect attempt would hang


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_server_is_adb_error_and_starts_nothing():
    port = _free_port()
    with pytest.raises(AdbError) as e:
        AdbTransport(port=port).list_devices()
    assert f"127.0.0.1:{port}" in str(e.value)
    assert "adb start-server" in str(e.value)  # the hint
    # adbutils alone would have spawned `adb start-server`; nothing may listen there now
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_list_devices_with_states_and_props(fake_adb):
    fake_adb.add_device("A1", tags={"product": "kona", "model": "Pixel_5", "transport_id": "3"})
    fake_adb.add_device("B2", state="unauthorized")
    fake_adb.add_device("C3", state="offline")
    got = AdbTransport().list_devices()  # address from ADB_SERVER_PORT set by the fixture
    assert got == [("A1", "device", {"product": "kona", "model": "Pixel_5", "transport_id": "3"}),
                   ("B2", "unauthorized", {}), ("C3", "offline", {})]


def test_shell_returns_recorded_output(fake_adb):
    dev = fake_adb.add_device("A1")
    dev.add_rule("getprop ro.product.model", "Pixel 5\n")
    t = AdbTransport()
    assert t.shell("A1", "getprop ro.product.model", timeout_s=5) == "Pixel 5\n"
    assert dev.commands == ["getprop ro.product.model"]


def test_unknown_command_fails_loudly(fake_adb):
    fake_adb.add_device("A1")
    out = AdbTransport().shell("A1", "reboot bootloader", timeout_s=5)
    assert "fakeadb: unknown command" in out
    assert fake_adb.errors == ["A1: unknown command 'reboot bootloader'"]
    fake_adb.errors.clear()


def test_push_stat_pull_roundtrip(fake_adb, tmp_path):
    dev = fake_adb.add_device("A1")
    src = tmp_path / "blob.bin"
    data = os.urandom(200_000)  # several sync DATA chunks
    src.write_bytes(data)
    t = AdbTransport()
    assert not t.exists("A1", "/data/local/tmp/opcost/blob.bin")
    t.push("A1", str(src), "/data/local/tmp/opcost/blob.bin", mode=0o755)
    st = t.stat("A1", "/data/local/tmp/opcost/blob.bin")
    assert st.exists and st.size == len(data) and st.mode & 0o777 == 0o755
    assert dev.files["/data/local/tmp/opcost/blob.bin"] == data
    back = tmp_path / "back.bin"
    t.pull("A1", "/data/local/tmp/opcost/blob.bin", str(back))
    assert back.read_bytes() == data


def test_pull_missing_file_is_adb_error_and_leaves_nothing(fake_adb, tmp_path):
    fake_adb.add_device("A1")
    dst = tmp_path / "x.csv"
    with pytest.raises(AdbError, match="No such file"):
        AdbTransport().pull("A1", "/data/local/tmp/none.csv", str(dst))
    assert list(tmp_path.iterdir()) == []


def test_push_disk_full_is_device_storage_full(fake_adb, tmp_path):
    dev = fake_adb.add_device("A1", storage_free_bytes=1000)
    src = tmp_path / "model.tflite"
    src.write_bytes(b"x" * 5000)
    with pytest.raises(DeviceStorageFull) as e:
        AdbTransport().push("A1", str(src), "/data/local/tmp/opcost/m.tflite")
    assert "A1" in str(e.value) and "No space left on device" in str(e.value)
    assert "/data/local/tmp/opcost/m.tflite" not in dev.files


def test_unknown_serial_lists_known_ones(fake_adb):
    fake_adb.add_device("A1")
    fake_adb.add_device("B2")
    with pytest.raises(DeviceError) as e:
        AdbTransport().shell("NOPE", "ls", timeout_s=5)
    assert type(e.value) is DeviceError
    assert "NOPE" in str(e.value) and "A1, B2" in str(e.value)


@pytest.mark.parametrize("state,words", [("unauthorized", "Allow USB debugging"), ("offline", "adb reconnect")])
def test_unusable_states_have_hints(fake_adb, state, words):
    fake_adb.add_device("A1", state=state)
    with pytest.raises(DeviceError) as e:
        AdbTransport().shell("A1", "ls", timeout_s=5)
    assert state in str(e.value) and words in str(e.value)


def test_device_vanishing_is_device_disconnected(fake_adb):
    dev = fake_adb.add_device("A1", disconnect_after_commands=1)
    dev.add_rule("echo hi", "hi\n")
    t = AdbTransport()
    assert t.shell("A1", "echo hi", timeout_s=5) == "hi\n"
    with pytest.raises(DeviceDisconnected) as e:
        t.shell("A1", "echo hi", timeout_s=5)
    assert "A1" in str(e.value)
    assert t.list_devices() == []


def test_device_vanishing_during_push(fake_adb, tmp_path):
    fake_adb.add_device("A1", disconnect_after_commands=0)
    src = tmp_path / "m.tflite"
    src.write_bytes(b"x" * 100)
    with pytest.raises(DeviceDisconnected):
        AdbTransport().push("A1", str(src), "/data/local/tmp/m.tflite")


def test_silent_device_hits_host_timeout(fake_adb):
    dev = fake_adb.add_device("A1")
    fake_adb.hang_sleep_s = 2.0
    dev.add_rule("timeout 30 sleep 100", hang=True)
    with pytest.raises(RunTimeout) as e:
        AdbTransport().shell("A1", "timeout 30 sleep 100", timeout_s=0.3)
    assert "0.3 s" in str(e.value) and "A1" in str(e.value)
