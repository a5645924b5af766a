"""Fast .tflite reader: ops, tensors, shapes, options, FLOPs and blocks. No TensorFlow.

The file is memory-mapped and the TFLite flatbuffer is walked directly with
``struct.unpack_from``: only the tables we need are visited, shape vectors are unpacked
in one call each, and weight buffers are never read (only their sizes). The layout
(field slots) of the core tables follows the TFLite ``schema.fbs``; the layout of the
~150 builtin-options tables is learned once per options type from the generated
builders of the ``tflite`` package (see :func:`options_spec`), so every op's options
are read without hand-written tables per op.

``read_graph(path_or_bytes) -> Graph``.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from models_zoo.flops import num_elements, op_cost_tuple
from opcost.errors import ModelFileError

Shape = Tuple[int, ...]

# ---------------------------------------------------------------------------------------
# Low-level flatbuffer access
# ---------------------------------------------------------------------------------------
_u8 = struct.Struct("<B").unpack_from
_u16 = struct.Struct("<H").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u32 = struct.Struct("<I").unpack_from
_u64 = struct.Struct("<Q").unpack_from

_STRUCTS: Dict[str, struct.Struct] = {}


def _vec_struct(code: str, n: int) -> struct.Struct:
    key = f"<{n}{code}"
    s = _STRUCTS.get(key)
    if s is None:
        s = _STRUCTS[key] = struct.Struct(key)
    return s


class _Reader:
    """Table / vector accessors over one buffer, with a vtable cache."""

    __slots__ = ("buf", "_vt")

    def __init__(self, buf) -> None:
        self.buf = buf
        self._vt: Dict[int, Tuple[int, ...]] = {}

    def fields(self, tpos: int) -> Tuple[int, ...]:
        """Field offsets (0 = absent) of the table at ``tpos``, relative to ``tpos``."""
        vt = tpos - _i32(self.buf, tpos)[0]
        offs = self._vt.get(vt)
        if offs is None:
            n = (_u16(self.buf, vt)[0] - 4) >> 1
            offs = self._vt[vt] = _vec_struct("H", n).unpack_from(self.buf, vt + 4) if n > 0 else ()
        return offs

    def deref(self, fpos: int) -> int:
        return fpos + _u32(self.buf, fpos)[0]

    def vector(self, fpos: int, code: str) -> tuple:
        """Vector of scalars whose offset field is at ``fpos``."""
        v = fpos + _u32(self.buf, fpos)[0]
        n = _u32(self.buf, v)[0]
        return _vec_struct(code, n).unpack_from(self.buf, v + 4) if n else ()

    def vector_span(self, fpos: int) -> Tuple[int, int]:
        """(start of elements, length) of the vector whose offset field is at ``fpos``."""
        v = fpos + _u32(self.buf, fpos)[0]
        return v + 4, _u32(self.buf, v)[0]

    def tables(self, fpos: int) -> List[int]:
        """Positions of the tables of a vector of tables."""
        v = fpos + _u32(self.buf, fpos)[0]
        n = _u32(self.buf, v)[0]
        if not n:
            return []
        rel = _vec_struct("I", n).unpack_from(self.buf, v + 4)
        base = v + 4
        return [base + 4 * j + r for j, r in enumerate(rel)]

    def string(self, fpos: int) -> str:
        s = fpos + _u32(self.buf, fpos)[0]
        n = _u32(self.buf, s)[0]
        return bytes(self.buf[s + 4:s + 4 + n]).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------
# Enums and options layouts learned from the generated `tflite` package
# ---------------------------------------------------------------------------------------
_ENUMS: Dict[str, Dict[int, str]] = {}


def _enum(name: str) -> Dict[int, str]:
    """value -> name of a generated enum class (e.g. BuiltinOperator)."""
    m = _ENUMS.get(name)
    if m is None:
        cls = getattr(importlib.import_module(f"tflite.{name}"), name)
        m = {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}
        _ENUMS[name] = m
    return m


DTYPE_ITEMSIZE = {
    "float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "string": 0, "bool": 1,
    "int16": 2, "complex64": 8, "int8": 1, "float64": 8, "complex128": 16, "uint64": 8,
    "resource": 0, "variant": 0, "uint32": 4, "uint16": 2, "int4": 0.5, "bfloat16": 2,
}

_STRUCT_CODE = {"Bool": "?", "Byte": "b", "Int8": "b", "Uint8": "B", "Int16": "h", "Uint16": "H",
                "Int32": "i", "Uint32": "I", "Int64": "q", "Uint64": "Q", "Float32": "f",
                "Float64": "d"}
_FLAGS_CODE = {"bool": "?", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i",
               "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}


@dataclass(frozen=True)
class FieldSpec:
    """One field of an options table: ``kind`` is scalar | vector | string | unsupported.

    ``method`` is the flatbuffers Builder ``Prepend*Slot`` that writes a scalar.
    """

    name: str
    slot: int
    kind: str
    code: str = ""
    default: Any = 0
    method: str = ""


class _RecBuilder:
    """Stands in for flatbuffers.Builder to record which Prepend*Slot a generated
    ``...Add<Field>`` function calls (this is how field slots/types are learned)."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, args))


