"""nn-Meter's method and ours, side by side on the same real phone data (li2024 GPU per-op).

nn-Meter (Zhang et al., MobiSys 2021) predicts a network's latency as the plain sum of
per-kernel predictions: it detects the kernels the runtime fuses, and has one random
forest per kernel type. Its pretrained predictors are downloads we cannot fetch here, so
this runs its *method*, using its own code from the ``nn-meter`` package (2.0), trained
on exactly the data our model gets:

- ``nnmeter_method``: kernels = the li2024 GPU delegate kernels. The delegate's kernel
  names show what it fused (``convolution_2d_5_linked_:_relu_6``), so nn-Meter's kernel
  detection is given for free by the profiler (its test-case fusion probing is not
  needed). Each kernel is mapped to an nn-Meter kernel type; features come from
  nn-Meter's feature parser for that type; the predictor is built by nn-Meter's
  ``build_predictor_by_data`` (its per-kernel RandomForestRegressor configuration for the
  ``tflite_gpu`` backend); a network = ``predict_model``'s plain sum of kernel
  predictions, no overhead term. Uses the test networks' kernel NAMES (never their times):
  what a profiled network would give.
- ``nnmeter_method_rules``: the same, but kernels and their types from our
  ``rules/gpu.yaml`` grouping of the graph ops (what happens for a network never
  profiled); selectors learnt from training networks only, as in our own model.
- ``full``: our model (``benchmarks/gpu_ops_to_e2e.py``'s ``full`` config, called, not
  reimplemented).

All three use the same folds (``host.modeler.li2024_cv.network_folds``: 5-fold grouped
by network, seed 0) per device. Nothing is tuned: nn-Meter's hyperparameters are its own.

Prints one JSON object: per device, per method ``mape_pct``, ``acc10_pct`` (nn-Meter's
headline metric, also as ``nnmeter_headline_acc10_pct``), ``acc5_pct``, ``rmspe_pct``,
``n_networks``; plus a paired comparison and what the plain sum misses
(end-to-end / measured kernel sum).

Exit status: 0 when it ran, also when nn-meter is not installed: then only ``full`` is
run and ``"nnmeter": {"available": false, "install": "pip install nn-meter==2.0"}`` says
so (nn-Meter is an optional comparison, not a dependency: ``pip install -e ".[compare]"``).
2 for a missing or unreadable data directory.
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import re
import sys
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import gpu_ops_to_e2e  # noqa: E402
from host.modeler.kernels import load_rules  # noqa: E402
from host.modeler.li2024_cv import N_FOLDS, SEED, cv_frame, network_folds  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402

NNMETER_VERSION = "2.0"
NNMETER_INSTALL = f"pip install nn-meter=={NNMETER_VERSION}  (or: pip install -e \".[compare]\")"
BACKEND = "tflite_gpu"  # nn-Meter's predictor configuration set for TFLite GPU
# nn-Meter 2.0's fallback RandomForestRegressor for kernel types without a configuration
# for the backend (predictor_lib.py, init_predictor, lines 429-437), with
# max_features="auto" written as 1.0: "auto" meant all features for regressors and was
# removed in scikit-learn 1.3, so the original raises InvalidParameterError at fit.
NNMETER_FALLBACK_RF = dict(max_depth=50, n_estimators=370, min_samples_leaf=1, min_samples_split=2,
                           max_features=1.0, oob_score=True, random_state=10)


def load_nnmeter() -> Tuple[Optional[SimpleNamespace], Optional[str]]:
    """nn-Meter's functions this benchmark calls, or (None, why not)."""
    try:
        import logging

        import nn_meter
        from nn_meter.builder.backend_meta.utils import Latency
        from nn_meter.builder.kernel_predictor_builder.predictor_builder import predictor_lib
        from nn_meter.builder.kernel_predictor_builder.predictor_builder.build_predictor import build_predictor_by_data
        from nn_meter.builder.kernel_predictor_builder.predictor_builder.extract_feature import (
            feature_for_kernel, get_data_by_profiled_results, get_feature_parser)
        from nn_meter.predictor.prediction.predict_by_kernel import merge_conv_kernels, predict_model
        from nn_meter.predictor.prediction.utils import get_kernel_name
    except ImportError as err:
        return None, f"{type(err).__name__}: {err}"
    # nn-Meter logs to stdout; this script's stdout is its JSON.
    for h in logging.getLogger("nn-Meter").handlers:
        if hasattr(h, "setStream"):
            h.setStream(sys.stderr)
    return SimpleNamespace(version=getattr(nn_meter, "__version__", "?"), path=os.path.dirname(nn_meter.__file__),
                           Latency=Latency, zoo=predictor_lib.__PREDICTOR_ZOO__,
                           build_predictor_by_data=build_predictor_by_data, feature_for_kernel=feature_for_kernel,
                           get_data_by_profiled_results=get_data_by_profiled_results,
                           get_feature_parser=get_feature_parser, merge_conv_kernels=merge_conv_kernels,
                           predict_model=predict_model, get_kernel_name=get_kernel_name), None


