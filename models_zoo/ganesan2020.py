"""The ganesan2020 networks as per-layer tables <-> .tflite files.

The ganesan2020 dataset (``data/ganesan2020``, see :mod:`host.modeler.data_ganesan2020`)
describes its 118 networks only by a table of 13 numbers per layer, read from ONNX
graphs: one-hot op ``[conv, dwconv, add, relu, pool]``, input size, output size, input
channels, output channels, kernel, stride, padding, FLOPs. This module goes both ways:

* :func:`layer_table` turns a .tflite graph (:func:`models_zoo.graph.read_graph`) into
  such a table, so a new network can be predicted on a phone characterised by its
  signature set;
* :func:`build_keras` / :func:`build_network` rebuild a network from its table with
  Keras and convert it through :func:`models_zoo.convert.convert_keras` (content-addressed
  cache), int8 dynamic-range weights (the regime the phones were measured in) or float32,
  so the networks `opcost signature select` picks can be measured.

Conventions of the table, read from the 118 rows of ``onnxEmbeddings.csv`` (all rows
satisfy them; :func:`check_table` tests a table against them):

* sizes are the spatial height; the first conv's input size is the network input (224);
* FLOPs are multiply-accumulates for conv (``out^2 * cout * k^2 * cin``), dwconv
  (``out^2 * cout * k^2``) and fully-connected layers, and one per *output* element for
  relu, add and pool (a 3x3/s2 max pool counts ``out^2 * c``, not ``* 9``);
* padding is ``k // 2`` for "same" convs (3x3 -> 1, 5x5 -> 2, 7x7 -> 3, also at stride
  2), 0 for "valid" ones (1x1 convs, SqueezeNet's 7x7/s2 stem) and for every pool;
  relu and add rows have kernel = stride = padding = 0;
* relu is its own row right after the conv/dwconv/add it follows, sizes and channels
  those of its input; relu6 (ONNX Clip) is a relu row too;
* a fully-connected layer is a conv row at size 1 -> 1, kernel 1, stride 1, padding 0,
  FLOPs ``cin * cout``;
* global average pooling is a pool row ``in -> 1`` with kernel = stride = in (7, or 13
  in SqueezeNet);
* concatenation, reshape/flatten, softmax, quantize/dequantize have no rows. A pool
  right after a concatenation carries the channels of the row before it (the last
  concatenated branch: SqueezeNet's 54 -> 27 max pool on 256 channels reads ``128``).

.tflite -> table (:func:`layer_table`): CONV_2D -> conv, DEPTHWISE_CONV_2D -> dwconv,
FULLY_CONNECTED -> conv at size 1, ADD of two computed tensors -> add, MAX_POOL_2D /
AVERAGE_POOL_2D -> pool, MEAN over H and W -> global pool, RELU / RELU6 (standalone or
fused into any of these) -> relu row after the op. A PAD feeding a conv or pool is
folded into its padding. QUANTIZE, DEQUANTIZE, RESHAPE, SQUEEZE, EXPAND_DIMS,
CONCATENATION, SOFTMAX and ops that only transform constants are left out (listed in
``skipped``). Everything else (HARD_SWISH, MUL, LOGISTIC of SE blocks, grouped
convs, other fused activations, ...) has no ganesan row: it is returned in
``unsupported`` so the caller can warn, never dropped silently.

table -> network (:func:`build_keras`), wiring rules (the table has no edges):

* a row reads the current tensor (the output of the row before), except:
* **add** (residual): adds the current tensor to the *block input*: the earliest tensor
  of the add's shape since the last block boundary before the current tensor. Block
  boundaries are the network input, add outputs and outputs of convs that are not
  followed by a relu (linear bottlenecks, the rand networks' stem). For MobileNetV2
  blocks this is the block input also when the expansion is 1 (expand and depthwise
  outputs then have the same shape but come later); a block right after a conv+relu
  stem (pub117) reaches back to the stem output;
* **conv whose cin differs from the current channels** (SqueezeNet fire modules): if cin
  equals the channels of the open branches plus the current tensor, they are
  concatenated; otherwise the conv starts a new branch from the most recent tensor of
  its input size and cin channels, and the current tensor becomes an open branch;
  a pool with open branches pools their concatenation;
* a pool row with kernel = input size and output 1 is a global average pool (MEAN);
  other pools are max pools, VALID or, when only the ceil-mode size fits, SAME;
* a conv row at size 1 after the global pool is a Dense layer (FULLY_CONNECTED).

Relu rows become ``ReLU`` layers (``activation="relu6"`` for ReLU6), which the converter
fuses into the op before them. Weights are random (seeded by the network name): latency
does not depend on them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from models_zoo.flops import num_elements
from opcost.errors import ZooError

GENERATOR = "opcost.ganesan2020"
GENERATOR_VERSION = 1
FAMILY = "ganesan2020"
OP_TYPES = ("conv", "dwconv", "add", "relu", "pool")
LAYER_WIDTH = 13
DEFAULT_QUANTIZE = "dynamic"  # the regime of the ganesan2020 phone measurements
ACTIVATIONS = ("relu", "relu6")

CONV, DWCONV, ADD, RELU, POOL = range(5)

# Ops the ganesan tables have no rows for and that are left out on purpose.
# SOFTMAX: the classifier head's softmax has no row in any of the 118 tables (the public
# networks had one), so it is left out like concatenation rather than reported.
SKIPPED_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
                         "CONCATENATION", "PAD", "PADV2", "SOFTMAX"})
_RELU_ACTS = ("RELU", "RELU6")


# ---------------------------------------------------------------------------------------
# .tflite graph -> layer table
# ---------------------------------------------------------------------------------------
class LayerTable(NamedTuple):
    """Result of :func:`layer_table`. ``rows``: (n_layers, 13) float array in the ganesan
    format; ``unsupported``: ops with no ganesan row (dicts with ``index``, ``type``,
    ``reason``), to warn about; ``skipped``: ops left out as the ganesan tables do
    (reshape-type, (de)quantize, concatenation, PAD folded into the next op's padding,
    constant-only ops)."""

    rows: np.ndarray
    unsupported: List[Dict[str, Any]]
    skipped: List[Dict[str, Any]]


def _row(op: int, in_size, out_size, cin, cout, k=0, s=0, p=0, flops=None) -> List[float]:
    one = [0.0] * 5
    one[op] = 1.0
    if flops is None:
        flops = out_size * out_size * cout
    return one + [float(in_size), float(out_size), float(cin), float(cout), float(k), float(s),
                  float(p), float(flops)]


def _same_pad(k: int) -> int:
    return k // 2


def _conv_padding(in_size: int, out_size: int, k: int, s: int, extra: int, same: bool) -> int:
    """Symmetric ONNX-style padding number of a conv (ganesan convention: ``k // 2`` when
    the output has the "same" size ceil(in / s), else the folded explicit padding)."""
    if same or extra:
        if out_size == -(-in_size // s):
            return _same_pad(k)
        return -(-extra // 2)
    return 0


def _pool_padding(in_size: int, out_size: int, k: int, s: int, extra: int) -> int:
    """Pools: 0 when the floor or ceil-mode size fits without padding (ONNX ceil_mode
    pools have pads 0), else the symmetric padding that gives the output size."""
    if extra == 0:
        if out_size in ((in_size - k) // s + 1, -(-(in_size - k) // s) + 1):
            return 0
    for p in range(0, k):
        if (in_size + 2 * p - k) // s + 1 == out_size:
            return p
    return _same_pad(k)


def _is_nhwc(shape) -> bool:
    return shape is not None and len(shape) == 4


def layer_table(graph) -> LayerTable:
    """Rows of a .tflite graph (:class:`models_zoo.graph.Graph`) in the ganesan2020 format.

    Returns a :class:`LayerTable` ``(rows, unsupported, skipped)``; ``rows`` is an
    (n_layers, 13) float array (see the module docstring for the conventions). Pure
    function of the graph. Only the main subgraph is read."""
    ops = graph.main_ops
    const_op = graph.const_like_ops()
    derived = {t for t, T in enumerate(graph.tensors) if T.is_constant or T.is_variable}
    for op, c in zip(ops, const_op):
        if c:
            derived.update(op.outputs)
    producers = graph.producers
    rows: List[List[float]] = []
    unsupported: List[Dict[str, Any]] = []
    skipped: List[Dict[str, Any]] = []
    folded_pad: Dict[int, Tuple[int, int]] = {}  # tensor after PAD -> (input H, total H pad)

    def unsup(op, reason: str) -> None:
        unsupported.append({"index": op.index, "type": op.type, "reason": reason})

    def pad_of(tensor: int) -> Tuple[Optional[int], int]:
        return folded_pad.get(tensor, (None, 0))

    def activation(op, out_size: int, c: int) -> None:
        act = op.fused_activation
        if act in _RELU_ACTS:
            rows.append(_row(RELU, out_size, out_size, c, c))
        elif act not in (None, "NONE"):
            unsup(op, f"fused activation {act} has no ganesan row")

    def data_inputs(op) -> List[int]:
        return [t for t in op.inputs if t >= 0 and t not in derived]

    for op, is_const in zip(ops, const_op):
        t = op.type
        if is_const:
            skipped.append({"index": op.index, "type": t, "reason": "computes constants only"})
            continue
        ins = op.input_shapes
        out = op.output_shapes[0] if op.output_shapes else None
        if t in ("PAD", "PADV2"):
            x = ins[0] if ins else None
            cons = graph.consumers.get(op.outputs[0], []) if op.outputs else []
            if _is_nhwc(x) and _is_nhwc(out) and cons and all(
                    ops[c].type in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D")
                    for c in cons):
                folded_pad[op.outputs[0]] = (x[1], out[1] - x[1])
                skipped.append({"index": op.index, "type": t, "reason": "folded into the padding of the next op"})
            else:
                unsup(op, "PAD not followed by a conv or pool")
            continue
        if t in SKIPPED_OPS:
            skipped.append({"index": op.index, "type": t, "reason": "no row in the ganesan format"})
            continue
        if t in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w = (ins[0] if ins else None), (ins[1] if len(ins) > 1 else None)
            if not (_is_nhwc(x) and _is_nhwc(out) and w is not None and len(w) == 4):
                unsup(op, "not a 2-D convolution on NHWC tensors")
                continue
            in0, extra = pad_of(op.inputs[0])
            in_size = x[1] if in0 is None else in0
            k, s = int(op.kernel_h), int(op.options.get("stride_h", 1))
            if op.kernel_w != op.kernel_h or op.options.get("stride_w", s) != s:
                unsup(op, f"non-square kernel/stride {op.kernel_h}x{op.kernel_w}")
                continue
            if op.options.get("dilation_h", 1) != 1 or op.options.get("dilation_w", 1) != 1:
                unsup(op, "dilated convolution")
                continue
            same = op.options.get("padding") == "SAME"
            p = _conv_padding(in_size, out[1], k, s, extra, same)
            cin, cout = int(op.in_channels), int(op.out_channels)
            if t == "CONV_2D":
                if op.groups not in (None, 1):
                    unsup(op, f"grouped convolution ({op.groups} groups)")
                    continue
                rows.append(_row(CONV, in_size, out[1], cin, cout, k, s, p,
                                 out[1] * out[2] * cout * k * k * cin))
            else:
                rows.append(_row(DWCONV, in_size, out[1], cin, cout, k, s, p,
                                 out[1] * out[2] * cout * k * k))
            activation(op, out[1], cout)
        elif t == "FULLY_CONNECTED":
            cin, cout = op.in_channels, op.out_channels
            if not cin or not cout:
                unsup(op, "fully-connected op without a weight shape")
                continue
            batch = (int(np.prod(ins[0])) // cin) if ins and ins[0] else 0
            if batch != 1:
                unsup(op, f"fully-connected over {batch} rows (the ganesan format has batch-1 FC layers only)")
                continue
            rows.append(_row(CONV, 1, 1, cin, cout, 1, 1, 0, cin * cout))
            activation(op, 1, cout)
        elif t == "ADD":
            if len(data_inputs(op)) != 2:
                unsup(op, "ADD of a constant (not a skip connection)")
                continue
            size, c = (out[1], out[-1]) if _is_nhwc(out) else (1, out[-1])
            rows.append(_row(ADD, size, size, c, c))
            activation(op, size, c)
        elif t in _RELU_ACTS:
            size, c = (out[1], out[-1]) if _is_nhwc(out) else (1, out[-1])
            rows.append(_row(RELU, size, size, c, c))
        elif t in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            x = ins[0] if ins else None
            if not (_is_nhwc(x) and _is_nhwc(out)):
                unsup(op, "pool on a tensor that is not NHWC")
                continue
            k, s = int(op.options.get("filter_height", 1)), int(op.options.get("stride_h", 1))
            in0, extra = pad_of(op.inputs[0])
            in_size = x[1] if in0 is None else in0
            c = out[-1]
            src = producers.get(op.inputs[0])
            if src is not None and ops[src].type == "CONCATENATION" and rows:
                c = int(rows[-1][8])  # ganesan convention: the channels of the row before
            rows.append(_row(POOL, in_size, out[1], c, c, k, s, _pool_padding(in_size, out[1], k, s, extra),
                             out[1] * out[1] * c))
            activation(op, out[1], c)
        elif t == "MEAN":
            x = ins[0] if ins else None
            if _is_nhwc(x) and out is not None and num_elements(out) == x[-1] and x[1] == x[2]:
                c = x[-1]
                rows.append(_row(POOL, x[1], 1, c, c, x[1], x[1], 0, c))
            else:
                unsup(op, "MEAN that is not a global average pool over H and W")
        else:
            unsup(op, "no ganesan row for this op")
    arr = np.array(rows, dtype=float).reshape(-1, LAYER_WIDTH)
    return LayerTable(arr, unsupported, skipped)


def check_table(layers: np.ndarray) -> List[str]:
    """Rows of ``layers`` that break the conventions of the ganesan tables (one message
    each; empty = consistent). Checks the one-hot, FLOPs and padding rules."""
    layers = np.asarray(layers, dtype=float)
    problems = []
    if layers.ndim != 2 or layers.shape[1] != LAYER_WIDTH:
        return [f"expected an (n, {LAYER_WIDTH}) table, got shape {layers.shape}"]
    for j, r in enumerate(layers):
        onehot = r[:5]
        if sorted(onehot.tolist()) != [0, 0, 0, 0, 1]:
            problems.append(f"row {j}: op one-hot {onehot.tolist()}")
            continue
        op = int(np.argmax(onehot))
        i, o, ci, co, k, s, p, f = r[5:]
        exp = o * o * co * (k * k * ci if op == CONV else k * k if op == DWCONV else 1)
        if f != exp:
            problems.append(f"row {j} ({OP_TYPES[op]}): FLOPs {f:g}, convention gives {exp:g}")
        if op in (RELU, ADD) and (k or s or p or i != o or ci != co):
            problems.append(f"row {j} ({OP_TYPES[op]}): kernel/stride/padding must be 0 and sizes equal")
    return problems


# ---------------------------------------------------------------------------------------
# layer table -> Keras model
# ---------------------------------------------------------------------------------------
@dataclass
class _T:
    """A tensor of the network being built: Keras tensor, spatial size (0 = flat), channels."""

    x: Any
    size: int
    c: int
    row: int  # the row that produced it (-1 = network input)


@dataclass
class WiringReport:
    """How :func:`build_keras` wired the table: add rows -> source row of the skip,
    concatenations and branches (row indices; -1 = the network input)."""

    adds: Dict[int, int] = field(default_factory=dict)
    adds_from_boundary: int = 0
    branches: Dict[int, int] = field(default_factory=dict)
    concats: Dict[int, List[int]] = field(default_factory=dict)


def _ints(r) -> Tuple[int, ...]:
    vals = tuple(int(round(v)) for v in r[5:12])
    if any(abs(v - round(v)) > 1e-9 for v in r[5:12]):
        raise ZooError("layer table has non-integer sizes/channels", hint="is this a ganesan2020 table?")
    return vals


def build_keras(layers: np.ndarray, *, name: str = "ganesan_net", activation: str = "relu",
                seed: int = 0, report: Optional[WiringReport] = None):
    """A Keras model (batch 1, input ``size x size x cin`` of the first row) whose
    TFLite conversion has the layer table ``layers`` (n, 13). Wiring rules in the module
    docstring; ``report`` (a :class:`WiringReport`) is filled with the choices made.
    Raises ZooError for a row it cannot realise. Needs TensorFlow."""
    from models_zoo.convert import require_tf

    layers = np.asarray(layers, dtype=float)
    bad = check_table(layers)
    if bad:
        raise ZooError(f"not a ganesan2020 layer table: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""),
                       hint="rows are 13 numbers: one-hot [conv, dwconv, add, relu, pool], in, out, cin, cout, "
                            "kernel, stride, padding, FLOPs")
    if activation not in ACTIVATIONS:
        raise ZooError(f"unknown activation {activation!r}", hint="use relu or relu6")
    if len(layers) == 0:
        raise ZooError("empty layer table", hint="a network needs at least one row")
    require_tf()
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(int(seed) % (2 ** 31))
    rep = report if report is not None else WiringReport()
    ops = [int(np.argmax(r[:5])) for r in layers]
    size0, _o, cin0 = _ints(layers[0])[:3]
    inp = keras.Input(shape=(size0, size0, cin0), batch_size=1, name="input")
    cur = _T(inp, size0, cin0, -1)
    seen: List[_T] = [cur]          # real tensors, in order (post-activation only)
    boundaries: List[int] = [0]     # positions in `seen` of block boundaries
    branches: List[_T] = []         # open branches (SqueezeNet fire modules)

    def fail(j: int, why: str):
        return ZooError(f"row {j} ({OP_TYPES[ops[j]]} {list(map(float, layers[j][5:12]))}): {why}",
                        hint="build_keras knows chains, MobileNetV2 residual adds and SqueezeNet fire "
                             "modules (see models_zoo/ganesan2020.py)")

    def push(t: _T, j: int) -> _T:
        followed_by_relu = j + 1 < len(ops) and ops[j + 1] == RELU
        if ops[j] == CONV and not followed_by_relu or ops[j] == ADD:
            seen.append(t)
            boundaries.append(len(seen) - 1)
        elif not followed_by_relu:
            seen.append(t)
        return t

    def concat_branches(j: int) -> _T:
        nonlocal branches
        parts = branches + [cur]
        if len({p.size for p in parts}) != 1:
            raise fail(j, "open branches of different sizes cannot be concatenated")
        x = L.Concatenate(axis=-1)([p.x for p in parts])
        rep.concats[j] = [p.row for p in parts]
        branches = []
        t = _T(x, parts[0].size, sum(p.c for p in parts), j)
        seen.append(t)
        return t

    def padding_mode(j, i, o, k, s, p) -> str:
        if p == 0 and (i - k) // s + 1 == o:
            return "valid"
        if p == k // 2 and -(-i // s) == o:
            return "same"
        raise fail(j, f"padding {p} with kernel {k}, stride {s} does not map to SAME or VALID")

    for j, r in enumerate(layers):
        op = ops[j]
        i, o, ci, co, k, s, p = _ints(r)
        if op == CONV:
            if cur.size == 0:  # after the global pool: a fully-connected layer
                if not (i == o == 1 and k == 1 and ci == cur.c):
                    raise fail(j, f"after global pooling the tensor has {cur.c} features")
                cur = push(_T(L.Dense(co)(cur.x), 0, co, j), j)
                continue
            src = cur
            if not (ci == cur.c and i == cur.size):
                if branches and ci == sum(b.c for b in branches) + cur.c and i == cur.size:
                    src = concat_branches(j)
                else:
                    cands = [t for t in reversed(seen) if t is not cur and t.size == i and t.c == ci and t.size]
                    if not cands:
                        raise fail(j, f"no earlier tensor of size {i} with {ci} channels to read")
                    src = cands[0]
                    branches.append(cur)
                    rep.branches[j] = src.row
            mode = padding_mode(j, i, o, k, s, p)
            x = L.Conv2D(co, k, strides=s, padding=mode, use_bias=True)(src.x)
            cur = push(_T(x, o, co, j), j)
        elif op == DWCONV:
            if not (ci == cur.c and i == cur.size) or co % ci:
                raise fail(j, f"depthwise conv does not fit the current tensor ({cur.size}x{cur.size}x{cur.c})")
            mode = padding_mode(j, i, o, k, s, p)
            x = L.DepthwiseConv2D(k, strides=s, padding=mode, depth_multiplier=co // ci, use_bias=True)(cur.x)
            cur = push(_T(x, o, co, j), j)
        elif op == RELU:
            if ci != cur.c or i != max(cur.size, 1):
                raise fail(j, f"relu does not fit the current tensor ({cur.size}x{cur.size}x{cur.c})")
            x = L.ReLU(6.0 if activation == "relu6" else None)(cur.x)
            cur = _T(x, cur.size, cur.c, j)
            seen.append(cur)
        elif op == ADD:
            if ci != cur.c or i != max(cur.size, 1):
                raise fail(j, f"add does not fit the current tensor ({cur.size}x{cur.size}x{cur.c})")
            pos = next((n for n, t in enumerate(seen) if t is cur), len(seen))
            start = max([b for b in boundaries if b < pos], default=0)
            cands = [t for t in seen[start:pos] if t.size == cur.size and t.c == cur.c]
            if not cands:
                cands = [t for t in reversed(seen[:pos]) if t.size == cur.size and t.c == cur.c]
            if not cands:
                raise fail(j, "no earlier tensor of the same shape to add")
            other = cands[0]
            rep.adds[j] = other.row
            rep.adds_from_boundary += int(start < len(seen) and seen[start] is other)
            x = L.Add()([other.x, cur.x])
            cur = push(_T(x, cur.size, cur.c, j), j)
        elif op == POOL:
            if branches:
                cur = concat_branches(j)
            if i != cur.size:
                raise fail(j, f"pool input size {i} but the current tensor is {cur.size}x{cur.size}")
            if o == 1 and k == i:
                x = L.GlobalAveragePooling2D()(cur.x)
                cur = push(_T(x, 0, cur.c, j), j)
            else:
                if (i - k) // s + 1 == o and p == 0:
                    mode = "valid"
                elif -(-i // s) == o:
                    mode = "same"
                else:
                    raise fail(j, "pool size does not map to SAME or VALID")
                x = L.MaxPooling2D(k, strides=s, padding=mode)(cur.x)
                cur = push(_T(x, o, cur.c, j), j)
    if branches:
        cur = concat_branches(len(layers) - 1)
    return keras.Model(inp, cur.x, name=re.sub(r"[^A-Za-z0-9_]", "_", name))


# ---------------------------------------------------------------------------------------
# The 118 networks of the dataset, built through the zoo cache
# ---------------------------------------------------------------------------------------
_TABLES: Optional[Dict[str, np.ndarray]] = None


def _tables() -> Dict[str, np.ndarray]:
    global _TABLES
    if _TABLES is None:
        from host.modeler.data_ganesan2020 import layer_tables
        from opcost.errors import DatasetError

        try:
            tables = layer_tables()
        except DatasetError as err:
            raise ZooError(err.message, hint="the ganesan2020 layer tables ship in data/ganesan2020 of the opcost "
                                             "checkout") from None
        for tab in tables.values():
            tab.flags.writeable = False  # shared: callers copy before changing
        _TABLES = tables
    return _TABLES


def network_names() -> List[str]:
    """The 118 network ids (``rand000``..``rand099``, ``pub100``..``pub117``)."""
    return list(_tables())


def strip_family(name: str) -> str:
    """``ganesan2020/rand051`` -> ``rand051`` (names without the prefix pass unchanged)."""
    n = str(name).strip()
    return n[len(FAMILY) + 1:] if n.lower().startswith(FAMILY + "/") else n


def table(name: str) -> np.ndarray:
    """The layer table of network ``name`` (``rand051`` or ``ganesan2020/rand051``)."""
    n = strip_family(name).lower()
    tabs = _tables()
    if n not in tabs:
        raise ZooError(f"unknown ganesan2020 network {name!r}",
                       hint="valid names: ganesan2020/rand000 .. ganesan2020/rand099, ganesan2020/pub100 .. "
                            "ganesan2020/pub117 (or ganesan2020/all); `opcost zoo list` shows them")
    return tabs[n]


def _check_quantize(quantize: Optional[str]) -> str:
    from models_zoo.convert import check_quantize

    return check_quantize(quantize, default=DEFAULT_QUANTIZE)


def network_params(name: str, quantize: Optional[str] = None, activation: str = "relu") -> Dict[str, Any]:
    """Generator params (what the cache key hashes): the name, a hash of its layer table,
    the quantization and the activation."""
    n = strip_family(name).lower()
    tab = table(n)
    if activation not in ACTIVATIONS:
        raise ZooError(f"unknown activation {activation!r}", hint="use relu or relu6")
    return {"name": n, "dataset": FAMILY, "quantize": _check_quantize(quantize), "activation": activation,
            "input_size": int(tab[0, 5]), "batch": 1, "n_layers": int(len(tab)),
            "table_sha256": table_sha256(tab)}


def table_sha256(layers: np.ndarray) -> str:
    """sha256 of a layer table (float64 little-endian, row-major)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(np.asarray(layers, dtype="<f8")).tobytes()).hexdigest()


