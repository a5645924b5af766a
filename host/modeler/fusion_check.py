"""Check fusion rules against measurements: single op vs pair of ops.

For a producer op P followed by an op C that reads only P's output (a standalone RELU
after an ADD, a LOGISTIC after a CONV_2D, ...), three slices are timed on a device:
P alone, C alone and the pair P+C. If the runtime fuses C into P, the pair costs about
as much as P; if not, about P + C. The measured *extra cost share*

    share = (t_pair - t_P) / t_C

is near 0 for a fused pair and near 1 for a separate kernel. The rule files
(``rules/<runtime>.yaml``) make the same call from structure alone (``group_ops`` on the
pair's op table: one kernel or two); :func:`check_rules` compares the two per pair type.

Candidate pairs come from real graphs (the zoo's reference networks): the slices keep
the original shapes, weights and options. Per pair type the instances with the largest
consumer tensors are used, so C's own cost is well above the per-invoke overhead.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from opcost.errors import UsageError
from opcost.records import RunSpec

# Ops checked as consumers: the activations a runtime may fold into its producer, and
# the elementwise ops that follow convolutions (SE gates, residual adds).
CONSUMER_TYPES = ("RELU", "RELU6", "RELU_N1_TO_1", "HARD_SWISH", "LOGISTIC", "TANH", "GELU",
                  "LEAKY_RELU", "ADD", "MUL")
# A fused consumer adds about 0 of its standalone time, a separate one about 1. Shares in
# between are what run-to-run noise of the producer's time makes of either on a shared
# host (seen here: 0.39 and 0.47 for pairs measured at 0.6-1.2 in other runs), so they
# give no verdict.
FUSED_BELOW_SHARE = 0.3
SEPARATE_ABOVE_SHARE = 0.7


def verdict(share: float) -> Optional[bool]:
    """True (fused) below 0.3, False (separate) above 0.7, None in between."""
    if share < FUSED_BELOW_SHARE:
        return True
    if share > SEPARATE_ABOVE_SHARE:
        return False
    return None


@dataclass(frozen=True)
class PairCase:
    """One producer -> consumer pair in a model file."""

    model_path: str
    producer_index: int
    consumer_index: int
    producer_type: str
    consumer_type: str
    consumer_bytes: int

    @property
    def kind(self) -> str:
        return f"{self.producer_type}->{self.consumer_type}"


def pairs_in_graph(graph: Any, model_path: str, consumer_types: Iterable[str] = CONSUMER_TYPES) -> List[PairCase]:
    """Producer -> consumer pairs of the main subgraph where the consumer's only
    non-constant input is the producer's only output (so the pair slice has the
    producer's inputs, like the producer alone). Other readers of that output in the full
    graph are left out of the pair slice (``sinks_only``): the slice asks whether the
    runtime fuses C into P when nothing else needs P's output."""
    want = set(consumer_types)
    tensors = graph.tensors
    out: List[PairCase] = []
    for op in graph.main_ops:
        if op.type not in want:
            continue
        act_inputs = [t for t in op.inputs if t >= 0 and not tensors[t].is_constant]
        if len(act_inputs) != 1:
            continue
        p = graph.producers.get(act_inputs[0])
        if p is None or len(graph.ops[p].outputs) != 1:
            continue
        nbytes = sum(tensors[t].nbytes for t in op.outputs if t >= 0)
        out.append(PairCase(model_path, int(p), int(op.index), graph.ops[p].type, op.type, int(nbytes)))
    return out


