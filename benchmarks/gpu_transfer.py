"""Kernel-level predictor transfer to a new phone from few measurements (li2024 GPU).

For each target device of the li2024 GPU per-op data, the sources are the other devices
(a ``LatencyPredictor`` fitted on all of each one's networks). The target contributes n
networks (n in 5, 10, 20): their per-op times and end-to-end latencies; which ones is a
uniform random choice without replacement among its 102 networks
(``host.modeler.transfer.choose_networks``: ``numpy.random.default_rng(seed)``, seeds
0-9). Every method predicts the end-to-end GPU latency of all the target's OTHER
networks (their op structure only). Hyperparameters are fixed a priori or chosen by
cross-validation on the target's n networks only (overhead form, ridge alpha); nothing
sees the test networks.

"reference": ``benchmarks/gpu_ops_to_e2e.py``'s full configuration on the target alone,
5-fold over all its networks (~82 training networks per fold).
"profiling_cost": what the target had to measure, in LitePred's unit (target networks,
and their ops / kernels); li2024 does not record how many runs each measurement took, so
profiling time is not derivable (the sum of one inference of each chosen network is
given).

``--selection`` (default ``coverage``, the library default; ``all`` = every strategy of
``host.modeler.transfer_select``): the same runs with the target's n networks chosen by
that strategy from source-side information only (the sources' predictions of the
target's networks and their op structure; the target's times are dropped from the
table the selection sees). Seeded strategies (``spread``, ``balanced``) use seeds 0-9 as
random does; deterministic ones (``coverage``, ``doptimal``) give one choice per target
and n (``n_seeds`` 1, std 0). The baseline ``source`` does not depend on the choice and is
not rerun. ``--selection all`` also runs the leave-source-out check
("selection_by_sources"): for each target, each of its sources plays the target of the
other source's predictor (its own measured networks as the pool, ``stack``), and the
strategy with the lowest mean MAPE there (over both pairs and n) is the one "chosen by
the sources"; its real-target result is reported next to it.

Prints one JSON object: {"selection", "hyperparameters", "methods", "results":
{device: {n: {method: {mape_pct, mape_pct_std, acc10_pct, acc5_pct, interval90_coverage_pct
(share of test networks inside the predictor's 90% interval), interval90_width_pct (its median
width, % of the prediction), interval90_coverage_pct_target_only and
interval90_width_pct_target_only (the same for the bounds from the target's networks alone,
``interval_from="target"``; the default simulates the transfer on the sources),
n_test_networks, n_seeds}}}},
"mean_over_devices", "reference", "profiling_cost", "seconds"} (random
choices, as before) plus "selections" (strategies run), "selection_results" {strategy:
same shape as results}, "selection_profiling_cost" (what the chosen networks cost to
measure, as "profiling_cost"), "selection_mean_over_devices" {strategy: {n: {method: ...}}},
"selection_vs_random" {strategy: {n: {method: {selected_mape_pct, random_mape_pct,
random_mape_pct_std}}}} and, with ``all``, "selection_by_sources".
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
import sys
import time
import warnings
from typing import Dict, List, NamedTuple

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from host.modeler import data_li2024  # noqa: E402
from host.modeler.metrics import summary  # noqa: E402
from host.modeler.predictor import LatencyPredictor  # noqa: E402
from host.modeler.transfer import TransferLatencyPredictor, source_tables  # noqa: E402
from host.modeler.transfer_select import (DEFAULT_SELECTION, MEASURED_COLUMNS, SEEDED_SELECTIONS,  # noqa: E402
                                          SELECTIONS, select_networks)

NS = (5, 10, 20)
SEEDS = tuple(range(10))
METHODS: Dict[str, dict] = {
    "source": {"method": "source"},
    "overhead_only": {"method": "overhead_only"},
    "scratch": {"method": "scratch"},
    "ratio": {"method": "ratio"},
    "stack": {"method": "stack"},
    "pooled": {"method": "pooled"},
}
ABLATION: Dict[str, dict] = {
    "ratio_count_weights": {"method": "ratio", "weighting": "count"},
    "ratio_mean_of_sources": {"method": "ratio", "combine": "mean"},
    "ratio_shrinkage_2": {"method": "ratio", "shrinkage": 2.0},
    "ratio_shrinkage_50": {"method": "ratio", "shrinkage": 50.0},
    "ratio_global_only": {"method": "ratio", "shrinkage": 1e9},
    "ratio_overhead_scale": {"method": "ratio", "overhead": "scale"},
    "stack_count_weights": {"method": "stack", "weighting": "count"},
    "stack_more_features": {"method": "stack", "stack_features": [
        "log_flops", "log_bytes_in", "log_bytes_out", "log_weights_bytes", "log_px_out", "c_in_slices",
        "c_out_slices", "kernel", "stride", "arith_intensity"]},
}


def reference(tables) -> Dict[str, dict]:
    """gpu_ops_to_e2e.py's full configuration, 5-fold on each device alone."""
    import gpu_ops_to_e2e as g
    from host.modeler.kernels import load_rules

    rules = load_rules("gpu")
    out = {}
    for device in sorted(set(tables["e2e"]["device"])):
        times = tables["times"][tables["times"]["device"] == device].drop(columns="device")
        e = tables["e2e"][tables["e2e"]["device"] == device].set_index("network")["latency_ms"]
        res = g.run_device(tables["structure"], times, e, {"full": g.CONFIGS["full"]}, rules)["full"]
        out[device] = {k: res[k] for k in ("mape_pct", "acc10_pct", "acc5_pct", "n_networks")}
    return out


