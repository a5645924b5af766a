"""What the modeler commands do: fit from the store, predict files, evaluate on the store."""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from opcost.errors import PredictorError, UsageError
from host.modeler import metrics
from host.modeler.predictor import (NETWORK, RUNTIME_OF_DELEGATE, LatencyPredictor, device_runs, ops_of_files,
                                    training_tables)
from host.modeler.predictor_file import load_predictor, save_predictor

log = logging.getLogger(__name__)
KIND = "network-latency"
# Transfer methods offered by `opcost adapt --from` (the baselines "scratch" and "source"
# are `opcost fit` and the source predictor itself).
TRANSFER_METHODS = ("stack", "ratio", "pooled", "overhead_only")


# Runs imported from li2024 (`opcost dataset import li2024`): their ops carry their features.
DATASET_ORIGIN = "dataset:li2024"


def dataset_training_tables(store, *, device: str, delegate: str) -> Optional[Dict[str, pd.DataFrame]]:
    """Training tables from imported dataset runs whose ops carry their own features
    (li2024 GPU per-op rows); None when the device has no such runs."""
    from host.modeler.features import ops_from_li2024

    runs = device_runs(store, device, delegate, origin=DATASET_ORIGIN)
    if runs.empty:
        return None
    frames, nets = [], []
    for r in runs.itertuples(index=False):
        m = store.get_measurement(int(r.run_id))
        if not m.output.ops:
            continue
        raw = pd.DataFrame({"model": r.model_sha256, "op_index": [o.index for o in m.output.ops],
                            "operation": [o.node_type for o in m.output.ops],
                            "feature": [o.attrs.get("feature", {}) for o in m.output.ops]})
        ops = ops_from_li2024(raw)
        ops[NETWORK] = r.model_sha256
        ops["op_index"] = raw["op_index"].to_numpy()
        ops["latency_ms"] = [o.avg_ms for o in m.output.ops]
        ops["kernel_name"] = [o.attrs.get("kernel_name") or o.name for o in m.output.ops]
        ops["model_name"] = r.model_name
        frames.append(ops)
        nets.append({NETWORK: r.model_sha256, "latency_ms": float(r.mean_ms), "model_name": r.model_name,
                     "n_runs": 1})
    if not frames:
        return None
    return {"ops": pd.concat(frames, ignore_index=True), "networks": pd.DataFrame(nets)}


def _hold_out(tables: Dict[str, pd.DataFrame], patterns: Sequence[str]) -> Tuple[Dict[str, pd.DataFrame], List[str]]:
    """``tables`` without the networks whose model name matches a shell pattern, and the
    held-out model names; UsageError for a pattern that matches none."""
    nets = tables["networks"]
    names = nets["model_name"].astype(str)
    unmatched = [p for p in patterns if not names.map(lambda n: fnmatch.fnmatchcase(n, p)).any()]
    if unmatched:
        raise UsageError(f"--hold-out {', '.join(repr(p) for p in unmatched)} matches none of the "
                         f"{len(nets)} measured networks",
                         hint="model names look like: " + ", ".join(sorted(set(names))[:5]))
    held = names.map(lambda n: any(fnmatch.fnmatchcase(n, p) for p in patterns)).to_numpy()
    ids = set(nets.loc[held, NETWORK])
    out = {k: (v[~v[NETWORK].isin(ids)] if NETWORK in v.columns else v) for k, v in tables.items()}
    return out, sorted(set(names[held]))


def _serials_used(store, device: str, delegate: str, threads: Optional[int], origin: Optional[str]) -> List[str]:
    """The serials whose runs a fit on ``device`` (a serial, or a device model name) reads
    (``threads`` applies to measured runs only, as in the table builders)."""
    if store.device(device) is not None:
        return [device]
    runs = device_runs(store, device, delegate, None if origin else threads, origin)
    return sorted(set(runs["device_serial"]))


