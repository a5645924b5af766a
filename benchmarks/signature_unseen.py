"""Networks no training device measured, on phones known only by their signature.

The use case: a NAS candidate or a user's new model, predicted on a phone characterised
by its 10 signature latencies. On the ganesan2020 data:

- phones: as ``signature_set.py`` (30% of phone models held out, seeds 0-9; the signature
  is chosen by ``pqr`` on the training phones; a held-out phone contributes only its k
  signature latencies);
- networks: the non-signature networks are split into 5 folds (shuffled by the seed);
  each fold in turn is removed from the training matrix entirely and predicted from its
  structure alone (the per-layer table in onnxEmbeddings.csv).

Metrics pooled over held-out (phone run x unseen network) pairs within a repetition, then
averaged over repetitions; also split into the 100 random MobileNetV2-style networks (the
NAS use case) and the 18 public networks (structurally unlike most of the training set).

Methods: ``structure`` (ours, :mod:`host.modeler.signature_structure`), ``gbm_paper``
(one gradient-boosted model over network features + signature latencies, as in the
paper) and ``flops_scaling`` (latency proportional to FLOPs^b, the phone's level from its
signature).

    python benchmarks/signature_unseen.py [--data DIR] [--k 10] [--reps 10] [--json]
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host.modeler import data_ganesan2020 as g20  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402
from host.modeler.signature import SignatureGBMModel, SignatureLatencyModel, select_signature  # noqa: E402
from signature_set import parse_and_run, split  # noqa: E402

N_NETWORK_FOLDS = 5
METHODS = ("structure", "gbm_paper", "flops_scaling")


def _flops_scaling(y_train, sig, flops_train, flops_test, sig_ms):
    """log latency = device level + b log FLOPs; b from the training devices, the level
    from the signature."""
    lf = np.log(flops_train)
    ly = np.log(y_train)
    lc = lf - lf.mean()
    b = float(np.sum((ly - ly.mean(axis=1, keepdims=True)) * lc) / (len(ly) * np.sum(lc ** 2)))
    level = (np.log(sig_ms) - b * lf[sig]).mean(axis=1, keepdims=True)
    return np.exp(level + b * np.log(flops_test)[None, :])


def _predict_fold(method, data, train, test, sig, te_nets, bounds=None):
    """Predictions (held-out phones x ``te_nets``); for ``structure``, its 90% interval
    is written into ``bounds[:, te_nets]`` when given."""
    y = data.latency_ms
    keep = np.array([j for j in range(y.shape[1]) if j not in set(te_nets.tolist())])
    sig_local = [int(np.flatnonzero(keep == s)[0]) for s in sig]
    feats = data.network_features
    sig_ms = y[test][:, sig]
    if method == "structure":
        model = SignatureLatencyModel(rank="auto", n_neighbors=0, robust=True).fit(
            y[train][:, keep], sig_local, groups=np.array(data.phone_models)[train],
            network_features=feats[keep], feature_names=data.feature_names)
        if bounds is not None:
            bounds[:, te_nets] = model.predict_structure_interval(sig_ms, feats[te_nets])
        return model.predict_structure(sig_ms, feats[te_nets])
    if method == "gbm_paper":
        model = SignatureGBMModel().fit(y[train][:, keep], sig_local, feats[keep])
        return model.predict(sig_ms, feats[te_nets])
    if method == "flops_scaling":
        f = feats[:, data.feature_names.index("mflops_total")]
        return _flops_scaling(y[train][:, keep], sig_local, f[keep], f[te_nets], sig_ms)
    raise ValueError(method)


def _metrics(y_true, y_pred) -> dict:
    ok = np.isfinite(y_pred)
    s = summary(y_true[ok], y_pred[ok])
    return {m: s[m] for m in ("r2", "mape_pct", "acc10_pct", "acc5_pct")}


def run(data_dir: str, k: int, reps: int, methods) -> dict:
    data = g20.load(data_dir, skip_bad_files=True)
    y = data.latency_ms
    groups = np.array(data.phone_models)
    n_random = g20.N_RANDOM_NETWORKS
    parts = {"all": slice(0, y.shape[1]), "random": slice(0, n_random), "public": slice(n_random, y.shape[1])}
    per_rep = {m: {p: [] for p in parts} for m in methods}
    coverage = {p: [] for p in parts}
    width = []
    for seed in range(reps):
        test = split(groups, seed)
        train = ~test
        sig = select_signature(y[train], k, "pqr", seed=seed, groups=groups[train])
        others = np.array([j for j in range(y.shape[1]) if j not in set(sig)])
        order = np.random.default_rng(seed).permutation(len(others))
        folds = [np.sort(f) for f in np.array_split(others[order], N_NETWORK_FOLDS)]
        for method in methods:
            pred = np.full((int(test.sum()), y.shape[1]), np.nan)
            bounds = np.full(pred.shape + (2,), np.nan) if method == "structure" else None
            for te_nets in folds:
                pred[:, te_nets] = _predict_fold(method, data, train, test, sig, te_nets, bounds)
            for part, sl in parts.items():
                per_rep[method][part].append(_metrics(y[test][:, sl], pred[:, sl]))
            if bounds is not None:
                ok = np.isfinite(pred)
                inside = (y[test] >= bounds[..., 0]) & (y[test] <= bounds[..., 1])
                for part, sl in parts.items():
                    coverage[part].append(float(inside[:, sl][ok[:, sl]].mean()))
                width.append(float(np.median(((bounds[..., 1] - bounds[..., 0]) / pred)[ok])))
    out = {}
    for method, by_part in per_rep.items():
        out[method] = {part: {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
                       for part, rows in by_part.items()}
        out[method]["all"]["mape_pct_per_rep"] = [round(r["mape_pct"], 3) for r in by_part["all"]]
        if method == "structure" and width:
            out[method]["interval"] = {**{f"coverage_{p}_pct": float(np.mean(c) * 100) for p, c in coverage.items()},
                                       "median_width_pct": float(np.mean(width) * 100),
                                       "nominal_pct": 90.0}
    return {"data": data, "methods": out}


def main(argv=None) -> int:
    t0 = time.time()
    args, res = parse_and_run(argv, __doc__, list(METHODS), run)
    if args is None:
        return res
    best = min(res["methods"], key=lambda m: res["methods"][m]["all"]["mape_pct"])
    print(json.dumps({
        "benchmark": "signature_unseen",
        "data": res["data"].summary(),
        "protocol": {"k": args.k, "reps": args.reps, "holdout_phone_model_fraction": 0.3,
                     "network_folds": N_NETWORK_FOLDS, "selection": "pqr",
                     "unseen": "each fold of non-signature networks removed from training and predicted "
                               "from its structure (onnxEmbeddings.csv)"},
        "methods": res["methods"],
        "best": best,
        "seconds": round(time.time() - t0, 1),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
