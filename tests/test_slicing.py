"""models_zoo.slicing: ops and blocks written as standalone .tflite models compute the
same values as inside the full network (small Keras models built and converted here)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from models_zoo.graph import read_graph
from models_zoo.slicing import slice_all, slice_block, slice_op, slice_ops
from opcost.errors import UsageError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_net():
    """Residual + inverted-residual blocks, grouped/strided/dilated conv, pools, concat,
    pad, dense, reshape, softmax, mean."""
    from tensorflow import keras

    L = keras.layers
    inp = keras.Input((12, 12, 3), batch_size=1)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    y = L.Conv2D(8, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(8, 3, padding="same", dilation_rate=2)(y)
    x = L.Add()([x, y])
    y = L.Conv2D(24, 1, activation="relu6")(x)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6")(y)
    y = L.Conv2D(8, 1)(y)
    x = L.Add()([x, y])
    x = L.Conv2D(8, 3, padding="same", groups=2)(x)
    x = L.Concatenate()([L.MaxPooling2D(2)(x), L.AveragePooling2D(2)(x)])
    x = L.ZeroPadding2D(1)(x)
    x = L.Reshape((-1, 16))(x)
    x = L.Dense(6)(x)
    x = L.Softmax()(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    d = tmp_path_factory.mktemp("slice_models")
    net = build_net()
    out = {}
    conv = tf.lite.TFLiteConverter.from_keras_model(net)
    out["f32"] = str(d / "net_f32.tflite")
    open(out["f32"], "wb").write(conv.convert())

    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield [rng.standard_normal((1, 12, 12, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(net)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    out["int8"] = str(d / "net_int8.tflite")
    open(out["int8"], "wb").write(conv.convert())

    conv = tf.lite.TFLiteConverter.from_keras_model(net)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    out["f16"] = str(d / "net_f16.tflite")
    open(out["f16"], "wb").write(conv.convert())

    from tensorflow import keras

    # Unknown batch size: Keras' Reshape then computes its target shape at run time
    # (SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE).
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    dyn = keras.Model(inp, keras.layers.Reshape((-1, 8))(x))
    out["dyn"] = str(d / "dyn.tflite")
    open(out["dyn"], "wb").write(tf.lite.TFLiteConverter.from_keras_model(dyn).convert())

    class Loop(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def f(self, x):
            _, y = tf.while_loop(lambda i, x: i < 3, lambda i, x: (i + 1, x * 2.0 + 1.0),
                                 [tf.constant(0), x])
            return tf.nn.relu(y)

    m = Loop()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.f.get_concrete_function()], m)
    out["while"] = str(d / "while.tflite")
    open(out["while"], "wb").write(conv.convert())
    return out


def _interp(path, preserve=False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=path, experimental_preserve_all_tensors=preserve,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _run_full(path):
    it = _interp(path, preserve=True)
    d = it.get_input_details()[0]
    x = np.random.default_rng(1).standard_normal(d["shape"]) * 2
    if d["dtype"] == np.int8:
        x = np.clip(np.round(x * 20), -128, 127)
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    it.invoke()
    return it


def _check_slice(g, full, sliced_path, op_indices):
    """Feed the slice the full network's values of its inputs; compare its outputs."""
    ins, outs = g.io_of(g.op_closure(op_indices))
    it = _interp(sliced_path)
    in_d, out_d = it.get_input_details(), it.get_output_details()
    assert len(in_d) == len(ins) and len(out_d) == len(outs)
    for d, t in zip(in_d, ins):
        assert list(d["shape"]) == list(g.tensors[t].shape)
        it.set_tensor(d["index"], full.get_tensor(t))
    it.invoke()
    for d, t in zip(out_d, outs):
        got, want = it.get_tensor(d["index"]), full.get_tensor(t)
        assert got.shape == want.shape and got.dtype == want.dtype
        if got.dtype == np.int8:
            assert np.array_equal(got, want), (op_indices, sliced_path)
        else:
            assert np.allclose(got, want, rtol=1e-5, atol=1e-5), (op_indices, sliced_path)


@pytest.mark.tf
@pytest.mark.parametrize("which", ["f32", "int8", "f16"])
def test_block_slices_round_trip(models, which, tmp_path):
    g = read_graph(models[which])
    full = _run_full(models[which])
    blocks = g.blocks()
    assert len(blocks) >= 8
    for b in blocks:
        p = slice_block(g, b.index, tmp_path / f"block{b.index}.tflite")
        _check_slice(g, full, p, b.ops)
        # The slice is itself one block with the same structure key.
        sg = read_graph(p)
        assert [op.type for op in sg.ops] == list(b.op_types)
        assert [blk.key for blk in sg.blocks()] == [b.key]


