"""Patterns: ops, attributes, types, named captures, repeated names, commutative inputs, constants."""
from __future__ import annotations

from gir.ir import DType
from gir.nn import Builder
from gir.rewrite import Const, Op, Var, match


def _graph():
    b = Builder("t")
    x = b.input("x", (2, 3))
    y = b.input("y", (2, 3))
    one = b.constant(1.0, (2, 3))
    return b, x, y, one


def test_op_with_inputs_captures_by_name():
    b, x, y, _ = _graph()
    s = b.add(x, y)
    m = match(Op("add", (Var("a"), Var("b"))), s.producer)
    assert m is not None and m["a"] is x and m["b"] is y and m.node is s.producer


def test_commutative_inputs_match_in_either_order():
    b, x, _, one = _graph()
    p = b.multiply(one, x)
    m = match(Op("multiply", (Var("x"), Const(value=1))), p.producer)
    assert m is not None and m["x"] is x
    d = b.subtract(one, x)   # subtract is not commutative
    assert match(Op("subtract", (Var("x"), Const(value=1))), d.producer) is None


def test_a_name_used_twice_needs_the_same_value():
    b, x, y, _ = _graph()
    pat = Op("multiply", (Var("v"), Var("v")))
    assert match(pat, b.multiply(x, x).producer)["v"] is x
    assert match(pat, b.multiply(x, y).producer) is None


def test_nested_pattern_and_attribute_conditions():
    b, x, _, _ = _graph()
    t = b.transpose(b.transpose(x, (1, 0)), (1, 0))
    pat = Op("transpose", (Op("transpose", (Var("x"),), attrs={"perm": (1, 0)}, name="inner"),))
    m = match(pat, t.producer)
    assert m["x"] is x and m["inner"].producer.op == "transpose"
    assert match(Op("transpose", (Op("transpose", attrs={"perm": (0, 1)}),)), t.producer) is None
    assert match(Op("transpose", attrs=lambda a: a.perm == (1, 0)), t.producer) is not None


def test_types_and_constant_values():
    b, x, _, _ = _graph()
    c = b.convert(x, DType.f64)
    assert match(Op("convert", (Var("x", DType.f32),)), c.producer) is not None
    assert match(Op("convert", (Var("x", DType.f64),)), c.producer) is None
    assert match(Op("convert", dtype=DType.f64), c.producer) is not None
    assert match(Op("convert", (Var(where=lambda v: v.type.rank == 3),)), c.producer) is None
    two = b.add(x, b.constant(2.0, (2, 3)))
    assert match(Op("add", (Var(), Const("c"))), two.producer)["c"].producer.attrs.value == 2.0
    assert match(Op("add", (Var(), Const(value=0))), two.producer) is None
    assert match(Op(("add", "subtract")), two.producer) is not None
