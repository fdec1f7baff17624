"""dot_matmul alone: a dense layer's forward pass, input gradient and weight gradient (dot_generals without batch
dims) become one walled 2-D matmul each where their operands were in a slow order, with the same values; those
already in the fast order, and batched ones (attention), are left alone."""
from __future__ import annotations

import pytest

from gir.autodiff import vjp
from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.conv_forms import ROWS_PER_OUTPUT_FEATURE


def _dense_and_grads(x_shape: tuple[int, ...], fan_out: int):
    """y = x @ w on the last axis, and the vjp for x and w: three dot_generals."""
    b = Builder("dense")
    x = b.input("x", x_shape)
    w = b.input("w", (x_shape[-1], fan_out), role="param")
    y = b.dense(x, w)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    back = vjp(g, {"y": ct}, [x, w])
    g.set_output("dx", back.grads[x])
    g.set_output("dw", back.grads[w])
    return decompose(g)


def _matmul_forms(graph) -> list[tuple[tuple, tuple, tuple, tuple]]:
    """(lhs shape, rhs shape, rhs contracting dims, result shape) of every dot_general between optimization barriers."""
    return [(n.inputs[0].type.shape, n.inputs[1].type.shape, n.attrs.rhs_contract, n.outputs[0].type.shape)
            for n in graph.nodes
            if n.op == "dot_general" and n.inputs[0].producer is not None
            and n.inputs[0].producer.op == "optimization_barrier"]


def test_weight_gradient_contracting_leading_dims_becomes_mk_by_nk(preserves):
    """x [4, 6, 8] -> 32 features: the weight gradient x^T ct contracts 24 rows; as [8, 24] @ [32, 24]^T."""
    g = _dense_and_grads((4, 6, 8), 32)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "dot_matmul", ctx)
    assert ((8, 24), (32, 24), (1,), (8, 32)) in _matmul_forms(out)
    assert all(f.rule == "dot_as_fast_matmul" for f in ctx.trace)
    preserves(g, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows,fan_out,rhs_form", [
    (ROWS_PER_OUTPUT_FEATURE * 4, 4, None),           # 16 rows per output feature: w as [K, N], already so
    (ROWS_PER_OUTPUT_FEATURE * 4 - 1, 4, (4, 8)),     # just below: w as [N, K]
    (12, 64, (64, 8)),                                # ViT's and the MLP's case: few rows per feature
])
def test_forward_stores_the_weight_by_rows_per_output_feature(rows, fan_out, rhs_form, preserves):
    g = _dense_and_grads((rows, 8), fan_out)
    out = run_pass(g, "dot_matmul")
    forward = [f for f in _matmul_forms(out) if f[0] == (rows, 8) and f[3] == (rows, fan_out)]
    assert [f[1] for f in forward] == ([rhs_form] if rhs_form else [])
    preserves(g, out, rtol=1e-5, atol=1e-5)


def test_fast_and_batched_dot_generals_are_left_alone():
    b = Builder("att")
    q = b.input("q", (2, 5, 8))
    g = b.graph
    g.set_output("y", b.attention(q, q, q, heads=2))
    g = decompose(g)
    ctx = Context(trace=[], check=True)
    run_pass(g, "dot_matmul", ctx)
    assert ctx.trace == []
    rows = ROWS_PER_OUTPUT_FEATURE * 8
    out = run_pass(_dense_and_grads((rows, 8), 4), "dot_matmul")   # forward [M, K] @ [K, N] with many rows
    assert not any(f[3] == (rows, 4) for f in _matmul_forms(out))


def test_the_pass_is_idempotent():
    once = run_pass(_dense_and_grads((4, 6, 8), 32), "dot_matmul")
    ctx = Context(trace=[], check=True)
    run_pass(once, "dot_matmul", ctx)
    assert ctx.trace == []
