"""Layer ops -> primitives, one rule per layer op. Works on symbolic and static shapes (autodiff
differentiates some layer ops through these); every emitted node keeps the layer node's provenance."""
from __future__ import annotations

import math
from typing import Any, Callable

import sympy

from gir.ir import opdefs as od
from gir.ir.graph import Graph, Node, Value
from gir.ir.dtypes import DType
from gir.ir.ops import get_op, rule_registrar
from gir.ir.types import Dim, TensorType
from gir.shapes.emit import Emitter
from gir.shapes.padding import explicit_pads

Decomposition = Callable[[Emitter, Any, tuple[Value, ...]], "Value | tuple[Value, ...]"]
DECOMPOSITIONS: dict[str, Decomposition] = {}


decomposes = rule_registrar(DECOMPOSITIONS)
"""`@decomposes("op", ...)` files a decomposition."""


def convolution_attrs(a: od.ConvAttrs, x: Value, w: Value, groups: int) -> od.ConvolutionAttrs:
    """The StableHLO convolution a conv layer op means: its padding policy made explicit."""
    pads = explicit_pads(a.padding, x.type.shape[2:], w.type.shape[2:], a.stride, a.dilation)
    return od.ConvolutionAttrs(window_strides=a.stride, padding=pads, rhs_dilation=a.dilation,
                               feature_group_count=groups)


def _conv(e: Emitter, a: od.ConvAttrs, x: Value, w: Value, groups: int) -> Value:
    return e.op("convolution", x, w, attrs=convolution_attrs(a, x, w, groups))


@decomposes("conv2d")
def _conv2d(e: Emitter, a: od.ConvAttrs, x: Value, w: Value) -> Value:
    return _conv(e, a, x, w, 1)


@decomposes("depthwise_conv2d")
def _depthwise(e: Emitter, a: od.ConvAttrs, x: Value, w: Value) -> Value:
    return _conv(e, a, x, w, x.type.shape[1])


@decomposes("dense")
def _dense(e: Emitter, a: Any, x: Value, w: Value) -> Value:
    return e.op("dot_general", x, w, attrs=od.DotGeneralAttrs(lhs_contract=(x.type.rank - 1,), rhs_contract=(0,)))


@decomposes("bias_add")
def _bias_add(e: Emitter, a: od.AxisAttrs, x: Value, b: Value) -> Value:
    return e.op("add", x, e.bcast(b, x.type.shape, (a.axis % x.type.rank,)))


def reciprocal(count: Dim) -> "float | sympy.Expr":
    """1/count as a constant's value: a float, or a sympy expression while dims are symbolic."""
    return 1.0 / count if isinstance(count, int) else sympy.Integer(1) / count


def _mean(e: Emitter, x: Value, dims: tuple[int, ...]) -> Value:
    count = math.prod(x.type.shape[d] for d in dims)
    return e.mul_scalar(e.reduce(x, "sum", dims), reciprocal(count))


def _normalize(e: Emitter, x: Value, gamma: Value, beta: Value, axis: int, eps: float) -> tuple[Value, Value, Value]:
    """(gamma * (x - mean) / sqrt(var + eps) + beta, mean, biased var) with statistics over
    every dim except `axis`'s complement: stats keep dim `axis` only."""
    shape = x.type.shape
    dims = tuple(d for d in range(len(shape)) if d != axis)
    mean = _mean(e, x, dims)
    xc = e.op("subtract", x, e.bcast(mean, shape, (axis,)))
    var = _mean(e, e.op("multiply", xc, xc), dims)
    inv = e.op("rsqrt", e.op("add", var, e.const(eps, var)))
    y = e.op("multiply", xc, e.bcast(e.op("multiply", inv, gamma), shape, (axis,)))
    return e.op("add", y, e.bcast(beta, shape, (axis,))), mean, var


@decomposes("batch_norm")
def _batch_norm(e: Emitter, a: od.BatchNormAttrs, x: Value, gamma: Value, beta: Value, *running: Value):
    shape = x.type.shape
    if a.training:
        return _normalize(e, x, gamma, beta, 1, a.eps)
    mean, var = running
    scale = e.op("multiply", gamma, e.op("rsqrt", e.op("add", var, e.const(a.eps, var))))
    shift = e.op("subtract", beta, e.op("multiply", mean, scale))
    return e.op("add", e.op("multiply", x, e.bcast(scale, shape, (1,))), e.bcast(shift, shape, (1,)))


