"""Every adjoint against jax.vjp of the op's JAX rule, a float64 central difference (eps 1e-5) and,
for linear ops, the dot-product test; plus the documented conventions at kinks and ties."""
from __future__ import annotations

import numpy as np
import pytest

from gir.autodiff import ADJOINTS, NOT_DIFFERENTIABLE
from gir.autodiff.layer_adjoints import RECOMPUTED
from gir.autodiff.numeric import check_adjoint, linear_groups
from gir.autodiff.reverse import backprop
from gir.ir import OPS, DType, Graph, Loc, TensorType
from gir.ir import opdefs as od
from gir.lower.decompose import decompose
from gir.rewrite.driver import run_pipeline
from gir.shapes.emit import Emitter

F, I32 = DType.f32, DType.i32


def T(*shape, dtype=F):
    return TensorType(shape, dtype)


X4 = T(2, 3, 7, 6)
CASES = [  # (id, op, attrs, input types)
    *[(op, op, None, [T(3, 4)]) for op in od.ELEMENTWISE_UNARY],
    *[(op, op, None, [T(3, 4), T(3, 4)]) for op in od.ELEMENTWISE_BINARY],
    ("select", "select", None, [T(3, 4, dtype=DType.i1), T(3, 4), T(3, 4)]),
    ("clamp-scalar-bounds", "clamp", None, [T(), T(5, 4), T()]),
    ("clamp-full-bounds", "clamp", None, [T(5, 4), T(5, 4), T(5, 4)]),
    ("convert", "convert", od.ConvertAttrs(DType.f64), [T(3, 4)]),
    ("broadcast", "broadcast_in_dim", od.BroadcastAttrs((2, 3, 4), (1,)), [T(3)]),
    ("broadcast-stretch", "broadcast_in_dim", od.BroadcastAttrs((2, 3, 4), (0, 2)), [T(1, 4)]),
    ("reshape", "reshape", od.ReshapeAttrs((4, 6)), [T(2, 3, 4)]),
    ("transpose", "transpose", od.TransposeAttrs((2, 0, 1)), [T(2, 3, 4)]),
    ("reverse", "reverse", od.ReverseAttrs((0, 2)), [T(2, 3, 4)]),
    ("optimization_barrier", "optimization_barrier", None, [T(2, 3)]),
    ("slice", "slice", od.SliceAttrs((0, 1), (5, 4), (2, 2)), [T(6, 5)]),
    ("pad", "pad", od.PadAttrs((1, 0), (2, 1), (1, 0)), [T(3, 4), T()]),
    ("concatenate", "concatenate", od.ConcatAttrs(1), [T(2, 3), T(2, 1), T(2, 2)]),
    ("dot-matmul", "dot_general", od.DotGeneralAttrs((), (), (1,), (0,)), [T(3, 4), T(4, 5)]),
    ("dot-batched", "dot_general", od.DotGeneralAttrs((0, 1), (0, 1), (3,), (3,)), [T(2, 2, 3, 4), T(2, 2, 5, 4)]),
    ("dot-odd-layout", "dot_general", od.DotGeneralAttrs((2,), (0,), (0,), (2,)), [T(4, 3, 2), T(2, 5, 4)]),
    ("convolution-grouped", "convolution", od.ConvolutionAttrs((2, 1), ((1, 1), (0, 1)), feature_group_count=2),
     [T(2, 4, 7, 6), T(6, 2, 3, 2)]),
    ("reduce-sum", "reduce", od.ReduceAttrs("sum", (0, 2)), [T(2, 3, 4)]),
    ("reduce-max", "reduce", od.ReduceAttrs("max", (1,)), [T(2, 3, 4)]),
    ("reduce-min", "reduce", od.ReduceAttrs("min", (0, 1)), [T(2, 3, 4)]),
    ("reduce_window-sum", "reduce_window", od.ReduceWindowAttrs("sum", (1, 3, 2), (1, 2, 1), ((0, 0), (1, 1), (0, 1))),
     [T(2, 7, 5)]),
    ("reduce_window-max", "reduce_window", od.ReduceWindowAttrs("max", (1, 3, 2), (1, 2, 2), ((0, 0), (1, 1), (0, 1))),
     [T(2, 7, 5)]),
    ("conv2d-same-s1", "conv2d", od.ConvAttrs(1, "same"), [X4, T(4, 3, 3, 3)]),
    ("conv2d-same-s2", "conv2d", od.ConvAttrs(2, "same"), [X4, T(4, 3, 3, 3)]),
    ("conv2d-1x1-s2", "conv2d", od.ConvAttrs(2, "same"), [X4, T(4, 3, 1, 1)]),
    ("conv2d-valid-s2-leftover", "conv2d", od.ConvAttrs(2, "valid"), [X4, T(4, 3, 2, 3)]),
    ("conv2d-explicit-dilated", "conv2d", od.ConvAttrs((1, 2), ((1, 0), (2, 1)), (2, 1)), [X4, T(2, 3, 2, 3)]),
    ("depthwise-s1", "depthwise_conv2d", od.ConvAttrs(1, "same"), [X4, T(3, 1, 3, 3)]),
    ("depthwise-s2", "depthwise_conv2d", od.ConvAttrs(2, "same"), [X4, T(3, 1, 3, 3)]),
    ("depthwise-5x5-s2", "depthwise_conv2d", od.ConvAttrs(2, "same"), [X4, T(3, 1, 5, 5)]),
    ("dense", "dense", None, [T(2, 3, 4), T(4, 5)]),
    ("bias_add", "bias_add", od.AxisAttrs(1), [X4, T(3)]),
    ("batch_norm-train", "batch_norm", od.BatchNormAttrs(), [X4, T(3), T(3)]),
    ("batch_norm-train-2d", "batch_norm", od.BatchNormAttrs(), [T(5, 3), T(3), T(3)]),
    ("batch_norm-eval", "batch_norm", od.BatchNormAttrs(training=False), [X4, T(3), T(3), T(3), T(3)]),
    ("layer_norm", "layer_norm", od.LayerNormAttrs(), [T(2, 3, 4), T(4), T(4)]),
    *[(op, op, None, [X4]) for op in od.ACTIVATIONS],
    ("max_pool-2x2", "max_pool", od.PoolAttrs(2, 2), [X4]),
    ("max_pool-3x3-s2-same", "max_pool", od.PoolAttrs(3, 2, "same"), [X4]),
    ("avg_pool-3x3-s2-same", "avg_pool", od.PoolAttrs(3, 2, "same"), [X4]),
    ("avg_pool-2x2", "avg_pool", od.PoolAttrs(2, 2), [X4]),
    ("global_avg_pool", "global_avg_pool", None, [X4]),
    ("softmax", "softmax", od.AxisAttrs(-1), [T(3, 5)]),
    ("softmax_cross_entropy", "softmax_cross_entropy", od.XentAttrs(0.1), [T(4, 5), T(4, dtype=I32)]),
    ("softmax_cross_entropy-per-token", "softmax_cross_entropy", od.XentAttrs(0.1), [T(2, 3, 5), T(2, 3, dtype=I32)]),
    ("attention", "attention", od.AttentionAttrs(2), [T(2, 3, 4), T(2, 3, 4), T(2, 3, 4)]),
    ("attention-causal", "attention", od.AttentionAttrs(2, causal=True), [T(2, 5, 4), T(2, 5, 4), T(2, 5, 4)]),
    ("take", "take", None, [T(3, 4), T(2, 5, dtype=I32)]),   # ids in {0, 1}: repeated rows accumulate
    ("scatter_add", "scatter_add", None, [T(3, 4), T(2, 5, dtype=I32), T(2, 5, 4)]),
]


