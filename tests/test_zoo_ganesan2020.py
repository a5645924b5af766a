"""models_zoo.ganesan2020: the dataset's layer tables <-> .tflite.

Without TensorFlow: the table conventions hold on all 118 dataset rows, names, the CLI's
errors for unknown names. With TensorFlow (skipped cleanly without it): layer_table on
small .tflite files built here, the wiring rules, and the round trip table -> Keras ->
.tflite -> table on a sample of networks (all 118: tools/ganesan2020_roundtrip.py)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner

from host.cli import main
from models_zoo import ganesan2020 as G
from opcost.errors import ZooError

HAVE_TF = importlib.util.find_spec("tensorflow") is not None


# --------------------------------------------------------------------------- no TensorFlow
def test_names_and_tables():
    names = G.network_names()
    assert len(names) == 118 and names[0] == "rand000" and names[99] == "rand099" and names[-1] == "pub117"
    assert G.table("ganesan2020/rand051").shape[1] == 13
    assert np.array_equal(G.table("RAND051"), G.table("rand051"))
    with pytest.raises(ValueError):
        G.table("rand051")[0, 0] = 5  # the shared tables are read-only
    assert G.expand_names(["ganesan2020/all"]) == names


def test_every_dataset_table_follows_the_conventions():
    """FLOPs = MACs for conv/dwconv/FC, output elements for relu/add/pool; relu/add rows
    have kernel = stride = padding = 0 (what layer_table writes)."""
    for n in G.network_names():
        assert G.check_table(G.table(n)) == [], n


def test_check_table_reports_broken_rows():
    tab = G.table("rand000").copy()
    tab[2, 12] += 1  # relu FLOPs
    tab[3, :5] = [1, 1, 0, 0, 0]
    probs = G.check_table(tab)
    assert len(probs) == 2 and probs[0].startswith("row 2 (relu): FLOPs")


def test_quantize_names_and_keys():
    assert G.output_name("ganesan2020/rand051") == "rand051"  # the ganesan regime: matched by name
    assert G.output_name("rand051", "none") == "rand051_float32"
    k_dyn, k_f32 = G.network_key("rand051"), G.network_key("rand051", "none")
    assert k_dyn["params"]["quantize"] == "dynamic" and k_f32["params"]["quantize"] == "none"
    from models_zoo.convert import cache_hash

    assert cache_hash(k_dyn) != cache_hash(k_f32) != cache_hash(G.network_key("rand052", "none"))
    with pytest.raises(ZooError, match="unknown quantization"):
        G.network_key("rand051", "int4")


@pytest.mark.parametrize("args, expect", [
    (["ganesan2020/rand200"], ["unknown ganesan2020 network 'ganesan2020/rand200'", "ganesan2020/pub117"]),
    (["ganesan2020/rand000", "rand051"], ["write ganesan2020/rand051", "ganesan2020/rand099"]),
    (["no_such_net"], ["unknown reference network 'no_such_net'", "mobilenet_v2", "ganesan2020/rand000"]),
    (["ganesan2020/rand000", "--input-size", "160"], ["--input-size does not apply to ganesan2020"]),
    (["ganesan2020/rand000", "mobilenet_v2", "--quantize", "dynamic"], ["applies to ganesan2020/ networks only"]),
])
def test_cli_zoo_build_bad_names_fail_before_any_work(tmp_path, args, expect):
    out = tmp_path / "zoo"
    r = CliRunner().invoke(main, ["zoo", "build", *args, "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2, r.output
    for text in expect:
        assert text in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()


def test_cli_zoo_list_has_the_group(tmp_path):
    r = CliRunner().invoke(main, ["zoo", "list", "--json", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["ganesan2020"]
    assert len(rows) == 118 and rows[51]["build_name"] == "ganesan2020/rand051"
    assert rows[113]["layer_counts"] == {"conv": 26, "dwconv": 0, "add": 0, "relu": 26, "pool": 4}
    assert all(r["num_ops"] is None for r in rows)  # nothing built in this cache
    r = CliRunner().invoke(main, ["zoo", "list", "--cache-dir", str(tmp_path)])
    assert "ganesan2020: 118 networks" in r.output


def test_cli_zoo_build_without_tensorflow_says_so_once(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "zoo"
    code = f"""
import sys
sys.modules["tensorflow"] = None   # simulate an install without TensorFlow
sys.modules["keras"] = None
from host.cli import main
main({["zoo", "build", "ganesan2020/rand000", "ganesan2020/pub113", "--out", str(out),
       "--cache-dir", str(tmp_path / "c")]!r})
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("TensorFlow is needed") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (out / "manifest.json").exists()


