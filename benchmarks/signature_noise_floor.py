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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=g20.default_data_dir(), help="folder holding the dataset (searched recursively)")
    ap.add_argument("--k", type=int, default=10, help="signature size whose scored pairs the oracle uses")
    ap.add_argument("--reps", type=int, default=10, help="repetitions (seeds 0..reps-1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (default output anyway)")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        data = g20.load(args.data)
    except g20.DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res = {"same_phone_model": same_phone_model_agreement(data.latency_ms, data.phone_models)}
    res.update(oracle(data.latency_ms, data.phone_models, args.k, (5, 10), args.reps))
    res.update({"k": args.k, "reps": args.reps, "statistic": data.statistic,
                "n_device_runs": len(data.devices), "elapsed_s": round(time.time() - t0, 1)})
    print(json.dumps(res, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
