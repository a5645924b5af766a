"""A fake adb server on loopback that speaks the adb host wire protocol.

Requests are 4-hex-digit length-prefixed strings; replies are ``OKAY`` or ``FAIL`` + a
length-prefixed message. Supported: ``host:version``, ``host:devices``, ``host:devices-l``,
``host:transport:<serial>``, ``host:tport:serial:<serial>`` (adbutils 2.12 sends this when
the server version is >= 41), ``host-serial:<serial>:{features,get-state}``, then on a
device transport ``shell:<cmd>``, ``shell,v2:<cmd>`` and ``sync:`` (STAT, STA2, LIST, SEND,
RECV, QUIT).

Device shells are not emulated: a command either matches a ``Rule`` (exact text or regex
-> recorded output and exit code) or is one of a few file built-ins (``mkdir -p``, ``rm -f``,
``chmod``, ``mv``, ``cat``, ``ls``, ``sha256sum``) acting on an in-memory file system that
pushes fill. Anything else fails loudly: the reply says ``fakeadb: unknown command`` with
exit 127 and the command is appended to ``server.errors`` (the test fixture fails the test).

Fault injection per device: ``disconnect_after_commands`` (the device vanishes on the next
request: connection closed, serial gone from ``host:devices``), ``storage_free_bytes`` (SEND
fails with "No space left on device"), and per rule ``disconnect=True`` (print the output,
then vanish) or ``hang=True`` (honour a ``timeout N`` prefix: sleep briefly, exit 124).
"""
from __future__ import annotations

import hashlib
import re
import shlex
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Pattern, Tuple, Union

Handler = Callable[["FakeDevice", str, Optional[re.Match]], Tuple[str, int]]

# `cmd; echo TOKEN$?` is how callers learn an exit code over shell v1: emulate that tail.
_ECHO_STATUS = re.compile(r"^(?P<body>.*?)\s*;\s*echo\s+(?P<token>[A-Za-z0-9_=:]*)\$\?\s*$", re.S)
_TIMEOUT_PREFIX = re.compile(r"(?:^|[\s;&(])timeout\s+(?:-[sk]\s+\S+\s+)*(?P<secs>\d+(?:\.\d+)?)s?\s")


@dataclass
class Rule:
    """``pattern``: exact command text (str) or compiled regex (searched). ``output`` is
    the recorded text or a handler ``(device, cmd, match) -> (text, exit_code)``."""

    pattern: Union[str, Pattern]
    output: Union[str, Handler] = ""
    exit_code: int = 0
    disconnect: bool = False
    hang: bool = False
    times: Optional[int] = None  # rule expires after this many uses
    stderr: str = ""  # shell v2 sends it as stream 2; shell v1 merges it after stdout

    def match(self, cmd: str) -> Optional[Union[bool, re.Match]]:
        if isinstance(self.pattern, str):
            return cmd == self.pattern or None
        return self.pattern.search(cmd)


@dataclass
class FakeDevice:
    serial: str
    state: str = "device"
    tags: Dict[str, str] = field(default_factory=dict)
    rules: List[Rule] = field(default_factory=list)
    files: Dict[str, bytes] = field(default_factory=dict)
    modes: Dict[str, int] = field(default_factory=dict)
    dirs: set = field(default_factory=lambda: {"/", "/data", "/data/local", "/data/local/tmp"})
    storage_free_bytes: Optional[int] = None
    disconnect_after_commands: Optional[int] = None
    commands: List[str] = field(default_factory=list)  # every shell command received
    pushes: List[str] = field(default_factory=list)  # every path a SEND completed
    requests: int = 0
    gone: bool = False

    def add_rule(self, pattern, output="", exit_code=0, **kw) -> Rule:
        rule = Rule(pattern, output, exit_code, **kw)
        self.rules.append(rule)
        return rule

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = data
        self.modes[path] = mode
        self._add_parents(path)

    def _add_parents(self, path: str) -> None:
        parts = path.rstrip("/").split("/")
        for i in range(2, len(parts)):
            self.dirs.add("/".join(parts[:i]))


