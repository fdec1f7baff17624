"""weight_grad_matmul alone: a dense layer's weight gradient with operands of LARGE_OPERANDS elements or more becomes
one [M, K] x [N, K] matmul with the same values; smaller ones, and the forward and input gradient, are left alone.
large_rhs_matmul alone: a forward x @ w[K, N] with w of LARGE_OPERANDS elements or more contracts w^T[N, K] instead,
the transpose behind a barrier; smaller weights, and the gradients, are left alone.
long_contraction_matmul alone: an [M, K] x [N, K] matmul with K of twice CONTRACTION_CHUNK or more becomes the sum of
its chunks' products, the operand of more rows first; a shorter K is left alone.
nn_matmul alone: an [M, K] x [N, K] matmul of NN_MIN_FLOPS or more becomes [M, K] x [K, N], the operand of fewer rows
transposed behind a barrier; a smaller one is left alone. default_avx2, the pipeline with it, trains as JAX does."""
from __future__ import annotations

import math

import pytest
from lockstep import train_in_lockstep

from gir.ir import opdefs as od
from gir.autodiff import vjp
from gir.lower.decompose import decompose
from gir.nn import Builder, N, Net, conv2d, dense, global_avg_pool
from gir.rewrite import Context, run_pass
from gir import host
from gir.rewrite.dot_forms import CONTRACTION_CHUNK, LARGE_OPERANDS, NN_MIN_FLOPS
from gir.train import TrainConfig
from gir.train.step import lower_train_step


def _dense_train_graph(x_shape: tuple[int, ...], out_features: int, weight_grad: bool = True):
    """A dense layer's output, input gradient and (unless told not to) weight gradient, at the primitive level."""
    b = Builder("d")
    x = b.input("x", x_shape, role="param")
    w = b.input("w", (x_shape[-1], out_features), role="param")
    y = b.dense(x, w)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    grads = vjp(g, {"y": ct}, [x, w] if weight_grad else [x]).grads
    g.set_output("dx", grads[x])
    if weight_grad:
        g.set_output("dw", grads[w])
    return decompose(g)


def _operand_elements(x_shape: tuple[int, ...], out_features: int) -> int:
    return math.prod(x_shape) + math.prod(x_shape[:-1]) * out_features


@pytest.mark.parametrize("x_shape,out_features", [((4, 512, 512), 512), ((2048, 512), 512)])
def test_large_weight_gradients_become_one_nt_matmul(x_shape, out_features, preserves):
    """Tokens [N, T, D] (two contracted dims, as ViT's) and rows [N, D] (one, as an MLP's) at exactly the threshold."""
    assert _operand_elements(x_shape, out_features) == LARGE_OPERANDS
    g = _dense_train_graph(x_shape, out_features)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "weight_grad_matmul", ctx)
    assert [f.rule for f in ctx.trace] == ["weight_grad_as_nt_matmul"]
    dots = [n for n in out.nodes if n.op == "dot_general"]
    wgrad = next(n for n in dots if n.outputs[0].type.shape == (x_shape[-1], out_features))
    assert [tuple(v.type.shape) for v in wgrad.inputs] == [(x_shape[-1], math.prod(x_shape[:-1])),
                                                            (out_features, math.prod(x_shape[:-1]))]
    assert (wgrad.attrs.lhs_contract, wgrad.attrs.rhs_contract) == ((1,), (1,))
    assert all(v.producer.op == "optimization_barrier" for v in wgrad.inputs)
    preserves(g, out, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("pass_name,x_shape,out_features", [("weight_grad_matmul", (4, 512, 512), 511),
                                                          ("large_rhs_matmul", (6, 1024), 2047)])
def test_below_the_threshold_is_left_alone(pass_name, x_shape, out_features):
    """One output feature fewer than the tests that rewrite: a weight gradient's operands, or a forward's 1024 x 2047
    weight, just under LARGE_OPERANDS."""
    elements = _operand_elements(x_shape, out_features) if pass_name == "weight_grad_matmul" else 1024 * 2047
    assert LARGE_OPERANDS - 2048 <= elements < LARGE_OPERANDS
    g = _dense_train_graph(x_shape, out_features)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, pass_name, ctx)
    assert ctx.trace == [] and len(out.nodes) == len(g.nodes)


def test_forward_and_input_gradient_are_not_weight_gradients():
    """Large operands, but only the weight gradient contracts the leading dims of both."""
    g = run_pass(_dense_train_graph((4, 512, 512), 512, weight_grad=False), "dce")
    assert len([n for n in g.nodes if n.op == "dot_general"]) == 2
    ctx = Context(trace=[], check=True)
    run_pass(g, "weight_grad_matmul", ctx)
    assert ctx.trace == []


