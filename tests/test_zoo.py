"""models_zoo without TensorFlow: samplers, NB201 encoding, cache keys/hits, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from models_zoo import convert, micro, nas, nb201, reference
from opcost.errors import ZooError

# --------------------------------------------------------------------------- nb201


def test_nb201_index_string_round_trip_all_cells():
    seen = set()
    for i in range(nb201.NUM_ARCHS):
        arch = nb201.index_to_arch(i)
        assert nb201.arch_to_index(arch) == i
        seen.add(arch)
    assert len(seen) == 15625 == nb201.NUM_ARCHS


def test_nb201_canonical_string_format():
    ops = ["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none"]
    arch = nb201.ops_to_arch(ops)
    assert arch == "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
    assert nb201.arch_to_ops(arch) == ops
    assert nb201.index_to_arch(0) == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert nb201.index_to_arch(15624).count("avg_pool_3x3") == 6


@pytest.mark.parametrize("bad", [
    "|nor_conv_3x3~0|+|none~0|skip_connect~1|",               # 2 nodes
    "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|",    # unknown op
    "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",        # wrong source
    "|none~0|+|none~0|+|none~0|none~1|none~2|",               # wrong edge count
    "none~0+none~0|none~1+none~0|none~1|none~2",              # no bars
])
def test_nb201_bad_arch_strings(bad):
    with pytest.raises(ZooError) as ei:
        nb201.arch_to_index(bad)
    assert ei.value.hint


@pytest.mark.parametrize("bad", [-1, 15625, 3.0, "7", True])
def test_nb201_bad_index(bad):
    with pytest.raises(ZooError, match="out of range"):
        nb201.index_to_arch(bad)


# --------------------------------------------------------------------------- NAS samplers


@pytest.mark.parametrize("space", nas.SPACES)
def test_nas_sampler_deterministic_and_distinct(space):
    a = nas.sample_configs(space, 20, seed=3)
    b = nas.sample_configs(space, 20, seed=3)
    c = nas.sample_configs(space, 20, seed=4)
    assert a == b
    assert len({nas.config_id(x) for x in a}) == 20
    assert {nas.config_id(x) for x in a} != {nas.config_id(x) for x in c}
    assert len({nas.config_id(x) for x in a} & {nas.config_id(x) for x in c}) < 20


def test_mbv2_space_configs_are_in_the_space():
    for cfg in nas.sample_configs("mbv2-space", 50, seed=0):
        assert cfg["input_size"] == 224 and cfg["width_mult"] in nas.MBV2_WIDTHS
        assert [(s["out_channels"], s["stride"]) for s in cfg["stages"]] == list(nas.MBV2_STAGES)
        for i, st in enumerate(cfg["stages"]):
            assert len(st["blocks"]) in ((1,) if i == len(cfg["stages"]) - 1 else nas.MBV2_DEPTHS)
            for blk in st["blocks"]:
                assert blk["kernel"] in nas.MBV2_KERNELS and blk["expansion"] in nas.MBV2_EXPANSIONS


def test_nb201_configs_carry_arch_and_skeleton():
    for cfg in nas.sample_configs("nb201", 10, seed=1):
        assert nb201.arch_to_index(cfg["arch"]) == cfg["index"]
        assert (cfg["channels"], cfg["cells_per_stage"], cfg["input_size"]) == (16, 5, 32)


def test_make_divisible():
    assert nas.make_divisible(32 * 0.75) == 24
    assert nas.make_divisible(16 * 1.25) == 24  # 20 -> 24 (never < 90%)
    assert all(nas.make_divisible(c * w) % 8 == 0 for c in (16, 24, 40, 80, 96, 192, 320)
               for w in nas.MBV2_WIDTHS)


@pytest.mark.parametrize("args,match", [
    (("resnet-space", 3, 0), "unknown NAS space"),
    (("nb201", 0, 0), "positive integer"),
    (("nb201", 15626, 0), "only 15625"),
    (("mbv2-space", 2, "x"), "seed must be an integer"),
])
def test_nas_bad_args(args, match):
    with pytest.raises(ZooError, match=match) as ei:
        nas.sample_configs(*args)
    assert ei.value.hint


def test_nas_unknown_space_lists_valid():
    with pytest.raises(ZooError) as ei:
        nas.sample("resnet-space", 1, 0)
    assert "mbv2-space" in ei.value.hint and "nb201" in ei.value.hint


# --------------------------------------------------------------------------- micro samplers


def test_layer_distribution_file_says_how_it_was_derived():
    d = micro.load_distribution()
    assert "derive" in d["derived_by"] and d["how"] and len(d["models"]) >= 25
    for kind in ("conv2d", "depthwise_conv2d", "dense", "pool", "feature_map", "add", "concat",
                 "expansion", "se"):
        assert d["records"][kind], kind


@pytest.mark.parametrize("op", micro.OPS)
def test_micro_sampler_deterministic_distinct_valid(op):
    a = micro.sample_configs(op, 12, seed=5)
    assert a == micro.sample_configs(op, 12, seed=5)
    assert len({micro.config_id(c) for c in a}) == 12
    assert a != micro.sample_configs(op, 12, seed=6)
    common = set(micro.load_distribution()["common_hw"]) | {8, 16, 32}
    for c in a:
        assert c["op"] == op
        for k in ("cin", "cout", "channels"):
            if k in c and c[k] >= 8:
                assert c[k] % 8 == 0, (k, c)
        if "kernel" in c:
            assert c["kernel"] in micro.KERNELS
        if "stride" in c:
            assert c["stride"] in micro.STRIDES
        if "hw" in c and op not in ("resnet_basic", "resnet_bottleneck"):
            # sizes come from the reference networks (halved only to cap huge activations)
            assert c["hw"] in common or c["hw"] * 2 in common or c["hw"] * 4 in common, c
        if op in micro.SINGLE_OPS:
            assert c["expected_ops"] == micro.SINGLE_OPS[op]


def test_micro_score_fn_keeps_highest_scores():
    calls = []

    def score(cfgs):
        calls.append(len(cfgs))
        return [c["cin"] * c["cout"] * c["kernel"] ** 2 for c in cfgs]

    picked = micro.sample_configs("conv2d", 5, seed=0, score_fn=score)
    pool = micro.sample_configs("conv2d", 5 * micro.OVERSAMPLE, seed=0)
    assert calls == [5 * micro.OVERSAMPLE]
    best = sorted(pool, key=lambda c: -(c["cin"] * c["cout"] * c["kernel"] ** 2))[:5]
    assert picked == best
    plain = micro.sample_configs("conv2d", 5, seed=0)
    assert picked != plain


@pytest.mark.parametrize("score", [lambda c: [1.0], lambda c: [float("nan")] * len(c),
                                   lambda c: 1 / 0])
def test_micro_bad_score_fn(score):
    with pytest.raises(ZooError) as ei:
        micro.sample_configs("dense", 3, 0, score_fn=score)
    assert "score" in ei.value.hint


def test_micro_unknown_op_lists_valid():
    with pytest.raises(ZooError) as ei:
        micro.sample_configs("conv3d", 2, 0)
    assert "conv2d" in ei.value.hint and "nb201_cell" in ei.value.hint


def test_snapping():
    assert micro.snap_channels(3) == 8 and micro.snap_channels(21) == 24
    assert micro.snap_kernel(4.2) == 5 and micro.snap_kernel(0.1) == 1 and micro.snap_kernel(9) == 7
    assert micro.snap_hw(13, [7, 14, 28]) == 14


# --------------------------------------------------------------------------- reference


def test_list_reference_entries():
    rows = reference.list_reference()
    assert len(rows) >= 25
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names)
    for r in rows:
        assert {"name", "family", "input_size", "params", "description"} <= set(r)
        assert r["params"]["weights"] is None and r["params"]["batch"] == 1
    by = {r["name"]: r for r in rows}
    assert by["mobilenet_v3_small"]["preprocessing_in_graph"] is True
    assert by["inception_v3"]["input_size"] == 299


def test_reference_bad_name_lists_valid():
    with pytest.raises(ZooError) as ei:
        reference.build_reference("resnet9000", cache_dir="/nonexistent")
    assert "mobilenet_v2" in ei.value.hint and "resnet50" in ei.value.hint


@pytest.mark.parametrize("size", [8, 2000, "224", 96.5])
def test_reference_bad_input_size(size):
    with pytest.raises(ZooError, match="input size"):
        reference.reference_key("mobilenet_v2", size)


def test_reference_keras_name_accepted():
    assert reference.reference_key("MobileNetV2")["params"]["name"] == "mobilenet_v2"


# --------------------------------------------------------------------------- cache


def test_cache_key_depends_on_params_and_tf_version():
    k1 = {"generator": "g", "version": 1, "params": {"a": 1, "b": [1, 2]}}
    k2 = {"generator": "g", "version": 1, "params": {"b": [1, 2], "a": 1}}
    k3 = {"generator": "g", "version": 2, "params": {"a": 1, "b": [1, 2]}}
    assert convert.cache_hash(k1) == convert.cache_hash(k2) != convert.cache_hash(k3)
    with pytest.raises(ZooError):
        convert.cache_hash({"params": {}})


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OPCOST_CACHE_DIR", str(tmp_path))
    assert convert.default_cache_dir() == tmp_path


_NO_TF = """
import sys
sys.modules["tensorflow"] = None   # simulate an install without TensorFlow
sys.modules["keras"] = None
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)


