"""The SQLite store: every measurement, campaign job, device and model in one file.

This module is the only place that talks SQL. A ``Store`` is cheap to construct (no I/O);
``Store.open(path)`` connects, checks that the file is an opcost store of a schema this
code understands, and creates the schema in a new file. Writers (the default) learn at
open time when the store cannot be written; commands that only read use
``Store.open_reader(path)``, which falls back to a read-only connection
(``Store.open(path, readonly=True)``) on a read-only file, folder or mount.

Several campaign worker threads write at once: each thread gets its own connection (WAL
mode, busy timeout) and writes go through one lock, so writers never fight over the
database lock inside this process. Every ``add_measurement`` is its own transaction, so
a killed process loses at most the run it was measuring.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence

from opcost.errors import StoreError, UsageError
from opcost.records import (
    BenchmarkOutput,
    BlockRecord,
    DeviceInfo,
    DeviceState,
    E2EStats,
    Measurement,
    ModelRef,
    OpRecord,
    RunSpec,
)

log = logging.getLogger("opcost.store")

SCHEMA_VERSION = 2
APP_ID = "opcost"
BUSY_TIMEOUT_S = 30.0
_SQL_PARAMS_PER_QUERY = 500

JOB_STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    serial TEXT PRIMARY KEY,
    kind TEXT,
    model TEXT,
    manufacturer TEXT,
    soc TEXT,
    abi TEXT,
    sdk INTEGER,
    info TEXT NOT NULL,
    first_seen REAL,
    last_seen REAL
);
CREATE TABLE IF NOT EXISTS runtimes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    info TEXT NOT NULL,
    UNIQUE (name, version, sha256)
);
CREATE TABLE IF NOT EXISTS models (
    sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT,
    size_bytes INTEGER,
    source TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_serial TEXT NOT NULL REFERENCES devices(serial),
    model_sha256 TEXT NOT NULL REFERENCES models(sha256),
    runtime_id INTEGER REFERENCES runtimes(id),
    spec TEXT NOT NULL,
    spec_key TEXT NOT NULL,
    delegate TEXT NOT NULL,
    threads INTEGER NOT NULL,
    cpu_mask TEXT,
    num_runs INTEGER,
    op_profiling INTEGER,
    count INTEGER,
    mean_ms REAL,
    std_ms REAL,
    min_ms REAL,
    max_ms REAL,
    median_ms REAL,
    p5_ms REAL,
    p95_ms REAL,
    first_ms REAL,
    init_ms REAL,
    warmup_mean_ms REAL,
    warmup_count INTEGER,
    warmup_first_ms REAL,
    init_mem_mb REAL,
    overall_mem_mb REAL,
    peak_mem_mb REAL,
    delegate_name TEXT,
    delegated_nodes INTEGER,
    total_nodes INTEGER,
    fully_delegated INTEGER,
    model_size_mb REAL,
    output_version TEXT,
    warnings TEXT,
    state_before TEXT,
    state_after TEXT,
    max_temp_before_c REAL,
    max_temp_after_c REAL,
    thermal_wait_s REAL,
    started_at REAL,
    wall_s REAL,
    argv TEXT,
    raw_output BLOB,
    job_id TEXT,
    origin TEXT NOT NULL,
    stored_at REAL NOT NULL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS runs_device ON runs (device_serial);
CREATE INDEX IF NOT EXISTS runs_model ON runs (model_sha256);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job_id);
CREATE TABLE IF NOT EXISTS ops (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    section TEXT NOT NULL,
    idx INTEGER,
    node_type TEXT NOT NULL,
    name TEXT,
    avg_ms REAL,
    first_ms REAL,
    start_ms REAL,
    pct REAL,
    cdf_pct REAL,
    times_called INTEGER,
    mem_kb REAL,
    subgraph INTEGER,
    delegated INTEGER,
    seq INTEGER NOT NULL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS ops_run ON ops (run_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    device_serial TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    model_path TEXT,
    spec_key TEXT NOT NULL,
    spec TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_type TEXT,
    run_id INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_device ON jobs (device_serial, status);
""" + """
CREATE TABLE IF NOT EXISTS blocks (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    block_key TEXT NOT NULL,
    avg_ms REAL,
    median_ms REAL,
    first_ms REAL,
    count INTEGER,
    ops TEXT,
    op_types TEXT,
    seq INTEGER NOT NULL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS blocks_run ON blocks (run_id);
CREATE INDEX IF NOT EXISTS blocks_key ON blocks (block_key);
"""
# Schema changes, by the version they upgrade from: statements that take a store of that
# version to the next one (only additions, so older rows stay as they are).
_MIGRATIONS = {
    1: _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS blocks"):],  # v2: per-block times
}

_E2E_COLS = ("count", "mean_ms", "std_ms", "min_ms", "max_ms", "median_ms", "p5_ms", "p95_ms",
             "first_ms", "init_ms", "warmup_mean_ms", "warmup_count", "warmup_first_ms")
_OUT_COLS = ("init_mem_mb", "overall_mem_mb", "peak_mem_mb", "delegate_name", "delegated_nodes",
             "total_nodes", "fully_delegated", "model_size_mb")
_OP_COLS = ("section", "idx", "node_type", "name", "avg_ms", "first_ms", "start_ms", "pct",
            "cdf_pct", "times_called", "mem_kb", "subgraph", "delegated", "seq")
