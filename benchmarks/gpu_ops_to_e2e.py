"""Per-op GPU regressors -> whole-network GPU latency, on the li2024 data.

For every device found in the data: 5-fold cross-validation grouped by network (fixed
seed). In each fold, everything (kernel-type selectors such as Winograd, per-kernel
regressors, the overhead stage) is fitted on the training networks' ops and end-to-end
latencies only; the test networks contribute only their op structure.

Prints one JSON object:
{"devices": {"<name>": {"mape_pct", "acc10_pct", "acc5_pct", "n_networks"}}, "naive": {...},
 "full_detail": {...}, "seconds": ...} (+ "ablation" with --ablation). ``full_detail`` also has
``interval90_coverage_pct``: the share of test networks inside the model's 90% interval.
"""
from __future__ import annotations

import argparse
import json
import os

# Many small per-type models: threads only add contention on a shared 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import sys
import time
from typing import Dict, Optional

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from host.modeler import data_li2024  # noqa: E402
from host.modeler.kernels import KernelGrouper, load_rules  # noqa: E402
from host.modeler.li2024_cv import SEED, cv_frame, network_folds  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402
from host.modeler.regressors import FALLBACK_FEATURES, KernelLatencyRegressor, NetworkLatencyModel  # noqa: E402

# name -> (kernel typing, overhead mode, kernel features, stack_cv)
#   typing: "none" (one model for all ops), "op" (per TFLite op type), "rules" (gpu.yaml
#   kernel types with learnt selectors), "rules_nosel" (gpu.yaml without selectors)
CONFIGS = {
    "naive": ("none", "scale", "fallback", 5),
    "naive_typing_auto_overhead": ("none", "auto", "fallback", 5),
    "per_op_type_auto_overhead": ("op", "auto", "default", 5),
    "rules_noselector_auto_overhead": ("rules_nosel", "auto", "default", 5),
    "rules_scale_overhead": ("rules", "scale", "default", 5),
    "rules_dispatch_overhead": ("rules", "dispatch", "default", 5),
    "rules_linear_overhead": ("rules", "linear", "default", 5),
    "full_insample_overhead_fit": ("rules", "auto", "default", 0),
    "full": ("rules", "auto", "default", 5),
}


def _kernels(typing: str, rules, ops_tr, names_tr, ops_all) -> pd.DataFrame:
    if typing in ("rules", "rules_nosel"):
        r = dict(rules)
        if typing == "rules_nosel":
            r = {**rules, "selectors": {}}
            r["kernel_types"] = [k for k in rules["kernel_types"] if not k.get("selector")]
        g = KernelGrouper(rules=r).fit(ops_tr, names_tr if typing == "rules" else None)
        return g.transform(ops_all)
    k = KernelGrouper(rules={**rules, "kernel_types": [], "selectors": {}}).fit(ops_tr).transform(ops_all)
    k["kernel_type"] = "all" if typing == "none" else k["op_type"].str.lower()
    return k


