"""CSE alone on tiny graphs: duplicates merge (commutative operands in any order), distinct
attributes or constants (0.0 vs -0.0, 1 vs 1.0 in different types) stay apart; values are kept."""
from __future__ import annotations

from gir.ir import DType
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.cse import node_key


def test_duplicates_merge(preserves):
    b = Builder("t")
    x, y = b.input("x", (2, 3)), b.input("y", (2, 3))
    s1, s2 = b.add(x, y), b.add(y, x)                 # commutative: the same sum
    t1, t2 = b.unary("exp", s1), b.unary("exp", s2)   # equal once their inputs merge
    b.graph.set_output("o", b.multiply(t1, t2))
    ctx = Context(trace=[])
    out = run_pass(b.graph, "cse", ctx)
    assert [n.op for n in out.nodes] == ["add", "exp", "multiply"]
    mul = out.nodes[2]
    assert mul.inputs[0] is mul.inputs[1]
    assert [f.rule for f in ctx.trace] == ["duplicate", "duplicate"]
    preserves(b.graph, out)
    assert len({node_key(n) for n in out.nodes}) == len(out.nodes)


def test_different_attributes_or_operand_order_stay_apart(preserves):
    b = Builder("t")
    x, y = b.input("x", (2, 3)), b.input("y", (2, 3))
    outs = [b.subtract(x, y), b.subtract(y, x), b.transpose(x, (1, 0)), b.reduce(x, "sum", (0,)),
            b.reduce(x, "sum", (1,)), b.reduce(x, "max", (1,)), b.constant(0.0, (2, 3)), b.constant(-0.0, (2, 3)),
            b.constant(1, (2, 3), DType.i32)]
    for i, v in enumerate(outs):
        b.graph.set_output(f"o{i}", v)
    out = run_pass(b.graph, "cse")
    assert len(out.nodes) == len(b.graph.nodes)
    preserves(b.graph, out)


def test_outputs_that_named_a_duplicate_point_at_the_survivor():
    b = Builder("t")
    x = b.input("x", (3,))
    b.graph.set_output("a", b.unary("tanh", x))
    b.graph.set_output("b", b.unary("tanh", x))
    out = run_pass(b.graph, "cse")
    assert out.outputs["a"] is out.outputs["b"] and len(out.nodes) == 1
