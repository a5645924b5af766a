"""Sum of sliced per-op times vs end-to-end time on the host CPU.

For each reference network: one ``LocalDevice.measure(..., per_op=True)`` gives the
end-to-end mean and the mean of every op timed alone (sliced into a one-op model), and
``ratio = sum_ops_ms / e2e_ms``. A ratio above 1 means the ops cost more alone (per-invoke
overhead, cold caches, lost fusion) than inside the network; below 1 means ops were
left out (ops on constants only, ops that cannot be sliced) or run faster alone.
Prints one JSON object::

    {"networks": {"<name>": {"e2e_ms", "sum_ops_ms", "ratio", ...}}, "summary": {...}}

Runs 1 thread, XNNPACK, pinned to one CPU at nice -10 (see benchmarks/local_noise.py).
Usage: ``python benchmarks/sliced_sum_ratio.py --json [--networks N]``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from device_bench.local import OP_BUDGET_FRACTION, LocalDevice  # noqa: E402
from opcost.errors import OpcostError  # noqa: E402
from opcost.records import RunSpec  # noqa: E402

# Small and medium reference networks (models_zoo.reference names), cheapest first.
NETWORKS = ["mobilenet_v2_035", "mobilenet_v1_050", "mobilenet_v3_small", "mobilenet_v1", "mobilenet_v2",
            "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_b0", "resnet50", "densenet121"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true",
                    help="output is always one JSON object on stdout (progress on stderr)")
    ap.add_argument("--networks", type=int, default=len(NETWORKS), help="use the first N networks of the list")
    ap.add_argument("--names", default=None, help="comma-separated reference names instead of the default list")
    ap.add_argument("--delegate", default="xnnpack", choices=["xnnpack", "cpu"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-secs", type=float, default=1.0, help="end-to-end budget; each op gets a tenth")
    ap.add_argument("--cpu-mask", default="auto", help="hex mask, 'auto' = highest usable CPU, 'none'")
    ap.add_argument("--nice", default="-10", help="priority of the measuring process ('none' = unchanged)")
    ap.add_argument("--cache-dir", default=None)
    a = ap.parse_args(argv)

    names = [n.strip() for n in a.names.split(",")] if a.names else NETWORKS[: max(a.networks, 0)]
    if a.cpu_mask == "auto":
        mask = f"{1 << max(os.sched_getaffinity(0)):x}"
    else:
        mask = None if a.cpu_mask == "none" else a.cpu_mask
    spec = RunSpec(delegate=a.delegate, threads=a.threads, cpu_mask=mask, warmup_runs=1, warmup_min_secs=0.5,
                   num_runs=50, min_secs=a.min_secs, max_secs=150.0, timeout_s=1800.0)
    nice = None if str(a.nice).lower() == "none" else int(a.nice)
    dev = LocalDevice(nice=nice)
    nets = {}
    t0 = time.time()
    try:
        from models_zoo.reference import build_reference

        for n in names:
            path = str(build_reference(n, cache_dir=a.cache_dir))
            t = time.time()
            m = dev.measure(path, spec, model_name=n, per_op=True)
            out = m.output
            sum_ops = sum(o.avg_ms for o in out.ops)
            e2e = out.e2e.mean_ms
            by_type = {}
            for o in out.ops:
                by_type[o.node_type] = by_type.get(o.node_type, 0.0) + o.avg_ms
            nets[n] = {"e2e_ms": round(e2e, 4), "e2e_median_ms": round(out.e2e.median_ms, 4),
                       "sum_ops_ms": round(sum_ops, 4), "ratio": round(sum_ops / e2e, 4),
                       "n_ops": out.total_nodes, "n_ops_timed": len(out.ops),
                       "sum_ops_by_type_ms": {k: round(v, 4)
                                              for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
                       "warnings": [w for w in out.warnings if not w.startswith("op ")][:3],
                       "wall_s": round(time.time() - t, 1)}
            print(f"{n}: e2e {e2e:.3f} ms, sum of {len(out.ops)} ops {sum_ops:.3f} ms, "
                  f"ratio {sum_ops / e2e:.3f} ({time.time() - t:.0f} s)", file=sys.stderr)
    except OpcostError as err:
        print(json.dumps({"error": err.to_dict(), "networks": nets}))
        return 2
    ratios = [v["ratio"] for v in nets.values()]
    summary = {}
    if ratios:
        summary = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
                   "geomean_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios))}
    print(json.dumps({"networks": nets, "summary": summary,
                      "settings": {"delegate": a.delegate, "threads": a.threads, "cpu_mask": mask, "nice": nice,
                                   "min_secs": a.min_secs, "op_min_secs": a.min_secs * OP_BUDGET_FRACTION},
                      "loadavg": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
                      "wall_s": round(time.time() - t0, 1)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
