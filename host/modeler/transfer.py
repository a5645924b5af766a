"""A new device's latency predictor from predictors of devices already modelled plus a
few measurements of the new one (LitePred-style transfer).

The source predictors (``LatencyPredictor``, one per source device) predict every kernel
of a network; a few target networks, measured per op and end to end, say how the target
differs. ``TransferLatencyPredictor`` is itself a ``LatencyPredictor`` (same
``predict_ops`` / ``predict_kernels`` / ``predict_files``, same predictor files):

- ``ratio``: per kernel type, the mean log ratio target/source over the target's measured
  kernels, shrunk toward the all-kernel ratio when a type has few target kernels
  (``shrinkage`` = prior weight in kernels); several sources are combined in log space
  with weights inversely proportional to their corrected residual variance.
- ``stack``: ridge regression of the log ratio target/source on the source prediction,
  the kernel's size features and its type (alpha by leave-one-out CV on the target's
  kernels).
- ``pooled``: one kernel regressor on all source kernels plus the target's (device
  indicator columns; target rows repeated ``target_weight`` times).
- ``scratch``: a plain ``LatencyPredictor`` on the target's few networks only (baseline).
- ``overhead_only``: source kernel predictions unchanged, only the overhead stage fitted on
  the target's end-to-end times (needs no per-op profiling of the target).
- ``source``: the source predictors unchanged (geometric mean over sources; baseline).

In every method but ``source`` the overhead stage (``OverheadRegressor``, its form chosen
by cross-validation on the target's networks) is refitted on the target's end-to-end
latencies. Kernel typing (``KernelGrouper``, e.g. which convolutions run as Winograd) is
learnt from the target's own kernel names.

Measured on li2024 GPU data (``benchmarks/gpu_transfer.py``: 3 phones, each target
predicted from the other two; mean MAPE over phones and 10 random choices of the target's
networks, on all its other networks): with 5 / 10 / 20 target networks, ``stack`` 9.6 /
7.9 / 4.7%, ``pooled`` 12.3 / 9.3 / 5.1%, ``ratio`` 12.0 / 9.6 / 7.4%, ``overhead_only``
15.0 / 9.9 / 8.1%, ``scratch`` 15.8 / 12.8 / 6.2%, ``source`` 63%; a model fitted on ~82
networks of the phone alone: 3.9%. ``stack`` is the default (chosen on an earlier 3-seed
run of the same benchmark, so the comparison is not blind). With 5 networks the spread
over choices is large (MAPE std ~6 points): when the few networks are all of similar size,
the overhead stage's constant term extrapolates badly to the others. Choosing them from
the sources' predictions (``host.modeler.transfer_select``, default ``coverage``) gave
``stack`` 6.1 / 4.7 / 4.2% on the same benchmark.

The 90% interval of a transferred predictor comes, by default, from the same transfer
simulated on each source device (``interval_from``): how a transfer from those networks
errs on the networks it was not fitted on is what the bounds must cover.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from host.modeler.predictor import NETWORK, LatencyPredictor, kernel_latencies
from opcost.errors import PredictorError

log = logging.getLogger(__name__)

METHODS = ("ratio", "stack", "pooled", "scratch", "overhead_only", "source")
DEFAULT_METHOD = "stack"
INTERVAL_FROM = ("auto", "sources", "target")
# Fewest held-out networks of one source device for its simulated transfer to count.
MIN_SIMULATED_TEST_NETWORKS = 10
# Fewest target networks (per-op + end-to-end) a transfer is fitted on: the overhead stage
# needs >= 3 and its form is chosen by cross-validation over them; 5 is the smallest
# count benchmarks/gpu_transfer.py measures.
MIN_TARGET_NETWORKS = 5
SOURCE_COL = "source"            # column of the source tables naming the source predictor
SRC_MS = "src_ms:"               # kernel-table column: a source's predicted kernel time
SRC_UNKNOWN = "src_unknown:"     # kernel-table column: that source never saw the kernel type
DEVICE_IS = "device_is:"         # pooled method: device indicator columns
TARGET = "target"
STACK_FEATURES = ("log_flops", "log_bytes_in", "log_bytes_out", "log_weights_bytes")
_STACK_ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))


def source_tables(tables_by_source: Mapping[str, Mapping[str, pd.DataFrame]],
                  sources: Optional[Sequence[str]] = None) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """(ops, networks) of several source devices' training tables (``{"ops", "networks"}``
    each), stacked and tagged with the source's name in ``SOURCE_COL``."""
    names = list(tables_by_source) if sources is None else list(sources)
    return (pd.concat([tables_by_source[d]["ops"].assign(**{SOURCE_COL: d}) for d in names], ignore_index=True),
            pd.concat([tables_by_source[d]["networks"].assign(**{SOURCE_COL: d}) for d in names],
                      ignore_index=True))


