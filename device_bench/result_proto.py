"""A small pure decoder of the protobuf wire format, and the BenchmarkResult message.

``--result_file_path`` makes the benchmark tool write a serialized
``tflite.tools.benchmark.BenchmarkResult`` (tensorflow/lite/tools/benchmark/proto/
benchmark_result.proto, proto2)::

    BenchmarkResult { 1: string name; 2: LatencyMetrics; 3: MemoryMetrics; 4: MiscMetrics }
    LatencyMetrics  { 1 avg_ms, 2 min_ms, 3 max_ms, 4 stddev_ms, 5 median_ms, 6 p5_ms,
                      7 p95_ms, 8 init_ms, 9 first_inference_ms, 10 average_warm_up_ms: float }
    MemoryMetrics   { 1 init_footprint_kb: int64, 2 overall_footprint_kb: int64,
                      3 peak_mem_mb: float }
    MiscMetrics     { 1 model_size_mb: float, 2 num_runs: int32, 3 num_warmup_runs: int32,
                      4 model_throughput_in_mb_per_sec: float }

No generated code: the wire format is decoded by hand (varint, fixed64,
length-delimited, fixed32); unknown fields are skipped so newer files still decode.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Tuple

from opcost.errors import ParseError

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5

_HINT = ("the file should be what --result_file_path wrote (a serialized BenchmarkResult); "
         "check that the run finished and that the file was pulled completely")

Fields = Dict[int, List[Tuple[int, object]]]


def read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    """``(value, next position)`` of the base-128 varint at ``pos``."""
    result = 0
    shift = 0
    n = len(data)
    while True:
        if pos >= n:
            raise ParseError("protobuf data ends inside a varint", hint=_HINT)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ParseError("protobuf varint longer than 10 bytes", hint=_HINT)


def decode_fields(data: bytes) -> Fields:
    """Field number -> list of ``(wire type, raw value)`` in file order.

    Raw values: int for varint / fixed64 / fixed32 (unsigned bit patterns), ``bytes``
    for length-delimited fields.
    """
    fields: Fields = {}
    pos = 0
    n = len(data)
    while pos < n:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ParseError("protobuf field number 0 is invalid (not a protobuf message?)", hint=_HINT)
        if wire == WIRE_VARINT:
            value, pos = read_varint(data, pos)
        elif wire == WIRE_FIXED64:
            if pos + 8 > n:
                raise ParseError("protobuf data ends inside a 64-bit field", hint=_HINT)
            value = int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire == WIRE_LEN:
            length, pos = read_varint(data, pos)
            if pos + length > n:
                raise ParseError(f"protobuf length-delimited field {number} runs past the end "
                                 f"({length} bytes announced, {n - pos} left)", hint=_HINT)
            value = bytes(data[pos:pos + length])
            pos += length
        elif wire == WIRE_FIXED32:
            if pos + 4 > n:
                raise ParseError("protobuf data ends inside a 32-bit field", hint=_HINT)
            value = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        else:  # 3/4 are deprecated groups, 6/7 do not exist
            raise ParseError(f"unsupported protobuf wire type {wire} for field {number}", hint=_HINT)
        fields.setdefault(number, []).append((wire, value))
    return fields


def _last(fields: Fields, number: int, wire: int):
    # proto2 optional scalars: the last occurrence wins; a wrong wire type is an error
    values = fields.get(number)
    if not values:
        return None
    got_wire, value = values[-1]
    if got_wire != wire:
        raise ParseError(f"protobuf field {number} has wire type {got_wire}, expected {wire}", hint=_HINT)
    return value


def _float32(bits: int) -> float:
    value = struct.unpack("<f", bits.to_bytes(4, "little"))[0]
    # a float32 carries ~7 significant digits; drop the binary noise of widening
    return float(f"{value:.7g}")


def _int64(raw: int) -> int:
    return raw - (1 << 64) if raw >= (1 << 63) else raw


def _submessage(fields: Fields, number: int) -> Fields:
    # proto merges repeated occurrences of a message field; concatenating bytes does that
    values = fields.get(number)
    if not values:
        return {}
    chunks = []
    for wire, value in values:
        if wire != WIRE_LEN:
            raise ParseError(f"protobuf field {number} should be a message", hint=_HINT)
        chunks.append(value)
    return decode_fields(b"".join(chunks))


_LATENCY = ((1, "avg_ms"), (2, "min_ms"), (3, "max_ms"), (4, "stddev_ms"), (5, "median_ms"),
            (6, "p5_ms"), (7, "p95_ms"), (8, "init_ms"), (9, "first_inference_ms"),
            (10, "average_warm_up_ms"))


def decode_benchmark_result(data: bytes) -> dict:
    """Decode a BenchmarkResult into a flat dict; only fields present in the file appear.

    Keys: ``name``, the LatencyMetrics names (all ``*_ms``), ``init_mem_mb`` and
    ``overall_mem_mb`` (from the ``*_footprint_kb`` fields, /1024 as the tool prints
    them), ``peak_mem_mb``, ``model_size_mb``, ``num_runs``, ``num_warmup_runs``,
    ``throughput_mb_per_s``.
    """
    if data is None or len(data) == 0:
        raise ParseError("the benchmark result file is empty", hint=_HINT)
    top = decode_fields(bytes(data))
    out: dict = {}
    name = _last(top, 1, WIRE_LEN)
    if name is not None:
        try:
            out["name"] = name.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("benchmark result name is not UTF-8 (not a BenchmarkResult?)", hint=_HINT) from None
    latency = _submessage(top, 2)
    for number, key in _LATENCY:
        bits = _last(latency, number, WIRE_FIXED32)
        if bits is not None:
            out[key] = _float32(bits)
    memory = _submessage(top, 3)
    for number, key in ((1, "init_mem_mb"), (2, "overall_mem_mb")):
        raw = _last(memory, number, WIRE_VARINT)
        if raw is not None:
            out[key] = _int64(raw) / 1024.0
    bits = _last(memory, 3, WIRE_FIXED32)
    if bits is not None:
        out["peak_mem_mb"] = _float32(bits)
    misc = _submessage(top, 4)
    bits = _last(misc, 1, WIRE_FIXED32)
    if bits is not None:
        out["model_size_mb"] = _float32(bits)
    for number, key in ((2, "num_runs"), (3, "num_warmup_runs")):
        raw = _last(misc, number, WIRE_VARINT)
        if raw is not None:
            out[key] = _int64(raw)
    bits = _last(misc, 4, WIRE_FIXED32)
    if bits is not None:
        out["throughput_mb_per_s"] = _float32(bits)
    if not any(k.endswith("_ms") for k in out):
        raise ParseError("the benchmark result file holds no latency metrics", hint=_HINT)
    return out
