"""Every op lowered alone, compiled with IREE llvm-cpu and run, against the JAX backend and an
independent NumPy / jax.lax reference. All cases share one module, so one compile."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gir.ir import OPS, DType, Graph, TensorType
from gir.ir import opdefs as od
from gir.lower.decompose import decompose
from gir.shapes.emit import Emitter
from gir.lower.iree_compile import compile_text
from gir.lower.iree_runtime import IreeSession
from gir.lower.jax_backend import evaluate
from gir.lower.stablehlo import print_module

F, I32 = DType.f32, DType.i32
RNG = np.random.default_rng(0)


MIX = (-1640531527, 1013904223)  # 0x9E3779B9 as i32, and an odd offset: small ints spread over all 32 bits


def bits(e, x, k: int = 0):
    """x * MIX[0] + MIX[1] + k in wrapping i32 arithmetic: negative values and high bits from the 0..4 inputs."""
    return e.op("add", e.op("multiply", x, e.const(MIX[0], x)), e.const(MIX[1] + k, x))


def np_bits(x, k: int = 0):
    with np.errstate(over="ignore"):
        return (x.astype(np.int64) * MIX[0] + MIX[1] + k).astype(np.uint64).astype(np.uint32).view(np.int32)


def np_threefry_bits(k0, k1, n: int, salt: int) -> np.ndarray:
    """Word 0 of JAX's threefry2x32 for counters (i, salt), i < n, as i32."""
    from jax.extend.random import threefry_2x32
    key = np.array([k0, k1], np.int32).view(np.uint32)
    counts = np.concatenate([np.arange(n, dtype=np.uint32), np.full(n, salt, np.uint32)])
    return np.asarray(threefry_2x32(key, counts))[:n].view(np.int32)


def rand(shape, dtype=F, positive=False):
    if dtype == I32:
        return RNG.integers(0, 5, shape).astype(np.int32)
    x = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(x) + 0.1 if positive else x


def lax_conv(x, w, stride, pads, groups=1, lhs_dil=(1, 1), rhs_dil=(1, 1), bgc=1):
    return np.asarray(jax.lax.conv_general_dilated(
        x, w, stride, pads, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil, feature_group_count=groups,
        batch_group_count=bgc, dimension_numbers=("NCHW", "OIHW", "NCHW"), precision="highest"))


def np_softmax(x, axis):
    z = np.exp(x - x.max(axis, keepdims=True))
    return z / z.sum(axis, keepdims=True)


def np_bn(x, g, b, eps=1e-5):
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    m, v = x.mean(axes), x.var(axes)
    sh = (1, -1) + (1,) * (x.ndim - 2)
    return (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + eps) * g.reshape(sh) + b.reshape(sh), m, v


