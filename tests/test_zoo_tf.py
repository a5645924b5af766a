"""models_zoo generation with TensorFlow: every generated network converts, contains the
ops it should and runs in the ai_edge_litert Interpreter. Small models only."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from models_zoo import convert, micro, nas, nb201, reference  # noqa: E402
from opcost.records import sha256_file  # noqa: E402

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo_cache")


def run_tflite(path):
    """Run once on random inputs; return the outputs."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        assert d["shape"][0] == 1 and d["dtype"] == np.float32
        assert -1 not in list(d["shape_signature"]), "batch must be static 1"
        it.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(np.float32))
    it.invoke()
    outs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    for o in outs:
        assert np.all(np.isfinite(o))
    return outs


@pytest.mark.slow
def test_reference_mobilenet_v3_small_96_and_cache_hit(cache):
    p = reference.build_reference("mobilenet_v3_small", cache_dir=str(cache), input_size=96)
    side = convert.read_sidecar(p)
    assert side["params"]["input_size"] == 96 and side["sha256"] == sha256_file(str(p))
    assert side["op_counts"].get("HARD_SWISH", 0) > 0 and side["op_counts"]["CONV_2D"] > 10
    (out,) = run_tflite(p)
    assert out.shape == (1, 1000)
    np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-4)  # softmax head
    mtime = p.stat().st_mtime_ns
    again = reference.build_reference("mobilenet_v3_small", cache_dir=str(cache), input_size=96)
    assert again == p and p.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_mbv2_space_samples_convert_and_run(cache, tmp_path):
    paths = nas.sample("mbv2-space", 2, seed=11, cache_dir=str(cache), out_dir=str(tmp_path),
                       width_mult=0.25, input_size=64)
    cfgs = nas.sample_configs("mbv2-space", 2, seed=11, width_mult=0.25, input_size=64)
    assert [p.name for p in paths] == [nas.config_name(c) + ".tflite" for c in cfgs]
    assert sha256_file(str(paths[0])) != sha256_file(str(paths[1]))
    for p, cfg in zip(paths, cfgs):
        (out,) = run_tflite(p)
        assert out.shape == (1, 1000)
        ops = convert.op_counts(p.read_bytes())
        blocks = 1 + sum(len(s["blocks"]) for s in cfg["stages"])
        assert ops["DEPTHWISE_CONV_2D"] == blocks


@pytest.mark.parametrize("index", [0, 15624, nb201.arch_to_index(
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")])
def test_nb201_small_skeleton_runs(cache, index):
    p = nas.build_nb201(index, cache_dir=str(cache), channels=8, cells_per_stage=1)
    (out,) = run_tflite(p)
    assert out.shape == (1, 10)


@pytest.mark.slow
def test_nb201_default_skeleton_and_reproducible_weights(cache, tmp_path):
    idx = nb201.arch_to_index("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")
    a = nas.build_nb201(idx, cache_dir=str(cache))
    small = nas.build_nb201(idx, cache_dir=str(cache), channels=8, cells_per_stage=2)
    again = nas.build_nb201(idx, cache_dir=str(tmp_path), channels=8, cells_per_stage=2)
    assert small != again and sha256_file(str(small)) == sha256_file(str(again))  # same bytes
    ops = convert.read_sidecar(a)["op_counts"]
    # 15 cells x 3 convs (+ stem 1 + 2 reductions x 3) = 52 convs
    assert ops["CONV_2D"] == 15 * 3 + 1 + 2 * 3
    assert ops["AVERAGE_POOL_2D"] == 15 + 2
    (out,) = run_tflite(a)
    assert out.shape == (1, 10)


@pytest.mark.parametrize("op", micro.OPS)
def test_micro_op_converts_to_expected_ops_and_runs(cache, op):
    (cfg,) = micro.sample_configs(op, 1, seed=2)
    p = micro.build_config(cfg, cache_dir=str(cache))
    ops = convert.op_counts(p.read_bytes())
    if op in micro.SINGLE_OPS:
        assert ops == micro.SINGLE_OPS[op]
    elif op in ("mbconv", "mbconv_se"):
        assert ops["DEPTHWISE_CONV_2D"] == 1 and ops["CONV_2D"] == (1 if cfg["expansion"] == 1 else 2) + (
            2 if op == "mbconv_se" else 0)
    elif op.startswith("resnet"):
        assert ops["ADD"] == 1 and ops["CONV_2D"] >= 2
    outs = run_tflite(p)
    assert len(outs) == 1


def test_cli_micro_writes_manifest(cache, tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["zoo", "micro", "add", "--count", "2", "--seed", "0", "--out",
                                  str(out), "--cache-dir", str(cache), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "manifest.json").read_text())
    assert len(doc["models"]) == 2
    for m in doc["models"]:
        assert m["sha256"] == sha256_file(m["path"]) and m["params"]["op"] == "add"
        assert m["op_counts"] == {"ADD": 1}


def test_cli_bad_name_is_a_clear_error(tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    r = CliRunner().invoke(main, ["zoo", "build", "mobilenet_v9", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "unknown reference network" in r.output and "mobilenet_v2" in r.output
    assert "Traceback" not in r.output
