"""models_zoo.graph: the .tflite reader, FLOPs and blocks, checked against the TFLite
interpreter on small Keras models built and converted here (no stored fixtures)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from models_zoo.graph import options_spec, read_graph
from opcost.errors import ModelFileError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# ---------------------------------------------------------------------------------------
# Models (built once per module)
# ---------------------------------------------------------------------------------------
def _convert(model, path, fp16=False):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if fp16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    with open(path, "wb") as f:
        f.write(conv.convert())
    return str(path)


def _residual(x, L, name):
    y = L.Conv2D(8, 3, padding="same", activation="relu", name=f"{name}_c1")(x)
    y = L.Conv2D(8, 3, padding="same", dilation_rate=2, name=f"{name}_c2")(y)
    return L.Add(name=f"{name}_add")([x, y])


def _inverted(x, L, name):
    y = L.Conv2D(32, 1, activation="relu6", name=f"{name}_expand")(x)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu6", name=f"{name}_dw")(y)
    y = L.Conv2D(8, 1, name=f"{name}_project")(y)
    return L.Add(name=f"{name}_add")([x, y])


def build_net_a():
    """Stem (strided conv) -> residual -> inverted residual -> grouped conv -> pools ->
    concat -> pad -> dense -> reshape -> softmax -> mean."""
    from tensorflow import keras

    L = keras.layers
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    x = _residual(x, L, "res")
    x = _inverted(x, L, "inv")
    x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)
    a = L.MaxPooling2D(2)(x)
    b = L.AveragePooling2D(2)(x)
    x = L.Concatenate()([a, b])
    x = L.ZeroPadding2D(1)(x)
    x = L.Dense(10)(x)
    x = L.Reshape((-1, 10))(x)
    x = L.Softmax()(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, x)


def build_net_b():
    """A different network that contains the same residual block as net A (same shapes)
    after a different stem, and a different head."""
    from tensorflow import keras

    L = keras.layers
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = L.Conv2D(8, 1, padding="valid", name="stem_b")(inp)
    x = _residual(x, L, "res_b")
    x = L.Conv2D(4, 3, strides=2, padding="valid")(x)
    x = L.Flatten()(x)
    x = L.Dense(3)(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("tensorflow")
    d = tmp_path_factory.mktemp("graph_models")
    a = build_net_a()
    return {
        "a": _convert(a, d / "net_a.tflite"),
        "a16": _convert(a, d / "net_a_fp16.tflite", fp16=True),
        "b": _convert(build_net_b(), d / "net_b.tflite"),
    }


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=path,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


# ---------------------------------------------------------------------------------------
# Against the interpreter
# ---------------------------------------------------------------------------------------
@pytest.mark.tf
@pytest.mark.parametrize("which", ["a", "a16", "b"])
def test_ops_match_interpreter(models, which):
    g = read_graph(models[which])
    details = _interpreter(models[which])._get_ops_details()
    assert len(g.main_ops) == len(details)
    for op, d in zip(g.main_ops, details):
        assert op.index == d["index"]
        assert op.type == d["op_name"]
        assert list(op.inputs) == [int(t) for t in d["inputs"]]
        assert list(op.outputs) == [int(t) for t in d["outputs"]]


@pytest.mark.tf
@pytest.mark.parametrize("which", ["a", "a16", "b"])
def test_tensors_match_interpreter(models, which):
    g = read_graph(models[which])
    details = sorted(_interpreter(models[which]).get_tensor_details(), key=lambda d: d["index"])
    # The interpreter appends its own scratch tensors (e.g. im2col) after the model's.
    assert len(details) >= len(g.tensors)
    for t, d in zip(g.tensors, details):
        assert t.index == d["index"]
        assert t.name == d["name"]
        assert list(t.shape) == [int(x) for x in d["shape"]]
        assert t.dtype == np.dtype(d["dtype"]).name
    # Input/output tensors too.
    it = _interpreter(models[which])
    assert list(g.inputs) == [d["index"] for d in it.get_input_details()]
    assert list(g.outputs) == [d["index"] for d in it.get_output_details()]


@pytest.mark.tf
def test_op_types_present(models):
    types = {op.type for op in read_graph(models["a"]).ops}
    for t in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "MAX_POOL_2D",
              "AVERAGE_POOL_2D", "PAD", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX", "MEAN"):
        assert t in types, t


@pytest.mark.tf
def test_conv_flops_textbook_formula(models):
    """MACs from the interpreter's own tensor shapes, with the textbook formulas."""
    path = models["a"]
    g = read_graph(path)
    it = _interpreter(path)
    shapes = {d["index"]: [int(x) for x in d["shape"]] for d in it.get_tensor_details()}
    seen = set()
    for d in it._get_ops_details():
        op = g.ops[d["index"]]
        x, w = shapes[int(d["inputs"][0])], shapes[int(d["inputs"][1])] if len(d["inputs"]) > 1 else None
        y = shapes[int(d["outputs"][0])]
        if d["op_name"] == "CONV_2D":
            n, h_out, w_out, c_out = y
            k_h, k_w, c_in = w[1], w[2], x[3]
            groups = c_in // w[3]
            expected = n * h_out * w_out * c_out * k_h * k_w * c_in // groups
            assert (op.kernel_h, op.kernel_w, op.in_channels, op.out_channels, op.groups) == \
                (k_h, k_w, c_in, c_out, groups)
        elif d["op_name"] == "DEPTHWISE_CONV_2D":
            n, h_out, w_out, c_out = y
            expected = n * h_out * w_out * c_out * w[1] * w[2]
            assert op.groups == x[3]
        elif d["op_name"] == "FULLY_CONNECTED":
            units, in_features = w
            expected = int(np.prod(x)) // in_features * units * in_features
        else:
            continue
        assert op.macs == expected, (d["op_name"], op.index)
        assert op.flops == 2 * expected
        seen.add(d["op_name"])
    assert seen == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    # The grouped conv (groups=2, 8 -> 8 channels) was recognised as grouped.
    assert any(op.type == "CONV_2D" and op.groups == 2 for op in g.ops)