def _chooser(selection: str, structure: pd.DataFrame, sources: Dict[str, LatencyPredictor]):
    """seed, n -> the target networks to "measure" under ``selection`` (source-side only:
    ``structure`` has no time columns)."""
    return lambda n, seed: select_networks(structure, n, sources, strategy=selection, seed=seed)


def _agg(r: List[dict]) -> dict:
    out = {"mape_pct": round(float(np.mean([s["mape_pct"] for s in r])), 2),
           "mape_pct_std": round(float(np.std([s["mape_pct"] for s in r])), 2),
           "acc10_pct": round(float(np.mean([s["acc10_pct"] for s in r])), 1),
           "acc5_pct": round(float(np.mean([s["acc5_pct"] for s in r])), 1),
           "n_test_networks": int(r[0]["n"]), "n_seeds": len(r)}
    for key, name in (("coverage", "interval90_coverage_pct"), ("width", "interval90_width_pct"),
                      ("coverage_target_only", "interval90_coverage_pct_target_only"),
                      ("width_target_only", "interval90_width_pct_target_only")):
        if all(key in s for s in r):
            out[name] = round(float(np.mean([s[key] for s in r])) * 100, 1)
    return out


def _interval_scores(est, d: pd.DataFrame, y: np.ndarray) -> Dict[str, float]:
    """Share of test networks inside the 90% interval and its median width (relative to
    the prediction); also for the target-only bounds when the interval was simulated on
    the sources."""
    p, lo, hi = (d[c].to_numpy(dtype=float) for c in ("pred_ms", "lo_ms", "hi_ms"))
    out = {"coverage": float(np.mean((y >= lo) & (y <= hi))), "width": float(np.median((hi - lo) / p))}
    bounds = getattr(est, "target_interval_log_bounds_", None)
    if bounds is not None:
        lo_t, hi_t = p * np.exp(bounds[0]), p * np.exp(bounds[1])
        out.update(coverage_target_only=float(np.mean((y >= lo_t) & (y <= hi_t))),
                   width_target_only=float(np.median((hi_t - lo_t) / p)))
    return out


def _structure(ops: pd.DataFrame) -> pd.DataFrame:
    return ops.drop(columns=[c for c in MEASURED_COLUMNS if c in ops.columns])


class TargetCase(NamedTuple):
    target: str
    sources: List[str]          # every other device
    source_ops: pd.DataFrame    # their tables stacked (``transfer.source_tables``)
    source_networks: pd.DataFrame
    tables: Dict[str, pd.DataFrame]   # the target's ops and networks
    truth: pd.Series            # the target's end-to-end ms by network
    networks: List[str]         # sorted