def network_key(name: str, quantize: Optional[str] = None, activation: str = "relu") -> Dict[str, Any]:
    return {"generator": GENERATOR, "version": GENERATOR_VERSION,
            "params": network_params(name, quantize, activation)}


def output_name(name: str, quantize: Optional[str] = None) -> str:
    """File stem in ``--out``: the bare network id for the ganesan regime (int8 dynamic),
    so runs are matched to the dataset's network by name; ``<id>_float32`` otherwise."""
    n = strip_family(name).lower()
    return n if _check_quantize(quantize) == "dynamic" else f"{n}_float32"


def build_network(name: str, *, quantize: Optional[str] = None, activation: str = "relu",
                  cache_dir: Optional[str] = None) -> Path:
    """Build (or fetch from cache) ganesan2020 network ``name`` as .tflite: 224x224x3,
    batch 1, int8 dynamic-range weights (``quantize="dynamic"``, default) or float32
    (``"none"``). Returns the cached path."""
    from models_zoo.convert import convert_keras

    key = network_key(name, quantize, activation)
    params = key["params"]
    tab = table(params["name"])
    seed = sum(ord(ch) * 31 ** i for i, ch in enumerate(params["name"])) % (2 ** 31)
    return convert_keras(lambda: build_keras(tab, name=params["name"], activation=activation, seed=seed),
                         key=key, cache_dir=cache_dir, quantize=params["quantize"])


