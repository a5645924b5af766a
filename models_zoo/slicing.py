"""Write single ops or blocks of a .tflite model as standalone .tflite models.

The new model holds only the tensors the selected ops touch, their constant buffers
(weights copied byte for byte, 16-byte aligned), the operator codes they use and their
options (re-encoded field by field with the layout learned in
:func:`models_zoo.graph.options_spec`). Its inputs are the selection's non-constant
inputs with their real (static) shapes, its outputs the tensors the rest of the network
or the caller reads. Ops that reference other subgraphs (WHILE, IF, CALL_ONCE) and
sparse tensors are refused.
"""
from __future__ import annotations

import importlib
import logging
import mmap
import os
import re
import struct
from typing import Any, List, NamedTuple, Optional, Sequence, Union

import numpy as np

from models_zoo.graph import Graph, _Reader, _enum, options_spec, read_graph
from opcost.errors import ModelFileError, UsageError

log = logging.getLogger("opcost.slicing")

_TYPE_CODES = None  # dtype name -> TensorType value


class SliceInfo(NamedTuple):
    """One written slice: kind ("op" | "block"), its index, the file, its structure key."""

    kind: str
    index: int
    path: str
    key: str


def _mod(name: str):
    return importlib.import_module(f"tflite.{name}")


def _as_graph(graph_or_path) -> Graph:
    return graph_or_path if isinstance(graph_or_path, Graph) else read_graph(graph_or_path)


class _Source:
    """The original model bytes (re-mapped from disk for graphs read from a path)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.buf: Any = None
        self._mm: Optional[mmap.mmap] = None

    def __enter__(self) -> "_Source":
        src = self.graph.source
        if isinstance(src, (bytes, bytearray, memoryview)):
            self.buf = src
            return self
        try:
            with open(src, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{src}: cannot re-open the model to copy weights ({e})") from None
        if len(self._mm) != self.graph.file_bytes or self._mm[4:8] != b"TFL3":
            self._mm.close()
            raise ModelFileError(f"{src}: the file changed since it was read",
                                 hint="read the model again with read_graph() and slice that")
        self.buf = self._mm
        return self

    def __exit__(self, *exc) -> None:
        if self._mm is not None:
            self._mm.close()


def _check_sliceable(g: Graph, sel: Sequence[int]) -> None:
    opt_names = _enum("BuiltinOptions")
    opt2_names = _enum("BuiltinOptions2")
    for i in sel:
        op = g.main_ops[i]
        for otype, names in ((op._opt[0], opt_names), (op._opt[2], opt2_names)):
            if not otype:
                continue
            spec = options_spec(names.get(otype, ""))
            if spec is None:
                raise UsageError(f"op {i} ({op.type}): options type {otype} is unknown to the "
                                 "installed tflite package", hint="upgrade the `tflite` package")
            if any(f.name.endswith("subgraph_index") for f in spec):
                raise UsageError(f"op {i} ({op.type}) calls other subgraphs and cannot be sliced "
                                 "on its own", hint="slice the ops inside its subgraphs instead, "
                                 "or measure the whole model")
        for t in list(op.inputs) + list(op.outputs):
            if t >= 0 and g.tensors[t].has_sparsity:
                raise UsageError(f"op {i} ({op.type}) uses sparse tensor {t}; sparse models "
                                 "are not sliced", hint="measure the whole model instead")


def _dtype_code(name: str) -> int:
    global _TYPE_CODES
    if _TYPE_CODES is None:
        _TYPE_CODES = {v.lower(): k for k, v in _enum("TensorType").items()}
    return _TYPE_CODES[name]


_NP = {"f": np.float32, "d": np.float64, "i": np.int32, "I": np.uint32, "q": np.int64,
       "Q": np.uint64, "h": np.int16, "H": np.uint16, "b": np.int8, "B": np.uint8, "?": np.bool_}


def _write_options(b, rd: _Reader, tpos: int, table_name: str) -> int:
    """Re-encode the options table at ``tpos`` into builder ``b``; returns its offset."""
    spec = options_spec(table_name) or ()
    offs = rd.fields(tpos)
    nf = len(offs)
    present = [(f, tpos + offs[f.slot]) for f in spec if f.slot < nf and offs[f.slot]]
    children = {}
    for f, fpos in present:
        if f.kind == "vector":
            children[f.slot] = b.CreateNumpyVector(np.asarray(rd.vector(fpos, f.code), dtype=_NP[f.code]))
        elif f.kind == "string":
            children[f.slot] = b.CreateString(rd.string(fpos))
        elif f.kind != "scalar":
            raise UsageError(f"{table_name}.{f.name} has a layout this slicer cannot copy",
                             hint="measure the whole model instead")
    b.StartObject(max((f.slot for f in spec), default=-1) + 1)
    for f, fpos in present:
        if f.kind == "scalar":
            val = struct.unpack_from("<" + f.code, rd.buf, fpos)[0]
            getattr(b, f.method)(f.slot, val, f.default)
        else:
            b.PrependUOffsetTRelativeSlot(f.slot, children[f.slot], 0)
    return b.EndObject()


def _offsets_vector(b, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def _aligned_bytes(b, data: bytes, alignment: int = 16) -> int:
    b.StartVector(1, len(data), alignment)
    b.head = b.head - len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _write_quantization(b, rd: _Reader, tensor_pos: int) -> int:
    """Copy a tensor's QuantizationParameters (min, max, scale, zero_point, dimension)."""
    tf = rd.fields(tensor_pos)
    if not (len(tf) > 4 and tf[4]):
        return 0
    qpos = rd.deref(tensor_pos + tf[4])
    qf = rd.fields(qpos)
    nq = len(qf)
    if nq > 4 and qf[4] and rd.buf[qpos + qf[4]] != 0:
        raise UsageError("a tensor uses custom quantization details, which are not sliced",
                         hint="measure the whole model instead")
    Q = _mod("QuantizationParameters")
    vecs = {}
    for slot, code, dt in ((0, "f", np.float32), (1, "f", np.float32), (2, "f", np.float32),
                           (3, "q", np.int64)):
        if nq > slot and qf[slot]:
            vecs[slot] = b.CreateNumpyVector(np.asarray(rd.vector(qpos + qf[slot], code), dtype=dt))
    qdim = struct.unpack_from("<i", rd.buf, qpos + qf[6])[0] if nq > 6 and qf[6] else 0
    Q.QuantizationParametersStart(b)
    if 0 in vecs:
        Q.QuantizationParametersAddMin(b, vecs[0])
    if 1 in vecs:
        Q.QuantizationParametersAddMax(b, vecs[1])
    if 2 in vecs:
        Q.QuantizationParametersAddScale(b, vecs[2])
    if 3 in vecs:
        Q.QuantizationParametersAddZeroPoint(b, vecs[3])
    Q.QuantizationParametersAddQuantizedDimension(b, qdim)
    return Q.QuantizationParametersEnd(b)