def np_attention(q, k, v, h):
    n, t, d = q.shape
    sp = lambda a: a.reshape(n, t, h, d // h).transpose(0, 2, 1, 3)  # noqa: E731
    s = np.einsum("nhqd,nhkd->nhqk", sp(q), sp(k)) / math.sqrt(d // h)
    return np.einsum("nhqk,nhkd->nhqd", np_softmax(s, -1), sp(v)).transpose(0, 2, 1, 3).reshape(n, t, d)


def np_causal_attention(q, k, v, h):
    """Each query position i attends to key positions <= i only."""
    n, t, d = q.shape
    sp = lambda a: a.reshape(n, t, h, d // h).transpose(0, 2, 1, 3)  # noqa: E731
    s = np.einsum("nhqd,nhkd->nhqk", sp(q), sp(k)) / math.sqrt(d // h)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    return np.einsum("nhqk,nhkd->nhqd", np_softmax(s, -1), sp(v)).transpose(0, 2, 1, 3).reshape(n, t, d)


def np_scatter_add(table, ids, updates):
    out = table.copy()
    np.add.at(out, ids.ravel(), updates.reshape(-1, table.shape[1]))
    return out


def np_pool(x, k, s, pads, kind):
    lo = ((0, 0), (0, 0)) + tuple(pads)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, lo, constant_values=fill)
    ones = np.pad(np.ones_like(x), lo)
    n, c, hh, ww = xp.shape
    oh, ow = (hh - k) // s + 1, (ww - k) // s + 1
    out = np.zeros((n, c, oh, ow), np.float32)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s:i * s + k, j * s:j * s + k]
            out[:, :, i, j] = win.max((2, 3)) if kind == "max" else win.sum((2, 3)) / ones[
                :, :, i * s:i * s + k, j * s:j * s + k].sum((2, 3))
    return out


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def cmp(direction):
    return od.CompareAttrs(direction)


# name: (input shapes/dtypes, build(e, *vals) -> value or tuple, reference(*arrays), atol)
X = ((2, 3, 5, 5),)
CASES = {
    **{op: (((3, 4), (3, 4)), lambda e, x, y, op=op: e.op(op, x, y), ref, 1e-6) for op, ref in {
        "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "maximum": np.maximum,
        "minimum": np.minimum}.items()},
    "divide": (((3, 4), ((3, 4), F, True)), lambda e, x, y: e.op("divide", x, y), np.divide, 1e-5),
    **{op: (((((3, 4), F, op in ("log", "sqrt", "rsqrt"))),), lambda e, x, op=op: e.op(op, x), ref, 1e-5)
       for op, ref in {"negate": np.negative, "exp": np.exp, "log": np.log, "tanh": np.tanh,
                       "logistic": lambda x: 1 / (1 + np.exp(-x)), "sqrt": np.sqrt,
                       "rsqrt": lambda x: 1 / np.sqrt(x), "abs": np.abs, "sine": np.sin, "cosine": np.cos}.items()},
    "compare": (((3, 4), (3, 4)), lambda e, x, y: e.compare(x, y, "GT"), np.greater, 0),
    "xor": ((((3, 4), I32), ((3, 4), I32)), lambda e, x, y: e.op("xor", bits(e, x), bits(e, y, 7)),
            lambda x, y: np_bits(x) ^ np_bits(y, 7), 0),
    "or": ((((3, 4), I32), ((3, 4), I32)), lambda e, x, y: e.op("or", bits(e, x), bits(e, y, 7)),
           lambda x, y: np_bits(x) | np_bits(y, 7), 0),
    "shift_left": ((((3, 4), I32), ((3, 4), I32)), lambda e, x, s: e.op("shift_left", bits(e, x), s),
                   lambda x, s: np_bits(x) << s, 0),
    "shift_right_logical": ((((3, 4), I32), ((3, 4), I32)),
                            lambda e, x, s: e.op("shift_right_logical", bits(e, x), s),
                            lambda x, s: (np_bits(x).view(np.uint32) >> s.astype(np.uint32)).view(np.int32), 0),
    "select": (((3, 4), (3, 4)), lambda e, x, y: e.select(e.compare(x, y, "LT"), x, y), np.minimum, 0),
    "clamp": (((3, 4),), lambda e, x: e.op("clamp", e.scalar(-0.5), x, e.scalar(0.5)),
              lambda x: np.clip(x, -0.5, 0.5), 0),
    "convert": (((3, 4),), lambda e, x: e.convert(e.convert(x, DType.bf16), F),
                lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)), 0),
    "constant": (((3, 4),), lambda e, x: e.op("add", x, e.const(2.5, x)), lambda x: x + 2.5, 0),
    "iota": ((((3, 4), I32),), lambda e, x: e.op("add", x, e.op("iota", attrs=od.IotaAttrs(1, x.type))),
             lambda x: x + np.arange(4, dtype=np.int32), 0),
    "broadcast_in_dim": (((3,),), lambda e, x: e.bcast(x, (2, 3, 4), (1,)),
                         lambda x: np.broadcast_to(x[None, :, None], (2, 3, 4)), 0),
    "reshape": (((2, 6),), lambda e, x: e.reshape(x, (3, 4)), lambda x: x.reshape(3, 4), 0),
    "transpose": (((2, 3, 4),), lambda e, x: e.transpose(x, (2, 0, 1)), lambda x: x.transpose(2, 0, 1), 0),
    "reverse": (((2, 3, 4),), lambda e, x: e.op("reverse", x, attrs=od.ReverseAttrs((0, 2))),
                lambda x: x[::-1, :, ::-1], 0),
    "optimization_barrier": (((2, 3),), lambda e, x: e.op("optimization_barrier", x), lambda x: x, 0),
    "slice": (((6, 7),), lambda e, x: e.op("slice", x, attrs=od.SliceAttrs((1, 0), (6, 7), (2, 3))),
              lambda x: x[1:6:2, 0:7:3], 0),
    "pad": (((2, 3),), lambda e, x: e.op("pad", x, e.scalar(9.0), attrs=od.PadAttrs((1, 0), (0, 2), (1, 1))),
            lambda x: np.asarray(jax.lax.pad(x, np.float32(9), ((1, 0, 1), (0, 2, 1)))), 0),
    "concatenate": (((2, 3), (2, 2)), lambda e, x, y: e.op("concatenate", x, y, attrs=od.ConcatAttrs(1)),
                    lambda x, y: np.concatenate([x, y], 1), 0),
    "dot_general": (((2, 3, 4), (2, 4, 5)), lambda e, x, y: e.op("dot_general", x, y, attrs=od.DotGeneralAttrs(
        (0,), (0,), (2,), (1,))), lambda x, y: np.einsum("bij,bjk->bik", x, y), 1e-5),
    "convolution": (((2, 4, 7, 7), (6, 2, 3, 3)), lambda e, x, w: e.op("convolution", x, w, attrs=od.ConvolutionAttrs(
        (2, 1), ((1, 0), (2, 1)), (1, 2), (2, 1), feature_group_count=2)),
        lambda x, w: lax_conv(x, w, (2, 1), ((1, 0), (2, 1)), 2, (1, 2), (2, 1)), 1e-4),
    "reduce": (((3, 4, 5),), lambda e, x: (e.reduce(x, "sum", (0, 2)), e.reduce(x, "max", (1,)),
                                           e.reduce(x, "min", (2,))),
               lambda x: (x.sum((0, 2)), x.max(1), x.min(2)), 1e-5),
    "reduce_window": (X, lambda e, x: e.op("reduce_window", x, attrs=od.ReduceWindowAttrs(
        "max", (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))),
        lambda x: np_pool(x, 3, 2, ((1, 1), (1, 1)), "max"), 0),
    # layer ops
    "conv2d": (((2, 3, 7, 7), (4, 3, 3, 3)), lambda e, x, w: e.op("conv2d", x, w, attrs=od.ConvAttrs(2, "same")),
               lambda x, w: lax_conv(x, w, (2, 2), "SAME"), 1e-4),
    "depthwise_conv2d": (((2, 3, 6, 6), (3, 1, 3, 3)), lambda e, x, w: e.op(
        "depthwise_conv2d", x, w, attrs=od.ConvAttrs(2, "same")), lambda x, w: lax_conv(x, w, (2, 2), "SAME", 3), 1e-4),
    "dense": (((4, 6), (6, 5)), lambda e, x, w: e.op("dense", x, w), lambda x, w: x @ w, 1e-5),
    "bias_add": (((2, 3, 4), (3,)), lambda e, x, b: e.op("bias_add", x, b, attrs=od.AxisAttrs(1)),
                 lambda x, b: x + b[None, :, None], 1e-6),
    "batch_norm": ((X[0], (3,), (3,)), lambda e, x, g, b: e.node("batch_norm", (x, g, b), od.BatchNormAttrs()).outputs,
                   lambda x, g, b: np_bn(x, g, b), 1e-4),
    "layer_norm": (((2, 3, 8), (8,), (8,)), lambda e, x, g, b: e.op("layer_norm", x, g, b, attrs=od.LayerNormAttrs()),
                   lambda x, g, b: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b,
                   1e-4),
    "relu": (((3, 4),), lambda e, x: e.op("relu", x), lambda x: np.maximum(x, 0), 0),
    "relu6": (((3, 4),), lambda e, x: e.op("relu6", e.mul_scalar(x, 5.0)), lambda x: np.clip(5 * x, 0, 6), 1e-6),
    "swish": (((3, 4),), lambda e, x: e.op("swish", x), lambda x: x / (1 + np.exp(-x)), 1e-5),
    "hard_swish": (((3, 4),), lambda e, x: e.op("hard_swish", e.mul_scalar(x, 3.0)),
                   lambda x: 3 * x * np.clip(3 * x + 3, 0, 6) / 6, 1e-5),
    "hard_sigmoid": (((3, 4),), lambda e, x: e.op("hard_sigmoid", e.mul_scalar(x, 3.0)),
                     lambda x: np.clip(3 * x + 3, 0, 6) / 6, 1e-6),
    "gelu": (((3, 4),), lambda e, x: e.op("gelu", x), gelu_tanh, 1e-5),
    "max_pool": (X, lambda e, x: e.op("max_pool", x, attrs=od.PoolAttrs(2, 2, "same")),
                 lambda x: np_pool(x, 2, 2, ((0, 1), (0, 1)), "max"), 0),
    "avg_pool": (X, lambda e, x: e.op("avg_pool", x, attrs=od.PoolAttrs(3, 2, "same")),
                 lambda x: np_pool(x, 3, 2, ((1, 1), (1, 1)), "avg"), 1e-5),
    "global_avg_pool": (X, lambda e, x: e.op("global_avg_pool", x), lambda x: x.mean((2, 3)), 1e-5),
    "softmax": (((3, 5),), lambda e, x: e.op("softmax", x, attrs=od.AxisAttrs(-1)), lambda x: np_softmax(x, -1), 1e-6),
    "softmax_cross_entropy": (((4, 5), ((4,), I32)), lambda e, x, y: e.op(
        "softmax_cross_entropy", x, y, attrs=od.XentAttrs(0.1)),
        lambda x, y: -np.mean(np.sum((0.9 * np.eye(5)[y] + 0.02) * np.log(np_softmax(x, 1)), 1)), 1e-5),
    "random_bits": ((((), I32),) * 2, lambda e, k0, k1: e.op("random_bits", k0, k1, attrs=od.RandomAttrs((3, 4), 5)),
                    lambda k0, k1: np_threefry_bits(k0, k1, 12, 5).reshape(3, 4), 0),
    "attention": (((2, 4, 6),) * 3, lambda e, q, k, v: e.op("attention", q, k, v, attrs=od.AttentionAttrs(2)),
                  lambda q, k, v: np_attention(q, k, v, 2), 1e-5),
    "attention_causal": (((2, 5, 6),) * 3, lambda e, q, k, v: e.op(
        "attention", q, k, v, attrs=od.AttentionAttrs(2, causal=True)), lambda q, k, v: np_causal_attention(q, k, v, 2),
        1e-5),
    # 11 tokens: padded to 16 inside the decomposition, the padded keys masked, the padded queries sliced off
    "attention_padded_tokens": (((2, 11, 6),) * 3, lambda e, q, k, v: e.op(
        "attention", q, k, v, attrs=od.AttentionAttrs(2)), lambda q, k, v: np_attention(q, k, v, 2), 1e-5),
    "attention_causal_padded_tokens": (((2, 11, 6),) * 3, lambda e, q, k, v: e.op(
        "attention", q, k, v, attrs=od.AttentionAttrs(2, causal=True)), lambda q, k, v: np_causal_attention(q, k, v, 2),
        1e-5),
    "softmax_cross_entropy_per_token": (((2, 3, 5), ((2, 3), I32)), lambda e, x, y: e.op(
        "softmax_cross_entropy", x, y, attrs=od.XentAttrs(0.1)),
        lambda x, y: -np.mean(np.sum((0.9 * np.eye(5)[y] + 0.02) * np.log(np_softmax(x, 2)), 2)), 1e-5),
    "take": (((5, 3), ((2, 4), I32)), lambda e, t, i: e.op("take", t, i), lambda t, i: t[i], 0),
    "scatter_add": (((5, 3), ((2, 4), I32), (2, 4, 3)), lambda e, t, i, u: e.op("scatter_add", t, i, u),
                    np_scatter_add, 1e-6),
}


