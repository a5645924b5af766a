"""The batch prediction path (``ops_of_files`` -> one op table, ``group_ops`` over all
networks at once, vectorised ``assign_kernel_types`` / ``match_mask``, per-type interval
lookup) gives exactly what the per-network path gave before it.

Two kinds of checks:
- a per-network *reference* kept below (``_ref_*``): the code of host/modeler/features.py
  and kernels.py at commit ca57966 (before the batch path), one network at a time with
  pandas records; the fast path must give equal tables (dtypes, NaNs, order, values);
- *golden values* computed with that same commit (ca57966; Python 3.11, pandas 3.1.1,
  numpy 2.4.6, scikit-learn 1.9.1, TensorFlow-converted zoo files) and pasted here, so
  a change to both paths at once is caught too.
Zoo files are built with models_zoo (TensorFlow); the li2024 and table checks need none.
"""
from __future__ import annotations

import hashlib
import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from host.modeler import data_li2024
from host.modeler.features import (BASE_COLUMNS, CHANNEL_SLICE, CONV_TYPES, DERIVED_COLUMNS, NUMERIC_COLUMNS,
                                   POOL_TYPES, add_derived, graph_op_rows, ops_from_li2024, ops_from_rows)
from host.modeler.kernels import KernelGrouper, group_ops, load_rules, match_mask, matches
from opcost.errors import ModelFileError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "li2024")
NAMES = ["mbv2", "nb201", "mbconv_se", "resnet_bottleneck"]


# ---------------------------------------------------------------------------------------
# Reference: the per-network path at commit ca57966 (features.ops_from_graph with its
# per-row _fill_costs and pandas add_derived; kernels.group_ops / assign_kernel_types
# over to_dict("records")).
# ---------------------------------------------------------------------------------------
def _ref_num(v):
    if v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _ref_attr(obj, names, default=None):
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            v = getattr(obj, n)
            if v is not None:
                return v
    return default


def _ref_nhwc(shape):
    if shape is None:
        return [float("nan")] * 3
    s = [_ref_num(x) for x in shape]
    return s[1:] if len(s) == 4 else s if len(s) == 3 else [1.0, 1.0, s[1]] if len(s) == 2 else (
        [1.0, 1.0, s[0]] if len(s) == 1 else [1.0, 1.0, 1.0])


def _ref_fill_costs(r, dtype_bytes):
    t = r["op_type"]
    h_in, w_in, c_in, h_out, w_out, c_out = (r[c] for c in ("h_in", "w_in", "c_in", "h_out", "w_out", "c_out"))
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
            r["flops"] = h_out * w_out * c_out * (1.0 if math.isnan(k) else k * k)
        else:
            r["flops"] = h_out * w_out * c_out
    if math.isnan(r["macs"]):
        r["macs"] = r["flops"] / 2.0
    if math.isnan(r["bytes_in"]):
        n_in = 1.0 if math.isnan(r["n_inputs"]) else r["n_inputs"]
        per_input = h_in * w_in * c_in
        if t == "CONCATENATION":
            per_input = h_in * w_in * c_out / n_in
        r["bytes_in"] = per_input * n_in * dtype_bytes
    if math.isnan(r["bytes_out"]):
        r["bytes_out"] = h_out * w_out * c_out * dtype_bytes
    if math.isnan(r["weights_bytes"]):
        r["weights_bytes"] = 0.0
    return r


def _ref_add_derived(df):
    out = df.copy()
    f = out[[c for c in NUMERIC_COLUMNS if c in BASE_COLUMNS]].astype(float)
    for c in ("flops", "macs", "bytes_in", "bytes_out", "weights_bytes"):
        out["log_" + c] = np.log1p(f[c])
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