class _Stop(Exception):
    pass


class _RecTab:
    """Stands in for flatbuffers.table.Table to learn a vector field's element type."""

    Pos = 0
    Bytes = b""

    def __init__(self) -> None:
        self.kind = "unsupported"
        self.code = ""

    def Offset(self, _vt):  # noqa: N802 (generated-code API)
        return 4

    def GetVectorAsNumpy(self, flags, _off):  # noqa: N802
        self.kind, self.code = "vector", _FLAGS_CODE.get(getattr(flags, "name", ""), "")
        raise _Stop

    def String(self, _off):  # noqa: N802
        self.kind = "string"
        raise _Stop

    def __getattr__(self, name):
        raise _Stop


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


_SPECS: Dict[str, Optional[Tuple[FieldSpec, ...]]] = {}


def options_spec(table_name: str) -> Optional[Tuple[FieldSpec, ...]]:
    """Field layout of a builtin-options table (e.g. ``"Conv2DOptions"``), sorted by slot.

    Learned once from the ``tflite`` package's generated builder/accessor functions by
    calling them on recording stand-ins; cached. Unknown tables give None.
    """
    if table_name in _SPECS:
        return _SPECS[table_name]
    fields: List[FieldSpec] = []
    try:
        mod = importlib.import_module(f"tflite.{table_name}")
        cls = getattr(mod, table_name)
    except (ImportError, AttributeError):
        _SPECS[table_name] = None
        return None
    prefix = f"{table_name}Add"
    for attr in dir(mod):
        if not attr.startswith(prefix):
            continue
        fname = attr[len(prefix):]
        rec = _RecBuilder()
        getattr(mod, attr)(rec, 0)
        if not rec.calls:
            continue
        method, args = rec.calls[0]
        slot = args[0]
        if method == "PrependUOffsetTRelativeSlot":
            tab = _RecTab()
            obj = cls.__new__(cls)
            obj._tab = tab
            if hasattr(cls, fname + "AsNumpy"):
                reader = getattr(cls, fname + "AsNumpy")
            elif hasattr(cls, fname + "Length"):
                reader = None  # vector of tables or strings
            else:
                reader = getattr(cls, fname, None)
            try:
                if reader is not None:
                    reader(obj)
            except _Stop:
                pass
            except Exception:  # pragma: no cover - unexpected generated code
                tab.kind = "unsupported"
            kind = tab.kind if (tab.kind != "vector" or tab.code) else "unsupported"
            fields.append(FieldSpec(_snake(fname), slot, kind, tab.code, None, method))
        else:
            kind_name = method[len("Prepend"):-len("Slot")]
            code = _STRUCT_CODE.get(kind_name)
            if code is None:
                fields.append(FieldSpec(_snake(fname), slot, "unsupported", "", None, method))
            else:
                default = bool(args[2]) if code == "?" else args[2]
                fields.append(FieldSpec(_snake(fname), slot, "scalar", code, default, method))
    spec = tuple(sorted(fields, key=lambda f: f.slot))
    _SPECS[table_name] = spec
    return spec


def read_options_raw(rd: "_Reader", tpos: int, spec: Sequence[FieldSpec]) -> Dict[str, Any]:
    """Raw values of an options table (defaults filled in, vectors as tuples)."""
    offs = rd.fields(tpos)
    nf = len(offs)
    out: Dict[str, Any] = {}
    buf = rd.buf
    for f in spec:
        o = offs[f.slot] if f.slot < nf else 0
        if f.kind == "scalar":
            out[f.name] = _vec_struct(f.code, 1).unpack_from(buf, tpos + o)[0] if o else f.default
        elif f.kind == "vector":
            out[f.name] = rd.vector(tpos + o, f.code) if o else None
        elif f.kind == "string":
            out[f.name] = rd.string(tpos + o) if o else None
        elif o:
            out[f.name] = "<unsupported>"
    return out


_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDING = {0: "SAME", 1: "VALID"}
_RENAME = {"fused_activation_function": "fused_activation", "dilation_h_factor": "dilation_h",
           "dilation_w_factor": "dilation_w"}