# --------------------------------------------------------------------------- TensorFlow
def _tflite(tmp_path, build, name):
    from models_zoo.convert import convert_keras
    from models_zoo.graph import read_graph

    path = convert_keras(build, key={"generator": "test.ganesan2020", "version": 1, "params": {"n": name}},
                         cache_dir=str(tmp_path))
    return read_graph(str(path))


def _small_net():
    import keras
    from keras import layers as L

    inp = keras.Input((32, 32, 3), batch_size=1)
    x = L.ReLU(6.0)(L.Conv2D(8, 3, strides=2, padding="same")(inp))       # conv + fused relu6
    y = L.ReLU()(L.DepthwiseConv2D(3, padding="same")(x))
    y = L.Conv2D(8, 1)(y)                                                  # linear bottleneck
    x = L.Add()([x, y])
    x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)                               # Keras MobileNetV2 style
    x = L.DepthwiseConv2D(3, strides=2, padding="valid")(x)                # PAD folded: padding 1
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)                    # 8 -> 4, ceil mode: padding 0
    x = L.GlobalAveragePooling2D()(x)                                      # MEAN -> pool 4 -> 1
    x = L.Dense(10)(x)                                                     # FC -> conv at 1x1
    return keras.Model(inp, L.Softmax()(x))


@pytest.mark.tf
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow")
def test_layer_table_of_a_small_tflite(tmp_path):
    lt = G.layer_table(_tflite(tmp_path, _small_net, "small"))
    want = np.array([
        [1, 0, 0, 0, 0, 32, 16, 3, 8, 3, 2, 1, 16 * 16 * 8 * 9 * 3],
        [0, 0, 0, 1, 0, 16, 16, 8, 8, 0, 0, 0, 16 * 16 * 8],
        [0, 1, 0, 0, 0, 16, 16, 8, 8, 3, 1, 1, 16 * 16 * 8 * 9],
        [0, 0, 0, 1, 0, 16, 16, 8, 8, 0, 0, 0, 16 * 16 * 8],
        [1, 0, 0, 0, 0, 16, 16, 8, 8, 1, 1, 0, 16 * 16 * 8 * 8],
        [0, 0, 1, 0, 0, 16, 16, 8, 8, 0, 0, 0, 16 * 16 * 8],
        [0, 1, 0, 0, 0, 16, 8, 8, 8, 3, 2, 1, 8 * 8 * 8 * 9],
        [0, 0, 0, 0, 1, 8, 4, 8, 8, 3, 2, 0, 4 * 4 * 8],
        [0, 0, 0, 0, 1, 4, 1, 8, 8, 4, 4, 0, 8],
        [1, 0, 0, 0, 0, 1, 1, 8, 10, 1, 1, 0, 80],
    ], dtype=float)
    np.testing.assert_array_equal(lt.rows, want)
    assert lt.unsupported == []
    assert "SOFTMAX" in [sk["type"] for sk in lt.skipped]  # left out as the ganesan tables do
    assert G.check_table(lt.rows) == []


def _se_hswish_net():
    import keras
    from keras import layers as L

    inp = keras.Input((16, 16, 3), batch_size=1)
    x = L.Conv2D(16, 3, padding="same")(inp)
    x = L.Activation("hard_swish")(x)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)                         # SE block
    s = L.Conv2D(4, 1, activation="relu")(s)
    s = L.Conv2D(16, 1, activation="sigmoid")(s)
    x = L.Multiply()([x, s])
    x = L.Conv2D(8, 1, activation="tanh")(x)                               # fused TANH
    return keras.Model(inp, x)


@pytest.mark.tf
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow")
def test_layer_table_returns_unsupported_ops(tmp_path):
    g = _tflite(tmp_path, _se_hswish_net, "se")
    lt = G.layer_table(g)
    types = sorted(u["type"] for u in lt.unsupported)
    assert "HARD_SWISH" in types and "LOGISTIC" in types and "MUL" in types, lt.unsupported
    assert any(u["type"] == "TANH" or "TANH" in u["reason"] for u in lt.unsupported)  # own op or fused
    ops = [G.OP_TYPES[int(np.argmax(r[:5]))] for r in lt.rows]
    assert ops == ["conv", "pool", "conv", "relu", "conv", "conv"], ops  # the rows it can write