def _ref_graph_ops(graph, network):
    rows = []
    for i, op in enumerate(getattr(graph, "main_ops", None) or graph.ops):
        t = str(_ref_attr(op, ["type", "op_type", "builtin"], "UNKNOWN")).upper()
        options = _ref_attr(op, ["options"], {}) or {}
        in_shapes = _ref_attr(op, ["input_shapes"], []) or []
        out_shapes = _ref_attr(op, ["output_shapes"], []) or []
        h_in, w_in, c_in = _ref_nhwc(in_shapes[0] if len(in_shapes) else None)
        h_out, w_out, c_out = _ref_nhwc(out_shapes[0] if len(out_shapes) else None)
        groups = _ref_num(_ref_attr(op, ["groups"], None))
        if t == "DEPTHWISE_CONV_2D" and math.isnan(groups):
            groups = c_in
        if t == "CONV_2D" and not math.isnan(groups) and groups > 1:
            t = "CONV_2D_GROUP"
        act = options.get("fused_activation", options.get("fused_activation_function"))
        if act is None:
            act = _ref_attr(op, ["fused_activation"], None)
            act = act() if callable(act) else act
        r = {c: float("nan") for c in BASE_COLUMNS}
        r.update(op_type=t, h_in=h_in, w_in=w_in, h_out=h_out, w_out=w_out,
                 c_in=_ref_num(_ref_attr(op, ["in_channels", "c_in"], c_in)),
                 c_out=_ref_num(_ref_attr(op, ["out_channels", "c_out"], c_out)),
                 kernel=_ref_num(_ref_attr(op, ["kernel", "kernel_h"], options.get("filter_height"))),
                 stride=_ref_num(_ref_attr(op, ["stride", "stride_h"], options.get("stride_h"))),
                 groups=groups if not math.isnan(groups) else 1.0,
                 n_inputs=float(len(in_shapes)) if t in ("CONCATENATION", "ADD", "MUL", "SUB") else 1.0,
                 fused_activation="NONE" if act in (None, "NONE", 0) else str(act),
                 **{c: _ref_num(_ref_attr(op, [c], None))
                    for c in ("flops", "macs", "bytes_in", "bytes_out", "weights_bytes")})
        r = _ref_fill_costs(r, _ref_num(_ref_attr(op, ["dtype_bytes"], 4.0)))
        r["op_index"] = _ref_attr(op, ["index"], i)
        ins, outs = _ref_attr(op, ["inputs"], None), _ref_attr(op, ["outputs"], None)
        r["inputs"] = tuple(int(x) for x in ins) if ins is not None else None
        r["outputs"] = tuple(int(x) for x in outs) if outs is not None else None
        rows.append(r)
    ops = _ref_add_derived(pd.DataFrame(rows, columns=BASE_COLUMNS + ["op_index", "inputs", "outputs"]))
    ops.insert(0, "network", network)
    return ops


def _ref_isnan(v):
    try:
        return v is None or bool(np.isnan(float(v)))
    except (TypeError, ValueError):
        return True


def _ref_group_ops(ops, rules, network_col=None):
    groups = [(None, ops)] if network_col is None else list(ops.groupby(network_col, sort=False))
    out_rows = []
    for _net, g in groups:
        if "op_index" in g.columns:
            g = g.sort_values("op_index", kind="stable")
        records, labels = g.to_dict("records"), list(g.index)
        has_flow = "inputs" in g.columns and "outputs" in g.columns and all(
            r.get("inputs") is not None and r.get("outputs") is not None for r in records)
        consumers = {}
        for op in records if has_flow else []:
            for t in op.get("inputs") or ():
                consumers[t] = consumers.get(t, 0) + 1
        current = last = None
        for label, op in zip(labels, records):
            joined = False
            for rule in ((rules.get("absorb") or []) if current is not None else []):
                if op["op_type"] not in rule["ops"] or current["op_type"] not in rule["into"]:
                    continue
                if not matches(op, rule.get("when") or {}):
                    continue
                if has_flow:
                    reads = set(last.get("outputs") or ()) & set(op.get("inputs") or ())
                    if not reads or ((rule.get("when") or {}).get("single_consumer") and any(
                            consumers.get(t, 0) != 1 for t in reads)):
                        continue
                joined = True
                break
            if joined:
                current["n_ops"] += 1
                current["fused_ops"] = (current["fused_ops"] + "+" if current["fused_ops"] else "") + op["op_type"]
                current["op_rows"].append(label)
                current["flops_kernel"] += float(op.get("flops") or 0.0) if not _ref_isnan(op.get("flops")) else 0.0
                current["bytes_out"] = op.get("bytes_out", current.get("bytes_out"))
            else:
                current = dict(op, n_ops=1, fused_ops="", op_rows=[label])
                current["flops_kernel"] = 0.0 if _ref_isnan(op.get("flops")) else float(op.get("flops"))
                out_rows.append(current)
            last = op
    return pd.DataFrame(out_rows, columns=list(ops.columns) + ["n_ops", "fused_ops", "op_rows", "flops_kernel"])