def choose_networks(networks: Sequence[Any], n: int, seed: int) -> List[Any]:
    """A deterministic random choice of ``n`` of ``networks`` (uniform, without
    replacement, ``numpy.random.default_rng(seed)`` over the sorted names)."""
    pool = sorted(networks)
    if n > len(pool):
        raise PredictorError(f"cannot choose {n} of {len(pool)} networks")
    idx = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in sorted(idx)]


def usable_target_networks(ops: pd.DataFrame, networks: pd.DataFrame, *, per_op: bool = True) -> List[Any]:
    """Target networks a transfer can learn from: an end-to-end latency and (``per_op``)
    at least one measured op time."""
    e2e = networks[networks["latency_ms"].astype(float) > 0][NETWORK]
    nets = set(e2e)
    if per_op:
        lat = ops["latency_ms"].to_numpy(dtype=float)
        nets &= set(ops.loc[np.isfinite(lat) & (lat > 0), NETWORK])
    return sorted(nets, key=str)


class TransferKernelRegressor(RegressorMixin, BaseEstimator):
    """Target-device kernel latency from source predictions of the same kernels.

    ``X``: a kernel table with ``type_column`` and the source prediction columns
    (``source_columns``, default every column starting with ``src_ms:``; ms, > 0) plus,
    for ``stack``, the ``STACK_FEATURES`` present; optional ``src_unknown:<source>``
    columns flag kernels a source predicted by its fallback. ``y``: measured target
    kernel latency (ms, > 0).
    ``method``: ``ratio`` (per-type log ratio shrunk toward the global one), ``stack``
    (ridge on the log ratio) or ``none`` (sources unchanged). ``weighting``: ``time``
    weights each kernel by its measured time (the kernels that make up most of a
    network's latency count most), ``count`` weighs kernels equally. ``combine``:
    ``inverse_variance`` or ``mean`` over sources (in log space). ``alpha``: ridge
    penalty of ``stack`` (None: leave-one-out CV over a fixed grid).
    Fitted: ``source_columns_``, ``source_weights_``, ``global_`` and ``corrections_``
    (ratio), ``stack_`` (stack), ``type_counts_``, ``residual_quantiles_``."""

    def __init__(self, source_columns: Optional[Sequence[str]] = None, type_column: str = "kernel_type",
                 method: str = DEFAULT_METHOD, shrinkage: float = 10.0, weighting: str = "time",
                 combine: str = "inverse_variance", alpha: Optional[float] = None,
                 features: Optional[Sequence[str]] = None, interval: float = 0.9, interval_cv: int = 3,
                 random_state: Optional[int] = 0) -> None:
        self.source_columns = source_columns
        self.type_column = type_column
        self.method = method
        self.shrinkage = shrinkage
        self.weighting = weighting
        self.combine = combine
        self.alpha = alpha
        self.features = features
        self.interval = interval
        self.interval_cv = interval_cv
        self.random_state = random_state

    # -- inputs -----------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in ("ratio", "stack", "none"):
            raise PredictorError(f"unknown transfer kernel method {self.method!r}",
                                 hint="use one of: ratio, stack, none")
        if self.weighting not in ("time", "count"):
            raise PredictorError(f"unknown weighting {self.weighting!r}", hint="use time or count")
        if self.combine not in ("inverse_variance", "mean"):
            raise PredictorError(f"unknown combine {self.combine!r}", hint="use inverse_variance or mean")
        if not self.shrinkage >= 0:
            raise PredictorError(f"shrinkage must be >= 0, got {self.shrinkage!r}")

    def _source_log(self, X: pd.DataFrame, fitting: bool) -> np.ndarray:
        if not isinstance(X, pd.DataFrame) or self.type_column not in X.columns:
            raise PredictorError(f"a kernel table with a {self.type_column!r} column and source prediction "
                                 f"columns ({SRC_MS}<source>) is needed",
                                 hint="build it with TransferLatencyPredictor._kernels")
        if fitting:
            cols = list(self.source_columns) if self.source_columns is not None else [
                c for c in X.columns if str(c).startswith(SRC_MS)]
            if not cols:
                raise PredictorError("the kernel table has no source prediction columns",
                                     hint=f"add {SRC_MS}<source> columns (ms)")
            self.source_columns_ = cols
        missing = [c for c in self.source_columns_ if c not in X.columns]
        if missing:
            raise PredictorError(f"kernel table lacks source prediction columns {missing}")
        S = X[self.source_columns_].to_numpy(dtype=float)
        if np.any(~(S > 0)):
            raise PredictorError("source kernel predictions must be finite and > 0")
        return np.log(S)

    def _weights(self, y: np.ndarray) -> np.ndarray:
        return y / y.mean() if self.weighting == "time" else np.ones_like(y)

    # -- fit ----------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any) -> "TransferKernelRegressor":
        self._check_params()
        S = self._source_log(X, fitting=True)
        y = np.asarray(y, dtype=float)
        if y.shape[0] != S.shape[0]:
            raise PredictorError(f"{y.shape[0]} latencies for {S.shape[0]} kernels")
        if np.any(~(y > 0)):
            raise ValueError("kernel latencies must be > 0 (the corrections are log ratios)")
        types = X[self.type_column].astype(str).to_numpy()
        self.n_features_in_ = S.shape[1]
        self.type_counts_ = {t: int(c) for t, c in zip(*np.unique(types, return_counts=True))}
        self._fit_arrays(S, np.log(y), types, self._weights(y), X)
        self.residual_quantiles_ = self._residual_quantiles(S, np.log(y), types, y, X)
        return self

    def _fit_arrays(self, S: np.ndarray, z: np.ndarray, types: np.ndarray, w: np.ndarray, X: pd.DataFrame) -> None:
        m = S.shape[1]
        self.global_ = np.zeros(m)
        self.corrections_: Dict[str, np.ndarray] = {}
        self.stack_ = None
        self.source_weights_ = np.full(m, 1.0 / m)
        if self.method == "none":
            return
        if self.method == "ratio":
            R = z[:, None] - S
            self.global_ = (w[:, None] * R).sum(axis=0) / w.sum()
            k = float(self.shrinkage)
            for t in np.unique(types):
                mt = types == t
                mean_t = (w[mt, None] * R[mt]).sum(axis=0) / w[mt].sum()
                n_t = float(mt.sum())
                self.corrections_[t] = (n_t * mean_t + k * self.global_) / (n_t + k)
            C = np.array([self.corrections_[t] for t in types]).reshape(len(z), m)
            resid = z[:, None] - (S + C)
            var = (w[:, None] * resid ** 2).sum(axis=0) / w.sum()
            if self.combine == "inverse_variance" and m > 1:
                inv = 1.0 / np.maximum(var, 1e-6)
                self.source_weights_ = inv / inv.sum()
            return
        # stack: ridge on the log ratio to the mean source prediction
        from sklearn.linear_model import Ridge, RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.stack_types_ = sorted(set(types))
        feats = [c for c in (self.features if self.features is not None else STACK_FEATURES) if c in X.columns]
        self.stack_features_ = feats
        F = X[feats].to_numpy(dtype=float) if feats else np.zeros((len(z), 0))
        # Missing values (e.g. no weights for pooling) become the column mean (0 if all missing).
        self.feature_fill_ = X[feats].astype(float).mean().fillna(0.0).to_numpy() if feats else np.zeros(0)
        D = self._stack_design(S, F, types)
        zbar = S @ self.source_weights_
        reg = Ridge(alpha=float(self.alpha)) if self.alpha is not None else RidgeCV(alphas=_STACK_ALPHAS)
        pipe = make_pipeline(StandardScaler(), reg)
        self.stack_ = pipe.fit(D, z - zbar, **{f"{pipe.steps[-1][0]}__sample_weight": w})

    def _stack_design(self, S: np.ndarray, F: np.ndarray, types: np.ndarray) -> np.ndarray:
        F = np.where(np.isfinite(F), F, self.feature_fill_[None, :]) if F.shape[1] else F
        zbar = S @ self.source_weights_
        onehot = np.column_stack([types == t for t in self.stack_types_]).astype(float)
        parts = [zbar[:, None], F, onehot]
        if S.shape[1] > 1:
            parts.insert(1, S - zbar[:, None])
        return np.column_stack(parts)

    def _residual_quantiles(self, S, z, types, y, X) -> tuple:
        from sklearn.model_selection import KFold

        lo_q, hi_q = (1 - self.interval) / 2, 1 - (1 - self.interval) / 2
        held = None
        if self.method != "none" and self.interval_cv and self.interval_cv >= 2 and len(z) >= 2 * self.interval_cv:
            held = np.empty(len(z))
            kf = KFold(self.interval_cv, shuffle=True, random_state=self.random_state)
            for tr, te in kf.split(S):
                part = clone(self).set_params(interval_cv=0)
                part._check_params()
                part.source_columns_ = self.source_columns_
                part._fit_arrays(S[tr], z[tr], types[tr], self._weights(y[tr]), X.iloc[tr])
                held[te] = part._predict_log(S[te], types[te], X.iloc[te])
        if held is None:
            held = self._predict_log(S, types, X)
        r = z - held
        return float(np.quantile(r, lo_q)), float(np.quantile(r, hi_q))

    # -- predict --------------------------------------------------------------------------
    def _predict_log(self, S: np.ndarray, types: np.ndarray, X: pd.DataFrame) -> np.ndarray:
        if self.method == "stack":
            F = X[self.stack_features_].to_numpy(dtype=float) if self.stack_features_ else np.zeros((len(S), 0))
            return S @ self.source_weights_ + self.stack_.predict(self._stack_design(S, F, types))
        if self.method == "ratio":
            C = np.array([self.corrections_.get(t, self.global_) for t in types]).reshape(S.shape)
            return (S + C) @ self.source_weights_
        return S @ self.source_weights_

    def predict_detail(self, X: pd.DataFrame, warn_unknown: bool = True) -> pd.DataFrame:
        """Per row: pred, lo, hi, kernel_type, unknown_type (a type neither the target's
        kernels nor any source saw), fallback (no target kernel of this type: global
        correction). ``warn_unknown`` is accepted as ``KernelLatencyRegressor``'s is (the
        network stage's inner CV passes it); this regressor logs nothing per call."""
        check_is_fitted(self, "source_columns_")
        S = self._source_log(X, fitting=False)
        types = X[self.type_column].astype(str).to_numpy()
        z = self._predict_log(S, types, X) if len(S) else np.zeros(0)
        seen = np.array([t in self.type_counts_ for t in types], dtype=bool)
        unk_cols = [SRC_UNKNOWN + c[len(SRC_MS):] for c in self.source_columns_]
        if all(c in X.columns for c in unk_cols):
            src_unknown = X[unk_cols].to_numpy(dtype=bool).all(axis=1)
        else:
            src_unknown = np.zeros(len(types), dtype=bool)
        lo_q, hi_q = self.residual_quantiles_
        return pd.DataFrame({"pred": np.exp(z), "lo": np.exp(z + lo_q), "hi": np.exp(z + hi_q),
                             "kernel_type": types, "unknown_type": ~seen & src_unknown, "fallback": ~seen},
                            index=X.index)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_detail(X)["pred"].to_numpy()


