"""Loaders for the ganesan2020 phone latency dataset (data/ganesan2020).

Source: the public repository of "A Case for Generalizable DNN Cost Models for Mobile
Devices" (Ganesan et al., IISWC 2020), folder ``cost_model/``, Apache-2.0.

Layout (found recursively under a directory, so larger copies of the dataset work too):

- ``mobileData/<Build.MODEL>_<n>.txt``: one file per device run. CSV without header,
  one row per network (122 rows), one column per repeated run (30), milliseconds.
  Single-thread CPU TFLite (Java interpreter), int8 dynamic-range weights, 224x224,
  batch 1. The app did no warm-up run: the first run of a row is often 10-180% slower.
- ``onnxEmbeddings.csv``: one row per network (118), 13 numbers per layer:
  one-hot op [conv, dwconv, add/skip, relu, pool], input size, output size, input
  channels, output channels, kernel, stride, padding, FLOPs.
- ``Mob_list.csv`` / ``CpuFreqRAM.csv``: device -> CPU core name, GHz, RAM (GB).

Networks 0-99 are random MobileNetV2-style networks, 100-117 public networks;
rows 118-121 (EfficientNet B0-B3) have no embedding and are not used by the paper, so
they are dropped.

Everything here is a pure function of file text except :func:`load` / :func:`find_files`,
which read the directory.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from opcost.errors import DatasetError

log = logging.getLogger(__name__)

N_NETWORKS = 118          # rows with an embedding; rows 118-121 (EfficientNet) are dropped
N_RANDOM_NETWORKS = 100   # rows 0-99 are random networks, 100-117 public networks
LAYER_WIDTH = 13
OP_TYPES = ("conv", "dwconv", "add", "relu", "pool")

# Statistic of the repeated runs of one (device, network) row.
#  median_after_first: median of runs 2..n. The app ran no warm-up, so run 1 carries
#    one-time costs (page faults, caches, frequency ramp-up); the median of the rest is
#    insensitive to the occasional slow run (background work, a migration to a little
#    core) that the mean would absorb. This is the ground truth we use by default.
#  min_after_first: fastest regular run (most optimistic).
#  mean: mean of all runs, what the paper's code uses (includes the cold first run).
STATISTICS = ("median_after_first", "min_after_first", "mean_after_first", "mean")
DEFAULT_STATISTIC = "median_after_first"

HINT = ("give the path of a copy of the ganesan2020 dataset (`--data DIR`, or the PATH of `opcost dataset "
        "import`): a folder with mobileData/*.txt and onnxEmbeddings.csv (see data/ganesan2020)")


def network_names(n: int = N_NETWORKS) -> List[str]:
    """Stable ids of the networks in row order: ``rand000``..``rand099``, ``pub100``..."""
    return [f"rand{i:03d}" if i < N_RANDOM_NETWORKS else f"pub{i:03d}" for i in range(n)]


def phone_model_of(device: str) -> str:
    """Phone model of a device-run name: the file stem without a trailing ``_<n>``."""
    base = os.path.basename(device)
    if base.endswith(".txt"):
        base = base[:-4]
    return re.sub(r"_\d+$", "", base)


def parse_latency_runs(text: str, source: str = "<text>", n_networks: int = N_NETWORKS) -> List[np.ndarray]:
    """Rows of one mobileData file -> list (one per network) of run latencies in ms.

    Only the first ``n_networks`` rows are kept. Raises DatasetError on a short file,
    a non-number or a non-positive latency.
    """
    rows: List[np.ndarray] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if len(rows) >= n_networks:
            break
        cells = [c.strip() for c in line.split(",") if c.strip() != ""]
        try:
            vals = np.array([float(c) for c in cells], dtype=float)
        except ValueError:
            raise DatasetError(f"{source}: line {lineno} is not a list of numbers: {line[:80]!r}",
                               hint="each line must be comma-separated run latencies in ms; " + HINT) from None
        if vals.size == 0:
            raise DatasetError(f"{source}: line {lineno} has no values", hint=HINT)
        if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
            raise DatasetError(f"{source}: line {lineno} has a non-positive or non-finite latency",
                               hint="latencies must be > 0 ms; remove or re-measure this device run")
        rows.append(vals)
    if len(rows) < n_networks:
        raise DatasetError(f"{source}: has {len(rows)} network rows, expected at least {n_networks}",
                           hint="the file is truncated or not a ganesan2020 latency file; " + HINT)
    return rows


def row_statistic_ms(runs: np.ndarray, statistic: str = DEFAULT_STATISTIC) -> float:
    """One latency (ms) from the repeated runs of one network on one device."""
    runs = np.asarray(runs, dtype=float)
    regular = runs[1:] if runs.size > 1 else runs
    if statistic == "median_after_first":
        return float(np.median(regular))
    if statistic == "min_after_first":
        return float(np.min(regular))
    if statistic == "mean_after_first":
        return float(np.mean(regular))
    if statistic == "mean":
        return float(np.mean(runs))
    raise DatasetError(f"unknown latency statistic {statistic!r}", hint=f"use one of: {', '.join(STATISTICS)}")


def row_spread(runs: np.ndarray) -> float:
    """Relative spread (std / mean) of the regular runs (all but the first) of one
    network on one device: what ``benchmark_model`` reports as std / avg."""
    runs = np.asarray(runs, dtype=float)
    regular = runs[1:] if runs.size > 1 else runs
    mean = float(np.mean(regular))
    return float(np.std(regular) / mean) if mean > 0 else float("nan")


def parse_embeddings(text: str, source: str = "onnxEmbeddings.csv") -> List[np.ndarray]:
    """onnxEmbeddings.csv -> one (n_layers, 13) array per network (trailing padding dropped)."""
    nets: List[np.ndarray] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        while cells and cells[-1] == "":
            cells.pop()
        try:
            vals = np.array([float(c) for c in cells], dtype=float)
        except ValueError:
            raise DatasetError(f"{source}: line {lineno} is not a list of numbers", hint=HINT) from None
        if vals.size == 0 or vals.size % LAYER_WIDTH:
            raise DatasetError(f"{source}: line {lineno} has {vals.size} values, not a multiple of {LAYER_WIDTH}",
                               hint="each layer is 13 numbers (5 one-hot op types + 8 shape values); " + HINT)
        layers = vals.reshape(-1, LAYER_WIDTH)
        layers = layers[np.any(layers != 0, axis=1)]  # zero padding
        nets.append(layers)
    if not nets:
        raise DatasetError(f"{source}: no networks", hint=HINT)
    return nets


def network_features(layers: np.ndarray) -> Dict[str, float]:
    """Structural features of one network from its (n_layers, 13) layer table."""
    op = layers[:, :5]
    in_sz, out_sz, cin, cout, kern, stride, _pad, flops = (layers[:, 5 + i] for i in range(8))
    feats: Dict[str, float] = {"n_layers": float(len(layers))}
    for j, name in enumerate(OP_TYPES):
        sel = op[:, j] > 0.5
        feats[f"n_{name}"] = float(sel.sum())
        feats[f"mflops_{name}"] = float(flops[sel].sum() / 1e6)
    conv = op[:, 0] > 0.5
    dw = op[:, 1] > 0.5
    feats["mflops_total"] = float(flops.sum() / 1e6)
    # Bytes moved per layer (activations in + out), a proxy for memory-bound cost.
    act = (in_sz ** 2) * cin + (out_sz ** 2) * cout
    feats["mact_total"] = float(act.sum() / 1e6)
    feats["mact_conv"] = float(act[conv].sum() / 1e6)
    feats["mact_dwconv"] = float(act[dw].sum() / 1e6)
    weights = np.where(conv, kern ** 2 * cin * cout, np.where(dw, kern ** 2 * cin, 0.0))
    feats["mparams"] = float(weights.sum() / 1e6)
    feats["n_conv_1x1"] = float(np.sum(conv & (kern == 1)))
    feats["n_conv_kxk"] = float(np.sum(conv & (kern > 1)))
    feats["n_stride2"] = float(np.sum(stride >= 2))
    feats["max_channels"] = float(max(cin.max(), cout.max()))
    feats["mean_cout_conv"] = float(cout[conv].mean()) if conv.any() else 0.0
    for j, name in enumerate(("conv", "dwconv")):
        sel = op[:, j] > 0.5
        for res in (112, 56, 28, 14, 7):
            feats[f"mflops_{name}_at{res}"] = float(flops[sel & (np.abs(out_sz - res) < res / 2)].sum() / 1e6)
    return feats


def features_matrix(nets: Sequence[np.ndarray]) -> Tuple[np.ndarray, List[str]]:
    """Per-network feature dicts stacked -> (n_networks, n_features) array and column names."""
    dicts = [network_features(layers) for layers in nets]
    names = list(dicts[0])
    return np.array([[d[n] for n in names] for d in dicts], dtype=float), names


def parse_hardware(text: str, source: str = "Mob_list.csv") -> Dict[str, Dict[str, object]]:
    """Mob_list.csv / CpuFreqRAM.csv -> {device: {"cpu", "ghz", "ram_gb"}} (keyed by the
    name as written; use :func:`phone_model_of` to match device runs)."""
    out: Dict[str, Dict[str, object]] = {}
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or header[0].strip().lower() != "device":
        raise DatasetError(f"{source}: expected a header starting with 'Device'", hint=HINT)
    for lineno, row in enumerate(reader, start=2):
        if not row or not row[0].strip():
            continue
        if len(row) < 4:
            raise DatasetError(f"{source}: line {lineno} has {len(row)} columns, expected Device,CPU,GHz,RAM",
                               hint=HINT)
        try:
            ghz = float(row[2])
            ram = float(row[3])
        except ValueError:
            raise DatasetError(f"{source}: line {lineno}: frequency/RAM are not numbers: {row[:4]}",
                               hint=HINT) from None
        out[row[0].strip()] = {"cpu": row[1].strip(), "ghz": ghz, "ram_gb": ram}
    return out


@dataclass
class GanesanData:
    """The dataset as arrays. ``latency_ms[i, j]``: device run ``devices[i]``, network
    ``networks[j]``, reduced over the repeated runs with ``statistic``."""

    latency_ms: np.ndarray
    devices: List[str]
    phone_models: List[str]
    networks: List[str]
    network_features: np.ndarray
    feature_names: List[str]
    statistic: str = DEFAULT_STATISTIC
    hardware: Dict[str, Dict[str, object]] = field(default_factory=dict)
    source_dir: Optional[str] = None
    # relative spread (std / mean) of each cell's regular runs, see row_spread
    run_spread: Optional[np.ndarray] = None
    # "<path>: <what is wrong>" of each latency file left out (load(skip_bad_files=True))
    skipped_files: List[str] = field(default_factory=list)

    def summary(self) -> Dict[str, object]:
        out = {
            "dataset": "ganesan2020",
            "n_device_runs": len(self.devices),
            "n_phone_models": len(set(self.phone_models)),
            "n_networks": len(self.networks),
            "statistic": self.statistic,
            "latency_ms_range": [float(self.latency_ms.min()), float(self.latency_ms.max())],
        }
        if self.skipped_files:
            out["skipped_files"] = list(self.skipped_files)
        return out


def find_files(data_dir: str) -> Dict[str, object]:
    """Locate the dataset files under ``data_dir`` (recursively).

    Latency files are the ``*.txt`` files in any folder named ``mobileData`` (or, if
    there is none, every ``*.txt`` file). Returns {"latency": [paths], "embeddings": path,
    "hardware": [paths]}.
    """
    if not os.path.isdir(data_dir):
        raise DatasetError(f"dataset folder {data_dir!r} does not exist", hint=HINT)
    in_mobile, any_txt, emb, hw = [], [], [], []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith(".txt"):
                any_txt.append(path)
                if os.path.basename(root) == "mobileData":
                    in_mobile.append(path)
            elif name == "onnxEmbeddings.csv":
                emb.append(path)
            elif name in ("Mob_list.csv", "CpuFreqRAM.csv"):
                hw.append(path)
    latency = in_mobile or [p for p in any_txt if not os.path.basename(p).upper().startswith(("LICENSE", "README"))]
    if not latency:
        raise DatasetError(f"no latency files (mobileData/*.txt) under {data_dir!r}", hint=HINT)
    if not emb:
        raise DatasetError(f"no onnxEmbeddings.csv under {data_dir!r}", hint=HINT)
    return {"latency": latency, "embeddings": emb[0], "hardware": hw}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror}", hint=HINT) from None


def _layer_tables(path: str, n_networks: int) -> Dict[str, np.ndarray]:
    nets = parse_embeddings(_read(path), path)
    if len(nets) < n_networks:
        raise DatasetError(f"{path}: has {len(nets)} networks, expected {n_networks}", hint=HINT)
    return dict(zip(network_names(n_networks), nets[:n_networks]))


def layer_tables(data_dir: Optional[str] = None, n_networks: int = N_NETWORKS) -> Dict[str, np.ndarray]:
    """Network id (``rand000``.., ``pub100``..) -> its (n_layers, 13) layer table, from
    ``onnxEmbeddings.csv`` under ``data_dir`` (default: the copy in data/)."""
    return _layer_tables(find_files(data_dir or default_data_dir())["embeddings"], n_networks)


def load(data_dir: str, statistic: str = DEFAULT_STATISTIC, n_networks: int = N_NETWORKS,
         skip_bad_files: bool = False) -> GanesanData:
    """Read the dataset under ``data_dir`` into a :class:`GanesanData`.

    ``skip_bad_files``: a latency file that cannot be used (truncated, a non-number, a
    non-positive latency) is left out with a warning and listed in ``skipped_files``,
    instead of stopping the load."""
    if statistic not in STATISTICS:
        raise DatasetError(f"unknown latency statistic {statistic!r}", hint=f"use one of: {', '.join(STATISTICS)}")
    files = find_files(data_dir)
    feats, feat_names = features_matrix(list(_layer_tables(files["embeddings"], n_networks).values()))

    stems = [os.path.basename(p)[:-4] for p in files["latency"]]
    dup = {s for s in stems if stems.count(s) > 1}
    devices, rows, spreads, skipped = [], [], [], []
    for path, stem in zip(files["latency"], stems):
        try:
            runs = parse_latency_runs(_read(path), path, n_networks)
        except DatasetError as err:
            if not skip_bad_files:
                raise
            log.warning("left out %s", err.message)
            skipped.append(err.message)
            continue
        rows.append([row_statistic_ms(r, statistic) for r in runs])
        spreads.append([row_spread(r) for r in runs])
        # the same file name in two folders: keep both, named by relative path
        devices.append(os.path.relpath(path, data_dir)[:-4] if stem in dup else stem)
    if not rows:
        raise DatasetError(f"no usable latency file under {data_dir!r} ({len(skipped)} skipped)", hint=HINT)
    hardware: Dict[str, Dict[str, object]] = {}
    for path in files["hardware"]:
        for name, info in parse_hardware(_read(path), path).items():
            hardware.setdefault(name, info)
    return GanesanData(
        latency_ms=np.array(rows, dtype=float),
        devices=devices,
        phone_models=[phone_model_of(os.path.basename(d)) for d in devices],
        networks=network_names(n_networks),
        network_features=feats,
        feature_names=feat_names,
        statistic=statistic,
        hardware=hardware,
        source_dir=os.path.abspath(data_dir),
        run_spread=np.array(spreads, dtype=float),
        skipped_files=skipped,
    )


def default_data_dir() -> str:
    """The copy shipped with the project: <repo>/data/ganesan2020."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "data", "ganesan2020"))
