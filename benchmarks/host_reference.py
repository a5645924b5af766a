"""The product's own loop on the host CPU: fit on locally measured models, predict the reference networks.

Fit on locally measured training models, predict the reference networks (never in
training), compare with their measured latency.

Training models (all measured here, 1 thread, XNNPACK, pinned to one CPU, raised priority):

* ``mbv2-space`` NAS samples, end to end and per op (every op sliced and timed alone);
* ``nb201`` NAS samples, end to end and per op;
* micro single-op models (``models_zoo.micro``, configs drawn from the reference networks'
  layer distribution): end to end; a single-kernel model's time is that kernel's time;
* micro blocks (MBConv, SE, ResNet blocks, NB201 cells): end to end and per op.

Test set: the ``models_zoo.reference`` networks, measured end to end only, in a store of
their own (``training_tables`` reads every run of the device, so test runs never share the
training store). Then ``LatencyPredictor(runtime="xnnpack")`` is fitted on the training
store and predicts the reference graphs. Target: MAPE <= 5 %, >= 90 % within +-10 %.

Prints one JSON object on stdout (progress and TensorFlow output go to stderr)::

    {"mape_pct", "acc10_pct", "acc5_pct", "n_networks",
     "networks": {name: {"measured_ms", "pred_ms", "err_pct", ...}},
     "training": {...counts...}, "settings": {...}, "timing_s": {...}}

Every network (NAS samples, blocks, references) is measured ``--passes`` times (default
2), passes interleaved, and the fit and the score take per-model medians: on a shared host
the background load drifts, and one pass of per-op timings can be off by 5-10 %.
Micro single-op models are measured once (there are hundreds).

``--store DIR`` keeps the measurements (``DIR/train.sqlite``, ``DIR/reference.sqlite``):
a rerun skips every model already measured there with the same settings, so only the fit
is repeated. Default: a temporary directory, removed at the end.

Usage: ``python benchmarks/host_reference.py --json [--store DIR] [--networks a,b]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opcost.errors import OpcostError, UsageError  # noqa: E402

TARGET_MAPE_PCT = 5.0
TARGET_ACC10_PCT = 90.0
DEVICE = "local"
DELEGATE = "xnnpack"
THREADS = 1
# Micro ops with more configuration dimensions (size, channels, kernel, stride) than
# the rest (size, channels): they get --micro-conv samples instead of --micro-single.
CONV_MICRO_OPS = ("conv2d", "depthwise_conv2d", "grouped_conv2d")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> Optional[List[float]]:
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


def cpu_mask_of(arg: str) -> Optional[str]:
    """'auto' = the highest-numbered usable CPU, 'none' = no pinning, else a hex mask."""
    if arg == "auto":
        return f"{1 << max(os.sched_getaffinity(0)):x}"
    if arg == "none":
        return None
    return arg


# ---------------------------------------------------------------- model lists


class Item:
    """One model to measure: group, name, path, whether to time ops one by one."""

    def __init__(self, group: str, name: str, path: str, per_op: bool) -> None:
        self.group, self.name, self.path, self.per_op = group, name, path, per_op


def training_items(a: argparse.Namespace) -> Dict[str, Any]:
    """Build (cached) the training models; returns items and per-group build failures."""
    from models_zoo import micro, nas

    items: List[Item] = []
    failed: Dict[str, List[str]] = {}

    def add(group: str, cfgs: Sequence[Dict[str, Any]], build, name_of, per_op: bool) -> None:
        for cfg in cfgs:
            name = name_of(cfg)
            try:
                path = build(cfg, cache_dir=a.cache_dir)
            except (OpcostError, ValueError) as err:
                # OpcostError: e.g. the converter rewrote a micro layer; ValueError: Keras
                # rejected a sampled config (models_zoo.micro can draw non-integer channels).
                log(f"build failed, left out: {name}: {getattr(err, 'message', err)}")
                failed.setdefault(group, []).append(name)
                continue
            items.append(Item(group, name, str(path), per_op))

    if a.mbv2 > 0:
        add("nas_mbv2", nas.sample_configs("mbv2-space", a.mbv2, a.seed), nas.build_config,
            nas.config_name, True)
    if a.nb201 > 0:
        add("nas_nb201", nas.sample_configs("nb201", a.nb201, a.seed), nas.build_config,
            nas.config_name, True)
    for op in micro.SINGLE_OPS:
        n = a.micro_conv if op in CONV_MICRO_OPS else a.micro_single
        if n > 0:
            add("micro_single", micro.sample_configs(op, n, a.seed), micro.build_config,
                micro.config_name, False)
    if a.micro_blocks > 0:
        for op in micro.BLOCKS:
            add("micro_block", micro.sample_configs(op, a.micro_blocks, a.seed), micro.build_config,
                micro.config_name, True)
    return {"items": items, "build_failed": failed}


def reference_items(names: Sequence[str], cache_dir: Optional[str]) -> List[Item]:
    from models_zoo.reference import build_reference

    out = []
    for n in names:
        t = time.time()
        p = build_reference(n, cache_dir=cache_dir)
        if time.time() - t > 5:
            log(f"built reference {n} in {time.time() - t:.0f} s")
        out.append(Item("reference", n, str(p), False))
    return out


# ---------------------------------------------------------------- measuring


def runs_measured(store, sha: str, spec_key: str, per_op: bool) -> int:
    """How many runs of this model with these settings ``store`` holds (with per-op
    times when ``per_op``)."""
    runs = store.runs_df(device=DEVICE, model_sha256=sha, spec_key=spec_key)
    if runs.empty or not per_op:
        return int(len(runs))
    ops = store.ops_df(run_id=[int(r) for r in runs["run_id"]], section="run")
    return int(ops["run_id"].nunique()) if len(ops) else 0


def measure_items(store, dev, items: Sequence[Item], specs: Dict[str, Any],
                  passes: Dict[str, int]) -> Dict[str, Dict[str, int]]:
    """Measure every item ``passes[group]`` times in ``store`` (runs already there with
    the same spec count); passes are interleaved (A B C A B C) so that slow changes of the
    background load hit every model alike. Returns counts of runs per group."""
    from opcost.records import sha256_file

    counts: Dict[str, Dict[str, int]] = {}
    shas = {it.path: sha256_file(it.path) for it in items}
    failed: set = set()
    for p in range(max(passes.values(), default=1)):
        for k, it in enumerate(items):
            c = counts.setdefault(it.group, {"measured": 0, "reused": 0, "failed": 0})
            if p >= passes[it.group] or it.path in failed:
                continue
            spec = specs[it.group]
            if runs_measured(store, shas[it.path], spec.key(), it.per_op) > p:
                c["reused"] += 1
                continue
            t = time.time()
            try:
                m = dev.measure(it.path, spec, model_name=it.name, per_op=it.per_op)
            except OpcostError as err:
                log(f"measure failed, left out: {it.name}: {err.message}")
                c["failed"] += 1
                failed.add(it.path)
                continue
            store.add_measurement(m)
            c["measured"] += 1
            log(f"pass {p + 1} [{k + 1}/{len(items)}] {it.group} {it.name}: {m.output.e2e.mean_ms:.3f} ms"
                + (f", {len(m.output.ops)} ops timed" if it.per_op else "") + f" ({time.time() - t:.1f} s)")
    return counts


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true",
                    help="output is always one JSON object on stdout (progress goes to stderr)")
    ap.add_argument("--store", default=None,
                    help="directory for the measurement stores (reused by reruns); default: a temp dir")
    ap.add_argument("--networks", default="all", help="comma-separated reference names, or 'all'")
    ap.add_argument("--seed", type=int, default=0, help="seed of every training-model sampler")
    ap.add_argument("--mbv2", type=int, default=12, help="mbv2-space NAS samples (per-op timed)")
    ap.add_argument("--nb201", type=int, default=6, help="nb201 NAS samples (per-op timed)")
    ap.add_argument("--micro-single", type=int, default=12, help="micro models per single op type "
                    "(convolutions: --micro-conv)")
    ap.add_argument("--micro-conv", type=int, default=24,
                    help="micro models per convolution op type (" + ", ".join(CONV_MICRO_OPS) + ")")
    ap.add_argument("--micro-blocks", type=int, default=8, help="micro models per block type (per-op timed)")
    ap.add_argument("--passes", type=int, default=2,
                    help="runs of every network (NAS, blocks, references; micro single ops: one), "
                         "interleaved; the fit takes per-model medians")
    ap.add_argument("--min-secs", type=float, default=1.0,
                    help="timed seconds per end-to-end run of a network (sliced ops get a tenth)")
    ap.add_argument("--micro-min-secs", type=float, default=0.5, help="timed seconds per micro model")
    ap.add_argument("--reference-min-secs", type=float, default=2.0, help="timed seconds per reference network")
    ap.add_argument("--overhead", default="auto", help="overhead form of the predictor (auto, scale, dispatch, linear)")
    ap.add_argument("--cpu-mask", default="auto", help="hex mask; 'auto' = highest usable CPU; 'none' = no pinning")
    ap.add_argument("--nice", default="-10", help="priority of the measuring process ('none' = unchanged)")
    ap.add_argument("--cache-dir", default=None, help="models_zoo cache (default $OPCOST_CACHE_DIR or ~/.cache/opcost/zoo)")
    return ap.parse_args(argv)


def run(a: argparse.Namespace, store_dir: str) -> Dict[str, Any]:
    import numpy as np

    from device_bench.local import OP_BUDGET_FRACTION, LocalDevice
    from host.modeler import metrics
    from host.modeler.predictor import LatencyPredictor, ops_of_files, training_tables
    from host.store import Store
    from models_zoo.reference import reference_names
    from opcost.records import RunSpec

    all_names = reference_names()
    if a.networks.strip().lower() == "all":
        names = all_names
    else:
        names = [n.strip() for n in a.networks.split(",") if n.strip()]
        bad = [n for n in names if n not in all_names]
        if bad or not names:
            raise UsageError(f"unknown reference network(s): {', '.join(bad) or '(none given)'}",
                             hint="valid names: " + ", ".join(all_names))
    if a.passes < 1:
        raise UsageError(f"--passes must be >= 1, got {a.passes}")
    for opt in ("mbv2", "nb201", "micro_single", "micro_conv", "micro_blocks"):
        if getattr(a, opt) < 0:
            raise UsageError(f"--{opt.replace('_', '-')} must be >= 0, got {getattr(a, opt)}")
    mask = cpu_mask_of(a.cpu_mask)
    nice = None if str(a.nice).lower() == "none" else int(a.nice)
    timing: Dict[str, float] = {}

    def spec(min_secs: float) -> RunSpec:
        return RunSpec(delegate=DELEGATE, threads=THREADS, cpu_mask=mask, warmup_runs=1,
                       warmup_min_secs=min(0.5, min_secs / 2), num_runs=20, min_secs=min_secs,
                       max_secs=max(60.0, 4 * min_secs), timeout_s=3600.0)

    net_spec, micro_spec, ref_spec = spec(a.min_secs), spec(a.micro_min_secs), spec(a.reference_min_secs)
    specs = {"nas_mbv2": net_spec, "nas_nb201": net_spec, "micro_single": micro_spec,
             "micro_block": net_spec, "reference": ref_spec}
    dev = LocalDevice(nice=nice)

    t = time.time()
    built = training_items(a)
    items = built["items"]
    timing["build_training_s"] = time.time() - t
    log(f"{len(items)} training models built/cached in {timing['build_training_s']:.0f} s")
    load_before = loadavg()
    train_store = Store.open(os.path.join(store_dir, "train.sqlite"))
    ref_store = Store.open(os.path.join(store_dir, "reference.sqlite"))
    t = time.time()
    passes = {g: (1 if g == "micro_single" else a.passes) for g in specs}
    train_counts = measure_items(train_store, dev, items, specs, passes)
    timing["measure_training_s"] = time.time() - t
    t = time.time()
    refs = reference_items(names, a.cache_dir)
    timing["build_reference_s"] = time.time() - t
    t = time.time()
    ref_counts = measure_items(ref_store, dev, refs, specs, passes)
    timing["measure_reference_s"] = time.time() - t

    # Fit on the training store only.
    t = time.time()
    tables = training_tables(train_store, device=DEVICE, delegate=DELEGATE, threads=THREADS)
    wanted = {it.name for it in items}
    nets_t = tables["networks"]
    keep = set(nets_t.loc[nets_t["model_name"].isin(wanted), "network"])
    tables = {"ops": tables["ops"][tables["ops"]["network"].isin(keep)].reset_index(drop=True),
              "networks": nets_t[nets_t["network"].isin(keep)].reset_index(drop=True)}
    ref_names = set(names)
    if set(tables["networks"]["model_name"]) & ref_names:  # cannot happen with two stores; checked anyway
        raise UsageError("a reference network is in the training store", hint="use a fresh --store")
    predictor = LatencyPredictor(runtime="xnnpack", overhead=a.overhead).fit(**tables)
    timing["fit_s"] = time.time() - t

    # Predict and score the reference networks.
    measured: Dict[str, float] = {}
    for n in names:
        runs = ref_store.runs_df(device=DEVICE, model=n, spec_key=ref_spec.key())
        if len(runs):
            measured[n] = float(runs["mean_ms"].median())
    scored = [n for n in names if n in measured]
    if not scored:
        raise OpcostError("no reference network was measured", hint="see the messages above")
    path_of = {it.name: it.path for it in refs}
    ops = ops_of_files([path_of[n] for n in scored], scored)
    detail = predictor.predict_ops(ops)
    kern = predictor.predict_kernels(ops)
    networks: Dict[str, Any] = {}
    for n in scored:
        d = detail.loc[n]
        pred = float(d["pred_ms"])
        k = kern[kern["network"] == n]
        by_type = k.groupby("kernel_type")["pred_ms"].sum().sort_values(ascending=False)
        networks[n] = {
            "measured_ms": round(measured[n], 4), "pred_ms": round(pred, 4),
            "err_pct": round(100.0 * (pred - measured[n]) / measured[n], 2),
            "lo_ms": round(float(d["lo_ms"]), 4), "hi_ms": round(float(d["hi_ms"]), 4),
            "kernel_sum_ms": round(float(d["kernel_sum_ms"]), 4), "n_kernels": int(d["n_kernels"]),
            "n_unknown_kernels": int(d["n_unknown_kernels"]),
            "unknown_kernel_types": sorted(set(k.loc[k["unknown_type"], "kernel_type"])),
            "kernel_sum_by_type_ms": {str(kt): round(float(v), 4) for kt, v in by_type.items()},
        }
    y = np.array([measured[n] for n in scored])
    p = np.array([networks[n]["pred_ms"] for n in scored])
    s = metrics.summary(y, p)
    timing["predict_s"] = time.time() - t - timing["fit_s"]

    nets_t = tables["networks"]
    group_of = {it.name: it.group for it in items}
    model = predictor.model_
    km = model.kernel_model_
    training = {
        "n_models": int(len(nets_t)),
        "by_group": {g: int(v) for g, v in nets_t["model_name"].map(group_of).value_counts().items()},
        "n_ops": int(len(tables["ops"])),
        "n_ops_timed": int(np.isfinite(tables["ops"]["latency_ms"].to_numpy(dtype=float)).sum()),
        "n_kernels_measured": predictor.n_kernels_measured_,
        "kernel_type_counts": {t_: int(c) for t_, c in sorted(km.type_counts_.items())},
        "kernel_types_with_model": sorted(km.models_),
        "overhead_mode": model.overhead_mode_,
        "overhead_params": [float(x) for x in model.overhead_params_],
        "overhead_cv_mape_pct": {k_: round(v, 3) for k_, v in getattr(model, "overhead_cv_mape_pct_", {}).items()},
        "measure_counts": train_counts,
        "build_failed": built["build_failed"],
        "reference_measure_counts": ref_counts,
    }
    settings = {
        "device": DEVICE, "delegate": DELEGATE, "threads": THREADS, "cpu_mask": mask, "nice": nice,
        "seed": a.seed, "mbv2": a.mbv2, "nb201": a.nb201, "micro_single_per_op": a.micro_single, "micro_conv_per_op": a.micro_conv,
        "micro_blocks_per_block": a.micro_blocks, "passes": a.passes, "min_secs": a.min_secs,
        "op_min_secs": a.min_secs * OP_BUDGET_FRACTION, "micro_min_secs": a.micro_min_secs,
        "reference_min_secs": a.reference_min_secs, "overhead": a.overhead,
        "store": os.path.abspath(a.store) if a.store else None, "host_cpu": dev.info().model,
        "loadavg_before_measuring": load_before, "loadavg_after": loadavg(),
    }
    return {
        "mape_pct": round(s["mape_pct"], 3), "acc10_pct": round(s["acc10_pct"], 2),
        "acc5_pct": round(s["acc5_pct"], 2), "rmspe_pct": round(s["rmspe_pct"], 3),
        "spearman": round(s["spearman"], 4), "n_networks": s["n"],
        "targets": {"mape_pct": TARGET_MAPE_PCT, "acc10_pct": TARGET_ACC10_PCT,
                    "met": bool(s["mape_pct"] <= TARGET_MAPE_PCT and s["acc10_pct"] >= TARGET_ACC10_PCT)},
        "not_measured": [n for n in names if n not in measured],
        "networks": networks, "training": training, "settings": settings,
        "timing_s": {k_: round(v, 1) for k_, v in timing.items()},
    }


def main(argv=None) -> int:
    a = parse_args(argv)
    # TensorFlow's converter prints to stdout; keep stdout for the one JSON object.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    t0 = time.time()
    tmp = None
    try:
        store_dir = a.store
        if store_dir:
            os.makedirs(store_dir, exist_ok=True)
        else:
            tmp = tempfile.mkdtemp(prefix="opcost-host-reference-")
            store_dir = tmp
        out = run(a, store_dir)
        out["timing_s"]["total_s"] = round(time.time() - t0, 1)
        code = 0
    except OpcostError as err:
        out, code = {"error": err.to_dict()}, 2
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        sys.stdout.flush()
        os.dup2(real_stdout, 1)
        os.close(real_stdout)
    print(json.dumps(out, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