def build_model_bytes(graph: Graph, op_indices: Sequence[int], *,
                      description: str = "opcost slice", sinks_only: bool = False) -> bytes:
    """Serialize main-subgraph ops ``op_indices`` (plus the constant-only ops feeding them)
    as a standalone TFLite model and return its bytes. Outputs are the tensors read
    outside the selection; with ``sinks_only`` just those no selected op reads (so an
    intermediate that other ops of the full graph also read stays internal)."""
    import flatbuffers

    g = graph
    n_main = len(g.main_ops)
    bad = [i for i in op_indices if not (0 <= int(i) < n_main)]
    if bad or not op_indices:
        raise UsageError(f"op index {bad[0] if bad else '(none)'} is out of range: the main "
                         f"subgraph has {n_main} ops", hint="see `opcost graph MODEL` for the op indices")
    sel = g.op_closure([int(i) for i in op_indices])
    _check_sliceable(g, sel)
    ins, outs = g.io_of(sel)
    if sinks_only:
        consumed_in = {t for i in sel for t in g.main_ops[i].inputs}
        outs = tuple(t for t in outs if t not in consumed_in)
    if not outs:  # dead-end ops: expose everything they produce
        produced = [t for i in sel for t in g.main_ops[i].outputs]
        consumed = {t for i in sel for t in g.main_ops[i].inputs}
        outs = tuple(t for t in produced if t not in consumed) or tuple(produced)
    used: List[int] = sorted({t for i in sel for t in (*g.main_ops[i].inputs, *g.main_ops[i].outputs,
                                                        *g.main_ops[i]._intermediates) if t >= 0})
    tmap = {t: k for k, t in enumerate(used)}
    opcode_map: dict = {}
    for i in sel:
        opcode_map.setdefault(g.main_ops[i].opcode_index, len(opcode_map))

    total = sum(g.tensors[t].buffer_bytes for t in used)
    b = flatbuffers.Builder(total + 4096 + 256 * len(used))
    Tm, Bm, Om, OCm, SGm, Mm = (_mod(n) for n in ("Tensor", "Buffer", "Operator", "OperatorCode",
                                                  "SubGraph", "Model"))
    opt_names = _enum("BuiltinOptions")
    opt2_names = _enum("BuiltinOptions2")

    with _Source(g) as src:
        rd = _Reader(src.buf)
        # Buffers: 0 is the empty sentinel; one per constant tensor.
        buf_offsets = []
        Bm.BufferStart(b)
        buf_offsets.append(Bm.BufferEnd(b))
        tensor_buffer = {}
        for t in used:
            T = g.tensors[t]
            if T.is_constant:
                start, size = g._buffer_spans[T.buffer]
                data = bytes(src.buf[start:start + size])
                vec = _aligned_bytes(b, data)
                Bm.BufferStart(b)
                Bm.BufferAddData(b, vec)
                tensor_buffer[t] = len(buf_offsets)
                buf_offsets.append(Bm.BufferEnd(b))
        # Tensors.
        tensor_offsets = []
        for t in used:
            T = g.tensors[t]
            name = b.CreateString(T.name)
            shape = b.CreateNumpyVector(np.asarray(T.shape, dtype=np.int32))
            quant = _write_quantization(b, rd, T._pos)
            tf = rd.fields(T._pos)
            has_rank = bool(len(tf) > 8 and tf[8] and src.buf[T._pos + tf[8]])
            Tm.TensorStart(b)
            Tm.TensorAddShape(b, shape)
            Tm.TensorAddType(b, _dtype_code(T.dtype))
            Tm.TensorAddBuffer(b, tensor_buffer.get(t, 0))
            Tm.TensorAddName(b, name)
            if quant:
                Tm.TensorAddQuantization(b, quant)
            Tm.TensorAddIsVariable(b, T.is_variable)
            Tm.TensorAddHasRank(b, has_rank)
            tensor_offsets.append(Tm.TensorEnd(b))
        # Operators.
        op_offsets = []
        for i in sel:
            op = g.main_ops[i]
            otype, opos, otype2, opos2 = op._opt
            opts = _write_options(b, rd, opos, opt_names[otype]) if otype and opos else 0
            opts2 = _write_options(b, rd, opos2, opt2_names[otype2]) if otype2 and opos2 else 0
            cpos, clen, cfmt = op._custom
            custom = b.CreateByteVector(bytes(src.buf[cpos:cpos + clen])) if clen else 0
            vin = b.CreateNumpyVector(np.asarray([tmap[t] if t >= 0 else -1 for t in op.inputs], np.int32))
            vout = b.CreateNumpyVector(np.asarray([tmap[t] for t in op.outputs], np.int32))
            vint = (b.CreateNumpyVector(np.asarray([tmap[t] for t in op._intermediates], np.int32))
                    if op._intermediates else 0)
            Om.OperatorStart(b)
            Om.OperatorAddOpcodeIndex(b, opcode_map[op.opcode_index])
            Om.OperatorAddInputs(b, vin)
            Om.OperatorAddOutputs(b, vout)
            if opts:
                Om.OperatorAddBuiltinOptionsType(b, otype)
                Om.OperatorAddBuiltinOptions(b, opts)
            if opts2:
                Om.OperatorAddBuiltinOptions2Type(b, otype2)
                Om.OperatorAddBuiltinOptions2(b, opts2)
            if custom:
                Om.OperatorAddCustomOptions(b, custom)
                Om.OperatorAddCustomOptionsFormat(b, cfmt)
            if vint:
                Om.OperatorAddIntermediates(b, vint)
            op_offsets.append(Om.OperatorEnd(b))
    # Operator codes, in the new numbering.
    code_offsets = []
    for oc in sorted(opcode_map, key=opcode_map.get):
        name, code, ver = g._opcodes[oc]
        cc = b.CreateString(name) if code is None else 0
        builtin = 32 if code is None else code  # 32 = CUSTOM
        OCm.OperatorCodeStart(b)
        OCm.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, 127))
        OCm.OperatorCodeAddBuiltinCode(b, builtin)
        OCm.OperatorCodeAddVersion(b, ver)
        if cc:
            OCm.OperatorCodeAddCustomCode(b, cc)
        code_offsets.append(OCm.OperatorCodeEnd(b))

    v_tensors = _offsets_vector(b, tensor_offsets)
    v_in = b.CreateNumpyVector(np.asarray([tmap[t] for t in ins], np.int32))
    v_out = b.CreateNumpyVector(np.asarray([tmap[t] for t in outs], np.int32))
    v_ops = _offsets_vector(b, op_offsets)
    sg_name = b.CreateString("main")
    SGm.SubGraphStart(b)
    SGm.SubGraphAddTensors(b, v_tensors)
    SGm.SubGraphAddInputs(b, v_in)
    SGm.SubGraphAddOutputs(b, v_out)
    SGm.SubGraphAddOperators(b, v_ops)
    SGm.SubGraphAddName(b, sg_name)
    sg = SGm.SubGraphEnd(b)

    v_codes = _offsets_vector(b, code_offsets)
    v_sgs = _offsets_vector(b, [sg])
    v_bufs = _offsets_vector(b, buf_offsets)
    desc = b.CreateString(description)
    Mm.ModelStart(b)
    Mm.ModelAddVersion(b, 3)
    Mm.ModelAddOperatorCodes(b, v_codes)
    Mm.ModelAddSubgraphs(b, v_sgs)
    Mm.ModelAddDescription(b, desc)
    Mm.ModelAddBuffers(b, v_bufs)
    b.Finish(Mm.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _write(data: bytes, out_path: Union[str, os.PathLike]) -> str:
    out_path = os.fspath(out_path)
    d = os.path.dirname(os.path.abspath(out_path))
    try:
        os.makedirs(d, exist_ok=True)
        tmp = out_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, out_path)
    except OSError as e:
        raise UsageError(f"cannot write {out_path}: {e.strerror or e}",
                         hint="choose a writable --out directory") from None
    return out_path