@decomposes("layer_norm")
def _layer_norm(e: Emitter, a: od.LayerNormAttrs, x: Value, gamma: Value, beta: Value) -> Value:
    shape = x.type.shape
    last = len(shape) - 1
    rest = tuple(range(last))
    mean = _mean(e, x, (last,))
    xc = e.op("subtract", x, e.bcast(mean, shape, rest))
    var = _mean(e, e.op("multiply", xc, xc), (last,))
    inv = e.op("rsqrt", e.op("add", var, e.const(a.eps, var)))
    y = e.op("multiply", xc, e.bcast(inv, shape, rest))
    y = e.op("multiply", y, e.bcast(gamma, shape, (last,)))
    return e.op("add", y, e.bcast(beta, shape, (last,)))


@decomposes("relu")
def _relu(e: Emitter, a: Any, x: Value) -> Value:
    return e.op("maximum", x, e.const(0.0, x))


@decomposes("relu6")
def _relu6(e: Emitter, a: Any, x: Value) -> Value:
    return e.op("clamp", e.scalar(0.0, x.type.dtype), x, e.scalar(6.0, x.type.dtype))


@decomposes("swish")
def _swish(e: Emitter, a: Any, x: Value) -> Value:
    return e.op("multiply", x, e.op("logistic", x))


@decomposes("hard_sigmoid")
def _hard_sigmoid(e: Emitter, a: Any, x: Value) -> Value:
    """relu6(x + 3) / 6 (MobileNetV3's gate)."""
    r = e.op("clamp", e.scalar(0.0, x.type.dtype), e.op("add", x, e.const(3.0, x)), e.scalar(6.0, x.type.dtype))
    return e.mul_scalar(r, 1.0 / 6.0)


@decomposes("hard_swish")
def _hard_swish(e: Emitter, a: Any, x: Value) -> Value:
    return e.op("multiply", x, _hard_sigmoid(e, a, x))


@decomposes("gelu")
def _gelu(e: Emitter, a: Any, x: Value) -> Value:
    """Tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    x3 = e.op("multiply", e.op("multiply", x, x), x)
    inner = e.mul_scalar(e.op("add", x, e.mul_scalar(x3, 0.044715)), math.sqrt(2.0 / math.pi))
    t = e.op("add", e.op("tanh", inner), e.const(1.0, x))
    return e.op("multiply", e.mul_scalar(x, 0.5), t)


def pool_pads(a: od.PoolAttrs, x: Value) -> tuple[tuple[Dim, Dim], ...]:
    """A pooling op's padding policy as explicit (lo, hi) pairs over all four NCHW dims."""
    return ((0, 0), (0, 0)) + explicit_pads(a.padding, x.type.shape[2:], a.window, a.stride)


@decomposes("max_pool")
def _max_pool(e: Emitter, a: od.PoolAttrs, x: Value) -> Value:
    return e.op("reduce_window", x, attrs=od.ReduceWindowAttrs(
        "max", (1, 1) + a.window, (1, 1) + a.stride, pool_pads(a, x)))


@decomposes("avg_pool")
def _avg_pool(e: Emitter, a: od.PoolAttrs, x: Value) -> Value:
    """Window sums divided by the number of unpadded elements in each window."""
    pads = pool_pads(a, x)
    sums = e.op("reduce_window", x, attrs=od.ReduceWindowAttrs("sum", (1, 1) + a.window, (1, 1) + a.stride, pads))
    if all(p == (0, 0) for p in pads):
        return e.mul_scalar(sums, reciprocal(math.prod(a.window)))
    n, c, h, w = x.type.shape
    ones = e.const(1.0, x, shape=(1, 1, h, w))
    counts = e.op("reduce_window", ones, attrs=od.ReduceWindowAttrs("sum", (1, 1) + a.window, (1, 1) + a.stride, pads))
    return e.op("divide", sums, e.bcast(e.reshape(counts, counts.type.shape[2:]), sums.type.shape, (2, 3)))


@decomposes("global_avg_pool")
def _gap(e: Emitter, a: Any, x: Value) -> Value:
    return _mean(e, x, (2, 3))


def _log_softmax(e: Emitter, x: Value, axis: int) -> Value:
    shape = x.type.shape
    keep = tuple(d for d in range(len(shape)) if d != axis)
    z = e.op("subtract", x, e.bcast(e.reduce(x, "max", (axis,)), shape, keep))
    lse = e.op("log", e.reduce(e.op("exp", z), "sum", (axis,)))
    return e.op("subtract", z, e.bcast(lse, shape, keep))


def _softmax_along(e: Emitter, x: Value, axis: int) -> Value:
    shape = x.type.shape
    keep = tuple(d for d in range(len(shape)) if d != axis)
    ex = e.op("exp", e.op("subtract", x, e.bcast(e.reduce(x, "max", (axis,)), shape, keep)))
    return e.op("divide", ex, e.bcast(e.reduce(ex, "sum", (axis,)), shape, keep))


@decomposes("softmax")
def _softmax(e: Emitter, a: od.AxisAttrs, x: Value) -> Value:
    return _softmax_along(e, x, a.axis % x.type.rank)