@pytest.mark.tf
@pytest.mark.parametrize("which", ["f32", "int8"])
def test_op_slices_round_trip(models, which, tmp_path):
    g = read_graph(models[which])
    full = _run_full(models[which])
    wanted = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "PAD", "FULLY_CONNECTED",
              "RESHAPE", "SOFTMAX", "MEAN", "MAX_POOL_2D", "AVERAGE_POOL_2D"}
    done = set()
    for op in g.ops:
        if op.type in wanted:
            p = slice_op(g, op.index, tmp_path / f"op{op.index}.tflite")
            _check_slice(g, full, p, [op.index])
            sop = read_graph(p).ops[0]
            assert (sop.type, sop.options, sop.input_shapes, sop.output_shapes, sop.weights_bytes) == \
                (op.type, op.options, op.input_shapes, op.output_shapes, op.weights_bytes)
            done.add(op.type)
    assert done == wanted - ({"FULLY_CONNECTED"} - {op.type for op in g.ops})


@pytest.mark.tf
def test_fp16_op_slice_keeps_weight_dequantize(models, tmp_path):
    g = read_graph(models["f16"])
    conv = next(op for op in g.ops if op.type == "CONV_2D")
    p = slice_op(g, conv.index, tmp_path / "conv.tflite")
    sg = read_graph(p)
    assert sorted(op.type for op in sg.ops).count("DEQUANTIZE") >= 1
    assert len(sg.inputs) == 1  # weights stay constants, not inputs


@pytest.mark.tf
def test_reshape_with_computed_shape(models, tmp_path):
    """The ops computing a reshape's target from static shapes go into its slice."""
    g = read_graph(models["dyn"])
    full = _run_full(models["dyn"])
    reshape = next(op for op in g.ops if op.type == "RESHAPE")
    assert any(op.type == "SHAPE" for op in g.ops)
    p = slice_op(g, reshape.index, tmp_path / "reshape.tflite")
    assert {"SHAPE", "RESHAPE"} <= {op.type for op in read_graph(p).ops}
    _check_slice(g, full, p, [reshape.index])


@pytest.mark.tf
def test_multi_op_slice_and_path_input(models, tmp_path):
    g = read_graph(models["f32"])
    full = _run_full(models["f32"])
    p = slice_ops(models["f32"], [1, 2], tmp_path / "two.tflite")
    _check_slice(g, full, p, [1, 2])


@pytest.mark.tf
def test_slice_all_and_unique(models, tmp_path):
    g = read_graph(models["f32"])
    res = slice_all(models["f32"], tmp_path / "all")
    kinds = [r.kind for r in res]
    assert kinds.count("op") == len(g.ops) and kinds.count("block") == len(g.blocks())
    for kind, idx, path, key in res:
        assert os.path.getsize(path) > 0
        assert key == (g.op_key(idx) if kind == "op" else g.blocks()[idx].key)
    only_blocks = slice_all(models["f32"], tmp_path / "b", ops=False, unique=True)
    assert {r.kind for r in only_blocks} == {"block"}
    assert len({r.key for r in only_blocks}) == len(only_blocks)


@pytest.mark.tf
def test_control_flow_refused(models, tmp_path):
    g = read_graph(models["while"])
    assert len(g.subgraphs) == 3
    w = next(op for op in g.main_ops if op.type == "WHILE")
    with pytest.raises(UsageError, match="subgraphs") as e:
        slice_op(g, w.index, tmp_path / "w.tflite")
    assert e.value.hint
    skipped = []
    res = slice_all(g, tmp_path / "all", blocks=False, skipped=skipped)
    assert [s[1] for s in skipped] == [w.index]
    assert [r.index for r in res] == [op.index for op in g.main_ops if op.type != "WHILE"]


@pytest.mark.tf
def test_bad_indices(models, tmp_path):
    g = read_graph(models["f32"])
    with pytest.raises(UsageError, match="out of range"):
        slice_op(g, len(g.ops) + 5, tmp_path / "x.tflite")
    with pytest.raises(UsageError, match="out of range"):
        slice_block(g, 999, tmp_path / "x.tflite")


@pytest.mark.tf
def test_cli_slice(models, tmp_path):
    from host.cli import main

    r = CliRunner().invoke(main, ["slice", models["f32"], "--out", str(tmp_path / "s"),
                                  "--no-ops", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert rows and all(row["kind"] == "block" and os.path.exists(row["path"]) for row in rows)
    r = CliRunner().invoke(main, ["slice", str(tmp_path / "missing.tflite"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no such file" in r.output
