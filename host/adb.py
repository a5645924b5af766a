"""The adb boundary: everything opcost says to an adb server goes through a ``Transport``.

``AdbTransport`` talks to a real adb server with adbutils. Tests pass another object with
the same methods, or point ``AdbTransport`` at the fake server in ``tests/fakeadb``.
Errors from adbutils and sockets are mapped to opcost errors here, nowhere else.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Tuple

from opcost.errors import AdbError, DeviceDisconnected, DeviceError, DeviceStorageFull, RunTimeout

log = logging.getLogger("opcost.adb")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5037
# The sync protocol refuses chunks over 64 KiB.
_SYNC_CHUNK_BYTES = 64 * 1024

DeviceEntry = Tuple[str, str, Dict[str, str]]  # (serial, state, props from `devices -l`)

UNAUTHORIZED_HINT = "unlock the phone and accept the 'Allow USB debugging' prompt, then check `adb devices`"
OFFLINE_HINT = ("reconnect the USB cable or run `adb reconnect`; wait until `adb devices` shows it as 'device'")


@dataclass
class RemoteStat:
    """What the sync STAT request tells about a path on the device."""

    mode: int
    size: int
    mtime: int

    @property
    def exists(self) -> bool:
        # adbd answers STAT of a missing path with all zeros.
        return self.mode != 0


class Transport(Protocol):
    """What opcost needs from adb. ``shell`` returns stdout+stderr as text."""

    def list_devices(self) -> List[DeviceEntry]: ...

    def shell(self, serial: str, cmd: str, *, timeout_s: float) -> str: ...

    def push(self, serial: str, local_path: str, remote_path: str, *, mode: int = 0o644) -> None: ...

    def pull(self, serial: str, remote_path: str, local_path: str) -> None: ...

    def stat(self, serial: str, remote_path: str) -> RemoteStat: ...

    def exists(self, serial: str, remote_path: str) -> bool: ...


def server_address(host: Optional[str] = None, port: Optional[int] = None) -> Tuple[str, int]:
    """Resolve the adb server address: arguments, then ``ADB_SERVER_HOST``/``ADB_SERVER_PORT``,
    then adb's own ``ANDROID_ADB_SERVER_HOST``/``ANDROID_ADB_SERVER_PORT``, then 127.0.0.1:5037."""
    env = os.environ
    host = host or env.get("ADB_SERVER_HOST") or env.get("ANDROID_ADB_SERVER_HOST") or DEFAULT_HOST
    if port is None:
        raw = env.get("ADB_SERVER_PORT") or env.get("ANDROID_ADB_SERVER_PORT")
        if raw:
            try:
                port = int(raw)
            except ValueError:
                raise AdbError(f"adb server port {raw!r} from the environment is not a number",
                               hint="set ADB_SERVER_PORT to a port number such as 5037") from None
        else:
            port = DEFAULT_PORT
    return host, int(port)


def _is_no_device(msg: str) -> bool:
    return "not found" in msg and "device" in msg


