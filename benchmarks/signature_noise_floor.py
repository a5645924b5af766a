"""How well can any signature model do on the ganesan2020 data? Two reference points.

1. ``same_phone_model``: device files of the same phone model (``GM1901_0`` vs ``GM1901_1``,
   same hardware, another session) predict each other after one scale factor per pair
   (median log ratio). This is a repeatability floor: a new phone cannot be predicted
   better than a second session of the same phone predicts it, unless the model also
   predicts the session's own disturbances.
2. ``oracle_rank_r``: same split as ``signature_set.py`` (30% of phone models held out,
   seeds 0..reps-1); the low-rank factors are fitted on the training phones, and each
   held-out file's coefficients are fitted on ALL its networks (not just k signature
   networks). Scored on the same pairs a k-network signature would leave (pqr signature).
   An upper bound for models of that rank that see only k of the networks.
3. ``session_drift``: is what even the oracle misses tied to the network or to *when* it was
   measured? Each device file gets a rank-5 oracle fitted without its phone model (all its
   networks seen). Its residuals on the 100 random networks (independent samples from one
   space, so their row order carries no network structure) are compared with the
   residuals of their row neighbours (the app measured the networks in row order; the
   dataset has no timestamps). ``share_explained_by_row_neighbours``: 1 - MSE(residual -
   median of the 3+3 neighbours' residuals) / MSE(residual), per file, against the same
   for randomly shuffled rows (``..._shuffled``). A drift shared by neighbouring
   measurements is a state of the session (heat, a core migration, a background task): a
   new phone's 10 signature latencies, measured in another session, cannot predict it.
   ``oracle_plus_row_neighbours``: the oracle corrected by that neighbour median (it sees
   the held-out file's other measurements; a bound, not a method).

Metrics as in signature_set.py (ms, pooled per repetition, mean over repetitions).

    python benchmarks/signature_noise_floor.py [--data DIR] [--k 10] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from host.modeler import data_ganesan2020 as g20  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402
from host.modeler.signature import _LowRank, select_signature  # noqa: E402
from signature_set import split  # noqa: E402


def same_phone_model_agreement(latency_ms: np.ndarray, phone_models) -> dict:
    """Pairs of files of one phone model: one predicts the other up to a scale factor."""
    log_lat = np.log(latency_ms)
    rows = defaultdict(list)
    for i, pm in enumerate(phone_models):
        rows[pm].append(i)
    true, pred, pairs = [], [], []
    for pm, idx in rows.items():
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                shift = float(np.median(log_lat[i] - log_lat[j]))
                true.append(latency_ms[j])
                pred.append(np.exp(log_lat[i] - shift))
                err = np.abs(np.exp(log_lat[i] - shift) / latency_ms[j] - 1)
                pairs.append((float(np.mean(err) * 100), pm))
    if not pairs:
        return {"n_pairs": 0}
    s = summary(np.concatenate(true), np.concatenate(pred))
    per_pair = sorted(p[0] for p in pairs)
    return {"n_pairs": len(pairs), "n_phone_models": sum(1 for v in rows.values() if len(v) > 1),
            "mape_pct": s["mape_pct"], "acc10_pct": s["acc10_pct"], "r2": s["r2"],
            "pair_mape_pct_median": float(np.median(per_pair)),
            "pairs_with_mape_over_5pct": int(sum(p > 5 for p in per_pair))}


def oracle(latency_ms: np.ndarray, phone_models, k: int, ranks, reps: int) -> dict:
    log_lat = np.log(latency_ms)
    groups = np.asarray(phone_models)
    n_net = log_lat.shape[1]
    out = {r: [] for r in ranks}
    for seed in range(reps):
        test = split(groups, seed)
        sig = select_signature(latency_ms[~test], k, "pqr", seed=seed, groups=groups[~test])
        keep = np.ones(n_net, bool)
        keep[sig] = False
        for r in ranks:
            lr = _LowRank.fit(log_lat[~test], r, robust=True)
            pred = np.exp(lr.predict_log(list(range(n_net)), log_lat[test], robust=True))
            out[r].append(summary(latency_ms[test][:, keep], pred[:, keep]))
    return {f"oracle_rank_{r}": {m: float(np.mean([row[m] for row in rows])) for m in ("r2", "mape_pct", "acc10_pct")}
            for r, rows in out.items()}


def _neighbour_median(res: np.ndarray, half_width: int = 3) -> np.ndarray:
    n = len(res)
    return np.array([np.median(np.r_[res[max(0, j - half_width):j], res[j + 1:j + 1 + half_width]])
                     for j in range(n)])


def _share_explained(res: np.ndarray) -> float:
    return float(1.0 - np.mean((res - _neighbour_median(res)) ** 2) / np.mean(res ** 2))


def session_drift(latency_ms: np.ndarray, phone_models, rank: int = 5, n_shuffles: int = 20,
                  worst_fraction: float = 0.2, seed: int = 0) -> dict:
    """How much of the oracle's residual neighbouring measurements share (see module doc)."""
    log_lat = np.log(latency_ms)
    groups = np.asarray(phone_models)
    n_net = log_lat.shape[1]
    res = np.zeros_like(log_lat)
    for g in np.unique(groups):
        te = groups == g
        lr = _LowRank.fit(log_lat[~te], rank, robust=True)
        res[te] = log_lat[te] - lr.predict_log(list(range(n_net)), log_lat[te], robust=True)
    rand = res[:, :g20.N_RANDOM_NETWORKS]
    rng = np.random.default_rng(seed)
    share = np.array([_share_explained(r) for r in rand])
    shuffled = np.array([np.mean([_share_explained(rng.permutation(r)) for _ in range(n_shuffles)]) for r in rand])
    lag1 = np.array([np.corrcoef(r[:-1], r[1:])[0, 1] for r in rand])
    rms = np.sqrt(np.mean(rand ** 2, axis=1))
    worst = np.argsort(-rms)[:max(1, int(round(worst_fraction * len(rms))))]
    rest = np.setdiff1d(np.arange(len(rms)), worst)
    corrected = res - np.array([_neighbour_median(r) for r in res])
    err, err_c = np.abs(np.expm1(-res)), np.abs(np.expm1(-corrected))
    return {
        "rank": rank, "networks": f"the {g20.N_RANDOM_NETWORKS} random networks in row order",
        "lag1_autocorrelation_median": float(np.median(lag1)),
        "share_explained_by_row_neighbours": {
            f"worst_{int(worst_fraction * 100)}pct_files": float(np.median(share[worst])),
            "other_files": float(np.median(share[rest])),
            f"worst_{int(worst_fraction * 100)}pct_files_shuffled": float(np.median(shuffled[worst])),
            "other_files_shuffled": float(np.median(shuffled[rest])),
        },
        "worst_files": [str(i) for i in worst],
        "oracle_leave_phone_model_out": {"mape_pct": float(err.mean() * 100), "acc10_pct": float((err <= 0.1).mean() * 100)},
        "oracle_plus_row_neighbours": {"mape_pct": float(err_c.mean() * 100),
                                       "acc10_pct": float((err_c <= 0.1).mean() * 100)},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=g20.default_data_dir(), help="folder holding the dataset (searched recursively)")
    ap.add_argument("--k", type=int, default=10, help="signature size whose scored pairs the oracle uses")
    ap.add_argument("--reps", type=int, default=10, help="repetitions (seeds 0..reps-1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (default output anyway)")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        data = g20.load(args.data, skip_bad_files=True)
    except g20.DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res = {"same_phone_model": same_phone_model_agreement(data.latency_ms, data.phone_models)}
    res.update(oracle(data.latency_ms, data.phone_models, args.k, (5, 10), args.reps))
    drift = session_drift(data.latency_ms, data.phone_models)
    drift["worst_files"] = [data.devices[int(i)] for i in drift["worst_files"]]
    res["session_drift"] = drift
    res.update({"k": args.k, "reps": args.reps, "statistic": data.statistic,
                "n_device_runs": len(data.devices), "skipped_files": data.skipped_files,
                "elapsed_s": round(time.time() - t0, 1)})
    print(json.dumps(res, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
