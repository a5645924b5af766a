"""Plain data shared by measuring, storing and modelling.

Times are milliseconds (``*_ms``), memory megabytes (``*_mb``) unless the name says
otherwise. All records are dataclasses that round-trip through ``to_dict``/``from_dict``
so they can be stored as JSON and printed with ``--json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")


def _from_dict(cls, data: Dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class RunSpec:
    """How to run one model once: the settings a measurement depends on.

    ``delegate``: ``cpu`` (plain TFLite kernels, XNNPACK off), ``xnnpack``, ``gpu`` or
    ``nnapi``. ``cpu_mask`` is a hex affinity mask for ``taskset`` (e.g. ``"f0"``).
    ``timeout_s`` is the hard wall-clock limit of the whole run on the device.
    """

    delegate: str = "xnnpack"
    threads: int = 1
    cpu_mask: Optional[str] = None
    gpu_precision: str = "fp16"  # fp16 or fp32; only for delegate=gpu
    warmup_runs: int = 1
    num_runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 150.0
    warmup_min_secs: float = 0.5
    op_profiling: bool = False
    report_peak_memory: bool = True
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        from opcost.errors import UsageError

        if self.delegate not in DELEGATES:
            raise UsageError(f"unknown delegate {self.delegate!r}",
                             hint=f"use one of: {', '.join(DELEGATES)}")
        if self.threads < 1:
            raise UsageError(f"threads must be >= 1, got {self.threads}")
        if self.num_runs < 1:
            raise UsageError(f"runs must be >= 1, got {self.num_runs}")
        if self.warmup_runs < 0:
            raise UsageError(f"warmup must be >= 0, got {self.warmup_runs}")
        if self.gpu_precision not in ("fp16", "fp32"):
            raise UsageError(f"gpu precision must be fp16 or fp32, got {self.gpu_precision!r}")
        if self.cpu_mask is not None:
            try:
                if int(self.cpu_mask, 16) <= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(f"cpu mask {self.cpu_mask!r} is not a positive hex number",
                                 hint="e.g. --cpu-mask f0 for cores 4-7") from None
        if self.timeout_s <= 0:
            raise UsageError(f"timeout_s must be > 0, got {self.timeout_s}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunSpec":
        return _from_dict(cls, data)

    def key(self) -> str:
        """Stable short hash of the settings that change the measurement (not timeout)."""
        d = self.to_dict()
        d.pop("timeout_s")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class E2EStats:
    """End-to-end latency statistics of the regular (non-warm-up) runs, in ms."""

    count: int
    mean_ms: float
    std_ms: Optional[float] = None
    min_ms: Optional[float] = None
    max_ms: Optional[float] = None
    median_ms: Optional[float] = None
    p5_ms: Optional[float] = None
    p95_ms: Optional[float] = None
    first_ms: Optional[float] = None
    init_ms: Optional[float] = None
    warmup_mean_ms: Optional[float] = None
    warmup_count: Optional[int] = None
    warmup_first_ms: Optional[float] = None  # the very first inference (first warm-up run)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "E2EStats":
        return _from_dict(cls, data)


@dataclass
class OpRecord:
    """One row of an op-profiling table.

    ``section`` is ``"init"`` (Benchmark Initialization) or ``"run"`` (regular runs).
    ``node_type`` is the TFLite builtin (``CONV_2D``) or, for delegate rows, the delegate's
    kernel description (``Convolution (NHWC, F32) IGEMM``); ``delegated`` tells which.
    """

    node_type: str
    name: str
    avg_ms: float
    first_ms: Optional[float] = None
    start_ms: Optional[float] = None
    pct: Optional[float] = None
    cdf_pct: Optional[float] = None
    mem_kb: Optional[float] = None
    times_called: Optional[int] = None
    index: Optional[int] = None
    section: str = "run"
    subgraph: int = 0
    delegated: bool = False
    attrs: Dict[str, Any] = field(default_factory=dict)  # source-specific (e.g. dataset op features)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "OpRecord":
        return _from_dict(cls, data)


@dataclass
class BlockRecord:
    """The time of one block of a network (``models_zoo.graph.Block``) run on its own,
    sliced into a standalone model. ``key`` is the block's structural key (shared by
    identical blocks of different networks); ``ops`` its op indices in the network."""

    index: int
    key: str
    avg_ms: float
    ops: List[int] = field(default_factory=list)
    op_types: List[str] = field(default_factory=list)
    median_ms: Optional[float] = None
    first_ms: Optional[float] = None
    count: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BlockRecord":
        return _from_dict(cls, data)


@dataclass
class BenchmarkOutput:
    """Everything a benchmark run printed that we understand."""

    e2e: E2EStats
    init_mem_mb: Optional[float] = None
    overall_mem_mb: Optional[float] = None
    peak_mem_mb: Optional[float] = None
    delegate_name: Optional[str] = None
    delegated_nodes: Optional[int] = None
    total_nodes: Optional[int] = None
    fully_delegated: Optional[bool] = None
    ops: List[OpRecord] = field(default_factory=list)
    version: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    model_size_mb: Optional[float] = None  # "The input model file size (MB): ..." as the tool saw it
    blocks: List[BlockRecord] = field(default_factory=list)  # per-block times (host slicing)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        return d

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BenchmarkOutput":
        data = dict(data)
        data["e2e"] = E2EStats.from_dict(data["e2e"])
        data["ops"] = [OpRecord.from_dict(o) for o in data.get("ops", [])]
        data["blocks"] = [BlockRecord.from_dict(b) for b in data.get("blocks", [])]
        return _from_dict(cls, data)


@dataclass
class DeviceInfo:
    """What identifies and describes a device (phone or host)."""

    serial: str
    kind: str = "android"  # android | local
    model: Optional[str] = None
    manufacturer: Optional[str] = None
    soc: Optional[str] = None
    abi: Optional[str] = None
    sdk: Optional[int] = None
    cpu_clusters: List[Dict[str, Any]] = field(default_factory=list)  # [{"cpus": [0,1,2,3], "max_khz": ...}]
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DeviceInfo":
        return _from_dict(cls, data)


@dataclass
class DeviceState:
    """A snapshot of the device's thermal and power state around a run."""

    governors: Dict[str, str] = field(default_factory=dict)       # cpuN -> governor
    cur_freq_khz: Dict[str, int] = field(default_factory=dict)    # cpuN -> kHz
    max_freq_khz: Dict[str, int] = field(default_factory=dict)
    temps_c: Dict[str, float] = field(default_factory=dict)       # thermal zone type -> deg C
    battery_temp_c: Optional[float] = None
    battery_level_pct: Optional[int] = None
    timestamp: Optional[float] = None

    def max_temp_c(self) -> Optional[float]:
        vals = list(self.temps_c.values())
        if self.battery_temp_c is not None:
            vals.append(self.battery_temp_c)
        return max(vals) if vals else None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DeviceState":
        return _from_dict(cls, data)