def target_cases(dt: Dict[str, Dict[str, pd.DataFrame]], devices=None):
    """Each device of ``devices`` (default: all of ``dt``) as the target, the others as sources."""
    for target in devices or sorted(dt):
        sources = [d for d in sorted(dt) if d != target]
        sops, snets = source_tables(dt, sources)
        truth = dt[target]["networks"].set_index("network")["latency_ms"]
        yield TargetCase(target, sources, sops, snets, dt[target], truth, sorted(truth.index))


def split_target(tables: Dict[str, pd.DataFrame], train) -> tuple:
    """(ops, networks) of the target's ``train`` networks, and the ops of all its other
    networks (those with an end-to-end latency)."""
    ops, nets = tables["ops"], tables["networks"]
    held = set(nets["network"]) - set(train)
    return (ops[ops["network"].isin(train)], nets[nets["network"].isin(train)],
            ops[ops["network"].isin(held)])


def run(tables, methods: Dict[str, dict], ns=NS, seeds=SEEDS, devices=None, selection: str = "random",
        fitted=None) -> Dict:
    all_devices = sorted(set(tables["e2e"]["device"]) & set(tables["times"]["device"]))
    dt = {d: data_li2024.gpu_device_tables(tables, d) for d in all_devices}
    t0 = time.time()
    if fitted is None:
        fitted = {d: LatencyPredictor(runtime="gpu", random_state=0).fit(**dt[d]) for d in all_devices}
    source_fit_s = time.time() - t0
    if selection not in ("random", *SELECTIONS):
        raise ValueError(f"unknown selection {selection!r}")
    if selection != "random":
        methods = {m: p for m, p in methods.items() if p.get("method") != "source"}
        if selection not in SEEDED_SELECTIONS:
            seeds = seeds[:1]
    select_s = 0.0
    results: Dict[str, Dict] = {}
    cost: Dict[str, Dict] = {}
    timing: Dict[str, float] = {m: 0.0 for m in methods}
    for case in target_cases(dt, devices):
        target, sources, truth = case.target, case.sources, case.truth
        choose = _chooser(selection, _structure(case.tables["ops"]), {d: fitted[d] for d in sources})
        results[target] = {}
        cost[target] = {"sources": sources}
        for n in ns:
            per: Dict[str, List[dict]] = {m: [] for m in methods}
            c = {"networks": n, "ops": [], "kernels": [], "sum_e2e_ms": []}
            for seed in seeds:
                t = time.time()
                train = choose(n, seed)
                select_s += time.time() - t
                tr_ops, tr_nets, te_ops = split_target(case.tables, train)
                c["ops"].append(int(np.isfinite(tr_ops["latency_ms"].to_numpy(float)).sum()))
                c["sum_e2e_ms"].append(float(tr_nets["latency_ms"].sum()))
                for name, params in methods.items():
                    t = time.time()
                    est = TransferLatencyPredictor(runtime="gpu", **params).fit(
                        tr_ops, tr_nets, source_ops=case.source_ops, source_networks=case.source_networks,
                        prefit_sources={d: fitted[d] for d in sources})
                    d = est.predict_ops(te_ops)
                    p = d["pred_ms"]
                    timing[name] += time.time() - t
                    y = truth.loc[p.index].to_numpy()
                    per[name].append({**summary(y, p.to_numpy()), **_interval_scores(est, d, y)})
                    if name == "ratio":
                        c["kernels"].append(est.n_kernels_measured_)
            results[target][str(n)] = {name: _agg(r) for name, r in per.items()}
            cost[target][str(n)] = {"target_networks": n, "target_ops_mean": round(float(np.mean(c["ops"])), 1),
                                    "target_kernels_mean": round(float(np.mean(c["kernels"])), 1)
                                    if c["kernels"] else None,
                                    "sum_one_inference_ms_mean": round(float(np.mean(c["sum_e2e_ms"])), 1)}
    mean = {str(n): {m: {k: round(float(np.mean([results[d][str(n)][m][k] for d in results])), 2)
                         for k in ("mape_pct", "acc10_pct", "acc5_pct", "interval90_coverage_pct",
                                   "interval90_width_pct", "interval90_coverage_pct_target_only",
                                   "interval90_width_pct_target_only")
                         if all(k in results[d][str(n)][m] for d in results)}
              for m in methods} for n in ns}
    return {"results": results, "mean_over_devices": mean, "profiling_cost": cost,
            "fit_seconds": {"sources_all_devices": round(source_fit_s, 1), "selection": round(select_s, 1),
                            **{m: round(v, 1) for m, v in timing.items()}}}


