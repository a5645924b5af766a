"""The main job on the host as the device: build a small zoo, measure it, fit, predict.

Training networks: mbv2-space NAS samples (measured end to end and per op by slicing)
and micro-benchmarks (single ops and blocks, end to end). Test networks: a few real
reference networks, measured end to end and never used in fitting. Everything lands
in one SQLite store; the result is measured vs predicted latency per test network, a
FLOPs baseline for comparison, and a scatter plot.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from opcost.records import RunSpec, sha256_file

log = logging.getLogger(__name__)

DEFAULT_REFERENCE = ("mobilenet_v1_050", "mobilenet_v2_035", "mobilenet_v3_small", "mobilenet_v2",
                     "efficientnet_b0")
DEFAULT_MICRO = {"conv2d": 24, "depthwise_conv2d": 16, "dense": 4, "add": 4, "mean": 3,
                 "mbconv": 6, "mbconv_se": 6, "hard_swish": 3, "sigmoid": 3, "mul": 3}


@dataclass
class DemoPlan:
    """What the demo builds and measures (defaults finish in minutes on 2 cores)."""

    out_dir: str = "opcost_demo"
    nas_count: int = 8
    micro: Dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MICRO))
    reference: Sequence[str] = DEFAULT_REFERENCE
    seed: int = 1
    threads: int = 1
    min_secs: float = 0.5
    nice: Optional[int] = None
    cpu_mask: Optional[str] = None


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The converter prints its graph dumps to stdout; results go to stdout, so send them away.
    return contextlib.redirect_stdout(sys.stderr)


def build_zoo(plan: DemoPlan, progress: Callable[[str], None]) -> Dict[str, List[Path]]:
    """Training and test .tflite files (cached by content; fast on a second run)."""
    from models_zoo import micro, nas, reference

    zoo = Path(plan.out_dir) / "zoo"
    out: Dict[str, List[Path]] = {"nas": [], "micro": [], "reference": []}
    with _quiet_tf():
        progress(f"building {plan.nas_count} mbv2-space NAS samples")
        out["nas"] = list(nas.sample("mbv2-space", plan.nas_count, plan.seed, out_dir=str(zoo / "nas")))
        for op, n in plan.micro.items():
            progress(f"building {n} micro-benchmarks of {op}")
            out["micro"] += list(micro.build_micro(op, n, plan.seed, out_dir=str(zoo / "micro")))
        for name in plan.reference:
            progress(f"building reference network {name}")
            src = reference.build_reference(name)
            dst = zoo / "reference" / f"{name}.tflite"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.write_bytes(Path(src).read_bytes())
            out["reference"].append(dst)
    return out


def measure_all(device, store, jobs: List[tuple], spec: RunSpec, bar) -> List[str]:
    """Measure (path, per_op) jobs not yet in the store with this spec; returns failures."""
    done = set()
    runs = store.runs_df(device="local", spec_key=spec.key())
    if len(runs):
        done = set(runs["model_sha256"])
    failures = []
    for path, per_op in jobs:
        name = Path(path).stem
        bar.set_postfix_str(name[:28])
        sha = sha256_file(str(path))
        if sha in done:
            bar.update(1)
            continue
        try:
            m = device.measure(str(path), spec, model_name=name, per_op=per_op)
            m.model.source = "demo"
            store.add_measurement(m)
        except Exception as err:  # one bad model must not stop the demo; say which
            failures.append(f"{name}: {err}")
            log.warning("measuring %s failed: %s", name, err)
        bar.update(1)
    return failures


def run_demo(plan: DemoPlan, *, progress: bool = True) -> Dict[str, Any]:
    """Build, measure, fit, predict; returns a JSON-able summary."""
    from tqdm import tqdm

    from device_bench.local import LocalDevice
    from host.modeler import metrics
    from host.modeler.predictor import LatencyPredictor, training_tables
    from host.modeler.predictor_file import save_predictor
    from host.modeler.service import scatter_plot
    from host.store import Store

    t0 = time.time()
    out_dir = Path(plan.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda msg: print(f"[demo] {msg}", file=sys.stderr)) if progress else (lambda msg: None)
    zoo = build_zoo(plan, say)
    store_path = out_dir / "runs.db"
    spec = RunSpec(delegate="xnnpack", threads=plan.threads, cpu_mask=plan.cpu_mask, num_runs=20,
                   min_secs=plan.min_secs, warmup_runs=3, warmup_min_secs=0.2, timeout_s=600)
    device = LocalDevice(nice=plan.nice)
    jobs = [(p, True) for p in zoo["nas"]] + [(p, False) for p in zoo["micro"]] + \
           [(p, False) for p in zoo["reference"]]
    say(f"measuring {len(jobs)} models on this host ({device.info().model}); store: {store_path}")
    with Store.open(str(store_path)) as store:
        with tqdm(total=len(jobs), desc="measure", unit="model", file=sys.stderr,
                  disable=not progress) as bar:
            failures = measure_all(device, store, jobs, spec, bar)
        tables = training_tables(store, device="local", delegate="xnnpack", threads=plan.threads)
    ref_names = {sha256_file(str(p)): p.stem for p in zoo["reference"]}
    nets, ops = tables["networks"], tables["ops"]
    is_ref = nets["network"].isin(ref_names)
    train_nets = nets[~is_ref]
    train_ops = ops[ops["network"].isin(set(train_nets["network"]))]
    say(f"fitting on {len(train_nets)} training networks ({int(train_ops['latency_ms'].notna().sum())} "
        "ops with measured times)")
    predictor = LatencyPredictor(runtime="xnnpack").fit(ops=train_ops, networks=train_nets)
    pred_path = out_dir / "local-xnnpack.predictor"
    save_predictor(pred_path, predictor,
                   meta={"kind": "network-latency", "device": "local", "delegate": "xnnpack",
                         "threads": plan.threads, "source": "measured",
                         "n_networks": predictor.n_networks_, "kernel_types": predictor.kernel_types_,
                         "overhead": predictor.model_.overhead_mode_,
                         "training_networks": sorted(train_nets["network"]),
                         "training_model_names": sorted(train_nets["model_name"])},
                   training={"ops": train_ops, "networks": train_nets})
    test = nets[is_ref]
    if test.empty:
        from opcost.errors import OpcostError

        raise OpcostError("no reference network could be measured", hint="see the warnings above")
    pred = predictor.predict_ops(ops[ops["network"].isin(set(test["network"]))])["pred_ms"]
    # FLOPs baseline: latency proportional to FLOPs, slope fitted on the training networks.
    flops = ops.groupby("network")["flops"].sum()
    slope = float(np.median(train_nets["latency_ms"].to_numpy() / flops.loc[train_nets["network"]].to_numpy()))
    rows = []
    for r in test.itertuples(index=False):
        p = float(pred.loc[r.network])
        b = slope * float(flops.loc[r.network])
        rows.append({"model": ref_names[r.network], "measured_ms": r.latency_ms, "pred_ms": p,
                     "err_pct": (p - r.latency_ms) / r.latency_ms * 100.0,
                     "flops_baseline_ms": b, "flops_baseline_err_pct": (b - r.latency_ms) / r.latency_ms * 100.0})
    y = [r["measured_ms"] for r in rows]
    plot = scatter_plot(y, [r["pred_ms"] for r in rows], str(out_dir / "measured_vs_predicted.png"),
                        title="opcost demo: reference networks on this host (never in training)")
    return {
        "store": str(store_path.resolve()),
        "predictor": str(pred_path.resolve()),
        "plot": plot,
        "device": device.info().to_dict(),
        "spec": spec.to_dict(),
        "n_training_networks": int(len(train_nets)),
        "networks": rows,
        "metrics": metrics.summary(y, [r["pred_ms"] for r in rows]),
        "flops_baseline_metrics": metrics.summary(y, [r["flops_baseline_ms"] for r in rows]),
        "failures": failures,
        "elapsed_s": round(time.time() - t0, 1),
    }
