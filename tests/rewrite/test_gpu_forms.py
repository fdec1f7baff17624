"""gpu_forms alone: a convolution's input gradient loses its kernel reverse to slices, a sum of negations becomes a
negated sum, both with the same values; a reverse longer than MAX_SLICED_REVERSE stays."""
from __future__ import annotations

import pytest

from gir.autodiff import vjp
from gir.ir import opdefs as od
from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.gpu_forms import MAX_SLICED_REVERSE


@pytest.mark.parametrize("k", [3, 5])
def test_conv_input_gradient_reverses_its_kernel_by_slices(k, preserves):
    b = Builder("conv")
    x = b.input("x", (2, 4, 9, 9))
    w = b.input("w", (6, 4, k, k), role="param")
    y = b.conv2d(x, w)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    back = vjp(g, {"y": ct}, [x])
    del g.outputs["y"]
    g.set_output("dx", back.grads[x])
    g = decompose(g)
    assert [n for n in g.nodes if n.op == "reverse"]
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "gpu_forms", ctx)
    assert [f.rule for f in ctx.trace] == ["reverse_as_slices"]
    assert not [n for n in out.nodes if n.op == "reverse"]
    assert sum(n.op == "slice" for n in out.nodes) == 2 * k and sum(n.op == "concatenate" for n in out.nodes) == 2
    preserves(g, out, rtol=0, atol=0)


@pytest.mark.parametrize("n, fires", [(MAX_SLICED_REVERSE, True), (MAX_SLICED_REVERSE + 1, False)])
def test_only_short_reverses_become_slices(n, fires):
    b = Builder("rev")
    x = b.input("x", (2, n))
    b.graph.set_output("y", b.emit("reverse", [x], od.ReverseAttrs((1,))).out)
    out = run_pass(b.graph, "gpu_forms")
    assert (not [m for m in out.nodes if m.op == "reverse"]) == fires


def test_sum_of_negations_is_a_negated_sum(preserves):
    b = Builder("neg")
    x = b.input("x", (2, 768))
    b.graph.set_output("s", b.reduce(b.unary("negate", x), "sum", (1,)))
    ctx = Context(trace=[], check=True)
    out = run_pass(b.graph, "gpu_forms", ctx)
    assert [f.rule for f in ctx.trace] == ["sum_of_negate"]
    assert out.outputs["s"].producer.op == "negate" and out.outputs["s"].producer.inputs[0].producer.op == "reduce"
    preserves(b.graph, out, rtol=0, atol=0)
