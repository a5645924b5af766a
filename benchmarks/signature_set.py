"""Cross-device prediction from a signature set on the ganesan2020 phone data.

Protocol: 30% of the distinct phone models are held out (every file/run of a held-out
phone model), 10 repetitions with seeds 0-9. The signature is chosen on the training
phones only; a held-out phone contributes only its k signature latencies; we predict
all its other networks (methods ``...+spread`` also get the relative spread, std / mean, of the
signature measurements' runs 2..30, as benchmark_model reports it). Ground truth per (device run, network): the median of runs
2..30 (run 1 is a cold run, the app had no warm-up). Metrics on ms over all held-out
(device run x non-signature network) pairs pooled within a repetition, then averaged
over repetitions: R^2 = 1 - SS_res/SS_tot on ms, MAPE, share within +-10%.

    python benchmarks/signature_set.py [--data DIR] [--k 10] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from host.modeler import data_ganesan2020 as g20  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402
from host.modeler.signature import SignatureGBMModel, SignatureLatencyModel, select_signature  # noqa: E402

HOLDOUT_FRACTION = 0.3

# name -> (selection method, model factory); hyperparameters fixed here or by inner CV
METHODS = {
    "random+lowrank": ("random", lambda: SignatureLatencyModel(rank=5, n_neighbors=0, robust=False)),
    "mis+lowrank": ("mis", lambda: SignatureLatencyModel(rank=5, n_neighbors=0, robust=False)),
    "sccs+lowrank": ("sccs", lambda: SignatureLatencyModel(rank=5, n_neighbors=0, robust=False)),
    "pqr+lowrank": ("pqr", lambda: SignatureLatencyModel(rank=5, n_neighbors=0, robust=False)),
    "mis+gbm_paper": ("mis", lambda: SignatureGBMModel()),
    "sccs+gbm_paper": ("sccs", lambda: SignatureGBMModel()),
    "pqr+robust_knn": ("pqr", lambda: SignatureLatencyModel(rank="auto", n_neighbors="auto", robust=True)),
    "auto+robust_knn": ("auto", lambda: SignatureLatencyModel(rank="auto", n_neighbors="auto", robust=True)),
    # + each signature value weighted by the spread of its repeated runs (inner CV picks how much)
    "pqr+robust_knn+spread": ("pqr", lambda: SignatureLatencyModel(rank="auto", n_neighbors="auto", robust=True)),
    # + a LightGBM correction from the phone's signature, the network's structure and factors
    "pqr+robust_knn+spread+boost": ("pqr", lambda: SignatureLatencyModel(rank="auto", n_neighbors="auto", robust=True,
                                                                         boost="auto")),
}
USES_RUN_SPREAD = {"pqr+robust_knn+spread", "pqr+robust_knn+spread+boost"}
USES_NETWORK_FEATURES = {"pqr+robust_knn+spread+boost"}


def split(phone_models: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask of held-out device runs: 30% of the distinct phone models."""
    models = np.array(sorted(set(phone_models.tolist())))
    rng = np.random.default_rng(seed)
    n_test = max(1, int(round(HOLDOUT_FRACTION * len(models))))
    test = rng.choice(models, size=n_test, replace=False)
    return np.isin(phone_models, test)


def fit_and_predict(name: str, data, train: np.ndarray, test: np.ndarray, sig) -> tuple:
    """Method ``name`` fitted on the ``train`` device files with signature ``sig``, predicting
    the ``test`` files from their signature -> (model, predictions, test signature spread or None)."""
    y, groups = data.latency_ms, np.array(data.phone_models)
    model = METHODS[name][1]()
    if isinstance(model, SignatureGBMModel):
        model.fit(y[train], sig, data.network_features)
        return model, model.predict(y[test][:, sig], data.network_features), None
    spread = data.run_spread if name in USES_RUN_SPREAD else None
    sig_spread = None if spread is None else spread[test][:, sig]
    feats = ({"network_features": data.network_features, "feature_names": data.feature_names}
             if name in USES_NETWORK_FEATURES else {})
    model.fit(y[train], sig, groups=groups[train], run_spread=None if spread is None else spread[train], **feats)
    return model, model.predict(y[test][:, sig], signature_spread=sig_spread), sig_spread


