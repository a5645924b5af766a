"""Host-side overhead of one phone measurement. Target: under 50 ms per model.

Runs ``AndroidDevice.measure`` + ``Store.add_measurement`` for N distinct synthetic model
files (default 200, 64 KiB each, so every model is pushed) through real adbutils against
the fake adb server of ``tests/fakeadb`` on loopback. The fake phone replays a recorded
benchmark_model output with ``--replay-ms`` of sleep (default 0); that replayed run time is
subtracted, so what is left is our cost: sha256, stat + push, the shell round trips (probe
before and after, the run), parsing and the SQLite commit. The first model, which also
pushes the binary and reads getprop, is timed separately as ``first_model_ms``.

    python benchmarks/host_overhead.py --json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # the fake adb server lives with the tests

from fakeadb.phone import _benchmark_handler, fake_elf, install_phone, recording  # noqa: E402
from fakeadb.server import FakeAdbServer  # noqa: E402
from host.adb import AdbTransport  # noqa: E402
from host.devices import AndroidDevice  # noqa: E402
from host.store import Store  # noqa: E402
from opcost.records import RunSpec  # noqa: E402

TARGET_MS = 50.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="number of models")
    ap.add_argument("--model-kib", type=int, default=64)
    ap.add_argument("--replay-ms", type=float, default=0.0, help="simulated run time per model")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default anyway)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeAdbServer() as server:
        phone = install_phone(server, "BENCH0001", benchmark=None)
        replay = _benchmark_handler(recording("benchmark_model_ti_am62x_excerpt.txt"))

        def run(dev, cmd, m):
            time.sleep(args.replay_ms / 1000.0)
            return replay(dev, cmd, m)

        phone.add_rule(re.compile(r"benchmark_model\b.*--graph="), run)
        binary = fake_elf(os.path.join(tmp, "benchmark_model"))
        models = []
        for i in range(args.n + 1):
            p = os.path.join(tmp, f"m{i:04d}.tflite")
            with open(p, "wb") as f:
                f.write(b"\x1c\x00\x00\x00TFL3" + i.to_bytes(4, "little") + os.urandom(args.model_kib * 1024))
            models.append(p)
        device = AndroidDevice("BENCH0001", AdbTransport(port=server.port), binary_path=binary)
        spec = RunSpec(timeout_s=60)
        per_model_ms, store_ms = [], []
        with Store.open(os.path.join(tmp, "runs.db")) as store:
            t0 = time.perf_counter()
            store.add_measurement(device.measure(models[0], spec))
            first_ms = (time.perf_counter() - t0) * 1000
            for path in models[1:]:
                t0 = time.perf_counter()
                m = device.measure(path, spec)
                t1 = time.perf_counter()
                store.add_measurement(m)
                t2 = time.perf_counter()
                per_model_ms.append((t2 - t0) * 1000 - args.replay_ms)
                store_ms.append((t2 - t1) * 1000)
            stored = store.count_runs()
        if server.errors:
            raise SystemExit(f"fake adb server errors: {server.errors}")

    mean = statistics.fmean(per_model_ms)
    q = statistics.quantiles(per_model_ms, n=20)
    print(json.dumps({
        "overhead_ms_per_model": round(mean, 2),
        "n": len(per_model_ms),
        "p50_ms": round(statistics.median(per_model_ms), 2),
        "p95_ms": round(q[18], 2),
        "first_model_ms": round(first_ms, 2),
        "store_ms_mean": round(statistics.fmean(store_ms), 2),
        "store_ms_p95": round(statistics.quantiles(store_ms, n=20)[18], 2),
        "model_kib": args.model_kib,
        "replay_ms": args.replay_ms,
        "stored_runs": stored,
        "target_ms": TARGET_MS,
        "ok": mean < TARGET_MS,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
