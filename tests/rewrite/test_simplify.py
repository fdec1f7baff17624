"""Algebraic simplification alone: each rule on a tiny graph (what is left, and the same values),
plus the cases that must not simplify (lossy convert chains, partial slices, different reverses)."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from gir.ir import DType
from gir.ir import opdefs as od
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.simplify import RULES

X = (2, 3, 4)


def _neg(b, v):
    return b.unary("negate", v)


CASES: dict[str, tuple[Callable, list[str]]] = {
    # rule: (build(b, x, y) -> output, ops left after simplify)
    "transpose_of_transpose": (lambda b, x, y: b.transpose(b.transpose(x, (1, 2, 0)), (2, 0, 1)), []),
    "identity_transpose": (lambda b, x, y: b.emit("transpose", [x], od.TransposeAttrs((0, 1, 2))).out, []),
    "reshape_of_reshape": (lambda b, x, y: b.reshape(b.reshape(x, (6, 4)), (24,)), ["reshape"]),
    "identity_reshape": (lambda b, x, y: b.emit("reshape", [x], od.ReshapeAttrs(X)).out, []),
    "broadcast_of_broadcast": (lambda b, x, y: b.broadcast_in_dim(b.broadcast_in_dim(
        b.reduce(x, "sum", (0, 2)), (3, 4), (0,)), (5, 3, 4), (1, 2)), ["reduce", "broadcast_in_dim"]),
    "identity_broadcast": (lambda b, x, y: b.emit("broadcast_in_dim", [x], od.BroadcastAttrs(X, (0, 1, 2))).out, []),
    "mul_one": (lambda b, x, y: b.multiply(b.constant(1.0, X), x), []),
    "div_one": (lambda b, x, y: b.divide(x, b.constant(1.0, X)), []),
    "add_zero": (lambda b, x, y: b.add(x, b.constant(0.0, X)), []),
    "sub_zero": (lambda b, x, y: b.subtract(x, b.constant(0.0, X)), []),
    "neg_neg": (lambda b, x, y: _neg(b, _neg(b, x)), []),
    "sub_neg": (lambda b, x, y: b.subtract(x, _neg(b, y)), ["add"]),
    "add_neg": (lambda b, x, y: b.add(_neg(b, y), x), ["subtract"]),
    "identity_convert": (lambda b, x, y: b.emit("convert", [x], od.ConvertAttrs(DType.f32)).out, []),
    "convert_of_convert": (lambda b, x, y: b.convert(b.convert(b.convert(x, DType.bf16), DType.f32), DType.bf16),
                           ["convert"]),
    "full_slice": (lambda b, x, y: b.slice(x, (0, 0, 0), X), []),
    "no_pad": (lambda b, x, y: b.emit("pad", [x, b.constant(0.0)], od.PadAttrs((0, 0, 0), (0, 0, 0), (0, 0, 0))).out,
               []),
    "reverse_of_reverse": (lambda b, x, y: b.emit("reverse", [b.emit("reverse", [x], od.ReverseAttrs((0, 2))).out],
                                                  od.ReverseAttrs((2, 0))).out, []),
    "select_same": (lambda b, x, y: b.emit("select", [b.emit("compare", [x, y], od.CompareAttrs("LT")).out, x, x]).out,
                    []),
}


def test_every_rule_has_a_case():
    assert sorted(CASES) == sorted(r.name for r in RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_alone(rule, preserves):
    build, left = CASES[rule]
    b = Builder("t")
    x, y = b.input("x", X), b.input("y", X)
    b.graph.set_output("o", build(b, x, y))
    ctx = Context(trace=[], check=True)
    out = run_pass(b.graph, "simplify", ctx)
    assert rule in {f.rule for f in ctx.trace}
    assert [n.op for n in out.nodes] == left
    preserves(b.graph, out, rtol=0, atol=0)


@pytest.mark.parametrize("build", [
    lambda b, x: b.convert(b.convert(x, DType.bf16), DType.f32),           # f32 -> bf16 rounds: a real cast
    lambda b, x: b.slice(x, (0, 0, 0), (2, 3, 2)),                         # not everything
    lambda b, x: b.emit("reverse", [b.emit("reverse", [x], od.ReverseAttrs((0,))).out], od.ReverseAttrs((1,))).out,
    lambda b, x: b.multiply(x, b.constant(1.0000001, X)),
    lambda b, x: b.transpose(b.transpose(x, (1, 0, 2)), (0, 2, 1)),        # composes, does not vanish
], ids=["lossy_convert_chain", "partial_slice", "different_reverses", "mul_not_one", "transposes_compose"])
def test_what_must_stay(build, preserves):
    b = Builder("t")
    x = b.input("x", X)
    b.graph.set_output("o", build(b, x))
    out = run_pass(b.graph, "simplify")
    assert out.nodes, "simplified away something that computes"
    preserves(b.graph, out, rtol=0, atol=0)
