"""Causal attention and the embedding gather beyond the every-op sweep: gir's forward and adjoint against
hand-written jax.numpy (masked attention, an indexed table) differentiated by jax.vjp, and the mask's
promise that no position sees a later one, in the output or in the gradient. Token counts on both sides of the
decomposition's alignment (6 and 16 kept, 11 padded to 16 with the padded keys masked)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gir.autodiff.reverse import backprop
from gir.ir import DType, Graph, TensorType
from gir.ir import opdefs as od
from gir.lower.decompose import ATTENTION_TOKEN_ALIGN, decompose
from gir.lower.jax_backend import as_jax_function
from gir.shapes.emit import Emitter

N_, T_, D_, HEADS = 2, 6, 8, 2
PADDED_T = 11
"""Not a multiple of 8 and over 8: the decomposition pads it to ATTENTION_TOKEN_ALIGN."""
F64 = DType.f64


def masked_attention(q, k, v, causal: bool = True):
    """Multi-head attention written out: scores q.k/sqrt(dh), later keys masked to -inf, softmax, times v."""
    n, t, d = q.shape
    split = lambda a: a.reshape(n, t, HEADS, d // HEADS).transpose(0, 2, 1, 3)  # noqa: E731
    s = jnp.einsum("nhqd,nhkd->nhqk", split(q), split(k)) / math.sqrt(d // HEADS)
    if causal:
        s = jnp.where(jnp.arange(t)[None, :] <= jnp.arange(t)[:, None], s, -jnp.inf)
    w = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("nhqk,nhkd->nhqd", w, split(v)).transpose(0, 2, 1, 3).reshape(n, t, d)


def attention_and_grads(decomposed: bool, t: int = T_, causal: bool = True) -> Graph:
    """y = attention(q, k, v) and the gradients of <y, ct> from gir's adjoints (optionally after lowering's
    decomposition into primitives, where the mask is an iota comparison)."""
    g = Graph("causal")
    q, k, v, ct = (g.add_input(name, TensorType((N_, t, D_), F64), "data") for name in ("q", "k", "v", "ct"))
    node = Emitter(g).node("attention", [q, k, v], od.AttentionAttrs(HEADS, causal=causal))
    back = backprop(g, [node], {node.out: ct}, [q, k, v])
    g.set_output("y", node.out)
    for name, x in zip("qkv", (q, k, v)):
        g.set_output(f"d{name}", back.grads[x])
    return decompose(g) if decomposed else g


def run(graph: Graph, q, k, v, ct) -> dict[str, np.ndarray]:
    with jax.enable_x64(True):
        return {name: np.asarray(x) for name, x in as_jax_function(graph)({"q": q, "k": k, "v": v, "ct": ct}).items()}


def inputs(seed: int = 0, t: int = T_):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((N_, t, D_)) for _ in range(4)]


@pytest.mark.parametrize("t", [T_, PADDED_T, 16])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("decomposed", [False, True], ids=["layer-op", "primitives"])
def test_attention_and_its_adjoint_match_hand_written_masked_attention_under_jax_vjp(decomposed, causal, t):
    q, k, v, ct = inputs(t=t)
    got = run(attention_and_grads(decomposed, t, causal), q, k, v, ct)
    with jax.enable_x64(True):
        y, pullback = jax.vjp(lambda *a: masked_attention(*a, causal=causal), jnp.asarray(q), jnp.asarray(k),
                              jnp.asarray(v))
        want = dict(zip(("dq", "dk", "dv"), pullback(jnp.asarray(ct))))
    np.testing.assert_allclose(got["y"], np.asarray(y), rtol=1e-12, atol=1e-12)
    for name, w in want.items():
        np.testing.assert_allclose(got[name], np.asarray(w), rtol=1e-10, atol=1e-12, err_msg=name)


def test_a_later_position_changes_neither_an_earlier_output_nor_its_gradient():
    graph = attention_and_grads(decomposed=True)
    q, k, v, ct = inputs(1)
    base = run(graph, q, k, v, ct)
    later = [x.copy() for x in (q, k, v)]
    for x in later:
        x[:, 4:] += 3.0   # positions 4 and 5 only
    moved = run(graph, *later, ct)
    np.testing.assert_array_equal(moved["y"][:, :4], base["y"][:, :4])
    assert np.abs(moved["y"][:, 4:] - base["y"][:, 4:]).max() > 1e-3
    # the cotangent of positions 0..3 alone reaches no key or value at a later position
    early = ct.copy()
    early[:, 4:] = 0.0
    grads = run(graph, q, k, v, early)
    for name in ("dk", "dv"):
        assert not grads[name][:, 4:].any(), name
        assert np.abs(grads[name][:, :4]).max() > 1e-3, name


def test_the_lowered_mask_is_one_t_by_t_iota_comparison_not_a_tensor_per_batch():
    graph = attention_and_grads(decomposed=True)
    compares = [n for n in graph.nodes if n.op == "compare" and n.inputs[0].producer.op == "iota"]
    assert compares and all(n.outputs[0].type.shape == (T_, T_) for n in compares)
    assert not [v for v in graph.inputs if v.type.dtype == DType.i1]


@pytest.mark.parametrize("t, tokens", [(T_, T_), (PADDED_T, ATTENTION_TOKEN_ALIGN), (16, 16)])
def test_the_products_run_over_token_counts_padded_only_where_not_a_multiple_of_8(t, tokens):
    """Every product of the forward and the adjoint (scores [N*h, T, T], the rest [N*h, T, dh]: dV = p^T dO is
    written in that layout, not as [N*h, dh, T] transposed) runs over `tokens`; the outputs keep t."""
    graph = attention_and_grads(decomposed=True, t=t, causal=False)
    shapes = {n.outputs[0].type.shape for n in graph.nodes if n.op == "dot_general"}
    nh, dh = N_ * HEADS, D_ // HEADS
    assert shapes == {(nh, tokens, tokens), (nh, tokens, dh)}
    assert all(graph.outputs[name].type.shape == (N_, t, D_) for name in ("y", "dq", "dk", "dv"))


def test_the_gather_adjoint_sums_the_cotangent_rows_of_repeated_ids():
    g = Graph("embed")
    table = g.add_input("table", TensorType((5, 3), F64), "data")
    ids = g.add_input("ids", TensorType((2, 4), DType.i32), "data")
    ct = g.add_input("ct", TensorType((2, 4, 3), F64), "data")
    node = Emitter(g).node("take", [table, ids])
    back = backprop(g, [node], {node.out: ct}, [table])
    assert back.grads[table].producer.op == "scatter_add"
    g.set_output("d", back.grads[table])
    rng = np.random.default_rng(2)
    t, c = rng.standard_normal((5, 3)), rng.standard_normal((2, 4, 3))
    i = np.array([[0, 1, 1, 4], [2, 2, 2, 0]], np.int32)
    with jax.enable_x64(True):
        got = np.asarray(as_jax_function(g)({"table": t, "ids": i, "ct": c})["d"])
        _, pullback = jax.vjp(lambda w: w[jnp.asarray(i)], jnp.asarray(t))
        (want,) = pullback(jnp.asarray(c))
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12, atol=1e-12)
    assert not got[3].any()   # a row no id names gets nothing
