"""Textbook cost formulas for TFLite ops (pure functions, no I/O).

Conventions, per op and including the batch dimension:

* ``macs``: multiply-accumulates of conv / fully-connected / matmul-like ops, 0 otherwise.
  Conv2D: ``N*H_out*W_out*C_out*K_h*K_w*C_in/groups``; depthwise: ``N*H_out*W_out*C_out*K_h*K_w``;
  FC: ``batch*units*in_features``; transpose conv: ``N*H_in*W_in*C_in*K_h*K_w*C_out``.
* ``flops``: ``2*macs`` for those ops (bias and fused activation not counted); for
  elementwise ops one FLOP per output element (a few for transcendental ones, see
  ``_ELEMENTWISE_FLOPS``); pooling ``out_elems*K_h*K_w``; reductions one per input
  element; softmax ``3*elems`` (exp, sum, divide). Pure data-movement ops (reshape, pad,
  concatenation, transpose, ...) have 0 FLOPs: their cost shows in ``bytes_in/bytes_out``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

Shape = Tuple[int, ...]

# FLOPs per output element of elementwise ops (1 unless listed).
_ELEMENTWISE_FLOPS = {
    "LOGISTIC": 4, "TANH": 4, "EXP": 4, "LOG": 4, "SQRT": 2, "RSQRT": 2, "HARD_SWISH": 4,
    "GELU": 8, "ELU": 3, "POW": 4, "SIN": 4, "COS": 4, "SQUARED_DIFFERENCE": 2,
    "LOG_SOFTMAX": 4,
}
_ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "FLOOR_DIV", "FLOOR_MOD", "MAXIMUM", "MINIMUM", "RELU", "RELU6",
    "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "ABS", "NEG", "SQUARE", "FLOOR",
    "CEIL", "ROUND", "SIGN", "QUANTIZE", "DEQUANTIZE", "CAST", "EQUAL", "NOT_EQUAL", "LESS",
    "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT",
    "SELECT", "SELECT_V2", "ADD_N", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION",
    "BATCH_NORM", "ZEROS_LIKE", "ONES_LIKE",
} | set(_ELEMENTWISE_FLOPS)
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY",
               "REDUCE_ALL", "ARG_MAX", "ARG_MIN"}
_POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}


def num_elements(shape: Optional[Sequence[int]]) -> int:
    """Product of the dimensions (dynamic -1 dims count as 1; None -> 0; scalar -> 1)."""
    if shape is None:
        return 0
    n = 1
    for d in shape:
        n *= d if d > 0 else 1
    return n


def op_cost(op_type: str, options: Dict[str, Any], input_shapes: Sequence[Optional[Shape]],
            output_shapes: Sequence[Optional[Shape]]) -> Dict[str, Any]:
    """MACs, FLOPs and conv geometry of one op.

    Returns ``{"macs", "flops", "kernel_h", "kernel_w", "in_channels", "out_channels",
    "groups"}``; geometry entries are None where they do not apply.
    """
    return dict(zip(COST_FIELDS, op_cost_tuple(op_type, options, input_shapes, output_shapes)))


COST_FIELDS = ("macs", "flops", "kernel_h", "kernel_w", "in_channels", "out_channels", "groups")
_NO_COST = (0, 0, None, None, None, None, None)


def op_cost_tuple(op_type: str, options: Dict[str, Any], input_shapes: Sequence[Optional[Shape]],
                  output_shapes: Sequence[Optional[Shape]]) -> tuple:
    """Like :func:`op_cost`, as a tuple in ``COST_FIELDS`` order (cheaper in bulk)."""
    ins = input_shapes
    out0 = output_shapes[0] if output_shapes else None
    try:
        if op_type in _ELEMENTWISE:
            return (0, _ELEMENTWISE_FLOPS.get(op_type, 1) * num_elements(out0), None, None, None, None, None)
        out_elems = num_elements(out0)
        if op_type == "CONV_2D" and len(ins) >= 2 and ins[0] and ins[1] and len(ins[1]) == 4:
            c_out, kh, kw, c_in_g = ins[1]
            c_in = ins[0][-1]
            groups = max(c_in // c_in_g, 1) if c_in_g else 1
            macs = out_elems * kh * kw * c_in_g  # out_elems = N*H_out*W_out*C_out
            return (macs, 2 * macs, kh, kw, c_in, c_out, groups)
        if op_type == "DEPTHWISE_CONV_2D" and len(ins) >= 2 and ins[0] and ins[1]:
            _, kh, kw, c_out = ins[1]
            c_in = ins[0][-1]
            macs = out_elems * kh * kw
            return (macs, 2 * macs, kh, kw, c_in, c_out, c_in)
        if op_type == "CONV_3D" and len(ins) >= 2 and ins[0] and ins[1] and len(ins[1]) == 5:
            kd, kh, kw, c_in_g, c_out = ins[1]
            c_in = ins[0][-1]
            macs = out_elems * kd * kh * kw * c_in_g
            return (macs, 2 * macs, kh, kw, c_in, c_out, max(c_in // c_in_g, 1) if c_in_g else 1)
        if op_type == "TRANSPOSE_CONV" and len(ins) >= 3 and ins[1] and ins[2]:
            c_out, kh, kw, c_in = ins[1]
            macs = num_elements(ins[2]) * kh * kw * c_out
            return (macs, 2 * macs, kh, kw, c_in, c_out, 1)
        if op_type == "FULLY_CONNECTED" and len(ins) >= 2 and ins[0] and ins[1]:
            units, in_features = ins[1][0], ins[1][-1]
            batch = num_elements(ins[0]) // in_features if in_features else 0
            macs = batch * units * in_features
            return (macs, 2 * macs, None, None, in_features, units, None)
        if op_type == "BATCH_MATMUL" and len(ins) >= 2 and ins[0] and ins[1]:
            a = ins[0]
            k = a[-2] if options.get("adj_x") else a[-1]
            macs = out_elems * k
            return (macs, 2 * macs, None, None, k, out0[-1] if out0 else None, None)
        if op_type in _POOLS:
            kh, kw = options.get("filter_height", 1), options.get("filter_width", 1)
            return (0, out_elems * kh * kw, kh, kw, None, None, None)
        if op_type in _REDUCTIONS:
            return (0, num_elements(ins[0]) if ins else 0, None, None, None, None, None)
        if op_type == "SOFTMAX":
            return (0, 3 * out_elems, None, None, None, None, None)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        # Malformed or rank-unexpected shapes: report no cost rather than guess.
        return _NO_COST
    return _NO_COST
