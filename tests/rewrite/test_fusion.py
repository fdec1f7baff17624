"""Fusion alone: two per-channel scales (or shifts) of a tensor become one, computed on the small
operands; constant chains become one constant op; an inner result with another use is kept."""
from __future__ import annotations

import pytest

from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.fusion import RULES

X = (2, 4, 3, 3)


def _per_channel(b, name):
    return b.broadcast_in_dim(b.input(name, (4,)), X, (1,))


@pytest.mark.parametrize("op,kind", [("multiply", "scale"), ("add", "shift")])
def test_per_channel_chain_becomes_one_full_size_op(op, kind, preserves):
    b = Builder("t")
    x = b.input("x", X)
    y = b.emit(op, [b.emit(op, [x, _per_channel(b, "a")]).out, _per_channel(b, "c")]).out
    b.graph.set_output("y", y)
    ctx = Context(trace=[], check=True)
    out = run_pass(b.graph, "fusion", ctx)
    full = [n for n in out.nodes if n.op == op and n.outputs[0].type.shape == X]
    small = [n for n in out.nodes if n.op == op and n.outputs[0].type.shape == (4,)]
    assert len(full) == 1 and len(small) == 1 and [f.rule for f in ctx.trace] == [f"{kind}_chain"]
    preserves(b.graph, out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op,kind", [("multiply", "scale"), ("add", "shift")])
def test_constant_chain_folds_to_one_constant(op, kind, preserves):
    b = Builder("t")
    x = b.input("x", X)
    y = b.emit(op, [b.emit(op, [x, b.constant(0.5, X)]).out, b.constant(3.0, X)]).out
    b.graph.set_output("y", y)
    out = run_pass(run_pass(b.graph, "fusion"), "fold")
    assert [n.op for n in out.nodes] == ["constant", op]
    assert out.nodes[0].attrs.value == (1.5 if op == "multiply" else 3.5)
    preserves(b.graph, out, rtol=1e-6, atol=1e-6)


def test_inner_result_with_another_use_is_not_fused():
    b = Builder("t")
    x = b.input("x", X)
    inner = b.multiply(x, _per_channel(b, "a"))
    b.graph.set_output("y", b.multiply(inner, _per_channel(b, "c")))
    b.graph.set_output("inner", inner)
    assert len(run_pass(b.graph, "fusion").nodes) == len(b.graph.nodes)


def test_different_placements_are_not_fused():
    b = Builder("t")
    x = b.input("x", (4, 4))
    row = b.broadcast_in_dim(b.input("a", (4,)), (4, 4), (0,))
    col = b.broadcast_in_dim(b.input("c", (4,)), (4, 4), (1,))
    b.graph.set_output("y", b.multiply(b.multiply(x, row), col))
    assert len(run_pass(b.graph, "fusion").nodes) == len(b.graph.nodes)


def test_rules_are_named_for_what_they_fuse():
    assert sorted(r.name for r in RULES) == ["constant_scale_chain", "constant_shift_chain", "scale_chain",
                                             "shift_chain"]
