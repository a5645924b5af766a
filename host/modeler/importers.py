"""Import real public phone measurements into the store (`opcost dataset import`).

Each dataset becomes ordinary runs with ``origin = "dataset:<name>"`` so the modeler
reads them like anything measured by opcost. Re-importing replaces the earlier import.
Models have no file here: a model is identified by ``sha256("<dataset>:<name>")``.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np

from opcost.errors import DatasetError, UsageError
from opcost.records import BenchmarkOutput, DeviceInfo, E2EStats, Measurement, ModelRef, OpRecord, RunSpec

log = logging.getLogger(__name__)

DATASETS = ("ganesan2020", "li2024")


def dataset_model_ref(dataset: str, name: str, source: Optional[str] = None) -> ModelRef:
    """The ModelRef of a network known only by name in a public dataset."""
    sha = hashlib.sha256(f"{dataset}:{name}".encode()).hexdigest()
    return ModelRef(sha256=sha, name=name, source=source or f"dataset:{dataset}")


def _threads_of(config: str) -> int:
    """li2024 CPU configurations are core sets like ``1large1med`` or ``3small``."""
    import re

    counts = [int(n) for n in re.findall(r"(\d+)(?:large|med|small)", config)]
    return max(1, sum(counts)) if counts else 1


def iter_li2024(data_dir: str) -> Iterator[Measurement]:
    """Measurements of the li2024 files under ``data_dir``: end-to-end runs of every
    (network, device, core configuration, precision), plus GPU per-op rows attached to the
    GPU float runs of the CNNs."""
    from host.modeler import data_li2024 as li

    ops_by_key: Dict[tuple, List[OpRecord]] = {}
    try:
        ops_path = li.find_file(data_dir, li.OPS_GPU_NAMES)
    except DatasetError:
        ops_path = None
        log.warning("no %s under %s: importing end-to-end latencies only", li.OPS_GPU_FILE, data_dir)
    if ops_path:
        ops = li.load_ops_gpu(ops_path)
        for (model, device), grp in ops.groupby(["model", "device"], sort=False):
            ops_by_key[(model, device)] = [
                OpRecord(node_type=r.operation, name=str(r.kernel_name) if r.kernel_name is not None else "",
                         avg_ms=float(r.latency_ms), index=int(r.op_index), section="run", delegated=True,
                         attrs={"feature": r.feature,
                                "kernel_name": None if r.kernel_name is None or r.kernel_name is np.nan
                                else str(r.kernel_name)})
                for r in grp.itertuples(index=False)]
    files = {}
    for family, names in li.E2E_FILES.items():
        try:
            files[family] = li.find_file(data_dir, names)
        except DatasetError:
            continue
    if not files:
        raise DatasetError(f"no li2024 end-to-end files (tflite_*_e2e.csv) under {data_dir!r}",
                           hint="pass the folder holding the li2024 CSV files")
    devices: Dict[str, DeviceInfo] = {}
    for family, path in files.items():
        e2e = li.load_e2e(path)
        for r in e2e.itertuples(index=False):
            dev = devices.setdefault(r.device, DeviceInfo(serial=f"li2024/{r.device}", kind="dataset",
                                                          model=r.device, extra={"dataset": "li2024"}))
            gpu = r.config == "gpu"
            # The dataset does not say how CPU runs were delegated; TFLite 2.10+ applies
            # XNNPACK to float models by default, so float CPU runs are recorded as xnnpack.
            spec = RunSpec(delegate="gpu" if gpu else "xnnpack", threads=1 if gpu else _threads_of(r.config))
            std = None if np.isnan(r.std_us) else float(r.std_us) / 1000.0
            out = BenchmarkOutput(e2e=E2EStats(count=0, mean_ms=float(r.latency_ms), std_ms=std))
            if gpu and r.precision == "float":
                out.ops = ops_by_key.get((r.model, r.device), [])
            yield Measurement(
                device=dev,
                model=dataset_model_ref("li2024", r.model, source=f"dataset:li2024:{family}"),
                spec=spec, output=out,
                runtime={"name": "tflite", "version": "2.10-2.15", "dataset": "li2024",
                         "config": r.config, "precision": r.precision, "family": family,
                         "flops": None if np.isnan(r.flops) else float(r.flops)})


def iter_ganesan2020(data_dir: str) -> Iterator[Measurement]:
    """Measurements of the ganesan2020 files under ``data_dir``: one run per (device file,
    network); stats over the repeated runs, the first (cold, no warm-up) run kept apart."""
    from host.modeler import data_ganesan2020 as g

    files = g.find_files(data_dir)
    hardware: Dict[str, Dict[str, object]] = {}
    for path in files["hardware"]:
        with open(path, encoding="utf-8", errors="replace") as f:
            hardware.update({k: v for k, v in g.parse_hardware(f.read(), path).items() if k not in hardware})
    names = g.network_names()
    spec = RunSpec(delegate="cpu", threads=1)
    for path in files["latency"]:
        stem = os.path.basename(path)[:-4]
        with open(path, encoding="utf-8", errors="replace") as f:
            runs_per_net = g.parse_latency_runs(f.read(), path)
        dev = DeviceInfo(serial=f"ganesan2020/{stem}", kind="dataset", model=g.phone_model_of(stem),
                         extra={"dataset": "ganesan2020", "hardware": hardware.get(stem, {})})
        for name, runs in zip(names, runs_per_net):
            runs = np.asarray(runs, dtype=float)
            steady = runs[1:] if runs.size > 1 else runs
            e2e = E2EStats(count=int(steady.size), mean_ms=float(steady.mean()), std_ms=float(steady.std()),
                           min_ms=float(steady.min()), max_ms=float(steady.max()),
                           median_ms=float(np.median(steady)), p5_ms=float(np.percentile(steady, 5)),
                           p95_ms=float(np.percentile(steady, 95)), first_ms=float(runs[0]))
            yield Measurement(device=dev, model=dataset_model_ref("ganesan2020", name), spec=spec,
                              output=BenchmarkOutput(e2e=e2e),
                              runtime={"name": "tflite-java", "dataset": "ganesan2020",
                                       "weights": "int8 dynamic range"})


_IMPORTERS: Dict[str, Callable[[str], Iterator[Measurement]]] = {
    "li2024": iter_li2024,
    "ganesan2020": iter_ganesan2020,
}


def import_dataset(name: str, data_dir: str, store, *, batch: int = 2000,
                   progress: Optional[Callable[[int], None]] = None) -> Dict[str, int]:
    """Replace the store's runs of dataset ``name`` with those under ``data_dir``."""
    if name not in _IMPORTERS:
        raise UsageError(f"unknown dataset {name!r}", hint=f"use one of: {', '.join(DATASETS)}")
    if not os.path.isdir(data_dir):
        raise DatasetError(f"dataset folder {data_dir!r} does not exist",
                           hint=f"pass the folder of the {name} files (the project ships a copy in data/{name})")
    origin = f"dataset:{name}"
    removed = store.delete_runs(origin=origin)
    n_runs = n_ops = 0
    pending: List[Measurement] = []
    for m in _IMPORTERS[name](data_dir):
        pending.append(m)
        if len(pending) >= batch:
            store.add_measurements(pending, origin=origin)
            n_runs += len(pending)
            n_ops += sum(len(p.output.ops) for p in pending)
            pending.clear()
            if progress:
                progress(n_runs)
    if pending:
        store.add_measurements(pending, origin=origin)
        n_runs += len(pending)
        n_ops += sum(len(p.output.ops) for p in pending)
    return {"runs": n_runs, "ops": n_ops, "replaced_runs": removed}


def default_data_dir(name: str) -> str:
    """The copy of dataset ``name`` shipped with the project (``data/<name>``)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "data", name)