def _ref_assign_kernel_types(kernels, rules, selectors):
    sel_yes = {name: sel.predict(kernels[sel.spec["features"]].astype(float)) for name, sel in selectors.items()}
    types = []
    for i, r in enumerate(kernels.to_dict("records")):
        t = None
        for rule in rules["kernel_types"]:
            if not matches(r, rule["when"]):
                continue
            sel = rule.get("selector")
            if sel is not None and (not bool(rules["selectors"][sel].get("default", False))
                                    if sel not in sel_yes else not sel_yes[sel][i]):
                continue
            t = rule["name"]
            break
        types.append(t if t is not None else str(r.get("op_type", "unknown")).lower())
    return types


def _ref_kernels(ops, grouper, network_col="network"):
    k = _ref_group_ops(ops, grouper.rules_, network_col)
    k["kernel_type"] = _ref_assign_kernel_types(k, grouper.rules_, grouper.selectors_)
    return k


def _assert_same(fast, ref):
    """Equal frames (dtypes, index, NaN positions, exact values) and equal float signs."""
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    for c in fast.columns:
        if fast[c].dtype == float:
            assert np.array_equal(np.signbit(fast[c].to_numpy()), np.signbit(ref[c].to_numpy())), c


# ---------------------------------------------------------------------------------------
# Real zoo files (TensorFlow)
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from models_zoo import micro, nas

    cache = str(tmp_path_factory.mktemp("speed_zoo"))
    paths = nas.sample("mbv2-space", 1, 11, cache_dir=cache, width_mult=0.25, input_size=64)
    paths.append(nas.build_nb201(123, cache_dir=cache, channels=8, cells_per_stage=1))
    paths += micro.build_micro("mbconv_se", 1, 0, cache_dir=cache)
    paths += micro.build_micro("resnet_bottleneck", 1, 0, cache_dir=cache)
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def zoo_ops(zoo):
    from host.modeler.predictor import ops_of_files

    return ops_of_files(zoo, NAMES)


# Computed with the code at commit ca57966 from the same four zoo files (see module doc).
GOLDEN_ZOO = {
    "mbv2": {"n_ops": 62, "flops": 8993088.0, "bytes_in": 773888.0, "n_kernels": 51,
             "kernel_types": {"conv2d": 33, "depthwise": 16, "fully_connected": 1, "mean": 1},
             "fused": ["ADD"]},
    "nb201": {"n_ops": 37, "flops": 8002176.0, "bytes_in": 778368.0, "n_kernels": 28,
              "kernel_types": {"conv2d": 10, "elementwise": 8, "fully_connected": 1, "mean": 1, "pooling": 8},
              "fused": ["ADD", "ADD+ADD", "ADD+MUL"]},
    "mbconv_se": {"n_ops": 13, "flops": 1821984.0, "bytes_in": 606560.0, "n_kernels": 8,
                  "kernel_types": {"conv2d": 2, "depthwise": 1, "elementwise": 2, "fully_connected": 2, "mean": 1},
                  "fused": ["ADD", "LOGISTIC+MUL", "MUL"]},
    "resnet_bottleneck": {"n_ops": 4, "flops": 20348928.0, "bytes_in": 4128768.0, "n_kernels": 3,
                          "kernel_types": {"conv2d": 3}, "fused": ["ADD"]},
}


@pytest.mark.tf
def test_op_table_equals_per_network_reference_and_golden(zoo, zoo_ops):
    from models_zoo.graph import read_graph

    ref = pd.concat([_ref_graph_ops(read_graph(p), n) for p, n in zip(zoo, NAMES)], ignore_index=True)
    _assert_same(zoo_ops, ref)
    k = KernelGrouper("gpu").fit(zoo_ops).transform(zoo_ops)
    for n in NAMES:
        o, kk = zoo_ops[zoo_ops["network"] == n], k[k["network"] == n]
        got = {"n_ops": len(o), "flops": float(o["flops"].sum()), "bytes_in": float(o["bytes_in"].sum()),
               "n_kernels": len(kk),
               "kernel_types": {a: int(b) for a, b in sorted(kk["kernel_type"].value_counts().items())},
               "fused": sorted(set(x for x in kk["fused_ops"] if x))}
        assert got == GOLDEN_ZOO[n], n