@decomposes("softmax_cross_entropy")
def _xent(e: Emitter, a: od.XentAttrs, logits: Value, labels: Value) -> Value:
    """Max-shifted log-softmax; one-hot by iota/compare; smoothing folded into the targets; the mean over
    every example (or token) position."""
    shape = logits.type.shape
    last = len(shape) - 1
    lead = tuple(range(last))
    logp = _log_softmax(e, logits, last)
    classes = e.op("iota", attrs=od.IotaAttrs(last, labels.type.with_shape(shape)))
    hot = e.compare(classes, e.bcast(labels, shape, lead), "EQ")
    off = a.label_smoothing / shape[last]
    target = e.select(hot, e.const(1.0 - a.label_smoothing + off, logp), e.const(off, logp))
    total = e.reduce(e.op("multiply", target, logp), "sum", tuple(range(len(shape))))
    return e.mul_scalar(total, -reciprocal(math.prod(shape[:last])))


ATTENTION_TOKEN_ALIGN = 16
"""A static token count that is not a multiple of 8 is padded to a multiple of this inside attention. IREE's CPU
matmul vectorizes a product's rows and columns by a divisor of their count, so ViT's 197 tokens (a prime) ran its
attention products one element at a time: 24x197x197x64 at 17-31 GFLOP/s, 3-8x slower than over 208
(docs/performance.md)."""