class AdbTransport:
    """``Transport`` over a running adb server (adbutils). Never starts a server itself:
    an unreachable server is an ``AdbError`` that says so."""

    def __init__(self, host: Optional[str] = None, port: Optional[int] = None, *,
                 io_timeout_s: float = 120.0) -> None:
        self._host_arg = host
        self._port_arg = port
        self.io_timeout_s = io_timeout_s  # longest silence tolerated during push/pull/stat
        self._client = None

    # -- plumbing -------------------------------------------------------------------------
    @property
    def address(self) -> Tuple[str, int]:
        return server_address(self._host_arg, self._port_arg)

    def _get_client(self):
        if self._client is None:
            self._client = _make_client(*self.address, default_timeout_s=self.io_timeout_s)
        return self._client

    def _unreachable(self, exc: BaseException) -> AdbError:
        host, port = self.address
        return AdbError(f"cannot reach the adb server at {host}:{port} ({exc})")

    def _map_error(self, exc: BaseException, serial: Optional[str], what: str) -> Exception:
        """Translate an adbutils/socket error raised while talking to ``serial``."""
        from adbutils import errors as ae

        msg = str(exc)
        if isinstance(exc, ae.AdbConnectionError) or isinstance(exc, ConnectionRefusedError):
            return self._unreachable(exc)
        if serial is not None:
            low = msg.lower()
            if "unauthorized" in low:
                return DeviceError(f"device {serial} is unauthorized", serial=serial, hint=UNAUTHORIZED_HINT)
            if "offline" in low:
                return DeviceError(f"device {serial} is offline", serial=serial, hint=OFFLINE_HINT)
            if _is_no_device(low) or isinstance(exc, (EOFError, ConnectionError, OSError, ae.AdbError)):
                known = self._known_serials_or_none()
                if known is None:
                    return self._unreachable(exc)
                if serial not in known:
                    if _is_no_device(low):
                        return DeviceError(
                            f"no device with serial {serial!r} (known: {', '.join(known) or 'none'})",
                            serial=serial)
                    return DeviceDisconnected(f"device {serial} disconnected during {what}", serial=serial)
        return AdbError(f"adb {what} failed: {msg or type(exc).__name__}", serial=serial)

    def _known_serials_or_none(self) -> Optional[List[str]]:
        try:
            return [s for s, _, _ in self.list_devices()]
        except AdbError:
            return None

    def _device(self, serial: str):
        from adbutils import AdbDevice

        return AdbDevice(self._get_client(), serial=serial)

    # -- Transport ------------------------------------------------------------------------
    def list_devices(self) -> List[DeviceEntry]:
        """All devices the server knows, in any state (device, unauthorized, offline, ...)."""
        from adbutils import errors as ae

        try:
            infos = self._get_client().list(extended=True)
        except (ae.AdbError, OSError, EOFError) as exc:
            if isinstance(exc, ae.AdbConnectionError) or isinstance(exc, (ConnectionError, socket.timeout)):
                raise self._unreachable(exc) from None
            raise AdbError(f"adb server answered `devices -l` with an error: {exc}") from None
        return [(i.serial, i.state, dict(i.tags)) for i in infos]

    def shell(self, serial: str, cmd: str, *, timeout_s: float) -> str:
        """Run ``cmd`` with ``sh -c`` semantics on the device; stdout and stderr together."""
        from adbutils import errors as ae

        try:
            c = self._device(serial).open_shell(cmd)
        except (ae.AdbError, OSError, EOFError) as exc:
            raise self._map_error(exc, serial, "shell") from None
        try:
            c.conn.settimeout(timeout_s)
            chunks = []
            while True:
                data = c.conn.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except socket.timeout:
            raise RunTimeout(f"no answer from the device within {timeout_s:g} s",
                             serial=serial, argv=[cmd],
                             output_tail=b"".join(chunks).decode("utf-8", "replace")) from None
        except OSError as exc:
            raise self._map_error(exc, serial, "shell") from None
        finally:
            c.close()
        return b"".join(chunks).decode("utf-8", errors="replace")

    def stat(self, serial: str, remote_path: str) -> RemoteStat:
        from adbutils import errors as ae

        try:
            with self._sync(serial) as c:
                _sync_request(c, b"STAT", remote_path)
                head = c.read_exact(4)
                if head != b"STAT":
                    raise AdbError(f"unexpected sync reply {head!r} to STAT {remote_path}", serial=serial)
                mode, size, mtime = struct.unpack("<III", c.read_exact(12))
                return RemoteStat(mode=mode, size=size, mtime=mtime)
        except (ae.AdbError, OSError, EOFError) as exc:
            raise self._map_error(exc, serial, f"stat {remote_path}") from None

    def exists(self, serial: str, remote_path: str) -> bool:
        return self.stat(serial, remote_path).exists

    def push(self, serial: str, local_path: str, remote_path: str, *, mode: int = 0o644) -> None:
        """Copy a host file to the device. The parent directory must exist."""
        from adbutils import errors as ae

        # adbutils' Sync.push drops the FAIL message; we need it to tell "disk full" apart.
        try:
            f = open(local_path, "rb")
        except OSError as exc:
            raise AdbError(f"cannot read {local_path}: {exc.strerror}", hint="check the path") from None
        with f:
            try:
                with self._sync(serial) as c:
                    _sync_request(c, b"SEND", f"{remote_path},{0o100000 | mode}")
                    while True:
                        chunk = f.read(_SYNC_CHUNK_BYTES)
                        if not chunk:
                            break
                        c.conn.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                    c.conn.sendall(b"DONE" + struct.pack("<I", int(time.time())))
                    status = c.read_exact(4)
                    if status == b"OKAY":
                        c.read_exact(4)
                        return
                    message = _read_fail_message(c) if status == b"FAIL" else repr(status)
            except (ae.AdbError, OSError, EOFError) as exc:
                raise self._map_error(exc, serial, f"push to {remote_path}") from None
        if "no space left" in message.lower():
            raise DeviceStorageFull(f"device {serial} is out of space while pushing {os.path.basename(local_path)}"
                                    f" to {remote_path}: {message}", serial=serial)
        raise AdbError(f"push of {local_path} to {remote_path} failed: {message}", serial=serial,
                       hint="check that the directory exists and is writable (/data/local/tmp is)")

    def pull(self, serial: str, remote_path: str, local_path: str) -> None:
        """Copy a device file to the host."""
        from adbutils import errors as ae

        tmp = local_path + ".part"
        try:
            with self._sync(serial) as c, open(tmp, "wb") as out:
                _sync_request(c, b"RECV", remote_path)
                while True:
                    head = c.read_exact(4)
                    if head == b"DONE":
                        c.read_exact(4)
                        break
                    if head == b"FAIL":
                        msg = _read_fail_message(c)
                        raise AdbError(f"pull of {remote_path} failed: {msg}", serial=serial,
                                       hint="the file is not on the device; see the command output")
                    if head != b"DATA":
                        raise AdbError(f"unexpected sync reply {head!r} while pulling {remote_path}",
                                       serial=serial)
                    (n,) = struct.unpack("<I", c.read_exact(4))
                    out.write(c.read_exact(n))
            os.replace(tmp, local_path)
        except AdbError:
            _silent_remove(tmp)
            raise
        except (ae.AdbError, OSError, EOFError) as exc:
            _silent_remove(tmp)
            raise self._map_error(exc, serial, f"pull of {remote_path}") from None

    def _sync(self, serial: str):
        c = self._device(serial).open_transport(timeout=self.io_timeout_s)
        try:
            c.send_command("sync:")
            c.check_okay()
        except BaseException:
            c.close()
            raise
        return c


