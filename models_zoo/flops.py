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
    res: Dict[str, Any] = {"macs": 0, "flops": 0, "kernel_h": None, "kernel_w": None,
                           "in_channels": None, "out_channels": None, "groups": None}
    ins = list(input_shapes)
    out0 = output_shapes[0] if output_shapes else None
    out_elems = num_elements(out0)
    try:
        if op_type == "CONV_2D" and len(ins) >= 2 and ins[0] and ins[1] and len(ins[1]) == 4:
            c_out, kh, kw, c_in_g = ins[1]
            c_in = ins[0][-1]
            groups = max(c_in // c_in_g, 1) if c_in_g else 1
            macs = out_elems * kh * kw * c_in_g  # out_elems = N*H_out*W_out*C_out
            res.update(macs=macs, kernel_h=kh, kernel_w=kw, in_channels=c_in,
                       out_channels=c_out, groups=groups)
        elif op_type == "DEPTHWISE_CONV_2D" and len(ins) >= 2 and ins[0] and ins[1]:
            _, kh, kw, c_out = ins[1]
            c_in = ins[0][-1]
            res.update(macs=out_elems * kh * kw, kernel_h=kh, kernel_w=kw, in_channels=c_in,
                       out_channels=c_out, groups=c_in)
        elif op_type == "CONV_3D" and len(ins) >= 2 and ins[0] and ins[1] and len(ins[1]) == 5:
            kd, kh, kw, c_in_g, c_out = ins[1]
            c_in = ins[0][-1]
            res.update(macs=out_elems * kd * kh * kw * c_in_g, kernel_h=kh, kernel_w=kw,
                       in_channels=c_in, out_channels=c_out,
                       groups=max(c_in // c_in_g, 1) if c_in_g else 1)
        elif op_type == "TRANSPOSE_CONV" and len(ins) >= 3 and ins[1] and ins[2]:
            c_out, kh, kw, c_in = ins[1]
            res.update(macs=num_elements(ins[2]) * kh * kw * c_out, kernel_h=kh, kernel_w=kw,
                       in_channels=c_in, out_channels=c_out, groups=1)
        elif op_type == "FULLY_CONNECTED" and len(ins) >= 2 and ins[0] and ins[1]:
            units, in_features = ins[1][0], ins[1][-1]
            batch = num_elements(ins[0]) // in_features if in_features else 0
            res.update(macs=batch * units * in_features, in_channels=in_features,
                       out_channels=units)
        elif op_type in ("BATCH_MATMUL",) and len(ins) >= 2 and ins[0] and ins[1]:
            a, b = ins[0], ins[1]
            k = a[-2] if options.get("adj_x") else a[-1]
            res.update(macs=out_elems * k, in_channels=k, out_channels=out0[-1] if out0 else None)
        elif op_type in _POOLS:
            kh, kw = options.get("filter_height", 1), options.get("filter_width", 1)
            res.update(flops=out_elems * kh * kw, kernel_h=kh, kernel_w=kw)
        elif op_type in _REDUCTIONS:
            res["flops"] = num_elements(ins[0]) if ins else 0
        elif op_type == "SOFTMAX":
            res["flops"] = 3 * out_elems
        elif op_type in _ELEMENTWISE:
            res["flops"] = _ELEMENTWISE_FLOPS.get(op_type, 1) * out_elems
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        # Malformed or rank-unexpected shapes: report no cost rather than guess.
        return {**res, "macs": 0, "flops": 0}
    if res["macs"]:
        res["flops"] = 2 * res["macs"]
    return res
