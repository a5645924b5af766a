"""Kernel-level latency regressors and their sum into whole-network predictions.

``KernelLatencyRegressor``: one sub-model per kernel type (scikit-learn API), a fallback
model for kernel types never seen in training (flagged, never silently zero), and
prediction intervals from held-out residual quantiles.

``NetworkLatencyModel``: sums predicted kernel times per network and learns the
overhead between that sum and the measured end-to-end latency (per device and delegate:
fit one model per pair) on training networks only. The overhead stage is fitted on
out-of-fold kernel predictions (inner cross-validation over training networks), so it
learns how the kernel model errs on networks it has not seen.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from opcost.errors import PredictorError

log = logging.getLogger("opcost.modeler")

DEFAULT_KERNEL_FEATURES = [
    "h_in", "c_in", "h_out", "c_out", "kernel", "stride", "groups", "n_inputs",
    "log_flops", "log_bytes_in", "log_bytes_out", "log_weights_bytes", "arith_intensity",
    "log_px_out", "c_in_slices", "c_out_slices", "c_in_pad_frac", "c_out_pad_frac",
    "c_in_per_group", "n_ops",
]
FALLBACK_FEATURES = ["log_flops", "log_bytes_in", "log_bytes_out", "log_weights_bytes", "n_ops"]
ALL_TYPES = "_all"


def _default_estimator(random_state: Optional[int]) -> BaseEstimator:
    """LightGBM when installed (about 10x faster than sklearn's HGB at equal held-out
    error on li2024 s10 ops, grouped 5-fold over networks), else HistGradientBoosting."""
    try:
        import lightgbm

        return lightgbm.LGBMRegressor(n_estimators=200, learning_rate=0.08, num_leaves=15,
                                      min_child_samples=5, n_jobs=1, verbose=-1,
                                      random_state=random_state)
    except ImportError:
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.1, max_leaf_nodes=15,
                                             min_samples_leaf=5, random_state=random_state)


class KernelLatencyRegressor(RegressorMixin, BaseEstimator):
    """Per-kernel-type latency regressor.

    ``X``: a DataFrame with a ``type_column`` (kernel type) and numeric feature columns
    (``features``; default: those of ``DEFAULT_KERNEL_FEATURES`` present), or a numeric
    array (one type). ``y``: latency (any unit, > 0 when ``log_target``).
    Types with fewer than ``min_samples_per_type`` rows, and types unseen in ``fit``,
    are predicted by the fallback model fitted on all rows with ``fallback_features``.
    ``interval``: central coverage of ``predict_interval`` (from residual quantiles on
    ``interval_cv``-fold held-out predictions; 0 uses in-sample residuals)."""

    def __init__(self, type_column: str = "kernel_type", features: Optional[Sequence[str]] = None,
                 estimator: Optional[BaseEstimator] = None, log_target: bool = True,
                 min_samples_per_type: int = 10, fallback_features: Optional[Sequence[str]] = None,
                 interval: float = 0.9, interval_cv: int = 3, random_state: Optional[int] = 0) -> None:
        self.type_column = type_column
        self.features = features
        self.estimator = estimator
        self.log_target = log_target
        self.min_samples_per_type = min_samples_per_type
        self.fallback_features = fallback_features
        self.interval = interval
        self.interval_cv = interval_cv
        self.random_state = random_state

    # -- input handling -------------------------------------------------------------
    def _split(self, X: Any, fitting: bool):
        if isinstance(X, pd.DataFrame) and self.type_column in X.columns:
            types = X[self.type_column].astype(str).to_numpy()
            if fitting:
                cols = list(self.features) if self.features is not None else [
                    c for c in DEFAULT_KERNEL_FEATURES if c in X.columns]
                missing = [c for c in cols if c not in X.columns]
                if missing:
                    raise PredictorError(f"kernel table lacks feature columns {missing}",
                                         hint="build it with host.modeler.features + kernels.KernelGrouper")
                self.feature_columns_ = cols
            Xn = X[self.feature_columns_].astype(float)
            return Xn, types
        if fitting:
            self.feature_columns_ = None
        elif getattr(self, "feature_columns_", None) is not None:
            raise PredictorError("this regressor was fitted on a kernel table; pass one with "
                                 f"a {self.type_column!r} column")
        n = X.shape[0] if hasattr(X, "shape") else len(X)
        return X, np.full(n, ALL_TYPES, dtype=object)

    def _target(self, y: np.ndarray) -> np.ndarray:
        if self.log_target:
            if np.any(~(y > 0)):
                raise ValueError("latencies must be > 0 with log_target=True; "
                                 "drop zero/negative rows or pass log_target=False")
            return np.log(y)
        return y

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z) if self.log_target else z

    def _fallback_idx(self) -> Optional[List[int]]:
        if self.feature_columns_ is None:
            return None
        wanted = list(self.fallback_features) if self.fallback_features is not None else FALLBACK_FEATURES
        idx = [self.feature_columns_.index(c) for c in wanted if c in self.feature_columns_]
        return idx or None

    # -- API --------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> "KernelLatencyRegressor":
        """Fit one model per kernel type plus the fallback; returns self."""
        Xn, types = self._split(X, fitting=True)
        Xa, ya = validate_data(self, Xn, y, ensure_all_finite="allow-nan", y_numeric=True)
        ya = np.asarray(ya, dtype=float)
        z = self._target(ya)
        base = self.estimator if self.estimator is not None else _default_estimator(self.random_state)
        self.fallback_columns_ = self._fallback_idx()
        Xf = Xa if self.fallback_columns_ is None else Xa[:, self.fallback_columns_]
        self.fallback_ = clone(base).fit(Xf, z)
        self.models_: Dict[str, BaseEstimator] = {}
        self.type_columns_: Dict[str, np.ndarray] = {}
        self.type_counts_: Dict[str, int] = {}
        for t in sorted(set(types)):
            m = types == t
            self.type_counts_[t] = int(m.sum())
            if m.sum() >= self.min_samples_per_type:
                cols = _informative_columns(Xa[m])
                self.type_columns_[t] = cols
                self.models_[t] = clone(base).fit(Xa[m][:, cols], z[m])
        self.residual_quantiles_ = self._residual_quantiles(Xa, Xf, z, types, base)
        return self

    def _residual_quantiles(self, Xa, Xf, z, types, base) -> Dict[str, tuple]:
        from sklearn.model_selection import KFold

        lo_q, hi_q = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
        held = np.full(len(z), np.nan)
        if self.interval_cv and self.interval_cv >= 2 and len(z) >= 2 * self.interval_cv:
            kf = KFold(self.interval_cv, shuffle=True, random_state=self.random_state)
            for tr, te in kf.split(Xa):
                fb = clone(base).fit(Xf[tr], z[tr])
                for t in set(types[te]):
                    mt = types[tr] == t
                    me = te[types[te] == t]
                    if mt.sum() >= self.min_samples_per_type:
                        cols = _informative_columns(Xa[tr][mt])
                        held[me] = clone(base).fit(Xa[tr][mt][:, cols], z[tr][mt]).predict(Xa[me][:, cols])
                    else:
                        held[me] = fb.predict(Xf[me])
        else:
            held = self._predict_z(Xa, types)[0]
        resid = z - held
        out: Dict[str, tuple] = {}
        for t in list(set(types)) + [ALL_TYPES]:
            r = resid if t == ALL_TYPES else resid[types == t]
            r = r[np.isfinite(r)]
            if r.size >= 5:
                out[t] = (float(np.quantile(r, lo_q)), float(np.quantile(r, hi_q)))
        if ALL_TYPES not in out:
            out[ALL_TYPES] = (0.0, 0.0)
        return out

    def _predict_z(self, Xa: np.ndarray, types: np.ndarray):
        z = np.empty(Xa.shape[0])
        fallback = np.zeros(Xa.shape[0], dtype=bool)
        for t in set(types):
            m = types == t
            if t in self.models_:
                z[m] = self.models_[t].predict(Xa[m][:, self.type_columns_[t]])
            else:
                fallback[m] = True
                Xf = Xa[m] if self.fallback_columns_ is None else Xa[m][:, self.fallback_columns_]
                z[m] = self.fallback_.predict(Xf)
        return z, fallback

    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency per row (same unit as ``y`` in fit)."""
        return self.predict_detail(X)["pred"].to_numpy()

    def predict_detail(self, X: Any) -> pd.DataFrame:
        """Per row: pred, lo, hi (interval), kernel_type, unknown_type (type never seen in
        fit), fallback (predicted by the fallback model)."""
        check_is_fitted(self, "models_")
        Xn, types = self._split(X, fitting=False)
        Xa = validate_data(self, Xn, reset=False, ensure_all_finite="allow-nan")
        z, fallback = self._predict_z(Xa, types)
        unknown = np.array([t not in self.type_counts_ for t in types], dtype=bool)
        if unknown.any():
            log.warning("kernel types never seen in training, predicted by the fallback model: %s",
                        ", ".join(sorted(set(types[unknown]))))
        lo = np.empty_like(z)
        hi = np.empty_like(z)
        for i, t in enumerate(types):
            q = self.residual_quantiles_.get(t if not unknown[i] else ALL_TYPES,
                                             self.residual_quantiles_[ALL_TYPES])
            lo[i], hi[i] = z[i] + q[0], z[i] + q[1]
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame({"pred": self._inverse(z), "lo": self._inverse(lo), "hi": self._inverse(hi),
                             "kernel_type": types, "unknown_type": unknown, "fallback": fallback},
                            index=index)

    def predict_interval(self, X: Any) -> np.ndarray:
        """``(n, 2)`` array of lower/upper bounds with coverage ``interval``."""
        d = self.predict_detail(X)
        return d[["lo", "hi"]].to_numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _informative_columns(X: np.ndarray) -> np.ndarray:
    """Indices of columns with at least one non-NaN value (all-NaN columns break binning)."""
    cols = np.flatnonzero(np.isfinite(X).any(axis=0))
    return cols if cols.size else np.arange(X.shape[1])