@pytest.mark.tf
@pytest.mark.parametrize("runtime", ["gpu", "xnnpack", "cpu"])
def test_kernel_table_equals_reference(zoo_ops, runtime):
    g = KernelGrouper(runtime).fit(zoo_ops)
    _assert_same(g.transform(zoo_ops), _ref_kernels(zoo_ops, g))
    # rows shuffled (networks interleaved, op_index out of order) and a non-default index
    shuffled = zoo_ops.sample(frac=1.0, random_state=3)
    shuffled.index = shuffled.index * 7 + 5
    _assert_same(g.transform(shuffled), _ref_kernels(shuffled, g))


@pytest.mark.tf
def test_reader_fast_path_equals_generic_op_objects(zoo):
    from models_zoo.graph import Op, read_graph

    fields = [f for f in Op.__dataclass_fields__ if not f.startswith("_")]
    for p in zoo:
        g = read_graph(p)
        generic = SimpleNamespace(ops=[SimpleNamespace(fused_activation=op.fused_activation,
                                                       **{f: getattr(op, f) for f in fields})
                                       for op in g.main_ops])
        fast = SimpleNamespace(ops=g.main_ops)
        _assert_same(ops_from_rows([graph_op_rows(fast)]), ops_from_rows([graph_op_rows(generic)]))


@pytest.mark.tf
def test_predictions_equal_reference_and_per_network(zoo_ops):
    from host.modeler.predictor import LatencyPredictor

    train = zoo_ops.copy()
    train["latency_ms"] = 1e-6 * train["flops"] + 0.01 * (1 + train["op_index"] % 3)
    nets = train.groupby("network")["latency_ms"].sum().mul(1.2).add(0.3).rename("latency_ms").reset_index()
    pred = LatencyPredictor(runtime="gpu", overhead="dispatch", stack_cv=0, min_samples_per_type=3).fit(train, nets)
    # a fifth network with an op type never seen in fit (fallback model, ALL_TYPES interval)
    extra = zoo_ops[zoo_ops["network"] == "mbconv_se"].copy()
    extra["network"] = "unseen"
    extra.loc[extra.index[0], "op_type"] = "GATHER_ND"
    ops = pd.concat([zoo_ops, extra], ignore_index=True)

    out = pred.predict_ops(ops)
    ref_k = _ref_kernels(ops, pred.grouper_)
    km = pred.model_.kernel_model_
    z, _ = km._predict_z(ref_k[km.feature_columns_].astype(float).to_numpy(), ref_k["kernel_type"].to_numpy())
    d = km.predict_detail(ref_k)
    lo, hi = np.empty_like(z), np.empty_like(z)
    for i, t in enumerate(ref_k["kernel_type"]):  # the per-row interval lookup it replaced
        q = km.residual_quantiles_.get(t if t in km.type_counts_ else "_all", km.residual_quantiles_["_all"])
        lo[i], hi[i] = z[i] + q[0], z[i] + q[1]
    assert np.array_equal(d["lo"].to_numpy(), np.exp(lo)) and np.array_equal(d["hi"].to_numpy(), np.exp(hi))
    assert d["unknown_type"].sum() == 1
    pd.testing.assert_frame_equal(out, pred.model_.predict_detail(ref_k), check_exact=True)
    alone = pd.concat([pred.predict_ops(ops[ops["network"] == n]) for n in NAMES + ["unseen"]])
    pd.testing.assert_frame_equal(out, alone, check_exact=True)
    assert out.loc["unseen", "n_unknown_kernels"] == 1


@pytest.mark.tf
def test_process_pool_gives_the_serial_table_and_errors(zoo, tmp_path):
    from host.modeler.predictor import POOL_MIN_FILES, ops_of_files

    paths = (zoo * POOL_MIN_FILES)[:POOL_MIN_FILES + 3]
    names = [f"n{i}" for i in range(len(paths))]
    _assert_same(ops_of_files(paths, names, workers=2), ops_of_files(paths, names, workers=1))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    paths[5] = str(bad)
    errors = []
    for w in (1, 2):
        with pytest.raises(ModelFileError) as e:
            ops_of_files(paths, names, workers=w)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "TFLite" in errors[0]


