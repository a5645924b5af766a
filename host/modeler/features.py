"""One op-feature schema for every source (li2024 tables, our .tflite graph reader).

Each row is one op. Base columns (``BASE_COLUMNS``) are what a source provides or what
follows from shapes; ``add_derived`` adds the columns the regressors use
(``DERIVED_COLUMNS``). Shapes are NHWC; a missing value is NaN, never 0.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import pandas as pd

from opcost.errors import DatasetError

BASE_COLUMNS = [
    "op_type", "h_in", "w_in", "c_in", "h_out", "w_out", "c_out", "kernel", "stride", "groups",
    "n_inputs", "flops", "macs", "bytes_in", "bytes_out", "weights_bytes", "fused_activation",
]
DERIVED_COLUMNS = [
    "log_flops", "log_macs", "log_bytes_in", "log_bytes_out", "log_weights_bytes",
    "log_bytes_total", "arith_intensity", "px_out", "log_px_out", "c_in_slices", "c_out_slices",
    "c_in_pad_frac", "c_out_pad_frac", "c_in_per_group", "is_pointwise", "k_sq",
]
# Numeric columns a regressor can take (op_type / fused_activation are categorical).
NUMERIC_COLUMNS = [c for c in BASE_COLUMNS if c not in ("op_type", "fused_activation")] + DERIVED_COLUMNS

CONV_TYPES = ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_GROUP", "TRANSPOSE_CONV")
POOL_TYPES = ("MAX_POOL_2D", "AVERAGE_POOL_2D")
# GPU kernels work on 4-channel slices; padding to a multiple of 4 wastes work.
CHANNEL_SLICE = 4


def _num(v: Any) -> float:
    if v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _row(op_type: str, **kw: Any) -> Dict[str, Any]:
    r = {c: float("nan") for c in BASE_COLUMNS}
    r["op_type"] = op_type
    r["fused_activation"] = None
    r.update(kw)
    return r


def _fill_costs(r: Dict[str, Any], dtype_bytes: float) -> Dict[str, Any]:
    """Fill macs/flops/bytes that follow from shapes when the source did not give them."""
    t = r["op_type"]
    h_in, w_in, c_in = r["h_in"], r["w_in"], r["c_in"]
    h_out, w_out, c_out = r["h_out"], r["w_out"], r["c_out"]
    k, g = r["kernel"], r["groups"]
    if t in CONV_TYPES or t == "FULLY_CONNECTED":
        kk = 1.0 if t == "FULLY_CONNECTED" or math.isnan(k) else k * k
        gg = 1.0 if math.isnan(g) or g <= 0 else g
        if math.isnan(r["macs"]):
            r["macs"] = h_out * w_out * c_out * kk * c_in / gg
        if math.isnan(r["weights_bytes"]):
            r["weights_bytes"] = (kk * c_in / gg * c_out + c_out) * dtype_bytes
    if math.isnan(r["flops"]):
        if not math.isnan(r["macs"]):
            r["flops"] = 2.0 * r["macs"]
        elif t in POOL_TYPES or t == "MEAN":
            kk = 1.0 if math.isnan(k) else k * k
            r["flops"] = h_out * w_out * c_out * kk
        else:  # elementwise / data movement: one op per output element
            r["flops"] = h_out * w_out * c_out
    if math.isnan(r["macs"]):
        r["macs"] = r["flops"] / 2.0
    if math.isnan(r["bytes_in"]):
        n_in = 1.0 if math.isnan(r["n_inputs"]) else r["n_inputs"]
        per_input = h_in * w_in * c_in
        if t == "CONCATENATION":
            per_input = h_in * w_in * c_out / n_in  # inputs together hold the output
        r["bytes_in"] = per_input * n_in * dtype_bytes
    if math.isnan(r["bytes_out"]):
        r["bytes_out"] = h_out * w_out * c_out * dtype_bytes
    if math.isnan(r["weights_bytes"]):
        r["weights_bytes"] = 0.0
    return r


def _li2024_row(operation: str, f: Dict[str, Any], dtype_bytes: float) -> Dict[str, Any]:
    op = str(operation)
    hi, ci = _num(f.get("Input_shape")), _num(f.get("Input_channel"))
    ho, k, s = _num(f.get("Output_shape")), _num(f.get("Kernel")), _num(f.get("Stride"))
    filt, grp, fl = _num(f.get("Filter")), _num(f.get("Group")), _num(f.get("FLOPS"))
    if op in ("CONV_2D", "CONV_2D_GROUP"):
        r = _row(op, h_in=hi, w_in=hi, c_in=ci, h_out=ho, w_out=ho, c_out=filt, kernel=k,
                 stride=s, groups=grp if op == "CONV_2D_GROUP" else 1.0, n_inputs=1.0, flops=fl)
    elif op == "DEPTHWISE_CONV_2D":
        mult = 1.0 if math.isnan(filt) else filt  # li2024 'Filter' is the depth multiplier
        r = _row(op, h_in=hi, w_in=hi, c_in=ci, h_out=ho, w_out=ho, c_out=ci * mult, kernel=k,
                 stride=s, groups=ci, n_inputs=1.0, flops=fl)
    elif op == "FULLY_CONNECTED":
        r = _row(op, h_in=1.0, w_in=1.0, c_in=ci, h_out=1.0, w_out=1.0, c_out=filt, kernel=1.0,
                 stride=1.0, groups=1.0, n_inputs=1.0, flops=fl)
    elif op == "MEAN":  # global spatial mean; li2024 'Output_shape' holds the channel count
        r = _row(op, h_in=hi, w_in=hi, c_in=ci, h_out=1.0, w_out=1.0, c_out=ci, kernel=hi,
                 stride=1.0, groups=1.0, n_inputs=1.0, flops=fl)
    elif op in POOL_TYPES:
        r = _row(op, h_in=hi, w_in=hi, c_in=ci, h_out=ho, w_out=ho, c_out=ci, kernel=k,
                 stride=s, groups=1.0, n_inputs=1.0, flops=fl)
    elif op == "CONCATENATION":  # 'Kernel' holds the number of inputs, 'Filter' the output channels
        r = _row(op, h_in=hi, w_in=hi, c_in=ci, h_out=ho, w_out=ho, c_out=filt, kernel=float("nan"),
                 stride=float("nan"), groups=float("nan"), n_inputs=k, flops=fl)
    else:
        r = _row(op, h_in=hi, w_in=hi, c_in=ci, h_out=ho, w_out=ho, c_out=filt, kernel=k,
                 stride=s, groups=grp, n_inputs=1.0, flops=fl)
    return _fill_costs(r, dtype_bytes)


def ops_from_li2024(df: pd.DataFrame, *, dtype_bytes: float = 4.0) -> pd.DataFrame:
    """Schema rows (base + derived columns) for a li2024 op table.

    ``df`` needs ``operation`` and ``feature`` (dict, as from ``data_li2024.load_ops_gpu``,
    or the raw dict-literal string). The index of ``df`` is kept."""
    from host.modeler.data_li2024 import parse_feature

    for col in ("operation", "feature"):
        if col not in df.columns:
            raise DatasetError(f"op table has no {col!r} column",
                               hint="load it with host.modeler.data_li2024.load_ops_gpu")
    rows = [_li2024_row(op, parse_feature(f), dtype_bytes)
            for op, f in zip(df["operation"], df["feature"])]
    out = pd.DataFrame(rows, index=df.index, columns=BASE_COLUMNS)
    return add_derived(out)


def _attr(obj: Any, names: Iterable[str], default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            v = getattr(obj, n)
            if v is not None:
                return v
    return default


def _nhwc(shape: Optional[Iterable[Any]]) -> List[float]:
    if shape is None:
        return [float("nan")] * 3
    s = [_num(x) for x in shape]
    if len(s) == 4:
        return s[1:]
    if len(s) == 3:
        return s
    if len(s) == 2:  # [batch, features]
        return [1.0, 1.0, s[1]]
    if len(s) == 1:
        return [1.0, 1.0, s[0]]
    return [1.0, 1.0, 1.0]


def ops_from_graph(graph: Any, *, dtype_bytes: Optional[float] = None) -> pd.DataFrame:
    """Schema rows for the ops of a graph from ``models_zoo.graph.read_graph``.

    Reads each op's ``type``, ``input_shapes``/``output_shapes``, ``options`` and, where the
    reader provides them, kernel/stride/groups/flops/macs/bytes. Adds ``op_index``,
    ``inputs``/``outputs`` (tensor ids, for data-flow fusion) when available."""
    ops = _attr(graph, ["ops"], None)
    if ops is None:
        raise DatasetError("graph has no .ops", hint="pass a Graph from models_zoo.graph.read_graph")
    rows = []
    for i, op in enumerate(ops):
        t = str(_attr(op, ["type", "op_type", "builtin"], "UNKNOWN")).upper()
        options = _attr(op, ["options"], {}) or {}
        in_shapes = _attr(op, ["input_shapes"], []) or []
        out_shapes = _attr(op, ["output_shapes"], []) or []
        h_in, w_in, c_in = _nhwc(in_shapes[0] if len(in_shapes) else None)
        h_out, w_out, c_out = _nhwc(out_shapes[0] if len(out_shapes) else None)
        kernel = _num(_attr(op, ["kernel", "kernel_h"], options.get("filter_height")))
        stride = _num(_attr(op, ["stride", "stride_h"], options.get("stride_h")))
        groups = _num(_attr(op, ["groups"], None))
        if t == "DEPTHWISE_CONV_2D" and math.isnan(groups):
            groups = c_in
        if t == "CONV_2D" and not math.isnan(groups) and groups > 1:
            t = "CONV_2D_GROUP"
        c_in = _num(_attr(op, ["in_channels", "c_in"], c_in))
        c_out = _num(_attr(op, ["out_channels", "c_out"], c_out))
        act = options.get("fused_activation", options.get("fused_activation_function"))
        if act is None:
            act = _attr(op, ["fused_activation"], None)
            act = act() if callable(act) else act
        act = "NONE" if act in (None, "NONE", 0) else str(act)  # None is kept for "unknown"
        n_inputs = float(len(in_shapes)) if t in ("CONCATENATION", "ADD", "MUL", "SUB") else 1.0
        dt = dtype_bytes if dtype_bytes is not None else _num(_attr(op, ["dtype_bytes"], 4.0))
        r = _row(t, h_in=h_in, w_in=w_in, c_in=c_in, h_out=h_out, w_out=w_out, c_out=c_out,
                 kernel=kernel, stride=stride, groups=groups if not math.isnan(groups) else 1.0,
                 n_inputs=n_inputs, flops=_num(_attr(op, ["flops"], None)),
                 macs=_num(_attr(op, ["macs"], None)),
                 bytes_in=_num(_attr(op, ["bytes_in"], None)),
                 bytes_out=_num(_attr(op, ["bytes_out"], None)),
                 weights_bytes=_num(_attr(op, ["weights_bytes"], None)),
                 fused_activation=act)
        r = _fill_costs(r, dt)
        r["op_index"] = _attr(op, ["index"], i)
        ins, outs = _attr(op, ["inputs"], None), _attr(op, ["outputs"], None)
        r["inputs"] = tuple(int(x) for x in ins) if ins is not None else None
        r["outputs"] = tuple(int(x) for x in outs) if outs is not None else None
        rows.append(r)
    out = pd.DataFrame(rows, columns=BASE_COLUMNS + ["op_index", "inputs", "outputs"])
    return add_derived(out)


def add_derived(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``DERIVED_COLUMNS`` to a frame with the base columns (returns a new frame)."""
    out = df.copy()
    for c in BASE_COLUMNS:
        if c not in out.columns:
            out[c] = None if c in ("op_type", "fused_activation") else np.nan
    f = out[[c for c in NUMERIC_COLUMNS if c in BASE_COLUMNS]].astype(float)
    out["log_flops"] = np.log1p(f["flops"])
    out["log_macs"] = np.log1p(f["macs"])
    out["log_bytes_in"] = np.log1p(f["bytes_in"])
    out["log_bytes_out"] = np.log1p(f["bytes_out"])
    out["log_weights_bytes"] = np.log1p(f["weights_bytes"])
    total = f["bytes_in"] + f["bytes_out"] + f["weights_bytes"]
    out["log_bytes_total"] = np.log1p(total)
    out["arith_intensity"] = f["flops"] / total.where(total > 0)
    out["px_out"] = f["h_out"] * f["w_out"]
    out["log_px_out"] = np.log1p(out["px_out"])
    out["c_in_slices"] = np.ceil(f["c_in"] / CHANNEL_SLICE)
    out["c_out_slices"] = np.ceil(f["c_out"] / CHANNEL_SLICE)
    out["c_in_pad_frac"] = out["c_in_slices"] * CHANNEL_SLICE / f["c_in"] - 1.0
    out["c_out_pad_frac"] = out["c_out_slices"] * CHANNEL_SLICE / f["c_out"] - 1.0
    out["c_in_per_group"] = f["c_in"] / f["groups"].where(f["groups"] > 0)
    out["is_pointwise"] = (f["kernel"] == 1).astype(float)
    out["k_sq"] = f["kernel"] ** 2
    return out
