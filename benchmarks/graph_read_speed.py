"""How many .tflite files per second models_zoo.graph reads, with features.

Each read is ``read_graph(path)`` (ops, shapes, options, FLOPs/MACs, bytes) plus
``Graph.blocks()`` (cut points and structure keys) and ``Graph.summary()``. Files are
read round-robin until ``--reads`` reads are done. Without ``--dir``, ~50 small-to-medium
models (random residual / inverted-residual / plain CNNs, an MLP, and a few
keras.applications networks without weights) are generated with TensorFlow into a temp
dir (``--save DIR`` keeps them for next time).

Prints one JSON object: files_per_s (wall clock), cpu_files_per_s (process CPU time;
less sensitive to other jobs on a shared machine), n_files, n_reads, mean_ops,
mean_tensors, mean_blocks, target_files_per_s, meets_target, loadavg_1m.

    python benchmarks/graph_read_speed.py --json
    python benchmarks/graph_read_speed.py --dir /path/to/zoo --json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

TARGET_FILES_PER_S = 500.0


def _random_net(rng, keras):
    L = keras.layers
    hw = int(rng.choice([32, 48, 64, 96]))
    inp = keras.Input((hw, hw, 3), batch_size=1)
    width = int(rng.choice([8, 16, 24]))
    x = L.Conv2D(width, 3, strides=2, padding="same", activation="relu")(inp)
    for _ in range(int(rng.integers(2, 13))):
        kind = rng.choice(["res", "inv", "plain", "down"])
        if kind == "res":
            y = L.Conv2D(width, 3, padding="same", activation="relu")(x)
            y = L.Conv2D(width, 3, padding="same")(y)
            x = L.ReLU()(L.Add()([x, y]))
        elif kind == "inv":
            y = L.Conv2D(width * int(rng.choice([3, 6])), 1, activation="relu6")(x)
            y = L.DepthwiseConv2D(int(rng.choice([3, 5])), padding="same", activation="relu6")(y)
            y = L.Conv2D(width, 1)(y)
            x = L.Add()([x, y])
        elif kind == "plain":
            x = L.Conv2D(width, int(rng.choice([1, 3])), padding="same", activation="relu")(x)
        elif x.shape[1] > 4:
            width = min(width * 2, 128)
            x = L.Conv2D(width, 3, strides=2, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(10, activation="softmax")(x)
    return keras.Model(inp, x)


def generate(out_dir: str, n_models: int = 50, seed: int = 0) -> list:
    """Write ``n_models`` .tflite files into ``out_dir`` (TensorFlow needed)."""
    # The converter prints graph dumps to stdout and logs to stderr (Python and C level):
    # both go to a log file, so stdout keeps the JSON and stderr a progress line.
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log = tempfile.NamedTemporaryFile("w+", prefix="graph_bench_convert_", suffix=".log", delete=False)
    progress = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    ok = False
    try:
        paths = _generate(out_dir, n_models, seed, progress)
        ok = True
        return paths
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        progress.close()
        log.close()
        if ok:
            os.remove(log.name)
        else:
            print(f"model generation failed; TensorFlow's output is in {log.name}", file=sys.stderr)


def _generate(out_dir: str, n_models: int, seed: int, progress) -> list:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    from tensorflow import keras

    rng = np.random.default_rng(seed)
    builders = [
        lambda: keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10),
        lambda: keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), weights=None, classes=10,
                                                    include_preprocessing=False),
        lambda: keras.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=10),
        lambda: keras.Sequential([keras.Input((64,), batch_size=1), keras.layers.Dense(128, activation="relu"),
                                  keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)]),
    ]
    paths = []
    for i in range(n_models):
        model = builders[i]() if i < len(builders) else _random_net(rng, keras)
        data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        p = os.path.join(out_dir, f"bench_{i:03d}.tflite")
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
        keras.backend.clear_session()
        print(f"generated {i + 1}/{n_models}", file=progress)
    return paths


def bench(paths: list, n_reads: int) -> dict:
    from models_zoo.graph import read_graph

    stats = []
    for p in paths:  # warm-up pass (imports, option layouts) and per-file sizes
        g = read_graph(p)
        stats.append((len(g.ops), len(g.tensors), len(g.blocks())))
    gc.collect()
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    flops = 0
    for k in range(n_reads):
        g = read_graph(paths[k % len(paths)])
        flops += g.summary()["flops"] + len(g.blocks())
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    n = len(paths)
    return {
        "files_per_s": round(n_reads / wall, 1),
        "cpu_files_per_s": round(n_reads / cpu, 1) if cpu > 0 else None,
        "n_files": n,
        "n_reads": n_reads,
        "mean_ops": round(sum(s[0] for s in stats) / n, 1),
        "max_ops": max(s[0] for s in stats),
        "mean_tensors": round(sum(s[1] for s in stats) / n, 1),
        "mean_blocks": round(sum(s[2] for s in stats) / n, 1),
        "target_files_per_s": TARGET_FILES_PER_S,
        "meets_target": n_reads / wall > TARGET_FILES_PER_S,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="read all .tflite files under DIR (recursively)")
    ap.add_argument("--save", help="generate the models into SAVE and keep them (no --dir)")
    ap.add_argument("--n-models", type=int, default=50, help="models to generate (no --dir)")
    ap.add_argument("--reads", type=int, default=1000, help="total reads (files are repeated)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object (default)")
    args = ap.parse_args(argv)

    if args.dir:
        paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(args.dir) for f in fs
                       if f.endswith(".tflite"))
        if not paths:
            print(f"error: no .tflite files under {args.dir}", file=sys.stderr)
            return 2
        result = bench(paths, args.reads)
    elif args.save:
        os.makedirs(args.save, exist_ok=True)
        result = bench(generate(args.save, args.n_models), args.reads)
    else:
        with tempfile.TemporaryDirectory(prefix="graph_bench_") as d:
            result = bench(generate(d, args.n_models), args.reads)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
