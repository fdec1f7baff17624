"""Algebraic simplification: identities that remove work without changing any result bit
(except the sign of a zero in x + 0)."""
from __future__ import annotations

from gir.ir.dtypes import DType
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Const, Match, Op, Var
from gir.shapes.emit import Emitter

EXACT_CONVERSIONS = {
    (DType.bf16, DType.f32), (DType.bf16, DType.f64), (DType.f32, DType.f64), (DType.i32, DType.f64),
    (DType.i1, DType.i32), (DType.i1, DType.f32), (DType.i1, DType.f64), (DType.i1, DType.bf16),
}
"""(from, to) pairs where every value of `from` is exactly representable in `to`."""


def _x(e: Emitter, m: Match) -> Value:
    return m["x"]


def _transposes(e: Emitter, m: Match) -> Value:
    inner, outer = m["inner"].producer.attrs.perm, m.node.attrs.perm
    return e.transpose(m["x"], tuple(inner[j] for j in outer))


def _identity_transpose(e: Emitter, m: Match) -> Value | None:
    return m["x"] if m.node.attrs.perm == tuple(range(len(m.node.attrs.perm))) else None


def _reshapes(e: Emitter, m: Match) -> Value:
    return e.reshape(m["x"], m.node.attrs.shape)


def _same_shape(e: Emitter, m: Match) -> Value | None:
    return m["x"] if m["x"].type == m.node.outputs[0].type else None


def _broadcasts(e: Emitter, m: Match) -> Value:
    inner, outer = m["inner"].producer.attrs, m.node.attrs
    return e.bcast(m["x"], outer.shape, tuple(outer.dims[d] for d in inner.dims))


def _identity_broadcast(e: Emitter, m: Match) -> Value | None:
    a = m.node.attrs
    return m["x"] if m["x"].type == m.node.outputs[0].type and a.dims == tuple(range(len(a.dims))) else None


def _converts(e: Emitter, m: Match) -> Value | None:
    src, mid = m["x"].type.dtype, m["inner"].type.dtype
    if (src, mid) not in EXACT_CONVERSIONS:
        return None
    return e.convert(m["x"], m.node.attrs.dtype)


def _full_slice(e: Emitter, m: Match) -> Value | None:
    a = m.node.attrs
    full = all(s == 0 for s in a.start) and tuple(a.limit) == tuple(m["x"].type.shape) and all(
        s == 1 for s in a.strides)
    return m["x"] if full else None


def _no_pad(e: Emitter, m: Match) -> Value | None:
    a = m.node.attrs
    return m["x"] if all(p == 0 for p in (*a.low, *a.high, *a.interior)) else None


def _reverses(e: Emitter, m: Match) -> Value | None:
    return m["x"] if sorted(m["inner"].producer.attrs.dims) == sorted(m.node.attrs.dims) else None


def _sub_of_neg(e: Emitter, m: Match) -> Value:
    return e.add(m["x"], m["y"])


def _add_of_neg(e: Emitter, m: Match) -> Value:
    return e.sub(m["x"], m["y"])


RULES = (
    Rule("transpose_of_transpose", Op("transpose", (Op("transpose", (Var("x"),), name="inner"),)), _transposes,
         "transpose(transpose(x, p), q) -> transpose(x, p∘q), or x"),
    Rule("identity_transpose", Op("transpose", (Var("x"),)), _identity_transpose, "transpose(x, id) -> x"),
    Rule("reshape_of_reshape", Op("reshape", (Op("reshape", (Var("x"),)),)), _reshapes,
         "reshape(reshape(x)) -> reshape(x), or x"),
    Rule("identity_reshape", Op("reshape", (Var("x"),)), _same_shape, "reshape to x's own shape -> x"),
    Rule("broadcast_of_broadcast", Op("broadcast_in_dim", (Op("broadcast_in_dim", (Var("x"),), name="inner"),)),
         _broadcasts, "broadcast(broadcast(x)) -> one broadcast"),
    Rule("identity_broadcast", Op("broadcast_in_dim", (Var("x"),)), _identity_broadcast, "broadcast to x's shape -> x"),
    Rule("mul_one", Op("multiply", (Var("x"), Const(value=1))), _x, "x * 1 -> x"),
    Rule("div_one", Op("divide", (Var("x"), Const(value=1))), _x, "x / 1 -> x"),
    Rule("add_zero", Op("add", (Var("x"), Const(value=0))), _x, "x + 0 -> x"),
    Rule("sub_zero", Op("subtract", (Var("x"), Const(value=0))), _x, "x - 0 -> x"),
    Rule("neg_neg", Op("negate", (Op("negate", (Var("x"),)),)), _x, "-(-x) -> x"),
    Rule("sub_neg", Op("subtract", (Var("x"), Op("negate", (Var("y"),)))), _sub_of_neg, "x - (-y) -> x + y"),
    Rule("add_neg", Op("add", (Var("x"), Op("negate", (Var("y"),)))), _add_of_neg, "x + (-y) -> x - y"),
    Rule("identity_convert", Op("convert", (Var("x"),)), _same_shape, "convert to x's own type -> x"),
    Rule("convert_of_convert", Op("convert", (Op("convert", (Var("x"),), name="inner"),)), _converts,
         "convert(convert(x, a), b) -> convert(x, b) when x -> a is exact"),
    Rule("full_slice", Op("slice", (Var("x"),)), _full_slice, "slice of everything -> x"),
    Rule("no_pad", Op("pad", (Var("x"), Var())), _no_pad, "pad by nothing -> x"),
    Rule("reverse_of_reverse", Op("reverse", (Op("reverse", (Var("x"),), name="inner"),)), _reverses,
         "reverse(reverse(x, d), d) -> x"),
    Rule("select_same", Op("select", (Var(), Var("x"), Var("x"))), _x, "select(p, x, x) -> x"),
)

SIMPLIFY = register_pass(Pass("simplify", "algebraic identities: transpose/reshape/broadcast/convert chains, "
                                          "x*1, x+0, x-0, x/1, -(-x), no-op slices and pads", "any", RULES))