def _sync_request(c, cmd: bytes, path: str) -> None:
    raw = path.encode("utf-8")
    c.conn.sendall(cmd + struct.pack("<I", len(raw)) + raw)


def _read_fail_message(c) -> str:
    (n,) = struct.unpack("<I", c.read_exact(4))
    return c.read_exact(n).decode("utf-8", errors="replace")


def _silent_remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _make_client(host: str, port: int, *, default_timeout_s: float):
    """An adbutils client that fails fast instead of running `adb start-server`."""
    import adbutils
    from adbutils import errors as ae
    from adbutils._adb import AdbConnection

    class _NoStartConnection(AdbConnection):
        def _safe_connect(self):  # adbutils would spawn `adb start-server` here
            s = self._create_socket()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # requests are tiny
            return s

        def close(self):
            # adbutils sleeps 10 ms after shutdown on every close; 12+ connections per run
            # made that the largest host overhead. A FIN after shutdown needs no wait.
            try:
                sock = self.conn
            except ae.AdbError:
                return
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            self._AdbConnection__conn = None

    class _Client(adbutils.AdbClient):
        _version: Optional[int] = None

        def make_connection(self, timeout: Optional[float] = None):
            try:
                conn = _NoStartConnection(self.host, self.port)
            except (ae.AdbTimeout, TimeoutError) as exc:
                raise ae.AdbConnectionError(f"connect timeout: {exc}") from None
            conn.conn.settimeout(timeout or default_timeout_s)
            return conn

        def server_version(self) -> int:
            # adbutils asks before every device connection (to pick host:tport vs
            # host:transport); the server does not change version under us.
            if self._version is None:
                self._version = super().server_version()
            return self._version

    return _Client(host=host, port=port)
