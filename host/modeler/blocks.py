"""Block-level latency: a lookup of blocks already measured, a block regressor, and a
predictor that sums blocks instead of kernels.

A block is a run of ops between two single-tensor cut points (``models_zoo.graph``);
identical blocks of different networks share a structural key. Measured on the host with
``opcost profile --device local --per-block``, each block's time (sliced, run alone) is in
the store's ``blocks`` table.

``BlockLookup``: block key -> median measured latency (ms) over measurements, for one
device / delegate / threads selection (``block_lookup_table`` lists all of them).
``BlockLatencyRegressor``: scikit-learn regressor on block features, one sub-model per
block kind (the '+'-joined op types) with enough training blocks, a kind-agnostic
fallback otherwise (``predict_detail`` says which).
``BlockLatencyPredictor``: per block of a network, the measured time when its key was
measured on this device, else the block regressor when it has a model for the block's
kind, else the sum of the block's predicted kernels (``LatencyPredictor``); then an
overhead term from block sums to end-to-end latency.
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

NETWORK = "network"
KIND = "kind"
SOURCES = ("lookup", "regressor", "kernel_sum")
# Op types counted per block (others go to n_other).
COUNTED_TYPES = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN",
                 "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "PAD", "RESHAPE")
_COUNT_COLS = [f"n_{t.lower()}" for t in COUNTED_TYPES]
BLOCK_FEATURES = [
    "n_ops", "log_flops", "log_macs", "log_bytes_in", "log_bytes_out", "log_weights_bytes",
    "log_io_bytes", "arith_intensity", "h_in", "c_in", "h_out", "c_out", "c_max", "k_max",
    "stride", *_COUNT_COLS, "n_other",
]
ALL_KINDS = "_all"


# ---------------------------------------------------------------- block tables


def _nhwc(shape: Any) -> tuple:
    s = [float(v) for v in (shape or ())]
    if len(s) == 4:
        return s[1], s[2], s[3]
    if len(s) == 2:
        return 1.0, 1.0, s[1]
    return float("nan"), float("nan"), (s[-1] if s else float("nan"))


def graph_blocks(graph: Any, network: Any) -> pd.DataFrame:
    """One row per block of ``graph``'s main subgraph: ``network``, ``block_index``,
    ``block_key``, ``kind``, ``ops`` (comma-joined op indices) and ``BLOCK_FEATURES``."""
    ops = graph.main_ops
    const_like = graph.const_like_ops()
    T = graph.tensors
    rows = []
    for b in graph.blocks():
        live = [i for i in b.ops if not const_like[i]]
        types = [ops[i].type for i in live]
        flops = float(sum(ops[i].flops for i in live))
        macs = float(sum(ops[i].macs for i in live))
        b_in = float(sum(ops[i].bytes_in for i in live))
        b_out = float(sum(ops[i].bytes_out for i in live))
        io = float(sum(T[t].nbytes for t in (*b.inputs, *b.outputs)))
        h_in, _w, c_in = _nhwc(T[b.inputs[0]].shape) if b.inputs else (np.nan, np.nan, np.nan)
        h_out, _w, c_out = _nhwc(T[b.outputs[0]].shape) if b.outputs else (np.nan, np.nan, np.nan)
        c_max = max([_nhwc(s)[2] for i in live for s in ops[i].output_shapes] or [np.nan])
        k_max = max([float(ops[i].kernel_h) for i in live if ops[i].kernel_h] or [1.0])
        counts = {c: 0 for c in _COUNT_COLS}
        other = 0
        for t in types:
            c = f"n_{t.lower()}"
            if c in counts:
                counts[c] += 1
            else:
                other += 1
        rows.append({
            NETWORK: network, "block_index": int(b.index), "block_key": b.key, KIND: "+".join(types),
            "ops": ",".join(str(i) for i in b.ops), "n_ops": float(len(live)),
            "flops": flops, "bytes_act": b_in + b_out, "weights_bytes": float(b.weights_bytes),
            "log_flops": np.log1p(flops), "log_macs": np.log1p(macs), "log_bytes_in": np.log1p(b_in),
            "log_bytes_out": np.log1p(b_out), "log_weights_bytes": np.log1p(float(b.weights_bytes)),
            "log_io_bytes": np.log1p(io),
            "arith_intensity": flops / max(b_in + b_out + float(b.weights_bytes), 1.0),
            "h_in": h_in, "c_in": c_in, "h_out": h_out, "c_out": c_out, "c_max": c_max, "k_max": k_max,
            "stride": h_in / h_out if h_out and h_out == h_out and h_out > 0 else np.nan,
            **{k: float(v) for k, v in counts.items()}, "n_other": float(other),
        })
    return pd.DataFrame(rows)


def blocks_of_files(paths: Sequence[str], names: Optional[Sequence[Any]] = None):
    """``(ops, blocks)`` tables of .tflite files (network id = the name, default the path)."""
    from host.modeler.predictor import graph_ops
    from models_zoo.graph import read_graph

    names = list(names) if names is not None else [str(p) for p in paths]
    ops, blocks = [], []
    for p, n in zip(paths, names):
        g = read_graph(str(p))
        ops.append(graph_ops(g, n))
        blocks.append(graph_blocks(g, n))
    if not ops:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(ops, ignore_index=True), pd.concat(blocks, ignore_index=True)


# ---------------------------------------------------------------- lookup


def block_lookup_table(store, *, device: Optional[str] = None, delegate: Optional[str] = None,
                       threads: Optional[int] = None) -> pd.DataFrame:
    """Measured blocks of the store: one row per (device_serial, delegate, threads,
    block_key) with ``latency_ms`` (median over measurements of the block's mean time),
    ``n_measurements`` and the block's op types."""
    filt = {k: v for k, v in (("device", device), ("delegate", delegate), ("threads", threads)) if v}
    df = store.blocks_df(**filt)
    cols = ["device_serial", "delegate", "threads", "block_key", "latency_ms", "n_measurements", "op_types"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    # One value per run and key (a model's repeated blocks are one measurement).
    per_run = df.groupby(["run_id", "device_serial", "delegate", "threads", "block_key"], as_index=False).agg(
        avg_ms=("avg_ms", "first"), op_types=("op_types", "first"))
    g = per_run.groupby(["device_serial", "delegate", "threads", "block_key"], as_index=False)
    out = g.agg(latency_ms=("avg_ms", "median"), n_measurements=("avg_ms", "size"), op_types=("op_types", "first"))
    return out[cols]


class BlockLookup:
    """Block key -> measured latency (ms): the median over the rows given to ``fit``
    (a table with ``block_key`` and ``latency_ms``, e.g. one device / delegate / threads
    selection of ``block_lookup_table``)."""

    def fit(self, table: pd.DataFrame) -> "BlockLookup":
        t = table[np.isfinite(table["latency_ms"].to_numpy(dtype=float)) & (table["latency_ms"] > 0)]
        g = t.groupby("block_key")["latency_ms"]
        self.latency_ms_: Dict[str, float] = {str(k): float(v) for k, v in g.median().items()}
        self.n_measurements_: Dict[str, int] = {str(k): int(v) for k, v in g.size().items()}
        return self

    def __contains__(self, key: str) -> bool:
        return key in self.latency_ms_

    def __len__(self) -> int:
        return len(self.latency_ms_)

    def get(self, key: str) -> Optional[float]:
        """The measured latency of ``key``, or None when it was never measured."""
        return self.latency_ms_.get(key)


# ---------------------------------------------------------------- regressor


class BlockLatencyRegressor(RegressorMixin, BaseEstimator):
    """Block latency from block features, one sub-model per block kind.

    ``X``: a DataFrame with a ``kind_column`` and numeric feature columns (``features``;
    default: those of ``BLOCK_FEATURES`` present), or a numeric array (one kind). Kinds
    with at least ``min_samples_per_kind`` training rows get their own model; the others,
    and kinds never seen, are predicted by a fallback fitted on all rows
    (``predict_detail``'s ``kind_model`` column is False for them). ``baseline``:
    ``roofline`` fits each sub-model on the log-ratio to a linear baseline in flops and
    bytes (extrapolates to larger blocks; needs ``log_target``), ``none`` on log latency."""

    def __init__(self, kind_column: str = KIND, features: Optional[Sequence[str]] = None,
                 estimator: Optional[BaseEstimator] = None, log_target: bool = True,
                 min_samples_per_kind: int = 5, baseline: str = "roofline",
                 random_state: Optional[int] = 0) -> None:
        self.kind_column = kind_column
        self.features = features
        self.estimator = estimator
        self.log_target = log_target
        self.min_samples_per_kind = min_samples_per_kind
        self.baseline = baseline
        self.random_state = random_state

    def _split(self, X: Any, fitting: bool):
        from host.modeler.regressors import split_typed_table

        return split_typed_table(self, X, fitting, column=self.kind_column, default_features=BLOCK_FEATURES,
                                 table="block", hint="build it with host.modeler.blocks.graph_blocks")

    def _model(self, base: BaseEstimator, cols: np.ndarray) -> BaseEstimator:
        from host.modeler.regressors import baseline_model

        return baseline_model(base, self.baseline, self.feature_columns_, cols)

    def fit(self, X: Any, y: Any) -> "BlockLatencyRegressor":
        """Fit one model per block kind with enough rows, plus the fallback; returns self."""
        from host.modeler.regressors import _default_estimator, _informative_columns

        Xn, kinds = self._split(X, fitting=True)
        if self.baseline not in ("none", "roofline"):
            raise PredictorError(f"unknown baseline {self.baseline!r}", hint="use none or roofline")
        if self.baseline == "roofline" and self.feature_columns_ is not None and not self.log_target:
            raise PredictorError("baseline='roofline' needs log_target=True")
        Xa, ya = validate_data(self, Xn, y, ensure_all_finite="allow-nan", y_numeric=True)
        ya = np.asarray(ya, dtype=float)
        if self.log_target:
            if np.any(~(ya > 0)):
                raise ValueError("block latencies must be > 0 with log_target=True")
            z = np.log(ya)
        else:
            z = ya
        if kinds is None:
            kinds = np.full(Xa.shape[0], ALL_KINDS, dtype=object)
        base = self.estimator if self.estimator is not None else _default_estimator(self.random_state)
        cols = _informative_columns(Xa)
        self.fallback_columns_ = cols
        self.fallback_ = self._model(base, cols).fit(Xa[:, cols], z)
        self.models_: Dict[str, BaseEstimator] = {}
        self.kind_columns_: Dict[str, np.ndarray] = {}
        self.kind_counts_: Dict[str, int] = {}
        for k in sorted(set(kinds)):
            m = kinds == k
            self.kind_counts_[k] = int(m.sum())
            if m.sum() >= self.min_samples_per_kind:
                c = _informative_columns(Xa[m])
                self.kind_columns_[k] = c
                self.models_[k] = self._model(base, c).fit(Xa[m][:, c], z[m])
        return self

    def has_kind(self, kind: str) -> bool:
        """True if ``kind`` has a model of its own."""
        check_is_fitted(self, "models_")
        return kind in self.models_

    def predict_detail(self, X: Any) -> pd.DataFrame:
        """Per row: pred, kind, kind_model (predicted by the kind's own model)."""
        check_is_fitted(self, "models_")
        Xn, kinds = self._split(X, fitting=False)
        Xa = validate_data(self, Xn, reset=False, ensure_all_finite="allow-nan")
        if kinds is None:
            kinds = np.full(Xa.shape[0], ALL_KINDS, dtype=object)
        z = np.empty(Xa.shape[0])
        own = np.zeros(Xa.shape[0], dtype=bool)
        for k in set(kinds):
            m = kinds == k
            if k in self.models_:
                z[m] = self.models_[k].predict(Xa[m][:, self.kind_columns_[k]])
                own[m] = True
            else:
                z[m] = self.fallback_.predict(Xa[m][:, self.fallback_columns_])
        pred = np.exp(z) if self.log_target else z
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame({"pred": pred, KIND: kinds, "kind_model": own}, index=index)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted latency per row (same unit as ``y`` in fit)."""
        return self.predict_detail(X)["pred"].to_numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


# ---------------------------------------------------------------- predictor


def _block_of_kernel(kernels: pd.DataFrame, blocks: pd.DataFrame) -> np.ndarray:
    """Row position in ``blocks`` of the block holding each kernel's first op (-1: none)."""
    where: Dict[tuple, int] = {}
    for pos, (net, ops) in enumerate(zip(blocks[NETWORK].to_numpy(), blocks["ops"].to_numpy())):
        for i in str(ops).split(","):
            if i != "":
                where[(net, int(i))] = pos
    return np.array([where.get((n, int(i)), -1) for n, i in
                     zip(kernels[NETWORK].to_numpy(), kernels["op_index"].to_numpy())], dtype=int)


def block_breakdown(kernel_predictor: Any, ops: pd.DataFrame, blocks: pd.DataFrame, *,
                    lookup: Optional[BlockLookup] = None, regressor: Optional[BlockLatencyRegressor] = None,
                    kernel_model: Any = None) -> Dict[str, Any]:
    """Per-block predictions: ``blocks`` with kernel_sum_ms, pred_ms and source (lookup /
    regressor / kernel_sum); ``kernels`` with their predictions and block; ``scaled`` =
    each kernel's prediction scaled so that a block's kernels add up to its pred_ms."""
    ops = ops.reset_index(drop=True)
    kernels = kernel_predictor._kernels(ops)
    km = kernel_model if kernel_model is not None else kernel_predictor.model_.kernel_model_
    kpred = km.predict(kernels) if len(kernels) else np.zeros(0)
    blocks = blocks.reset_index(drop=True).copy()
    kb = _block_of_kernel(kernels, blocks)
    ksum = np.zeros(len(blocks))
    inb = kb >= 0
    np.add.at(ksum, kb[inb], kpred[inb])
    nk = np.bincount(kb[inb], minlength=len(blocks)) if len(blocks) else np.zeros(0, int)
    pred = ksum.copy()
    source = np.array(["kernel_sum"] * len(blocks), dtype=object)
    if regressor is not None and len(blocks):
        d = regressor.predict_detail(blocks)
        m = d["kind_model"].to_numpy()
        pred[m] = d["pred"].to_numpy()[m]
        source[m] = "regressor"
    if lookup is not None and len(blocks):
        hits = [lookup.get(k) for k in blocks["block_key"]]
        m = np.array([h is not None for h in hits], dtype=bool)
        pred[m] = np.array([h for h in hits if h is not None], dtype=float)
        source[m] = "lookup"
    blocks["kernel_sum_ms"] = ksum
    blocks["n_kernels"] = nk
    blocks["pred_ms"] = pred
    blocks["source"] = source
    ratio = np.where(ksum > 0, pred / np.where(ksum > 0, ksum, 1.0), 1.0)
    scaled = kpred.copy()
    scaled[inb] = kpred[inb] * ratio[kb[inb]]
    # A block without kernels (should not happen) adds its value to no kernel: keep it apart.
    orphan = pd.Series(np.where(nk == 0, pred, 0.0)).groupby(blocks[NETWORK].to_numpy()).sum() \
        if len(blocks) else pd.Series(dtype=float)
    return {"blocks": blocks, "kernels": kernels, "kernel_pred": kpred, "scaled": scaled, "orphan_ms": orphan}


def _kernel_latencies(ops: pd.DataFrame, kernels: pd.DataFrame, networks: pd.DataFrame) -> np.ndarray:
    """Measured time per kernel as ``LatencyPredictor.fit`` derives it (sum of its ops'
    times; a single-kernel network's end-to-end time)."""
    from host.modeler.predictor import kernel_latencies

    return kernel_latencies(ops, kernels, networks)[0]


BLOCK_OVERHEADS = ("refit", "kernel")


class BlockLatencyPredictor(BaseEstimator):
    """End-to-end latency from blocks: measured lookup, else block regressor, else kernel sum.

    ``fit(ops, networks, blocks)``: ``ops``/``networks`` as for ``LatencyPredictor``
    (which is fitted inside with the kernel parameters); ``blocks``: block rows of the
    training networks (``graph_blocks``) with ``latency_ms`` (measured time of the block
    alone, NaN where unmeasured). ``block_overhead``: ``kernel`` applies the kernel
    predictor's own overhead term to the block sum (each block's kernels rescaled to the
    block's value); ``refit`` fits e2e = a*sum + b + c*n_kernels (non-negative, relative
    error) on out-of-fold block sums of the training networks (lookup and regressor rebuilt
    without the held-out networks, ``block_cv`` folds). On benchmarks/block_lookup.py
    (12 held-out networks, one run) ``kernel`` scored 3.4% MAPE, ``refit`` 4.1%.
    ``use_lookup`` / ``use_regressor`` switch the two block sources off (for comparison)."""

    def __init__(self, runtime: str = "xnnpack", overhead: str = "auto", stack_cv: int = 5,
                 min_samples_per_type: int = 10, kernel_baseline: str = "auto",
                 min_samples_per_kind: int = 5, block_overhead: str = "kernel", block_cv: int = 5,
                 use_lookup: bool = True, use_regressor: bool = True,
                 random_state: Optional[int] = 0) -> None:
        self.runtime = runtime
        self.overhead = overhead
        self.stack_cv = stack_cv
        self.min_samples_per_type = min_samples_per_type
        self.kernel_baseline = kernel_baseline
        self.min_samples_per_kind = min_samples_per_kind
        self.block_overhead = block_overhead
        self.block_cv = block_cv
        self.use_lookup = use_lookup
        self.use_regressor = use_regressor
        self.random_state = random_state

    # -- pieces ---------------------------------------------------------------------
    def _fit_sources(self, blocks: pd.DataFrame):
        measured = blocks[np.isfinite(blocks["latency_ms"].to_numpy(dtype=float)) & (blocks["latency_ms"] > 0)]
        lookup = BlockLookup().fit(measured) if self.use_lookup else None
        reg = None
        if self.use_regressor and len(measured):
            # One row per distinct block (median time): common blocks do not outweigh the rest.
            per_key = measured.groupby("block_key", as_index=False).agg(
                {**{c: "first" for c in [KIND, *BLOCK_FEATURES]}, "latency_ms": "median"})
            if len(per_key) >= 2:
                reg = BlockLatencyRegressor(min_samples_per_kind=self.min_samples_per_kind,
                                            random_state=self.random_state)
                reg.fit(per_key[[KIND, *BLOCK_FEATURES]], per_key["latency_ms"].to_numpy(dtype=float))
        return lookup, reg

    def _sums(self, ops, blocks, lookup, reg, kernel_model=None) -> pd.DataFrame:
        b = block_breakdown(self.kernel_predictor_, ops, blocks, lookup=lookup, regressor=reg,
                            kernel_model=kernel_model)
        k = b["kernels"]
        nets = k[NETWORK].to_numpy()
        out = pd.DataFrame({"block_sum_ms": pd.Series(b["scaled"]).groupby(nets, sort=False).sum(),
                            "kernel_sum_ms": pd.Series(b["kernel_pred"]).groupby(nets, sort=False).sum(),
                            "n_kernels": pd.Series(np.ones(len(k))).groupby(nets, sort=False).sum()})
        out["block_sum_ms"] += b["orphan_ms"].reindex(out.index).fillna(0.0)
        bl = b["blocks"]
        for s in SOURCES:
            out[f"n_{s}"] = (bl["source"] == s).groupby(bl[NETWORK].to_numpy()).sum().reindex(out.index).fillna(0)
        out["n_blocks"] = bl.groupby(NETWORK).size().reindex(out.index).fillna(0)
        return out, b

    @staticmethod
    def _design(s: pd.DataFrame) -> np.ndarray:
        return np.column_stack([s["block_sum_ms"].to_numpy(), np.ones(len(s)), s["n_kernels"].to_numpy()])

    # -- API --------------------------------------------------------------------------
    def fit(self, ops: pd.DataFrame, networks: pd.DataFrame, blocks: pd.DataFrame) -> "BlockLatencyPredictor":
        from host.modeler.predictor import LatencyPredictor

        if self.block_overhead not in BLOCK_OVERHEADS:
            raise PredictorError(f"unknown block_overhead {self.block_overhead!r}",
                                 hint=f"use one of: {', '.join(BLOCK_OVERHEADS)}")
        for col in (NETWORK, "block_key", KIND, "ops", "latency_ms"):
            if col not in blocks.columns:
                raise PredictorError(f"the blocks table needs a {col!r} column",
                                     hint="build it with host.modeler.blocks.graph_blocks plus measured latency_ms")
        ops = ops.reset_index(drop=True)
        blocks = blocks.reset_index(drop=True)
        self.kernel_predictor_ = LatencyPredictor(
            runtime=self.runtime, overhead=self.overhead, stack_cv=self.stack_cv,
            min_samples_per_type=self.min_samples_per_type, kernel_baseline=self.kernel_baseline,
            random_state=self.random_state).fit(ops, networks)
        self.lookup_, self.regressor_ = self._fit_sources(blocks)
        self.n_blocks_measured_ = int(np.isfinite(blocks["latency_ms"].to_numpy(dtype=float)).sum())
        self.block_kinds_ = sorted(self.regressor_.models_) if self.regressor_ is not None else []
        if self.block_overhead == "refit":
            self._fit_overhead(ops, networks, blocks)
        return self

    def _fit_overhead(self, ops, networks, blocks) -> None:
        from scipy.optimize import nnls
        from sklearn.model_selection import GroupKFold

        e2e = networks.groupby(NETWORK)["latency_ms"].median()
        multi = blocks.groupby(NETWORK).size()
        nets = [n for n in e2e.index if multi.get(n, 0) >= 2]
        if len(nets) < 3:
            raise PredictorError(f"only {len(nets)} training networks have several blocks and an "
                                 "end-to-end latency", hint="the block overhead stage needs >= 3")
        kp = self.kernel_predictor_
        k_all = kp._kernels(ops)
        k_lat = _kernel_latencies(ops, k_all, networks)
        has_y = np.isfinite(k_lat) & (k_lat > 0)
        folds = min(self.block_cv, len(nets) // 2)
        parts = []
        if folds >= 2:
            inner = clone(kp.model_.kernel_model_).set_params(interval_cv=0)
            gkf = GroupKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            net_arr = np.array(nets, dtype=object)
            for tr, te in gkf.split(net_arr, groups=net_arr):
                held = set(net_arr[te])
                ktr = has_y & ~k_all[NETWORK].isin(held).to_numpy()
                km = clone(inner).fit(k_all[ktr], k_lat[ktr])
                lookup, reg = self._fit_sources(blocks[~blocks[NETWORK].isin(held)])
                o = ops[ops[NETWORK].isin(held)]
                bl = blocks[blocks[NETWORK].isin(held)]
                parts.append(self._sums(o, bl, lookup, reg, kernel_model=km)[0])
            sums = pd.concat(parts)
        else:
            o = ops[ops[NETWORK].isin(nets)]
            sums = self._sums(o, blocks[blocks[NETWORK].isin(nets)], self.lookup_, self.regressor_)[0]
        sums = sums.loc[[n for n in nets if n in sums.index]]
        t = e2e.loc[sums.index].to_numpy(dtype=float)
        w = 1.0 / t
        coef, _ = nnls(self._design(sums) * w[:, None], t * w)
        self.overhead_params_ = coef
        self.oof_mape_pct_ = float(np.mean(np.abs(self._design(sums) @ coef - t) / t) * 100.0)

    def _apply(self, sums: pd.DataFrame, b: Dict[str, Any]) -> np.ndarray:
        if self.block_overhead == "refit":
            return self._design(sums) @ self.overhead_params_
        nm = self.kernel_predictor_.model_
        # The kernel model's overhead stage on the block sums (kernels rescaled per block).
        agg = nm._aggregate(b["kernels"], b["scaled"]).loc[sums.index]
        stage = getattr(nm, "overhead_model_", None)
        if stage is not None:
            return stage.predict(agg.to_numpy(dtype=float))
        return nm._apply_form(nm.overhead_mode_, nm.overhead_params_, agg)

    def predict_tables(self, ops: pd.DataFrame, blocks: pd.DataFrame) -> pd.DataFrame:
        """Per network: pred_ms, lo_ms, hi_ms, block_sum_ms, kernel_sum_ms, kernel_pred_ms
        (the kernel predictor alone), n_kernels, n_unknown_kernels, n_blocks, n_lookup,
        n_regressor, n_kernel_sum."""
        check_is_fitted(self, "kernel_predictor_")
        sums, b = self._sums(ops, blocks, self.lookup_, self.regressor_)
        pred = self._apply(sums, b)
        kd = self.kernel_predictor_.predict_ops(ops).reindex(sums.index)
        sums["pred_ms"] = pred
        sums["kernel_pred_ms"] = kd["pred_ms"].to_numpy()
        # The kernel predictor's relative interval around the block-based prediction.
        sums["lo_ms"] = pred * (kd["lo_ms"] / kd["pred_ms"]).to_numpy()
        sums["hi_ms"] = pred * (kd["hi_ms"] / kd["pred_ms"]).to_numpy()
        sums["n_unknown_kernels"] = kd["n_unknown_kernels"].to_numpy()
        return sums

    def predict_blocks(self, ops: pd.DataFrame, blocks: pd.DataFrame) -> pd.DataFrame:
        """Per block: network, block_index, block_key, kind, ops, source, pred_ms, kernel_sum_ms."""
        check_is_fitted(self, "kernel_predictor_")
        b = block_breakdown(self.kernel_predictor_, ops, blocks, lookup=self.lookup_, regressor=self.regressor_)
        return b["blocks"][[NETWORK, "block_index", "block_key", KIND, "ops", "source", "pred_ms",
                            "kernel_sum_ms", "n_kernels"]]

    def predict_files(self, paths: Sequence[str]) -> pd.DataFrame:
        """Predict .tflite files; index = path."""
        ops, blocks = blocks_of_files(paths)
        return self.predict_tables(ops, blocks)

    # Kernel-level views, delegated (predict --per-op, evaluate on op tables).
    def predict_ops(self, ops: pd.DataFrame) -> pd.DataFrame:
        """The kernel predictor alone (no blocks): see ``LatencyPredictor.predict_ops``."""
        return self.kernel_predictor_.predict_ops(ops)

    def predict_kernels(self, ops: pd.DataFrame) -> pd.DataFrame:
        return self.kernel_predictor_.predict_kernels(ops)

    @property
    def model_(self):
        return self.kernel_predictor_.model_

    @property
    def kernel_types_(self) -> List[str]:
        return self.kernel_predictor_.kernel_types_

    @property
    def n_networks_(self) -> int:
        return self.kernel_predictor_.n_networks_

    @property
    def n_kernels_measured_(self) -> int:
        return self.kernel_predictor_.n_kernels_measured_


def block_training_table(store, *, device: str, delegate: str, threads: Optional[int] = None,
                         models_dir: Optional[str] = None, require_timed: bool = True) -> Optional[pd.DataFrame]:
    """Block rows (``graph_blocks``, network = model sha256) of every model measured on
    (device, delegate[, threads]), with ``latency_ms`` = median of the block's measured
    times (NaN where not measured); None when no run of the selection has block times
    (with ``require_timed``) or no model file is found."""
    from host.modeler.predictor import _model_path, device_runs
    from models_zoo.graph import read_graph

    runs = device_runs(store, device, delegate, threads)
    if runs.empty:
        return None
    timed = store.blocks_df(run_id=[int(r) for r in runs["run_id"]])
    if timed.empty and require_timed:
        return None
    per_block = (timed.groupby(["model_sha256", "block_index"])["avg_ms"].median() if len(timed)
                 else pd.Series(dtype=float, index=pd.MultiIndex.from_arrays([[], []])))
    paths = {m.sha256: m.path for m in store.models()}
    frames = []
    for sha, grp in runs.groupby("model_sha256"):
        path = _model_path(paths.get(sha), str(grp.iloc[0]["model_name"]), sha, models_dir)
        if path is None:
            continue
        bl = graph_blocks(read_graph(path), sha)
        if bl.empty:
            continue
        idx = pd.MultiIndex.from_arrays([[sha] * len(bl), bl["block_index"].to_numpy()])
        bl["latency_ms"] = per_block.reindex(idx).to_numpy(dtype=float)
        frames.append(bl)
    return pd.concat(frames, ignore_index=True) if frames else None
