"""The NAS-Bench-201 cell space: index <-> arch string (pure) and a Keras builder.

A cell has 4 nodes; node j sums ``op(node_i)`` over i < j (6 edges). Ops:
``none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3`` -> 5**6 = 15,625 cells.
Arch strings use the canonical NAS-Bench-201 form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.

Index: our own stable base-5 numbering, edges in arch-string order (1<-0, 2<-0, 2<-1,
3<-0, 3<-1, 3<-2), first edge most significant, op digits in the order of ``OPS``.
It is NOT the row index of the official NAS-Bench-201 result file (that order comes from
the released file, which we do not ship); map through the arch string when joining data.

Macro skeleton as in the benchmark (CIFAR, 32x32 input): stem 3x3 conv (C) + BN, three
stages of N cells with C, 2C, 4C channels separated by residual reduction blocks
(ReLU-conv3x3/s2-BN, ReLU-conv3x3-BN, shortcut avg-pool 2x2/s2 + 1x1 conv), BN + ReLU,
global average pool, dense classifier. Defaults C=16, N=5, 10 classes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from opcost.errors import ZooError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from) in arch-string order
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625

_HINT_STR = "arch strings look like |nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"


def index_to_ops(index: int) -> List[str]:
    """The 6 edge ops of cell ``index`` in arch-string order."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < NUM_ARCHS:
        raise ZooError(f"NAS-Bench-201 index {index!r} is out of range",
                       hint=f"use an integer 0..{NUM_ARCHS - 1}")
    digits = []
    for _ in EDGES:
        index, d = divmod(index, len(OPS))
        digits.append(d)
    return [OPS[d] for d in reversed(digits)]


def ops_to_index(ops: Sequence[str]) -> int:
    """Inverse of :func:`index_to_ops`."""
    if len(ops) != len(EDGES):
        raise ZooError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)}", hint=_HINT_STR)
    index = 0
    for op in ops:
        if op not in OPS:
            raise ZooError(f"unknown NAS-Bench-201 op {op!r}", hint="valid ops: " + ", ".join(OPS))
        index = index * len(OPS) + OPS.index(op)
    return index


def ops_to_arch(ops: Sequence[str]) -> str:
    """Edge ops -> canonical arch string."""
    if len(ops) != len(EDGES):
        raise ZooError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(ops)}", hint=_HINT_STR)
    nodes: List[List[str]] = [[], [], []]
    for (to, frm), op in zip(EDGES, ops):
        nodes[to - 1].append(f"{op}~{frm}")
    return "+".join("|" + "|".join(n) + "|" for n in nodes)


def arch_to_ops(arch: str) -> List[str]:
    """Canonical arch string -> edge ops (validates structure)."""
    if not isinstance(arch, str):
        raise ZooError(f"arch string expected, got {type(arch).__name__}", hint=_HINT_STR)
    parts = arch.strip().split("+")
    if len(parts) != 3:
        raise ZooError(f"malformed NAS-Bench-201 arch string {arch!r}: need 3 nodes joined by '+'",
                       hint=_HINT_STR)
    ops: List[str] = []
    for node, part in enumerate(parts, start=1):
        if not (part.startswith("|") and part.endswith("|")):
            raise ZooError(f"malformed node {part!r} in {arch!r}", hint=_HINT_STR)
        items = part[1:-1].split("|")
        if len(items) != node:
            raise ZooError(f"node {node} of {arch!r} needs {node} inputs, got {len(items)}", hint=_HINT_STR)
        for frm, item in enumerate(items):
            op, sep, src = item.partition("~")
            if not sep or src != str(frm) or op not in OPS:
                raise ZooError(f"bad edge {item!r} in {arch!r} (expected op~{frm})",
                               hint="valid ops: " + ", ".join(OPS))
            ops.append(op)
    return ops


def index_to_arch(index: int) -> str:
    """Cell index -> canonical arch string."""
    return ops_to_arch(index_to_ops(index))


def arch_to_index(arch: str) -> int:
    """Canonical arch string -> cell index."""
    return ops_to_index(arch_to_ops(arch))


def nb201_params(index: int, *, channels: int = 16, cells_per_stage: int = 5,
                 input_size: int = 32, num_classes: int = 10) -> Dict[str, Any]:
    """Generator params of one NB201 network (validated)."""
    arch = index_to_arch(index)
    for nm, v, lo in (("channels", channels, 1), ("cells_per_stage", cells_per_stage, 0),
                      ("input_size", input_size, 4), ("num_classes", num_classes, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ZooError(f"{nm} must be an integer >= {lo}, got {v!r}", hint="use the defaults C=16, N=5, 32x32, 10 classes")
    return {"space": "nb201", "index": index, "arch": arch, "channels": channels,
            "cells_per_stage": cells_per_stage, "input_size": input_size,
            "num_classes": num_classes, "batch": 1}


def _relu_conv_bn(layers, x, c: int, k: int, stride: int = 1):
    x = layers.ReLU()(x)
    x = layers.Conv2D(c, k, strides=stride, padding="same", use_bias=False)(x)
    return layers.BatchNormalization()(x)


def cell(layers, x, ops: Sequence[str], c: int):
    """One NB201 cell on tensor ``x`` with ``c`` channels (Keras functional)."""
    nodes = [x]
    for j in (1, 2, 3):
        terms = []
        for (to, frm), op in zip(EDGES, ops):
            if to != j or op == "none":
                continue
            src = nodes[frm]
            if op == "skip_connect":
                terms.append(src)
            elif op == "nor_conv_1x1":
                terms.append(_relu_conv_bn(layers, src, c, 1))
            elif op == "nor_conv_3x3":
                terms.append(_relu_conv_bn(layers, src, c, 3))
            else:  # avg_pool_3x3; 'same' padding excludes the pad from the mean, like the benchmark
                terms.append(layers.AveragePooling2D(3, strides=1, padding="same")(src))
        if not terms:
            # every input edge is 'none': the node is zero. Computed as x*0 (one MUL) so the
            # converter cannot constant-fold the rest of the network away.
            terms = [layers.Rescaling(0.0)(x)]
        nodes.append(terms[0] if len(terms) == 1 else layers.Add()(terms))
    return nodes[3]


def reduction_block(layers, x, c_out: int):
    """NB201 residual reduction block (stride 2)."""
    y = _relu_conv_bn(layers, x, c_out, 3, stride=2)
    y = _relu_conv_bn(layers, y, c_out, 3)
    s = layers.AveragePooling2D(2, strides=2, padding="valid")(x)
    s = layers.Conv2D(c_out, 1, use_bias=False)(s)
    return layers.Add()([y, s])


def keras_model(params: Dict[str, Any]):
    """The Keras model of an NB201 network (needs TensorFlow)."""
    from models_zoo.convert import require_tf

    require_tf()
    import keras
    from keras import layers

    keras.utils.set_random_seed(params["index"])
    ops = arch_to_ops(params["arch"])
    c, n, s = params["channels"], params["cells_per_stage"], params["input_size"]
    inp = keras.Input(shape=(s, s, 3), batch_size=1, name="input")
    x = layers.Conv2D(c, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    for stage, cs in enumerate((c, 2 * c, 4 * c)):
        if stage:
            x = reduction_block(layers, x, cs)
        for _ in range(n):
            x = cell(layers, x, ops, cs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(params["num_classes"])(x)
    return keras.Model(inp, out, name=f"nb201_{params['index']}")