def slice_ops(graph_or_path, op_indices: Sequence[int], out_path, *, sinks_only: bool = False) -> str:
    """Write main-subgraph ops ``op_indices`` as a standalone .tflite; returns the path.
    ``sinks_only``: see :func:`build_model_bytes`."""
    g = _as_graph(graph_or_path)
    return _write(build_model_bytes(g, list(op_indices), sinks_only=sinks_only), out_path)


def slice_op(graph_or_path, op_index: int, out_path) -> str:
    """Write one op of the main subgraph (with any constant-only ops feeding it, e.g. a
    weight DEQUANTIZE) as a standalone .tflite; returns the path."""
    return slice_ops(graph_or_path, [op_index], out_path)


def slice_block(graph_or_path, block_index: int, out_path) -> str:
    """Write block ``block_index`` of ``Graph.blocks()`` as a standalone .tflite."""
    g = _as_graph(graph_or_path)
    blocks = g.blocks()
    if not 0 <= block_index < len(blocks):
        raise UsageError(f"block index {block_index} is out of range: the model has "
                         f"{len(blocks)} blocks", hint="see `opcost graph MODEL --blocks`")
    return slice_ops(g, blocks[block_index].ops, out_path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]


def slice_all(path, out_dir, *, ops: bool = True, blocks: bool = True,
              unique: bool = False, skipped: Optional[list] = None) -> List[SliceInfo]:
    """Slice every op and/or block of the model at ``path`` into ``out_dir``.

    Returns ``SliceInfo(kind, index, path, key)`` tuples (plain tuples too). With
    ``unique=True`` only the first slice of each structure key is written. Ops that
    cannot be sliced (control flow, sparse) are logged, appended to ``skipped`` as
    ``(kind, index, reason)`` and left out.
    """
    g = _as_graph(path)
    stem = _safe(os.path.splitext(g.name)[0]) or "model"
    out: List[SliceInfo] = []
    seen = set()
    jobs: List[Any] = []
    if ops:
        const_like = g.const_like_ops()
        for op in g.main_ops:
            if not const_like[op.index]:
                jobs.append(("op", op.index, [op.index], g.op_key(op.index),
                             f"{stem}_op{op.index:03d}_{_safe(op.type)}.tflite"))
    if blocks:
        for blk in g.blocks():
            jobs.append(("block", blk.index, list(blk.ops), blk.key,
                         f"{stem}_block{blk.index:03d}.tflite"))
    for kind, idx, sel, key, fname in jobs:
        if unique and (kind, key) in seen:
            continue
        try:
            p = slice_ops(g, sel, os.path.join(os.fspath(out_dir), fname))
        except UsageError as e:
            if e.message.startswith("cannot write"):
                raise
            log.warning("skipping %s %d: %s", kind, idx, e.message)
            if skipped is not None:
                skipped.append((kind, idx, e.message))
            continue
        seen.add((kind, key))
        out.append(SliceInfo(kind, idx, p, key))
    return out
