"""Pieces shared by the seeded samplers (NAS spaces, micro-benchmarks)."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Dict, List

from opcost.errors import ZooError


def config_id(config: Dict[str, Any]) -> str:
    """Short stable hash of a configuration (names files, detects duplicates)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def check_count_seed(count: int, seed: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ZooError(f"count must be a positive integer, got {count!r}", hint="e.g. --count 10")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ZooError(f"seed must be an integer, got {seed!r}", hint="e.g. --seed 0")


def draw_distinct(draw: Callable[[], Dict[str, Any]], want: int, max_draws: int) -> List[Dict[str, Any]]:
    """Up to ``want`` distinct configurations from at most ``max_draws`` calls of ``draw``."""
    out, seen = [], set()
    for _ in range(max_draws):
        cfg = draw()
        cid = config_id(cfg)
        if cid not in seen:
            seen.add(cid)
            out.append(cfg)
            if len(out) == want:
                break
    return out
