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


class _Columns:
    """Column values of a table as ``to_dict("records")`` would give them, and ``when``
    conditions evaluated on all rows at once (``matches`` per distinct value, not per row)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self.n = len(table)
        self._coded: Dict[str, Any] = {}

    def _codes(self, key: str):
        """(codes, distinct values as Python objects) of a column; None for object columns."""
        if key not in self._coded:
            s = self.table[key]
            if s.dtype == object:
                self._coded[key] = None
            else:
                # NaN is one distinct value here: it matches no condition either way.
                codes, uniques = pd.factorize(s, use_na_sentinel=False)
                self._coded[key] = (codes, list(np.asarray(uniques, dtype=object)))
        return self._coded[key]

    def mask(self, when: Optional[Dict[str, Any]]) -> np.ndarray:
        """``matches(row, when)`` for every row, as a boolean array."""
        out = np.ones(self.n, dtype=bool)
        for key, cond in (when or {}).items():
            if key == "single_consumer":
                continue
            one = {key: cond}
            if key not in self.table.columns:
                if not matches({}, one):
                    out[:] = False
                continue
            coded = self._codes(key)
            if coded is not None:
                codes, uniques = coded
                ok = np.array([matches({key: u}, one) for u in uniques], dtype=bool)
                out &= ok[codes] if len(ok) else np.zeros(self.n, dtype=bool)
            else:  # object column: per row, with a cache for hashable values
                cache: Dict[Any, bool] = {}
                col = np.zeros(self.n, dtype=bool)
                for i, v in enumerate(self.table[key].tolist()):
                    try:
                        r = cache.get(v)
                        if r is None:
                            r = cache[v] = matches({key: v}, one)
                    except TypeError:  # unhashable value
                        r = matches({key: v}, one)
                    col[i] = r
                out &= col
        return out


def match_mask(table: pd.DataFrame, when: Optional[Dict[str, Any]]) -> np.ndarray:
    """``matches`` for every row of ``table`` (boolean array, same answers as per row)."""
    return _Columns(table).mask(when)


def _row_order(ops: pd.DataFrame, network_col: Optional[str]) -> List[np.ndarray]:
    """Row positions per network (networks in order of first appearance, rows without a
    network left out, as ``groupby(sort=False)`` does), each sorted by ``op_index``
    (stable, NaN last) when present."""
    n = len(ops)
    if network_col is None:
        codes = np.zeros(n, dtype=np.intp)
    else:
        codes = pd.factorize(ops[network_col], sort=False)[0]
    oi = ops["op_index"].to_numpy() if "op_index" in ops.columns else None
    if oi is not None and oi.dtype.kind not in "iufb":
        # not a plain numeric column: sort each network as pandas does
        groups = []
        for c in range(int(codes.max()) + 1 if n else 0):
            pos = np.flatnonzero(codes == c)
            sub = ops["op_index"].iloc[pos].reset_index(drop=True).sort_values(kind="stable")
            groups.append(pos[sub.index.to_numpy()])
        return groups
    order = np.lexsort((oi, codes)) if oi is not None else np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]
    if not len(order):
        return []
    sc = codes[order]
    cuts = np.flatnonzero(sc[1:] != sc[:-1]) + 1
    return np.split(order, cuts)


def _tensor_id_lists(col: pd.Series) -> List[Any]:
    """Tensor-id cells as Python sequences (None kept). A table read back from Parquet
    (a predictor file's training tables) holds numpy arrays, whose truth value is
    ambiguous; graph tables hold tuples and pass through unchanged."""
    vals = col.tolist()
    return [v.tolist() if isinstance(v, np.ndarray) else v for v in vals]


def group_ops(ops: pd.DataFrame, rules: Dict[str, Any], *, network_col: Optional[str] = None) -> pd.DataFrame:
    """Group an op table into kernels with the ``absorb`` rules (one generic loop).

    Ops are taken in table order (by ``op_index`` when present), per network when
    ``network_col`` is given. An op whose type is in a rule's ``ops`` joins the current
    kernel when that kernel's producer type is in the rule's ``into`` and, with
    ``single_consumer``, the op reads the kernel's last output and nothing else reads it
    (checked only when the table has ``inputs``/``outputs`` tensor ids; otherwise table
    adjacency stands for data flow). Returns one row per kernel: the producer op's
    columns plus ``n_ops``, ``fused_ops`` ('+'-joined absorbed types), ``op_rows`` (the
    index labels of its ops), ``flops_kernel`` and ``bytes_out`` of the last member.

    All networks are grouped in one pass over plain Python lists; rule conditions are
    evaluated once per rule for the whole table."""
    if "op_type" not in ops.columns:
        raise UsageError("op table has no 'op_type' column",
                         hint="build it with host.modeler.features.ops_from_li2024 / ops_from_graph")
    absorb = rules.get("absorb") or []
    cols = list(ops.columns) + ["n_ops", "fused_ops", "op_rows", "flops_kernel"]
    table = _Columns(ops)
    compiled = [(rule["ops"], rule["into"], table.mask(rule.get("when") or {}),
                 bool((rule.get("when") or {}).get("single_consumer"))) for rule in absorb]
    types = ops["op_type"].tolist()
    labels = list(ops.index)
    has_io = "inputs" in ops.columns and "outputs" in ops.columns
    ins = _tensor_id_lists(ops["inputs"]) if has_io else None
    outs = _tensor_id_lists(ops["outputs"]) if has_io else None
    if "flops" in ops.columns and ops["flops"].dtype.kind == "f":
        f = ops["flops"].to_numpy()
        flops = np.where(np.isnan(f) | (f == 0), 0.0, f).tolist()  # as below, vectorised
    elif "flops" in ops.columns:
        flops = [0.0 if _isnan(f) else float(f or 0.0) for f in ops["flops"].tolist()]
    else:
        flops = [0.0] * len(ops)
    producer: List[int] = []
    last_member: List[int] = []
    n_ops: List[int] = []
    fused: List[str] = []
    op_rows: List[List[Any]] = []
    fk: List[float] = []
    for seg in _row_order(ops, network_col):
        seg = seg.tolist()
        has_flow = has_io and all(ins[p] is not None and outs[p] is not None for p in seg)
        consumers: Dict[int, int] = {}
        if has_flow:
            for p in seg:
                for t in ins[p] or ():
                    consumers[t] = consumers.get(t, 0) + 1
        cur_type: Any = None
        last = -1
        for p in seg:
            t = types[p]
            joined = False
            if last >= 0:
                for r_ops, r_into, r_mask, r_single in compiled:
                    if t not in r_ops or cur_type not in r_into or not r_mask[p]:
                        continue
                    if has_flow:
                        reads = set(outs[last] or ()) & set(ins[p] or ())
                        if not reads:
                            continue
                        if r_single and any(consumers.get(x, 0) != 1 for x in reads):
                            continue
                    joined = True
                    break
            if joined:
                n_ops[-1] += 1
                fused[-1] = (fused[-1] + "+" if fused[-1] else "") + t
                op_rows[-1].append(labels[p])
                fk[-1] += flops[p]
                last_member[-1] = p
            else:
                cur_type = t
                producer.append(p)
                last_member.append(p)
                n_ops.append(1)
                fused.append("")
                op_rows.append([labels[p]])
                fk.append(flops[p])
            last = p
    if not producer:
        return pd.DataFrame([], columns=cols)
    out = ops.iloc[producer].reset_index(drop=True)
    if "bytes_out" in ops.columns:
        out["bytes_out"] = ops["bytes_out"].to_numpy()[last_member]
    for c in out.columns:
        if _reinfer_dtype(out[c]):
            out[c] = pd.Series(out[c].tolist(), dtype=None)
    extra = pd.DataFrame({"n_ops": n_ops, "fused_ops": fused, "op_rows": pd.Series(op_rows, dtype=object),
                          "flops_kernel": np.array(fk, dtype=float)})
    return pd.concat([out, extra], axis=1)[cols]


def _reinfer_dtype(col: pd.Series) -> bool:
    """Would a table built from this column's Python values (as ``DataFrame(records)``)
    give it another dtype? (object columns, extension dtypes other than a non-empty ``str``)."""
    if isinstance(col.dtype, np.dtype):
        return col.dtype == object
    return not (col.dtype == "str" and col.notna().any())


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
                    cand |= match_mask(kernels, rule["when"])
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
    """First matching ``kernel_types`` rule per kernel; unmatched: the op type in lower case.

    Each rule is evaluated once for all kernels (boolean masks), in rule order."""
    selectors = selectors or {}
    n = len(kernels)
    sel_yes: Dict[str, np.ndarray] = {}
    for name, sel in selectors.items():
        feats = sel.spec["features"]
        sel_yes[name] = sel.predict(kernels[feats].astype(float)) if n else np.zeros(0, bool)
    table = _Columns(kernels)
    types: List[Optional[str]] = [None] * n
    todo = np.ones(n, dtype=bool)
    for rule in rules["kernel_types"]:
        if not todo.any():
            break
        sel = rule.get("selector")
        if sel is not None and sel not in sel_yes and not bool(rules["selectors"][sel].get("default", False)):
            continue
        m = table.mask(rule["when"]) & todo
        if sel is not None and sel in sel_yes:
            m &= np.asarray(sel_yes[sel], dtype=bool)
        name = rule["name"]
        for i in np.flatnonzero(m).tolist():
            types[i] = name
        todo &= ~m
    if todo.any():
        op_types = kernels["op_type"].tolist() if "op_type" in kernels.columns else ["unknown"] * n
        for i in np.flatnonzero(todo).tolist():
            types[i] = str(op_types[i]).lower()
    return types