def test_every_op_has_an_adjoint_or_says_why_not():
    missing = sorted(set(OPS) - set(ADJOINTS) - set(NOT_DIFFERENTIABLE))
    assert not missing, f"ops without an adjoint and without a not-differentiable reason: {missing}"
    assert not set(ADJOINTS) & set(NOT_DIFFERENTIABLE)


def test_every_differentiable_op_is_checked_here():
    assert sorted(set(ADJOINTS) - {c[1] for c in CASES}) == []


@pytest.mark.parametrize("op,attrs,types", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_adjoint_numerics(op, attrs, types):
    r = check_adjoint(op, attrs, types, rng=np.random.default_rng(1))
    assert r.vs_jax is not None and r.vs_fd is not None
    assert r.failures(1e-4) == []
    if linear_groups(op, attrs, len(types)):
        assert r.linearity is not None


@pytest.mark.parametrize("op,kinks", [("relu", [0.0]), ("relu6", [0.0, 6.0])])
def test_relu_kinks_have_derivative_zero(op, kinks):
    import jax
    from gir.autodiff.reverse import backprop
    from gir.ir.graph import Graph
    from gir.shapes.emit import Emitter
    from gir.lower.jax_backend import as_jax_function

    x = np.array([-1.0, *kinks, 3.0, 7.0])
    g = Graph("k")
    xi = g.add_input("x", T(len(x), dtype=DType.f64), "data")
    node = Emitter(g).node(op, [xi])
    ct = Emitter(g).const(1.0, node.out)
    g.set_output("g", backprop(g, [node], {node.out: ct}, [xi]).grads[xi])
    with jax.enable_x64(True):
        got = np.asarray(as_jax_function(g)({"x": x})["g"])
    expect = np.where((x > 0) & (x < (6.0 if op == "relu6" else np.inf)), 1.0, 0.0)
    np.testing.assert_array_equal(got, expect)


def test_max_pool_ties_split_the_cotangent_evenly():
    """Documented convention: a window's cotangent is shared equally by its tied maxima."""
    import jax
    from gir.autodiff.reverse import backprop
    from gir.ir.graph import Graph
    from gir.shapes.emit import Emitter
    from gir.lower.jax_backend import as_jax_function

    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 2.0          # window (0,0): two tied maxima
    x[0, 0, 2:, 2:] = 1.0                         # window (1,1): four tied maxima
    x[0, 0, 0, 3] = 5.0                           # window (0,1): one maximum
    g = Graph("ties")
    xi = g.add_input("x", T(1, 1, 4, 4, dtype=DType.f64), "data")
    ci = g.add_input("ct", T(1, 1, 2, 2, dtype=DType.f64), "data")
    node = Emitter(g).node("max_pool", [xi], od.PoolAttrs(2, 2))
    g.set_output("g", backprop(g, [node], {node.out: ci}, [xi]).grads[xi])
    ct = np.array([[[[4.0, 8.0], [12.0, 16.0]]]])
    with jax.enable_x64(True):
        got = np.asarray(as_jax_function(g)({"x": x, "ct": ct})["g"])[0, 0]
    expect = np.zeros((4, 4))
    expect[0, 0] = expect[1, 1] = 2.0
    expect[0, 3] = 8.0
    expect[2:, :2] = 3.0                           # window (1,0): all four zeros tie
    expect[2:, 2:] = 4.0
    np.testing.assert_array_equal(got, expect)
    assert got.sum() == ct.sum()                  # every window's cotangent is passed on exactly once


@pytest.mark.parametrize("op", sorted(RECOMPUTED))
def test_elementwise_layers_backward_recomputes_from_the_input_not_the_forwards_values(op):
    """After CSE no backward node reads a value the forward computed from x: had it read the forward's
    intermediates, IREE's forward dispatch would write each of them out (docs/performance.md). The numbers are
    checked by test_adjoint_numerics."""
    g = Graph("remat")
    x = g.add_input("x", T(4, 6), "data")
    node = Emitter(g, Loc()).node(op, [x], None)
    ct = g.add_input("ct", node.outputs[0].type, "data")
    back = backprop(g, [node], {node.outputs[0]: ct}, [x])
    g.set_output("y", node.outputs[0])
    g.set_output("gx", back.grads[x])
    prim = run_pipeline(decompose(g), "cse")
    forward = {o for n in prim.nodes if n.adjoint_of is None and n.op != "constant" for o in n.outputs}
    read_by_backward = {v for n in prim.nodes if n.adjoint_of is not None for v in n.inputs}
    assert read_by_backward & forward <= {prim.inputs[0]}, sorted(n.op for n in prim.nodes if n.adjoint_of is None
                                                                     and read_by_backward & set(n.outputs))