def _aligned_tokens(t: Dim) -> Dim:
    """t, or the next multiple of ATTENTION_TOKEN_ALIGN for a static count over 8 that is not a multiple of 8."""
    if not isinstance(t, int) or t <= 8 or t % 8 == 0:
        return t
    return -(-t // ATTENTION_TOKEN_ALIGN) * ATTENTION_TOKEN_ALIGN


def _masked_keys(e: Emitter, scores: Value, keys: Dim, causal: bool) -> Value:
    """Scores [N,h,T,T] with the keys a query may not see set to -inf: with `causal`, those after the query's
    position (which covers padding after the first `keys` for every query kept); else the padding. One [T,T] iota
    comparison, broadcast into the select (no mask input, nothing per batch)."""
    t = scores.type.shape[-1]
    grid = TensorType((t, t), DType.i32)
    key = e.op("iota", attrs=od.IotaAttrs(1, grid))
    bound = e.op("iota", attrs=od.IotaAttrs(0, grid)) if causal else e.const(keys, grid)
    allowed = e.bcast(e.compare(key, bound, "LE" if causal else "LT"), scores.type.shape, (2, 3))
    return e.select(allowed, scores, e.const(-math.inf, scores))


@decomposes("attention")
def _attention(e: Emitter, a: od.AttentionAttrs, q: Value, k: Value, v: Value) -> Value:
    """Per-head softmax(q k^T / sqrt(dh)) v over the tokens padded to `_aligned_tokens` (padded keys masked out,
    padded queries' rows sliced off at the end)."""
    n, t, d = q.type.shape
    h, dh = a.heads, d // a.heads
    tp = _aligned_tokens(t)
    # padded, the per-head operands and products are walled from the heads' transposes, which IREE would fold into
    # the products (2.3-2.5 against 0.9-1.0 ms a call for ViT-Tiny's p v, docs/performance.md)
    wall = (lambda x: e.op("optimization_barrier", x)) if tp != t else (lambda x: x)  # noqa: E731

    def heads(x: Value) -> Value:  # [N, T, D] -> [N*h, Tp, dh]
        if tp != t:
            x = e.op("pad", x, e.scalar(0.0, x.type.dtype), attrs=od.PadAttrs([0, 0, 0], [0, tp - t, 0], [0, 0, 0]))
        return wall(e.reshape(e.transpose(e.reshape(x, (n, tp, h, dh)), (0, 2, 1, 3)), (n * h, tp, dh)))

    qh, kh, vh = heads(q), heads(k), heads(v)
    scores = e.op("dot_general", qh, kh, attrs=od.DotGeneralAttrs((0,), (0,), (2,), (2,)))  # [N*h,Tp,Tp]
    scores = e.mul_scalar(e.reshape(scores, (n, h, tp, tp)), 1.0 / math.sqrt(dh))
    p = _softmax_along(e, _masked_keys(e, scores, t, a.causal) if a.causal or tp != t else scores, 3)
    out = e.op("dot_general", e.reshape(p, (n * h, tp, tp)), vh,
               attrs=od.DotGeneralAttrs((0,), (0,), (2,), (1,)))  # [N*h,Tp,dh]
    merged = e.reshape(e.transpose(e.reshape(wall(out), (n, h, tp, dh)), (0, 2, 1, 3)), (n, tp, d))
    if tp == t:
        return merged
    return e.op("slice", merged, attrs=od.SliceAttrs([0, 0, 0], [n, t, d], [1, 1, 1]))


def decompose(graph: Graph) -> Graph:
    """A copy of a static-shape graph with every layer op replaced by primitives."""
    out = Graph(graph.name)
    vmap: dict[Value, Value] = {v: out.add_input(v.name, v.type, v.role, v.init) for v in graph.inputs}
    nmap: dict[Node, Node] = {}
    shared, drawn = _shared_draws(graph), {}
    for node in graph.nodes:
        ins = tuple(vmap[v] for v in node.inputs)
        adjoint_of = nmap.get(node.adjoint_of, node.adjoint_of)  # a decomposed layer node stays the key
        if node in shared:
            drawn.update(zip(shared[node], random_bits_together(Emitter(out, node.loc, adjoint_of),
                                                                 [n.attrs for n in shared[node]], *ins)))
        if node in drawn:
            res = (drawn.pop(node),)
        elif get_op(node.op).level == "primitive":
            new = out.add_node(node.op, ins, node.attrs, [v.type for v in node.outputs], node.loc, adjoint_of)
            nmap[node] = new
            res: tuple[Value, ...] = new.outputs
        else:
            r = DECOMPOSITIONS[node.op](Emitter(out, node.loc, adjoint_of), node.attrs, *ins)
            res = r if isinstance(r, tuple) else (r,)
        for old, new_v in zip(node.outputs, res):
            if old.type != new_v.type:
                raise AssertionError(f"decomposition of {node.op} at {node.loc} gives {new_v.type}, not {old.type}")
            vmap[old] = new_v
    for name, v in graph.outputs.items():
        out.set_output(name, vmap[v])
    return out


THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
THREEFRY_PARITY = 0x1BD11BDA  # Threefish's key-schedule constant


def threefry2x32(e: Emitter, k0: Value, k1: Value, x0: Value, x1: Value) -> tuple[Value, Value]:
    """Random123's threefry2x32 with 20 rounds, as JAX computes it: i32 values as raw 32 bits, wrapping adds.
    Keys are scalars, broadcast to the counters' shape."""
    shape = x0.type.shape
    ks = [e.bcast(k, shape, ()) for k in (k0, k1)]
    ks.append(e.op("xor", e.op("xor", ks[0], ks[1]), e.const(THREEFRY_PARITY, x0)))
    x0, x1 = e.add(x0, ks[0]), e.add(x1, ks[1])
    for group in range(5):
        for r in THREEFRY_ROTATIONS[group % 2]:
            x0 = e.add(x0, x1)
            rotated = e.op("or", e.op("shift_left", x1, e.const(r, x1)),
                           e.op("shift_right_logical", x1, e.const(32 - r, x1)))
            x1 = e.op("xor", x0, rotated)
        x0 = e.add(x0, ks[(group + 1) % 3])
        x1 = e.add(e.add(x1, ks[(group + 2) % 3]), e.const(group + 1, x1))
    return x0, x1


@decomposes("random_bits")
def _random_bits(e: Emitter, a: od.RandomAttrs, k0: Value, k1: Value) -> Value:
    return random_bits_together(e, [a], k0, k1)[0]


def random_bits_together(e: Emitter, draws: list[od.RandomAttrs], k0: Value, k1: Value) -> list[Value]:
    """Word 0 of threefry2x32((k0, k1), (i, salt)) per row-major flat index i of each draw, from one threefry over
    all the draws' counters laid end to end: the same bits as one threefry each, in one dispatch instead of one per
    layer (EfficientNetV2-S draws 40 drop-path masks)."""
    sizes = [math.prod(a.shape) for a in draws]

    def joined(parts: list[Value]) -> Value:
        return parts[0] if len(parts) == 1 else e.op("concatenate", *parts, attrs=od.ConcatAttrs(0))

    index = joined([e.op("iota", attrs=od.IotaAttrs(0, TensorType((n,), DType.i32))) for n in sizes])
    salt = joined([e.const(a.salt, TensorType((n,), DType.i32)) for a, n in zip(draws, sizes)])
    bits = threefry2x32(e, k0, k1, index, salt)[0]
    out, start = [], 0
    for a, n in zip(draws, sizes):
        piece = bits if len(draws) == 1 else e.op("slice", bits, attrs=od.SliceAttrs((start,), (start + n,), (1,)))
        out.append(e.reshape(piece, a.shape))
        start += n
    return out


def _shared_draws(graph: Graph) -> dict[Node, list[Node]]:
    """The random_bits nodes that share both key inputs (after CSE, every dropout and drop path of a net), keyed by
    the first of them, where decomposition draws them all."""
    groups: dict[tuple[Value, ...], list[Node]] = {}
    for n in graph.nodes:
        if n.op == "random_bits":
            groups.setdefault(tuple(n.inputs), []).append(n)
    return {ns[0]: ns for ns in groups.values() if len(ns) > 1}