# ---- kernels -> nn-Meter kernel types and configs ---------------------------------------

_ACT = {"relu": "relu", "relu6": "relu6", "hard_swish": "hswish"}


def _linked(name: str) -> List[str]:
    """Op names linked into a delegate kernel: ``convolution_2d_16_linked_:_add_17_linked_:_relu_18`` -> [add, relu]."""
    return [re.sub(r"_\d+$", "", part) for part in str(name).split("_linked_:_")[1:]]


def nnmeter_op_from_kernel_name(name: Any, op_type: str) -> str:
    """nn-Meter's name for a li2024 GPU delegate kernel (its detected kernel's ``op``).

    Convolutions keep their linked activation in the name (``conv-bn-relu``,
    ``conv-bn-hswish``, ``conv-bn`` with none; TFLite folds batch norm), as nn-Meter's
    detector names them; nn-Meter's ``predict_model`` sends every conv variant to its one
    ``conv-bn-relu`` predictor anyway (every dwconv to ``dwconv-bn-relu``)."""
    if pd.isna(name):
        return nnmeter_op_from_op_type(op_type)
    n = str(name)
    acts = [_ACT[x] for x in _linked(n) if x in _ACT]
    suffix = "-" + acts[0] if acts else ""
    if n.startswith("depthwise_conv"):
        return "dwconv-bn" + suffix
    if n.startswith("convolution"):  # convolution_2d, convolution_2d_grouped, convolution_winograd_*
        return "conv-bn" + suffix
    if n.startswith("fully_connected"):
        return "fc-relu" if suffix == "-relu" else "fc"
    if n.startswith("mean"):
        return "global-avgpool"
    if n.startswith("pooling_2d"):
        return "maxpool" if op_type == "MAX_POOL_2D" else "avgpool"
    if n.startswith("concat"):
        return "concat"
    return n.split("_")[0]  # no nn-Meter predictor: contributes 0, as in nn-Meter


_RULE_TYPE_TO_NNM = {"conv2d": "conv-bn-relu", "conv2d_winograd": "conv-bn-relu", "conv2d_grouped": "conv-bn-relu",
                     "depthwise": "dwconv-bn-relu", "fully_connected": "fc", "mean": "global-avgpool",
                     "concat": "concat"}
_ELEMENTWISE_TO_NNM = {"ADD": "add", "RELU": "relu", "RELU6": "relu", "HARD_SWISH": "hswish"}


def nnmeter_op_from_op_type(op_type: str, kernel_type: Optional[str] = None) -> str:
    """nn-Meter kernel type of a kernel grouped by our rules (``kernel_type``) or, without
    one, of its producer op type."""
    if kernel_type in _RULE_TYPE_TO_NNM:
        return _RULE_TYPE_TO_NNM[kernel_type]
    if kernel_type == "pooling" or op_type in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return "maxpool" if op_type == "MAX_POOL_2D" else "avgpool"
    by_op = {"CONV_2D": "conv-bn-relu", "CONV_2D_GROUP": "conv-bn-relu", "DEPTHWISE_CONV_2D": "dwconv-bn-relu",
             "FULLY_CONNECTED": "fc", "MEAN": "global-avgpool", "CONCATENATION": "concat", **_ELEMENTWISE_TO_NNM}
    return by_op.get(op_type, str(op_type).lower())