# Record fields with their own column; any other field (added to a shared record later)
# goes into the row's ``extra`` JSON so that nothing is lost.
_OP_FIELD_COLS = {"index": "idx", **{c: c for c in _OP_COLS if c not in ("idx", "seq")}}
_OUT_FIELDS = {*_OUT_COLS, "e2e", "ops", "blocks", "version", "warnings"}
_MEAS_FIELDS = {"device", "model", "spec", "output", "runtime", "state_before", "state_after",
                "thermal_wait_s", "started_at", "wall_s", "raw_output", "argv"}


def _extra_fields(obj: Any, known: Iterable[str]) -> Dict[str, Any]:
    known = set(known)
    out = {}
    for f in dataclasses.fields(obj):
        if f.name not in known:
            v = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING and v == f.default:
                continue
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else v
    return out


def _run_extra(m: Measurement) -> Optional[str]:
    extra = {k: v for k, v in (("measurement", _extra_fields(m, _MEAS_FIELDS)),
                               ("output", _extra_fields(m.output, _OUT_FIELDS)),
                               ("e2e", _extra_fields(m.output.e2e, _E2E_COLS))) if v}
    return _json(extra) if extra else None


def _op_extra(op: OpRecord) -> Optional[str]:
    extra = _extra_fields(op, _OP_FIELD_COLS)
    return _json(extra) if extra else None


# Filters accepted by runs_df / ops_df: name -> SQL expression on the joined runs query.
_RUN_FILTERS = {
    "device": "r.device_serial",
    "device_serial": "r.device_serial",
    "model": "m.name",
    "model_name": "m.name",
    "model_sha256": "r.model_sha256",
    "delegate": "r.delegate",
    "threads": "r.threads",
    "spec_key": "r.spec_key",
    "origin": "r.origin",
    "job_id": "r.job_id",
    "run_id": "r.id",
    "soc": "d.soc",
    "device_model": "d.model",
}
_OP_FILTERS = {"section": "o.section", "node_type": "o.node_type", "delegated": "o.delegated"}


def _json(obj: Any) -> Optional[str]:
    return None if obj is None else json.dumps(obj, sort_keys=True)


def _unjson(text: Optional[str]) -> Any:
    return None if text is None else json.loads(text)


def _is_write_error(err: BaseException) -> bool:
    """An SQLite error of a write that is about the file, the disk or a lock (not a bug in a query)."""
    return isinstance(err, sqlite3.OperationalError) or type(err) is sqlite3.DatabaseError


# `campaign status` holds the campaign lock shared for an instant to see whether a runner is
# alive; a runner starting in that instant tries again for this long before refusing.
CAMPAIGN_LOCK_WAIT_S = 1.0


def _flock_within(fd: int, kind: int, wait_s: float) -> None:
    """flock ``kind`` without blocking for longer than ``wait_s``; BlockingIOError after."""
    import fcntl

    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _is_lock_error(err: BaseException) -> bool:
    low = str(err).lower()
    return "locked" in low or "busy" in low


def _write_error(path: str, err: BaseException) -> StoreError:
    """A StoreError naming the store for an SQLite error while writing, with what to do."""
    msg = str(err)
    low = msg.lower()
    if "readonly" in low or "read-only" in low:
        return StoreError(f"store {path!r} is read-only; SQLite says: {msg}",
                          hint="make the file and its folder writable (e.g. chmod u+w), or pass another "
                               "--store; `opcost export` and `opcost campaign status` read it as it is")
    if "full" in low:
        return StoreError(f"cannot write to store {path!r}: {msg}",
                          hint="free disk space on the store's file system, or pass another --store")
    if _is_lock_error(err):
        return StoreError(f"cannot write to store {path!r}: {msg}",
                          hint="another program holds the database lock; wait for it, or use another --store")
    return StoreError(f"cannot write to store {path!r}: {msg}",
                      hint="check that the file and its folder are writable and the disk is not full")