# ---------------------------------------------------------------------------------------
# li2024 (shipped data, no TensorFlow)
# ---------------------------------------------------------------------------------------
# Computed with the code at commit ca57966: sha256 (first 16 hex) of the base numeric
# columns of ops_from_li2024 (float64, C order), NaN-sums of the derived columns, and
# per device the gpu kernel table from KernelGrouper("gpu").fit(ops, kernel_name).
GOLDEN_LI_BASE_SHA = "dd6df9b777aecba8"
GOLDEN_LI_DERIVED_SUMS = {
    "log_flops": 250041.62751991983, "log_macs": 238488.92343352686, "log_bytes_in": 196066.37915665028,
    "log_bytes_out": 187030.4267227131, "log_weights_bytes": 160449.73637977676,
    "log_bytes_total": 220393.88782701828, "arith_intensity": 364189.33973290893, "px_out": 19464111.0,
    "log_px_out": 83694.91931806569, "c_in_slices": 1142301.0, "c_out_slices": 1165473.0,
    "c_in_pad_frac": 138.88883604346816, "c_out_pad_frac": 36.24019339550995, "c_in_per_group": 3381135.0,
    "is_pointwise": 8670.0, "k_sq": 558714.0,
}
_ADRENO = {"concat": 301, "conv2d": 3280, "conv2d_grouped": 194, "depthwise": 745, "fully_connected": 599,
           "mean": 347, "pooling": 90}
GOLDEN_LI_KERNEL_TYPES = {
    "mi8se": _ADRENO, "pixel4": _ADRENO,
    "s10": {"concat": 301, "conv2d": 3112, "conv2d_grouped": 194, "conv2d_winograd": 168, "depthwise": 745,
            "fully_connected": 599, "mean": 347, "pooling": 90},
}
GOLDEN_LI_FLOPS_KERNEL_SUM = 216630320656.0


@pytest.fixture(scope="module")
def li_ops():
    ops = data_li2024.load_ops_gpu(os.path.join(DATA, data_li2024.OPS_GPU_FILE))
    return ops.rename(columns={"model": "network"}).reset_index(drop=True)


def test_li2024_features_and_kernels_match_golden_and_reference(li_ops):
    feat = ops_from_li2024(li_ops)
    num = [c for c in BASE_COLUMNS if c not in ("op_type", "fused_activation")]
    sha = hashlib.sha256(np.ascontiguousarray(feat[num].to_numpy(dtype=float)).tobytes()).hexdigest()[:16]
    assert sha == GOLDEN_LI_BASE_SHA
    for c in DERIVED_COLUMNS:
        total = float(np.nansum(feat[c].to_numpy(dtype=float)))
        assert total == pytest.approx(GOLDEN_LI_DERIVED_SUMS[c], rel=1e-12), c
    _assert_same(add_derived(feat[BASE_COLUMNS]), _ref_add_derived(feat[BASE_COLUMNS]))
    f = pd.concat([li_ops[["network", "op_index", "device", "kernel_name"]], feat], axis=1)
    for device, d in f.groupby("device"):
        d = d.reset_index(drop=True)
        g = KernelGrouper("gpu").fit(d, d["kernel_name"].to_numpy())
        k = g.transform(d)
        assert dict(k["kernel_type"].value_counts()) == GOLDEN_LI_KERNEL_TYPES[device], device
        assert float(k["flops_kernel"].sum()) == GOLDEN_LI_FLOPS_KERNEL_SUM
        if device == "s10":  # the one with a learnt (non-constant) Winograd selector
            _assert_same(k, _ref_kernels(d, g))


# ---------------------------------------------------------------------------------------
# Small tables: conditions and grouping corner cases
# ---------------------------------------------------------------------------------------
def _mixed_table():
    return pd.DataFrame({
        "op_type": pd.Series(["CONV_2D", "ADD", None, "MEAN", "CONV_2D", "RELU"], dtype="str"),
        "kernel": [3.0, np.nan, 1.0, -0.0, 3.0, 0.0],
        "n": [1, 2, 3, 1, 0, 1],
        "flag": [True, False, True, True, False, True],
        "obj": [None, "x", ("t",), 1.0, ["l"], "1"],
        "name": pd.Series(["a", None, "c", "a", "b", None], dtype="string"),
    })


