"""A recorded phone for the fake adb server, and the pytest fixture that runs the server."""
from __future__ import annotations

import os
import re
import shlex
from typing import Optional

import pytest

from fakeadb.server import FakeAdbServer, FakeDevice

RECORDINGS = os.path.join(os.path.dirname(__file__), "recordings")
BENCH_RE = re.compile(r"benchmark_model\b.*--graph=")


def recording(name: str) -> str:
    with open(os.path.join(RECORDINGS, name), encoding="utf-8") as f:
        return f.read()


def _benchmark_handler(output: str):
    """Replay ``output`` for a benchmark_model run, after checking what a real shell would:
    the binary and the model must be on the device and the binary executable."""

    def handler(dev: FakeDevice, cmd: str, _m):
        words = shlex.split(cmd.split("&&")[-1])
        binary = next(w for w in words if w.endswith("benchmark_model"))
        graph = next(w.split("=", 1)[1] for w in words if w.startswith("--graph="))
        if binary not in dev.files:
            return f"/system/bin/sh: {binary}: not found\n", 127
        if not dev.modes.get(binary, 0) & 0o100:
            return f"/system/bin/sh: {binary}: can't execute: Permission denied\n", 126
        if graph not in dev.files:
            return (f"INFO: STARTING!\nERROR: Could not open '{graph}'.\n"
                    "ERROR: Failed to initialize the interpreter\nERROR: Benchmarking failed.\n"), 1
        dev.runs = getattr(dev, "runs", 0) + 1
        return output, 0

    return handler


def install_phone(server: FakeAdbServer, serial: str = "SYN8250A", *,
                  getprop: str = "getprop_synthetic_sm8250.txt",
                  probe: str = "probe_synthetic_sm8250.txt",
                  benchmark: Optional[str] = "benchmark_model_ti_am62x_excerpt.txt") -> FakeDevice:
    """A ready phone: getprop, the probe script and benchmark_model runs are recorded."""
    from device_bench.probes import PROBE_SCRIPT

    dev = server.add_device(serial, tags={"product": "kona", "model": "Synthetic_Phone_8250",
                                          "device": "kona", "transport_id": "1"})
    dev.add_rule("getprop", recording(getprop))
    dev.add_rule(PROBE_SCRIPT, recording(probe))
    if benchmark is not None:
        dev.add_rule(BENCH_RE, _benchmark_handler(recording(benchmark)))
    return dev


@pytest.fixture
def fake_adb(monkeypatch):
    """A running fake adb server; ADB_SERVER_PORT points at it. Fails the test if the
    server saw a command it does not know (unless the test emptied ``server.errors``)."""
    server = FakeAdbServer().start()
    monkeypatch.setenv("ADB_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("ADB_SERVER_PORT", str(server.port))
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, f"fake adb server saw unexpected requests: {server.errors}"


def fake_elf(path: str, machine: int = 183) -> str:
    """A tiny file with an ELF header for ``machine`` (183 = aarch64). Not runnable: the
    fake phone never executes it, it only checks that it was pushed and made executable."""
    head = bytearray(64)
    head[:4] = b"\x7fELF"
    head[4] = 2  # 64-bit
    head[5] = 1  # little endian
    head[18:20] = machine.to_bytes(2, "little")
    with open(path, "wb") as f:
        f.write(bytes(head) + b"synthetic benchmark_model stand-in\n")
    return path