@pytest.mark.tf
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow")
def test_wiring_rules():
    """Residual adds start at the block input; SqueezeNet fire modules branch and concat."""
    rep = G.WiringReport()
    G.build_keras(G.table("pub104"), report=rep)  # MobileNetV2: 10 residual blocks
    assert len(rep.adds) == 10 and rep.adds_from_boundary == 10
    tab = G.table("pub104")
    for add_row, src in rep.adds.items():  # the skip comes from the row before the block's expand conv
        assert tab[src + 1, 0] == 1 and tab[src + 1, 9] == 1, (add_row, src)
    rep = G.WiringReport()
    G.build_keras(G.table("pub117"), report=rep)
    assert rep.adds[5] == 1  # first block right after the conv+relu stem reaches back to the stem
    rep = G.WiringReport()
    model = G.build_keras(G.table("pub113"), report=rep)  # SqueezeNet: 8 fire modules
    assert len(rep.branches) == 8 and len(rep.concats) == 8
    assert model.output.shape[-1] == 1000


@pytest.mark.tf
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow")
@pytest.mark.parametrize("name", ["rand051", "pub113", "pub117",
                                  pytest.param("pub100", marks=pytest.mark.slow),
                                  pytest.param("pub104", marks=pytest.mark.slow)])
def test_round_trip_table_tflite_table(tmp_path_factory, name):
    cache = tmp_path_factory.getbasetemp() / "ganesan_cache"
    r = G.round_trip(name, cache_dir=str(cache))
    assert r["match"], r["difference"]
    assert r["unsupported"] == []


@pytest.mark.tf
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow")
def test_dynamic_range_and_float32_files(tmp_path):
    from models_zoo.convert import read_sidecar
    from models_zoo.graph import read_graph

    dyn = G.build_network("pub117", cache_dir=str(tmp_path))
    f32 = G.build_network("pub117", quantize="none", cache_dir=str(tmp_path))
    assert dyn != f32 and read_sidecar(dyn)["quantize"] == "dynamic"
    wdt = {op.input_dtypes[1] for op in read_graph(str(dyn)).ops if op.type == "CONV_2D"}
    assert "int8" in wdt  # int8 weights (small ones stay float32, as in TFLite's dynamic range mode)
    g32 = read_graph(str(f32))
    assert {op.input_dtypes[1] for op in g32.ops if op.type in ("CONV_2D", "FULLY_CONNECTED")} == {"float32"}
    assert G.compare_tables(G.layer_table(g32).rows, G.table("pub117")) is None
    (inp,) = g32.inputs
    assert g32.tensors[inp].shape == (1, 224, 224, 3)


@pytest.mark.tf
@pytest.mark.skipif(not HAVE_TF, reason="needs TensorFlow")
def test_cli_zoo_build_ganesan_writes_manifest(tmp_path):
    out, cache = tmp_path / "zoo", tmp_path / "cache"
    r = CliRunner().invoke(main, ["zoo", "build", "ganesan2020/pub117", "--out", str(out), "--cache-dir",
                                  str(cache), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "manifest.json").read_text())
    (m,) = doc["models"]
    assert m["name"] == "pub117" and m["source"] == "zoo:ganesan2020" and m["params"]["quantize"] == "dynamic"
    assert (out / "pub117.tflite").is_file()


def test_signature_file_names_its_networks_for_zoo_build(tmp_path):
    sig = tmp_path / "sig.json"
    sig.write_text(json.dumps({"networks": ["rand051", "pub104"], "method": "pqr"}))
    assert G.signature_names(str(sig)) == ["ganesan2020/rand051", "ganesan2020/pub104"]
    sig.write_text(json.dumps({"networks": ["rand051", "my_own_net"]}))
    with pytest.raises(ZooError, match="my_own_net"):
        G.signature_names(str(sig))
    sig.write_bytes(b"\xff\x00garbage")
    with pytest.raises(ZooError, match="cannot read the signature networks"):
        G.signature_names(str(sig))


def test_zoo_build_needs_something_to_build(tmp_path):
    r = CliRunner().invoke(main, ["zoo", "build", "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and "nothing to build" in r.output and "--signature" in r.output
    sig = tmp_path / "sig.json"
    sig.write_text(json.dumps({"networks": ["my_own_net"]}))
    r = CliRunner().invoke(main, ["zoo", "build", "--signature", str(sig), "--out", str(tmp_path / "z")])
    assert r.exit_code == 2 and "my_own_net" in r.output and "Traceback" not in r.output
