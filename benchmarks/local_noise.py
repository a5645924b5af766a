"""Repeatability of host CPU measurements.

Measures each reference network ``--repeats`` times (each repeat a separate
``LocalDevice.measure``, i.e. a fresh child process), 1 thread, XNNPACK, pinned to one
CPU, and prints the coefficient of variation of the per-repeat mean (target: under 3 %)
and of the per-repeat median, as one JSON object::

    {"models": {"mobilenet_v2": {"cv_pct": ..., "means_ms": [...], ...}, ...}, ...}

The measuring process runs at ``--nice`` (default -10, also applied to its scheduler
autogroup, see ``local_worker.set_priority``): on a shared 2-core VM this is what keeps
other sessions from taking the pinned CPU mid-run. Repeats are interleaved across models
(A B A B ...) so that slow drifts of background load hit every model alike.
``cv_thread_cpu_pct`` (diagnostic, not the target) is the CV of the inference thread's
CPU time per run: it separates "descheduled by other processes" (wall noise, CPU time
stable) from "the work itself varies".

Usage: ``python benchmarks/local_noise.py --json [--nice none]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device_bench.local import LocalDevice  # noqa: E402
from opcost.errors import OpcostError  # noqa: E402
from opcost.records import RunSpec  # noqa: E402

TARGET_CV_PCT = 3.0


def cv_pct(values):
    """Sample std / mean in percent (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    return 100.0 * statistics.stdev(values) / statistics.fmean(values)


def loadavg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true",
                    help="output is always one JSON object on stdout (progress goes to stderr)")
    ap.add_argument("--models", default="mobilenet_v2,resnet50")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-secs", type=float, default=3.0)
    ap.add_argument("--num-runs", type=int, default=50)
    ap.add_argument("--warmup-secs", type=float, default=1.0)
    ap.add_argument("--cpu-mask", default="auto",
                    help="hex mask; 'auto' = the highest-numbered usable CPU; 'none' = no pinning")
    ap.add_argument("--nice", default="-10",
                    help="scheduling priority of the measuring process and its session ('none' = unchanged; "
                         "negative values need root)")
    ap.add_argument("--cache-dir", default=None,
                    help="models_zoo cache (default $OPCOST_CACHE_DIR or ~/.cache/opcost/zoo)")
    a = ap.parse_args(argv)

    if a.cpu_mask == "auto":
        mask = f"{1 << max(os.sched_getaffinity(0)):x}"
    elif a.cpu_mask == "none":
        mask = None
    else:
        mask = a.cpu_mask
    try:
        from models_zoo.reference import build_reference

        names = [n.strip() for n in a.models.split(",") if n.strip()]
        paths = {n: str(build_reference(n, cache_dir=a.cache_dir)) for n in names}
        spec = RunSpec(delegate="xnnpack", threads=1, cpu_mask=mask, warmup_runs=1,
                       warmup_min_secs=a.warmup_secs, num_runs=a.num_runs, min_secs=a.min_secs,
                       max_secs=max(150.0, 2 * a.min_secs), timeout_s=600.0)
        nice = None if str(a.nice).lower() == "none" else int(a.nice)
        dev = LocalDevice(nice=nice)
        res = {n: {"means_ms": [], "medians_ms": [], "stds_ms": [], "counts": [], "thread_cpu_ms": []}
               for n in names}
        load_before = loadavg()
        t0 = time.time()
        for rep in range(a.repeats):
            for n in names:
                m = dev.measure(paths[n], spec, model_name=n)
                e = m.output.e2e
                r = res[n]
                r["means_ms"].append(round(e.mean_ms, 4))
                r["medians_ms"].append(round(e.median_ms, 4))
                r["stds_ms"].append(round(e.std_ms, 4))
                r["counts"].append(e.count)
                cpu = m.runtime.get("thread_cpu_ms_per_run")
                r["thread_cpu_ms"].append(round(cpu, 4) if cpu is not None else None)
                print(f"repeat {rep + 1}/{a.repeats} {n}: mean {e.mean_ms:.3f} ms median {e.median_ms:.3f} ms "
                      f"n={e.count}", file=sys.stderr)
    except OpcostError as err:
        print(json.dumps({"error": err.to_dict()}))
        return 2
    for n, r in res.items():
        r["cv_pct"] = cv_pct(r["means_ms"])
        r["cv_median_pct"] = cv_pct(r["medians_ms"])
        r["mean_of_means_ms"] = statistics.fmean(r["means_ms"])
        cpus = [c for c in r["thread_cpu_ms"] if c is not None]
        # Diagnostic: CV of the per-run CPU time of the inference thread. Low while
        # cv_pct is high means the wall-clock noise comes from other processes.
        r["cv_thread_cpu_pct"] = cv_pct(cpus)
        r["meets_target"] = r["cv_pct"] is not None and r["cv_pct"] < TARGET_CV_PCT
    out = {
        "models": res,
        "target_cv_pct": TARGET_CV_PCT,
        "settings": {"repeats": a.repeats, "threads": 1, "delegate": "xnnpack", "cpu_mask": mask,
                     "min_secs": a.min_secs, "num_runs": a.num_runs, "warmup_min_secs": a.warmup_secs,
                     "nice": nice},
        "host": {"cpu": dev.info().model, "cpus": os.cpu_count()},
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
