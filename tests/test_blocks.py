"""Block lookup, block regressor, block predictor, per-block timing and the store's blocks table."""
from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from predictor_helpers import as_if_saved_by_other_sklearn
from host.modeler.blocks import (BLOCK_FEATURES, KIND, BlockLatencyRegressor, BlockLookup,
                                 block_lookup_table)
from host.store import SCHEMA_VERSION, Store
from opcost.errors import PredictorError, StoreError
from opcost.records import (BenchmarkOutput, BlockRecord, DeviceInfo, E2EStats, Measurement, ModelRef,
                            RunSpec)


def _measurement(sha: str, blocks, *, serial: str = "local", delegate: str = "xnnpack", threads: int = 1,
                 mean_ms: float = 5.0) -> Measurement:
    return Measurement(device=DeviceInfo(serial=serial, kind="local"),
                       model=ModelRef(sha256=sha, name=f"net_{sha[:4]}"),
                       spec=RunSpec(delegate=delegate, threads=threads),
                       output=BenchmarkOutput(e2e=E2EStats(count=10, mean_ms=mean_ms), blocks=blocks))


def _blk(index: int, key: str, ms: float) -> BlockRecord:
    return BlockRecord(index=index, key=key, avg_ms=ms, ops=[index], op_types=["CONV_2D"], median_ms=ms,
                       first_ms=2 * ms, count=10)


# ---------------------------------------------------------------- store


def test_blocks_round_trip_through_the_store(tmp_path):
    with Store.open(str(tmp_path / "s.db")) as s:
        run = s.add_measurement(_measurement("a" * 64, [_blk(0, "k0", 1.5), _blk(1, "k1", 0.25)]))
        back = s.get_measurement(run)
        df = s.blocks_df(device="local")
    assert back.output.blocks == [_blk(0, "k0", 1.5), _blk(1, "k1", 0.25)]
    assert list(df["block_key"]) == ["k0", "k1"] and list(df["avg_ms"]) == [1.5, 0.25]
    assert set(df["block_index"]) == {0, 1} and (df["model_sha256"] == "a" * 64).all()


def test_store_of_schema_1_is_migrated_and_keeps_its_runs(tmp_path):
    path = str(tmp_path / "old.db")
    with Store.open(path) as s:
        old_run = s.add_measurement(_measurement("a" * 64, []))
    # A version-1 store is this schema without the blocks table.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE blocks")
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with Store.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 2
        assert s.get_measurement(old_run).output.e2e.mean_ms == 5.0
        run = s.add_measurement(_measurement("b" * 64, [_blk(0, "k0", 1.0)]))
        assert [b.key for b in s.get_measurement(run).output.blocks] == ["k0"]
    meta = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta").fetchall())
    assert meta["schema_version"] == "2" and "migrated_from_1_at" in meta


def test_store_of_unknown_old_schema_is_a_clear_error(tmp_path):
    path = str(tmp_path / "older.db")
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="old schema version 0") as ei:
        Store.open(path)
    assert ei.value.hint


# ---------------------------------------------------------------- lookup


def test_lookup_table_is_median_over_measurements_per_device_and_delegate(tmp_path):
    with Store.open(str(tmp_path / "s.db")) as s:
        for sha, ms in (("a" * 64, 1.0), ("b" * 64, 2.0), ("c" * 64, 6.0)):
            # The same block twice in one network counts as one measurement of it.
            s.add_measurement(_measurement(sha, [_blk(0, "shared", ms), _blk(1, "shared", ms)]))
        s.add_measurement(_measurement("d" * 64, [_blk(0, "shared", 50.0)], delegate="cpu"))
        table = block_lookup_table(s, device="local", delegate="xnnpack")
        everything = block_lookup_table(s)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["latency_ms"] == 2.0 and row["n_measurements"] == 3
    assert sorted(everything["delegate"]) == ["cpu", "xnnpack"]
    lookup = BlockLookup().fit(table)
    assert "shared" in lookup and lookup.get("shared") == 2.0
    assert "never-measured" not in lookup and lookup.get("never-measured") is None