def list_networks() -> List[Dict[str, Any]]:
    """One dict per network: name, n_layers, MFLOPs, op counts of the table. No TensorFlow."""
    out = []
    for n, tab in _tables().items():
        ops = np.argmax(tab[:, :5], axis=1)
        out.append({"name": n, "family": FAMILY, "kind": "random" if n.startswith("rand") else "public",
                    "n_layers": int(len(tab)), "mflops": round(float(tab[:, 12].sum()) / 1e6, 3),
                    "layer_counts": {OP_TYPES[k]: int(np.sum(ops == k)) for k in range(5)}})
    return out


def compare_tables(got: np.ndarray, want: np.ndarray) -> Optional[str]:
    """None when the tables are equal row for row, else where they first differ."""
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        n = min(len(got), len(want))
        diff = np.where(np.any(got[:n] != want[:n], axis=1))[0]
        at = f"; first difference at row {int(diff[0])}" if len(diff) else ""
        return f"{len(got)} rows instead of {len(want)}{at}"
    diff = np.where(np.any(got != want, axis=1))[0]
    if len(diff):
        j = int(diff[0])
        return f"{len(diff)} row(s) differ, first row {j}: got {got[j].tolist()}, want {want[j].tolist()}"
    return None


def round_trip(name: str, *, quantize: Optional[str] = None, cache_dir: Optional[str] = None) -> Dict[str, Any]:
    """Build network ``name`` and compare the layer table of the .tflite with its row of
    the dataset. Returns {"name", "path", "match", "difference", "unsupported", "skipped"}."""
    from models_zoo.graph import read_graph

    path = build_network(name, quantize=quantize, cache_dir=cache_dir)
    lt = layer_table(read_graph(str(path)))
    diff = compare_tables(lt.rows, table(name))
    return {"name": strip_family(name).lower(), "path": str(path), "match": diff is None, "difference": diff,
            "unsupported": lt.unsupported, "skipped": sorted({s["type"] for s in lt.skipped})}