def find_pairs(model_paths: Sequence[str], *, per_kind: int = 3,
               consumer_types: Iterable[str] = CONSUMER_TYPES,
               read_graph: Optional[Callable[[str], Any]] = None) -> List[PairCase]:
    """Up to ``per_kind`` pairs of each producer->consumer kind over ``model_paths``,
    largest consumer output first (distinct shapes preferred)."""
    if read_graph is None:
        from models_zoo.graph import read_graph as _rg
        read_graph = _rg
    by_kind: Dict[str, List[PairCase]] = {}
    for path in model_paths:
        for case in pairs_in_graph(read_graph(path), path, consumer_types):
            by_kind.setdefault(case.kind, []).append(case)
    chosen: List[PairCase] = []
    for kind in sorted(by_kind):
        seen_sizes = set()
        for case in sorted(by_kind[kind], key=lambda c: (-c.consumer_bytes, c.model_path, c.consumer_index)):
            if case.consumer_bytes in seen_sizes:
                continue
            seen_sizes.add(case.consumer_bytes)
            chosen.append(case)
            if sum(c.kind == kind for c in chosen) >= per_kind:
                break
    return chosen


def rules_say_fused(pair_model_path: str, runtime: str) -> bool:
    """Does the rule set of ``runtime`` group the two ops of a pair slice into one kernel?"""
    from host.modeler.features import ops_from_graph
    from host.modeler.kernels import group_ops, load_rules
    from models_zoo.graph import read_graph

    ops = ops_from_graph(read_graph(pair_model_path))
    kernels = group_ops(ops, load_rules(runtime))
    return len(kernels) == 1


def extra_cost_share(t_pair_ms: float, t_producer_ms: float, t_consumer_ms: float) -> float:
    """(t_pair - t_producer) / t_consumer: about 0 when fused, about 1 when not."""
    if t_consumer_ms <= 0:
        raise ValueError("consumer time must be > 0 ms")
    return float((t_pair_ms - t_producer_ms) / t_consumer_ms)


def _latency_ms(measurement) -> float:
    e2e = measurement.output.e2e
    return float(e2e.median_ms if e2e.median_ms is not None else e2e.mean_ms)