def fit_from_store(store, *, device: str, delegate: str, threads: Optional[int] = None,
                   models_dir: Optional[str] = None, overhead: str = "auto",
                   out_path: Optional[str] = None, blocks: Optional[bool] = None,
                   hold_out: Sequence[str] = ()) -> Dict[str, Any]:
    """Fit a LatencyPredictor on the store's runs of (device, delegate); save it if asked.

    ``blocks``: None = a BlockLatencyPredictor when the runs have per-block times
    (``profile --per-block``), True = require them, False = kernels only. ``hold_out``:
    shell patterns of model names left out of fitting (``evaluate`` then scores them).
    ``device``: a serial, or a device model name one stored device has (recorded as its serial)."""
    device = store.resolve_device(device)
    tables = dataset_training_tables(store, device=device, delegate=delegate)
    source = DATASET_ORIGIN if tables is not None else "measured"
    if tables is None:
        tables = training_tables(store, device=device, delegate=delegate, threads=threads,
                                 models_dir=models_dir)
    # A model name several stored devices share pools their runs (e.g. a lab's Pixel 4s);
    # when the runs read turn out to be one device's, that device's serial is recorded.
    used = _serials_used(store, device, delegate, threads, DATASET_ORIGIN if source == DATASET_ORIGIN else None)
    pooled = used if len(used) > 1 else []
    if len(used) == 1:
        device = used[0]
    held_names: List[str] = []
    if hold_out:
        tables, held_names = _hold_out(tables, hold_out)
    nets = tables["networks"]
    if len(nets) < 3 and held_names:
        raise UsageError(f"--hold-out leaves only {len(nets)} of the networks measured on {device} ({delegate}) "
                         f"for fitting ({len(held_names)} held out); need >= 3",
                         hint="hold out fewer networks (narrower patterns)")
    if len(nets) < 3:
        raise PredictorError(f"only {len(nets)} network(s) measured on {device} ({delegate}); need >= 3",
                             hint="measure more networks (e.g. `opcost zoo sample` + `opcost profile --per-op`)")
    block_rows = None
    if blocks is not False and source == "measured":
        from host.modeler.blocks import block_training_table

        block_rows = block_training_table(store, device=device, delegate=delegate, threads=threads,
                                          models_dir=models_dir)
        if block_rows is not None and held_names:
            block_rows = block_rows[block_rows[NETWORK].isin(set(nets[NETWORK]))]
    if blocks and block_rows is None:
        raise PredictorError(f"no per-block times of {device} ({delegate}) in the store",
                             hint="measure networks with `opcost profile --device local --per-block`")
    if block_rows is not None:
        from host.modeler.blocks import BlockLatencyPredictor

        tables = {**tables, "blocks": block_rows}
        predictor = BlockLatencyPredictor(runtime=RUNTIME_OF_DELEGATE[delegate], overhead=overhead).fit(**tables)
    else:
        predictor = LatencyPredictor(runtime=RUNTIME_OF_DELEGATE[delegate], overhead=overhead).fit(**tables)
    summary = {
        "kind": KIND,
        "device": device,
        "device_model": store.device_model(device) or (device if pooled else None),
        "pooled_devices": pooled,
        "delegate": delegate,
        "threads": threads,
        "source": source,
        "n_networks": predictor.n_networks_,
        "n_kernels_measured": predictor.n_kernels_measured_,
        "kernel_types": predictor.kernel_types_,
        "overhead": predictor.model_.overhead_mode_,
        **_interval_summary(predictor),
        "training_networks": sorted(nets[NETWORK].astype(str)),
        "training_model_names": sorted(nets["model_name"].astype(str)),
        "held_out_model_names": held_names,
    }
    if block_rows is not None:
        summary["blocks"] = {"n_blocks_measured": predictor.n_blocks_measured_,
                             "n_keys_measured": len(predictor.lookup_) if predictor.lookup_ is not None else 0,
                             "kinds_with_regressor": predictor.block_kinds_,
                             "overhead": predictor.block_overhead}
    if out_path:
        save_predictor(out_path, predictor, meta=summary, training=tables)
        summary["path"] = os.path.abspath(out_path)
    return summary


