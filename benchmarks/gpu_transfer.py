"""Kernel-level predictor transfer to a new phone from few measurements (li2024 GPU).

For each target device of the li2024 GPU per-op data, the sources are the other devices
(a ``LatencyPredictor`` fitted on all of each one's networks). The target contributes n
networks (n in 5, 10, 20): their per-op times and end-to-end latencies; which ones is a
uniform random choice without replacement among its 102 networks
(``host.modeler.transfer.choose_networks``: ``numpy.random.default_rng(seed)``, seeds
0-9). Every method predicts the end-to-end GPU latency of all the target's OTHER
networks (their op structure only). Hyperparameters are fixed a priori or chosen by
cross-validation on the target's n networks only (overhead form, ridge alpha); nothing
sees the test networks.

"reference": ``benchmarks/gpu_ops_to_e2e.py``'s full configuration on the target alone,
5-fold over all its networks (~82 training networks per fold).
"profiling_cost": what the target had to measure, in LitePred's unit (target networks,
and their ops / kernels); li2024 does not record how many runs each measurement took, so
profiling time is not derivable (the sum of one inference of each chosen network is
given).

Prints one JSON object: {"selection", "hyperparameters", "methods", "results":
{device: {n: {method: {mape_pct, mape_pct_std, acc10_pct, acc5_pct, n_test_networks,
n_seeds}}}}, "mean_over_devices", "reference", "profiling_cost", "seconds"}.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import sys
import time
import warnings
from typing import Dict, List

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from host.modeler import data_li2024  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402
from host.modeler.predictor import LatencyPredictor  # noqa: E402
from host.modeler.transfer import SOURCE_COL, TransferLatencyPredictor, choose_networks  # noqa: E402

NS = (5, 10, 20)
SEEDS = tuple(range(10))
METHODS: Dict[str, dict] = {
    "source": {"method": "source"},
    "overhead_only": {"method": "overhead_only"},
    "scratch": {"method": "scratch"},
    "ratio": {"method": "ratio"},
    "stack": {"method": "stack"},
    "pooled": {"method": "pooled"},
}
ABLATION: Dict[str, dict] = {
    "ratio_count_weights": {"method": "ratio", "weighting": "count"},
    "ratio_mean_of_sources": {"method": "ratio", "combine": "mean"},
    "ratio_shrinkage_2": {"method": "ratio", "shrinkage": 2.0},
    "ratio_shrinkage_50": {"method": "ratio", "shrinkage": 50.0},
    "ratio_global_only": {"method": "ratio", "shrinkage": 1e9},
    "ratio_overhead_scale": {"method": "ratio", "overhead": "scale"},
    "stack_count_weights": {"method": "stack", "weighting": "count"},
    "stack_more_features": {"method": "stack", "stack_features": [
        "log_flops", "log_bytes_in", "log_bytes_out", "log_weights_bytes", "log_px_out", "c_in_slices",
        "c_out_slices", "kernel", "stride", "arith_intensity"]},
}


def reference(tables) -> Dict[str, dict]:
    """gpu_ops_to_e2e.py's full configuration, 5-fold on each device alone."""
    import gpu_ops_to_e2e as g
    from host.modeler.kernels import load_rules

    rules = load_rules("gpu")
    out = {}
    for device in sorted(set(tables["e2e"]["device"])):
        times = tables["times"][tables["times"]["device"] == device].drop(columns="device")
        e = tables["e2e"][tables["e2e"]["device"] == device].set_index("network")["latency_ms"]
        res = g.run_device(tables["structure"], times, e, {"full": g.CONFIGS["full"]}, rules)["full"]
        out[device] = {k: res[k] for k in ("mape_pct", "acc10_pct", "acc5_pct", "n_networks")}
    return out


