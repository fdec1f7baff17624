"""Constant folding alone: splat arithmetic, compares, converts, shape ops and reductions of splats
fold to the value the device would compute; symbolic constants, NaN results and integer division
are left alone."""
from __future__ import annotations

import numpy as np
import pytest
import sympy

from gir.ir import DType
from gir.ir import opdefs as od
from gir.nn import Builder
from gir.rewrite import run_pass


def _folded(b: Builder):
    out = run_pass(b.graph, "fold")
    return out, {k: v.producer for k, v in out.outputs.items()}


def test_splat_arithmetic_folds_in_the_element_type(preserves):
    b = Builder("t")
    c = lambda v, dt=DType.f32: b.constant(v, (2, 2), dt)
    b.graph.set_output("sum", b.add(c(0.1), c(0.2)))
    b.graph.set_output("rsqrt", b.unary("rsqrt", c(4.0)))
    b.graph.set_output("chain", b.multiply(b.unary("exp", c(0.0)), c(3.0)))
    b.graph.set_output("cmp", b.emit("compare", [c(1.0), c(2.0)], od.CompareAttrs("LT")).out)
    b.graph.set_output("int", b.multiply(c(7, DType.i32), c(-3, DType.i32)))
    b.graph.set_output("conv", b.convert(c(2.75), DType.i32))
    out, prods = _folded(b)
    assert all(p.op == "constant" for p in prods.values()), [p.op for p in prods.values()]
    assert prods["sum"].attrs.value == float(np.float32(0.1) + np.float32(0.2))  # f32 rounding, not f64's
    assert prods["rsqrt"].attrs.value == 0.5 and prods["chain"].attrs.value == 3.0
    assert prods["cmp"].attrs.value is True and prods["int"].attrs.value == -21 and prods["conv"].attrs.value == 2
    preserves(b.graph, out, rtol=0, atol=0)


def test_splats_through_shape_ops_and_reductions(preserves):
    b = Builder("t")
    c = b.constant(1.5, (2, 3))
    b.graph.set_output("bcast", b.broadcast_in_dim(b.constant(2.0, (3,)), (2, 3), (1,)))
    b.graph.set_output("t", b.transpose(c, (1, 0)))
    b.graph.set_output("r", b.reshape(c, (6,)))
    b.graph.set_output("sum", b.reduce(c, "sum", (0, 1)))
    b.graph.set_output("max", b.reduce(c, "max", (1,)))
    out, prods = _folded(b)
    assert [p.op for p in prods.values()] == ["constant"] * 5
    assert prods["sum"].attrs.value == 9.0 and prods["t"].attrs.type.shape == (3, 2)
    preserves(b.graph, out, rtol=0, atol=0)


def test_select_with_a_constant_predicate_picks_a_branch(preserves):
    b = Builder("t")
    x, y = b.input("x", (3,)), b.input("y", (3,))
    p = b.constant(True, (3,), DType.i1)
    b.graph.set_output("o", b.emit("select", [p, x, y]).out)
    out, _ = _folded(b)
    assert out.outputs["o"] is out.inputs[0] and not out.nodes
    preserves(b.graph, out)


@pytest.mark.parametrize("case", ["symbolic", "nan", "int_divide", "not_constant"])
def test_what_is_not_folded(case):
    b = Builder("t")
    if case == "symbolic":
        v = b.multiply(b.constant(sympy.Symbol("N", positive=True, integer=True), (2,)), b.constant(2.0, (2,)))
    elif case == "nan":
        v = b.unary("log", b.constant(-1.0, (2,)))
    elif case == "int_divide":
        v = b.divide(b.constant(-7, (2,), DType.i32), b.constant(2, (2,), DType.i32))
    else:
        v = b.add(b.input("x", (2,)), b.constant(1.0, (2,)))
    b.graph.set_output("o", v)
    out = run_pass(b.graph, "fold")
    assert [n.op for n in out.nodes] == [n.op for n in b.graph.nodes]