def run(data_dir: str, k: int, reps: int, methods) -> dict:
    data = g20.load(data_dir, skip_bad_files=True)
    y = data.latency_ms
    groups = np.array(data.phone_models)
    out = {name: [] for name in methods}
    chosen = {name: [] for name in methods}
    checked = {name: {"consistent": [], "flagged": [], "flagged_share": [], "rms": [], "run_mape": []}
               for name in methods}
    intervals = {name: {"all": [], "consistent": [], "flagged": [], "width": [],
                        "net_inside": np.zeros(y.shape[1]), "net_count": np.zeros(y.shape[1])} for name in methods}
    for seed in range(reps):
        test = split(groups, seed)
        train = ~test
        sig_cache = {}
        for name in methods:
            sel = METHODS[name][0]
            if sel not in sig_cache:
                sig_cache[sel] = select_signature(y[train], k, sel, seed=seed, groups=groups[train])
            sig = sig_cache[sel]
            model, pred, sig_spread = fit_and_predict(name, data, train, test, sig)
            if not isinstance(model, SignatureGBMModel):
                chosen[name].append({"rank": model.rank_, "n_neighbors": model.n_neighbors_,
                                     **({"spread_weight": model.spread_weight_} if name in USES_RUN_SPREAD else {}),
                                     **({"boost_shrink": model.boost_.shrink if model.boost_ is not None else 0.0}
                                        if model.boost != "off" else {})})
            keep = np.ones(y.shape[1], bool)
            keep[sig] = False
            out[name].append(summary(y[test][:, keep], pred[:, keep]))
            if not isinstance(model, SignatureGBMModel):
                checks = model.check_signature(y[test][:, sig], signature_spread=sig_spread)
                ok = np.array([c["consistent"] for c in checks])
                checked[name]["flagged_share"].append(float(np.mean(~ok)))
                checked[name]["rms"] += [c["residual_rms"] for c in checks]
                checked[name]["run_mape"] += np.mean(np.abs(pred[:, keep] / y[test][:, keep] - 1), axis=1).tolist()
                iv = model.predict_interval(y[test][:, sig], signature_spread=sig_spread)[:, keep]
                truth = y[test][:, keep]
                inside = (truth >= iv[..., 0]) & (truth <= iv[..., 1])
                intervals[name]["all"].append(float(inside.mean()))
                intervals[name]["width"].append(float(np.median((iv[..., 1] - iv[..., 0]) / pred[:, keep])))
                intervals[name]["net_inside"][keep] += inside.sum(axis=0)
                intervals[name]["net_count"][keep] += len(inside)
                for side, rows in (("consistent", ok), ("flagged", ~ok)):
                    if rows.any():
                        checked[name][side].append(summary(y[test][rows][:, keep], pred[rows][:, keep]))
                        intervals[name][side].append(float(inside[rows].mean()))
    result = {}
    for name, rows in out.items():
        r = {m: float(np.mean([row[m] for row in rows])) for m in ("r2", "mape_pct", "acc10_pct", "acc5_pct")}
        r["mape_pct_per_rep"] = [round(row["mape_pct"], 3) for row in rows]
        if chosen[name]:
            r["inner_cv_choices"] = chosen[name]
        if checked[name]["flagged_share"]:
            c = checked[name]
            from scipy.stats import spearmanr

            r["signature_check"] = {
                "flagged_device_pct": float(np.mean(c["flagged_share"]) * 100),
                "spearman_residual_vs_run_mape": float(spearmanr(c["rms"], c["run_mape"])[0]),
                **{side: {m: float(np.mean([row[m] for row in c[side]])) for m in ("mape_pct", "acc10_pct")}
                   for side in ("consistent", "flagged") if c[side]},
            }
        if intervals[name]["all"]:
            iv = intervals[name]
            seen = iv["net_count"] > 0
            per_net = iv["net_inside"][seen] / iv["net_count"][seen] * 100
            r["interval"] = {"coverage_pct": float(np.mean(iv["all"]) * 100),
                             "median_width_pct": float(np.mean(iv["width"]) * 100),
                             **{f"per_network_coverage_p{q}_pct": float(np.percentile(per_net, q)) for q in (5, 25, 50)},
                             **{f"coverage_{side}_pct": float(np.mean(iv[side]) * 100)
                                for side in ("consistent", "flagged") if iv[side]}}
        result[name] = r
    return {"data": data, "methods": result}