def nnmeter_config(pkey: str, row: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """nn-Meter's config dict (the keys of its ``feature_for_kernel``) for one kernel row of
    our op schema (``h_in``, ``c_in``, ``c_out``, ``kernel``, ``stride``, ``n_inputs``).

    li2024 gives a concatenation's first input channels and output channels only: the
    other inputs share the rest equally; nn-Meter models at most 4 inputs (zeros pad,
    extra inputs are dropped, as its predict-time feature code does)."""
    hw, cin, cout = row["h_in"], row["c_in"], row["c_out"]
    if pkey in ("conv-bn-relu", "dwconv-bn-relu"):
        cfg = {"HW": hw, "CIN": cin, "COUT": cout, "KERNEL_SIZE": row["kernel"], "STRIDES": row["stride"]}
    elif pkey == "fc":
        cfg = {"CIN": cin, "COUT": cout}
    elif pkey in ("maxpool", "avgpool"):
        cfg = {"HW": hw, "CIN": cin, "COUT": cin, "KERNEL_SIZE": row["kernel"], "POOL_STRIDES": row["stride"]}
    elif pkey in ("global-avgpool", "hswish", "relu", "bn", "bnrelu", "se", "split", "channelshuffle"):
        cfg = {"HW": hw, "CIN": cin}
    elif pkey in ("add", "addrelu"):
        cfg = {"HW": hw, "CIN": cin}
    elif pkey == "concat":
        n = int(row["n_inputs"]) if np.isfinite(row["n_inputs"]) and row["n_inputs"] >= 1 else 2
        rest = (cout - cin) / (n - 1) if n > 1 else 0.0
        cins = [cin] + [rest] * (n - 1)
        cins = (cins + [0.0] * 4)[:4]
        cfg = {"HW": hw, "CIN1": cins[0], "CIN2": cins[1], "CIN3": cins[2], "CIN4": cins[3]}
    else:
        return None
    if not all(np.isfinite(float(v)) for v in cfg.values()):
        return None
    return {k: float(v) for k, v in cfg.items()}


def nnmeter_kernels(nnm, kernels: pd.DataFrame, ops_col: str) -> pd.DataFrame:
    """``kernels`` with ``nnm_op`` (from column ``ops_col``), ``nnm_predictor`` (nn-Meter's
    predictor name for it: ``get_kernel_name(merge_conv_kernels(op))``) and ``nnm_features``
    (that predictor's feature parser applied to the kernel's config; None when nn-Meter
    has no feature list for it)."""
    out = kernels.copy()
    out["nnm_op"] = out[ops_col]
    out["nnm_predictor"] = [nnm.get_kernel_name(nnm.merge_conv_kernels(op)) for op in out["nnm_op"]]
    cfgs: List[Optional[Dict[str, float]]] = []
    feats: List[Optional[List[float]]] = []
    parsers: Dict[str, Any] = {}
    for pkey, row in zip(out["nnm_predictor"], out.to_dict("records")):
        cfg = nnmeter_config(pkey, row) if pkey in nnm.feature_for_kernel else None
        cfgs.append(cfg)
        if cfg is None:
            feats.append(None)
            continue
        if pkey not in parsers:
            parsers[pkey] = nnm.get_feature_parser(pkey)
        feats.append([float(x) for x in parsers[pkey].get_feature_by_config(dict(cfg))])
    out["nnm_config"] = cfgs
    out["nnm_features"] = feats
    return out


# ---- nn-Meter predictors ----------------------------------------------------------------

def build_nnmeter_predictor(nnm, pkey: str, k_tr: pd.DataFrame):
    """nn-Meter's predictor for kernel type ``pkey`` trained on the rows of ``k_tr``
    (``nnm_config``, ``latency_ms``, ``network``). Returns (predictor, how) or (None, why)."""
    data = {pkey: {f"{net}#{i}": {"model": str(net), "config": dict(cfg), "latency": nnm.Latency(float(lat), 0.0)}
                   for i, (net, cfg, lat) in enumerate(zip(k_tr["network"], k_tr["nnm_config"], k_tr["latency_ms"]))}}
    n = len(k_tr)
    if n < 2:
        return None, f"{n} training kernel(s)"
    if BACKEND in nnm.zoo.get(pkey, {}):
        pred, _, _ = nnm.build_predictor_by_data(pkey, data, backend=BACKEND, final_predictor=True)
        how = "build_predictor_by_data"
    else:  # nn-Meter's own fallback config, with max_features="auto" spelt 1.0 (see NNMETER_FALLBACK_RF)
        from sklearn.ensemble import RandomForestRegressor

        X, Y = nnm.get_data_by_profiled_results(pkey, nnm.get_feature_parser(pkey), data)
        pred = RandomForestRegressor(**NNMETER_FALLBACK_RF).fit(X, Y)
        how = "fallback_rf"
    # nn-Meter's data reader silently skips rows it cannot parse: none may be lost here.
    if len(pred.oob_prediction_) != n:
        raise RuntimeError(f"nn-Meter used {len(pred.oob_prediction_)} of {n} {pkey} kernels")
    pred.n_jobs = 1  # conv-bn-relu's config asks for 32 jobs; predictions do not depend on it
    return pred, how


def run_nnmeter_device(nnm, ops: pd.DataFrame, nets: np.ndarray, y_e2e: pd.Series, rules,
                       cache: Dict[Any, Any]) -> Dict[str, Any]:
    """Out-of-fold nn-Meter predictions for both kernel sources on one device.

    Returns {method: {"pred": Series per network, "kernels": per-kernel frame, "how": {...},
    "no_predictor": {...}, "pred_scaled": ...}}. ``pred_scaled`` is a diagnostic, not
    nn-Meter's method: the plain sum times the median (end-to-end / measured kernel sum)
    of the training networks."""
    results: Dict[str, Any] = {m: {"pred": pd.Series(np.nan, index=nets), "pred_scaled": pd.Series(np.nan, index=nets),
                                   "kernels": [], "how": {}, "no_predictor": {}}
                               for m in ("nnmeter_method", "nnmeter_method_rules")}
    measured_sum = ops.groupby("network")["latency_ms"].sum(min_count=1)
    # (a) the delegate's kernels: li2024 lists one row per delegate kernel (its producer op).
    ka = ops.copy()
    ka["nnm_src"] = [nnmeter_op_from_kernel_name(n, t) for n, t in zip(ka["kernel_name"], ka["op_type"])]
    ka = nnmeter_kernels(nnm, ka, "nnm_src")
    for tr_idx, te_idx in network_folds(nets):
        tr_nets, te_nets = set(nets[tr_idx]), set(nets[te_idx])
        tr = ops["network"].isin(tr_nets).to_numpy()
        scale = float(np.nanmedian((y_e2e.loc[nets[tr_idx]] / measured_sum.reindex(nets[tr_idx])).to_numpy()))
        # (b) our rules' kernels; selectors fitted on training kernel names only.
        kb = gpu_ops_to_e2e._kernels("rules", rules, ops[tr], ops.loc[tr, "kernel_name"].to_numpy(), ops)
        kb["latency_ms"] = [ops["latency_ms"].to_numpy()[rows].sum() for rows in kb["op_rows"]]
        kb["nnm_src"] = [nnmeter_op_from_op_type(t, k) for t, k in zip(kb["op_type"], kb["kernel_type"])]
        kb = nnmeter_kernels(nnm, kb, "nnm_src")
        for method, k in (("nnmeter_method", ka), ("nnmeter_method_rules", kb)):
            res = results[method]
            k_tr = k[k["network"].isin(tr_nets)]
            k_tr = k_tr[k_tr["nnm_features"].notna() & np.isfinite(k_tr["latency_ms"].astype(float))
                        & (k_tr["latency_ms"].astype(float) > 0)]
            predictors: Dict[str, Any] = {}
            for pkey, g in k_tr.groupby("nnm_predictor", sort=True):
                X = np.array(g["nnm_features"].tolist(), dtype=float)
                key = (pkey, X.tobytes(), g["latency_ms"].to_numpy(dtype=float).tobytes())
                if key not in cache:  # same training kernels -> same forest (fixed random_state)
                    cache[key] = build_nnmeter_predictor(nnm, pkey, g)
                pred, how = cache[key]
                res["how"].setdefault(pkey, set()).add(how if pred is not None else f"none ({how})")
                if pred is not None:
                    predictors[pkey] = pred
            k_te = k[k["network"].isin(te_nets)].copy()
            # per kernel (for kernel-level metrics), same forests and features
            kp = np.full(len(k_te), np.nan)
            for pkey, pred in predictors.items():
                m = ((k_te["nnm_predictor"] == pkey) & k_te["nnm_features"].notna()).to_numpy()
                if m.any():
                    kp[m] = pred.predict(np.array(k_te.loc[m, "nnm_features"].tolist(), dtype=float))
            k_te["nnm_pred_ms"] = kp
            res["kernels"].append(k_te[["network", "nnm_op", "nnm_predictor", "latency_ms", "nnm_pred_ms"]])
            for pkey in k_te.loc[np.isnan(kp), "nnm_predictor"]:
                res["no_predictor"][pkey] = res["no_predictor"].get(pkey, 0) + 1
            # whole network: nn-Meter's predict_model, the plain sum of kernel predictions
            for net, g in k_te.groupby("network", sort=False):
                model = {i: {op: f} for i, (op, f) in enumerate(zip(g["nnm_op"], g["nnm_features"]))
                         if f is not None}
                total = float(nnm.predict_model(model, predictors))
                if not np.isclose(total, np.nansum(g["nnm_pred_ms"].to_numpy()), rtol=1e-9, atol=1e-9):
                    raise RuntimeError(f"predict_model sum differs from the kernel predictions for {net}")
                res["pred"].loc[net] = total
                res["pred_scaled"].loc[net] = total * scale
    for res in results.values():
        res["kernels"] = pd.concat(res["kernels"], ignore_index=True)
    return results


# ---- scoring ------------------------------------------------------------------------------

def _metrics(y: pd.Series, p: pd.Series) -> Dict[str, Any]:
    s = summary(y.to_numpy(), p.loc[y.index].to_numpy())
    return {"mape_pct": round(s["mape_pct"], 2), "acc10_pct": round(s["acc10_pct"], 1),
            "acc5_pct": round(s["acc5_pct"], 1), "rmspe_pct": round(s["rmspe_pct"], 2), "n_networks": int(s["n"])}


def _paired(y: pd.Series, a: pd.Series, b: pd.Series) -> Dict[str, Any]:
    """How ``a`` (ours) and ``b`` (nn-Meter) compare network by network."""
    from scipy.stats import wilcoxon

    ea = (a.loc[y.index] - y).abs() / y
    eb = (b.loc[y.index] - y).abs() / y
    d = (eb - ea).to_numpy()
    p = float(wilcoxon(ea.to_numpy(), eb.to_numpy()).pvalue) if np.any(d != 0) and len(d) > 1 else float("nan")
    return {"ours_better_on": int(np.sum(d > 0)), "nnmeter_better_on": int(np.sum(d < 0)), "n_networks": int(len(d)),
            "mean_abs_error_diff_pct": round(float(np.mean(d) * 100), 2),
            "wilcoxon_p": round(p, 6) if np.isfinite(p) else None}


def side_by_side(tables: Dict[str, pd.DataFrame], nnm: Optional[SimpleNamespace],
                 devices: Optional[List[str]] = None) -> Dict[str, Any]:
    """The comparison on ``data_li2024.gpu_tables`` output; ``nnm`` from ``load_nnmeter``
    (None: our model only)."""
    structure, times_all, e2e = tables["structure"], tables["times"], tables["e2e"]
    rules = load_rules("gpu")
    all_devices = sorted(set(times_all["device"]) & set(e2e["device"]))
    out: Dict[str, Any] = {"devices": {}}
    cache: Dict[Any, Any] = {}
    for device in [d for d in all_devices if devices is None or d in devices]:
        times = times_all[times_all["device"] == device][["network", "op_index", "latency_ms", "kernel_name"]]
        e = e2e[e2e["device"] == device].set_index("network")["latency_ms"]
        nets, ops, y = cv_frame(structure, times, e)
        full_preds: Dict[str, pd.Series] = {}
        full = gpu_ops_to_e2e.run_device(structure, times, e, {"full": gpu_ops_to_e2e.CONFIGS["full"]}, rules,
                                         predictions=full_preds)["full"]
        dev: Dict[str, Any] = {"full": {**_metrics(y, full_preds["full"]),
                                        "opsum_mape_pct": full.get("opsum_mape_pct"),
                                        "overhead_modes": full["overhead_modes"]}}
        measured_sum = ops.groupby("network")["latency_ms"].sum(min_count=1).reindex(nets)
        ratio = (y / measured_sum).dropna()
        dev["e2e_over_measured_kernel_sum"] = {"median": round(float(ratio.median()), 4),
                                               "min": round(float(ratio.min()), 4),
                                               "max": round(float(ratio.max()), 4)}
        if nnm is not None:
            res = run_nnmeter_device(nnm, ops, nets, y, rules, cache)
            for method, r in res.items():
                m = _metrics(y, r["pred"])
                m["nnmeter_headline_acc10_pct"] = m["acc10_pct"]
                ok = measured_sum.notna()
                ks = summary(measured_sum[ok].to_numpy(), r["pred"].loc[nets][ok.to_numpy()].to_numpy())
                m["opsum_mape_pct"] = round(ks["mape_pct"], 2)  # vs the measured sum of kernel times
                kk = r["kernels"]
                kk = kk[np.isfinite(kk["nnm_pred_ms"]) & (kk["latency_ms"] > 0)]
                m["kernel_acc10_pct"] = {p: round(float(np.mean(np.abs(g["nnm_pred_ms"] - g["latency_ms"])
                                                                / g["latency_ms"] <= 0.10) * 100), 1)
                                         for p, g in kk.groupby("nnm_predictor")}
                m["kernel_counts"] = {p: int(n) for p, n in r["kernels"]["nnm_predictor"].value_counts().items()}
                m["test_kernels_without_predictor"] = r["no_predictor"]
                m["predictor_built_by"] = {p: sorted(h) for p, h in r["how"].items()}
                dev[method] = m
            dev["paired_full_vs_nnmeter_method"] = _paired(y, full_preds["full"], res["nnmeter_method"]["pred"])
            dev["paired_full_vs_nnmeter_method_rules"] = _paired(y, full_preds["full"],
                                                                 res["nnmeter_method_rules"]["pred"])
            same = np.allclose(res["nnmeter_method"]["pred"].loc[nets], res["nnmeter_method_rules"]["pred"].loc[nets])
            dev["nnmeter_methods_identical_predictions"] = bool(same)
            # Diagnostics (NOT nn-Meter's method): what the plain sum misses, and where the
            # method has no kernel type (grouped convolutions: nn-Meter's conv features
            # have no groups, so a grouped conv looks like a dense one).
            dev["diagnostic_nnmeter_method_scaled"] = {
                **_metrics(y, res["nnmeter_method"]["pred_scaled"]),
                "note": "nnmeter_method x median(e2e / measured kernel sum) of the training networks; not nn-Meter"}
            grouped = set(ops.loc[ops["op_type"] == "CONV_2D_GROUP", "network"])
            keep = y[[n not in grouped for n in y.index]]
            if len(keep):
                dev["subset_without_grouped_conv"] = {
                    "n_networks": int(len(keep)), "networks_left_out": len(y) - len(keep),
                    "full": _metrics(keep, full_preds["full"]),
                    "nnmeter_method": {**_metrics(keep, res["nnmeter_method"]["pred"]),
                                       "opsum_mape_pct": round(summary(
                                           measured_sum.loc[keep.index].to_numpy(),
                                           res["nnmeter_method"]["pred"].loc[keep.index].to_numpy())["mape_pct"], 2)},
                    "diagnostic_nnmeter_method_scaled": _metrics(keep, res["nnmeter_method"]["pred_scaled"])}
        out["devices"][device] = dev
    return out


def nnmeter_info(nnm: Optional[SimpleNamespace], why: Optional[str]) -> Dict[str, Any]:
    if nnm is None:
        return {"available": False, "error": why, "install": NNMETER_INSTALL,
                "note": "nn-meter is not installed in this Python: only our model was run"}
    used = ("conv-bn-relu", "dwconv-bn-relu", "fc", "maxpool", "avgpool", "global-avgpool", "concat")
    return {"available": True, "version": nnm.version, "backend_config": BACKEND,
            "rf_configs": {k: (nnm.zoo[k][BACKEND] if BACKEND in nnm.zoo.get(k, {})
                               else {"fallback": NNMETER_FALLBACK_RF}) for k in used},
            "feature_lists": {k: list(nnm.feature_for_kernel[k]) for k in used},
            "sources": {"rf_configs": "nn_meter/builder/kernel_predictor_builder/predictor_builder/predictor_lib.py",
                        "features": "nn_meter/builder/kernel_predictor_builder/predictor_builder/extract_feature.py",
                        "build": "nn_meter/builder/kernel_predictor_builder/predictor_builder/build_predictor.py",
                        "sum": "nn_meter/predictor/prediction/predict_by_kernel.py (predict_model)"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(HERE), "data", "li2024"),
                    help="directory holding the li2024 CSV files (searched recursively)")
    ap.add_argument("--json", action="store_true", help="print the JSON result (always on)")
    ap.add_argument("--device", action="append", help="only this device (repeatable)")
    ap.add_argument("--no-nnmeter", action="store_true", help="run our model only")
    args = ap.parse_args(argv)
    t0 = time.time()
    tables = gpu_ops_to_e2e.load_tables(args.data)
    if tables is None:
        return 2
    nnm, why = (None, "disabled with --no-nnmeter") if args.no_nnmeter else load_nnmeter()
    if nnm is None:
        print(f"note: nn-Meter not run ({why}); install it with: {NNMETER_INSTALL}", file=sys.stderr)
    result = side_by_side(tables, nnm, args.device)
    result["nnmeter"] = nnmeter_info(nnm, why)
    result["folds"] = {"n_folds": N_FOLDS, "seed": SEED, "grouped_by": "network",
                       "source": "host.modeler.li2024_cv.network_folds"}
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