def run(tables, methods: Dict[str, dict], ns=NS, seeds=SEEDS, devices=None) -> Dict:
    all_devices = sorted(set(tables["e2e"]["device"]) & set(tables["times"]["device"]))
    dt = {d: data_li2024.gpu_device_tables(tables, d) for d in all_devices}
    t0 = time.time()
    fitted = {d: LatencyPredictor(runtime="gpu", random_state=0).fit(**dt[d]) for d in all_devices}
    source_fit_s = time.time() - t0
    results: Dict[str, Dict] = {}
    cost: Dict[str, Dict] = {}
    timing: Dict[str, float] = {m: 0.0 for m in methods}
    for target in devices or all_devices:
        sources = [d for d in all_devices if d != target]
        sops = pd.concat([dt[d]["ops"].assign(**{SOURCE_COL: d}) for d in sources], ignore_index=True)
        snets = pd.concat([dt[d]["networks"].assign(**{SOURCE_COL: d}) for d in sources], ignore_index=True)
        T = dt[target]
        truth = T["networks"].set_index("network")["latency_ms"]
        nets = sorted(truth.index)
        results[target] = {}
        cost[target] = {"sources": sources}
        for n in ns:
            per: Dict[str, List[dict]] = {m: [] for m in methods}
            c = {"networks": n, "ops": [], "kernels": [], "sum_e2e_ms": []}
            for seed in seeds:
                train = choose_networks(nets, n, seed)
                held = sorted(set(nets) - set(train))
                tr_ops = T["ops"][T["ops"]["network"].isin(train)]
                tr_nets = T["networks"][T["networks"]["network"].isin(train)]
                te_ops = T["ops"][T["ops"]["network"].isin(held)]
                c["ops"].append(int(np.isfinite(tr_ops["latency_ms"].to_numpy(float)).sum()))
                c["sum_e2e_ms"].append(float(tr_nets["latency_ms"].sum()))
                for name, params in methods.items():
                    t = time.time()
                    est = TransferLatencyPredictor(runtime="gpu", **params).fit(
                        tr_ops, tr_nets, source_ops=sops, source_networks=snets,
                        prefit_sources={d: fitted[d] for d in sources})
                    p = est.predict_ops(te_ops)["pred_ms"]
                    timing[name] += time.time() - t
                    per[name].append(summary(truth.loc[p.index].to_numpy(), p.to_numpy()))
                    if name == "ratio":
                        c["kernels"].append(est.n_kernels_measured_)
            results[target][str(n)] = {
                name: {"mape_pct": round(float(np.mean([s["mape_pct"] for s in r])), 2),
                       "mape_pct_std": round(float(np.std([s["mape_pct"] for s in r])), 2),
                       "acc10_pct": round(float(np.mean([s["acc10_pct"] for s in r])), 1),
                       "acc5_pct": round(float(np.mean([s["acc5_pct"] for s in r])), 1),
                       "n_test_networks": int(r[0]["n"]), "n_seeds": len(r)}
                for name, r in per.items()}
            cost[target][str(n)] = {"target_networks": n, "target_ops_mean": round(float(np.mean(c["ops"])), 1),
                                    "target_kernels_mean": round(float(np.mean(c["kernels"])), 1)
                                    if c["kernels"] else None,
                                    "sum_one_inference_ms_mean": round(float(np.mean(c["sum_e2e_ms"])), 1)}
    mean = {str(n): {m: {k: round(float(np.mean([results[d][str(n)][m][k] for d in results])), 2)
                         for k in ("mape_pct", "acc10_pct", "acc5_pct")} for m in methods} for n in ns}
    return {"results": results, "mean_over_devices": mean, "profiling_cost": cost,
            "fit_seconds": {"sources_all_devices": round(source_fit_s, 1),
                            **{m: round(v, 1) for m, v in timing.items()}}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=data_li2024_default(), help="directory holding the li2024 CSV files")
    ap.add_argument("--json", action="store_true", help="print the JSON result (always on)")
    ap.add_argument("--ablation", action="store_true", help="also run variants of ratio / stack")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0..N-1)")
    ap.add_argument("--no-reference", action="store_true", help="skip the 5-fold full-data reference")
    args = ap.parse_args(argv)
    t0 = time.time()
    from gpu_ops_to_e2e import load_tables

    tables = load_tables(args.data)
    if tables is None:
        return 2
    methods = {**METHODS, **(ABLATION if args.ablation else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import logging

        logging.getLogger("opcost").setLevel(logging.ERROR)
        out = run(tables, methods, seeds=tuple(range(args.seeds)))
        ref = {} if args.no_reference else reference(tables)
    result = {
        "selection": "per target device and seed: n networks drawn uniformly without replacement from its "
                     "networks (numpy default_rng(seed) over sorted names); test = all its other networks",
        "hyperparameters": "fixed a priori (ratio shrinkage 10 kernels, time weighting, inverse-variance "
                           "combination of sources; pooled target weight 5; stack features log flops/bytes); "
                           "chosen by CV on the target's n networks only: overhead form (OverheadRegressor "
                           "auto), stack ridge alpha (LOO over kernels). The library default method (stack) was "
                           "picked after a 3-seed run of this benchmark: not a blind choice",
        "methods": methods,
        **out,
        "reference": {"what": "gpu_ops_to_e2e.py full config, 5-fold on the target's networks alone",
                      "devices": ref},
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


def data_li2024_default() -> str:
    from host.modeler.importers import default_data_dir

    return default_data_dir("li2024")


if __name__ == "__main__":
    sys.exit(main())