def expand_names(names: Sequence[str]) -> List[str]:
    """``ganesan2020/all`` (or ``ganesan2020``) -> every network; others validated."""
    out: List[str] = []
    for n in names:
        if n.strip().lower() in (FAMILY, FAMILY + "/all"):
            out.extend(network_names())
        else:
            table(n)
            out.append(strip_family(n).lower())
    return out


# ---------------------------------------------------------------------------------------
# `opcost zoo build` / `opcost zoo list` hooks
# ---------------------------------------------------------------------------------------
VALID_NAMES_HINT = ("ganesan2020 networks: ganesan2020/rand000 .. ganesan2020/rand099, ganesan2020/pub100 .. "
                    "ganesan2020/pub117, or ganesan2020/all")


def signature_names(path: str) -> List[str]:
    """``ganesan2020/<id>`` names of the networks of a signature file (``opcost signature
    select --out``). ZooError when the file is unreadable or names a network that is not
    a ganesan2020 one (a store's own networks are already .tflite files)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            nets = json.load(f)["networks"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ZooError(f"cannot read the signature networks from {path} ({type(err).__name__}: {err})",
                       hint="pass the JSON file written by `opcost signature select --out`") from None
    other = [str(n) for n in nets if str(n).lower() not in _tables()]
    if other:
        raise ZooError(f"{path}: not ganesan2020 networks, so opcost cannot build them: {', '.join(other)}",
                       hint="measure those with the .tflite files they were measured from on the training phones")
    return [f"{FAMILY}/{str(n).lower()}" for n in nets]


def split_names(names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Split `zoo build` NAMEs into (ganesan2020 network ids, other names). ganesan2020
    names are validated (ZooError listing the valid ones); a bare id such as ``rand051``
    is refused with a hint to write ``ganesan2020/rand051``."""
    gan: List[str] = []
    other: List[str] = []
    for n in names:
        low = str(n).strip().lower()
        if low == FAMILY or low.startswith(FAMILY + "/"):
            gan.extend(expand_names([n]))
        elif low in _tables():
            raise ZooError(f"{n!r} is a ganesan2020 network: write ganesan2020/{low}", hint=VALID_NAMES_HINT)
        else:
            other.append(n)
    return list(dict.fromkeys(gan)), other


