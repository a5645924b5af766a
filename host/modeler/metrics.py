"""Accuracy metrics used by `opcost evaluate` and the benchmarks (all on latencies > 0)."""
from __future__ import annotations

from typing import Dict

import numpy as np


def _arrays(y_true, y_pred):
    t = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no values to score")
    return t, p


def mape_pct(y_true, y_pred) -> float:
    """Mean absolute percentage error, in percent."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / t) * 100.0)


def rmspe_pct(y_true, y_pred) -> float:
    """Root mean squared percentage error, in percent."""
    t, p = _arrays(y_true, y_pred)
    return float(np.sqrt(np.mean(((p - t) / t) ** 2)) * 100.0)


def within_pct(y_true, y_pred, bound_pct: float) -> float:
    """Share of predictions within +-bound_pct of the truth, in percent."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(np.abs(p - t) / t <= bound_pct / 100.0) * 100.0)


def r2(y_true, y_pred) -> float:
    t, p = _arrays(y_true, y_pred)
    ss_res = float(np.sum((t - p) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def spearman(y_true, y_pred) -> float:
    from scipy.stats import spearmanr

    t, p = _arrays(y_true, y_pred)
    return float(spearmanr(t, p).statistic) if t.size > 1 else float("nan")


def summary(y_true, y_pred) -> Dict[str, float]:
    """All metrics at once: mape_pct, rmspe_pct, acc5_pct, acc10_pct, r2, spearman, n."""
    t, p = _arrays(y_true, y_pred)
    return {
        "n": int(t.size),
        "mape_pct": mape_pct(t, p),
        "rmspe_pct": rmspe_pct(t, p),
        "acc5_pct": within_pct(t, p, 5.0),
        "acc10_pct": within_pct(t, p, 10.0),
        "r2": r2(t, p),
        "spearman": spearman(t, p),
    }