@pytest.mark.tf
def test_options_follow_keras_layers(models):
    g = read_graph(models["a"])
    convs = [op for op in g.ops if op.type == "CONV_2D"]
    stem = convs[0]
    assert (stem.options["stride_h"], stem.options["stride_w"]) == (2, 2)
    assert stem.options["padding"] == "SAME" and stem.options["fused_activation"] == "RELU"
    dilated = [op for op in convs if op.options["dilation_h"] == 2]
    assert len(dilated) == 1 and dilated[0].options["dilation_w"] == 2
    dw = next(op for op in g.ops if op.type == "DEPTHWISE_CONV_2D")
    assert dw.options["depth_multiplier"] == 1 and dw.options["fused_activation"] == "RELU6"
    pool = next(op for op in g.ops if op.type == "MAX_POOL_2D")
    assert (pool.options["filter_height"], pool.options["filter_width"], pool.options["stride_h"]) == (2, 2, 2)
    assert pool.flops == int(np.prod(pool.output_shapes[0])) * 4
    concat = next(op for op in g.ops if op.type == "CONCATENATION")
    assert concat.options["axis"] in (-1, 3)
    mean = next(op for op in g.ops if op.type == "MEAN")
    assert "keep_dims" in mean.options
    assert mean.flops == int(np.prod(mean.input_shapes[0]))


@pytest.mark.tf
def test_bytes_and_weights(models):
    g = read_graph(models["a"])
    for op in g.ops:
        consts = [t for t in op.inputs if t >= 0 and g.tensors[t].is_constant]
        assert op.weights_bytes == sum(g.tensors[t].buffer_bytes for t in consts)
        assert op.bytes_out == sum(int(np.prod(g.tensors[t].shape)) * 4 for t in op.outputs)
    conv = g.ops[0]
    # float32 weights: 8*3*3*3 + bias 8
    assert conv.params == 8 * 3 * 3 * 3 + 8 and conv.weights_bytes == 4 * conv.params
    assert conv.bytes_in == 16 * 16 * 3 * 4