def test_a_step_with_a_rewritten_weight_gradient_trains_on_iree_as_on_jax():
    """An MLP whose first weight gradient is over the threshold (1536 rows of 1024 inputs and 512 outputs) and whose
    second is not: the default pipeline's step on IREE in lockstep with the JAX backend, which leaves both alone."""
    net = Net("wide_mlp", [dense(1024, 512, act="relu"), dense(512, 10)], input_shape=(N, 1024), num_classes=10)
    config = TrainConfig(batch_size=1536, optimizer="adam", learning_rate=1e-3)
    step = lower_train_step(net, config, batch=1536, passes="default")
    nt = [n for n in step.primitive.nodes if n.op == "dot_general" and n.attrs.lhs_contract == (1,)
          and [tuple(v.type.shape) for v in n.inputs] == [(1024, 1536), (512, 1536)]]
    assert len(nt) == 1
    train_in_lockstep(net, config, 1536, None, 2, "wide_mlp")


@pytest.mark.parametrize("x_shape", [(6, 1024), (2, 3, 1024)], ids=["rows", "tokens"])
def test_a_large_forward_weight_is_contracted_transposed(x_shape, preserves):
    """w of 1024 x 2048, exactly LARGE_OPERANDS elements: the forward takes barrier(w^T) on its last dim; the input
    and weight gradients (which contract w's columns and the leading dims) are not this form."""
    assert 1024 * 2048 == LARGE_OPERANDS
    g = _dense_train_graph(x_shape, 2048)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "large_rhs_matmul", ctx)
    assert [f.rule for f in ctx.trace] == ["large_rhs_as_nt_matmul"]
    forward = next(n for n in out.nodes if n.op == "dot_general" and n.outputs[0].type.shape == (*x_shape[:-1], 2048))
    assert tuple(forward.inputs[1].type.shape) == (2048, 1024) and forward.attrs.rhs_contract == (1,)
    assert forward.inputs[1].producer.op == "optimization_barrier"
    assert forward.inputs[1].producer.inputs[0].producer.op == "transpose"
    preserves(g, out, rtol=1e-4, atol=1e-3)


def test_a_step_with_a_transposed_forward_weight_trains_on_iree_as_on_jax():
    """A dense layer of 1024 -> 2048 (over the threshold: its forward is rewritten) and a 2048 -> 10 head (under it):
    the default pipeline's step on IREE in lockstep with the JAX backend, which leaves both alone."""
    net = Net("wide_layer", [dense(1024, 2048, act="relu"), dense(2048, 10)], input_shape=(N, 1024), num_classes=10)
    config = TrainConfig(batch_size=16, optimizer="adam", learning_rate=1e-3)
    step = lower_train_step(net, config, batch=16, passes="default")
    transposed = [n for n in step.primitive.nodes if n.op == "dot_general" and n.attrs.rhs_contract == (1,)
                  and [tuple(v.type.shape) for v in n.inputs] == [(16, 1024), (2048, 1024)]]
    assert len(transposed) == 1
    assert not [n for n in step.primitive.nodes if n.op == "dot_general" and n.attrs.rhs_contract == (0,)
                and tuple(n.inputs[1].type.shape) == (1024, 2048)]
    train_in_lockstep(net, config, 16, None, 2, "wide_layer")


def _nt_matmul_graph(m: int, n: int, k: int):
    """y = a[m, k] x b[n, k], contracting the last dims, as the convolution forms write a weight gradient."""
    b = Builder("nt")
    lhs, rhs = b.input("a", (m, k)), b.input("b", (n, k))
    y = b.emit("dot_general", (lhs, rhs), od.DotGeneralAttrs((), (), (1,), (1,))).out
    b.graph.set_output("y", y)
    return b.graph


@pytest.mark.parametrize("m,n,k,chunks,swapped", [
    (24, 40, 2 * CONTRACTION_CHUNK, [CONTRACTION_CHUNK] * 2, True),
    (40, 24, 2 * CONTRACTION_CHUNK + 5, [CONTRACTION_CHUNK] * 2 + [5], False),
    (32, 32, 3 * CONTRACTION_CHUNK - 1, [CONTRACTION_CHUNK] * 2 + [CONTRACTION_CHUNK - 1], False),
])
def test_a_long_contraction_becomes_a_sum_of_chunk_products(m, n, k, chunks, swapped, preserves):
    """At the threshold and past it: chunks of CONTRACTION_CHUNK from the start (the last takes the rest); the operand
    of more rows first, its [n, m] product transposed back behind a barrier; the same values."""
    g = _nt_matmul_graph(m, n, k)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "long_contraction_matmul", ctx)
    assert [f.rule for f in ctx.trace] == ["long_contraction_in_chunks"]
    dots = [d for d in out.nodes if d.op == "dot_general"]
    first_rows, second_rows = (n, m) if swapped else (m, n)
    assert [[tuple(v.type.shape) for v in d.inputs] for d in dots] == [[(first_rows, c), (second_rows, c)]
                                                                       for c in chunks]
    assert len([d for d in out.nodes if d.op == "add"]) == len(chunks) - 1
    y = out.outputs["y"].producer
    assert (y.op == "transpose" and y.inputs[0].producer.op == "optimization_barrier") == swapped
    preserves(g, out, rtol=1e-4, atol=1e-3)


