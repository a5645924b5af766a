"""Prediction speed: networks per second for N zoo .tflite files, features included.

    python benchmarks/predict_speed.py --json [--dir DIR] [--n 1000] [--predictor P]

Timed: reading every file (graph reader), building op features, kernel grouping and
the predictor's batch prediction. Not timed: building the zoo and fitting the predictor.
Reported with the wall time: the CPU time of this process and its children (file-reading
workers) and the 1-minute load average before and after, since the machine may be shared.
``--workers``: processes reading files (``ops_of_files``; default 1: serial).
Without --dir, a zoo mix is built (cached): mbv2-space and nb201 samples plus
micro-benchmarks; files are cycled to reach --n predictions when fewer exist.
Without --predictor, one is fitted on the li2024 GPU per-op data shipped in data/
(the fitted model's accuracy does not matter here, only its size and shape).
Both are done in a child process, so the timed process holds what `opcost predict`
holds and not TensorFlow's converted models (until session 6 the first run of a fresh
checkout built the zoo in the timed process and was the slowest run of every session).
Target: >= 500 networks/s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def zoo_files(per_family: int, seed: int) -> list:
    from models_zoo import micro, nas

    files = []
    with contextlib.redirect_stdout(sys.stderr):
        files += nas.sample("mbv2-space", per_family, seed)
        files += nas.sample("nb201", per_family, seed)
        ops = ["conv2d", "depthwise_conv2d", "dense", "add", "mbconv", "mbconv_se", "resnet_bottleneck"]
        for op in ops:
            files += micro.build_micro(op, max(1, per_family // len(ops)), seed)
    return [str(p) for p in files]


def default_predictor(path: str) -> str:
    from host.modeler.importers import default_data_dir, import_dataset
    from host.modeler.service import fit_from_store
    from host.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        with Store.open(os.path.join(tmp, "li.db")) as store:
            import_dataset("li2024", default_data_dir("li2024"), store)
            fit_from_store(store, device="li2024/pixel4", delegate="gpu", out_path=path)
    return path


def _cpu_s() -> float:
    """CPU seconds used so far by this process and its waited-for children."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def setup_in_child(args, tmpdir: str) -> dict:
    """Zoo files and predictor path, made by a child process (its output goes to stderr)."""
    import subprocess

    out = os.path.join(tmpdir, "setup.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--setup-json", out,
           "--per-family", str(args.per_family), "--seed", str(args.seed)]
    if args.dir:
        cmd += ["--dir", args.dir]
    if args.predictor:
        cmd += ["--predictor", args.predictor]
    subprocess.run(cmd, stdout=sys.stderr, check=True)
    with open(out) as f:
        return json.load(f)


def setup(args, out_path: str) -> None:
    files = ([str(p) for p in sorted(Path(args.dir).rglob("*.tflite"))] if args.dir
             else zoo_files(args.per_family, args.seed))
    pred = args.predictor
    if files and not pred:
        pred = default_predictor(os.path.join(os.path.dirname(out_path), "speed.predictor"))
    with open(out_path, "w") as f:
        json.dump({"files": files, "predictor": pred}, f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="folder of .tflite files (searched recursively)")
    ap.add_argument("--n", type=int, default=1000, help="predictions to time (files are cycled)")
    ap.add_argument("--per-family", type=int, default=100, help="zoo files per family when building")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--predictor", help="predictor file (default: fit one on li2024 GPU data)")
    ap.add_argument("--batch", type=int, default=250, help="files per prediction batch")
    ap.add_argument("--workers", type=int, default=1, help="file-reading processes (1 = serial)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--setup-json", help=argparse.SUPPRESS)  # the child's side of setup_in_child
    args = ap.parse_args()
    if args.setup_json:
        setup(args, args.setup_json)
        return 0

    from host.modeler.predictor_file import load_predictor
    from host.modeler.predictor import ops_of_files

    made = setup_in_child(args, tempfile.mkdtemp())
    files = made["files"]
    if not files:
        print(json.dumps({"error": f"no .tflite files under {args.dir}"}))
        return 2
    predictor, meta = load_predictor(made["predictor"])
    seq = [files[i % len(files)] for i in range(args.n)]

    predictor.predict_ops(ops_of_files(seq[:5]))  # warm imports and caches
    load_before = os.getloadavg()[0]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    n_ops = 0
    for i in range(0, len(seq), args.batch):
        chunk = seq[i:i + args.batch]
        names = [f"{j}:{p}" for j, p in enumerate(chunk, start=i)]
        ops = ops_of_files(chunk, names, workers=args.workers)
        n_ops += len(ops)
        out = predictor.predict_ops(ops)
        assert len(out) == len(chunk)
    elapsed = time.perf_counter() - t0
    cpu_s = _cpu_s() - cpu0
    res = {
        "networks_per_s": round(len(seq) / elapsed, 1),
        "n_predictions": len(seq),
        "n_distinct_files": len(files),
        "mean_ops_per_network": round(n_ops / len(seq), 1),
        "elapsed_s": round(elapsed, 3),
        "cpu_s": round(cpu_s, 3),
        "networks_per_cpu_s": round(len(seq) / cpu_s, 1) if cpu_s > 0 else None,
        "workers": args.workers,
        "batch": args.batch,
        "predictor": {"device": meta.get("device"), "delegate": meta.get("delegate"),
                      "kernel_types": len(meta.get("kernel_types", []))},
        "target_networks_per_s": 500,
        "ok": len(seq) / elapsed >= 500,
        "tensorflow_in_timed_process": "tensorflow" in sys.modules,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(res) if args.json else json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