class FakeAdbServer:
    """Start with ``start()`` (binds 127.0.0.1 on an ephemeral port), stop with ``stop()``."""

    VERSION = 41

    def __init__(self) -> None:
        self.devices: Dict[str, FakeDevice] = {}
        self.errors: List[str] = []
        self.lock = threading.RLock()
        self._server: Optional[socketserver.ThreadingTCPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.hang_sleep_s = 0.2
        self.transport_ids = 0

    # -- lifecycle ---------------------------------------------------------------------
    def add_device(self, serial: str, state: str = "device", **kw) -> FakeDevice:
        dev = FakeDevice(serial=serial, state=state, **kw)
        with self.lock:
            self.devices[serial] = dev
        return dev

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    def start(self) -> "FakeAdbServer":
        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    _Connection(outer, self.request).serve()
                except (ConnectionError, BrokenPipeError, _Closed):
                    pass

        class _Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fakeadb", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAdbServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- device lookups ------------------------------------------------------------------
    def visible(self) -> List[FakeDevice]:
        with self.lock:
            return [d for d in self.devices.values() if not d.gone]

    def lookup(self, serial: str) -> Tuple[Optional[FakeDevice], Optional[str]]:
        with self.lock:
            dev = self.devices.get(serial)
            if dev is None or dev.gone:
                return None, f"device '{serial}' not found"
            if dev.state == "unauthorized":
                return None, ("device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n"
                              "Try 'adb kill-server' if that seems wrong.\n"
                              "Otherwise check for a confirmation dialog on your device.")
            if dev.state != "device":
                return None, f"device {dev.state}"
            return dev, None

    def count_request(self, dev: FakeDevice) -> bool:
        """Count a device request; True if the device vanishes now."""
        with self.lock:
            dev.requests += 1
            if dev.disconnect_after_commands is not None and dev.requests > dev.disconnect_after_commands:
                dev.gone = True
            return dev.gone


class _Closed(Exception):
    pass


class _Connection:
    def __init__(self, server: FakeAdbServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    # -- framing -----------------------------------------------------------------------
    def read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return buf

    def read_request(self) -> str:
        n = int(self.read_exact(4), 16)
        return self.read_exact(n).decode("utf-8")

    def okay(self, payload: Optional[str] = None) -> None:
        self.sock.sendall(b"OKAY" + (_block(payload) if payload is not None else b""))

    def fail(self, message: str) -> None:
        self.sock.sendall(b"FAIL" + _block(message))

    # -- host services -------------------------------------------------------------------
    def serve(self) -> None:
        req = self.read_request()
        srv = self.server
        if req == "host:version":
            return self.okay(f"{srv.VERSION:04x}")
        if req in ("host:devices", "host:devices-l"):
            lines = []
            for d in srv.visible():
                if req == "host:devices":
                    lines.append(f"{d.serial}\t{d.state}")
                else:
                    extra = " ".join(f"{k}:{v}" for k, v in d.tags.items())
                    lines.append(f"{d.serial:<22} {d.state} {extra}".rstrip())
            return self.okay("".join(ln + "\n" for ln in lines))
        m = re.match(r"host-serial:([^:]+):(features|get-state)$", req)
        if m:
            dev = srv.devices.get(m.group(1))
            if dev is None or dev.gone:
                return self.fail(f"device '{m.group(1)}' not found")
            return self.okay("shell_v2,cmd,stat_v2" if m.group(2) == "features" else dev.state)
        for prefix, sends_id in (("host:tport:serial:", True), ("host:transport:", False)):
            if req.startswith(prefix):
                dev, err = srv.lookup(req[len(prefix):])
                if err:
                    return self.fail(err)
                with srv.lock:
                    srv.transport_ids += 1
                    tid = srv.transport_ids
                self.sock.sendall(b"OKAY" + (struct.pack("<Q", tid) if sends_id else b""))
                return self.serve_device(dev)
        srv.errors.append(f"unsupported host request {req!r}")
        self.fail(f"fakeadb: unsupported request {req!r}")

    # -- device services -----------------------------------------------------------------
    def serve_device(self, dev: FakeDevice) -> None:
        req = self.read_request()
        if self.server.count_request(dev):
            # The phone went away: adb drops the connection without another word.
            return
        if req == "sync:":
            self.okay()
            return self.serve_sync(dev)
        m = re.match(r"shell(,[^:]*)?:(.*)$", req, re.S)
        if m:
            v2 = m.group(1) is not None and "v2" in m.group(1)
            return self.serve_shell(dev, m.group(2), v2)
        self.server.errors.append(f"unsupported device request {req!r}")
        self.fail(f"fakeadb: unsupported request {req!r}")

    def serve_shell(self, dev: FakeDevice, cmd: str, v2: bool) -> None:
        with self.server.lock:
            dev.commands.append(cmd)
        self.okay()
        out, code, vanish, err = run_command(self.server, dev, cmd)
        data = out.encode("utf-8")
        if v2:
            packet = b""
            if data:
                packet += b"\x01" + struct.pack("<I", len(data)) + data
            if err:
                raw = err.encode("utf-8")
                packet += b"\x02" + struct.pack("<I", len(raw)) + raw
            if not vanish:
                packet += b"\x03" + struct.pack("<I", 1) + bytes([code & 0xFF])
            self.sock.sendall(packet)
        else:
            self.sock.sendall(data + err.encode("utf-8"))
        if vanish:
            with self.server.lock:
                dev.gone = True

    def serve_sync(self, dev: FakeDevice) -> None:
        while True:
            head = self.read_exact(8)
            cmd, n = head[:4], struct.unpack("<I", head[4:])[0]
            if cmd == b"QUIT":
                return
            arg = self.read_exact(n).decode("utf-8")
            if cmd == b"STAT":
                mode, size, mtime = _stat(dev, arg)
                self.sock.sendall(b"STAT" + struct.pack("<III", mode, size, mtime))
            elif cmd == b"STA2":
                mode, size, mtime = _stat(dev, arg)
                err = 0 if mode else 2  # ENOENT
                self.sock.sendall(b"STA2" + struct.pack("<IQQIIIIQqqq", err, 0, 0, mode, 1, 0, 0,
                                                        size, mtime, mtime, mtime))
            elif cmd == b"LIST":
                prefix = arg.rstrip("/") + "/"
                names = set()
                with self.server.lock:
                    for p in list(dev.files) + list(dev.dirs):
                        if p.startswith(prefix) and p != prefix.rstrip("/"):
                            names.add(p[len(prefix):].split("/")[0])
                for name in sorted(names):
                    mode, size, mtime = _stat(dev, prefix + name)
                    raw = name.encode()
                    self.sock.sendall(b"DENT" + struct.pack("<IIII", mode, size, mtime, len(raw)) + raw)
                self.sock.sendall(b"DONE" + b"\x00" * 16)
            elif cmd == b"SEND":
                path, _, mode_s = arg.rpartition(",")
                chunks = []
                while True:
                    h = self.read_exact(8)
                    if h[:4] == b"DATA":
                        chunks.append(self.read_exact(struct.unpack("<I", h[4:])[0]))
                    elif h[:4] == b"DONE":
                        break
                    else:
                        return self.sync_fail(f"fakeadb: bad SEND chunk {h[:4]!r}")
                data = b"".join(chunks)
                with self.server.lock:
                    if dev.storage_free_bytes is not None and len(data) > dev.storage_free_bytes:
                        # adbd deletes the partial file and answers with strerror(ENOSPC).
                        self.sync_fail(f"write failed: No space left on device")
                        continue
                    if dev.storage_free_bytes is not None:
                        dev.storage_free_bytes -= len(data)
                    dev.add_file(path, data, int(mode_s or "33188") & 0o7777)
                    dev.pushes.append(path)
                self.sock.sendall(b"OKAY" + b"\x00" * 4)
            elif cmd == b"RECV":
                with self.server.lock:
                    data = dev.files.get(arg)
                if data is None:
                    self.sync_fail("No such file or directory")
                    continue
                for i in range(0, len(data), 64 * 1024):
                    chunk = data[i:i + 64 * 1024]
                    self.sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                self.sock.sendall(b"DONE" + b"\x00" * 4)
            else:
                self.server.errors.append(f"unsupported sync request {cmd!r}")
                return self.sync_fail(f"fakeadb: unsupported sync request {cmd!r}")

    def sync_fail(self, message: str) -> None:
        raw = message.encode()
        self.sock.sendall(b"FAIL" + struct.pack("<I", len(raw)) + raw)


def _block(text: str) -> bytes:
    raw = text.encode("utf-8")
    return f"{len(raw):04x}".encode() + raw


def _stat(dev: FakeDevice, path: str) -> Tuple[int, int, int]:
    path = path.rstrip("/") or "/"
    if path in dev.files:
        return 0o100000 | dev.modes.get(path, 0o644), len(dev.files[path]), 1_700_000_000
    if path in dev.dirs:
        return 0o040000 | 0o771, 4096, 1_700_000_000
    return 0, 0, 0


# -- the "shell" ---------------------------------------------------------------------------
def run_command(server: FakeAdbServer, dev: FakeDevice, cmd: str) -> Tuple[str, int, bool, str]:
    """(stdout, exit code, device vanishes after output, stderr)."""
    token = None
    m = _ECHO_STATUS.match(cmd)
    body = cmd
    if m:
        body, token = m.group("body"), m.group("token")
    out, code, vanish, err = _run_body(server, dev, body)
    if token is not None and not vanish:
        if "2>&1" in body:  # the caller merged stderr into stdout
            out, err = out + err, ""
        if out and not out.endswith("\n"):
            out += "\n"
        out += f"{token}{code}\n"
    return out, code, vanish, err


def _run_body(server: FakeAdbServer, dev: FakeDevice, cmd: str) -> Tuple[str, int, bool, str]:
    with server.lock:
        rules = list(dev.rules)
    for rule in rules:
        match = rule.match(cmd)
        if not match:
            continue
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                with server.lock:
                    dev.rules.remove(rule)
        if rule.hang:
            t = _TIMEOUT_PREFIX.search(cmd)
            if t is None:
                server.errors.append(f"hang rule hit by a command without a `timeout N` prefix: {cmd!r}")
                return "fakeadb: this run never finishes and has no timeout prefix\n", 127, False, ""
            time.sleep(min(float(t.group("secs")), server.hang_sleep_s))
            text = rule.output if isinstance(rule.output, str) else ""
            return text, 124, False, rule.stderr
        if callable(rule.output):
            text, code = rule.output(dev, cmd, match if isinstance(match, re.Match) else None)
        else:
            text, code = rule.output, rule.exit_code
        return text, code, rule.disconnect, rule.stderr
    # built-ins, possibly chained with &&
    outputs = []
    code = 0
    for part in re.split(r"\s*&&\s*", cmd.strip()):
        text, code = _builtin(server, dev, part)
        outputs.append(text)
        if code != 0:
            break
    return "".join(outputs), code, False, ""


def _builtin(server: FakeAdbServer, dev: FakeDevice, cmd: str) -> Tuple[str, int]:
    try:
        argv = shlex.split(cmd)
    except ValueError:
        argv = []
    if not argv:
        return _unknown(server, dev, cmd)
    name, args = argv[0], argv[1:]
    with server.lock:
        if name == "mkdir" and args[:1] == ["-p"]:
            for p in args[1:]:
                dev.dirs.add(p.rstrip("/"))
                dev._add_parents(p.rstrip("/") + "/x")
            return "", 0
        if name == "rm" and args and args[0] in ("-f", "-rf", "-r"):
            for p in args[1:]:
                p = p.rstrip("/")
                for f in [f for f in dev.files if f == p or f.startswith(p + "/")]:
                    if dev.storage_free_bytes is not None:
                        dev.storage_free_bytes += len(dev.files[f])
                    del dev.files[f]
                if "r" in args[0]:
                    dev.dirs = {d for d in dev.dirs if not (d == p or d.startswith(p + "/"))}
            return "", 0
        if name == "chmod" and len(args) >= 2:
            for p in args[1:]:
                if p not in dev.files:
                    return f"chmod: {p}: No such file or directory\n", 1
                dev.modes[p] = int(args[0], 8)
            return "", 0
        if name == "mv" and len(args) == 2:
            src, dst = args
            if src not in dev.files:
                return f"mv: bad '{src}': No such file or directory\n", 1
            dev.add_file(dst, dev.files.pop(src), dev.modes.pop(src, 0o644))
            return "", 0
        if name == "sha256sum" and args:
            out, code = [], 0
            for p in args:
                if p in dev.files:
                    out.append(f"{hashlib.sha256(dev.files[p]).hexdigest()}  {p}\n")
                else:
                    out.append(f"sha256sum: {p}: No such file or directory\n")
                    code = 1
            return "".join(out), code
        if name == "cat" and len(args) == 1 and args[0] in dev.files:
            return dev.files[args[0]].decode("utf-8", "replace"), 0
        if name == "ls" and len(args) == 1:
            p = args[0].rstrip("/")
            if p in dev.files:
                return p + "\n", 0
            if p in dev.dirs:
                names = sorted({f[len(p) + 1:].split("/")[0] for f in list(dev.files) + list(dev.dirs)
                                if f.startswith(p + "/")})
                return "".join(n + "\n" for n in names), 0
            return f"ls: {p}: No such file or directory\n", 1
    return _unknown(server, dev, cmd)


def _unknown(server: FakeAdbServer, dev: FakeDevice, cmd: str) -> Tuple[str, int]:
    server.errors.append(f"{dev.serial}: unknown command {cmd!r}")
    return f"fakeadb: unknown command: {cmd}\n", 127
