"""Group ops into the kernels a runtime actually executes, from rules stored as data.

``rules/<runtime>.yaml`` says which op types are absorbed into which producers (and
when), how a kernel's type is chosen from its producer op, and which algorithm choices
are learnt from measured kernel names (``selectors``). ``group_ops`` applies any rule set
with one generic loop; ``KernelGrouper`` adds the learnt selectors (fit on training
networks only) and assigns kernel types.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from opcost.errors import PredictorError, UsageError

RULES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rules")


def load_rules(runtime: str, rules_dir: Optional[str] = None) -> Dict[str, Any]:
    """The rule set of ``runtime`` (``gpu``, ``xnnpack``, ``cpu``) from ``rules/<runtime>.yaml``."""
    import yaml

    d = rules_dir or RULES_DIR
    path = os.path.join(d, f"{runtime}.yaml")
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(d) if f.endswith(".yaml")) if os.path.isdir(d) else []
        raise UsageError(f"no fusion rules for runtime {runtime!r} ({path})",
                         hint=f"use one of: {', '.join(known)}")
    with open(path, encoding="utf-8") as f:
        rules = yaml.safe_load(f) or {}
    return validate_rules(rules, source=path)


def validate_rules(rules: Dict[str, Any], source: str = "rules") -> Dict[str, Any]:
    """Check the structure of a rule set; returns it with defaults filled in."""
    if not isinstance(rules, dict):
        raise UsageError(f"{source}: a rule set must be a mapping")
    out = {"runtime": rules.get("runtime", "?"), "absorb": rules.get("absorb") or [],
           "kernel_types": rules.get("kernel_types") or [], "selectors": rules.get("selectors") or {}}
    for i, r in enumerate(out["absorb"]):
        if not isinstance(r, dict) or "ops" not in r or "into" not in r:
            raise UsageError(f"{source}: absorb rule {i} needs 'ops' and 'into' lists")
    for i, r in enumerate(out["kernel_types"]):
        if not isinstance(r, dict) or "name" not in r or "when" not in r:
            raise UsageError(f"{source}: kernel_types rule {i} needs 'name' and 'when'")
        sel = r.get("selector")
        if sel is not None and sel not in out["selectors"]:
            raise UsageError(f"{source}: kernel_types rule {r['name']!r} uses unknown selector {sel!r}",
                             hint="define it under 'selectors'")
    return out


def matches(row: Dict[str, Any], when: Dict[str, Any]) -> bool:
    """Does an op row satisfy a ``when`` condition?

    Each key is a column: a list means "one of", ``{min:, max:}`` a closed range, any
    other value equality. Keys that are not columns (e.g. ``single_consumer``) are ignored
    here; the grouping loop checks them."""
    for key, cond in (when or {}).items():
        if key == "single_consumer":
            continue
        v = row.get(key)
        if isinstance(cond, list):
            if v not in cond:
                return False
        elif isinstance(cond, dict):
            try:
                fv = float(v)
            except (TypeError, ValueError):
                return False
            if np.isnan(fv):
                return False
            if "min" in cond and fv < float(cond["min"]):
                return False
            if "max" in cond and fv > float(cond["max"]):
                return False
        else:
            if v is None:
                return False
            if isinstance(cond, (int, float)) and not isinstance(cond, bool):
                try:
                    if float(v) != float(cond):
                        return False
                except (TypeError, ValueError):
                    return False
            elif v != cond:
                return False
    return True


def _consumers(ops: List[Dict[str, Any]]) -> Dict[int, int]:
    count: Dict[int, int] = {}
    for op in ops:
        for t in op.get("inputs") or ():
            count[t] = count.get(t, 0) + 1
    return count


def group_ops(ops: pd.DataFrame, rules: Dict[str, Any], *, network_col: Optional[str] = None) -> pd.DataFrame:
    """Group an op table into kernels with the ``absorb`` rules (one generic loop).

    Ops are taken in table order (by ``op_index`` when present), per network when
    ``network_col`` is given. An op whose type is in a rule's ``ops`` joins the current
    kernel when that kernel's producer type is in the rule's ``into`` and, with
    ``single_consumer``, the op reads the kernel's last output and nothing else reads it
    (checked only when the table has ``inputs``/``outputs`` tensor ids; otherwise table
    adjacency stands for data flow). Returns one row per kernel: the producer op's
    columns plus ``n_ops``, ``fused_ops`` ('+'-joined absorbed types), ``op_rows`` (the
    index labels of its ops), ``flops_kernel`` and ``bytes_out`` of the last member."""
    if "op_type" not in ops.columns:
        raise UsageError("op table has no 'op_type' column",
                         hint="build it with host.modeler.features.ops_from_li2024 / ops_from_graph")
    absorb = rules.get("absorb") or []
    groups = [(None, ops)] if network_col is None else list(ops.groupby(network_col, sort=False))
    out_rows: List[Dict[str, Any]] = []
    for _net, g in groups:
        if "op_index" in g.columns:
            g = g.sort_values("op_index", kind="stable")
        records = g.to_dict("records")
        labels = list(g.index)
        has_flow = "inputs" in g.columns and "outputs" in g.columns and all(
            r.get("inputs") is not None and r.get("outputs") is not None for r in records)
        consumers = _consumers(records) if has_flow else {}
        current: Optional[Dict[str, Any]] = None
        last: Optional[Dict[str, Any]] = None
        for label, op in zip(labels, records):
            joined = False
            if current is not None:
                for rule in absorb:
                    if op["op_type"] not in rule["ops"] or current["op_type"] not in rule["into"]:
                        continue
                    if not matches(op, rule.get("when") or {}):
                        continue
                    if has_flow:
                        last_out = set(last.get("outputs") or ())
                        reads = last_out & set(op.get("inputs") or ())
                        if not reads:
                            continue
                        if (rule.get("when") or {}).get("single_consumer") and any(
                                consumers.get(t, 0) != 1 for t in reads):
                            continue
                    joined = True
                    break
            if joined:
                current["n_ops"] += 1
                current["fused_ops"] = (current["fused_ops"] + "+" if current["fused_ops"] else "") + op["op_type"]
                current["op_rows"].append(label)
                current["flops_kernel"] += float(op.get("flops") or 0.0) if not _isnan(op.get("flops")) else 0.0
                current["bytes_out"] = op.get("bytes_out", current.get("bytes_out"))
            else:
                current = dict(op)
                current["n_ops"] = 1
                current["fused_ops"] = ""
                current["op_rows"] = [label]
                f = op.get("flops")
                current["flops_kernel"] = 0.0 if _isnan(f) else float(f)
                out_rows.append(current)
            last = op
    cols = list(ops.columns) + ["n_ops", "fused_ops", "op_rows", "flops_kernel"]
    return pd.DataFrame(out_rows, columns=cols)


def _isnan(v: Any) -> bool:
    try:
        return v is None or bool(np.isnan(float(v)))
    except (TypeError, ValueError):
        return True


class _Selector:
    """A learnt yes/no algorithm choice (e.g. Winograd), fitted on candidate ops' kernel names."""

    def __init__(self, name: str, spec: Dict[str, Any]) -> None:
        self.name = name
        self.spec = spec

    def fit(self, X: pd.DataFrame, labels: np.ndarray) -> "_Selector":
        from sklearn.tree import DecisionTreeClassifier

        self.n_seen_ = int(len(labels))
        self.n_yes_ = int(np.sum(labels))
        if self.n_seen_ == 0 or self.n_yes_ in (0, self.n_seen_):
            self.constant_ = bool(self.n_yes_ > 0) if self.n_seen_ else bool(self.spec.get("default", False))
            self.tree_ = None
            return self
        if self.spec.get("method", "decision_tree") != "decision_tree":
            raise UsageError(f"selector {self.name!r}: unknown method {self.spec.get('method')!r}",
                             hint="use method: decision_tree")
        self.constant_ = None
        self.tree_ = DecisionTreeClassifier(max_depth=int(self.spec.get("max_depth", 3)),
                                            min_samples_leaf=int(self.spec.get("min_samples_leaf", 5)),
                                            random_state=0).fit(X.to_numpy(dtype=float), labels)
        self.train_accuracy_ = float(self.tree_.score(X.to_numpy(dtype=float), labels))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.tree_ is None:
            return np.full(len(X), bool(self.constant_))
        return self.tree_.predict(X.fillna(-1).to_numpy(dtype=float)).astype(bool)

    def describe(self) -> str:
        if self.tree_ is None:
            return f"{self.name}: always {self.constant_} ({self.n_yes_}/{self.n_seen_} seen)"
        from sklearn.tree import export_text

        return (f"{self.name}: tree on {self.n_yes_}/{self.n_seen_} positives, train acc "
                f"{self.train_accuracy_:.3f}\n" + export_text(self.tree_, feature_names=list(self.spec["features"])))