@contextlib.contextmanager
def _each_message_once(logger_name: str):
    """Within the block, a record logged again with the same text on ``logger_name`` is
    dropped (one prediction asks the kernel model several times: network totals, blocks,
    per-op rows, and each would repeat the same "never seen in training" warning)."""
    seen = set()

    def once(record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in seen:
            return False
        seen.add(text)
        return True

    logger = logging.getLogger(logger_name)
    logger.addFilter(once)
    try:
        yield
    finally:
        logger.removeFilter(once)


def predict_files(predictor_path: str, paths: List[str], *, per_op: bool = False,
                  per_block: bool = False) -> Dict[str, Any]:
    """Predict .tflite files; one record per file (kernels listed with per_op, blocks with
    the source of each block's time with per_block)."""
    with _each_message_once("opcost.modeler"):
        return _predict_files(predictor_path, paths, per_op=per_op, per_block=per_block)


def _predict_files(predictor_path: str, paths: List[str], *, per_op: bool, per_block: bool) -> Dict[str, Any]:
    from host.modeler.blocks import BlockLatencyPredictor, block_breakdown, blocks_of_files

    predictor, meta = _load(predictor_path)
    block_table = None
    if isinstance(predictor, BlockLatencyPredictor):
        ops, block_table = blocks_of_files(paths)
        detail = predictor.predict_tables(ops, block_table)
        block_view = predictor.predict_blocks(ops, block_table) if per_block else None
    else:
        ops = ops_of_files(paths)
        detail = predictor.predict_ops(ops)
        block_view = None
        if per_block:  # a kernel-only predictor: every block is its kernel sum
            bops, block_table = blocks_of_files(paths)
            block_view = block_breakdown(predictor, bops, block_table)["blocks"]
    kernels = predictor.predict_kernels(ops) if per_op else None
    out = []
    for p in paths:
        d = detail.loc[str(p)]
        rec = {"model": str(p), "pred_ms": float(d["pred_ms"]), "lo_ms": float(d["lo_ms"]),
               "hi_ms": float(d["hi_ms"]), "kernel_sum_ms": float(d["kernel_sum_ms"]),
               "n_kernels": int(d["n_kernels"]), "n_unknown_kernels": int(d["n_unknown_kernels"]),
               "device": meta.get("device"), "delegate": meta.get("delegate")}
        if "n_lookup" in d.index:
            rec["blocks_by_source"] = {s: int(d[f"n_{s}"]) for s in ("lookup", "regressor", "kernel_sum")}
            rec["kernel_only_pred_ms"] = float(d["kernel_pred_ms"])
        if block_view is not None:
            b = block_view[block_view[NETWORK] == str(p)]
            rec["blocks"] = [
                {"block_index": int(r.block_index), "block_key": r.block_key, "kind": r.kind,
                 "ops": r.ops, "source": r.source, "pred_ms": float(r.pred_ms),
                 "kernel_sum_ms": float(r.kernel_sum_ms)}
                for r in b.itertuples(index=False)]
        if kernels is not None:
            k = kernels[kernels[NETWORK] == str(p)]
            rec["kernels"] = [
                {"op_index": int(r.op_index), "op_type": r.op_type, "kernel_type": r.kernel_type,
                 "fused_ops": r.fused_ops, "pred_ms": float(r.pred_ms), "lo_ms": float(r.lo_ms),
                 "hi_ms": float(r.hi_ms), "unknown_type": bool(r.unknown_type)}
                for r in k.itertuples(index=False)]
        out.append(rec)
    return {"networks": out, "predictor": meta}


def evaluate_store(store, predictor_path: str, *, include_training: bool = False,
                   models_dir: Optional[str] = None, plot_path: Optional[str] = None) -> Dict[str, Any]:
    """Score a predictor on the store's networks of its device and delegate."""
    predictor, meta = _load(predictor_path)
    device, delegate = meta["device"], meta["delegate"]
    if meta.get("device_model") and store.device(device) is None:
        # The phone under another serial in this store (another store, adb over Wi-Fi).
        device = store.resolve_device(meta["device_model"], unique=True)
    tables = dataset_training_tables(store, device=device, delegate=delegate) or \
        training_tables(store, device=device, delegate=delegate, threads=meta.get("threads"),
                        models_dir=models_dir)
    nets = tables["networks"]
    trained = set(meta.get("training_networks", []))
    if not include_training:
        nets = nets[~nets[NETWORK].isin(trained)]
    if nets.empty:
        raise PredictorError(f"no networks of {device} ({delegate}) in the store besides the training ones",
                             hint="fit with `--hold-out PATTERN` to keep networks out of training, measure "
                                  "more networks, or pass --all to score the training networks")
    ops = tables["ops"][tables["ops"][NETWORK].isin(set(nets[NETWORK]))]
    from host.modeler.blocks import BlockLatencyPredictor, block_training_table

    brows = None
    if isinstance(predictor, BlockLatencyPredictor):
        brows = block_training_table(store, device=device, delegate=delegate, threads=meta.get("threads"),
                                     models_dir=models_dir, require_timed=False)
    if brows is not None:
        brows = brows[brows[NETWORK].isin(set(nets[NETWORK]))]
        detail = predictor.predict_tables(ops, brows)
    else:
        detail = predictor.predict_ops(ops)
    truth = nets.set_index(NETWORK)["latency_ms"]
    common = truth.index.intersection(detail.index)
    y, p = truth.loc[common].to_numpy(), detail.loc[common, "pred_ms"].to_numpy()
    lo, hi = detail.loc[common, "lo_ms"].to_numpy(), detail.loc[common, "hi_ms"].to_numpy()
    inside = (y >= lo) & (y <= hi)
    res = {"device": device, "delegate": delegate, "which": "all" if include_training else "held-out",
           "metrics": metrics.summary(y, p),
           "interval_coverage": _interval_coverage(predictor),
           "inside_interval_pct": float(inside.mean() * 100) if len(y) else float("nan"),
           "networks": [{"model": n, "measured_ms": float(a), "pred_ms": float(b), "lo_ms": float(c),
                         "hi_ms": float(d), "inside_interval": bool(e)}
                        for n, a, b, c, d, e in zip(nets.set_index(NETWORK).loc[common, "model_name"], y, p,
                                                    lo, hi, inside)]}
    if plot_path:
        res["plot"] = scatter_plot(y, p, plot_path, title=f"{device} / {delegate}")
    return res


def interval_pct(predictor) -> Optional[List[float]]:
    """A network-latency predictor's interval around each prediction, in percent
    ([lower, upper], e.g. [-12.0, 15.3]); None when it has no network stage."""
    model = getattr(predictor, "model_", None)
    if model is None:
        return None
    return [round(float(np.expm1(b)) * 100, 1) for b in model.interval_log_bounds_]


def _interval_coverage(predictor) -> float:
    """Nominal central coverage of a network-latency predictor's intervals."""
    return float(getattr(getattr(predictor, "model_", None), "interval", 0.9))


def _interval_summary(predictor) -> Dict[str, Any]:
    """The interval keys of a fit summary: ``interval_pct``, ``interval_coverage``,
    ``interval_networks`` (how many networks' held-out errors gave it: the training ones
    with an end-to-end latency, or for a transfer simulated on its sources, their networks
    not used in the simulated fit; None for files from before it was recorded),
    ``interval_from`` (``training``, or a transfer's ``target`` / ``sources``),
    ``interval_devices`` (the source devices simulated on) and ``interval_fallback`` (why a
    transfer's bounds are the ``target`` ones although it was not asked for them; "" if not)."""
    n = getattr(getattr(predictor, "model_", None), "interval_n_networks_", None)
    return {"interval_pct": interval_pct(predictor), "interval_coverage": _interval_coverage(predictor),
            "interval_networks": None if n is None else int(n),
            "interval_from": getattr(predictor, "interval_from_", "training"),
            "interval_devices": list(getattr(predictor, "interval_devices_", [])),
            "interval_fallback": getattr(predictor, "interval_fallback_", "")}


def scatter_plot(measured_ms, predicted_ms, path: str, *, title: str = "") -> str:
    """Measured vs predicted latency, log-log, with the +-10% band; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = np.asarray(measured_ms, float), np.asarray(predicted_ms, float)
    lo, hi = float(min(y.min(), p.min())) * 0.8, float(max(y.max(), p.max())) * 1.25
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    line = np.geomspace(lo, hi, 50)
    ax.plot(line, line, "k-", lw=1, label="exact")
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="+-10%")
    ax.scatter(y, p, s=14, alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    m = metrics.summary(y, p)
    ax.set_title(f"{title}\nMAPE {m['mape_pct']:.1f}%, within 10%: {m['acc10_pct']:.0f}% (n={m['n']})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        # like --store and --out: a folder that does not exist yet is created
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path)
    except OSError as err:
        raise UsageError(f"cannot write the plot {path}: {err.strerror or err}",
                         hint="pass a writable --plot path ending in .png") from None
    finally:
        plt.close(fig)
    return os.path.abspath(path)


def _load(predictor_path: str, *, as_source: bool = False):
    """A network-latency predictor file; ``as_source``: for `adapt --from` (other hint)."""
    from host.modeler.blocks import BlockLatencyPredictor

    est, meta = load_predictor(predictor_path)
    if meta.get("kind") != KIND or not isinstance(est, (LatencyPredictor, BlockLatencyPredictor)):
        raise PredictorError(f"{predictor_path} is a {meta.get('kind', 'different')} predictor, not a "
                             "network-latency predictor",
                             hint="--from takes predictors written by `opcost fit` for the phones already modelled"
                             if as_source else
                             "a signature-set predictor (from `opcost adapt --signature`) predicts with "
                             "`opcost signature predict --predictor FILE`")
    return est, meta


def _target_tables(store, *, device: str, delegate: str, threads: Optional[int],
                   models_dir: Optional[str]) -> Optional[Dict[str, pd.DataFrame]]:
    """The store's tables of ``device`` (imported dataset runs or measured runs); None
    when it has no runs with this delegate."""
    tables = dataset_training_tables(store, device=device, delegate=delegate)
    if tables is not None:
        return tables
    return training_tables(store, device=device, delegate=delegate, threads=threads, models_dir=models_dir,
                           none_if_no_runs=True)


def _transfer_sources(source_paths: List[str], *, tables: bool = True,
                      device_name: Callable[[str], str] = str) -> Dict[str, Any]:
    """Source predictors of a transfer (``--from`` files): ``prefit`` (name -> estimator),
    with ``tables`` their embedded training tables (``src_ops``, ``src_nets``), ``origins``
    and the common ``delegate`` / ``threads``. A source is named ``device_name`` of its
    file's device (e.g. the store's serial for a short name), or, for a short name that
    another source file records as its device's model, that file's serial. Refuses mixed
    delegates, transferred predictors and non-network predictors."""
    from host.modeler.predictor_file import load_training_tables
    from host.modeler.transfer import SOURCE_COL

    if not source_paths:
        raise PredictorError("no source predictor to transfer from", hint="pass --from SOURCE.predictor")
    prefit, src_ops, src_nets, origins = {}, [], [], []
    delegate = threads = None
    loaded = [(path, *_load(path, as_source=True)) for path in source_paths]
    serials_of_model: Dict[str, set] = {}
    for _, _, meta in loaded:
        if meta.get("device_model"):
            serials_of_model.setdefault(str(meta["device_model"]), set()).add(str(meta["device"]))
    for path, est, meta in loaded:
        recorded = str(meta.get("device"))
        name = device_name(recorded)
        if name == recorded and len(serials_of_model.get(recorded, ())) == 1:
            # an older file that recorded the model name of another source file's device
            name = next(iter(serials_of_model[recorded]))
        origin = name
        while name in prefit:
            name += "+"
        if delegate is None:
            delegate, threads = meta["delegate"], meta.get("threads")
        elif meta["delegate"] != delegate:
            raise PredictorError(f"source predictors are for different delegates ({delegate}, {meta['delegate']})",
                                 hint="transfer from predictors of one delegate")
        if meta.get("source") == "transfer":
            raise PredictorError(f"{path} is itself a transferred predictor",
                                 hint="transfer from predictors fitted with `opcost fit`")
        prefit[name] = est
        if tables:
            t = load_training_tables(path)
            src_ops.append(t["ops"].assign(**{SOURCE_COL: name}))
            src_nets.append(t["networks"].assign(**{SOURCE_COL: name}))
        origins.append({"path": os.path.abspath(path), "device": origin,
                        "n_networks": meta.get("n_networks")})
    return {"prefit": prefit, "src_ops": src_ops, "src_nets": src_nets, "origins": origins,
            "delegate": delegate, "threads": threads}


def select_transfer_networks(source_paths: List[str], model_paths: List[str], k: int, *,
                             selection: Optional[str] = None, seed: int = 0) -> Dict[str, Any]:
    """Which ``k`` of the .tflite files ``model_paths`` a new device should measure (per op
    and end to end) for a transfer from the predictor files ``source_paths``; chosen from
    the sources' predictions and the files' structure only
    (``host.modeler.transfer_select``). Returns the chosen paths (in the order given),
    the strategy, seed and each chosen file's predicted latency on the sources."""
    from host.modeler.transfer_select import DEFAULT_SELECTION, select_networks

    selection = selection or DEFAULT_SELECTION
    paths = list(dict.fromkeys(str(p) for p in model_paths))
    if len(paths) < len(model_paths):
        log.warning("%d model file(s) given more than once; each counts once", len(model_paths) - len(paths))
    if k < 1:
        raise PredictorError(f"--k must be at least 1, got {k}")
    if k > len(paths):
        raise PredictorError(f"cannot select {k} of {len(paths)} candidate model file(s)",
                             hint=f"pass more candidate .tflite files or --k {len(paths)} or less")
    src = _transfer_sources(source_paths, tables=False)
    ops = ops_of_files(paths)
    report: Dict[str, Any] = {}
    chosen = set(select_networks(ops, k, src["prefit"], strategy=selection, seed=seed, report=report))
    selected = [p for p in paths if p in chosen]
    return {"selected": selected, "k": k, "n_candidates": len(paths), "selection": selection, "seed": seed,
            "delegate": src["delegate"], "sources": src["origins"],
            "source_pred_ms": {p: report["pred_ms"][p] for p in selected} if "pred_ms" in report else None}


