"""How long does resuming a finished 1,000-job campaign take? Target: under 2 s.

Creates 50 synthetic tiny model files x 2 fake devices (that answer instantly) x 10
repeats = 1,000 jobs in a fresh store, runs the campaign to completion, then times
``run_campaign`` again on the same plan, which has nothing left to do. Prints one JSON
object: {"jobs", "complete_s", "resume_s", "resume_target_s", "resume_ok", ...}.

    python benchmarks/campaign_resume.py --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from host.campaign import load_plan, run_campaign
from host.store import Store
from opcost.records import (BenchmarkOutput, DeviceInfo, DeviceState, E2EStats, Measurement, ModelRef,
                            sha256_file)

RESUME_TARGET_S = 2.0


class InstantDevice:
    """A fake phone: every measurement comes back at once."""

    def __init__(self, serial: str, **kw) -> None:
        self.serial = serial
        self.calls = 0

    def info(self) -> DeviceInfo:
        return DeviceInfo(serial=self.serial, model="InstantPhone", abi="arm64-v8a")

    def state(self) -> DeviceState:
        return DeviceState()

    def measure(self, model_path, spec, *, model_name=None) -> Measurement:
        self.calls += 1
        return Measurement(device=self.info(),
                           model=ModelRef(sha256=sha256_file(model_path), name=model_name or "m"),
                           spec=spec, output=BenchmarkOutput(e2e=E2EStats(count=1, mean_ms=1.0)),
                           raw_output="instant")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object (the only output format)")
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="opcost_bench_") as tmp:
        os.makedirs(os.path.join(tmp, "models"))
        for i in range(args.models):
            with open(os.path.join(tmp, "models", f"synthetic_{i:03d}.tflite"), "wb") as f:
                f.write(b"\x1c\x00\x00\x00TFL3" + i.to_bytes(4, "little") * 64)
        serials = [f"FAKE{i}" for i in range(args.devices)]
        plan_path = os.path.join(tmp, "plan.yaml")
        with open(plan_path, "w") as f:
            f.write(f"models: [models/*.tflite]\ndevices: {json.dumps(serials)}\nrepeats: {args.repeats}\n"
                    "settings: [{delegate: xnnpack, threads: 1}]\nstore: bench.db\n")
        opened = []

        def factory(serial, **kw):
            dev = InstantDevice(serial)
            opened.append(dev)
            return dev

        plan = load_plan(plan_path)
        with Store.open(plan.store) as store:
            t0 = time.perf_counter()
            first = run_campaign(plan, store, device_factory=factory, progress=False)
            complete_s = time.perf_counter() - t0
        calls_first = sum(d.calls for d in opened)

        # Resume as a user would: a fresh process state, plan read and hashed again.
        t0 = time.perf_counter()
        plan2 = load_plan(plan_path)
        with Store.open(plan2.store) as store:
            again = run_campaign(plan2, store, device_factory=factory, progress=False)
            runs = store.count_runs()
        resume_s = time.perf_counter() - t0
        calls_total = sum(d.calls for d in opened)

    result = {
        "jobs": first.jobs,
        "complete_s": round(complete_s, 3),
        "complete_jobs_per_s": round(first.done / complete_s, 1),
        "resume_s": round(resume_s, 3),
        "resume_target_s": RESUME_TARGET_S,
        "resume_ok": resume_s < RESUME_TARGET_S and again.done == 0 and calls_total == calls_first,
        "done_first": first.done,
        "done_on_resume": again.done,
        "skipped_on_resume": again.skipped_done,
        "measure_calls_on_resume": calls_total - calls_first,
        "runs_in_store": runs,
    }
    print(json.dumps(result, sort_keys=True))
    return 0 if result["resume_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