def run_device(structure: pd.DataFrame, times: pd.DataFrame, e2e: pd.Series, configs, rules,
               predictions: Optional[Dict[str, pd.Series]] = None) -> Dict:
    """Metrics per config name over the folds of ``li2024_cv.network_folds``; a dict passed
    as ``predictions`` is filled with each config's out-of-fold predictions (ms per network)."""
    nets, ops, y_e2e = cv_frame(structure, times, e2e)
    preds = {name: pd.Series(np.nan, index=nets) for name in configs}
    inside = {name: pd.Series(np.nan, index=nets) for name in configs}
    ksum = {name: pd.Series(np.nan, index=nets) for name in configs}
    modes = {name: [] for name in configs}
    measured_sum = ops.groupby("network")["latency_ms"].sum(min_count=1)
    for tr_idx, te_idx in network_folds(nets):
        tr_nets, te_nets = set(nets[tr_idx]), set(nets[te_idx])
        tr = ops["network"].isin(tr_nets).to_numpy()
        te = ops["network"].isin(te_nets).to_numpy()
        ops_tr = ops[tr]
        # Kernel names and times of test networks are never passed to any fit.
        cache: Dict[str, pd.DataFrame] = {}
        for name, (typing, overhead, feats, stack_cv) in configs.items():
            if typing not in cache:
                cache[typing] = _kernels(typing, rules, ops_tr, ops_tr["kernel_name"].to_numpy(), ops)
            k_all = cache[typing]
            k_tr = k_all[tr]
            k_te = k_all[te]
            km = KernelLatencyRegressor(random_state=SEED, interval_cv=0,
                                        features=FALLBACK_FEATURES if feats == "fallback" else None)
            model = NetworkLatencyModel(kernel_model=km, overhead=overhead, stack_cv=stack_cv,
                                        random_state=SEED)
            model.fit(k_tr, k_tr["latency_ms"].to_numpy(), y_e2e.loc[sorted(tr_nets)])
            d = model.predict_detail(k_te)
            preds[name].loc[d.index] = d["pred_ms"].to_numpy()
            truth = y_e2e.loc[d.index].to_numpy()
            inside[name].loc[d.index] = ((truth >= d["lo_ms"].to_numpy()) & (truth <= d["hi_ms"].to_numpy())) * 1.0
            ksum[name].loc[d.index] = d["kernel_sum_ms"].to_numpy()
            modes[name].append(model.overhead_mode_)
    if predictions is not None:
        predictions.update(preds)
    out = {}
    for name, p in preds.items():
        s = summary(y_e2e.to_numpy(), p.loc[nets].to_numpy())
        out[name] = {"mape_pct": round(s["mape_pct"], 2), "acc10_pct": round(s["acc10_pct"], 1),
                     "acc5_pct": round(s["acc5_pct"], 1), "n_networks": int(s["n"]),
                     "overhead_modes": sorted(set(modes[name])),
                     "interval90_coverage_pct": round(float(inside[name].loc[nets].mean()) * 100, 1)}
        ok = measured_sum.reindex(nets).notna().to_numpy()
        if ok.any():  # how well the predicted kernel sum matches the measured per-op sum
            ks = summary(measured_sum.reindex(nets)[ok].to_numpy(), ksum[name].to_numpy()[ok])
            out[name]["opsum_mape_pct"] = round(ks["mape_pct"], 2)
    return out


def load_tables(data_dir: str):
    """``data_li2024.gpu_tables(data_dir)``, or None after printing why it failed."""
    from opcost.errors import OpcostError

    try:
        return data_li2024.gpu_tables(data_dir)
    except OpcostError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(HERE), "data", "li2024"),
                    help="directory holding the li2024 CSV files (searched recursively)")
    ap.add_argument("--json", action="store_true", help="print the JSON result (always on)")
    ap.add_argument("--ablation", action="store_true",
                    help="also run the ablation configurations (slower, ~5x)")
    args = ap.parse_args(argv)
    t0 = time.time()
    tables = load_tables(args.data)
    if tables is None:
        return 2
    structure, times_all, e2e = tables["structure"], tables["times"], tables["e2e"]
    rules = load_rules("gpu")
    configs = CONFIGS if args.ablation else {k: CONFIGS[k] for k in ("naive", "full")}
    result = {"devices": {}, "naive": {}, "ablation": {}, "full_detail": {}}
    for device in sorted(set(times_all["device"]) & set(e2e["device"])):
        times = times_all[times_all["device"] == device][["network", "op_index", "latency_ms", "kernel_name"]]
        e = e2e[e2e["device"] == device].set_index("network")["latency_ms"]
        res = run_device(structure, times, e, configs, rules)
        result["devices"][device] = {k: res["full"][k] for k in ("mape_pct", "acc10_pct", "acc5_pct",
                                                                  "n_networks")}
        result["naive"][device] = res["naive"]
        result["full_detail"][device] = res["full"]
        if args.ablation:
            result["ablation"][device] = res
    if not args.ablation:
        del result["ablation"]
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