def _source_tables(source_ops: pd.DataFrame, source_networks: pd.DataFrame, name: str):
    """(ops, networks) of source ``name`` from the stacked source tables."""
    return tuple(t[t[SOURCE_COL].astype(str) == name].drop(columns=SOURCE_COL).reset_index(drop=True)
                 for t in (source_ops, source_networks))


def _same_device(a: str, b: str) -> bool:
    """Whether two source names are one device: ``service`` names a device given more
    than once ``X``, ``X+``, ``X++``; as a source of itself it would see its own networks."""
    return a.rstrip("+") == b.rstrip("+")


def _shown(name: str) -> str:
    """A source name for messages: ``X+`` is "X (given again)"."""
    return f"{name.rstrip('+')} (given again)" if name.endswith("+") else name


def kernel_positions(kernels: pd.DataFrame, other: pd.DataFrame, source: str) -> np.ndarray:
    """Row of ``other`` holding each kernel of ``kernels`` (matched by network and first
    op); PredictorError when ``source``'s grouping has no such kernel."""
    def key(k: pd.DataFrame) -> pd.MultiIndex:
        return pd.MultiIndex.from_arrays([k[NETWORK].to_numpy(), k["op_index"].to_numpy()])

    pos = key(other).get_indexer(key(kernels))
    if np.any(pos < 0):
        raise PredictorError(f"source {source!r} groups ops into other kernels than the target "
                             f"({int(np.sum(pos < 0))} kernels unmatched)",
                             hint="use predictors of the same runtime / delegate")
    return pos