class KernelGrouper:
    """Ops -> kernels with types, for one runtime (``gpu``, ``xnnpack``, ``cpu``).

    ``fit(ops, kernel_names)`` learns the rule set's selectors from measured kernel names
    of training networks (optional; without it selectors answer their ``default``).
    ``transform(ops)`` groups and types; it needs graph structure only."""

    def __init__(self, runtime: str = "gpu", rules: Optional[Dict[str, Any]] = None,
                 network_col: Optional[str] = "network") -> None:
        self.runtime = runtime
        self.rules = rules
        self.network_col = network_col

    def _rules(self) -> Dict[str, Any]:
        return validate_rules(self.rules) if self.rules is not None else load_rules(self.runtime)

    def _net_col(self, ops: pd.DataFrame) -> Optional[str]:
        return self.network_col if self.network_col and self.network_col in ops.columns else None

    def fit(self, ops: pd.DataFrame, kernel_names: Optional[Sequence[Any]] = None) -> "KernelGrouper":
        """Learn selectors. ``kernel_names`` is aligned with the rows of ``ops``; each
        kernel's label is taken from its producer op's name."""
        self.rules_ = self._rules()
        self.selectors_: Dict[str, _Selector] = {}
        kernels = group_ops(ops, self.rules_, network_col=self._net_col(ops))
        names = None
        if kernel_names is not None:
            if len(kernel_names) != len(ops):
                raise UsageError(f"{len(kernel_names)} kernel names for {len(ops)} ops")
            by_label = dict(zip(ops.index, kernel_names))
            names = [by_label[rows[0]] for rows in kernels["op_rows"]]
        for name, spec in self.rules_["selectors"].items():
            sel = _Selector(name, spec)
            cand = np.zeros(len(kernels), dtype=bool)
            for rule in self.rules_["kernel_types"]:
                if rule.get("selector") == name:
                    cand |= np.array([matches(r, rule["when"]) for r in kernels.to_dict("records")], dtype=bool)
            if names is None:
                sel.fit(kernels.loc[cand, spec["features"]].iloc[:0], np.zeros(0, dtype=int))
            else:
                rx = re.compile(spec["label_regex"])
                lab = np.array([bool(rx.search(str(n))) for n, c in zip(names, cand) if c], dtype=int)
                sel.fit(kernels.loc[cand, spec["features"]].fillna(-1), lab)
            self.selectors_[name] = sel
        return self

    def transform(self, ops: pd.DataFrame) -> pd.DataFrame:
        """Kernels table (see ``group_ops``) with a ``kernel_type`` column."""
        if not hasattr(self, "rules_"):
            raise PredictorError("KernelGrouper is not fitted", hint="call fit(ops) first")
        kernels = group_ops(ops, self.rules_, network_col=self._net_col(ops))
        kernels["kernel_type"] = assign_kernel_types(kernels, self.rules_, self.selectors_)
        return kernels

    def fit_transform(self, ops: pd.DataFrame, kernel_names: Optional[Sequence[Any]] = None) -> pd.DataFrame:
        return self.fit(ops, kernel_names).transform(ops)


def assign_kernel_types(kernels: pd.DataFrame, rules: Dict[str, Any],
                        selectors: Optional[Dict[str, Any]] = None) -> List[str]:
    """First matching ``kernel_types`` rule per kernel; unmatched: the op type in lower case."""
    selectors = selectors or {}
    records = kernels.to_dict("records")
    sel_yes: Dict[str, np.ndarray] = {}
    for name, sel in selectors.items():
        feats = sel.spec["features"]
        sel_yes[name] = sel.predict(kernels[feats].astype(float)) if len(kernels) else np.zeros(0, bool)
    types: List[str] = []
    for i, r in enumerate(records):
        t = None
        for rule in rules["kernel_types"]:
            if not matches(r, rule["when"]):
                continue
            sel = rule.get("selector")
            if sel is not None:
                if sel not in sel_yes:
                    default = bool(rules["selectors"][sel].get("default", False))
                    if not default:
                        continue
                elif not sel_yes[sel][i]:
                    continue
            t = rule["name"]
            break
        types.append(t if t is not None else str(r.get("op_type", "unknown")).lower())
    return types
