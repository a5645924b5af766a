"""Whole-network latency predictors for one device and delegate, from .tflite graphs.

``LatencyPredictor`` = the runtime's kernel grouping (rules as data, host/modeler/rules)
+ ``NetworkLatencyModel`` (per-kernel-type regressors summed, plus an overhead term
fitted on end-to-end latencies). Its training tables are plain DataFrames, so a
predictor file can refit it when the scikit-learn version changes.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from opcost.errors import PredictorError, short_list

log = logging.getLogger(__name__)

NETWORK = "network"
RUNTIME_OF_DELEGATE = {"cpu": "cpu", "xnnpack": "xnnpack", "gpu": "gpu", "nnapi": "cpu"}


def graph_ops(graph: Any, network: str) -> pd.DataFrame:
    """Feature rows of the main-subgraph ops of ``graph``, tagged with ``network``."""
    from host.modeler.features import ops_from_graphs

    return ops_from_graphs([_MainOps(graph)], [network], network_col=NETWORK)


class _MainOps:
    """The main subgraph's ops (slicing and timing work there)."""

    def __init__(self, graph: Any) -> None:
        self.ops = getattr(graph, "main_ops", None) or graph.ops


# Smallest batch read over a pool when workers > 1 (below it, start-up surely outweighs
# the work; a round number, not a measured break-even).
POOL_MIN_FILES = 48
_POOL_CHUNK_FILES = 16


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: reading many files allocates many small,
    acyclic objects (freed by reference counting) and would otherwise trigger repeated
    full collections over everything alive (measured: ~12% of ``ops_of_files`` time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _file_op_rows(path: str) -> List[tuple]:
    """Raw op rows (``features.graph_op_rows``) of the main subgraph of one .tflite file."""
    from host.modeler.features import graph_op_rows
    from models_zoo.graph import read_graph

    return graph_op_rows(_MainOps(read_graph(str(path))))


def _files_op_rows_or_none(paths: Sequence[str]) -> List[Optional[List[tuple]]]:
    """Pool worker: ``_file_op_rows`` per file, None where it failed (the caller redoes
    that file itself, so the error it raises is the one a serial run raises)."""
    out: List[Optional[List[tuple]]] = []
    with _gc_paused():  # a collection here would also touch (copy) all the parent's pages
        for p in paths:
            try:
                out.append(_file_op_rows(p))
            except Exception:  # noqa: BLE001 - re-raised by the caller with full context
                out.append(None)
    return out


def _rows_of_files(paths: Sequence[str], workers: int = 1) -> List[List[tuple]]:
    """``_file_op_rows`` of every file, in order: serially, or over a process pool (fork)
    when ``workers`` > 1 and there are at least ``POOL_MIN_FILES`` files."""
    import multiprocessing

    paths = [str(p) for p in paths]
    if (workers <= 1 or len(paths) < POOL_MIN_FILES
            or "fork" not in multiprocessing.get_all_start_methods()):
        with _gc_paused():
            return [_file_op_rows(p) for p in paths]
    import models_zoo.graph  # noqa: F401 - imported once here, not in every worker
    from concurrent.futures import ProcessPoolExecutor

    step = max(1, min(_POOL_CHUNK_FILES, -(-len(paths) // (2 * workers))))
    chunks = [paths[i:i + step] for i in range(0, len(paths), step)]
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as ex:
            parts = list(ex.map(_files_op_rows_or_none, chunks))
    except (OSError, RuntimeError) as e:  # no processes allowed here, broken pool...
        log.debug("process pool unavailable (%s); reading %d files serially", e, len(paths))
        return _rows_of_files(paths, 1)
    rows = [r for part in parts for r in part]
    return [r if r is not None else _file_op_rows(p) for p, r in zip(paths, rows)]


def ops_of_files(paths: Sequence[str], names: Optional[Sequence[str]] = None, *,
                 workers: int = 1) -> pd.DataFrame:
    """One op table for many .tflite files (network id = the name, default the path).

    The files' op rows are read in this process, or over ``workers`` processes (batches
    of at least ``POOL_MIN_FILES`` files); the table, its costs and derived columns are
    then built once for all files. A pool is not the default: on the shared 2-core
    machine (benchmarks/predict_speed.py, 1,000 zoo files, batches of 250) 2 workers
    used ~1.6x the CPU time of serial reading (fork, pickling) and were slower."""
    from host.modeler.features import ops_from_rows

    names = list(names) if names is not None else [str(p) for p in paths]
    if len(names) != len(paths):
        raise PredictorError(f"{len(names)} names for {len(paths)} files")
    if not len(paths):
        return pd.DataFrame()
    return ops_from_rows(_rows_of_files(paths, workers), names, network_col=NETWORK)


def kernel_latencies(ops: pd.DataFrame, kernels: pd.DataFrame, networks: pd.DataFrame):
    """``(latency_ms, from_e2e)`` per kernel row of ``kernels`` (grouped from ``ops``):
    the sum of its ops' measured times (NaN when any is unmeasured); a network that is a
    single kernel (a micro-benchmark) measured only end to end gives its end-to-end time
    (``from_e2e`` marks those kernels)."""
    op_lat = ops["latency_ms"].to_numpy(dtype=float)
    k_lat = np.array([np.sum(op_lat[rows]) if np.all(np.isfinite(op_lat[rows])) else np.nan
                      for rows in kernels["op_rows"]], dtype=float)
    e2e = networks.groupby(NETWORK)["latency_ms"].median()
    n_k = kernels.groupby(NETWORK)[NETWORK].transform("size").to_numpy()
    single = (n_k == 1) & ~np.isfinite(k_lat)
    k_lat[single] = kernels.loc[single, NETWORK].map(e2e).to_numpy(dtype=float)
    return k_lat, single


class LatencyPredictor(BaseEstimator):
    """Predict end-to-end latency (ms) of .tflite networks on one device + delegate.

    ``fit(ops, networks)``: ``ops`` has one row per op of the training networks (columns
    of ``host.modeler.features``, ``network``, ``op_index`` and ``latency_ms``: the
    measured time of that op alone, NaN where unmeasured); ``networks`` has ``network``
    and ``latency_ms`` (measured end-to-end). Kernel latency = sum of its ops' times;
    a kernel with any unmeasured op is left out of the kernel fit. ``kernel_baseline``:
    ``KernelLatencyRegressor(baseline=...)``; "auto" = roofline except on the GPU."""

    def __init__(self, runtime: str = "xnnpack", overhead: str = "auto", stack_cv: int = 5,
                 min_samples_per_type: int = 10, kernel_baseline: str = "auto",
                 random_state: Optional[int] = 0) -> None:
        self.runtime = runtime
        self.overhead = overhead
        self.stack_cv = stack_cv
        self.min_samples_per_type = min_samples_per_type
        self.kernel_baseline = kernel_baseline
        self.random_state = random_state

    def _kernel_baseline(self) -> str:
        """``kernel_baseline`` "auto": ``roofline`` on CPU runtimes (test kernels, e.g. of
        VGG or ResNets, are often larger than every micro-benchmark; tree regressors on
        log latency flatten there), ``none`` on the GPU (li2024-tuned as it is)."""
        if self.kernel_baseline == "auto":
            return "none" if self.runtime == "gpu" else "roofline"
        return self.kernel_baseline

    def _kernels(self, ops: pd.DataFrame) -> pd.DataFrame:
        return self.grouper_.transform(ops)

    def fit(self, ops: pd.DataFrame, networks: pd.DataFrame) -> "LatencyPredictor":
        from host.modeler.kernels import KernelGrouper
        from host.modeler.regressors import KernelLatencyRegressor, NetworkLatencyModel

        for col in (NETWORK, "latency_ms"):
            if col not in ops.columns or col not in networks.columns:
                raise PredictorError(f"training tables need a {col!r} column in both ops and networks")
        ops = ops.reset_index(drop=True)
        names = ops["kernel_name"].tolist() if "kernel_name" in ops.columns else None
        self.grouper_ = KernelGrouper(runtime=self.runtime, network_col=NETWORK).fit(ops, names)
        kernels = self._kernels(ops)
        k_lat, single = kernel_latencies(ops, kernels, networks)
        e2e = networks.groupby(NETWORK)["latency_ms"].median()
        # Those networks' end-to-end times are their kernel times: they say nothing about
        # the overhead between kernels and would swamp its fit (hundreds of micro models
        # against tens of real networks). The overhead stage uses the others when >= 3.
        single_nets = set(kernels.loc[single, NETWORK])
        e2e_overhead = e2e[~e2e.index.isin(single_nets)]
        if len(e2e_overhead) < 3:
            e2e_overhead = e2e
        km = KernelLatencyRegressor(min_samples_per_type=self.min_samples_per_type,
                                    baseline=self._kernel_baseline(), random_state=self.random_state)
        self.model_ = NetworkLatencyModel(kernel_model=km, overhead=self.overhead, stack_cv=self.stack_cv,
                                          network_col=NETWORK, random_state=self.random_state)
        self.model_.fit(kernels, k_lat, e2e_overhead)
        self.kernel_types_ = sorted(set(kernels["kernel_type"]))
        self.n_networks_ = int(kernels[NETWORK].nunique())
        self.n_kernels_measured_ = int(np.isfinite(k_lat).sum())
        return self

    def predict_ops(self, ops: pd.DataFrame) -> pd.DataFrame:
        """Per network: pred_ms, lo_ms, hi_ms, kernel_sum_ms, n_kernels, n_unknown_kernels."""
        if not hasattr(self, "model_"):
            raise PredictorError("predictor is not fitted")
        return self.model_.predict_detail(self._kernels(ops.reset_index(drop=True)))

    def predict_kernels(self, ops: pd.DataFrame) -> pd.DataFrame:
        """Per kernel: network, kernel_type, fused_ops, pred_ms, lo_ms, hi_ms, unknown_type."""
        kernels = self._kernels(ops.reset_index(drop=True))
        d = self.model_.kernel_model_.predict_detail(kernels)
        out = kernels[[NETWORK, "op_index", "op_type", "kernel_type", "fused_ops", "flops"]].copy()
        for c in ("pred", "lo", "hi"):
            out[f"{c}_ms"] = d[c].to_numpy()
        out["unknown_type"] = d["unknown_type"].to_numpy()
        return out

    def predict_files(self, paths: Sequence[str]) -> pd.DataFrame:
        """Predict .tflite files; index = path."""
        return self.predict_ops(ops_of_files(paths))


def training_tables(store, *, device: str, delegate: str, threads: Optional[int] = None,
                    models_dir: Optional[str] = None, none_if_no_runs: bool = False) -> Optional[Dict[str, pd.DataFrame]]:
    """Training tables for ``LatencyPredictor`` from the runs of one device and delegate.

    ``device`` matches the serial or the device model name. Per-op times come from the
    runs' op rows, matched to graph ops per measurement by ``xnnpack_match.match_op_rows``:
    TFLite op rows (and the local device's sliced per-op timings) by node index with the
    op type checked, XNNPACK delegate operator rows in execution order onto the graph's
    XNNPACK kernels; a measurement whose rows do not line up is left out with a warning,
    never mis-assigned. The median over a model's runs is its op's time. Single-kernel
    models (micro-benchmarks) give their end-to-end time as that kernel's time. Model files
    are found by their stored path, else by ``<models_dir>/**/<name>`` with the same sha256.
    A device without runs is a PredictorError, or None with ``none_if_no_runs``."""
    runs = device_runs(store, device, delegate, threads)
    if runs.empty:
        if none_if_no_runs:
            return None
        known = sorted(d.serial for d in store.devices())
        raise PredictorError(f"no measured runs of device {device!r} with delegate {delegate}"
                             + (f" and {threads} thread(s)" if threads else "") + " in the store",
                             hint="measure with `opcost profile`/`opcost campaign run`"
                                  + (f"; devices in the store: {short_list(known, 8)}" if known else ""))
    from host.modeler.xnnpack_match import load_operator_rules, match_op_rows
    from models_zoo.graph import read_graph

    ops_rows = store.ops_df(run_id=list(runs["run_id"]), section="run")
    rows_of_run = dict(tuple(ops_rows.groupby("run_id", sort=False))) if len(ops_rows) else {}
    operator_rules = load_operator_rules() if delegate == "xnnpack" else None
    paths = {m.sha256: m.path for m in store.models()}
    op_frames: List[pd.DataFrame] = []
    nets: List[Dict[str, Any]] = []
    missing: List[str] = []
    skipped: List[str] = []
    n_matched_runs = n_skipped_rows = 0
    for sha, grp in runs.groupby("model_sha256"):
        name = str(grp.iloc[0]["model_name"])
        path = _model_path(paths.get(sha), name, sha, models_dir)
        if path is None:
            missing.append(name)
            continue
        ops = graph_ops(read_graph(path), sha)
        kernels = None
        per_run: List[pd.Series] = []
        for run_id, run_delegate in zip(grp["run_id"], grp["delegate"]):
            rows = rows_of_run.get(run_id)
            if rows is None:
                continue
            if kernels is None and run_delegate == "xnnpack" and rows["delegated"].fillna(False).astype(bool).any():
                from host.modeler.kernels import group_ops, load_rules

                kernels = group_ops(ops, load_rules("xnnpack"))
            m = match_op_rows(rows, ops, delegate=str(run_delegate), kernels=kernels,
                              operator_rules=operator_rules)
            if m.skipped:
                skipped.append(f"{name} (run {run_id}): {m.skipped}")
                n_skipped_rows += m.n_skipped_rows
            else:
                n_matched_runs += 1
            if m.latency_ms:
                per_run.append(pd.Series(m.latency_ms, dtype=float))
        lat = np.full(len(ops), np.nan)
        if per_run:
            times = pd.concat(per_run, axis=1).median(axis=1)
            lat = ops["op_index"].map(times).to_numpy(dtype=float)
        ops["latency_ms"] = lat
        e2e_ms = float(grp["mean_ms"].median())
        ops["model_name"] = grp.iloc[0]["model_name"]
        op_frames.append(ops)
        nets.append({NETWORK: sha, "latency_ms": e2e_ms, "model_name": grp.iloc[0]["model_name"],
                     "n_runs": int(len(grp))})
    if skipped:
        log.warning("op-profile rows of %d measurement(s) could not be matched to graph ops and were "
                    "left out (%d rows; %d measurement(s) matched): %s%s", len(skipped), n_skipped_rows,
                    n_matched_runs, "; ".join(skipped[:3]), " ..." if len(skipped) > 3 else "")
    if missing:
        log.warning("%d model(s) have no file on this machine and are left out: %s%s", len(missing),
                    ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")
    if not op_frames:
        origins = sorted({str(o) for o in runs.get("origin", pd.Series(dtype=object)).dropna()
                          if str(o).startswith("dataset:")})
        if origins and len(missing) == runs["model_sha256"].nunique():
            # Imported datasets ship timings, not model files; only li2024's GPU runs carry
            # per-op rows with their own features.
            raise PredictorError(f"the {delegate} runs of {device} were imported from {', '.join(origins)}, which has "
                                 "no .tflite files and no per-op times for them, so there is nothing to fit on",
                                 hint="fit li2024 phones with `--delegate gpu` (its per-op GPU kernels); ganesan2020 "
                                      "phones are modelled with `opcost signature select` / `opcost adapt`")
        raise PredictorError("none of the measured models' .tflite files were found",
                             hint="pass --models-dir DIR where the measured .tflite files are")
    return {"ops": pd.concat(op_frames, ignore_index=True), "networks": pd.DataFrame(nets)}


def device_runs(store, device: str, delegate: str, threads: Optional[int] = None,
                origin: Optional[str] = None) -> pd.DataFrame:
    """The store's runs of ``device`` (a serial, else a device model name: the runs of every
    device of that model) with ``delegate`` (and ``threads``, ``origin`` when given)."""
    filt: Dict[str, Any] = {"delegate": delegate}
    if threads:
        filt["threads"] = threads
    if origin:
        filt["origin"] = origin
    runs = store.runs_df(device=device, **filt)
    if runs.empty:
        runs = store.runs_df(device_model=device, **filt)
    return runs


def _model_path(path: Optional[str], name: str, sha: str, models_dir: Optional[str]) -> Optional[str]:
    import os

    if path and os.path.isfile(path):
        return path
    if models_dir:
        from pathlib import Path

        from opcost.records import sha256_file

        base = os.path.basename(path or name)
        for cand in Path(models_dir).rglob("*.tflite"):
            if (cand.name == base or cand.stem == name) and sha256_file(str(cand)) == sha:
                return str(cand)
    return None
