"""Block lookup + block regressors vs kernel sums, on the host CPU with mbv2-space NAS samples.

Draws ``--train + --test`` distinct mbv2-space samples (``models_zoo.nas``; they share
many blocks), measures the training part on this host end to end, per op and per block
(every op / block sliced and timed alone) and the test part end to end only, in separate
stores. Then fits on the training store

(a) ``LatencyPredictor`` (kernel regressors summed + overhead term), and
(b) ``BlockLatencyPredictor`` (per block: measured lookup, else block regressor, else
    kernel sum; then the kernel predictor's overhead term on the block sum),

plus two variants of (b) for context (overhead refitted on out-of-fold block sums;
lookup without block regressors), and predicts the test networks' end-to-end latency.

Prints one JSON object on stdout (progress on stderr)::

    {"kernel_sum": {"mape_pct", "acc10_pct", ..., "interval90_coverage_pct"}, "blocks": {...},
     "variant_...": {...},
     "test_blocks_by_source": {"lookup": n, "regressor": n, "kernel_sum": n},
     "lookup_share_pct", "networks": [...], "settings": {...}, "timing_s": {...}}

Measurements are pinned to one CPU (``--cpu-mask auto``: the highest usable) at raised
priority (``--nice -10``, needs root; not root: normal priority, noted in settings).

Usage: ``python benchmarks/block_lookup.py --json [--train 24 --test 12] [--store DIR]``.
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
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from host_reference import loadavg, log  # noqa: E402
from opcost.errors import OpcostError  # noqa: E402

DEVICE = "local"
DELEGATE = "xnnpack"


def _coverage_pct(y, detail) -> float:
    """Share (%) of measured latencies inside the predicted 90% interval (lo_ms, hi_ms)."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    return float(100 * np.mean((y >= detail["lo_ms"].to_numpy()) & (y <= detail["hi_ms"].to_numpy())))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="output is always one JSON object on stdout")
    ap.add_argument("--train", type=int, default=24, help="training samples (e2e + per op + per block)")
    ap.add_argument("--test", type=int, default=12, help="held-out samples (e2e only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-secs", type=float, default=1.0, help="minimum timing per network")
    ap.add_argument("--cpu-mask", default="auto", help="hex mask; 'auto' = highest usable CPU; 'none'")
    ap.add_argument("--nice", default="-10", help="priority of the measuring process ('none' = unchanged)")
    ap.add_argument("--store", default=None, help="directory for the stores (reruns reuse them)")
    ap.add_argument("--cache-dir", default=None, help="zoo conversion cache (default: opcost's)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    from device_bench.local import LocalDevice
    from host.modeler import metrics
    from host.modeler.blocks import BlockLatencyPredictor, block_training_table, blocks_of_files
    from host.modeler.predictor import LatencyPredictor, training_tables
    from host.store import Store
    from models_zoo import nas
    from opcost.records import RunSpec, sha256_file

    t0 = time.time()
    timing: Dict[str, float] = {}
    mask = None if a.cpu_mask == "none" else (
        f"{1 << max(os.sched_getaffinity(0)):x}" if a.cpu_mask == "auto" else a.cpu_mask)
    nice = None if str(a.nice).lower() == "none" else int(a.nice)
    if nice is not None and nice < 0 and os.geteuid() != 0:
        log(f"not root: nice {nice} is not allowed, measuring at normal priority")
        nice = None
    spec = RunSpec(delegate=DELEGATE, threads=1, cpu_mask=mask, warmup_runs=1,
                   warmup_min_secs=min(0.5, a.min_secs / 2), num_runs=20, min_secs=a.min_secs,
                   max_secs=max(60.0, 4 * a.min_secs), timeout_s=3600.0)
    cfgs = nas.sample_configs("mbv2-space", a.train + a.test, a.seed)
    paths = [str(nas.build_config(c, cache_dir=a.cache_dir)) for c in cfgs]
    names = [nas.config_name(c) for c in cfgs]
    timing["build_s"] = time.time() - t0

    tmp = None
    store_dir = a.store
    if store_dir is None:
        tmp = store_dir = tempfile.mkdtemp(prefix="opcost-blocks-bench-")
    os.makedirs(store_dir, exist_ok=True)
    dev = LocalDevice(nice=nice)
    load_before = loadavg()
    try:
        t = time.time()
        failed: List[str] = []
        with Store.open(os.path.join(store_dir, "train.sqlite")) as train, \
                Store.open(os.path.join(store_dir, "test.sqlite")) as test:
            for k, (p, n) in enumerate(zip(paths, names)):
                is_train = k < a.train
                store = train if is_train else test
                if len(store.runs_df(device=DEVICE, model_sha256=sha256_file(p), spec_key=spec.key())):
                    continue
                t1 = time.time()
                try:
                    m = dev.measure(p, spec, model_name=n, per_op=is_train, per_block=is_train)
                except OpcostError as err:
                    log(f"measure failed, left out: {n}: {err.message}")
                    failed.append(n)
                    continue
                store.add_measurement(m)
                log(f"[{k + 1}/{len(paths)}] {'train' if is_train else 'test'} {n}: {m.output.e2e.mean_ms:.3f} ms, "
                    f"{len(m.output.ops)} ops, {len(m.output.blocks)} blocks timed ({time.time() - t1:.1f} s)")
            timing["measure_s"] = time.time() - t
            load_after = loadavg()

            t = time.time()
            tables = training_tables(train, device=DEVICE, delegate=DELEGATE)
            blocks = block_training_table(train, device=DEVICE, delegate=DELEGATE)
            truth = {}
            for n in names[a.train:]:
                r = test.runs_df(device=DEVICE, model=n, spec_key=spec.key())
                if len(r):
                    truth[n] = float(r["mean_ms"].median())
        kernel = LatencyPredictor(runtime=DELEGATE).fit(**tables)
        variants = {
            "blocks": BlockLatencyPredictor(runtime=DELEGATE),
            "blocks_refit_overhead": BlockLatencyPredictor(runtime=DELEGATE, block_overhead="refit"),
            "lookup_only": BlockLatencyPredictor(runtime=DELEGATE, use_regressor=False),
        }
        for v in variants.values():
            v.fit(tables["ops"], tables["networks"], blocks)
        timing["fit_s"] = time.time() - t

        test_names = [n for n in names[a.train:] if n in truth]
        test_paths = [paths[names.index(n)] for n in test_names]
        ops, bl = blocks_of_files(test_paths, test_names)
        y = [truth[n] for n in test_names]
        dk = kernel.predict_ops(ops).reindex(test_names)
        p_kernel = dk["pred_ms"].to_numpy()
        res: Dict[str, Any] = {"kernel_sum": {**metrics.summary(y, p_kernel),
                                              "interval90_coverage_pct": _coverage_pct(y, dk)}}
        preds = {}
        for name, v in variants.items():
            d = v.predict_tables(ops, bl).reindex(test_names)
            preds[name] = d
            res[name if name == "blocks" else f"variant_{name}"] = {
                **metrics.summary(y, d["pred_ms"].to_numpy()), "interval90_coverage_pct": _coverage_pct(y, d)}
        d = preds["blocks"]
        by_source = {s: int(d[f"n_{s}"].sum()) for s in ("lookup", "regressor", "kernel_sum")}
        total = sum(by_source.values())
        train_blocks = blocks[blocks["latency_ms"].notna()]
        res.update({
            "test_blocks_by_source": by_source,
            "lookup_share_pct": 100.0 * by_source["lookup"] / total if total else None,
            "training": {"networks": int(tables["networks"].shape[0]),
                         "blocks_timed": int(len(train_blocks)),
                         "distinct_block_keys": int(train_blocks["block_key"].nunique()),
                         "block_kinds_with_regressor": variants["blocks"].block_kinds_,
                         "refit_overhead_params": [float(x) for x in
                                                   variants["blocks_refit_overhead"].overhead_params_],
                         "refit_overhead_oof_mape_pct": variants["blocks_refit_overhead"].oof_mape_pct_,
                         "kernel_overhead": kernel.model_.overhead_mode_},
            "networks": [{"model": n, "measured_ms": truth[n], "kernel_sum_pred_ms": float(pk),
                          "blocks_pred_ms": float(d.loc[n, "pred_ms"]),
                          "n_lookup": int(d.loc[n, "n_lookup"]), "n_blocks": int(d.loc[n, "n_blocks"])}
                         for n, pk in zip(test_names, p_kernel)],
            "failed": failed,
            "settings": {"train": a.train, "test": a.test, "seed": a.seed, "cpu_mask": mask, "nice": nice,
                         "min_secs": a.min_secs, "threads": 1, "delegate": DELEGATE,
                         "loadavg_before": load_before, "loadavg_after": load_after},
        })
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    timing["total_s"] = time.time() - t0
    res["timing_s"] = timing
    print(json.dumps(res, indent=None, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
