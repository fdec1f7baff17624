"""Constant folding: ops whose operands are all splat constants become one splat constant.

Values are computed with NumPy in the op's element type, so a folded f32 constant is the number
the device would have computed. Symbolic constant values (1/(N*H*W) before binding) are left alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gir.ir.dtypes import DType
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Const, Match, Op, Var
from gir.shapes.emit import Emitter

UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "negate": np.negative, "exp": np.exp, "log": np.log, "tanh": np.tanh, "sqrt": np.sqrt, "abs": np.abs,
    "logistic": lambda x: 1 / (1 + np.exp(-x)), "rsqrt": lambda x: 1 / np.sqrt(x), "sine": np.sin, "cosine": np.cos,
}
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}
COMPARE = {"EQ": np.equal, "NE": np.not_equal, "LT": np.less, "LE": np.less_equal, "GT": np.greater,
           "GE": np.greater_equal}
INTEGER_SAFE = {"negate", "abs", "add", "subtract", "multiply", "maximum", "minimum"}
"""Integer ops whose NumPy result is StableHLO's (wrapping); integer divide rounds differently."""


def splat(v: Value) -> np.ndarray | None:
    """A splat constant's value as a 0-d array of its element type, or None (not a constant, or symbolic)."""
    n = v.producer
    if n is None or n.op != "constant" or not isinstance(n.attrs.value, (bool, int, float)):
        return None
    return np.asarray(n.attrs.value).astype(v.type.dtype.numpy)


def emit_splat(e: Emitter, value: np.ndarray, like: Value) -> Value | None:
    """A constant of `like`'s type holding `value`; None if the value is NaN (not printable)."""
    x = value.astype(like.type.dtype.numpy)
    py = bool(x) if like.type.dtype == DType.i1 else int(x) if like.type.dtype == DType.i32 else float(x)
    if isinstance(py, float) and math.isnan(py):
        return None
    return e.const(py, like)


def _compute(e: Emitter, m: Match, fn: Callable[..., np.ndarray], names: tuple[str, ...]) -> Value | None:
    out = m.node.outputs[0]
    args = [splat(m[n]) for n in names]
    if any(a is None for a in args):
        return None
    if not out.type.dtype.is_float and m.node.op not in INTEGER_SAFE | {"compare", "convert", "clamp", "select"}:
        return None
    with np.errstate(all="ignore"):
        return emit_splat(e, np.asarray(fn(*args)), out)


def _unary(e: Emitter, m: Match) -> Value | None:
    return _compute(e, m, UNARY[m.node.op], ("a",))


def _binary(e: Emitter, m: Match) -> Value | None:
    return _compute(e, m, BINARY[m.node.op], ("a", "b"))


def _compare(e: Emitter, m: Match) -> Value | None:
    return _compute(e, m, COMPARE[m.node.attrs.direction], ("a", "b"))


def _clamp(e: Emitter, m: Match) -> Value | None:
    return _compute(e, m, lambda lo, x, hi: np.minimum(np.maximum(x, lo), hi), ("lo", "x", "hi"))


def _convert(e: Emitter, m: Match) -> Value | None:
    a = splat(m["a"])
    if a is None:
        return None
    if m.node.outputs[0].type.dtype == DType.i1:
        return e.const(bool(a != 0), m.node.outputs[0])
    with np.errstate(all="ignore"):
        return emit_splat(e, a.astype(m.node.outputs[0].type.dtype.numpy), m.node.outputs[0])


def _reshaped(e: Emitter, m: Match) -> Value | None:
    """A splat through a shape-only op is the same splat at the result's shape."""
    a = splat(m["a"])
    return None if a is None else emit_splat(e, a, m.node.outputs[0])


def _reduce(e: Emitter, m: Match) -> Value | None:
    a, out = splat(m["a"]), m.node.outputs[0]
    if a is None:
        return None
    if m.node.attrs.kind != "sum":
        return emit_splat(e, a, out)
    count = math.prod(m["a"].type.shape[d] for d in m.node.attrs.dims)
    if not isinstance(count, int) or not out.type.dtype.is_float:
        return None
    with np.errstate(all="ignore"):
        return emit_splat(e, a * np.asarray(count).astype(a.dtype), out)


def _pad(e: Emitter, m: Match) -> Value | None:
    a, b = splat(m["a"]), splat(m["b"])
    return None if a is None or b is None or a != b else emit_splat(e, a, m.node.outputs[0])


def _select(e: Emitter, m: Match) -> Value:
    """A constant predicate picks one branch (the predicate is a splat: every element agrees)."""
    return m["t"] if bool(splat(m["p"])) else m["f"]


RULES = (
    Rule("unary", Op(tuple(UNARY), (Const("a"),)), _unary, "f(c) -> c'"),
    Rule("binary", Op(tuple(BINARY), (Const("a"), Const("b"))), _binary, "c1 op c2 -> c3"),
    Rule("compare", Op("compare", (Const("a"), Const("b"))), _compare, "compare(c1, c2) -> true/false"),
    Rule("clamp", Op("clamp", (Const("lo"), Const("x"), Const("hi"))), _clamp, "clamp of constants"),
    Rule("convert", Op("convert", (Const("a"),)), _convert, "convert(c) -> c in the new type"),
    Rule("shape_of_splat", Op(("broadcast_in_dim", "reshape", "transpose", "reverse", "slice"), (Const("a"),)),
         _reshaped, "a splat through broadcast/reshape/transpose/reverse/slice stays a splat"),
    Rule("reduce_splat", Op("reduce", (Const("a"),)), _reduce, "sum of a splat is value * count; max/min is value"),
    Rule("pad_splat", Op("pad", (Const("a"), Const("b"))), _pad, "padding a splat with its own value"),
    Rule("select_const", Op("select", (Const("p"), Var("t"), Var("f"))), _select, "select(true, a, b) -> a"),
)

FOLD = register_pass(Pass("fold", "evaluate ops on splat constants at compile time", "primitive", RULES))
