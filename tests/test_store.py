"""Tests of host/store.py: schema checks, round trips, concurrency, export.

All measurements here are synthetic (built in code by ``synthetic_measurement``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading

import pandas as pd
import pytest

from host.store import SCHEMA_VERSION, Store, export
from opcost.errors import StoreError, UsageError
from opcost.records import (
    BenchmarkOutput,
    DeviceInfo,
    DeviceState,
    E2EStats,
    Measurement,
    ModelRef,
    OpRecord,
    RunSpec,
)


def synthetic_measurement(i: int = 0, *, serial: str = "SER1", model_sha: str = "a" * 64,
                          delegate: str = "xnnpack", threads: int = 1, with_ops: bool = True) -> Measurement:
    """A fully populated measurement; numbers vary with ``i`` so rows differ."""
    ops = [
        OpRecord(node_type="CONV_2D", name="conv1", avg_ms=1.25 + i, first_ms=1.5, start_ms=0.0, pct=60.0,
                 cdf_pct=60.0, mem_kb=12.0, times_called=1, index=0, section="run"),
        OpRecord(node_type="Convolution (NHWC, F32) IGEMM", name="Delegate/conv", avg_ms=0.5, pct=40.0,
                 times_called=2, index=1, section="run", subgraph=0, delegated=True),
        OpRecord(node_type="ModifyGraphWithDelegate", name="init", avg_ms=3.0, index=0, section="init"),
    ] if with_ops else []
    return Measurement(
        device=DeviceInfo(serial=serial, kind="android", model="Pixel 7", manufacturer="Google",
                          soc="gs201", abi="arm64-v8a", sdk=34,
                          cpu_clusters=[{"cpus": [0, 1, 2, 3], "max_khz": 1803000}], extra={"ram_mb": 8000}),
        model=ModelRef(sha256=model_sha, name=f"net_{model_sha[:4]}", path="/m/net.tflite", size_bytes=1234,
                       source="zoo"),
        spec=RunSpec(delegate=delegate, threads=threads, num_runs=20, op_profiling=with_ops),
        output=BenchmarkOutput(
            e2e=E2EStats.from_dict(dict(count=20, mean_ms=10.0 + i, std_ms=0.5, min_ms=9.0, max_ms=12.5,
                                        median_ms=10.1, p5_ms=9.2, p95_ms=11.9, first_ms=15.0, init_ms=40.0,
                                        warmup_mean_ms=11.0, warmup_count=1, warmup_first_ms=16.0)),
            init_mem_mb=5.5, overall_mem_mb=20.25, model_size_mb=3.5, peak_mem_mb=22.0, delegate_name="XNNPACK",
            delegated_nodes=30, total_nodes=31, fully_delegated=False, ops=ops, version="2.16.1",
            warnings=["something odd"]),
        runtime={"name": "benchmark_model", "version": "2.16.1", "sha256": "b" * 64},
        state_before=DeviceState(governors={"cpu0": "schedutil"}, cur_freq_khz={"cpu0": 1000000},
                                 max_freq_khz={"cpu0": 1803000}, temps_c={"cpu-0": 38.5}, battery_temp_c=31.0,
                                 battery_level_pct=80, timestamp=1000.0),
        state_after=DeviceState(temps_c={"cpu-0": 41.0}, timestamp=1012.0),
        thermal_wait_s=1.5, started_at=1000.0, wall_s=12.0,
        raw_output="INFO: Running benchmark\nINFO: Inference timings in us: Init: 40000\n" * 3,
        argv=["/data/local/tmp/benchmark_model", "--graph=/data/local/tmp/net.tflite"],
    )


def dataset_measurement() -> Measurement:
    """What a dataset importer has: no raw output, no state, no runtime, no ops."""
    return Measurement(
        device=DeviceInfo(serial="dataset:Pixel4", kind="android", model="Pixel 4", soc="sm8150"),
        model=ModelRef(sha256="c" * 64, name="mobilenet_v2"),
        spec=RunSpec(delegate="cpu", threads=4),
        output=BenchmarkOutput(e2e=E2EStats(count=1, mean_ms=33.3)),
    )


@pytest.fixture
def store(tmp_path):
    with Store.open(str(tmp_path / "s.db")) as s:
        yield s


def test_constructor_does_no_io(tmp_path):
    path = tmp_path / "new.db"
    Store(str(path))
    assert not path.exists()


def test_open_creates_schema_and_reopens(tmp_path):
    path = str(tmp_path / "sub" / "s.db")
    with Store.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        rid = s.add_measurement(synthetic_measurement())
    with Store.open(path, create=False) as s:
        assert s.count_runs() == 1
        assert s.get_measurement(rid).output.e2e.mean_ms == 10.0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_full_measurement_round_trip(store):
    m = synthetic_measurement(3)
    rid = store.add_measurement(m)
    back = store.get_measurement(rid)
    assert back.to_dict(include_raw=True) == m.to_dict(include_raw=True)


@dataclasses.dataclass
class E2EStatsPlus(E2EStats):
    """E2EStats as it might look after another engineer adds a field."""

    jitter_ms: float = 0.0


def test_fields_added_to_records_later_are_kept(store):
    m = synthetic_measurement()
    m.output.e2e = E2EStatsPlus(count=3, mean_ms=2.0, jitter_ms=0.25)
    rid = store.add_measurement(m)
    extra = json.loads(store.runs_df(run_id=rid).loc[0, "extra"])
    assert extra["e2e"] == {"jitter_ms": 0.25}
    assert store.get_measurement(rid).output.e2e.mean_ms == 2.0


def test_dataset_measurement_without_raw_or_state(store):
    rid = store.add_measurement(dataset_measurement(), origin="dataset:li2024")
    back = store.get_measurement(rid)
    assert back.raw_output is None and back.state_before is None and back.runtime == {}
    assert back.output.ops == []
    df = store.runs_df(origin="dataset:li2024")
    assert list(df["run_id"]) == [rid]
    assert df.loc[0, "mean_ms"] == pytest.approx(33.3)
    assert pd.isna(df.loc[0, "runtime_name"])
    assert len(store.runs_df(origin="measured")) == 0


def test_bulk_import_is_all_or_nothing_and_can_be_replaced(store):
    ms = [dataset_measurement(), dataset_measurement(), synthetic_measurement(5, serial="X")]
    with pytest.raises(UsageError):
        store.add_measurements([ms[0], "not a measurement", ms[1]], origin="dataset:li2024")
    assert store.count_runs() == 0
    ids = store.add_measurements(ms, origin="dataset:li2024")
    store.add_measurement(synthetic_measurement())
    assert len(set(ids)) == 3 and store.count_runs(origin="dataset:li2024") == 3
    assert store.delete_runs(origin="dataset:li2024") == 3
    assert store.count_runs() == 1 and len(store.ops_df()) == 3
    assert store._conn().execute("SELECT COUNT(*) FROM ops").fetchone()[0] == 3  # cascaded
    with pytest.raises(UsageError, match="origin must be a non-empty string"):
        store.add_measurements(ms, origin="")


def test_runs_df_filters_and_joins(store):
    store.add_measurement(synthetic_measurement(0, serial="A", delegate="xnnpack", threads=1))
    store.add_measurement(synthetic_measurement(1, serial="A", delegate="gpu", threads=1))
    store.add_measurement(synthetic_measurement(2, serial="B", delegate="xnnpack", threads=4, model_sha="d" * 64))
    df = store.runs_df()
    assert len(df) == 3
    assert {"device_model", "soc", "model_name", "runtime_version", "mean_ms", "p95_ms", "peak_mem_mb",
            "fully_delegated", "thermal_wait_s", "origin", "job_id", "spec_key"} <= set(df.columns)
    assert list(store.runs_df(device="A")["mean_ms"]) == [10.0, 11.0]
    assert list(store.runs_df(delegate="xnnpack", threads=4)["device_serial"]) == ["B"]
    assert len(store.runs_df(device=["A", "B"], delegate="gpu")) == 1
    assert len(store.runs_df(model_sha256="d" * 64)) == 1
    assert len(store.runs_df(device=[])) == 0
    with pytest.raises(UsageError, match="unknown filter 'colour'"):
        store.runs_df(colour="red")
    assert "raw_output" not in df.columns
    raw = store.runs_df(include_raw=True, device="B")
    assert raw.loc[0, "raw_output"].startswith("INFO: Running benchmark")


def test_ops_df(store):
    r1 = store.add_measurement(synthetic_measurement(0))
    store.add_measurement(synthetic_measurement(1, with_ops=False))
    ops = store.ops_df()
    assert list(ops["run_id"]) == [r1] * 3
    assert list(ops["node_type"]) == ["CONV_2D", "Convolution (NHWC, F32) IGEMM", "ModifyGraphWithDelegate"]
    assert list(ops["delegated"]) == [0, 1, 0]
    assert list(store.ops_df(section="init")["avg_ms"]) == [3.0]
    assert len(store.ops_df(device="nope")) == 0


def test_devices_and_models(store):
    store.add_measurement(synthetic_measurement(0, serial="B"))
    store.add_measurement(synthetic_measurement(1, serial="A", model_sha="e" * 64))
    store.add_measurement(dataset_measurement(), origin="dataset:x")
    assert [d.serial for d in store.devices()] == ["A", "B", "dataset:Pixel4"]
    assert store.devices()[0].cpu_clusters == [{"cpus": [0, 1, 2, 3], "max_khz": 1803000}]
    assert sorted(m.sha256[0] for m in store.models()) == ["a", "c", "e"]


def test_get_missing_run(store):
    with pytest.raises(StoreError, match="no run with id 42"):
        store.get_measurement(42)


def test_add_measurement_marks_job_done(store):
    store.sync_jobs([{"job_id": "j1", "device_serial": "SER1", "model_sha256": "a" * 64, "model_path": "/m",
                      "spec_key": "k", "spec": {}, "repeat": 0}])
    rid = store.add_measurement(synthetic_measurement(), job_id="j1")
    assert store.job_rows(["j1"])["j1"]["status"] == "done"
    assert store.job_rows(["j1"])["j1"]["run_id"] == rid


def test_add_measurement_rejects_non_measurement(store):
    with pytest.raises(UsageError):
        store.add_measurement({"mean_ms": 1.0})


# ---------------------------------------------------------------- opening bad files
def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "s.db")
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer") as ei:
        Store.open(path)
    assert "upgrade opcost" in ei.value.hint


def test_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is a text file, not a database\n" * 50)
    with pytest.raises(StoreError, match="not an opcost store"):
        Store.open(str(path))


def test_foreign_sqlite_is_refused(tmp_path):
    path = str(tmp_path / "other.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an opcost store"):
        Store.open(path)


def test_foreign_meta_table_is_refused(tmp_path):
    path = str(tmp_path / "other.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('app', 'someone-else')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not an opcost store"):
        Store.open(path)


def test_missing_store_without_create(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(str(tmp_path / "absent.db"), create=False)
    assert not (tmp_path / "absent.db").exists()


def test_directory_is_refused(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        Store.open(str(tmp_path))


# ---------------------------------------------------------------- concurrency
def test_concurrent_writes_from_two_threads(store):
    n = 40
    ids, errors = [], []

    def writer(serial):
        try:
            for i in range(n):
                ids.append(store.add_measurement(synthetic_measurement(i, serial=serial)))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 2 * n
    assert store.count_runs() == 2 * n
    assert len(store.ops_df()) == 3 * 2 * n
    assert sorted(store.runs_df(device="A")["mean_ms"]) == [10.0 + i for i in range(n)]


def test_concurrent_writes_from_two_store_objects(tmp_path):
    """Two Store objects on one file (as two processes would be) rely on SQLite's lock."""
    path = str(tmp_path / "s.db")
    stores = [Store.open(path), Store.open(path)]
    errors = []

    def writer(s, serial):
        try:
            for i in range(25):
                s.add_measurement(synthetic_measurement(i, serial=serial))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s, ser)) for s, ser in zip(stores, "AB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    with Store.open(path) as s:
        assert s.count_runs() == 50


# ---------------------------------------------------------------- export
def _filled(store):
    store.add_measurement(synthetic_measurement(0, serial="A"))
    store.add_measurement(synthetic_measurement(1, serial="B", delegate="gpu", model_sha="d" * 64))
    store.add_measurement(dataset_measurement(), origin="dataset:li2024")


def test_export_parquet_round_trip(store, tmp_path):
    _filled(store)
    paths = export(store, str(tmp_path / "out"), "parquet")
    assert [os.path.basename(p) for p in paths] == ["runs.parquet", "ops.parquet", "devices.parquet",
                                                    "models.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), store.runs_df())
    pd.testing.assert_frame_equal(pd.read_parquet(paths[1]), store.ops_df())
    assert sorted(pd.read_parquet(paths[2])["serial"]) == ["A", "B", "dataset:Pixel4"]
    assert len(pd.read_parquet(paths[3])) == 3


def test_export_csv_round_trip(store, tmp_path):
    _filled(store)
    paths = export(store, str(tmp_path / "out"), "csv")
    runs = pd.read_csv(paths[0])
    want = store.runs_df()
    assert list(runs.columns) == list(want.columns)
    for col in ("run_id", "mean_ms", "std_ms", "p95_ms", "peak_mem_mb", "threads", "thermal_wait_s"):
        pd.testing.assert_series_equal(runs[col].astype(float), want[col].astype(float), check_names=False)
    for col in ("device_serial", "model_name", "delegate", "origin", "spec_key"):
        assert list(runs[col]) == list(want[col])
    ops = pd.read_csv(paths[1])
    assert list(ops["node_type"]) == list(store.ops_df()["node_type"])
    assert list(ops["avg_ms"]) == list(store.ops_df()["avg_ms"])


def test_export_bad_format(store, tmp_path):
    with pytest.raises(UsageError, match="unknown export format 'xls'"):
        export(store, str(tmp_path), "xls")


def test_resolve_device_by_serial_or_unique_model(store):
    """A user may name a device by its model; the serial is what predictors record."""
    import dataclasses

    store.add_measurement(synthetic_measurement(serial="SER1"))
    other = synthetic_measurement(1, serial="SER2")
    store.add_measurement(dataclasses.replace(other, device=dataclasses.replace(other.device, model="Pixel 8")))
    store.add_measurement(dataclasses.replace(other, device=dataclasses.replace(other.device, serial="SER3",
                                                                                model="Pixel 8")))
    assert store.resolve_device("SER2") == "SER2"
    assert store.resolve_device("Pixel 7") == "SER1"   # one device of that model
    assert store.resolve_device("Pixel 8") == "Pixel 8"  # two: left as given (runs of both match)
    assert store.resolve_device("nobody") == "nobody"
    with pytest.raises(UsageError, match="2 devices in .* are a Pixel 8: SER2, SER3") as err:
        store.resolve_device("Pixel 8", unique=True)
    assert "by its serial" in err.value.hint
    assert store.resolve_device("Pixel 7", unique=True) == "SER1"
    assert store.device_model("SER3") == "Pixel 8" and store.device_model("Pixel 7") is None
