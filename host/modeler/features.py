"""One op-feature schema for every source (li2024 tables, our .tflite graph reader).

Each row is one op. Base columns (``BASE_COLUMNS``) are what a source provides or what
follows from shapes; ``add_derived`` adds the columns the regressors use
(``DERIVED_COLUMNS``). Shapes are NHWC; a missing value is NaN, never 0.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

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


def _isin(values: np.ndarray, choices: Iterable[Any]) -> np.ndarray:
    """``v in choices`` per element of an object array (mixed types allowed)."""
    out = np.zeros(values.shape, dtype=bool)
    for c in choices:
        out |= values == c
    return out


# Columns ``_fill_costs`` reads or fills (all float arrays).
_COST_INPUT_COLUMNS = ("h_in", "w_in", "c_in", "h_out", "w_out", "c_out", "kernel", "groups", "n_inputs")
_COST_COLUMNS = ("flops", "macs", "bytes_in", "bytes_out", "weights_bytes")


def _fill_costs(cols: Dict[str, np.ndarray], op_type: np.ndarray, dtype_bytes: Any) -> Dict[str, np.ndarray]:
    """Fill macs/flops/bytes that follow from shapes where the source did not give them.

    ``cols``: float arrays of ``_COST_INPUT_COLUMNS`` and ``_COST_COLUMNS`` (the latter
    are filled in place, NaN = not given); ``op_type``: the op types; ``dtype_bytes``: a
    number or one per op. One numpy pass per rule, over all ops at once."""
    t = np.asarray(op_type, dtype=object)
    h_in, w_in, c_in = cols["h_in"], cols["w_in"], cols["c_in"]
    h_out, w_out, c_out = cols["h_out"], cols["w_out"], cols["c_out"]
    k, g = cols["kernel"], cols["groups"]
    flops, macs = cols["flops"], cols["macs"]
    bytes_in, bytes_out, wb = cols["bytes_in"], cols["bytes_out"], cols["weights_bytes"]
    dt = np.broadcast_to(np.asarray(dtype_bytes, dtype=float), t.shape)
    is_fc = t == "FULLY_CONNECTED"
    with np.errstate(all="ignore"):  # NaN shapes give NaN costs, as the row-wise rules did
        m_conv = _isin(t, CONV_TYPES) | is_fc
        kk = np.where(is_fc | np.isnan(k), 1.0, k * k)
        gg = np.where(np.isnan(g) | (g <= 0), 1.0, g)
        m = m_conv & np.isnan(macs)
        macs[m] = (h_out * w_out * c_out * kk * c_in / gg)[m]
        m = m_conv & np.isnan(wb)
        wb[m] = ((kk * c_in / gg * c_out + c_out) * dt)[m]
        no_flops = np.isnan(flops)
        m = no_flops & ~np.isnan(macs)
        flops[m] = 2.0 * macs[m]
        no_flops &= ~m
        m_pool = _isin(t, POOL_TYPES + ("MEAN",))
        kk_pool = np.where(np.isnan(k), 1.0, k * k)
        m = no_flops & m_pool
        flops[m] = (h_out * w_out * c_out * kk_pool)[m]
        m = no_flops & ~m_pool  # elementwise / data movement: one op per output element
        flops[m] = (h_out * w_out * c_out)[m]
        m = np.isnan(macs)
        macs[m] = flops[m] / 2.0
        m = np.isnan(bytes_in)
        n_in = np.where(np.isnan(cols["n_inputs"]), 1.0, cols["n_inputs"])
        # CONCATENATION: the inputs together hold the output
        per_input = np.where(t == "CONCATENATION", h_in * w_in * c_out / n_in, h_in * w_in * c_in)
        bytes_in[m] = (per_input * n_in * dt)[m]
        m = np.isnan(bytes_out)
        bytes_out[m] = (h_out * w_out * c_out * dt)[m]
        wb[np.isnan(wb)] = 0.0
    return cols


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
    return r


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
    cols = {c: out[c].to_numpy(dtype=float, copy=True) for c in _COST_INPUT_COLUMNS + _COST_COLUMNS}
    _fill_costs(cols, out["op_type"].to_numpy(dtype=object), dtype_bytes)
    for c in _COST_COLUMNS:
        out[c] = cols[c]
    return add_derived(out)


def _attr(obj: Any, names: Iterable[str], default: Any = None) -> Any:
    """The first of ``names`` that a dict holds, or that an object has as a non-None attribute."""
    if isinstance(obj, dict):
        for n in names:
            if n in obj:
                return obj[n]
        return default
    for n in names:
        v = getattr(obj, n, None)
        if v is not None:
            return v
    return default


def _nhwc(shape: Optional[Iterable[Any]]) -> List[float]:
    if shape is None:
        return [float("nan")] * 3
    try:
        s = [float(x) for x in shape]
    except (TypeError, ValueError):
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


# Per-op values ``graph_op_rows`` gives (one tuple per op, in this order).
GRAPH_ROW_FIELDS = BASE_COLUMNS + ["dtype_bytes", "op_index", "inputs", "outputs"]
_GRAPH_EXTRA_COLUMNS = ["op_index", "inputs", "outputs"]
_NON_NUMERIC = ("op_type", "fused_activation", "op_index", "inputs", "outputs")


def _op_fields(op: Any, i: int, dtype_bytes: Optional[float]) -> tuple:
    """The raw attributes of any op-like object (attributes or dict keys, by their names)."""
    options = _attr(op, ["options"], {}) or {}
    act = options.get("fused_activation", options.get("fused_activation_function"))
    if act is None:
        act = _attr(op, ["fused_activation"], None)
        act = act() if callable(act) else act
    return (_attr(op, ["type", "op_type", "builtin"], "UNKNOWN"), options,
            _attr(op, ["input_shapes"], []) or [], _attr(op, ["output_shapes"], []) or [],
            _attr(op, ["kernel", "kernel_h"], options.get("filter_height")),
            _attr(op, ["stride", "stride_h"], options.get("stride_h")), _attr(op, ["groups"], None),
            _attr(op, ["in_channels", "c_in"], None), _attr(op, ["out_channels", "c_out"], None), act,
            dtype_bytes if dtype_bytes is not None else _num(_attr(op, ["dtype_bytes"], 4.0)),
            _attr(op, ["flops"], None), _attr(op, ["macs"], None), _attr(op, ["bytes_in"], None),
            _attr(op, ["bytes_out"], None), _attr(op, ["weights_bytes"], None), _attr(op, ["index"], i),
            _attr(op, ["inputs"], None), _attr(op, ["outputs"], None))


def _reader_op_fields(op: Any, i: int, dtype_bytes: Optional[float]) -> tuple:
    """``_op_fields`` of a ``models_zoo.graph.Op``, whose attributes are known: the same
    values without searching for attribute names (it has no kernel/stride/c_in/c_out/
    dtype_bytes attributes, so those come from its options and defaults)."""
    options = op.options or {}
    act = options.get("fused_activation", options.get("fused_activation_function"))
    if act is None:
        act = op.fused_activation
    v = op.type
    return (v if v is not None else "UNKNOWN", options, op.input_shapes or [], op.output_shapes or [],
            op.kernel_h if op.kernel_h is not None else options.get("filter_height"),
            options.get("stride_h"), op.groups, op.in_channels, op.out_channels, act,
            dtype_bytes if dtype_bytes is not None else 4.0,
            op.flops, op.macs, op.bytes_in, op.bytes_out, op.weights_bytes,
            op.index if op.index is not None else i, op.inputs, op.outputs)


def _op_row(fields: tuple) -> tuple:
    """One ``GRAPH_ROW_FIELDS`` tuple from ``_op_fields``."""
    (t, options, in_shapes, out_shapes, kernel, stride, groups, in_ch, out_ch, act, dt,
     flops, macs, bytes_in, bytes_out, weights_bytes, index, ins, outs) = fields
    t = str(t).upper()
    h_in, w_in, c_in = _nhwc(in_shapes[0] if len(in_shapes) else None)
    h_out, w_out, c_out = _nhwc(out_shapes[0] if len(out_shapes) else None)
    kernel = _num(kernel)
    stride = _num(stride)
    groups = _num(groups)
    if t == "DEPTHWISE_CONV_2D" and math.isnan(groups):
        groups = c_in
    if t == "CONV_2D" and not math.isnan(groups) and groups > 1:
        t = "CONV_2D_GROUP"
    c_in = _num(in_ch) if in_ch is not None else c_in
    c_out = _num(out_ch) if out_ch is not None else c_out
    act = "NONE" if act in (None, "NONE", 0) else str(act)  # None is kept for "unknown"
    n_inputs = float(len(in_shapes)) if t in ("CONCATENATION", "ADD", "MUL", "SUB") else 1.0
    return (t, h_in, w_in, c_in, h_out, w_out, c_out, kernel, stride,
            groups if not math.isnan(groups) else 1.0, n_inputs,
            _num(flops), _num(macs), _num(bytes_in), _num(bytes_out), _num(weights_bytes), act, dt, index,
            tuple(int(x) for x in ins) if ins is not None else None,
            tuple(int(x) for x in outs) if outs is not None else None)


def graph_op_rows(graph: Any, *, dtype_bytes: Optional[float] = None) -> List[tuple]:
    """Raw feature values of the ops of a graph from ``models_zoo.graph.read_graph``, one
    plain tuple per op (``GRAPH_ROW_FIELDS``; costs not yet filled in). Cheap to pickle,
    so a process pool can return them; ``ops_from_rows`` makes the table.

    Reads each op's ``type``, ``input_shapes``/``output_shapes``, ``options`` and, where the
    reader provides them, kernel/stride/groups/flops/macs/bytes, ``index`` and
    ``inputs``/``outputs`` (tensor ids, for data-flow fusion)."""
    from models_zoo.graph import Op

    ops = _attr(graph, ["ops"], None)
    if ops is None:
        raise DatasetError("graph has no .ops", hint="pass a Graph from models_zoo.graph.read_graph")
    return [_op_row(_reader_op_fields(op, i, dtype_bytes) if type(op) is Op else _op_fields(op, i, dtype_bytes))
            for i, op in enumerate(ops)]


def _object_column(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values) if not isinstance(values, list) else values
    return out


def ops_from_rows(rows_per_graph: Sequence[Sequence[tuple]], networks: Optional[Sequence[Any]] = None,
                  *, network_col: str = "network") -> pd.DataFrame:
    """One op table (base + derived columns, ``op_index``, ``inputs``, ``outputs``) from
    ``graph_op_rows`` of many graphs; with ``networks`` (one id per graph), a first
    column ``network_col`` tags each op. Costs and derived columns are computed once,
    vectorised over all ops."""
    flat = [r for rows in rows_per_graph for r in rows]
    cols = BASE_COLUMNS + _GRAPH_EXTRA_COLUMNS
    if networks is not None:
        if len(networks) != len(rows_per_graph):
            raise DatasetError(f"{len(networks)} network ids for {len(rows_per_graph)} graphs")
    if not flat:  # no ops at all: empty columns, the network column typed by its first id
        out = add_derived(pd.DataFrame([], columns=cols))
        if networks is not None and len(networks):
            out.insert(0, network_col, networks[0])
        return out
    if networks is not None:
        cols = [network_col] + cols
    by_field = dict(zip(GRAPH_ROW_FIELDS, zip(*flat)))
    num = {c: np.array(by_field[c], dtype=float) for c in BASE_COLUMNS if c not in _NON_NUMERIC}
    op_type = _object_column(by_field["op_type"])
    _fill_costs(num, op_type, np.array(by_field["dtype_bytes"], dtype=float))
    data: Dict[str, Any] = {}
    if networks is not None:
        data[network_col] = [net for net, rows in zip(networks, rows_per_graph) for _ in range(len(rows))]
    for c in BASE_COLUMNS:
        data[c] = num[c] if c in num else list(by_field[c])
    data["op_index"] = list(by_field["op_index"])
    data["inputs"] = _object_column(by_field["inputs"])
    data["outputs"] = _object_column(by_field["outputs"])
    return add_derived(pd.DataFrame(data, columns=cols))


def ops_from_graphs(graphs: Sequence[Any], networks: Optional[Sequence[Any]] = None, *,
                    dtype_bytes: Optional[float] = None, network_col: str = "network") -> pd.DataFrame:
    """One op table for many graphs (see ``ops_from_rows``; ``graph_op_rows`` per graph)."""
    return ops_from_rows([graph_op_rows(g, dtype_bytes=dtype_bytes) for g in graphs], networks,
                         network_col=network_col)


def ops_from_graph(graph: Any, *, dtype_bytes: Optional[float] = None) -> pd.DataFrame:
    """Schema rows for the ops of one graph from ``models_zoo.graph.read_graph`` (see
    ``graph_op_rows``); adds ``op_index``, ``inputs``/``outputs`` (tensor ids, for
    data-flow fusion) when available."""
    return ops_from_graphs([graph], dtype_bytes=dtype_bytes)


def add_derived(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``DERIVED_COLUMNS`` to a frame with the base columns (returns a new frame)."""
    out = df.copy()
    for c in BASE_COLUMNS:
        if c not in out.columns:
            out[c] = None if c in ("op_type", "fused_activation") else np.nan
    f = {c: out[c].astype(float).to_numpy() for c in NUMERIC_COLUMNS if c in BASE_COLUMNS}
    d: Dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        d["log_flops"] = np.log1p(f["flops"])
        d["log_macs"] = np.log1p(f["macs"])
        d["log_bytes_in"] = np.log1p(f["bytes_in"])
        d["log_bytes_out"] = np.log1p(f["bytes_out"])
        d["log_weights_bytes"] = np.log1p(f["weights_bytes"])
        total = f["bytes_in"] + f["bytes_out"] + f["weights_bytes"]
        d["log_bytes_total"] = np.log1p(total)
        d["arith_intensity"] = f["flops"] / np.where(total > 0, total, np.nan)
        d["px_out"] = f["h_out"] * f["w_out"]
        d["log_px_out"] = np.log1p(d["px_out"])
        d["c_in_slices"] = np.ceil(f["c_in"] / CHANNEL_SLICE)
        d["c_out_slices"] = np.ceil(f["c_out"] / CHANNEL_SLICE)
        d["c_in_pad_frac"] = d["c_in_slices"] * CHANNEL_SLICE / f["c_in"] - 1.0
        d["c_out_pad_frac"] = d["c_out_slices"] * CHANNEL_SLICE / f["c_out"] - 1.0
        d["c_in_per_group"] = f["c_in"] / np.where(f["groups"] > 0, f["groups"], np.nan)
        d["is_pointwise"] = (f["kernel"] == 1).astype(float)
        d["k_sq"] = f["kernel"] ** 2
    # Columns already there are replaced in place; new ones are added in one step.
    for c in [c for c in DERIVED_COLUMNS if c in out.columns]:
        out[c] = d.pop(c)
    if d:
        out = pd.concat([out, pd.DataFrame(d, index=out.index)], axis=1)
    return out