def by_sources(tables, fitted, strategies, ns=NS, seeds=SEEDS) -> Dict:
    """Leave-source-out check of the selection strategies, per target: each of its sources
    plays the target of the other's predictor (``stack``, its own networks as the pool and
    test set); the strategy with the lowest mean MAPE there is the sources' choice. No
    data of the target is read."""
    all_devices = sorted(fitted)
    dt = {d: data_li2024.gpu_device_tables(tables, d) for d in all_devices}
    pair_res: Dict[str, Dict] = {}
    for pseudo in all_devices:
        for src in all_devices:
            if src == pseudo:
                continue
            T = dt[pseudo]
            truth = T["networks"].set_index("network")["latency_ms"]
            choose_of = {s: _chooser(s, _structure(T["ops"]), {src: fitted[src]}) for s in strategies}
            res: Dict[str, Dict] = {}
            for n in ns:
                res[str(n)] = {}
                for strat in strategies:
                    r = []
                    for seed in (seeds if strat in SEEDED_SELECTIONS else seeds[:1]):
                        tr_ops, tr_nets, te_ops = split_target(T, choose_of[strat](n, seed))
                        est = TransferLatencyPredictor(runtime="gpu", method="stack").fit(
                            tr_ops, tr_nets, prefit_sources={src: fitted[src]})
                        p = est.predict_ops(te_ops)["pred_ms"]
                        r.append(summary(truth.loc[p.index].to_numpy(), p.to_numpy()))
                    res[str(n)][strat] = _agg(r)
            pair_res[f"{pseudo}<-{src}"] = res
    out: Dict[str, Dict] = {"pairs": pair_res, "targets": {}}
    for target in all_devices:
        pairs = [k for k in pair_res if target not in k.split("<-")]
        score = {s: round(float(np.mean([pair_res[p][str(n)][s]["mape_pct"] for p in pairs for n in ns])), 2)
                 for s in strategies}
        out["targets"][target] = {"pairs": pairs, "mean_mape_pct": score, "chosen": min(score, key=score.get)}
    out["all_pairs_mean_mape_pct"] = {
        s: round(float(np.mean([pair_res[p][str(n)][s]["mape_pct"] for p in pair_res for n in ns])), 2)
        for s in strategies}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=data_li2024_default(), help="directory holding the li2024 CSV files")
    ap.add_argument("--json", action="store_true", help="print the JSON result (always on)")
    ap.add_argument("--ablation", action="store_true", help="also run variants of ratio / stack")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="number of seeds (0..N-1)")
    ap.add_argument("--no-reference", action="store_true", help="skip the 5-fold full-data reference")
    ap.add_argument("--selection", default=DEFAULT_SELECTION, choices=(*SELECTIONS, "all"),
                    help="also run with the target's networks chosen by this strategy (random only: as before; "
                         "all: every strategy plus the leave-source-out check)")
    args = ap.parse_args(argv)
    t0 = time.time()
    from gpu_ops_to_e2e import load_tables

    tables = load_tables(args.data)
    if tables is None:
        return 2
    methods = {**METHODS, **(ABLATION if args.ablation else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import logging

        logging.getLogger("opcost").setLevel(logging.ERROR)
        seeds = tuple(range(args.seeds))
        all_devices = sorted(set(tables["e2e"]["device"]) & set(tables["times"]["device"]))
        t = time.time()
        fitted = {d: LatencyPredictor(runtime="gpu", random_state=0).fit(**data_li2024.gpu_device_tables(tables, d))
                  for d in all_devices}
        source_fit_s = time.time() - t
        out = run(tables, methods, seeds=seeds, fitted=fitted)
        out["fit_seconds"]["sources_all_devices"] = round(source_fit_s, 1)
        strategies = ([x for x in SELECTIONS if x != "random"] if args.selection == "all" else
                      [] if args.selection == "random" else [args.selection])
        sel: Dict[str, Dict] = {}
        for strat in strategies:
            t = time.time()
            sel[strat] = run(tables, methods, seeds=seeds, selection=strat, fitted=fitted)
            sel[strat]["seconds"] = round(time.time() - t, 1)
        extra = {"selections": strategies,
                 "selection_results": {k: v["results"] for k, v in sel.items()},
                 "selection_mean_over_devices": {k: v["mean_over_devices"] for k, v in sel.items()},
                 "selection_fit_seconds": {k: {**v["fit_seconds"], "total": v["seconds"]} for k, v in sel.items()},
                 "selection_profiling_cost": {k: v["profiling_cost"] for k, v in sel.items()},
                 "selection_vs_random": {
                     k: {str(n): {m: {"selected_mape_pct": v["mean_over_devices"][str(n)][m]["mape_pct"],
                                      "selected_mape_pct_std_over_seeds": round(float(np.mean(
                                          [v["results"][d][str(n)][m]["mape_pct_std"] for d in v["results"]])), 2),
                                      "random_mape_pct": out["mean_over_devices"][str(n)][m]["mape_pct"],
                                      "random_mape_pct_std_over_seeds": round(float(np.mean(
                                          [out["results"][d][str(n)][m]["mape_pct_std"] for d in out["results"]])), 2)}
                                  for m in v["mean_over_devices"][str(n)]} for n in NS}
                     for k, v in sel.items()}}
        if args.selection == "all":
            t = time.time()
            bys = by_sources(tables, fitted, list(SELECTIONS), seeds=seeds)
            for target, c in bys["targets"].items():
                src = out if c["chosen"] == "random" else sel[c["chosen"]]
                c["target_stack_mape_pct"] = {str(n): src["results"][target][str(n)]["stack"]["mape_pct"] for n in NS}
            bys["seconds"] = round(time.time() - t, 1)
            extra["selection_by_sources"] = bys
        ref = {} if args.no_reference else reference(tables)
    result = {
        "selection": "per target device and seed: n networks drawn uniformly without replacement from its "
                     "networks (numpy default_rng(seed) over sorted names); test = all its other networks",
        "hyperparameters": "fixed a priori (ratio shrinkage 10 kernels, time weighting, inverse-variance "
                           "combination of sources; pooled target weight 5; stack features log flops/bytes); "
                           "chosen by CV on the target's n networks only: overhead form (OverheadRegressor "
                           "auto), stack ridge alpha (LOO over kernels). The library default method (stack) was "
                           "picked after a 3-seed run of this benchmark: not a blind choice",
        "methods": methods,
        **out,
        **extra,
        "selection_default": DEFAULT_SELECTION,
        "selection_hyperparameters": "fixed a priori (equal-count strata of source-predicted log latency; a "
                                     "kernel type covered at 10 kernels; D-optimal ridge 0.01 of one average "
                                     "network's information). Default strategy (coverage) picked by the sources "
                                     "only: lowest mean stack MAPE in the leave-source-out check over the 6 "
                                     "ordered li2024 pairs (an exploratory 5-seed source-only run; 'balanced' was "
                                     "added after it), decided before the real targets were scored",
        "reference": {"what": "gpu_ops_to_e2e.py full config, 5-fold on the target's networks alone",
                      "devices": ref},
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


def data_li2024_default() -> str:
    from host.modeler.importers import default_data_dir

    return default_data_dir("li2024")


if __name__ == "__main__":
    sys.exit(main())
