"""Match one measurement's op-profile rows to the ops of its graph.

Two kinds of rows carry per-op times:

- TFLite op rows (``CONV_2D ... [outputs]:12``): the number after ``:`` is the TFLite node
  index, which is the op's index in the main subgraph. Used when the row's type agrees
  with the graph op at that index.
- XNNPACK operator rows (``Convolution (NHWC, F32) IGEMM ... Delegate/Convolution (NHWC,
  F32) IGEMM:3``): the number is the operator's position in its XNNPACK runtime, counted
  from 0 in every delegate partition, not a graph index. They come in execution order, one
  XNNPACK operator per fused kernel (``rules/xnnpack.yaml`` grouping), so each partition's
  operators are matched in order to the delegated graph kernels of that partition, their
  types checked against ``rules/xnnpack_operators.yaml``. Layout/conversion operators and
  ops XNNPACK may add or drop (reshape, pad, convert) are left out on both sides.

A measurement's delegate rows are matched all or nothing: when anything does not line up
(rows merged by name across partitions, i.e. ``times called`` > 1; operator indices out of
order; a different number of partitions or kernels; a type that disagrees) none of them
is used and ``OpRowMatch.skipped`` says why. A TFLite row whose type disagrees with the
graph, or whose index is not in it, means the graph is not the one measured: then no row
of the measurement is used. Partition-level delegate rows (``TfLiteXNNPackDelegate``) and
rows of other delegates are never assigned to graph ops.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from opcost.errors import UsageError

OPERATOR_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules", "xnnpack_operators.yaml")
DELEGATE_ROW_PREFIX = "Delegate/"


@dataclass
class OpRowMatch:
    """What ``match_op_rows`` made of one measurement's rows.

    ``latency_ms``: graph op index -> time of that op (a fused kernel's time sits on its
    producer op, its absorbed ops get 0.0). ``skipped``: why rows were left out (None: all
    usable rows were assigned). Counts are of op-profile rows."""

    latency_ms: Dict[int, float] = field(default_factory=dict)
    skipped: Optional[str] = None
    n_assigned_rows: int = 0
    n_skipped_rows: int = 0
    n_ignored_rows: int = 0      # layout/convert operators, never matched by design
    n_delegate_rows: int = 0


def load_operator_rules(path: Optional[str] = None) -> Dict[str, Any]:
    """The XNNPACK operator table (``rules/xnnpack_operators.yaml``), patterns compiled."""
    import yaml

    path = path or OPERATOR_RULES
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    try:
        ops = [(re.compile(e["pattern"]), frozenset(str(t).upper() for t in e["ops"]))
               for e in raw.get("operators") or []]
        ignore = [re.compile(p) for p in raw.get("ignore_operators") or []]
    except (KeyError, TypeError, re.error) as err:
        raise UsageError(f"{path}: bad XNNPACK operator table ({err})",
                         hint="each operators entry needs 'pattern' (a regex) and 'ops' (a list)") from None
    return {"operators": ops, "ignore_operators": ignore,
            "ignore_ops": frozenset(str(t).upper() for t in raw.get("ignore_ops") or [])}


def rows_from_records(records) -> pd.DataFrame:
    """The ``section == "run"`` rows of parsed ``OpRecord``s as ``match_op_rows`` takes them
    (the columns ``Store.ops_df`` gives), in table order."""
    cols = ["node_type", "name", "op_index", "avg_ms", "times_called", "subgraph", "delegated"]
    return pd.DataFrame([(o.node_type, o.name, o.index, o.avg_ms, o.times_called, o.subgraph, o.delegated)
                         for o in records if o.section == "run"], columns=cols)


def _norm_type(t: Any) -> str:
    """TFLite op type as the graph reader names it (a profile type may carry '/detail')."""
    s = str(t or "").split("/", 1)[0].strip().upper()
    return "CONV_2D" if s == "CONV_2D_GROUP" else s


def _ignored_operator(node_type: str, rules: Dict[str, Any]) -> bool:
    return any(p.match(node_type) for p in rules["ignore_operators"])


def _operator_ops(node_type: str, rules: Dict[str, Any]) -> Optional[frozenset]:
    for pat, ops in rules["operators"]:
        if pat.match(node_type):
            return ops
    return None


def match_op_rows(rows: pd.DataFrame, ops: pd.DataFrame, *, delegate: str,
                  kernels: Optional[pd.DataFrame] = None, operator_rules: Optional[Dict[str, Any]] = None,
                  fusion_rules: Optional[Dict[str, Any]] = None) -> OpRowMatch:
    """Assign one measurement's op-profile ``rows`` to the ops of its graph.

    ``rows``: its ``section == "run"`` rows in table order (columns ``node_type``, ``name``,
    ``op_index`` (the row's trailing number), ``avg_ms``, ``times_called``, ``subgraph``,
    ``delegated``, as ``Store.ops_df`` gives them). ``ops``: the graph's op table
    (``op_index``, ``op_type``). ``kernels``: ``group_ops(ops, xnnpack rules)`` when
    already computed. ``delegate``: the run's delegate; XNNPACK operator rows are matched
    only for ``xnnpack`` runs."""
    out = OpRowMatch()
    rows = rows.reset_index(drop=True)
    if not len(rows):
        return out
    sub = rows["subgraph"].fillna(0).to_numpy() if "subgraph" in rows else np.zeros(len(rows))
    main = rows[sub == 0]
    out.n_skipped_rows += int(len(rows) - len(main))
    graph_type = dict(zip(ops["op_index"].astype(int), ops["op_type"].map(_norm_type)))
    names = main["name"].fillna("").astype(str)
    delegated = main["delegated"].fillna(False).astype(bool).to_numpy()
    is_xnn = delegated & names.str.startswith(DELEGATE_ROW_PREFIX).to_numpy()
    idx = pd.to_numeric(main["op_index"], errors="coerce").to_numpy()
    tfl = main[~delegated & np.isfinite(idx)]
    out.n_delegate_rows = int(delegated.sum())

    # TFLite op rows: index + type, else the graph is not the one that was measured.
    tfl_times: Dict[int, float] = {}
    n_repeated = 0
    for r in tfl.itertuples(index=False):
        i = int(r.op_index)
        if i not in graph_type:
            return _skip_all(out, rows, f"op row {r.name!r} has node index {i}, which the graph "
                                        f"(ops 0-{max(graph_type) if graph_type else -1}) does not have")
        rt = _norm_type(r.node_type)
        if rt and rt != "UNKNOWN" and rt != graph_type[i]:
            return _skip_all(out, rows, f"op row {r.name!r} is a {rt} but graph op {i} is a {graph_type[i]}")
        if r.times_called is not None and not pd.isna(r.times_called) and int(r.times_called) > 1:
            n_repeated += 1  # an op run several times per inference: not one op's time
            continue
        tfl_times[i] = float(r.avg_ms)
    out.latency_ms.update(tfl_times)
    out.n_assigned_rows += len(tfl_times)
    out.n_skipped_rows += n_repeated
    # Partition-level delegate rows (whole partitions) are not per-op times.
    n_partition_rows = int((delegated & ~is_xnn).sum())
    out.n_skipped_rows += n_partition_rows
    xnn = main[is_xnn].reset_index(drop=True)
    if not len(xnn):
        if n_repeated:
            out.skipped = f"{n_repeated} op row(s) called more than once per run"
        return out
    if delegate != "xnnpack":
        out.n_skipped_rows += len(xnn)
        out.skipped = f"{len(xnn)} {delegate} delegate operator row(s) cannot be matched to graph ops"
        return out
    reason, assigned, n_ignored = _match_xnnpack(xnn, ops, set(tfl["op_index"].astype(int)), kernels,
                                                 operator_rules or load_operator_rules(), fusion_rules)
    out.n_ignored_rows += n_ignored
    if reason is not None:
        out.n_skipped_rows += len(xnn) - n_ignored
        out.skipped = reason
        return out
    out.latency_ms.update(assigned)
    out.n_assigned_rows += len(xnn) - n_ignored
    return out


def _skip_all(out: OpRowMatch, rows: pd.DataFrame, reason: str) -> OpRowMatch:
    return OpRowMatch(skipped=reason, n_skipped_rows=len(rows),
                      n_delegate_rows=int(rows["delegated"].fillna(False).astype(bool).sum()))


def _partitions_of_rows(xnn: pd.DataFrame) -> Tuple[Optional[str], List[pd.DataFrame]]:
    """Split XNNPACK rows into partitions (operator index back to 0), checking 0, 1, 2, ..."""
    k = pd.to_numeric(xnn["op_index"], errors="coerce").to_numpy()
    if not np.all(np.isfinite(k)):
        return "XNNPACK rows without an operator index (the ':N' suffix)", []
    starts = np.flatnonzero(k == 0)
    if not len(starts) or starts[0] != 0:
        return "XNNPACK operator indices do not start at 0", []
    parts = []
    bounds = list(starts) + [len(k)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if not np.array_equal(k[a:b], np.arange(b - a)):
            return "XNNPACK operator indices are not in execution order (0, 1, 2, ...)", []
        parts.append(xnn.iloc[a:b])
    return None, parts


def _match_xnnpack(xnn: pd.DataFrame, ops: pd.DataFrame, not_delegated: set, kernels: Optional[pd.DataFrame],
                   rules: Dict[str, Any], fusion_rules: Optional[Dict[str, Any]]):
    """(reason or None, op index -> ms, number of ignored operator rows)."""
    times = pd.to_numeric(xnn["times_called"], errors="coerce")
    merged = int((times > 1).sum())
    if merged:
        worst = int(times.max())
        return (f"{merged} XNNPACK row(s) are called up to {worst} times per run: operators of "
                "several delegate partitions share a name and were merged into one row", {}, 0)
    reason, parts = _partitions_of_rows(xnn)
    if reason:
        return reason, {}, 0
    if kernels is None:
        from host.modeler.kernels import group_ops, load_rules

        kernels = group_ops(ops, fusion_rules or load_rules("xnnpack"))
    op_index_of = dict(zip(ops.index, ops["op_index"].astype(int)))
    # Delegated graph kernels, split into partitions where a non-delegated op runs between.
    graph_parts: List[List[Tuple[List[int], str]]] = []
    prev_last: Optional[int] = None
    order = sorted(ops["op_index"].astype(int))
    position = {i: p for p, i in enumerate(order)}
    for rows_, t in zip(kernels["op_rows"], kernels["op_type"]):
        members = [op_index_of[r] for r in rows_]
        dele = [m not in not_delegated for m in members]
        if not any(dele):
            continue
        if not all(dele):
            return f"kernel at op {members[0]} mixes delegated and non-delegated ops", {}, 0
        first = position[members[0]]
        gap = prev_last is None or any(order[p] in not_delegated for p in range(prev_last + 1, first))
        if gap:
            graph_parts.append([])
        graph_parts[-1].append((members, _norm_type(t)))
        prev_last = position[members[-1]]
    if len(graph_parts) != len(parts):
        return (f"{len(parts)} XNNPACK partition(s) in the profile but {len(graph_parts)} delegated "
                "run(s) of graph ops", {}, 0)
    assigned: Dict[int, float] = {}
    n_ignored = 0
    for p, (gk, xr) in enumerate(zip(graph_parts, parts)):
        gk = [g for g in gk if g[1] not in rules["ignore_ops"]]
        keep = np.array([not _ignored_operator(str(t), rules) for t in xr["node_type"]], dtype=bool)
        n_ignored += int((~keep).sum())
        xr = xr[keep]
        if len(gk) != len(xr):
            return (f"partition {p}: {len(gk)} graph kernel(s) but {len(xr)} XNNPACK operator(s)", {}, n_ignored)
        for (members, gtype), r in zip(gk, xr.itertuples(index=False)):
            allowed = _operator_ops(str(r.node_type), rules)
            if allowed is None:
                return f"unknown XNNPACK operator {r.node_type!r}", {}, n_ignored
            if gtype not in allowed:
                return (f"partition {p}: XNNPACK operator {r.node_type!r} (:{int(r.op_index)}) cannot run "
                        f"graph op {members[0]} ({gtype})", {}, n_ignored)
            assigned[members[0]] = float(r.avg_ms)
            for m in members[1:]:
                assigned[m] = 0.0
    return None, assigned, n_ignored