# ---------------------------------------------------------------- regressor


@parametrize_with_checks([
    BlockLatencyRegressor(log_target=False, baseline="none"),
    BlockLatencyRegressor(log_target=False, baseline="none", min_samples_per_kind=1000),
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _block_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["CONV_2D", "CONV_2D+DEPTHWISE_CONV_2D+CONV_2D+ADD", "MEAN"], size=n, p=[0.45, 0.45, 0.1])
    df = pd.DataFrame({c: rng.uniform(0, 5, n) for c in BLOCK_FEATURES})
    df["log_flops"] = rng.uniform(10, 18, n)
    df[KIND] = kinds
    return df


def _block_time(df: pd.DataFrame) -> np.ndarray:
    per_kind = np.where(df[KIND] == "MEAN", 0.2, np.where(df[KIND] == "CONV_2D", 1.0, 1.6))
    return per_kind * np.expm1(df["log_flops"].to_numpy()) / 1e6 + 0.01


def test_regressor_uses_kind_models_where_it_has_data():
    train, test = _block_rows(400, 0), _block_rows(100, 1)
    reg = BlockLatencyRegressor(min_samples_per_kind=60).fit(train, _block_time(train))
    assert reg.has_kind("CONV_2D") and not reg.has_kind("MEAN")  # ~40 MEAN rows < 60
    d = reg.predict_detail(test)
    assert list(d["kind_model"]) == [k != "MEAN" for k in test[KIND]]
    y = _block_time(test)
    own = d["kind_model"].to_numpy()
    assert np.median(np.abs(d["pred"].to_numpy()[own] / y[own] - 1)) < 0.1
    unseen = test.assign(kind="SOFTMAX")
    assert not reg.predict_detail(unseen)["kind_model"].any()
    with pytest.raises(PredictorError, match="block table"):
        reg.predict(test[BLOCK_FEATURES].to_numpy())


# ---------------------------------------------------------------- predictor on real graphs


@pytest.fixture(scope="module")
def nas_paths(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from models_zoo import nas

    cache = tmp_path_factory.mktemp("zoo")
    cfgs = nas.sample_configs("mbv2-space", 9, 3, width_mult=0.75, input_size=32)
    return [str(nas.build_config(c, cache_dir=str(cache))) for c in cfgs]


def _synthetic_tables(paths):
    """Ops/blocks/networks of real graphs with latencies made up from their FLOPs (a
    block run alone: 0.9 x its ops' sum; end to end: 0.95 x the op sum + 0.05 ms)."""
    from host.modeler.blocks import blocks_of_files

    ops, blocks = blocks_of_files(paths)
    ops["latency_ms"] = 1e-7 * ops["flops"].to_numpy(dtype=float) + 2e-3
    per = ops.set_index(["network", "op_index"])["latency_ms"]
    blocks["latency_ms"] = [0.9 * sum(per[(n, int(i))] for i in o.split(","))
                            for n, o in zip(blocks["network"], blocks["ops"])]
    nets = ops.groupby("network")["latency_ms"].sum().mul(0.95).add(0.05).rename("latency_ms").reset_index()
    return ops, nets, blocks


@pytest.mark.tf
@pytest.mark.slow
def test_block_predictor_lookup_hits_misses_and_save_load(nas_paths, tmp_path):
    from host.modeler.blocks import BlockLatencyPredictor
    from host.modeler.predictor_file import load_predictor, save_predictor

    train, test = nas_paths[:7], nas_paths[7:]
    ops, nets, blocks = _synthetic_tables(train)
    p = BlockLatencyPredictor(min_samples_per_type=3, min_samples_per_kind=3).fit(ops, nets, blocks)
    assert len(p.lookup_) == blocks["block_key"].nunique()

    # A training network: every block is a lookup hit, with the measured value.
    tops, _, tblocks = _synthetic_tables(train[:1])
    b = p.predict_blocks(tops, tblocks)
    assert (b["source"] == "lookup").all()
    assert b["pred_ms"].to_numpy() == pytest.approx(tblocks["latency_ms"].to_numpy())

    # Held-out networks: known keys from the lookup, the rest from regressor / kernel sums.
    hops, hnets, hblocks = _synthetic_tables(test)
    hb = p.predict_blocks(hops, hblocks)
    known = hblocks["block_key"].isin(set(blocks["block_key"])).to_numpy()
    assert list(hb["source"] == "lookup") == list(known)
    assert known.any() and not known.all()
    miss = hb[~known]
    assert set(miss["source"]) <= {"regressor", "kernel_sum"}
    for r in miss.itertuples():
        assert (r.source == "regressor") == p.regressor_.has_kind(r.kind)
    kernel_only = p.model_.kernel_model_
    assert kernel_only is not None
    d = p.predict_tables(hops, hblocks)
    assert (d["n_lookup"] + d["n_regressor"] + d["n_kernel_sum"] == d["n_blocks"]).all()
    truth = hnets.set_index("network")["latency_ms"]
    assert np.all(np.abs(d["pred_ms"] / truth.reindex(d.index) - 1) < 0.5)

    # Save / load: the pickle, and a refit from the embedded tables (other sklearn version).
    path = tmp_path / "b.predictor"
    save_predictor(path, p, meta={"kind": "network-latency"},
                   training={"ops": ops, "networks": nets, "blocks": blocks})
    loaded, meta = load_predictor(path)
    assert meta["loaded_by"] == "pickle"
    pd.testing.assert_frame_equal(loaded.predict_tables(hops, hblocks), d)
    other = tmp_path / "other.predictor"
    as_if_saved_by_other_sklearn(path, other)
    refit, meta2 = load_predictor(other)
    assert meta2["loaded_by"] == "refit"
    pd.testing.assert_frame_equal(refit.predict_tables(hops, hblocks), d, rtol=1e-9)


# ---------------------------------------------------------------- per-block timing on the host


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    y = keras.layers.Conv2D(8, 1)(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4)(x)
    path = tmp_path_factory.mktemp("blocks") / "residual.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, out)).convert())
    return str(path)


FAST = dict(num_runs=3, warmup_runs=1, min_secs=0.0, max_secs=5.0, warmup_min_secs=0.0)


@pytest.mark.tf
def test_per_block_profile_times_every_block_and_stores_it(residual_model, tmp_path):
    from click.testing import CliRunner

    from host.cli import main
    from models_zoo.graph import read_graph

    blocks = read_graph(residual_model).blocks()
    assert any(len(b.ops) > 1 for b in blocks)  # the residual pair is one block
    db = str(tmp_path / "r.db")
    r = CliRunner().invoke(main, ["profile", residual_model, "--device", "local", "--runs", "3", "--warmup", "1",
                                  "--min-secs", "0", "--per-block", "--store", db, "--json"])
    assert r.exit_code == 0, r.stderr
    rec = json.loads(r.stdout)
    got = rec["output"]["blocks"]
    assert [(b["index"], b["key"], b["ops"]) for b in got] == [(b.index, b.key, list(b.ops)) for b in blocks]
    assert all(b["avg_ms"] > 0 and b["count"] >= 3 for b in got)
    with Store.open(db) as s:
        df = s.blocks_df()
        table = block_lookup_table(s, device="local")
    assert list(df["block_key"]) == [b.key for b in blocks]
    assert set(table["block_key"]) == {b.key for b in blocks}


def test_per_block_on_a_phone_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from host.cli import main

    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 32)
    r = CliRunner().invoke(main, ["profile", str(model), "--device", "SERIAL1", "--binary", str(model),
                                  "--per-block", "--store", str(tmp_path / "r.db")])
    assert r.exit_code != 0 and "--per-block works only with --device local" in r.stderr
    assert "Traceback" not in r.stderr


def test_block_record_dict_round_trip():
    b = _blk(3, "k", 0.5)
    assert BlockRecord.from_dict(dataclasses.asdict(b)) == b
    out = BenchmarkOutput(e2e=E2EStats(count=1, mean_ms=1.0), blocks=[b])
    assert BenchmarkOutput.from_dict(out.to_dict()).blocks == [b]