@pytest.mark.tf
def test_summary_and_dataframe(models):
    g = read_graph(models["a"])
    s = g.summary()
    assert s["n_ops"] == len(g.ops) and sum(s["op_counts"].values()) == len(g.ops)
    assert s["flops"] == sum(op.flops for op in g.ops) > 0
    assert s["op_counts"]["CONV_2D"] == 6  # stem, 2 residual, expand, project, grouped
    assert s["inputs"][0]["shape"] == [1, 16, 16, 3]
    json.dumps(s)
    df = g.to_dataframe()
    assert len(df) == len(g.ops)
    assert list(df["type"]) == [op.type for op in g.ops]
    assert df["flops"].sum() == s["flops"]
    assert "opt_stride_h" in df.columns


@pytest.mark.tf
def test_bytes_input_equals_path(models):
    with open(models["b"], "rb") as f:
        data = f.read()
    g1, g2 = read_graph(models["b"]), read_graph(data)
    assert [op.to_dict() for op in g1.ops] == [op.to_dict() for op in g2.ops]
    assert [b.key for b in g1.blocks()] == [b.key for b in g2.blocks()]


# ---------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------
@pytest.mark.tf
def test_blocks_of_residual_net(models):
    g = read_graph(models["a"])
    blocks = g.blocks()
    types = [b.op_types for b in blocks]
    assert types[0] == ("CONV_2D",)
    assert types[1] == ("CONV_2D", "CONV_2D", "ADD")                      # residual block
    assert types[2] == ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD")  # inverted residual
    assert types[3] == ("CONV_2D",)                                      # grouped conv
    assert sorted(types[4]) == ["AVERAGE_POOL_2D", "CONCATENATION", "MAX_POOL_2D"]
    # Every op is in exactly one block, in order, and consecutive blocks are chained.
    assert [i for b in blocks for i in b.ops] == list(range(len(g.ops)))
    for prev, nxt in zip(blocks, blocks[1:]):
        assert prev.output_tensor is not None and prev.output_tensor == nxt.input_tensor
    assert blocks[0].input_tensor == g.inputs[0]
    assert blocks[-1].output_tensor == g.outputs[0]
    assert sum(b.flops for b in blocks) == g.summary()["flops"]


@pytest.mark.tf
def test_same_block_same_key_across_networks(models):
    ga, gb = read_graph(models["a"]), read_graph(models["b"])
    res_a = ga.blocks()[1]
    res_b = next(b for b in gb.blocks() if b.op_types == ("CONV_2D", "CONV_2D", "ADD"))
    assert res_a.key == res_b.key
    # Different structures get different keys.
    keys_a = [b.key for b in ga.blocks()]
    assert len(set(keys_a)) == len(keys_a)
    stem_a, stem_b = ga.blocks()[0], gb.blocks()[0]
    assert stem_a.key != stem_b.key


@pytest.mark.tf
def test_fp16_weights_do_not_break_blocks(models):
    """fp16 models dequantize weights at the start of the graph; those constant-only ops
    must not hide the cut points."""
    g32, g16 = read_graph(models["a"]), read_graph(models["a16"])
    assert any(op.type == "DEQUANTIZE" for op in g16.ops)
    b32, b16 = g32.blocks(), g16.blocks()
    assert len(b16) == len(b32)
    for x, y in zip(b32, b16):
        assert tuple(t for t in y.op_types if t != "DEQUANTIZE") == x.op_types
        assert len(y.inputs) == 1 and len(y.outputs) == 1
        assert y.macs == x.macs


# ---------------------------------------------------------------------------------------
# Errors and CLI
# ---------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file") as e:
        read_graph(tmp_path / "nope.tflite")
    assert e.value.hint


