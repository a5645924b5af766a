"""Fusion grouping and kernel typing on small hand-built op tables, plus a check of the
gpu.yaml typing rules against the real li2024 kernel names (data/li2024, MIT)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from host.modeler import data_li2024
from host.modeler.features import add_derived, ops_from_li2024
from host.modeler.kernels import KernelGrouper, group_ops, load_rules, matches, validate_rules
from opcost.errors import PredictorError, UsageError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "li2024")


def _op(op_type, inputs=None, outputs=None, **kw):
    base = dict(op_type=op_type, h_in=8.0, w_in=8.0, c_in=16.0, h_out=8.0, w_out=8.0, c_out=16.0,
                kernel=3.0 if "CONV" in op_type else np.nan, stride=1.0, groups=1.0, n_inputs=1.0,
                flops=1000.0, macs=500.0, bytes_in=4096.0, bytes_out=4096.0, weights_bytes=0.0,
                fused_activation=None)
    base.update(kw)
    if inputs is not None:
        base["inputs"], base["outputs"] = tuple(inputs), tuple(outputs)
    return base


def _table(rows, network=None):
    df = pd.DataFrame(rows)
    df["op_index"] = range(len(df))
    if network is not None:
        df["network"] = network
    return add_derived(df)


def test_gpu_links_elementwise_into_producer_with_dataflow():
    # t0 -conv-> t1 -relu-> t2 -conv-> t3 ; add(t2, t3) -> t4 ; t2 has two readers
    ops = _table([
        _op("CONV_2D", [0], [1]),
        _op("RELU", [1], [2]),
        _op("CONV_2D", [2], [3]),
        _op("ADD", [2, 3], [4]),
        _op("HARD_SWISH", [4], [5]),
    ])
    k = group_ops(ops, load_rules("gpu"))
    assert list(k["fused_ops"]) == ["RELU", "ADD+HARD_SWISH"]
    assert list(k["n_ops"]) == [2, 3]
    assert k["op_rows"].tolist() == [[0, 1], [2, 3, 4]]
    assert k["flops_kernel"].tolist() == [2000.0, 3000.0]


def test_single_consumer_condition_blocks_fusion():
    # conv output t1 is read by RELU and by a later CONCATENATION: RELU must stay separate.
    ops = _table([
        _op("CONV_2D", [0], [1]),
        _op("RELU", [1], [2]),
        _op("CONCATENATION", [1, 2], [3]),
    ])
    k = group_ops(ops, load_rules("gpu"))
    assert list(k["op_type"]) == ["CONV_2D", "RELU", "CONCATENATION"]
    assert list(k["n_ops"]) == [1, 1, 1]


def test_adjacency_is_used_without_tensor_ids_and_per_network():
    rows = [_op("CONV_2D"), _op("RELU"), _op("MAX_POOL_2D"), _op("RELU")]
    ops = pd.concat([_table(rows, "a"), _table(rows[:2], "b")], ignore_index=True)
    k = group_ops(ops, load_rules("gpu"), network_col="network")
    assert list(k["network"]) == ["a", "a", "b"]
    assert list(k["fused_ops"]) == ["RELU", "RELU", "RELU"]
    # a network's first op is never absorbed into the previous network's last kernel
    ops2 = pd.concat([_table([_op("CONV_2D")], "a"), _table([_op("RELU")], "b")], ignore_index=True)
    k2 = group_ops(ops2, load_rules("gpu"), network_col="network")
    assert len(k2) == 2


def test_runtimes_differ_as_their_rules_say():
    rows = [_op("CONV_2D"), _op("RELU"), _op("ADD"), _op("LOGISTIC")]
    ops = _table(rows)
    assert len(group_ops(ops, load_rules("gpu"))) == 1
    xnn = group_ops(ops, load_rules("xnnpack"))
    assert list(xnn["op_type"]) == ["CONV_2D", "ADD", "LOGISTIC"]  # only clamp-like RELU fused
    assert len(group_ops(ops, load_rules("cpu"))) == 4


def test_kernel_types_from_rules_and_unknown_types():
    ops = _table([
        _op("CONV_2D", h_in=1.0, w_in=1.0, h_out=1.0, w_out=1.0, kernel=1.0),
        _op("AVERAGE_POOL_2D", h_out=1.0, w_out=1.0, kernel=8.0),
        _op("AVERAGE_POOL_2D", kernel=3.0),
        _op("DEPTHWISE_CONV_2D"),
        _op("CONV_2D", stride=2.0),
        _op("GATHER_ND"),
    ])
    k = KernelGrouper("gpu", network_col=None).fit(ops).transform(ops)
    assert list(k["kernel_type"]) == ["fully_connected", "mean", "pooling", "depthwise", "conv2d",
                                      "gather_nd"]


def test_winograd_selector_is_learnt_from_kernel_names():
    rng = np.random.default_rng(0)
    rows, names = [], []
    for i in range(120):
        h = float(rng.choice([7, 14, 28, 56, 112]))
        c = float(rng.choice([16, 32, 64, 128]))
        rows.append(_op("CONV_2D", h_in=h, w_in=h, h_out=h, w_out=h, c_in=c, c_out=c))
        # synthetic ground truth: the delegate picks Winograd for large maps with >= 64 channels
        names.append(f"convolution_winograd_4x4_6x6_{i}" if (h >= 28 and c >= 64) else f"convolution_2d_{i}")
    ops = _table(rows)
    g = KernelGrouper("gpu", network_col=None).fit(ops, names)
    test = _table([
        _op("CONV_2D", h_in=56.0, w_in=56.0, h_out=56.0, w_out=56.0, c_in=128.0, c_out=128.0),
        _op("CONV_2D", h_in=7.0, w_in=7.0, h_out=7.0, w_out=7.0, c_in=128.0, c_out=128.0),
        _op("CONV_2D", h_in=56.0, w_in=56.0, h_out=56.0, w_out=56.0, c_in=16.0, c_out=16.0),
        _op("CONV_2D", h_in=56.0, w_in=56.0, h_out=28.0, w_out=28.0, c_in=128.0, c_out=128.0, stride=2.0),
    ])
    assert list(g.transform(test)["kernel_type"]) == ["conv2d_winograd", "conv2d", "conv2d", "conv2d"]
    assert "winograd" in g.selectors_["winograd"].describe()
    # Without kernel names the selector answers its yaml default (false).
    g0 = KernelGrouper("gpu", network_col=None).fit(ops)
    assert set(g0.transform(test)["kernel_type"]) == {"conv2d"}


def test_bad_rules_and_unfitted_grouper():
    with pytest.raises(UsageError):
        load_rules("tpu")
    with pytest.raises(UsageError):
        validate_rules({"absorb": [{"ops": ["RELU"]}]})
    with pytest.raises(UsageError):
        validate_rules({"kernel_types": [{"name": "x", "when": {}, "selector": "nope"}]})
    with pytest.raises(PredictorError):
        KernelGrouper().transform(_table([_op("CONV_2D")]))
    with pytest.raises(UsageError):
        group_ops(pd.DataFrame({"x": [1]}), load_rules("gpu"))


def test_matches_condition_language():
    row = {"op_type": "CONV_2D", "kernel": 3.0, "h_in": 28.0}
    assert matches(row, {"op_type": ["CONV_2D"], "kernel": 3, "h_in": {"min": 14, "max": 56}})
    assert not matches(row, {"h_in": {"max": 14}})
    assert not matches(row, {"stride": 1})


def test_gpu_rules_agree_with_li2024_kernel_names():
    ops = data_li2024.load_ops_gpu(os.path.join(DATA, data_li2024.OPS_GPU_FILE))
    ops = ops.rename(columns={"model": "network"}).reset_index(drop=True)
    f = pd.concat([ops[["network", "op_index", "device", "kernel_name"]], ops_from_li2024(ops)], axis=1)
    for device, d in f.groupby("device"):
        d = d.reset_index(drop=True)
        k = KernelGrouper("gpu").fit(d, d["kernel_name"].to_numpy()).transform(d)
        names = d.loc[[r[0] for r in k["op_rows"]], "kernel_name"].astype(str).to_numpy()
        kt = k["kernel_type"].to_numpy()
        assert np.all(np.char.startswith(names[kt == "fully_connected"].astype(str), "fully_connected")), device
        assert np.all(np.char.startswith(names[kt == "mean"].astype(str), "mean")), device
        assert np.all(np.char.startswith(names[kt == "pooling"].astype(str), "pooling")), device
        is_fc_name = np.char.startswith(names.astype(str), "fully_connected")
        assert np.all(kt[is_fc_name] == "fully_connected"), device
        wino = np.char.find(names.astype(str), "winograd") >= 0
        # learnt selector (in-sample here) must track the names closely
        agree = np.mean((kt == "conv2d_winograd") == wino)
        assert agree > 0.99, (device, agree)


def test_ops_from_graph_and_swish_grouping():
    from types import SimpleNamespace as NS

    from host.modeler.features import ops_from_graph

    def op(i, t, ins, outs, in_shapes, out_shape, **kw):
        return NS(index=i, type=t, inputs=ins, outputs=outs, input_shapes=in_shapes,
                  output_shapes=(out_shape,), options=kw.pop("options", {}), **kw)

    x = (1, 16, 16, 8)
    graph = NS(ops=[
        # conv (fused RELU in options) -> t2; swish: LOGISTIC(t2) -> t3, MUL(t2, t3) -> t4
        op(0, "CONV_2D", (0, 1, 9), (2,), (x, (8, 3, 3, 8), (8,)), x, kernel_h=3, in_channels=8,
           out_channels=8, groups=1, options={"stride_h": 1, "fused_activation": "RELU"}),
        op(1, "LOGISTIC", (2,), (3,), (x,), x),
        op(2, "MUL", (2, 3), (4,), (x, x), x),
        op(3, "MEAN", (4, 5), (6,), (x, (2,)), (1, 8)),
    ])
    f = ops_from_graph(graph)
    conv = f.iloc[0]
    assert (conv["h_in"], conv["c_in"], conv["kernel"], conv["stride"], conv["fused_activation"]) == (
        16, 8, 3, 1, "RELU")
    assert conv["macs"] == 16 * 16 * 8 * 9 * 8
    assert f.iloc[3]["c_out"] == 8 and f.iloc[3]["h_out"] == 1
    k = KernelGrouper("gpu", network_col=None).fit(f).transform(f)
    # t2 has two readers, so LOGISTIC cannot link into the conv; MUL links into LOGISTIC.
    assert list(k["op_type"]) == ["CONV_2D", "LOGISTIC", "MEAN"]
    assert list(k["fused_ops"]) == ["", "MUL", ""]
    assert list(k["kernel_type"]) == ["conv2d", "elementwise", "mean"]


def test_group_ops_takes_tensor_ids_read_back_from_parquet(tmp_path):
    """A predictor file's training tables come back from Parquet with numpy arrays in
    the tensor-id columns; grouping must give the same kernels as from tuples."""
    ops = pd.DataFrame({
        "network": ["n"] * 3, "op_index": [0, 1, 2],
        "op_type": ["CONV_2D", "RELU", "ADD"],
        "inputs": [(0,), (1,), (2, 0)], "outputs": [(1,), (2,), (3,)],
        "flops": [10.0, 1.0, 1.0],
    })
    path = tmp_path / "ops.parquet"
    ops.to_parquet(path)
    back = pd.read_parquet(path)
    assert isinstance(back["inputs"].iloc[0], np.ndarray)
    rules = load_rules("xnnpack")
    a = group_ops(ops, rules, network_col="network")
    b = group_ops(back, rules, network_col="network")
    assert list(a["n_ops"]) == list(b["n_ops"]) == [2, 1]
    assert list(a["fused_ops"]) == list(b["fused_ops"]) == ["RELU", ""]