def zoo_jobs(names: Sequence[str], *, quantize: Optional[str] = None, input_size: Optional[int] = None,
             cache_dir: Optional[str] = None) -> List[tuple]:
    """`build_and_export` jobs (name, source, build) for ganesan2020 network ids."""
    if names and input_size not in (None, 224):
        raise ZooError("--input-size does not apply to ganesan2020 networks",
                       hint="their layer tables fix the input at 224x224x3; drop --input-size")
    q = _check_quantize(quantize)
    return [(output_name(n, q), f"zoo:{FAMILY}",
             lambda n=n: build_network(n, quantize=q, cache_dir=cache_dir)) for n in names]


def list_rows(cache_dir: Optional[str] = None) -> List[Dict[str, Any]]:
    """`zoo list` rows: :func:`list_networks` plus op count / size of the cached default
    (int8 dynamic-range) build when it exists. No TensorFlow."""
    from models_zoo.convert import cached_path, read_sidecar

    rows = []
    for r in list_networks():
        p = cached_path(network_key(r["name"]), cache_dir)
        side = read_sidecar(p) if p else {}
        rows.append({**r, "build_name": f"{FAMILY}/{r['name']}", "quantize": DEFAULT_QUANTIZE,
                     "cached_path": str(p) if p else None, "num_ops": side.get("num_ops"),
                     "size_bytes": side.get("size_bytes")})
    return rows
