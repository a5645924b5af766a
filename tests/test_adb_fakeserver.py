"""The fake adb server itself speaks the wire protocol that real clients expect: checked
with adbutils' own high-level calls (not only through host.adb) and with raw sockets."""
import socket
import struct

import adbutils

from fakeadb.phone import fake_adb  # noqa: F401
from fakeadb.server import FakeAdbServer


def _req(sock, text):
    raw = text.encode()
    sock.sendall(f"{len(raw):04x}".encode() + raw)


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def test_version_and_devices_with_adbutils(fake_adb):
    fake_adb.add_device("A1", tags={"model": "Pixel_5"})
    client = adbutils.AdbClient(host="127.0.0.1", port=fake_adb.port)
    assert client.server_version() == 41
    assert [(d.serial, d.state, d.tags) for d in client.list(extended=True)] == [("A1", "device", {"model": "Pixel_5"})]
    assert [d.serial for d in client.device_list()] == ["A1"]


def test_shell_v2_framing_and_exit_code(fake_adb):
    dev = fake_adb.add_device("A1")
    dev.add_rule("false-ish", "some output\n", exit_code=3, stderr="warn: x\n")
    r = adbutils.AdbClient(port=fake_adb.port).device("A1").shell2("false-ish", v2=True)
    assert (r.returncode, r.stdout, r.stderr) == (3, "some output\n", "warn: x\n")


def test_v1_exit_status_echo_is_emulated(fake_adb):
    dev = fake_adb.add_device("A1")
    dev.add_rule("boom", "bad\n", exit_code=2)
    r = adbutils.AdbClient(port=fake_adb.port).device("A1").shell2("boom")  # appends `; echo X4EXIT:$?`
    assert (r.returncode, r.output) == (2, "bad\n")


def test_old_server_uses_host_transport(fake_adb):
    fake_adb.VERSION = 40  # adbutils then sends host:transport:<serial> (no transport id)
    dev = fake_adb.add_device("A1")
    dev.add_rule("echo ok", "ok\n")
    assert adbutils.AdbClient(port=fake_adb.port).device("A1").shell("echo ok") == "ok"


def test_sync_list_and_builtins(fake_adb):
    dev = fake_adb.add_device("A1")
    dev.add_file("/data/local/tmp/opcost/models/a.tflite", b"abc")
    d = adbutils.AdbClient(port=fake_adb.port).device("A1")
    names = sorted(f.path for f in d.sync.list("/data/local/tmp/opcost"))
    assert names == ["models"]
    assert d.sync.read_bytes("/data/local/tmp/opcost/models/a.tflite") == b"abc"
    assert d.shell("ls /data/local/tmp/opcost/models") == "a.tflite"
    d.shell("mv /data/local/tmp/opcost/models/a.tflite /data/local/tmp/b && rm -f /data/local/tmp/b")
    assert dev.files == {}


def test_sta2_raw(fake_adb):
    dev = fake_adb.add_device("A1")
    dev.add_file("/data/local/tmp/x", b"12345", 0o644)
    with socket.create_connection(("127.0.0.1", fake_adb.port)) as s:
        _req(s, "host:transport:A1")
        assert _recv_exact(s, 4) == b"OKAY"
        _req(s, "sync:")
        assert _recv_exact(s, 4) == b"OKAY"
        for path, err, size in (("/data/local/tmp/x", 0, 5), ("/nope", 2, 0)):
            s.sendall(b"STA2" + struct.pack("<I", len(path)) + path.encode())
            reply = _recv_exact(s, 72)
            assert reply[:4] == b"STA2"
            fields = struct.unpack("<IQQIIIIQqqq", reply[4:])
            assert fields[0] == err and fields[7] == size


def test_unknown_host_request_fails_loudly(fake_adb):
    with socket.create_connection(("127.0.0.1", fake_adb.port)) as s:
        _req(s, "host:track-jdwp")
        assert _recv_exact(s, 4) == b"FAIL"
    assert fake_adb.errors and "track-jdwp" in fake_adb.errors[0]
    fake_adb.errors.clear()


def test_fixture_fails_a_test_that_left_unknown_commands():
    """The fixture's teardown assertion: a server with errors must not pass silently."""
    srv = FakeAdbServer().start()
    try:
        srv.add_device("A1")
        out = adbutils.AdbClient(port=srv.port).device("A1").shell("cat /proc/version")
    finally:
        srv.stop()
    assert "unknown command" in out
    assert srv.errors == ["A1: unknown command 'cat /proc/version'"]
