#!/usr/bin/env python3
"""Round trip of the ganesan2020 layer tables: build every network from its row of
onnxEmbeddings.csv (models_zoo.ganesan2020.build_network, Keras -> TFLite through the zoo
cache), read the .tflite back with models_zoo.graph and compare its layer_table with the
dataset row for row. Prints one JSON object: how many of the networks match exactly,
the mismatches, and the build/convert times per network (from the cache sidecars;
cache hits take no time).

    python tools/ganesan2020_roundtrip.py [--quantize dynamic|none] [--cache-dir DIR] [NAME ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from models_zoo import ganesan2020 as G  # noqa: E402
from models_zoo.convert import QUANTIZE_MODES, read_sidecar  # noqa: E402
from opcost.errors import ZooError  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="networks (default: all 118)")
    ap.add_argument("--quantize", choices=QUANTIZE_MODES, default=G.DEFAULT_QUANTIZE)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    names = G.expand_names(args.names) if args.names else G.network_names()
    results, t_all = [], time.perf_counter()
    for n in names:
        t0 = time.perf_counter()
        try:
            r = G.round_trip(n, quantize=args.quantize, cache_dir=args.cache_dir)
        except ZooError as err:
            r = {"name": n, "match": False, "difference": f"build failed: {err.message}"}
        r["wall_s"] = round(time.perf_counter() - t0, 2)
        side = read_sidecar(r["path"]) if r.get("path") else {}
        r["build_s"], r["convert_s"] = side.get("build_s"), side.get("convert_s")
        r["size_bytes"] = side.get("size_bytes")
        results.append(r)
        print(f"{n}: {'ok' if r['match'] else 'MISMATCH ' + str(r['difference'])} ({r['wall_s']} s)",
              file=sys.stderr, flush=True)
    conv = [r["build_s"] + r["convert_s"] for r in results if r.get("build_s") is not None]
    doc = {
        "quantize": args.quantize,
        "n_networks": len(results),
        "n_exact": sum(r["match"] for r in results),
        "mismatches": [{"name": r["name"], "difference": r["difference"]} for r in results if not r["match"]],
        "unsupported_ops": sorted({u["type"] for r in results for u in r.get("unsupported", [])}),
        "skipped_op_types": sorted({s for r in results for s in r.get("skipped", [])}),
        "build_plus_convert_s": {"median": round(sorted(conv)[len(conv) // 2], 2) if conv else None,
                                 "max": round(max(conv), 2) if conv else None,
                                 "total": round(sum(conv), 1)},
        "wall_s_total": round(time.perf_counter() - t_all, 1),
        "per_network": [{k: r.get(k) for k in ("name", "match", "build_s", "convert_s", "size_bytes")}
                        for r in results],
    }
    print(json.dumps(doc, indent=1))
    return 0 if doc["n_exact"] == doc["n_networks"] else 1


if __name__ == "__main__":
    sys.exit(main())