def parse_args(argv, doc: str, all_methods, add_options=None, default_methods=None):
    """The ganesan2020 benchmarks' shared options (plus those ``add_options(parser)``
    adds) -> (args, methods), or (None, None) after printing what is wrong. Also limits
    BLAS to one thread (tiny matrices)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    if add_options is not None:
        add_options(ap)
    ap.add_argument("--data", default=g20.default_data_dir(), help="folder holding the dataset (searched recursively)")
    ap.add_argument("--k", type=int, default=10, help="signature size")
    ap.add_argument("--reps", type=int, default=10, help="repetitions (seeds 0..reps-1)")
    ap.add_argument("--methods", default=",".join(default_methods or all_methods),
                    help="comma-separated subset of: " + ", ".join(all_methods))
    ap.add_argument("--json", action="store_true", help="print one JSON object (default output anyway)")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in all_methods]
    if unknown:
        print(f"error: unknown method(s) {unknown}; choose from {list(all_methods)}", file=sys.stderr)
        return None, None
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)  # tiny matrices: BLAS threads only add contention
    except ImportError:  # pragma: no cover
        pass
    return args, methods


def parse_and_run(argv, doc: str, all_methods, run_fn):
    """:func:`parse_args`, then ``run_fn(data_dir, k, reps, methods)`` -> (args, result),
    or (None, exit code) after printing what is wrong."""
    args, methods = parse_args(argv, doc, all_methods)
    if args is None:
        return None, 2
    try:
        return args, run_fn(args.data, args.k, args.reps, methods)
    except g20.DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return None, 2


def main(argv=None) -> int:
    t0 = time.time()
    args, res = parse_and_run(argv, __doc__, list(METHODS), run)
    if args is None:
        return res
    data = res["data"]
    best = min(res["methods"], key=lambda m: res["methods"][m]["mape_pct"])
    print(json.dumps({
        "methods": res["methods"],
        "best": best,
        "best_by": "lowest mape_pct",
        "k": args.k,
        "reps": args.reps,
        "holdout": f"{int(HOLDOUT_FRACTION * 100)}% of distinct phone models per repetition (seeds 0..{args.reps - 1}); "
                   "all files of a held-out phone model are test devices",
        "ground_truth": f"per (device file, network): {data.statistic} = median of runs 2..30 in ms "
                        "(run 1 is a cold run; no warm-up in the app)",
        "scored_pairs": "held-out device files x networks not in the signature",
        "signature_check": "per method: share of held-out device files whose signature fit residual exceeds "
                           "twice the median training phone's out-of-fold residual (flagged), and the metrics pooled "
                           "over consistent and flagged files separately (repetitions with none skipped); "
                           "Spearman of each held-out run's signature fit residual vs its MAPE, all repetitions",
        "interval": "per method: share of scored pairs inside the model's 90% interval (predict_interval), "
                    "pooled per repetition, mean over repetitions; also over consistent and flagged files; "
                    "median_width_pct: median (hi - lo) / prediction; per_network_coverage_p5/p25/p50_pct: "
                    "percentiles over networks of each network's coverage, its held-out pairs pooled over all "
                    "repetitions in which it is not a signature network",
        "r2": "1 - SS_res/SS_tot on ms, all scored pairs of one repetition pooled, then mean over repetitions",
        "mape_pct": "mean |pred - true| / true * 100, pooled per repetition, mean over repetitions",
        "acc10_pct": "share of pairs with |pred - true| / true <= 10%, pooled per repetition, mean over repetitions",
        "n_device_runs": len(data.devices),
        "skipped_files": data.skipped_files,
        "n_phone_models": len(set(data.phone_models)),
        "n_networks": len(data.networks),
        "elapsed_s": round(time.time() - t0, 1),
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