def transfer_from_store(store, *, source_paths: List[str], device: str, method: Optional[str] = None,
                        models_dir: Optional[str] = None, max_networks: Optional[int] = None, seed: int = 0,
                        selection: Optional[str] = None, interval_from: Optional[str] = None,
                        out_path: Optional[str] = None, store_label: str = "runs.db") -> Dict[str, Any]:
    """A predictor for ``device`` transferred from the predictor files ``source_paths``
    (other devices, same delegate) with the store's runs of ``device`` (per op and end to
    end); saved to ``out_path`` when given. ``max_networks``: use at most this many of the
    device's networks, chosen by ``selection`` (``host.modeler.transfer_select``; default
    its ``DEFAULT_SELECTION``, source-side information only) with ``seed``, leaving the
    others for ``opcost evaluate``. ``interval_from``: the transfer's parameter (default
    ``auto``)."""
    from host.modeler.transfer import (DEFAULT_METHOD, MIN_TARGET_NETWORKS, TransferLatencyPredictor,
                                       kernel_predictor_of, usable_target_networks)
    from host.modeler.transfer_select import DEFAULT_SELECTION, SELECTIONS, select_networks

    method = method or DEFAULT_METHOD
    if method not in TRANSFER_METHODS:
        raise PredictorError(f"unknown transfer method {method!r}", hint=f"use one of: {', '.join(TRANSFER_METHODS)}")
    selection = selection or DEFAULT_SELECTION
    if selection not in SELECTIONS:
        raise PredictorError(f"unknown selection {selection!r}", hint=f"use one of: {', '.join(SELECTIONS)}")
    device = store.resolve_device(device, unique=True)
    src = _transfer_sources(source_paths, device_name=store.resolve_device)
    prefit, src_ops, src_nets, origins = src["prefit"], src["src_ops"], src["src_nets"], src["origins"]
    delegate, threads = src["delegate"], src["threads"]
    if device in {o["device"] for o in origins}:
        raise PredictorError(f"{device} is one of the source predictors' devices",
                             hint="transfer to a device the sources were not fitted on")
    tables = _target_tables(store, device=device, delegate=delegate, threads=threads, models_dir=models_dir)
    per_op = method != "overhead_only"
    usable = usable_target_networks(tables["ops"], tables["networks"], per_op=per_op) if tables else []
    need = MIN_TARGET_NETWORKS
    if len(usable) < need:
        what = "per-op and end-to-end" if per_op else "end-to-end"
        how = ("`opcost profile NET.tflite --device local --per-op --store STORE`" if device == "local" else
               f"`opcost profile NET.tflite --device {device} --binary benchmark_model --delegate {delegate} "
               f"--op-profiling --store {store_label}`")
        raise PredictorError(f"{device} has {len(usable)} network(s) with {what} {delegate} times in "
                             f"{store_label}; a transfer needs at least {need}",
                             hint=f"measure {need - len(usable)} more network(s) on it, e.g. {how}")
    if max_networks is not None and max_networks < need:
        raise PredictorError(f"--max-networks {max_networks} is below the {need} networks a transfer needs",
                             hint=f"pass --max-networks {need} or more, or leave it out to use every measured network")
    if max_networks is not None and len(usable) > max_networks:
        pool = tables["ops"][tables["ops"][NETWORK].isin(set(usable))]
        usable = select_networks(pool, max_networks, prefit, strategy=selection, seed=seed)
        chosen_by = {"max_networks": max_networks, "seed": seed, "selection": selection,
                     "rule": "host.modeler.transfer_select.select_networks"}
    else:
        chosen_by = None
    keep = set(usable)
    tables = {"ops": tables["ops"][tables["ops"][NETWORK].isin(keep)].reset_index(drop=True),
              "networks": tables["networks"][tables["networks"][NETWORK].isin(keep)].reset_index(drop=True)}
    inner = kernel_predictor_of(next(iter(prefit.values())))
    source_params = {k: v for k, v in inner.get_params(deep=False).items()
                     if k in LatencyPredictor().get_params(deep=False)}
    training = {**tables, "source_ops": pd.concat(src_ops, ignore_index=True),
                "source_networks": pd.concat(src_nets, ignore_index=True)}
    predictor = TransferLatencyPredictor(runtime=RUNTIME_OF_DELEGATE[delegate], method=method,
                                         source_params=source_params, interval_from=interval_from or "auto"
                                         ).fit(**training, prefit_sources=prefit)
    nets = tables["networks"]
    summary = {
        "kind": KIND,
        "device": device,
        "device_model": store.device_model(device),
        "delegate": delegate,
        "threads": threads,
        "source": "transfer",
        "method": method,
        "transferred_from": origins,
        "n_networks": predictor.n_networks_,
        "n_target_networks": predictor.n_networks_,
        "n_kernels_measured": predictor.n_kernels_measured_,
        "kernel_types": predictor.kernel_types_,
        "overhead": predictor.model_.overhead_mode_,
        **_interval_summary(predictor),
        "target_selection": chosen_by,
        "training_networks": sorted(nets[NETWORK].astype(str)),
        "training_model_names": sorted(nets["model_name"].astype(str)) if "model_name" in nets else [],
    }
    if out_path:
        save_predictor(out_path, predictor, meta=summary, training=training)
        summary["path"] = os.path.abspath(out_path)
    return summary