OVERHEAD_MODES = ("none", "scale", "dispatch", "stacked")


class NetworkLatencyModel(BaseEstimator):
    """Whole-network latency = f(sum of predicted kernel latencies, network aggregates).

    ``overhead``: ``none`` (plain sum), ``scale`` (sum x median ratio), ``dispatch``
    (e2e = a*sum + b + c*n_kernels, non-negative least squares), ``stacked`` (ridge
    regression of log(e2e/sum) on structural aggregates, alpha by inner CV).
    ``stack_cv``: folds of the inner, grouped-by-network cross-validation giving the
    out-of-fold kernel predictions the overhead stage is fitted on (0: in-sample).
    Fit one model per (device, delegate)."""

    def __init__(self, kernel_model: Optional[KernelLatencyRegressor] = None, overhead: str = "stacked",
                 stack_cv: int = 5, interval: float = 0.9, network_col: str = "network",
                 random_state: Optional[int] = 0) -> None:
        self.kernel_model = kernel_model
        self.overhead = overhead
        self.stack_cv = stack_cv
        self.interval = interval
        self.network_col = network_col
        self.random_state = random_state

    def _kernel_model(self) -> KernelLatencyRegressor:
        km = self.kernel_model if self.kernel_model is not None else KernelLatencyRegressor(
            random_state=self.random_state)
        return clone(km)

    def fit(self, kernels: pd.DataFrame, kernel_latency_ms: Any, network_latency_ms: Any) -> "NetworkLatencyModel":
        """``kernels``: kernel table of the training networks (with ``network_col``);
        ``kernel_latency_ms``: measured time per kernel row (NaN where unmeasured);
        ``network_latency_ms``: Series (or dict) network -> measured end-to-end latency."""
        if self.overhead not in OVERHEAD_MODES:
            raise PredictorError(f"unknown overhead mode {self.overhead!r}",
                                 hint=f"use one of: {', '.join(OVERHEAD_MODES)}")
        if self.network_col not in kernels.columns:
            raise PredictorError(f"kernel table has no {self.network_col!r} column",
                                 hint="add the network id of each kernel")
        y = np.asarray(kernel_latency_ms, dtype=float)
        if y.shape[0] != len(kernels):
            raise PredictorError(f"{y.shape[0]} kernel latencies for {len(kernels)} kernels")
        e2e = pd.Series(network_latency_ms, dtype=float).dropna()
        e2e = e2e[e2e > 0]
        has_y = np.isfinite(y) & (y > 0)
        if not has_y.any():
            raise PredictorError("no measured kernel latencies to fit on",
                                 hint="fit needs per-kernel (op-profiling) times of training networks")
        self.kernel_model_ = self._kernel_model().fit(kernels[has_y], y[has_y])
        nets = kernels[self.network_col].to_numpy()
        if self.overhead == "none":
            self.overhead_params_ = {}
            self.residual_quantiles_ = (0.0, 0.0)
            return self
        # Out-of-fold kernel predictions over training networks for the overhead stage.
        pred = np.full(len(kernels), np.nan)
        uniq = pd.unique(nets)
        if self.stack_cv and self.stack_cv >= 2 and len(uniq) >= 2 * self.stack_cv:
            from sklearn.model_selection import GroupKFold

            inner = clone(self.kernel_model_).set_params(interval_cv=0)
            gkf = GroupKFold(n_splits=self.stack_cv, shuffle=True, random_state=self.random_state)
            for tr, te in gkf.split(kernels, groups=nets):
                trm = np.zeros(len(kernels), dtype=bool)
                trm[tr] = True
                trm &= has_y
                pred[te] = clone(inner).fit(kernels[trm], y[trm]).predict(kernels.iloc[te])
        else:
            pred = self.kernel_model_.predict(kernels)
        agg = self._aggregate(kernels, pred)
        common = agg.index.intersection(e2e.index)
        if len(common) < 3:
            raise PredictorError(f"only {len(common)} training networks have both kernels and "
                                 "end-to-end latencies", hint="the overhead stage needs >= 3")
        A, t = agg.loc[common], e2e.loc[common].to_numpy()
        self._fit_overhead(A, t)
        resid = np.log(t) - np.log(self._apply_overhead(A))
        q = (1 - self.interval) / 2
        self.residual_quantiles_ = (float(np.quantile(resid, q)), float(np.quantile(resid, 1 - q)))
        return self

    def _aggregate(self, kernels: pd.DataFrame, pred: np.ndarray) -> pd.DataFrame:
        k = pd.DataFrame({
            "net": kernels[self.network_col].to_numpy(),
            "pred": pred,
            "bytes_out": kernels["bytes_out"].to_numpy(dtype=float) if "bytes_out" in kernels else 0.0,
            "weights": kernels["weights_bytes"].to_numpy(dtype=float) if "weights_bytes" in kernels else 0.0,
            "flops": kernels["flops"].to_numpy(dtype=float) if "flops" in kernels else 0.0,
        })
        g = k.groupby("net", sort=False)
        agg = pd.DataFrame({
            "sum_pred_ms": g["pred"].sum(),
            "n_kernels": g.size().astype(float),
            "bytes_out": g["bytes_out"].sum(),
            "weights": g["weights"].sum(),
            "flops": g["flops"].sum(),
        })
        return agg

    @staticmethod
    def _stack_X(A: pd.DataFrame) -> np.ndarray:
        s = A["sum_pred_ms"].clip(lower=1e-6)
        return np.column_stack([
            np.log(s),
            np.log1p(A["n_kernels"]),
            np.log1p(A["n_kernels"]) - np.log(s),
            np.log1p(A["bytes_out"]) - np.log(s),
            np.log1p(A["weights"]) - np.log(s),
            np.log1p(A["flops"]) - np.log(s),
        ])

    def _fit_overhead(self, A: pd.DataFrame, t: np.ndarray) -> None:
        s = A["sum_pred_ms"].to_numpy()
        if self.overhead == "scale":
            self.overhead_params_ = {"ratio": float(np.median(t / s))}
        elif self.overhead == "dispatch":
            from scipy.optimize import nnls

            M = np.column_stack([s, np.ones_like(s), A["n_kernels"].to_numpy()])
            w = 1.0 / t  # relative error weighting
            coef, _ = nnls(M * w[:, None], t * w)
            self.overhead_params_ = {"a": float(coef[0]), "b_ms": float(coef[1]),
                                     "per_kernel_ms": float(coef[2])}
        else:
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self.stack_ = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
            self.stack_.fit(self._stack_X(A), np.log(t) - np.log(s))
            self.overhead_params_ = {"alpha": float(self.stack_[-1].alpha_)}

    def _apply_overhead(self, A: pd.DataFrame) -> np.ndarray:
        s = A["sum_pred_ms"].to_numpy()
        p = self.overhead_params_
        if self.overhead == "none":
            return s
        if self.overhead == "scale":
            return s * p["ratio"]
        if self.overhead == "dispatch":
            return p["a"] * s + p["b_ms"] + p["per_kernel_ms"] * A["n_kernels"].to_numpy()
        return s * np.exp(self.stack_.predict(self._stack_X(A)))

    def predict_detail(self, kernels: pd.DataFrame) -> pd.DataFrame:
        """Per network: pred_ms, lo_ms, hi_ms, kernel_sum_ms, n_kernels, n_unknown_kernels."""
        check_is_fitted(self, "kernel_model_")
        if self.network_col not in kernels.columns:
            raise PredictorError(f"kernel table has no {self.network_col!r} column")
        d = self.kernel_model_.predict_detail(kernels)
        agg = self._aggregate(kernels, d["pred"].to_numpy())
        pred = self._apply_overhead(agg)
        lo_q, hi_q = self.residual_quantiles_
        unknown = pd.Series(d["unknown_type"].to_numpy(), index=kernels.index).groupby(
            kernels[self.network_col].to_numpy(), sort=False).sum()
        return pd.DataFrame({
            "pred_ms": pred, "lo_ms": pred * np.exp(lo_q), "hi_ms": pred * np.exp(hi_q),
            "kernel_sum_ms": agg["sum_pred_ms"].to_numpy(), "n_kernels": agg["n_kernels"].to_numpy(),
            "n_unknown_kernels": unknown.reindex(agg.index).to_numpy(),
        }, index=agg.index)

    def predict(self, kernels: pd.DataFrame) -> pd.Series:
        """Predicted end-to-end latency (ms) per network id."""
        return self.predict_detail(kernels)["pred_ms"]