@pytest.mark.parametrize("when", [
    {}, {"op_type": ["CONV_2D", "MEAN"]}, {"op_type": "ADD"}, {"op_type": None}, {"kernel": 3},
    {"kernel": {"min": 0, "max": 2}}, {"kernel": [1, 3.0, "x"]}, {"kernel": True}, {"kernel": "3"},
    {"n": {"min": 1}}, {"n": [1]}, {"flag": True}, {"flag": [1]}, {"obj": "x"}, {"obj": 1}, {"obj": [None, "1"]},
    {"obj": {"max": 5}}, {"obj": [["l"]]}, {"name": {"min": 0}}, {"missing": 1}, {"missing": None},
    {"op_type": ["CONV_2D"], "kernel": 3, "single_consumer": True},
])
def test_match_mask_equals_matches_per_row(when):
    t = _mixed_table()
    expect = np.array([matches(r, when) for r in t.to_dict("records")], dtype=bool)
    assert match_mask(t, when).tolist() == expect.tolist()


def test_group_ops_corner_cases_equal_reference():
    rules = load_rules("gpu")
    base = dict(h_in=8.0, w_in=8.0, c_in=16.0, h_out=8.0, w_out=8.0, c_out=16.0, kernel=3.0, stride=1.0,
                groups=1.0, n_inputs=1.0, flops=1000.0, macs=500.0, bytes_in=4096.0, bytes_out=4096.0,
                weights_bytes=0.0, fused_activation=None)
    types = ["CONV_2D", "RELU", "ADD", "CONV_2D", "HARD_SWISH", "MEAN", "RELU", "MUL"]
    rows = [dict(base, op_type=t, network=n, op_index=i, flops=f, bytes_out=100.0 * i)
            for i, (t, n, f) in enumerate(zip(types, ["a", "b", "a", None, "b", "a", "b", "a"],
                                               [1.0, np.nan, 0.0, -0.0, 5.0, 2.0, 3.0, 4.0]))]
    ops = add_derived(pd.DataFrame(rows))
    ops["op_index"] = [3, 1, 2, 0, 0, 1, 5, 3]  # ties (stable) and out of order
    for net in ("network", None):
        _assert_same(group_ops(ops, rules, network_col=net), _ref_group_ops(ops, rules, net))
    # with tensor ids for one network only: data flow there, adjacency in the other
    ops["inputs"] = pd.Series([(0,), (9,), (1,), None, None, (2,), (4,), (2, 5)], dtype=object)
    ops["outputs"] = pd.Series([(1,), (4,), (2,), None, None, (5,), (6,), (7,)], dtype=object)
    _assert_same(group_ops(ops, rules, network_col="network"), _ref_group_ops(ops, rules, "network"))
    empty = ops.iloc[:0]
    _assert_same(group_ops(empty, rules, network_col="network"), _ref_group_ops(empty, rules, "network"))


def test_add_derived_twice_replaces_columns_in_place():
    t = add_derived(pd.DataFrame([dict(op_type="CONV_2D", h_in=4.0, w_in=4.0, c_in=3.0, h_out=2.0, w_out=2.0,
                                       c_out=5.0, kernel=1.0, stride=2.0, groups=0.0, n_inputs=1.0, flops=0.0,
                                       macs=0.0, bytes_in=0.0, bytes_out=0.0, weights_bytes=0.0)]))
    _assert_same(add_derived(t), _ref_add_derived(_ref_add_derived(t)))
    assert list(add_derived(t).columns) == list(t.columns)


def test_speed_benchmark_builds_its_zoo_outside_the_timed_process(tmp_path):
    """benchmarks/predict_speed.py without --dir: the zoo is built (TensorFlow) and the
    predictor fitted in a child process, so the timed process never holds TensorFlow."""
    pytest.importorskip("tensorflow")
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OPCOST_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "predict_speed.py"),
                           "--per-family", "1", "--n", "20", "--json"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_predictions"] == 20 and out["n_distinct_files"] == 9
    assert out["tensorflow_in_timed_process"] is False
    assert out["networks_per_s"] > 0