def friendly_options(raw: Dict[str, Any]) -> Dict[str, Any]:
    """Readable options: enum names for padding/activation, short dilation names."""
    out = {}
    for k, v in raw.items():
        if k == "padding" and isinstance(v, int):
            v = _PADDING.get(v, v)
        elif k == "fused_activation_function":
            v = _ACTIVATIONS.get(v, v)
        elif isinstance(v, float):
            v = float(f"{v:.7g}")  # float32 -> shortest stable decimal
        elif isinstance(v, tuple):
            v = list(v)
        out[_RENAME.get(k, k)] = v
    return out


# ---------------------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class Tensor:
    """One tensor of a subgraph. ``buffer_bytes`` is the size of its constant data,
    ``nbytes`` the size of its values (elements x item size)."""

    index: int
    name: str
    shape: Shape
    dtype: str
    buffer: int
    buffer_bytes: int
    is_constant: bool
    num_elements: int = 0
    nbytes: int = 0
    is_variable: bool = False
    shape_signature: Optional[Shape] = None
    has_sparsity: bool = False
    _pos: int = field(default=0, repr=False)  # table position in the file

    def to_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "name": self.name, "shape": list(self.shape),
                "dtype": self.dtype, "buffer": self.buffer, "buffer_bytes": self.buffer_bytes,
                "is_constant": self.is_constant, "is_variable": self.is_variable,
                "nbytes": self.nbytes}


@dataclass(slots=True)
class Op:
    """One operator with its shapes, options and textbook cost.

    ``type`` is the builtin name (``CONV_2D``) or the custom code of a custom op.
    ``inputs``/``outputs`` are tensor indices in the op's subgraph (-1 = optional input
    not given; its shape/dtype are None). ``weights_bytes``/``params`` count the constant
    inputs; ``bytes_in`` the non-constant inputs; ``flops``/``macs`` follow
    :mod:`models_zoo.flops`.
    """

    index: int
    subgraph: int
    type: str
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    input_shapes: Tuple[Optional[Shape], ...]
    output_shapes: Tuple[Shape, ...]
    input_dtypes: Tuple[Optional[str], ...]
    output_dtypes: Tuple[str, ...]
    options: Dict[str, Any]
    version: int = 1
    builtin_code: Optional[int] = None
    kernel_h: Optional[int] = None
    kernel_w: Optional[int] = None
    in_channels: Optional[int] = None
    out_channels: Optional[int] = None
    groups: Optional[int] = None
    weights_bytes: int = 0
    params: int = 0
    flops: int = 0
    macs: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    opcode_index: int = field(default=0, repr=False)
    _opt: Tuple[int, int, int, int] = field(default=(0, 0, 0, 0), repr=False)  # type, pos, type2, pos2
    _custom: Tuple[int, int, int] = field(default=(0, 0, 0), repr=False)  # pos, len, format
    _intermediates: Tuple[int, ...] = field(default=(), repr=False)
    _opts_key: str = field(default="{}", repr=False)  # canonical JSON of options

    @property
    def fused_activation(self) -> Optional[str]:
        """Fused activation name (``RELU``, ``RELU6``, ``NONE``...) or None if the op has none."""
        return self.options.get("fused_activation")

    @property
    def dtype(self) -> Optional[str]:
        """The op's data type: its first input's dtype, else its first output's."""
        if self.input_dtypes and self.input_dtypes[0] is not None:
            return self.input_dtypes[0]
        return self.output_dtypes[0] if self.output_dtypes else None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index, "subgraph": self.subgraph, "type": self.type,
            "version": self.version, "inputs": list(self.inputs), "outputs": list(self.outputs),
            "input_shapes": [list(s) if s is not None else None for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
            "input_dtypes": list(self.input_dtypes), "output_dtypes": list(self.output_dtypes),
            "options": self.options, "kernel_h": self.kernel_h, "kernel_w": self.kernel_w,
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "groups": self.groups, "weights_bytes": self.weights_bytes, "params": self.params,
            "flops": self.flops, "macs": self.macs, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


@dataclass(slots=True)
class Subgraph:
    index: int
    name: str
    tensors: List[Tensor]
    ops: List[Op]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]


@dataclass
class Block:
    """A run of ops of the main subgraph between two single-tensor cut points.

    ``ops``: op indices in execution order (ops that only transform constants, such as
    DEQUANTIZE of fp16 weights, belong to every block that consumes their output). ``inputs`` /
    ``outputs``: the non-constant tensors that enter / leave the block (one each for a
    block between two cuts). ``key``: a hash of the structure (op types, options, shapes,
    weight shapes, wiring), independent of tensor names and weight values.
    """

    index: int
    ops: Tuple[int, ...]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]
    key: str
    op_types: Tuple[str, ...] = ()
    flops: int = 0
    macs: int = 0
    params: int = 0
    weights_bytes: int = 0

    @property
    def input_tensor(self) -> Optional[int]:
        return self.inputs[0] if len(self.inputs) == 1 else None

    @property
    def output_tensor(self) -> Optional[int]:
        return self.outputs[0] if len(self.outputs) == 1 else None

    def to_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "ops": list(self.ops), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "key": self.key, "op_types": list(self.op_types),
                "flops": self.flops, "macs": self.macs, "params": self.params,
                "weights_bytes": self.weights_bytes}