def _spec(s):
    if isinstance(s[0], tuple):  # (shape, dtype[, positive])
        return s[0], s[1], (s[2] if len(s) > 2 else False)
    return s, F, False


def _case_graph(name):
    shapes, build, _, _ = CASES[name]
    g = Graph(name)
    ins = [g.add_input(f"x{i}", TensorType(shp, dt), "data") for i, (shp, dt, _) in enumerate(map(_spec, shapes))]
    out = build(Emitter(g), *ins)
    for i, v in enumerate(out if isinstance(out, (tuple, list)) else (out,)):
        g.set_output(f"y{i}", v)
    return g


def _inputs(name):
    return [rand(shp, dt, pos) for shp, dt, pos in map(_spec, CASES[name][0])]


def test_every_op_has_a_lowering_case():
    covered = set()
    for name in CASES:
        covered |= {n.op for n in _case_graph(name).nodes}
    assert sorted(set(OPS) - covered) == []


@pytest.fixture(scope="module")
def session():
    graphs = {f"f_{name}": decompose(_case_graph(name)) for name in CASES}
    return IreeSession(compile_text(print_module(graphs, "ops"), "cpu"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_on_iree_matches_jax_backend_and_reference(session, name):
    _, _, ref, tol = CASES[name]
    args = _inputs(name)
    got = session.call_numpy(f"f_{name}", *args)
    g = _case_graph(name)
    jax_out = evaluate(g, {f"x{i}": a for i, a in enumerate(args)})
    want = ref(*args)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want) == len(jax_out)
    for k, (a, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        assert a.shape == w.shape, (name, k)
        np.testing.assert_allclose(a, w, atol=tol, rtol=tol, err_msg=f"{name} IREE vs reference, output {k}")
        np.testing.assert_allclose(a, np.asarray(jax_out[f"y{k}"]), atol=tol, rtol=tol,
                                   err_msg=f"{name} IREE vs JAX backend, output {k}")
