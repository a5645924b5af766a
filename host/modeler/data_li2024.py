"""Loaders for the li2024 public measurements ("A Benchmark for ML Inference Latency on
Mobile Devices", EdgeSys 2024; MIT). Pure: paths in, tidy DataFrames out.

Source units are microseconds; the tidy frames keep them (``*_us``) and add ``*_ms``.
Devices and run configurations are discovered from the column names
(``<device>|<cores or gpu>|<float|quant>|<mean|std>`` and ``<device>|gpu|float`` /
``<device>|gpu|kernel``); extra devices and columns are tolerated.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from opcost.errors import DatasetError

# The repository renamed its files (dataset/tflite_cnn_e2e.csv became
# dataset/cnn/tflite_cnn_real_e2e.csv, same content); either name is accepted.
E2E_CNN_FILE = "tflite_cnn_e2e.csv"
OPS_GPU_FILE = "tflite_cnn_ops_gpu.csv"
OPS_GPU_NAMES = (OPS_GPU_FILE, "tflite_cnn_real_ops_gpu.csv")
E2E_FILES = {   # family -> accepted names of its end-to-end file
    "cnn": (E2E_CNN_FILE, "tflite_cnn_real_e2e.csv"),
    "nas": ("tflite_nas_e2e.csv", "tflite_cnn_synthetic_e2e.csv"),
    "transformer": ("tflite_transformer_e2e.csv",),
}
SOURCE = "li2024"
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"

_FEATURE_KEYS = ("Input_shape", "Input_channel", "Output_shape", "Stride", "Kernel", "Filter",
                 "Group", "FLOPS")


def find_file(data_dir: str, names: Union[str, Sequence[str]]) -> str:
    """Path of the file called ``names`` (or any of them: the first name found wins)
    under ``data_dir``, searched recursively; the shallowest match wins. Raises
    DatasetError when there is none."""
    if not os.path.isdir(data_dir):
        raise DatasetError(f"li2024 data directory {data_dir!r} does not exist",
                           hint="pass --data DIR pointing at a copy of the li2024 repository's data")
    names = (names,) if isinstance(names, str) else tuple(names)
    hits: List[Tuple[int, int, str]] = []
    for root, _dirs, files in os.walk(data_dir):
        for rank, name in enumerate(names):
            if name in files:
                path = os.path.join(root, name)
                hits.append((rank, path.count(os.sep), path))
    if not hits:
        shown = " or ".join(names)
        raise DatasetError(f"no {shown} under {data_dir!r}",
                           hint=f"the li2024 data folder must contain {shown} (any sub-folder)")
    return min(hits)[2]


def _read_csv(path: str) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise DatasetError(f"li2024 file {path!r} is missing",
                           hint="check the path, or pass the data directory with --data DIR")
    with open(path, "rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise DatasetError(f"{path!r} is a Git LFS pointer, not the data",
                               hint="fetch the files: `git lfs install && git lfs pull` in the li2024 checkout")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path!r} is not a readable CSV file: {err}",
                           hint="re-copy the file from the li2024 repository") from None
    if "model" not in df.columns:
        raise DatasetError(f"{path!r} has no 'model' column (columns: {list(df.columns)[:6]}...)",
                           hint="this does not look like a li2024 CSV file")
    return df


def _tidy(parts: List[pd.DataFrame], path: str) -> pd.DataFrame:
    """Concatenate per-device parts, drop missing / non-positive times, add ms and provenance."""
    out = pd.concat(parts, ignore_index=True)
    out = out[out["latency_us"].notna() & (out["latency_us"] > 0)].reset_index(drop=True)
    out["latency_ms"] = out["latency_us"] / 1000.0
    out["source"] = SOURCE
    out["source_file"] = os.path.basename(path)
    return out


def load_e2e(path: str) -> pd.DataFrame:
    """Tidy end-to-end latencies: one row per (model, device, config, precision).

    Columns: model, flops, size_bytes, device, config (``gpu``, ``1large``, ...), precision
    (``float``/``quant``), latency_us, std_us, latency_ms, source, source_file.
    Rows with no mean value are dropped."""
    df = _read_csv(path)
    triples: Dict[tuple, Dict[str, str]] = {}
    for col in df.columns:
        parts = str(col).split("|")
        if len(parts) == 4 and parts[3] in ("mean", "std"):
            triples.setdefault(tuple(parts[:3]), {})[parts[3]] = col
    if not triples:
        raise DatasetError(f"{path!r} has no '<device>|<config>|<precision>|mean' columns",
                           hint="this does not look like a li2024 end-to-end CSV file")
    base = pd.DataFrame({
        "model": df["model"].astype(str),
        "flops": pd.to_numeric(df["FLOPS"], errors="coerce") if "FLOPS" in df else float("nan"),
        "size_bytes": pd.to_numeric(df["size"], errors="coerce") if "size" in df else float("nan"),
    })
    parts = []
    for (device, config, precision), cols in triples.items():
        if "mean" not in cols:
            continue
        part = base.copy()
        part["device"] = device
        part["config"] = config
        part["precision"] = precision
        part["latency_us"] = pd.to_numeric(df[cols["mean"]], errors="coerce")
        part["std_us"] = pd.to_numeric(df[cols["std"]], errors="coerce") if "std" in cols else float("nan")
        parts.append(part)
    return _tidy(parts, path)


def parse_feature(text) -> Dict[str, object]:
    """The li2024 ``feature`` cell (a Python-dict literal) as a dict; '-' becomes None."""
    if isinstance(text, dict):
        raw = text
    else:
        try:
            raw = ast.literal_eval(str(text))
        except (ValueError, SyntaxError):
            raise DatasetError(f"cannot parse li2024 op feature {str(text)[:80]!r}",
                               hint="the feature column must hold a Python dict literal") from None
        if not isinstance(raw, dict):
            raise DatasetError(f"li2024 op feature {str(text)[:80]!r} is not a dict")
    out: Dict[str, object] = {}
    for k, v in raw.items():
        out[k] = None if v in ("-", "", None) else v
    return out


def load_ops_gpu(path: str) -> pd.DataFrame:
    """Tidy per-op GPU timings: one row per (model, op, device).

    Columns: model, op_index (order within the model), operation, feature (dict),
    device, latency_us, latency_ms, kernel_name, source, source_file. Devices come from
    the ``<device>|gpu|float`` columns; ops with no time on a device are dropped for it."""
    df = _read_csv(path)
    for col in ("operation", "feature"):
        if col not in df.columns:
            raise DatasetError(f"{path!r} has no {col!r} column",
                               hint="this does not look like a li2024 per-op CSV file")
    devices: List[str] = []
    for col in df.columns:
        parts = str(col).split("|")
        if len(parts) == 3 and parts[1] == "gpu" and parts[2] == "float":
            devices.append(parts[0])
    if not devices:
        raise DatasetError(f"{path!r} has no '<device>|gpu|float' time columns",
                           hint="this does not look like a li2024 per-op GPU CSV file")
    base = pd.DataFrame({
        "model": df["model"].astype(str),
        "op_index": df.groupby("model", sort=False).cumcount(),
        "operation": df["operation"].astype(str),
        "feature": df["feature"].map(parse_feature),
    })
    parts = []
    for device in devices:
        part = base.copy()
        part["device"] = device
        part["latency_us"] = pd.to_numeric(df[f"{device}|gpu|float"], errors="coerce")
        kcol = f"{device}|gpu|kernel"
        part["kernel_name"] = df[kcol].astype("string") if kcol in df.columns else pd.NA
        parts.append(part)
    return _tidy(parts, path)


def load_gpu_dataset(data_dir: str) -> Dict[str, pd.DataFrame]:
    """Both CNN files under ``data_dir``: ``{"ops": load_ops_gpu(...), "e2e": GPU float rows
    of load_e2e(...)}``."""
    ops = load_ops_gpu(find_file(data_dir, OPS_GPU_NAMES))
    e2e = load_e2e(find_file(data_dir, E2E_FILES["cnn"]))
    e2e = e2e[(e2e["config"] == "gpu") & (e2e["precision"] == "float")].reset_index(drop=True)
    return {"ops": ops, "e2e": e2e}


def feature_value(feature: Dict[str, object], key: str) -> Optional[float]:
    """A numeric li2024 feature field, or None when absent / '-'."""
    v = feature.get(key)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def gpu_tables(data_dir: str) -> Dict[str, pd.DataFrame]:
    """The GPU per-op data of ``data_dir`` ready for the modeler.

    ``structure``: one row per (network, op_index) with the op-feature columns of
    ``host.modeler.features`` (device-independent); ``times``: network, op_index, device,
    latency_ms, kernel_name (one row per op and device that has a time); ``e2e``: device,
    network, latency_ms (GPU float end-to-end, one row per device and network)."""
    from host.modeler.features import ops_from_li2024

    ds = load_gpu_dataset(data_dir)
    ops_long = ds["ops"].rename(columns={"model": "network"})
    structure = ops_long.drop_duplicates(["network", "op_index"])[["network", "op_index", "operation", "feature"]]
    structure = structure.reset_index(drop=True)
    structure = pd.concat([structure[["network", "op_index"]], ops_from_li2024(structure)], axis=1)
    times = ops_long[["network", "op_index", "device", "latency_ms", "kernel_name"]].reset_index(drop=True)
    e2e = ds["e2e"].drop_duplicates(["device", "model"]).rename(columns={"model": "network"})
    return {"structure": structure, "times": times,
            "e2e": e2e[["device", "network", "latency_ms"]].reset_index(drop=True)}


def gpu_device_tables(tables: Dict[str, pd.DataFrame], device: str,
                      networks: Optional[List[str]] = None) -> Dict[str, pd.DataFrame]:
    """``LatencyPredictor`` training tables (``ops``, ``networks``) of one device from
    ``gpu_tables``: the networks with an end-to-end time on ``device`` (optionally only
    ``networks``), each op with its time on the device (NaN where it has none)."""
    e = tables["e2e"][tables["e2e"]["device"] == device]
    nets = sorted(set(e["network"]) & set(tables["structure"]["network"]))
    if networks is not None:
        keep = set(networks)
        nets = [n for n in nets if n in keep]
    t = tables["times"][tables["times"]["device"] == device].drop(columns="device")
    ops = tables["structure"][tables["structure"]["network"].isin(nets)]
    ops = ops.merge(t, on=["network", "op_index"], how="left").reset_index(drop=True)
    e = e[e["network"].isin(nets)]
    return {"ops": ops, "networks": pd.DataFrame({"network": e["network"].to_numpy(),
                                                  "latency_ms": e["latency_ms"].to_numpy(dtype=float)})}