def check_rules(device, runtime: str, cases: Sequence[PairCase], *, spec: Optional[RunSpec] = None,
                workdir: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
                rounds: int = 3, min_consumer_ms: float = 0.02, min_consumer_share: float = 0.15) -> Dict[str, Any]:
    """Time P, C and P+C for every case on ``device`` and compare with the rules.

    ``runtime`` is a rule-set name (``xnnpack``, ``cpu``, ``gpu``); the delegate of the
    measurements is the runtime's (``cpu`` rules = delegate ``cpu``). A device with
    ``measure_interleaved`` (the host) times P, C and P+C alternately in one process for
    ``rounds`` rounds and the share is the median of the rounds' shares; other devices
    measure each slice ``rounds`` times, interleaved, and keep its fastest round. A case is conclusive when
    the consumer alone takes >= ``min_consumer_ms`` and >= ``min_consumer_share`` of the
    producer (else run-to-run noise of P hides C). Returns per-case rows and per-kind
    summaries: median share, measured verdict, rule verdict, agree."""
    from models_zoo.slicing import slice_ops

    if not cases:
        raise UsageError("no producer->consumer pairs to check",
                         hint="pass models that contain standalone activations (e.g. the zoo's reference networks)")
    delegate = {"xnnpack": "xnnpack", "cpu": "cpu", "gpu": "gpu"}.get(runtime)
    if delegate is None:
        raise UsageError(f"no delegate for runtime {runtime!r}", hint="use xnnpack, cpu or gpu")
    spec = spec or RunSpec(delegate=delegate, threads=1, num_runs=30, min_secs=0.3, warmup_runs=3,
                           report_peak_memory=False)
    if spec.delegate != delegate:
        raise UsageError(f"runtime {runtime!r} is measured with delegate {delegate!r}, the spec says {spec.delegate!r}")
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="opcost-fusion-", dir=workdir) as tmp:
        for i, case in enumerate(cases):
            stem = os.path.join(tmp, f"case{i}")
            paths = {
                "producer": slice_ops(case.model_path, [case.producer_index], stem + "_p.tflite"),
                "consumer": slice_ops(case.model_path, [case.consumer_index], stem + "_c.tflite"),
                "pair": slice_ops(case.model_path, [case.producer_index, case.consumer_index], stem + "_pc.tflite",
                                  sinks_only=True),
            }
            names = list(paths)
            interleaved = getattr(device, "measure_interleaved", None)
            if callable(interleaved) and not getattr(device, "binary_path", None):
                # One process times P, C and P+C alternately: the three see the same
                # machine state, and each round gives its own share.
                per_round = interleaved([paths[n] for n in names], spec, rounds=max(1, int(rounds)))
                rounds_ms = dict(zip(names, per_round))
                t = {n: float(np.median(v)) for n, v in rounds_ms.items()}
                shares = [extra_cost_share(pc, p_, c_) for p_, c_, pc in
                          zip(rounds_ms["producer"], rounds_ms["consumer"], rounds_ms["pair"]) if c_ > 0]
                share = float(np.median(shares)) if shares else float("nan")
                method = "interleaved"
            else:
                # Separate measurements in interleaved rounds, fastest round kept: another
                # process can slow one slice down for a whole measurement, rarely every round.
                times: Dict[str, List[float]] = {name: [] for name in names}
                for _ in range(max(1, int(rounds))):
                    for name in names:
                        m = device.measure(paths[name], spec, model_name=f"fusion-{case.kind}-{name}")
                        times[name].append(_latency_ms(m))
                t = {name: min(v) for name, v in times.items()}
                share = extra_cost_share(t["pair"], t["producer"], t["consumer"])
                method = "separate"
            conclusive = t["consumer"] >= min_consumer_ms and t["consumer"] >= min_consumer_share * t["producer"]
            row = asdict(case)
            row.update({"kind": case.kind, "producer_ms": t["producer"], "consumer_ms": t["consumer"],
                        "pair_ms": t["pair"], "extra_cost_share": share, "conclusive": bool(conclusive),
                        "timing": method,
                        "measured_fused": verdict(share),
                        "rules_fused": rules_say_fused(paths["pair"], runtime)})
            rows.append(row)
            if progress:
                progress(f"[{i + 1}/{len(cases)}] {case.kind}: P {t['producer']:.4f} ms, C {t['consumer']:.4f} ms, "
                         f"P+C {t['pair']:.4f} ms -> share {share:.2f}"
                         + ("" if conclusive else " (inconclusive: C too small to see next to P)")
                         + (" (ambiguous share)" if conclusive and verdict(share) is None else ""))
    return {"runtime": runtime, "delegate": delegate, "device": getattr(device, "serial", "?"),
            "cases": rows, "kinds": summarize(rows)}


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per pair kind: median share, measured verdict (:func:`verdict` of the median
    share), the rules' verdict (majority of cases) and whether they agree. Only
    conclusive cases count (consumer time >= 20 us and >= 15% of the producer's); a kind
    with none, or with a median share between 0.3 and 0.7, has ``agree: None``."""
    kinds: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        kinds.setdefault(r["kind"], [])
        if r.get("conclusive", True):
            kinds[r["kind"]].append(r)
    out: Dict[str, Dict[str, Any]] = {}
    for kind, rs in sorted(kinds.items()):
        if not rs:
            out[kind] = {"n": 0, "median_extra_cost_share": None, "measured_fused": None,
                         "rules_fused": None, "agree": None}
            continue
        med = float(np.median([r["extra_cost_share"] for r in rs]))
        measured = verdict(med)
        rules = sum(bool(r["rules_fused"]) for r in rs) * 2 > len(rs)
        out[kind] = {"n": len(rs), "median_extra_cost_share": med, "measured_fused": measured,
                     "rules_fused": rules, "agree": None if measured is None else measured == rules}
    return out


def agreement(result: Dict[str, Any]) -> Tuple[int, int]:
    """(kinds where rules and measurement agree, kinds with a conclusive measurement)."""
    kinds = [k for k in result["kinds"].values() if k["agree"] is not None]
    return sum(bool(k["agree"]) for k in kinds), len(kinds)