def test_without_tensorflow_builders_say_how_to_install(tmp_path):
    r = _run(_NO_TF + f"""
import models_zoo.reference, models_zoo.nas, models_zoo.micro, models_zoo.convert
from opcost.errors import ZooError
assert len(models_zoo.micro.sample_configs("conv2d", 3, 0)) == 3
assert len(models_zoo.nas.sample_configs("nb201", 3, 0)) == 3
try:
    models_zoo.reference.build_reference("mobilenet_v2", cache_dir={str(tmp_path)!r})
except ZooError as e:
    print("HINT:", e.hint)
assert "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
""")
    assert r.returncode == 0, r.stderr
    assert 'HINT: install the zoo extra: pip install -e ".[zoo]"' in r.stdout


@pytest.mark.parametrize("args", [["build", "mobilenet_v2", "resnet50"], ["sample", "mbv2-space", "--count", "4"],
                                  ["sample", "nb201", "--count", "4"], ["micro", "conv2d", "--count", "5"]])
def test_cli_zoo_without_tensorflow_fails_once_and_says_how_to_install(tmp_path, args):
    out, cache = tmp_path / "zoo", tmp_path / "cache"
    r = _run(_NO_TF + f"""
from host.cli import main
main({["zoo", *args, "--out", str(out), "--cache-dir", str(cache)]!r})
""")
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert r.stderr.count("TensorFlow is needed") == 1, r.stderr
    assert "WARNING" not in r.stderr and "Traceback" not in r.stderr
    assert "nothing was built" in r.stderr and "were built" not in r.stderr
    assert 'what to do: install the zoo extra: pip install -e ".[zoo]"' in r.stderr
    assert not (out / "manifest.json").exists()