def test_not_tflite(tmp_path):
    p = tmp_path / "x.tflite"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="TFL3"):
        read_graph(p)
    with pytest.raises(ModelFileError, match="too small"):
        (tmp_path / "empty.tflite").write_bytes(b"")
        read_graph(tmp_path / "empty.tflite")
    with pytest.raises(ModelFileError, match="directory"):
        read_graph(tmp_path)
    with pytest.raises(ModelFileError):
        read_graph(12345)


@pytest.mark.tf
def test_truncated_file(models, tmp_path):
    data = open(models["a"], "rb").read()
    p = tmp_path / "cut.tflite"
    p.write_bytes(data[:200])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        read_graph(p)


def test_options_spec_learned_from_schema():
    conv = {f.name: f for f in options_spec("Conv2DOptions")}
    assert conv["stride_w"].kind == "scalar" and conv["dilation_h_factor"].default == 1
    assert {f.name: f.kind for f in options_spec("ReshapeOptions")} == {"new_shape": "vector"}
    assert options_spec("PadOptions") == ()
    assert options_spec("NoSuchOptions") is None


@pytest.mark.tf
def test_cli_graph(models):
    from host.cli import main

    r = CliRunner().invoke(main, ["graph", models["a"], "--blocks"])
    assert r.exit_code == 0, r.output
    assert "DEPTHWISE_CONV_2D" in r.output and "blocks:" in r.output
    r = CliRunner().invoke(main, ["graph", models["a"], "--json", "--blocks"])
    doc = json.loads(r.output)
    assert len(doc["ops"]) == doc["summary"]["n_ops"] and len(doc["blocks"]) >= 5


def test_cli_graph_error(tmp_path):
    from host.cli import main

    p = tmp_path / "bad.tflite"
    p.write_bytes(b"not a model at all")
    r = CliRunner().invoke(main, ["graph", str(p)])
    assert r.exit_code == 2
    assert "not a TFLite model" in r.output and "Traceback" not in r.output


def test_reader_and_slicer_do_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, models_zoo.graph, models_zoo.slicing, host.cli.graph_cmds; "
            "sys.exit(1 if any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_op_cost_formulas_on_hand_shapes():
    from models_zoo.flops import op_cost

    # Grouped conv: 8x8 output, 8 out channels, 3x3 kernel, 4 in channels in 2 groups.
    c = op_cost("CONV_2D", {}, [(1, 8, 8, 4), (8, 3, 3, 2), (8,)], [(1, 8, 8, 8)])
    assert c["macs"] == 8 * 8 * 8 * 3 * 3 * 4 // 2 and c["flops"] == 2 * c["macs"] and c["groups"] == 2
    d = op_cost("DEPTHWISE_CONV_2D", {}, [(1, 8, 8, 16), (1, 5, 5, 16), (16,)], [(1, 4, 4, 16)])
    assert d["macs"] == 4 * 4 * 16 * 5 * 5 and d["groups"] == 16
    fc = op_cost("FULLY_CONNECTED", {}, [(2, 64), (10, 64), (10,)], [(2, 10)])
    assert fc["macs"] == 2 * 10 * 64
    tc = op_cost("TRANSPOSE_CONV", {}, [(4,), (8, 3, 3, 4), (1, 5, 5, 4)], [(1, 10, 10, 8)])
    assert tc["macs"] == 5 * 5 * 4 * 3 * 3 * 8
    assert op_cost("AVERAGE_POOL_2D", {"filter_height": 3, "filter_width": 3},
                   [(1, 9, 9, 2)], [(1, 3, 3, 2)])["flops"] == 3 * 3 * 2 * 9
    assert op_cost("MEAN", {}, [(1, 7, 7, 32), (2,)], [(1, 32)])["flops"] == 7 * 7 * 32
    assert op_cost("ADD", {}, [(1, 4, 4, 8), (1, 4, 4, 8)], [(1, 4, 4, 8)])["flops"] == 128
    assert op_cost("RESHAPE", {}, [(1, 4, 4, 8), (2,)], [(1, 128)])["flops"] == 0
    # Rank-unexpected shapes give no cost instead of an exception.
    assert op_cost("CONV_2D", {}, [(1, 8), (8, 3)], [(1, 8)])["macs"] == 0
