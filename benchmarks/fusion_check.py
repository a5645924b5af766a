"""Fusion rules vs measurements on this host: single op vs pair of ops.

Slices producer->consumer pairs out of the zoo's reference networks, a few
NAS-Bench-201 networks and small synthetic models (one per producer type the XNNPACK
rules absorb a RELU into; named synthetic_pair_*), times P, C and P+C with the local device, and compares the measured verdict (fused: the pair costs
less than P + C/2) with what rules/<runtime>.yaml says, for each runtime given.

    python benchmarks/fusion_check.py [--runtimes xnnpack,cpu] [--per-kind 2] [--json]

Output: {"runtimes": {"<rt>": {"agree", "kinds_checked", "kinds": {...}}}, ...}.
Needs the zoo extra (TensorFlow) the first time, to build the networks into the cache.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from device_bench.local import LocalDevice  # noqa: E402
from host.modeler.fusion_check import agreement, check_rules, find_pairs  # noqa: E402
from opcost.errors import OpcostError  # noqa: E402
from opcost.records import RunSpec  # noqa: E402

NB201_INDICES = (1234, 7000, 12000)

# Producers the XNNPACK rules absorb a RELU into. The zoo has few standalone RELUs after
# them (the converter folds most), so each gets a small synthetic model: P -> RELU, with
# P's output also read by a final ADD so the converter cannot fold the RELU. The pair
# slice drops that second reader (sinks_only).
# FULLY_CONNECTED is not among them: the converter duplicates the FC and folds the RELU
# into one copy, so no standalone pair survives conversion.
SYNTHETIC_PRODUCERS = ("conv2d", "depthwise", "add", "mul", "sub", "max_pool", "avg_pool")


def build_synthetic_pairs(out_dir: str) -> list:
    """One synthetic_pair_<producer>_relu.tflite per producer (needs TensorFlow)."""
    import tensorflow as tf

    keras = tf.keras
    L = keras.layers
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in SYNTHETIC_PRODUCERS:
        path = os.path.join(out_dir, f"synthetic_pair_{name}_relu.tflite")
        if os.path.isfile(path):
            paths.append(path)
            continue
        a = keras.Input((96, 96, 8 if name == "conv2d" else 32), batch_size=1)
        b = keras.Input((96, 96, 32), batch_size=1)
        ins = [a]
        if name == "conv2d":
            p = L.Conv2D(64, 1)(a)
        elif name == "depthwise":
            p = L.DepthwiseConv2D(3, padding="same")(a)
        elif name in ("add", "mul", "sub"):
            ins = [a, b]
            p = {"add": L.Add(), "mul": L.Multiply(), "sub": L.Subtract()}[name]([a, b])
        else:
            pool = L.MaxPooling2D if name == "max_pool" else L.AveragePooling2D
            p = pool(2, strides=1, padding="same")(a)
        out = L.Add()([L.ReLU()(p), p])
        model = keras.Model(ins, out)
        with open(path, "wb") as f:
            f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default="xnnpack,cpu", help="comma-separated: xnnpack, cpu")
    ap.add_argument("--per-kind", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--consumers", default="RELU,RELU6,HARD_SWISH,LOGISTIC,TANH,GELU,ADD,MUL",
                    help="consumer op types to check (comma-separated)")
    ap.add_argument("--cpu-mask", default="auto", help="hex mask, 'auto' = highest usable CPU, 'none'")
    ap.add_argument("--nice", default="-10", help="priority of the measuring process (negative needs root; 'none' = unchanged)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-synthetic", dest="synthetic", action="store_false",
                    help="leave out the synthetic producer->RELU models")
    ap.add_argument("--json", action="store_true", help="output is always one JSON object on stdout")
    a = ap.parse_args(argv)
    mask = (f"{1 << max(os.sched_getaffinity(0)):x}" if a.cpu_mask == "auto"
            else None if a.cpu_mask == "none" else a.cpu_mask)
    nice = None if str(a.nice).lower() == "none" else int(a.nice)
    t0 = time.time()
    try:
        from models_zoo.nas import build_nb201
        from models_zoo.reference import build_reference, reference_names

        paths = [str(build_reference(n, cache_dir=a.cache_dir)) for n in reference_names()]
        paths += [str(build_nb201(i, cache_dir=a.cache_dir)) for i in NB201_INDICES]
        cases = find_pairs(paths, per_kind=a.per_kind, consumer_types=[c for c in a.consumers.split(",") if c])
        if a.synthetic:
            synth_dir = os.path.join(a.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "opcost"),
                                     "synthetic_pairs")
            with contextlib.redirect_stdout(sys.stderr):  # Keras prints export chatter
                synth = build_synthetic_pairs(synth_dir)
            cases += find_pairs(synth, per_kind=1, consumer_types=["RELU"])
        print(f"{len(cases)} pairs from {len(paths)} networks", file=sys.stderr)
        out = {}
        for rt in [r for r in a.runtimes.split(",") if r]:
            spec = RunSpec(delegate=rt, threads=1, cpu_mask=mask, num_runs=30, min_secs=0.3, warmup_runs=3,
                           report_peak_memory=False)
            res = check_rules(LocalDevice(nice=nice), rt, cases, spec=spec, rounds=a.rounds,
                              progress=lambda m: print(f"{rt} {m}", file=sys.stderr))
            agree, total = agreement(res)
            out[rt] = {"agree": agree, "kinds_checked": total, "kinds": res["kinds"], "cases": res["cases"],
                       "disagree": sorted(k for k, v in res["kinds"].items() if v["agree"] is False),
                       "inconclusive": sorted(k for k, v in res["kinds"].items() if v["agree"] is None)}
    except OpcostError as err:
        print(json.dumps({"error": err.to_dict()}))
        return 2
    print(json.dumps({"runtimes": out, "n_pairs": len(cases), "n_networks": len(paths),
                      "settings": {"cpu_mask": mask, "nice": nice, "rounds": a.rounds, "per_kind": a.per_kind,
                                   "consumers": a.consumers},
                      "loadavg": [float(x) for x in open("/proc/loadavg").read().split()[:3]],
                      "wall_s": round(time.time() - t0, 1)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