def test_cli_zoo_without_tensorflow_keeps_models_from_the_cache(tmp_path):
    """A model already in the conversion cache needs no TensorFlow: it is exported and
    listed; the run stops at the first model that needs TensorFlow and says so."""
    cache, out = tmp_path / "cache", tmp_path / "zoo"
    cache.mkdir()
    path, side = convert.cache_paths(reference.reference_key("mobilenet_v2"), cache)
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    side.write_text(json.dumps({"sha256": "x", "num_ops": 65}))
    r = _run(_NO_TF + f"""
from host.cli import main
main({["zoo", "build", "mobilenet_v2", "resnet50", "mobilenet_v3_small", "--out", str(out),
       "--cache-dir", str(cache)]!r})
""")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("TensorFlow is needed") == 1
    assert "1 of 3 model(s) came from the conversion cache" in r.stderr and "the other 2 were not built" in r.stderr
    doc = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["mobilenet_v2"]


def test_cache_hit_returns_path_without_tensorflow(tmp_path):
    key = reference.reference_key("mobilenet_v2")
    path, side = convert.cache_paths(key, tmp_path)
    # a cached entry as convert_keras leaves it (content irrelevant for a hit)
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 32)
    side.write_text(json.dumps({"sha256": "x", "num_ops": 65}))
    r = _run(_NO_TF + f"""
import models_zoo.reference
print(models_zoo.reference.build_reference("mobilenet_v2", cache_dir={str(tmp_path)!r}))
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(path)


def test_cache_hit_does_not_call_builder(tmp_path):
    key = {"generator": "t", "version": 1, "params": {"x": 1}}
    path, side = convert.cache_paths(key, tmp_path)
    path.write_bytes(b"\x1c\x00\x00\x00TFL3")
    side.write_text("{}")

    def builder():
        raise AssertionError("must not rebuild on a cache hit")

    assert convert.convert_keras(builder, key=key, cache_dir=tmp_path) == path


def test_write_manifest_merges_by_name(tmp_path):
    convert.write_manifest(tmp_path, [{"name": "a", "v": 1}, {"name": "b", "v": 1}])
    convert.write_manifest(tmp_path, [{"name": "a", "v": 2}])
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert [(m["name"], m["v"]) for m in doc["models"]] == [("a", 2), ("b", 1)]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    old = os.umask(0o022)
    try:
        convert.write_manifest(tmp_path, [{"name": "c", "v": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o644   # as any file, not mkstemp's 0600


def test_cli_zoo_list_shows_op_counts_only_when_cached(tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    path, side = convert.cache_paths(reference.reference_key("mobilenet_v2"), tmp_path)
    path.write_bytes(b"\x1c\x00\x00\x00TFL3")
    side.write_text(json.dumps({"num_ops": 65, "size_bytes": 13_900_000}))
    r = CliRunner().invoke(main, ["zoo", "list", "--cache-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[1]: ln.split() for ln in r.output.splitlines()[1:] if len(ln.split()) > 4}
    assert lines["mobilenet_v2"][3] == "65" and lines["resnet50"][3] == "-"
    r = CliRunner().invoke(main, ["zoo", "list", "--json", "--cache-dir", str(tmp_path)])
    doc = json.loads(r.output)
    by = {x["name"]: x for x in doc["reference"]}
    assert by["mobilenet_v2"]["num_ops"] == 65 and by["resnet50"]["num_ops"] is None
    assert "nb201" in doc["nas_spaces"] and "conv2d" in doc["micro_ops"]


@pytest.mark.parametrize("op", micro.OPS)
def test_sampled_channels_are_whole_numbers(op):
    """Block widths derived by division must be snapped (Keras rejects 2.75 channels)."""
    for cfg in micro.sample_configs(op, 300, 1):
        for key in ("cin", "cout", "channels", "se_channels", "groups"):
            if key in cfg:
                assert isinstance(cfg[key], int) and cfg[key] >= 1, (op, cfg)