class Store:
    """An opcost SQLite store. Use ``Store.open(path)``; also a context manager."""

    def __init__(self, path: str, *, create: bool = True, readonly: bool = False) -> None:
        self.path = str(path)
        self.create = create and not readonly
        self.readonly = readonly
        self._immutable = False  # read-only and the folder cannot hold SQLite's side files
        self._local = threading.local()
        self._conns: List[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._opened = False

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open(cls, path: str, *, create: bool = True, readonly: bool = False) -> "Store":
        """Open (and with ``create`` make) the store at ``path``; StoreError if unusable.

        With ``create`` (what writers use) the store must also be writable: a read-only
        file or folder is a StoreError here, before anything is measured. ``readonly``
        opens an existing store read-only (SQLite ``mode=ro``; ``immutable`` when its
        folder cannot hold SQLite's side files), for commands that only read; writes then
        raise StoreError.
        """
        store = cls(path, create=create, readonly=readonly)
        store._open()
        return store

    @classmethod
    def open_reader(cls, path: str) -> "Store":
        """Open an existing store for a command that only reads: as usual when it can be
        written (an older schema is upgraded), else read-only (a read-only file, folder or
        mount), so fitting and evaluating work on a shared store nobody may write."""
        parent = os.path.dirname(os.path.abspath(str(path)))
        writable = os.access(str(path), os.W_OK) and os.access(parent, os.W_OK | os.X_OK)
        return cls.open(path, create=False, readonly=os.path.isfile(str(path)) and not writable)

    def _open(self) -> None:
        path = self.path
        if os.path.isdir(path):
            raise StoreError(f"store path {path!r} is a directory, not a file",
                             hint="pass the path of a .db file, e.g. --store results/opcost.db")
        exists = os.path.exists(path)
        if not exists and not self.create:
            raise StoreError(f"store {path!r} does not exist",
                             hint="check the --store path; `opcost profile --store`, `opcost campaign run` or "
                                  "`opcost dataset import` create one")
        if exists and not os.access(path, os.R_OK):
            raise StoreError(f"store {path!r} is not readable (permission denied)",
                             hint="fix the file permissions or pass another --store path")
        parent = os.path.dirname(os.path.abspath(path))
        if not exists:
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as err:
                raise StoreError(f"cannot create the folder for store {path!r}: {err}") from None
        if self.create:
            self._check_access(exists, parent)
        self._opened = True
        try:
            conn = self._readable_conn(parent) if self.readonly else self._conn()
            self._check_or_create(conn)
            if self.create:
                self._check_writable(conn)
        except sqlite3.OperationalError as err:
            self.close()
            raise StoreError(f"cannot open store {path!r}: {err}",
                             hint="check that the file and its folder are readable and writable, and "
                                  "that no other program holds a lock on it") from None
        except sqlite3.DatabaseError as err:
            self.close()
            raise StoreError(f"{path!r} is not an opcost store (SQLite says: {err})",
                             hint="pass the path of a store written by opcost, or a new file name") from None
        except BaseException:
            self.close()
            raise

    def _check_access(self, exists: bool, parent: str) -> None:
        """StoreError unless the store file (if any) and its folder are writable: SQLite
        writes its -wal and -shm side files next to the store."""
        if exists and not os.access(self.path, os.W_OK):
            raise StoreError(f"store {self.path!r} is read-only (no write permission on the file)",
                             hint="make it writable (e.g. chmod u+w), or pass another --store; `opcost export` "
                                  "and `opcost campaign status` read it as it is")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(f"the folder of store {self.path!r} is read-only (SQLite must create its -wal "
                             f"and -shm files there)",
                             hint="make the folder writable, or pass a --store in a writable folder; "
                                  "`opcost export` and `opcost campaign status` read the store as it is")

    def _check_writable(self, conn: sqlite3.Connection) -> None:
        """A cheap write probe (a no-op update, rolled back): StoreError when SQLite cannot
        write the file, e.g. an immutable file or a read-only mount. A store another process
        is writing to right now is writable: the probe does not wait for its lock."""
        with self._write_lock:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE meta SET value=value WHERE key='app'")
            except sqlite3.OperationalError as err:
                if not _is_lock_error(err):
                    raise _write_error(self.path, err) from None
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def _readable_conn(self, parent: str) -> sqlite3.Connection:
        """A read-only connection (``mode=ro``) that can read the store; when that fails
        because the folder cannot hold SQLite's side files, one that opens it immutable."""
        try:
            conn = self._conn()
            conn.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.OperationalError:
            if os.access(parent, os.W_OK | os.X_OK):
                raise
        self.release_thread()
        self._immutable = True
        wal = self.path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            log.warning("store %s is in a read-only folder and its -wal file cannot be read with it: "
                        "the latest runs may be missing; copy the store with its -wal file to a writable "
                        "folder to see them", self.path)
        return self._conn()

    def _conn(self) -> sqlite3.Connection:
        if not self._opened:
            raise StoreError("the store is not open", hint="use Store.open(path)")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            target, uri = self.path, False
            if self.readonly:
                mode = "immutable=1" if self._immutable else "mode=ro"
                target = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?" + mode
                uri = True
            conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False, uri=uri)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Per connection. In WAL mode NORMAL still survives a killed process (committed
            # transactions are in the -wal file); only an OS crash may lose the last ones.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _check_or_create(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("app") != APP_ID:
                raise StoreError(f"{self.path!r} is an SQLite file but not an opcost store "
                                 f"(its meta table has app={meta.get('app')!r})",
                                 hint="pass a store written by opcost, or a new file name")
            try:
                version = int(meta.get("schema_version", ""))
            except ValueError:
                raise StoreError(f"{self.path!r} has an unreadable schema_version "
                                 f"{meta.get('schema_version')!r}") from None
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"store {self.path!r} has schema version {version}, newer than this opcost "
                    f"understands ({SCHEMA_VERSION})",
                    hint="upgrade opcost (pip install -U opcost) to read this store, or use another --store")
            if version < SCHEMA_VERSION:
                if self.readonly:
                    raise StoreError(f"store {self.path!r} has the older schema version {version} and is "
                                     f"opened read-only, so it cannot be upgraded to {SCHEMA_VERSION}",
                                     hint="copy it to a writable folder and run a command that writes "
                                          "(e.g. `opcost campaign run`) on the copy, or read the copy")
                self._migrate(conn, version)
            if not self.readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            return
        if tables:
            raise StoreError(f"{self.path!r} is an SQLite database but not an opcost store "
                             f"(it has tables {sorted(tables)[:5]} and no opcost meta table)",
                             hint="pass a store written by opcost, or a new file name")
        if not self.create:
            raise StoreError(f"store {self.path!r} is empty",
                             hint="fill it with `opcost profile --store`, `opcost campaign run` or `opcost dataset import`")
        conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer; persistent
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 [("app", APP_ID), ("schema_version", str(SCHEMA_VERSION)),
                                  ("created_at", str(time.time()))])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Upgrade a store of an older schema ``version`` in place, one step per version,
        all in one transaction (a failure leaves the file as it was)."""
        if version < 1 or any(v not in _MIGRATIONS for v in range(version, SCHEMA_VERSION)):
            raise StoreError(f"store {self.path!r} has old schema version {version}",
                             hint="no migration exists for it; export it with the opcost that wrote it")
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for v in range(version, SCHEMA_VERSION):
                    for stmt in _MIGRATIONS[v].split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (f"migrated_from_{version}_at", str(time.time())))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close every connection (of every thread) this store opened."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        self._local = threading.local()
        self._opened = False
        self._immutable = False

    def release_thread(self) -> None:
        """Close the calling thread's connection (worker threads call this when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def __enter__(self) -> "Store":
        if not self._opened:
            self._open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self):
        return _WriteTxn(self)

    @property
    def schema_version(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    # ---------------------------------------------------------------- writing
    def add_measurement(self, m: Measurement, *, job_id: Optional[str] = None,
                        origin: str = "measured") -> int:
        """Store one measurement (and its ops) in one committed transaction; return the run id.

        With ``job_id`` of a known campaign job, that job is marked done in the same
        transaction, so a crash never leaves a stored run whose job would run again.
        Works for imported data too: no raw output, no device state, no runtime.
        """
        _check_origin(origin)
        with self._write() as conn:
            return self._insert(conn, m, job_id, origin, time.time())

    def add_measurements(self, ms: Iterable[Measurement], *, origin: str) -> List[int]:
        """Store many measurements (e.g. a dataset import) in one transaction: all or none."""
        _check_origin(origin)
        now = time.time()
        with self._write() as conn:
            return [self._insert(conn, m, None, origin, now) for m in ms]

    def _insert(self, conn: sqlite3.Connection, m: Measurement, job_id: Optional[str], origin: str,
                now: float) -> int:
        if not isinstance(m, Measurement):
            raise UsageError(f"add_measurement needs a Measurement, got {type(m).__name__}")
        out = m.output
        e2e = out.e2e
        spec = m.spec
        raw = zlib.compress(m.raw_output.encode("utf-8")) if m.raw_output else None
        self._upsert_device(conn, m.device, now)
        self._upsert_model(conn, m.model)
        runtime_id = self._runtime_id(conn, m.runtime)
        cols = ["device_serial", "model_sha256", "runtime_id", "spec", "spec_key", "delegate",
                "threads", "cpu_mask", "num_runs", "op_profiling", *_E2E_COLS, *_OUT_COLS,
                "output_version", "warnings", "state_before", "state_after",
                "max_temp_before_c", "max_temp_after_c", "thermal_wait_s", "started_at",
                "wall_s", "argv", "raw_output", "job_id", "origin", "stored_at", "extra"]
        vals = [m.device.serial, m.model.sha256, runtime_id, _json(spec.to_dict()), spec.key(),
                spec.delegate, spec.threads, spec.cpu_mask, spec.num_runs, int(spec.op_profiling),
                *[getattr(e2e, c, None) for c in _E2E_COLS],
                out.init_mem_mb, out.overall_mem_mb, out.peak_mem_mb, out.delegate_name,
                out.delegated_nodes, out.total_nodes,
                None if out.fully_delegated is None else int(out.fully_delegated),
                getattr(out, "model_size_mb", None),
                out.version, _json(list(out.warnings)) if out.warnings else None,
                _json(m.state_before.to_dict()) if m.state_before else None,
                _json(m.state_after.to_dict()) if m.state_after else None,
                m.state_before.max_temp_c() if m.state_before else None,
                m.state_after.max_temp_c() if m.state_after else None,
                m.thermal_wait_s, m.started_at, m.wall_s,
                _json(list(m.argv)) if m.argv is not None else None, raw, job_id, origin, now,
                _run_extra(m)]
        cur = conn.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES "
                           f"({', '.join('?' * len(cols))})", vals)
        run_id = int(cur.lastrowid)
        if out.ops:
            conn.executemany(
                f"INSERT INTO ops (run_id, {', '.join(_OP_COLS)}, extra) VALUES "
                f"(?, {', '.join('?' * len(_OP_COLS))}, ?)",
                [(run_id, op.section, op.index, op.node_type, op.name, op.avg_ms, op.first_ms,
                  op.start_ms, op.pct, op.cdf_pct, op.times_called, op.mem_kb, op.subgraph,
                  int(op.delegated), seq, _op_extra(op)) for seq, op in enumerate(out.ops)])
        blocks = getattr(out, "blocks", None)
        if blocks:
            conn.executemany(
                "INSERT INTO blocks (run_id, idx, block_key, avg_ms, median_ms, first_ms, count, ops, "
                "op_types, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, b.index, b.key, b.avg_ms, b.median_ms, b.first_ms, b.count, _json(list(b.ops)),
                  _json(list(b.op_types)), seq) for seq, b in enumerate(blocks)])
        if job_id is not None:
            conn.execute("UPDATE jobs SET status='done', run_id=?, finished_at=?, updated_at=?, "
                         "last_error=NULL, error_type=NULL WHERE job_id=?",
                         (run_id, now, now, job_id))
        return run_id

    def _upsert_device(self, conn: sqlite3.Connection, d: DeviceInfo, now: float) -> None:
        conn.execute(
            "INSERT INTO devices (serial, kind, model, manufacturer, soc, abi, sdk, info, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(serial) DO UPDATE SET "
            "kind=excluded.kind, model=excluded.model, manufacturer=excluded.manufacturer, "
            "soc=excluded.soc, abi=excluded.abi, sdk=excluded.sdk, info=excluded.info, "
            "last_seen=excluded.last_seen",
            (d.serial, d.kind, d.model, d.manufacturer, d.soc, d.abi, d.sdk, _json(d.to_dict()), now, now))

    def _upsert_model(self, conn: sqlite3.Connection, mr: ModelRef) -> None:
        # The first name a content hash was stored under stays; missing fields are filled in.
        conn.execute(
            "INSERT INTO models (sha256, name, path, size_bytes, source) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(sha256) DO UPDATE SET path=COALESCE(models.path, excluded.path), "
            "size_bytes=COALESCE(models.size_bytes, excluded.size_bytes), "
            "source=COALESCE(models.source, excluded.source)",
            (mr.sha256, mr.name, mr.path, mr.size_bytes, mr.source))

    def _runtime_id(self, conn: sqlite3.Connection, runtime: Dict[str, Any]) -> Optional[int]:
        if not runtime:
            return None
        key = (str(runtime.get("name") or ""), str(runtime.get("version") or ""),
               str(runtime.get("sha256") or ""))
        conn.execute("INSERT OR IGNORE INTO runtimes (name, version, sha256, info) VALUES (?, ?, ?, ?)",
                     (*key, _json(runtime)))
        row = conn.execute("SELECT id FROM runtimes WHERE name=? AND version=? AND sha256=?", key).fetchone()
        return int(row[0])

    # ---------------------------------------------------------------- reading
    def get_measurement(self, run_id: int) -> Measurement:
        """The Measurement stored as ``run_id`` (with its ops and raw output)."""
        conn = self._conn()
        conn.row_factory = sqlite3.Row
        try:
            r = conn.execute("SELECT * FROM runs WHERE id=?", (int(run_id),)).fetchone()
            if r is None:
                raise StoreError(f"no run with id {run_id} in {self.path!r}",
                                 hint="list the runs with `opcost export` or Store.runs_df()")
            dev = conn.execute("SELECT info FROM devices WHERE serial=?", (r["device_serial"],)).fetchone()
            mod = conn.execute("SELECT * FROM models WHERE sha256=?", (r["model_sha256"],)).fetchone()
            rt = None
            if r["runtime_id"] is not None:
                rt = conn.execute("SELECT info FROM runtimes WHERE id=?", (r["runtime_id"],)).fetchone()
            ops = conn.execute(f"SELECT {', '.join(_OP_COLS)}, extra FROM ops WHERE run_id=? ORDER BY seq",
                               (int(run_id),)).fetchall()
            blocks = conn.execute("SELECT idx, block_key, avg_ms, median_ms, first_ms, count, ops, op_types "
                                  "FROM blocks WHERE run_id=? ORDER BY seq", (int(run_id),)).fetchall()
        finally:
            conn.row_factory = None
        extra = _unjson(r["extra"]) or {}
        e2e = E2EStats.from_dict({**{c: r[c] for c in _E2E_COLS}, **extra.get("e2e", {})})
        op_records = []
        for o in ops:
            d = {f: o[c] for f, c in _OP_FIELD_COLS.items()}
            d["delegated"] = bool(d["delegated"])
            op_records.append(OpRecord.from_dict({**d, **(_unjson(o["extra"]) or {})}))
        output = BenchmarkOutput.from_dict(dict(
            e2e=e2e.to_dict(), model_size_mb=r["model_size_mb"],
            init_mem_mb=r["init_mem_mb"], overall_mem_mb=r["overall_mem_mb"], peak_mem_mb=r["peak_mem_mb"],
            delegate_name=r["delegate_name"], delegated_nodes=r["delegated_nodes"],
            total_nodes=r["total_nodes"],
            fully_delegated=None if r["fully_delegated"] is None else bool(r["fully_delegated"]),
            ops=[],
            version=r["output_version"],
            warnings=_unjson(r["warnings"]) or [],
        ))
        output.ops = op_records
        output.blocks = [BlockRecord(index=b["idx"], key=b["block_key"], avg_ms=b["avg_ms"],
                                     median_ms=b["median_ms"], first_ms=b["first_ms"], count=b["count"],
                                     ops=_unjson(b["ops"]) or [], op_types=_unjson(b["op_types"]) or [])
                         for b in blocks]
        for k, v in extra.get("output", {}).items():
            if hasattr(output, k):
                setattr(output, k, v)
        sb, sa = _unjson(r["state_before"]), _unjson(r["state_after"])
        m = Measurement(
            device=DeviceInfo.from_dict(json.loads(dev["info"])),
            model=ModelRef(sha256=mod["sha256"], name=mod["name"], path=mod["path"],
                           size_bytes=mod["size_bytes"], source=mod["source"]),
            spec=RunSpec.from_dict(json.loads(r["spec"])),
            output=output,
            runtime=json.loads(rt["info"]) if rt else {},
            state_before=DeviceState.from_dict(sb) if sb else None,
            state_after=DeviceState.from_dict(sa) if sa else None,
            thermal_wait_s=r["thermal_wait_s"] or 0.0,
            started_at=r["started_at"],
            wall_s=r["wall_s"],
            raw_output=zlib.decompress(r["raw_output"]).decode("utf-8") if r["raw_output"] else None,
            argv=_unjson(r["argv"]),
        )
        for k, v in extra.get("measurement", {}).items():
            if hasattr(m, k):
                setattr(m, k, v)
        return m

    def devices(self) -> List[DeviceInfo]:
        """Every device that has a stored run, by serial."""
        rows = self._conn().execute("SELECT info FROM devices ORDER BY serial").fetchall()
        return [DeviceInfo.from_dict(json.loads(r[0])) for r in rows]

    def resolve_device(self, name: str, *, unique: bool = False) -> str:
        """The serial a user's device ``name`` means: ``name`` when it is a stored serial,
        else the one stored device whose model is ``name``; ``name`` unchanged when none
        match, or when several do (their runs are pooled) unless ``unique``, which makes
        that a UsageError naming them."""
        devices = self.devices()
        if any(d.serial == name for d in devices):
            return name
        by_model = [d.serial for d in devices if d.model == name]
        if len(by_model) > 1 and unique:
            raise UsageError(f"{len(by_model)} devices in {self.path} are a {name}: {', '.join(by_model)}",
                             hint="name one of them by its serial")
        return by_model[0] if len(by_model) == 1 else name

    def device(self, serial: str) -> Optional[DeviceInfo]:
        """The stored device ``serial`` (None if there is none)."""
        return next((d for d in self.devices() if d.serial == serial), None)

    def device_model(self, serial: str) -> Optional[str]:
        """The stored model name of device ``serial`` (None if unknown)."""
        return getattr(self.device(serial), "model", None)

    def models(self) -> List[ModelRef]:
        """Every model that has a stored run, by name."""
        rows = self._conn().execute(
            "SELECT sha256, name, path, size_bytes, source FROM models ORDER BY name, sha256").fetchall()
        return [ModelRef(sha256=a, name=b, path=c, size_bytes=d, source=e) for a, b, c, d, e in rows]

    def count_runs(self, *, origin: Optional[str] = None) -> int:
        """Number of stored runs (of one ``origin`` if given)."""
        if origin is None:
            return int(self._conn().execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        return int(self._conn().execute("SELECT COUNT(*) FROM runs WHERE origin=?", (origin,)).fetchone()[0])

    def delete_runs(self, *, origin: str) -> int:
        """Delete every run (and its ops) of ``origin``, e.g. before re-importing a dataset."""
        _check_origin(origin)
        with self._write() as conn:
            return conn.execute("DELETE FROM runs WHERE origin=?", (origin,)).rowcount

    def _where(self, filters: Dict[str, Any], allowed: Dict[str, str]) -> tuple:
        clauses, params = [], []
        for name, value in filters.items():
            if value is None:
                continue
            if name not in allowed:
                raise UsageError(f"unknown filter {name!r}",
                                 hint=f"use one of: {', '.join(sorted(allowed))}")
            col = allowed[name]
            if isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
                if not values:
                    clauses.append("0")
                    continue
                clauses.append(f"{col} IN ({', '.join('?' * len(values))})")
                params.extend(values)
            else:
                clauses.append(f"{col} = ?")
                params.append(int(value) if isinstance(value, bool) else value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _runs_select(self, with_raw: bool) -> str:
        raw = ", r.raw_output" if with_raw else ""
        return ("SELECT r.id AS run_id, r.device_serial, d.kind AS device_kind, d.model AS device_model, "
                "d.soc, d.abi, d.sdk, r.model_sha256, m.name AS model_name, m.source AS model_source, "
                "m.size_bytes AS model_size_bytes, rt.name AS runtime_name, rt.version AS runtime_version, "
                "rt.sha256 AS runtime_sha256, r.spec_key, r.delegate, r.threads, r.cpu_mask, r.num_runs, "
                "r.op_profiling, " + ", ".join(f"r.{c}" for c in _E2E_COLS) + ", "
                + ", ".join(f"r.{c}" for c in _OUT_COLS) + ", r.output_version, r.warnings, r.spec, "
                "r.state_before, r.state_after, r.max_temp_before_c, r.max_temp_after_c, r.thermal_wait_s, "
                "r.started_at, r.wall_s, r.argv, r.job_id, r.origin, r.stored_at, r.extra" + raw +
                " FROM runs r JOIN devices d ON d.serial = r.device_serial "
                "JOIN models m ON m.sha256 = r.model_sha256 LEFT JOIN runtimes rt ON rt.id = r.runtime_id")

    def runs_df(self, *, include_raw: bool = False, **filters: Any):
        """One row per run, joined with device, model and runtime columns.

        Filters (a value or a list of values): device, model (name), model_sha256, delegate,
        threads, spec_key, origin, job_id, run_id, soc, device_model.
        """
        import pandas as pd

        where, params = self._where(filters, _RUN_FILTERS)
        cur = self._conn().execute(self._runs_select(include_raw) + where + " ORDER BY r.id", params)
        cols = [c[0] for c in cur.description]
        df = pd.DataFrame(cur.fetchall(), columns=cols)
        if include_raw and len(df):
            df["raw_output"] = [zlib.decompress(b).decode("utf-8") if b else None for b in df["raw_output"]]
        return df

    def ops_df(self, **filters: Any):
        """One row per op-profiling row, with the run's device, model and spec columns.

        Filters: those of ``runs_df`` plus section, node_type, delegated.
        """
        import pandas as pd

        allowed = {**_RUN_FILTERS, **_OP_FILTERS}
        where, params = self._where(filters, allowed)
        sql = ("SELECT o.run_id, r.device_serial, d.soc, r.model_sha256, m.name AS model_name, "
               "r.spec_key, r.delegate, r.threads, r.origin, o.section, o.idx AS op_index, o.node_type, "
               "o.name, o.avg_ms, o.first_ms, o.start_ms, o.pct, o.cdf_pct, o.times_called, o.mem_kb, "
               "o.subgraph, o.delegated FROM ops o JOIN runs r ON r.id = o.run_id "
               "JOIN devices d ON d.serial = r.device_serial JOIN models m ON m.sha256 = r.model_sha256"
               + where + " ORDER BY o.run_id, o.seq")
        cur = self._conn().execute(sql, params)
        return pd.DataFrame(cur.fetchall(), columns=[c[0] for c in cur.description])

    def blocks_df(self, **filters: Any):
        """One row per timed block (``block_key`` = structural key shared across networks),
        with the run's device, model and spec columns. Filters: those of ``runs_df``."""
        import pandas as pd

        where, params = self._where(filters, _RUN_FILTERS)
        sql = ("SELECT b.run_id, r.device_serial, d.soc, r.model_sha256, m.name AS model_name, "
               "r.spec_key, r.delegate, r.threads, r.origin, b.idx AS block_index, b.block_key, b.avg_ms, "
               "b.median_ms, b.first_ms, b.count, b.ops, b.op_types FROM blocks b "
               "JOIN runs r ON r.id = b.run_id JOIN devices d ON d.serial = r.device_serial "
               "JOIN models m ON m.sha256 = r.model_sha256" + where + " ORDER BY b.run_id, b.seq")
        cur = self._conn().execute(sql, params)
        return pd.DataFrame(cur.fetchall(), columns=[c[0] for c in cur.description])

    def table_df(self, table: str):
        """A whole plain table (devices, models, runtimes, jobs) as a DataFrame."""
        import pandas as pd

        if table not in ("devices", "models", "runtimes", "jobs"):
            raise UsageError(f"unknown table {table!r}", hint="use devices, models, runtimes or jobs")
        cur = self._conn().execute(f"SELECT * FROM {table}")
        return pd.DataFrame(cur.fetchall(), columns=[c[0] for c in cur.description])

    # ---------------------------------------------------------------- campaign jobs
    @contextlib.contextmanager
    def campaign_lock(self):
        """Hold ``<store>.campaign.lock`` while a campaign runs; StoreError if another
        process holds it (two runners would both take 'running' jobs). The OS releases
        the lock when the holder dies, so a crash never leaves it behind."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this OS: run unguarded
            yield
            return
        lock_path = self.path + ".campaign.lock"
        try:
            f = open(lock_path, "a+")
        except OSError as err:
            raise StoreError(f"cannot create lock file {lock_path!r}: {err}",
                             hint="the store's folder must be writable") from None
        try:
            try:
                _flock_within(f.fileno(), fcntl.LOCK_EX, CAMPAIGN_LOCK_WAIT_S)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise StoreError(f"a campaign is already running on store {self.path!r} ({holder})",
                                 hint="wait for it to finish (see `opcost campaign status`), or use "
                                      "another --store") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
            try:
                yield
            finally:
                f.seek(0)
                f.truncate()
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        finally:
            f.close()

    def campaign_runner(self) -> Optional[Dict[str, Any]]:
        """The live campaign runner holding ``<store>.campaign.lock``: {"pid": int or None,
        "since": epoch seconds it took the lock}; None when no runner is alive (also when
        the lock file does not exist). Probes without blocking and without creating or
        changing the file; needs no open connection."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this OS: unknown, say none
            return None
        lock_path = self.path + ".campaign.lock"
        try:
            f = open(lock_path, "r")
        except OSError:
            return None
        with f:
            try:
                # Shared: two status probes do not see each other as runners.
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                m = re.match(r"pid (\d+)", f.read().strip())
                return {"pid": int(m.group(1)) if m else None, "since": os.fstat(f.fileno()).st_mtime}
            except OSError:  # pragma: no cover - e.g. a file system without flock
                return None
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            return None

    def sync_jobs(self, jobs: Sequence[Dict[str, Any]], *, reset_running: bool = True,
                  retry_failed: bool = False, retry_error_types: Sequence[str] = ()) -> None:
        """Insert the jobs not yet known and put some of the listed jobs back to ``pending``:
        ``running`` ones (left by a crash) with ``reset_running``, failed ones whose
        error_type is in ``retry_error_types``, and all failed ones with ``retry_failed``
        (their attempt count restarts at 0).

        Each job is a dict with job_id, device_serial, model_sha256, model_path, spec_key,
        spec (dict) and repeat.
        """
        now = time.time()
        ids = [j["job_id"] for j in jobs]
        with self._write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO jobs (job_id, device_serial, model_sha256, model_path, spec_key, "
                "spec, repeat, status, attempts, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                [(j["job_id"], j["device_serial"], j["model_sha256"], j.get("model_path"), j["spec_key"],
                  _json(j["spec"]), int(j["repeat"]), now, now) for j in jobs])
            conds, params = [], []
            if reset_running:
                conds.append("status='running'")
            if retry_failed:
                conds.append("status='failed'")
            elif retry_error_types:
                conds.append(f"(status='failed' AND error_type IN ({', '.join('?' * len(retry_error_types))}))")
                params.extend(retry_error_types)
            if not conds:
                return
            attempts = "0" if retry_failed else "attempts"
            for chunk in _chunks(ids):
                conn.execute(
                    f"UPDATE jobs SET status='pending', attempts={attempts}, updated_at=? "
                    f"WHERE ({' OR '.join(conds)}) AND job_id IN ({', '.join('?' * len(chunk))})",
                    [now, *params, *chunk])

    def job_rows(self, job_ids: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        """job_id -> {status, attempts, last_error, error_type, device_serial, run_id, started_at}
        for known ids."""
        conn = self._conn()
        out: Dict[str, Dict[str, Any]] = {}
        for chunk in _chunks(list(job_ids)):
            rows = conn.execute(
                "SELECT job_id, status, attempts, last_error, error_type, device_serial, run_id, started_at "
                f"FROM jobs WHERE job_id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
            for jid, status, attempts, err, etype, serial, run_id, started_at in rows:
                out[jid] = {"status": status, "attempts": attempts, "last_error": err,
                            "error_type": etype, "device_serial": serial, "run_id": run_id,
                            "started_at": started_at}
        return out

    def job_runtimes(self, job_ids: Iterable[str]) -> Dict[str, Dict[str, Optional[str]]]:
        """job_id -> {"name", "version", "sha256"} of the runtime that measured each done job
        among ``job_ids`` (jobs whose run has no runtime are left out)."""
        conn = self._conn()
        out: Dict[str, Dict[str, Optional[str]]] = {}
        for chunk in _chunks(list(job_ids)):
            rows = conn.execute(
                "SELECT j.job_id, rt.name, rt.version, rt.sha256 FROM jobs j JOIN runs r ON r.id = j.run_id "
                "JOIN runtimes rt ON rt.id = r.runtime_id WHERE j.status='done' "
                f"AND j.job_id IN ({', '.join('?' * len(chunk))})", chunk).fetchall()
            for jid, name, version, sha in rows:
                out[jid] = {"name": name or None, "version": version or None, "sha256": sha or None}
        return out

    def jobs_pending(self, job_ids: Sequence[str]) -> None:
        """Put jobs back to ``pending`` (attempts from 0), e.g. to measure done ones again;
        their earlier runs stay in the store."""
        now = time.time()
        with self._write() as conn:
            for chunk in _chunks(list(job_ids)):
                conn.execute(
                    "UPDATE jobs SET status='pending', attempts=0, updated_at=? "
                    f"WHERE job_id IN ({', '.join('?' * len(chunk))})", [now, *chunk])

    def job_started(self, job_id: str) -> None:
        """Mark a job running and count the attempt."""
        now = time.time()
        with self._write() as conn:
            conn.execute("UPDATE jobs SET status='running', attempts=attempts+1, started_at=?, updated_at=? "
                         "WHERE job_id=?", (now, now, job_id))

    def job_attempt(self, job_id: str) -> None:
        """Count one more attempt of a running job (a retry after a transient error)."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET attempts=attempts+1, updated_at=? WHERE job_id=?",
                         (time.time(), job_id))

    def jobs_failed(self, job_ids: Sequence[str], reason: str, error_type: Optional[str] = None) -> None:
        """Mark jobs failed with a one-line reason."""
        now = time.time()
        with self._write() as conn:
            for chunk in _chunks(list(job_ids)):
                conn.execute(
                    "UPDATE jobs SET status='failed', last_error=?, error_type=?, finished_at=?, updated_at=? "
                    f"WHERE job_id IN ({', '.join('?' * len(chunk))})", [reason, error_type, now, now, *chunk])


class _WriteTxn:
    """One write transaction on the calling thread's connection, serialised in-process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._write_lock.acquire()
        try:
            self.conn = self.store._conn()
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            self.store._write_lock.release()
            if not _is_write_error(err):
                raise
            raise _write_error(self.store.path, err) from None
        except BaseException:
            self.store._write_lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error as err:
                    self._rollback()
                    raise _write_error(self.store.path, err) from None
            else:
                self._rollback()
                if exc is not None and _is_write_error(exc):
                    # e.g. "attempt to write a readonly database" from an INSERT: name the store
                    raise _write_error(self.store.path, exc) from None
        finally:
            self.store._write_lock.release()

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:  # pragma: no cover - the transaction is gone with the error
            pass


def _check_origin(origin: Any) -> None:
    if not isinstance(origin, str) or not origin:
        raise UsageError(f"origin must be a non-empty string such as 'measured' or 'dataset:NAME', got {origin!r}")


def _chunks(items: Sequence[Any], size: int = _SQL_PARAMS_PER_QUERY):
    for i in range(0, len(items), size):
        yield items[i:i + size]


EXPORT_FORMATS = ("csv", "parquet")


def export(store: Store, out_dir: str, fmt: str = "csv") -> List[str]:
    """Write runs, ops, devices and models (and blocks, when timed) of ``store`` to ``out_dir`` as CSV or Parquet.

    Returns the written paths. Raw benchmark output is not exported (it stays in the store).
    """
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", hint="use csv or parquet")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create output folder {out_dir!r}: {err}",
                         hint="pass a writable --out folder") from None
    tables = {
        "runs": store.runs_df(),
        "ops": store.ops_df(),
        "devices": store.table_df("devices"),
        "models": store.table_df("models"),
    }
    blocks = store.blocks_df()
    if len(blocks):  # only stores with per-block times (--per-block) get a blocks file
        tables["blocks"] = blocks
    paths = []
    for name, df in tables.items():
        path = os.path.join(out_dir, f"{name}.{fmt}")
        try:
            if fmt == "csv":
                df.to_csv(path, index=False)
            else:
                df.to_parquet(path, index=False, engine="pyarrow")
        except OSError as err:
            raise UsageError(f"cannot write {path!r}: {err}", hint="pass a writable --out folder") from None
        paths.append(path)
    return paths