# ---------------------------------------------------------------------------------------
# Graph
# ---------------------------------------------------------------------------------------
_STATIC_SHAPE_OPS = frozenset({"SHAPE", "RANK"})


class Graph:
    """A parsed .tflite model.

    ``ops`` lists the ops of all subgraphs, main subgraph (0) first, so ``ops[i]`` is op
    ``i`` of the main subgraph for ``i < len(subgraphs[0].ops)``. ``tensors``,
    ``inputs``, ``outputs``, ``producers`` (tensor -> op) and ``consumers`` (tensor ->
    [ops]) describe the main subgraph; other subgraphs are in ``subgraphs``.
    """

    def __init__(self, subgraphs: List[Subgraph], *, source: Union[str, bytes, None],
                 file_bytes: int, version: int, description: str,
                 buffer_spans: List[Tuple[int, int]], opcodes: List[Tuple[str, Optional[int], int]]):
        self.subgraphs = subgraphs
        self.source = source
        self.file_bytes = file_bytes
        self.version = version
        self.description = description
        self._buffer_spans = buffer_spans  # buffer index -> (absolute data position, size)
        self._opcodes = opcodes  # opcode index -> (name, builtin code or None, version)
        main = subgraphs[0] if subgraphs else Subgraph(0, "", [], [], (), ())
        self.tensors: List[Tensor] = main.tensors
        self.inputs: Tuple[int, ...] = main.inputs
        self.outputs: Tuple[int, ...] = main.outputs
        self.ops: List[Op] = [op for sg in subgraphs for op in sg.ops]
        self.main_ops: List[Op] = main.ops
        producers: Dict[int, int] = {}
        consumers: Dict[int, List[int]] = {}
        for op in main.ops:
            for t in op.outputs:
                producers[t] = op.index
            for t in op.inputs:
                if t >= 0:
                    lst = consumers.get(t)
                    if lst is None:
                        consumers[t] = [op.index]
                    elif lst[-1] != op.index:
                        lst.append(op.index)
        self.producers = producers
        self.consumers = consumers
        self._blocks: Optional[List[Block]] = None
        self._const_ops: Optional[List[bool]] = None
        self._sigs: Dict[int, str] = {}
        self._derived: List[bool] = []

    @property
    def name(self) -> str:
        return os.path.basename(self.source) if isinstance(self.source, str) else "<bytes>"

    # -- summaries ---------------------------------------------------------------------
    def summary(self) -> Dict[str, Any]:
        """Op counts by type and totals (flops, macs, params, weight/activation bytes)."""
        counts: Dict[str, int] = {}
        for op in self.ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        params = 0
        wbytes = 0
        for sg in self.subgraphs:
            for t in sg.tensors:
                if t.is_constant:
                    params += t.num_elements
                    wbytes += t.buffer_bytes
        return {
            "name": self.name,
            "n_ops": len(self.ops),
            "n_subgraphs": len(self.subgraphs),
            "n_tensors": sum(len(sg.tensors) for sg in self.subgraphs),
            "op_counts": dict(sorted(counts.items())),
            "flops": sum(op.flops for op in self.ops),
            "macs": sum(op.macs for op in self.ops),
            "params": params,
            "weights_bytes": wbytes,
            "activation_bytes": sum(op.bytes_in + op.bytes_out for op in self.ops),
            "file_bytes": self.file_bytes,
            # Tensors whose size is only known at run time (shape_signature has -1): their
            # `shape` is the converter's placeholder, so shapes/FLOPs of ops on them are too.
            "dynamic_tensors": sum(1 for sg in self.subgraphs for t in sg.tensors
                                   if t.shape_signature and -1 in t.shape_signature),
            "inputs": [{"index": t, "name": self.tensors[t].name, "shape": list(self.tensors[t].shape),
                        "dtype": self.tensors[t].dtype} for t in self.inputs],
            "outputs": [{"index": t, "name": self.tensors[t].name, "shape": list(self.tensors[t].shape),
                         "dtype": self.tensors[t].dtype} for t in self.outputs],
        }

    def to_dataframe(self):
        """One row per op (all subgraphs); scalar options become ``opt_<name>`` columns."""
        import pandas as pd

        rows = []
        for op in self.ops:
            d = op.to_dict()
            opts = d.pop("options")
            for k, v in opts.items():
                if not isinstance(v, (list, dict)):
                    d["opt_" + k] = v
            rows.append(d)
        return pd.DataFrame(rows)

    # -- structure ---------------------------------------------------------------------
    def const_like_ops(self) -> List[bool]:
        """Per main op: True if its outputs are known before the run: it only transforms
        constants (e.g. DEQUANTIZE of fp16 weights) or reads static shapes (SHAPE, RANK;
        Keras' Reshape/Flatten often compute the target shape this way)."""
        if self._const_ops is None:
            derived = [t.is_constant or t.is_variable for t in self.tensors]
            flags = []
            gin = set(self.inputs)
            for op in self.main_ops:
                ins = [t for t in op.inputs if t >= 0]
                c = (op.type in _STATIC_SHAPE_OPS or all(derived[t] and t not in gin for t in ins)) \
                    and bool(op.outputs) and not any(t in self.outputs for t in op.outputs)
                if c:
                    for t in op.outputs:
                        derived[t] = True
                flags.append(c)
            self._const_ops = flags
            self._derived = derived
        return self._const_ops

    def io_of(self, op_indices: Sequence[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """Non-constant tensors entering and leaving a set of main-subgraph ops (tensors
        computed from constants only, e.g. dequantized weights, count as constants)."""
        self.const_like_ops()
        derived = self._derived
        sel = set(op_indices)
        produced: Dict[int, None] = {}
        for i in sorted(sel):
            for t in self.main_ops[i].outputs:
                produced[t] = None
        ins: Dict[int, None] = {}
        for i in sorted(sel):
            for t in self.main_ops[i].inputs:
                if t >= 0 and t not in produced and not derived[t]:
                    ins[t] = None
        gout = set(self.outputs)
        outs = [t for t in produced if not derived[t] and
                (t in gout or any(c not in sel for c in self.consumers.get(t, ())))]
        return tuple(ins), tuple(outs)

    def _op_sig(self, i: int) -> str:
        sig = self._sigs.get(i)
        if sig is None:
            op = self.main_ops[i]
            T = self.tensors
            consts = [(k, T[t].shape, T[t].dtype) for k, t in enumerate(op.inputs)
                      if t >= 0 and T[t].is_constant]
            outs = [(T[t].shape, T[t].dtype) for t in op.outputs]
            sig = self._sigs[i] = repr((op.type, consts, outs)) + op._opts_key
        return sig

    def structure_key(self, op_indices: Sequence[int], _io=None) -> str:
        """Stable hash of the structure of a set of main ops: op types, options, shapes,
        dtypes, weight shapes and wiring — not tensor names, not weight values."""
        ops = sorted(set(op_indices))
        ins, outs = _io or self.io_of(ops)
        T = self.tensors
        local: Dict[int, str] = {t: f"i{k}" for k, t in enumerate(ins)}
        # repr of tuples of ints/strings is deterministic across runs and platforms.
        parts = [repr([(T[t].shape, T[t].dtype) for t in ins])]
        for j, i in enumerate(ops):
            op = self.main_ops[i]
            parts.append(self._op_sig(i))
            parts.append(",".join([local.get(t, "c") if t >= 0 else "-" for t in op.inputs]))
            for k, t in enumerate(op.outputs):
                local[t] = f"o{j}.{k}"
        parts.append(",".join([local.get(t, "?") for t in outs]))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def op_key(self, op_index: int) -> str:
        """Structure key of one main op (with the constant-only ops feeding it)."""
        return self.structure_key(self.op_closure([op_index]))

    def op_closure(self, op_indices: Sequence[int]) -> List[int]:
        """The ops plus the constant-only ops (e.g. weight DEQUANTIZE) that feed them."""
        const_like = self.const_like_ops()
        sel = set(op_indices)
        stack = list(sel)
        while stack:
            i = stack.pop()
            for t in self.main_ops[i].inputs:
                p = self.producers.get(t)
                if p is not None and p not in sel and const_like[p]:
                    sel.add(p)
                    stack.append(p)
        return sorted(sel)

    def blocks(self) -> List[Block]:
        """Split the main subgraph at tensors every input->output path passes through."""
        if self._blocks is None:
            self._blocks = self._find_blocks()
        return self._blocks

    def _find_blocks(self) -> List[Block]:
        ops = self.main_ops
        if not ops:
            return []
        const_like = self.const_like_ops()
        main = [op.index for op in ops if not const_like[op.index]]
        m = len(main)
        if m == 0:
            return []
        pos = {i: k for k, i in enumerate(main)}
        gout = set(self.outputs)
        flowing = set(self.inputs)
        for i in main:
            flowing.update(ops[i].outputs)
        cnt = [0] * (m + 1)
        tsum = [0] * (m + 1)  # with cnt == 1 this is the id of the one live tensor
        for t in flowing:
            p = self.producers.get(t)
            start = pos.get(p, -1) if p is not None else -1
            end = -1
            for c in self.consumers.get(t, ()):
                k = pos.get(c)
                if k is not None and k > end:
                    end = k
            if t in gout:
                end = m
            s = max(start, 0)
            if end > s:
                cnt[s] += 1
                cnt[end] -= 1
                tsum[s] += t
                tsum[end] -= t
        cuts: List[Tuple[int, Optional[int]]] = []  # (boundary, cut tensor or None)
        live = tid = 0
        for b in range(m - 1):  # boundary b lies after main[b]
            live += cnt[b]
            tid += tsum[b]
            if live <= 1:  # 0 only after a dead end: nothing flows across either
                cuts.append((b, tid if live == 1 else None))
        cuts.append((m - 1, None))
        any_const = any(const_like)
        blocks = []
        s = 0
        prev_cut: Optional[int] = None
        T = self.tensors
        for bi, (b, cut) in enumerate(cuts):
            seg = main[s:b + 1]
            if any_const:
                seg = self.op_closure(seg)  # weight DEQUANTIZE etc. join every consuming block
            if (not any_const and prev_cut is not None and cut is not None
                    and s <= pos.get(self.producers.get(cut), -1) <= b
                    and any(s <= pos.get(c, -1) <= b for c in self.consumers.get(prev_cut, ()))):
                io = ((prev_cut,), (cut,))
            else:
                io = self.io_of(seg)
            consts = {t for i in seg for t in ops[i].inputs if t >= 0 and T[t].is_constant}
            blocks.append(Block(
                index=bi, ops=tuple(seg), inputs=io[0], outputs=io[1],
                key=self.structure_key(seg, io),
                op_types=tuple(ops[i].type for i in seg),
                flops=sum(ops[i].flops for i in seg), macs=sum(ops[i].macs for i in seg),
                params=sum(T[t].num_elements for t in consts),
                weights_bytes=sum(T[t].buffer_bytes for t in consts)))
            s = b + 1
            prev_cut = cut
        return blocks


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------
_READ_WHOLE_MAX_BYTES = 1 << 20


def _open_buffer(path_or_bytes) -> Tuple[Any, Optional[str], Any]:
    """(buffer, path or None, closer): files above 1 MiB are memory-mapped so weights are
    never read, smaller ones are read whole."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return path_or_bytes, None, None
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise ModelFileError(f"cannot read a model from a {type(path_or_bytes).__name__}",
                             hint="pass a path to a .tflite file or its bytes")
    path = os.fspath(path_or_bytes)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise ModelFileError(f"{path}: file is too small to be a TFLite model ({size} bytes)")
            if size <= _READ_WHOLE_MAX_BYTES:  # one read() beats mmap set-up + page faults
                return f.read(), path, None
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a directory, not a .tflite file") from None
    except PermissionError:
        raise ModelFileError(f"{path}: permission denied", hint="check the file's permissions") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from None
    return mm, path, mm


def read_graph(path_or_bytes) -> Graph:
    """Parse a .tflite file (path) or its bytes into a :class:`Graph`.

    Raises ModelFileError if the file is missing, not a TFLite flatbuffer (identifier
    'TFL3') or corrupt.
    """
    buf, path, closer = _open_buffer(path_or_bytes)
    label = path or "model bytes"
    try:
        if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
            raise ModelFileError(f"{label}: not a TFLite model (file identifier is "
                                 f"{bytes(buf[4:8])!r}, expected b'TFL3')")
        try:
            return _parse(buf, path if path is not None else bytes(buf))
        except (struct.error, IndexError, ValueError, KeyError, OverflowError) as e:
            raise ModelFileError(f"{label}: corrupt or truncated TFLite flatbuffer ({e})",
                                 hint="re-export or re-download the model; the file may be cut short") from None
    finally:
        if closer is not None:
            closer.close()


_IVEC = [struct.Struct(f"<{n}i").unpack_from for n in range(17)]


def _parse(buf, source) -> Graph:
    rd = _Reader(buf)
    size = len(buf)
    root = _u32(buf, 0)[0]
    mf = rd.fields(root)
    nmf = len(mf)

    def mfield(i: int) -> int:
        return root + mf[i] if i < nmf and mf[i] else 0

    version = _u32(buf, mfield(0))[0] if mfield(0) else 0
    description = rd.string(mfield(3)) if mfield(3) else ""

    # Operator codes: name, builtin code, version.
    op_names = _enum("BuiltinOperator")
    opcodes: List[Tuple[str, Optional[int], int]] = []
    if mfield(1):
        for tp in rd.tables(mfield(1)):
            f = rd.fields(tp)
            nf = len(f)
            dep = struct.unpack_from("<b", buf, tp + f[0])[0] if nf > 0 and f[0] else 0
            code = _i32(buf, tp + f[3])[0] if nf > 3 and f[3] else 0
            ver = _i32(buf, tp + f[2])[0] if nf > 2 and f[2] else 1
            code = max(code, dep)  # schema: the larger of the two is the real code
            custom = rd.string(tp + f[1]) if nf > 1 and f[1] else None
            if op_names.get(code) == "CUSTOM":
                opcodes.append((custom or "CUSTOM", None, ver))
            else:
                opcodes.append((op_names.get(code, f"BUILTIN_{code}"), code, ver))

    # Buffers: only sizes and where the data is.
    spans: List[Tuple[int, int]] = []
    if mfield(4):
        for bp in rd.tables(mfield(4)):
            f = rd.fields(bp)
            nf = len(f)
            if nf > 0 and f[0]:
                v = bp + f[0]
                v += _u32(buf, v)[0]
                spans.append((v + 4, _u32(buf, v)[0]))
            elif nf > 2 and f[2]:
                off = _u64(buf, bp + f[1])[0] if f[1] else 0
                n = _u64(buf, bp + f[2])[0]
                spans.append((off, n) if off > 1 else (0, 0))
            else:
                spans.append((0, 0))
    nbuf = len(spans)

    dtype_names = _DTYPE_NAMES or _init_dtypes()
    subgraphs: List[Subgraph] = []
    vtc = rd._vt
    ivec = _IVEC
    u32 = _u32
    i32 = _i32
    itemsize = DTYPE_ITEMSIZE
    for si, sp in enumerate(rd.tables(mfield(2)) if mfield(2) else []):
        f = rd.fields(sp)
        nf = len(f)
        tensors: List[Tensor] = []
        if nf > 0 and f[0]:
            for ti, tp in enumerate(rd.tables(sp + f[0])):
                tf = vtc.get(tp - i32(buf, tp)[0]) or rd.fields(tp)
                ntf = len(tf)
                o = tf[0] if ntf > 0 else 0
                if o:
                    v = tp + o
                    v += u32(buf, v)[0]
                    n = u32(buf, v)[0]
                    shape = ivec[n](buf, v + 4) if n < 17 else _vec_struct("i", n).unpack_from(buf, v + 4)
                else:
                    shape = ()
                dt = buf[tp + tf[1]] if ntf > 1 and tf[1] else 0
                b = u32(buf, tp + tf[2])[0] if ntf > 2 and tf[2] else 0
                o = tf[3] if ntf > 3 else 0
                if o:
                    v = tp + o
                    v += u32(buf, v)[0]
                    name = bytes(buf[v + 4:v + 4 + u32(buf, v)[0]]).decode("utf-8", "replace")
                else:
                    name = ""
                var = bool(buf[tp + tf[5]]) if ntf > 5 and tf[5] else False
                sparse = bool(ntf > 6 and tf[6])
                o = tf[7] if ntf > 7 else 0
                if o:
                    v = tp + o
                    v += u32(buf, v)[0]
                    n = u32(buf, v)[0]
                    sig = ivec[n](buf, v + 4) if n < 17 else _vec_struct("i", n).unpack_from(buf, v + 4)
                else:
                    sig = None
                bbytes = spans[b][1] if b < nbuf else 0
                dtype = dtype_names.get(dt, f"type{dt}")
                elems = 1
                for d in shape:
                    if d > 0:
                        elems *= d
                tensors.append(Tensor(ti, name, shape, dtype, b, bbytes, bbytes > 0 and not var,
                                      elems, int(elems * itemsize.get(dtype, 0) + 0.5),
                                      var, sig, sparse, tp))
        sg_in = rd.vector(sp + f[1], "i") if nf > 1 and f[1] else ()
        sg_out = rd.vector(sp + f[2], "i") if nf > 2 and f[2] else ()
        sg_name = rd.string(sp + f[4]) if nf > 4 and f[4] else ""
        ops: List[Op] = []
        if nf > 3 and f[3]:
            for oi, op_pos in enumerate(rd.tables(sp + f[3])):
                ops.append(_parse_op(rd, op_pos, oi, si, tensors, opcodes))
        subgraphs.append(Subgraph(si, sg_name, tensors, ops, tuple(sg_in), tuple(sg_out)))
    if not subgraphs:
        raise ValueError("model has no subgraphs")
    return Graph(subgraphs, source=source, file_bytes=size, version=version,
                 description=description, buffer_spans=spans, opcodes=opcodes)


_DTYPE_NAMES: Dict[int, str] = {}


def _init_dtypes() -> Dict[int, str]:
    _DTYPE_NAMES.update({v: k.lower() for v, k in _enum("TensorType").items()})
    return _DTYPE_NAMES


# Options of scalar-only tables, keyed by their raw bytes: zoo models repeat the same
# few option tables thousands of times. Bounded; values are copied before use.
_OPTIONS_CACHE: Dict[tuple, Tuple[Dict[str, Any], str]] = {}
_OPTIONS_CACHE_MAX = 8192


def _read_options(rd: _Reader, union_name: str, otype: int, tpos: int) -> Tuple[Dict[str, Any], str]:
    """(friendly options, canonical JSON of them)."""
    buf = rd.buf
    offs = rd.fields(tpos)
    vt = tpos - _i32(buf, tpos)[0]
    tsize = _u16(buf, vt + 2)[0]
    key = (otype, union_name, offs, bytes(buf[tpos + 4:tpos + tsize]))
    hit = _OPTIONS_CACHE.get(key)
    if hit is not None:
        return dict(hit[0]), hit[1]
    spec = options_spec(_enum(union_name).get(otype, "")) or ()
    opts = friendly_options(read_options_raw(rd, tpos, spec))
    okey = json.dumps(opts, sort_keys=True, separators=(",", ":"), default=str)
    if all(f.kind == "scalar" for f in spec) and len(_OPTIONS_CACHE) < _OPTIONS_CACHE_MAX:
        _OPTIONS_CACHE[key] = (dict(opts), okey)
    return opts, okey


def _parse_op(rd: _Reader, op_pos: int, oi: int, si: int, tensors: List[Tensor], opcodes) -> Op:
    buf = rd.buf
    f = rd._vt.get(op_pos - _i32(buf, op_pos)[0]) or rd.fields(op_pos)
    nf = len(f)
    oc = _u32(buf, op_pos + f[0])[0] if nf > 0 and f[0] else 0
    name, code, ver = opcodes[oc]
    ins = outs = ()
    if nf > 1 and f[1]:
        v = op_pos + f[1]
        v += _u32(buf, v)[0]
        n = _u32(buf, v)[0]
        ins = _IVEC[n](buf, v + 4) if n < 17 else _vec_struct("i", n).unpack_from(buf, v + 4)
    if nf > 2 and f[2]:
        v = op_pos + f[2]
        v += _u32(buf, v)[0]
        n = _u32(buf, v)[0]
        outs = _IVEC[n](buf, v + 4) if n < 17 else _vec_struct("i", n).unpack_from(buf, v + 4)
    otype = buf[op_pos + f[3]] if nf > 3 and f[3] else 0
    opos = rd.deref(op_pos + f[4]) if nf > 4 and f[4] else 0
    custom = (0, 0, 0)
    if nf > 5 and f[5]:
        cstart, clen = rd.vector_span(op_pos + f[5])
        cfmt = struct.unpack_from("<b", buf, op_pos + f[6])[0] if nf > 6 and f[6] else 0
        custom = (cstart, clen, cfmt)
    inter = rd.vector(op_pos + f[8], "i") if nf > 8 and f[8] else ()
    otype2 = buf[op_pos + f[11]] if nf > 11 and f[11] else 0
    opos2 = rd.deref(op_pos + f[12]) if nf > 12 and f[12] else 0

    if otype and opos:
        options, okey = _read_options(rd, "BuiltinOptions", otype, opos)
    else:
        options, okey = {}, "{}"
    if otype2 and opos2:
        opts2, okey2 = _read_options(rd, "BuiltinOptions2", otype2, opos2)
        options.update(opts2)
        okey += okey2

    in_shapes = []
    in_dtypes = []
    wbytes = params = bin_ = 0
    for t in ins:
        if t < 0:
            in_shapes.append(None)
            in_dtypes.append(None)
            continue
        T = tensors[t]
        in_shapes.append(T.shape)
        in_dtypes.append(T.dtype)
        if T.is_constant:
            wbytes += T.buffer_bytes
            params += T.num_elements
        else:
            bin_ += T.nbytes
    out_shapes = []
    out_dtypes = []
    bout = 0
    for t in outs:
        T = tensors[t]
        out_shapes.append(T.shape)
        out_dtypes.append(T.dtype)
        bout += T.nbytes
    out_shapes = tuple(out_shapes)
    macs, flops, kh, kw, cin, cout, groups = op_cost_tuple(name, options, in_shapes, out_shapes)
    return Op(oi, si, name, ins, outs, tuple(in_shapes), out_shapes, tuple(in_dtypes),
              tuple(out_dtypes), options, ver, code, kh, kw, cin, cout, groups, wbytes, params,
              flops, macs, bin_, bout, oc, (otype, opos, otype2, opos2), custom, tuple(inter), okey)