def test_a_shorter_contraction_is_left_alone():
    """K one short of twice CONTRACTION_CHUNK, with the rows that would swap."""
    g = _nt_matmul_graph(24, 40, 2 * CONTRACTION_CHUNK - 1)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "long_contraction_matmul", ctx)
    assert ctx.trace == [] and len(out.nodes) == len(g.nodes)


def test_a_step_with_a_long_weight_gradient_trains_on_iree_as_on_jax():
    """A 3x3 convolution at batch 8 and 32x32: its weight gradient contracts 8,192 pixels (split in two, the 27 rows
    of gathered windows before the 16 of the output gradient); the default pipeline's step on IREE in lockstep with
    the JAX backend, which leaves it a convolution."""
    net = Net("conv_head", [conv2d(3, 16, k=3, act="relu"), global_avg_pool(), dense(16, 10)],
              input_shape=(N, 3, 32, 32), num_classes=10)
    config = TrainConfig(batch_size=8, optimizer="sgd", learning_rate=0.05, image_size=32)
    step = lower_train_step(net, config, batch=8, image=32, passes="default")
    chunks = [n for n in step.primitive.nodes if n.op == "dot_general"
              and [tuple(v.type.shape) for v in n.inputs] == [(27, CONTRACTION_CHUNK), (16, CONTRACTION_CHUNK)]]
    assert len(chunks) == 2 * 8 * 32 * 32 // (2 * CONTRACTION_CHUNK)
    train_in_lockstep(net, config, 8, 32, 2, "conv_head")


@pytest.mark.parametrize("m,n,swapped", [(64, 32, False), (32, 64, True), (64, 64, False)])
def test_a_large_nt_product_becomes_nn(m, n, swapped, preserves):
    """At exactly NN_MIN_FLOPS: the operand of fewer rows transposed to [K, rows] behind a barrier; where that is the
    left one, the product [n, m] transposed back; the same values."""
    k = NN_MIN_FLOPS // (2 * m * n)
    assert 2 * m * n * k == NN_MIN_FLOPS
    g = _nt_matmul_graph(m, n, k)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "nn_matmul", ctx)
    assert [f.rule for f in ctx.trace] == ["nt_as_nn_matmul"]
    (dot,) = [d for d in out.nodes if d.op == "dot_general"]
    assert [tuple(v.type.shape) for v in dot.inputs] == ([(n, k), (k, m)] if swapped else [(m, k), (k, n)])
    assert (dot.attrs.lhs_contract, dot.attrs.rhs_contract) == ((1,), (0,))
    barrier = dot.inputs[1].producer
    assert barrier.op == "optimization_barrier" and barrier.inputs[0].producer.op == "transpose"
    y = out.outputs["y"].producer
    assert (y.op == "transpose") == swapped
    preserves(g, out, rtol=1e-4, atol=1e-3)


def test_a_smaller_nt_product_is_left_alone():
    """One row short of NN_MIN_FLOPS."""
    g = _nt_matmul_graph(63, 32, NN_MIN_FLOPS // (2 * 64 * 32))
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "nn_matmul", ctx)
    assert ctx.trace == [] and len(out.nodes) == len(g.nodes)


def test_default_avx2_trains_on_iree_as_on_jax(monkeypatch):
    """Two 3x3 convolutions at batch 8 and 32x32: the second's weight gradient contracts 8,192 pixels in two chunks of
    576 x 64 x 4,096 (302 MFLOP each), which the AVX2 pipeline (an AVX2 host's `default`) turns into [M, K] x [K, N];
    its step on IREE trains in lockstep with the JAX backend."""
    monkeypatch.setattr(host, "host_is_avx2", lambda: True)
    net = Net("conv_wide", [conv2d(3, 64, k=3, act="relu"), conv2d(64, 64, k=3, act="relu"), global_avg_pool(),
                            dense(64, 10)], input_shape=(N, 3, 32, 32), num_classes=10)
    config = TrainConfig(batch_size=8, optimizer="sgd", learning_rate=0.05, image_size=32)
    trace = []
    lower_train_step(net, config, batch=8, image=32, passes="default_avx2", trace=trace)
    assert [f.rule for f in trace].count("nt_as_nn_matmul") == 2
    train_in_lockstep(net, config, 8, 32, 2, "conv_wide")