def kernel_predictor_of(est: Any) -> LatencyPredictor:
    """The kernel-level ``LatencyPredictor`` of a fitted predictor (a block predictor's
    kernel part)."""
    inner = getattr(est, "kernel_predictor_", None)
    if inner is not None:
        return inner
    if not isinstance(est, LatencyPredictor) or not hasattr(est, "model_"):
        raise PredictorError(f"a source must be a fitted LatencyPredictor, got {type(est).__name__}",
                             hint="fit one with `opcost fit`")
    return est


class TransferLatencyPredictor(LatencyPredictor):
    """A ``LatencyPredictor`` for a target device from source predictors and a few target
    measurements (see the module docstring for ``method``).

    ``fit(ops, networks, source_ops=None, source_networks=None, prefit_sources=None)``:
    ``ops``/``networks`` are the target's tables as for ``LatencyPredictor.fit`` (per-op
    times and end-to-end latencies of a few networks). Sources: ``source_ops`` /
    ``source_networks`` are the source devices' training tables with a ``source`` column
    naming each source; a source predictor is fitted on each
    (``LatencyPredictor(**source_params)``) unless ``prefit_sources`` (dict source name ->
    fitted predictor, fitted on exactly those tables) already holds it. Without source
    tables, ``prefit_sources`` alone is used (not with ``pooled``).
    ``shrinkage``, ``weighting``, ``combine``: ``ratio`` (``TransferKernelRegressor``);
    ``stack_alpha``: ``stack``; ``target_weight``: ``pooled``; ``overhead``, ``stack_cv``:
    the overhead stage (``NetworkLatencyModel``); ``min_networks``: fewest usable target
    networks. Fixed a priori, not tuned: shrinkage 10 kernels (the per-type regressors'
    ``min_samples_per_type``), target weight 5.

    ``interval_from``: where the 90% interval of a network prediction comes from.
    ``target``: leaving each target network out of the fit (``NetworkLatencyModel``).
    ``sources``: the same transfer simulated on each source device (its tables restricted
    to the target's networks, the other sources as its sources), scored on its other
    multi-kernel networks; the widest bounds over those devices. ``auto`` (default):
    ``sources`` where some source allows it, else ``target``. Ignored by ``source``.
    Fitted: ``interval_from_`` (``sources``, ``target``, or ``source_predictors`` for the
    ``source`` method), ``interval_devices_`` (the devices simulated on),
    ``target_interval_log_bounds_`` (the ``target`` bounds, for comparison),
    ``interval_fallback_`` (why ``auto`` fell back to the ``target`` bounds; "" otherwise)."""

    # Parameters that predictor files written before they existed were fitted with
    # (``predictor_file.load_predictor`` refits such files with them).
    OLD_FILE_PARAMS = {"interval_from": "target"}

    def __init__(self, runtime: str = "gpu", method: str = DEFAULT_METHOD, shrinkage: float = 10.0,
                 weighting: str = "time", combine: str = "inverse_variance", stack_alpha: Optional[float] = None,
                 target_weight: int = 5, stack_features: Optional[Sequence[str]] = None,
                 overhead: str = "auto", stack_cv: int = 5,
                 min_samples_per_type: int = 10, kernel_baseline: str = "auto",
                 min_networks: int = MIN_TARGET_NETWORKS, source_params: Optional[Dict[str, Any]] = None,
                 interval_from: str = "auto", random_state: Optional[int] = 0) -> None:
        self.runtime = runtime
        self.method = method
        self.shrinkage = shrinkage
        self.weighting = weighting
        self.combine = combine
        self.stack_alpha = stack_alpha
        self.target_weight = target_weight
        self.stack_features = stack_features
        self.overhead = overhead
        self.stack_cv = stack_cv
        self.min_samples_per_type = min_samples_per_type
        self.kernel_baseline = kernel_baseline
        self.min_networks = min_networks
        self.source_params = source_params
        self.interval_from = interval_from
        self.random_state = random_state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Pickles from before interval_from existed hold the target-only bounds.
        super().__setstate__({**self.OLD_FILE_PARAMS, **state})

    # -- sources ----------------------------------------------------------------------
    def _fit_sources(self, source_ops, source_networks, prefit_sources) -> Dict[str, LatencyPredictor]:
        prefit = {str(k): kernel_predictor_of(v) for k, v in (prefit_sources or {}).items()}
        if source_ops is None:
            if source_networks is not None:
                raise PredictorError("source_networks without source_ops")
            if not prefit:
                raise PredictorError("no source predictors to transfer from",
                                     hint="pass source_ops/source_networks or prefit_sources")
            return prefit
        for name, t in (("source_ops", source_ops), ("source_networks", source_networks)):
            if t is None or SOURCE_COL not in t.columns:
                raise PredictorError(f"{name} needs a {SOURCE_COL!r} column naming each source")
        out: Dict[str, LatencyPredictor] = {}
        params = dict(self.source_params or {"runtime": self.runtime, "random_state": self.random_state})
        for name in sorted(set(source_ops[SOURCE_COL].astype(str))):
            if name in prefit:
                out[name] = prefit[name]
                continue
            out[name] = LatencyPredictor(**params).fit(*_source_tables(source_ops, source_networks, name))
        return out

    def _source_kernels(self, ops: pd.DataFrame, kernels: pd.DataFrame) -> pd.DataFrame:
        """``kernels`` with each source's predicted time and unknown-type flag."""
        cols = {}
        for name, src in self.sources_.items():
            sk = src.predict_kernels(ops)
            pos = kernel_positions(kernels, sk, name)
            cols[SRC_MS + name] = sk["pred_ms"].to_numpy(dtype=float)[pos]
            cols[SRC_UNKNOWN + name] = sk["unknown_type"].to_numpy(dtype=bool)[pos]
        return pd.concat([kernels, pd.DataFrame(cols, index=kernels.index)], axis=1)

    def _kernels(self, ops: pd.DataFrame) -> pd.DataFrame:
        kernels = self.grouper_.transform(ops)
        if self.method_ == "scratch":
            return kernels
        if self.method_ == "pooled":
            for name in [*self.sources_, TARGET]:
                kernels[DEVICE_IS + name] = 1.0 if name == TARGET else 0.0
            return kernels
        return self._source_kernels(ops, kernels)

    # -- fit --------------------------------------------------------------------------
    def fit(self, ops: pd.DataFrame, networks: pd.DataFrame, source_ops: Optional[pd.DataFrame] = None,
            source_networks: Optional[pd.DataFrame] = None,
            prefit_sources: Optional[Dict[str, Any]] = None) -> "TransferLatencyPredictor":
        from host.modeler.kernels import KernelGrouper
        from host.modeler.regressors import NetworkLatencyModel

        if self.method not in METHODS:
            raise PredictorError(f"unknown transfer method {self.method!r}", hint=f"use one of: {', '.join(METHODS)}")
        if self.interval_from not in INTERVAL_FROM:
            raise PredictorError(f"unknown interval_from {self.interval_from!r}",
                                 hint=f"use one of: {', '.join(INTERVAL_FROM)}")
        for col in (NETWORK, "latency_ms"):
            if col not in ops.columns or col not in networks.columns:
                raise PredictorError(f"target tables need a {col!r} column in both ops and networks")
        ops = ops.reset_index(drop=True)
        self.method_ = self.method
        usable = usable_target_networks(ops, networks, per_op=self.method not in ("overhead_only", "source"))
        self.n_target_networks_ = len(usable)
        if self.method != "source" and len(usable) < self.min_networks:
            what = "end-to-end" if self.method == "overhead_only" else "per-op and end-to-end"
            raise PredictorError(f"{len(usable)} target network(s) with {what} times; transfer needs at "
                                 f"least {self.min_networks}",
                                 hint="measure more networks on the target device")
        if self.method == "scratch":
            self.sources_ = {}
            super().fit(ops, networks)
            return self._set_interval(usable, source_ops, source_networks)
        self.sources_ = self._fit_sources(source_ops, source_networks, prefit_sources)
        runtimes = {getattr(s, "runtime", None) for s in self.sources_.values()}
        if runtimes != {self.runtime}:
            raise PredictorError(f"source predictors are for runtime(s) {sorted(map(str, runtimes))}, "
                                 f"the target for {self.runtime!r}",
                                 hint="transfer between predictors of the same runtime / delegate")
        names = ops["kernel_name"].tolist() if "kernel_name" in ops.columns else None
        self.grouper_ = KernelGrouper(runtime=self.runtime, network_col=NETWORK).fit(ops, names)
        kernels = self._kernels(ops)
        k_lat, _ = kernel_latencies(ops, kernels, networks)
        e2e = networks.groupby(NETWORK)["latency_ms"].median()
        e2e = e2e[e2e.index.isin(usable)]
        kernels_use = kernels[kernels[NETWORK].isin(usable)]
        y = k_lat[kernels[NETWORK].isin(usable).to_numpy()]
        self.kernel_types_ = sorted(set(kernels["kernel_type"]))
        self.n_networks_ = len(usable)
        self.n_kernels_measured_ = int(np.isfinite(y).sum())
        if self.method == "source":
            self.model_ = None
            self.interval_from_, self.interval_devices_ = "source_predictors", sorted(self.sources_)
            return self
        if self.method == "pooled":
            self.model_ = self._fit_pooled(kernels_use, y, e2e, source_ops, source_networks)
            return self._set_interval(usable, source_ops, source_networks)
        km = TransferKernelRegressor(method={"ratio": "ratio", "stack": "stack"}.get(self.method, "none"),
                                     shrinkage=self.shrinkage, weighting=self.weighting, combine=self.combine,
                                     alpha=self.stack_alpha, features=self.stack_features,
                                     random_state=self.random_state)
        if self.method == "overhead_only":
            # No target kernel times are used: the "measured" value is the sources' own.
            S = np.log(kernels_use[[c for c in kernels_use.columns if str(c).startswith(SRC_MS)]].to_numpy(float))
            y = np.exp(S.mean(axis=1))
        self.model_ = NetworkLatencyModel(kernel_model=km, overhead=self.overhead, stack_cv=self.stack_cv,
                                          network_col=NETWORK, random_state=self.random_state)
        self.model_.fit(kernels_use, y, e2e)
        return self._set_interval(usable, source_ops, source_networks)

    # -- interval -----------------------------------------------------------------------
    def _set_interval(self, usable: Sequence[Any], source_ops: Optional[pd.DataFrame],
                      source_networks: Optional[pd.DataFrame]) -> "TransferLatencyPredictor":
        """Replace the target-only interval by the simulated one (``interval_from``)."""
        self.interval_from_, self.interval_devices_, self.interval_fallback_ = "target", [], ""
        self.target_interval_log_bounds_ = tuple(self.model_.interval_log_bounds_)
        if self.interval_from == "target":
            return self
        sim, why = self._simulated_bounds(usable, source_ops, source_networks)
        if not sim:
            if self.interval_from == "sources":
                raise PredictorError(
                    f"no source device allows a simulated transfer for the interval ({why})",
                    hint="give the sources' training tables with the target's networks measured on them "
                         "(and two sources unless the method is scratch), or ask for the bounds from the "
                         "target's networks alone (`opcost adapt --interval-from target`; "
                         "interval_from='target' in Python)")
            log.info("interval from the target's networks alone: %s", why)
            self.interval_fallback_ = why
            return self
        self.model_.interval_quantiles_ = (min(b[0] for b, _ in sim.values()), max(b[1] for b, _ in sim.values()))
        self.model_.interval_n_networks_ = int(sum(n for _, n in sim.values()))
        self.interval_from_, self.interval_devices_ = "sources", sorted(sim)
        return self

    def _simulated_bounds(self, usable: Sequence[Any], source_ops: Optional[pd.DataFrame],
                          source_networks: Optional[pd.DataFrame]
                          ) -> Tuple[Dict[str, Tuple[Tuple[float, float], int]], str]:
        """Per source device where it can be simulated: (log bounds, number of held-out
        networks) of this transfer refitted with that device as the target; and why no
        device could be, if none."""
        from host.modeler.regressors import interval_from_residuals

        if source_ops is None or source_networks is None:
            return {}, "no source training tables"
        train = set(usable)
        per_op = self.method_ != "overhead_only"
        out: Dict[str, Tuple[Tuple[float, float], int]] = {}
        why = []
        names = sorted(set(source_ops[SOURCE_COL].astype(str)))
        for name in names:
            if any(_same_device(name, done) for done in out):
                continue
            others = {k: v for k, v in self.sources_.items() if not _same_device(k, name)}
            if not others and self.method_ != "scratch":
                why.append(f"{_shown(name)}: no other source device to transfer from")
                continue
            ops, nets = _source_tables(source_ops, source_networks, name)
            fit_nets = set(usable_target_networks(ops, nets, per_op=per_op)) & train
            e2e = nets[nets["latency_ms"].astype(float) > 0].groupby(NETWORK)["latency_ms"].median()
            test = e2e[~e2e.index.isin(fit_nets)]
            if len(fit_nets) < self.min_networks or len(test) < MIN_SIMULATED_TEST_NETWORKS:
                why.append(f"{_shown(name)}: {len(fit_nets)} of the target's networks measured there, {len(test)} others")
                continue
            mine = [k for k in names if _same_device(k, name)]
            rest = ~source_ops[SOURCE_COL].astype(str).isin(mine)
            rest_nets = ~source_networks[SOURCE_COL].astype(str).isin(mine)
            sim = clone(self).set_params(interval_from="target")
            if len(fit_nets) < 2 * (self.stack_cv or 0):
                # Below 2 x stack_cv networks the kernel sums are in-sample either way;
                # stack_cv=0 gives the same predictions without the left-out interval fits.
                sim.set_params(stack_cv=0)
            est = sim.fit(ops[ops[NETWORK].isin(fit_nets)], nets[nets[NETWORK].isin(fit_nets)],
                          source_ops=source_ops[rest] if rest.any() else None,
                          source_networks=source_networks[rest_nets] if rest.any() else None,
                          prefit_sources=others)
            d = est.predict_ops(ops[ops[NETWORK].isin(set(test.index))])
            # Single-kernel networks (micro-benchmarks) are not what network bounds are for.
            multi = d[d["n_kernels"] > 1]
            d = multi if len(multi) >= MIN_SIMULATED_TEST_NETWORKS else d
            resid = np.log(test.loc[d.index].to_numpy(dtype=float)) - np.log(d["pred_ms"].to_numpy(dtype=float))
            resid = resid[np.isfinite(resid)]
            if len(resid) < MIN_SIMULATED_TEST_NETWORKS:
                why.append(f"{_shown(name)}: {len(resid)} usable held-out networks")
                continue
            out[name] = (interval_from_residuals(resid, self.model_.interval), len(resid))
        return out, "; ".join(why)

    def _fit_pooled(self, kernels_t: pd.DataFrame, y_t: np.ndarray, e2e: pd.Series, source_ops, source_networks):
        """One kernel regressor on source + target kernels (device indicators; target rows
        repeated ``target_weight`` times); overhead stage on target networks, fitted on
        out-of-fold kernel predictions when there are >= 2 * ``stack_cv`` of them."""
        from host.modeler.regressors import DEFAULT_KERNEL_FEATURES, KernelLatencyRegressor, NetworkLatencyModel

        if source_ops is None:
            raise PredictorError("method 'pooled' needs the sources' training tables (source_ops, source_networks)")
        dev_cols = [DEVICE_IS + n for n in [*self.sources_, TARGET]]
        parts, ys = [], []
        for name, src in self.sources_.items():
            o, n = _source_tables(source_ops, source_networks, name)
            k = src._kernels(o)
            lat, _ = kernel_latencies(o, k, n)
            for c in dev_cols:
                k[c] = 1.0 if c == DEVICE_IS + name else 0.0
            parts.append(k)
            ys.append(lat)
        src_k = pd.concat(parts, ignore_index=True)
        src_y = np.concatenate(ys)
        feats = [c for c in DEFAULT_KERNEL_FEATURES if c in kernels_t.columns] + dev_cols
        km = KernelLatencyRegressor(features=feats, min_samples_per_type=self.min_samples_per_type,
                                    baseline=self._kernel_baseline(), interval_cv=0, random_state=self.random_state)
        w = max(1, int(self.target_weight))

        def fit_on(model: KernelLatencyRegressor, tk: pd.DataFrame, ty: np.ndarray) -> KernelLatencyRegressor:
            X = pd.concat([src_k] + [tk] * w, ignore_index=True)
            yy = np.concatenate([src_y] + [ty] * w)
            ok = np.isfinite(yy) & (yy > 0)
            return model.fit(X[ok].reset_index(drop=True), yy[ok])

        model = NetworkLatencyModel(kernel_model=km, overhead=self.overhead, stack_cv=self.stack_cv,
                                    network_col=NETWORK, random_state=self.random_state)
        return model.fit(kernels_t, y_t, e2e, kernel_fit=fit_on)

    # -- predict ------------------------------------------------------------------------
    def _check(self) -> None:
        check_is_fitted(self, "method_")

    def predict_ops(self, ops: pd.DataFrame) -> pd.DataFrame:
        """Per network: pred_ms, lo_ms, hi_ms, kernel_sum_ms, n_kernels, n_unknown_kernels."""
        self._check()
        if self.method_ != "source":
            return super().predict_ops(ops)
        ops = ops.reset_index(drop=True)
        preds = [s.predict_ops(ops) for s in self.sources_.values()]
        out = preds[0].copy()
        for c in ("pred_ms", "lo_ms", "hi_ms", "kernel_sum_ms"):
            out[c] = np.exp(np.mean([np.log(p.loc[out.index, c].to_numpy(dtype=float)) for p in preds], axis=0))
        out["n_unknown_kernels"] = np.min([p.loc[out.index, "n_unknown_kernels"].to_numpy() for p in preds], axis=0)
        return out

    def predict_kernels(self, ops: pd.DataFrame) -> pd.DataFrame:
        """Per kernel: network, kernel_type, fused_ops, pred_ms, lo_ms, hi_ms, unknown_type."""
        self._check()
        if self.method_ != "source":
            return super().predict_kernels(ops)
        ops = ops.reset_index(drop=True)
        kernels = self._kernels(ops)
        src = [c for c in kernels.columns if str(c).startswith(SRC_MS)]
        out = kernels[[NETWORK, "op_index", "op_type", "kernel_type", "fused_ops", "flops"]].copy()
        pred = np.exp(np.log(kernels[src].to_numpy(dtype=float)).mean(axis=1))
        out["pred_ms"] = out["lo_ms"] = out["hi_ms"] = pred
        out["unknown_type"] = kernels[[SRC_UNKNOWN + c[len(SRC_MS):] for c in src]].to_numpy(bool).all(axis=1)
        return out