@dataclass
class ModelRef:
    """A model file identified by its content."""

    sha256: str
    name: str
    path: Optional[str] = None
    size_bytes: Optional[int] = None
    source: Optional[str] = None  # zoo family / generator / user

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelRef":
        return _from_dict(cls, data)


@dataclass
class Measurement:
    """One measured (model, device, spec): the unit that is committed to the store."""

    device: DeviceInfo
    model: ModelRef
    spec: RunSpec
    output: BenchmarkOutput
    runtime: Dict[str, Any] = field(default_factory=dict)  # {"name", "version", "sha256"}
    state_before: Optional[DeviceState] = None
    state_after: Optional[DeviceState] = None
    thermal_wait_s: float = 0.0
    started_at: Optional[float] = None
    wall_s: Optional[float] = None
    raw_output: Optional[str] = None
    argv: Optional[List[str]] = None

    def to_dict(self, include_raw: bool = False) -> Dict[str, Any]:
        d = {
            "device": self.device.to_dict(),
            "model": self.model.to_dict(),
            "spec": self.spec.to_dict(),
            "output": self.output.to_dict(),
            "runtime": self.runtime,
            "state_before": self.state_before.to_dict() if self.state_before else None,
            "state_after": self.state_after.to_dict() if self.state_after else None,
            "thermal_wait_s": self.thermal_wait_s,
            "started_at": self.started_at,
            "wall_s": self.wall_s,
            "argv": self.argv,
        }
        if include_raw:
            d["raw_output"] = self.raw_output
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Measurement":
        return cls(
            device=DeviceInfo.from_dict(d["device"]),
            model=ModelRef.from_dict(d["model"]),
            spec=RunSpec.from_dict(d["spec"]),
            output=BenchmarkOutput.from_dict(d["output"]),
            runtime=d.get("runtime") or {},
            state_before=DeviceState.from_dict(d["state_before"]) if d.get("state_before") else None,
            state_after=DeviceState.from_dict(d["state_after"]) if d.get("state_after") else None,
            thermal_wait_s=d.get("thermal_wait_s", 0.0),
            started_at=d.get("started_at"),
            wall_s=d.get("wall_s"),
            raw_output=d.get("raw_output"),
            argv=d.get("argv"),
        )


def sha256_file(path: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            h.update(block)
    return h.hexdigest()
