"""The JAX backend: one jax.lax rule per op, and evaluation of static-shape graphs, eagerly or jitted.

Primitive rules follow StableHLO semantics; each layer-op rule's docstring states the op's exact
meaning, the contract that the decomposition into primitives (and the StableHLO lowering) also keeps.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import attrs
import jax
import jax.numpy as jnp
import numpy as np
import sympy
from jax import lax
from jax.extend.random import threefry_2x32

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph
from gir.ir.ops import rule_registrar
from gir.ir.types import TensorType, format_dim
from gir.shapes.padding import explicit_pads

PRECISION = lax.Precision.HIGHEST
"""Precision of every dot_general and convolution: full f32 (no TF32 or bf16 passes on accelerators),
so that results compare closely with other backends."""

JAX_RULES: dict[str, Callable] = {}


jax_rule = rule_registrar(JAX_RULES, "JAX")
"""`@jax_rule("op", ...)` files `fn(attrs, *arrays)` as the JAX rule of each op."""


def np_dtype(dtype: DType) -> np.dtype:
    """The NumPy/JAX dtype of a gir element type (bf16 is ml_dtypes' bfloat16, as jnp.bfloat16)."""
    return dtype.numpy


def _int(d: Any) -> int:
    if isinstance(d, int):
        return d
    if isinstance(d, sympy.Basic) and d.is_Integer:
        return int(d)
    raise ValueError(f"dim {format_dim(d)} is symbolic; call gir.shapes.specialize on the graph first")


def _ints(ds) -> tuple[int, ...]:
    return tuple(_int(d) for d in ds)


# ---- primitives ----------------------------------------------------------------------------

_UNARY = {"negate": lax.neg, "exp": lax.exp, "log": lax.log, "tanh": lax.tanh, "logistic": lax.logistic,
          "sqrt": lax.sqrt, "rsqrt": lax.rsqrt, "abs": lax.abs, "sine": lax.sin, "cosine": lax.cos}
_BINARY = {"add": lax.add, "subtract": lax.sub, "multiply": lax.mul, "divide": lax.div, "maximum": lax.max,
           "minimum": lax.min, "xor": lax.bitwise_xor, "or": lax.bitwise_or, "shift_left": lax.shift_left,
           "shift_right_logical": lax.shift_right_logical}
_COMPARE = {"EQ": lax.eq, "NE": lax.ne, "LT": lax.lt, "LE": lax.le, "GT": lax.gt, "GE": lax.ge}


def _unary_rule(fn: Callable, name: str) -> Callable:
    def rule(a, x):
        return fn(x)
    rule.__name__ = f"_{name}"
    rule.__doc__ = f"StableHLO {name}, elementwise."
    return rule


def _binary_rule(fn: Callable, name: str) -> Callable:
    def rule(a, x, y):
        return fn(x, y)
    rule.__name__ = f"_{name}"
    rule.__doc__ = f"StableHLO {name}, elementwise on equal shapes (divide truncates for ints)."
    return rule


for _name, _fn in _UNARY.items():
    JAX_RULES[_name] = _unary_rule(_fn, _name)
for _name, _fn in _BINARY.items():
    JAX_RULES[_name] = _binary_rule(_fn, _name)


@jax_rule("compare")
def _compare(a: od.CompareAttrs, x, y):
    """StableHLO compare with direction EQ, NE, LT, LE, GT or GE; a bool result."""
    return _COMPARE[a.direction](x, y)


@jax_rule("select")
def _select(a, pred, on_true, on_false):
    """StableHLO select: on_true where pred, else on_false; pred is a scalar or the branches' shape."""
    return lax.select(pred, on_true, on_false)


@jax_rule("clamp")
def _clamp(a, lo, x, hi):
    """StableHLO clamp(min, x, max) = min(max(x, min), max); bounds are scalars or x's shape."""
    return lax.clamp(jnp.broadcast_to(lo, x.shape), x, jnp.broadcast_to(hi, x.shape))  # scalar bounds trip lax's grad


@jax_rule("convert")
def _convert(a: od.ConvertAttrs, x):
    """StableHLO convert to attrs.dtype (float -> int rounds toward zero; to i1 is x != 0)."""
    return lax.convert_element_type(x, np_dtype(a.dtype))


@jax_rule("constant")
def _constant(a: od.ConstantAttrs):
    """A splat: attrs.type's shape filled with attrs.value in attrs.type's dtype."""
    return jnp.full(_ints(a.type.shape), a.value, np_dtype(a.type.dtype))


@jax_rule("iota")
def _iota(a: od.IotaAttrs):
    """StableHLO iota: 0, 1, 2, ... along attrs.dim, constant along the other dims."""
    return lax.broadcasted_iota(np_dtype(a.type.dtype), _ints(a.type.shape), a.dim)


@jax_rule("broadcast_in_dim")
def _broadcast_in_dim(a: od.BroadcastAttrs, x):
    """StableHLO broadcast_in_dim: operand dim i goes to result dim dims[i] (size 1 expands)."""
    return lax.broadcast_in_dim(x, _ints(a.shape), a.dims)


@jax_rule("reshape")
def _reshape(a: od.ReshapeAttrs, x):
    """StableHLO reshape: the same elements in row-major order, a new shape."""
    return lax.reshape(x, _ints(a.shape))


@jax_rule("transpose")
def _transpose(a: od.TransposeAttrs, x):
    """StableHLO transpose: result dim i is operand dim perm[i]."""
    return lax.transpose(x, a.perm)


@jax_rule("reverse")
def _reverse(a: od.ReverseAttrs, x):
    """StableHLO reverse along dims."""
    return lax.rev(x, a.dims)


@jax_rule("optimization_barrier")
def _optimization_barrier(a: None, x):
    """StableHLO optimization_barrier: x, not fused across."""
    return lax.optimization_barrier(x)


@jax_rule("slice")
def _slice(a: od.SliceAttrs, x):
    """StableHLO slice: x[start:limit:strides] per dim."""
    return lax.slice(x, _ints(a.start), _ints(a.limit), a.strides)


@jax_rule("pad")
def _pad(a: od.PadAttrs, x, value):
    """StableHLO pad: low/high edge padding (negative crops) and interior padding, filled with value."""
    return lax.pad(x, value, [(lo, hi, i) for lo, hi, i in zip(_ints(a.low), _ints(a.high), a.interior)])


@jax_rule("concatenate")
def _concatenate(a: od.ConcatAttrs, *xs):
    """StableHLO concatenate along attrs.dim."""
    return lax.concatenate(xs, a.dim)


@jax_rule("dot_general")
def _dot_general(a: od.DotGeneralAttrs, x, y):
    """StableHLO dot_general: result dims are batch, lhs free, rhs free (each in operand order)."""
    return lax.dot_general(x, y, ((a.lhs_contract, a.rhs_contract), (a.lhs_batch, a.rhs_batch)),
                           precision=PRECISION)


def _conv_dimension_numbers(lhs: str, rhs: str, out: str) -> lax.ConvDimensionNumbers:
    """Layout strings to dimension numbers; the k-th spatial letter of each layout pairs with the
    k-th of the others (StableHLO's spatial-dimension lists), whatever the letters are."""
    def spec(layout: str, first: str, second: str) -> tuple[int, ...]:
        if sorted(layout.count(ch) for ch in (first, second)) != [1, 1]:
            raise ValueError(f"layout {layout!r} needs exactly one {first!r} and one {second!r}")
        spatial = tuple(i for i, ch in enumerate(layout) if ch not in (first, second))
        return (layout.index(first), layout.index(second)) + spatial
    return lax.ConvDimensionNumbers(spec(lhs, "N", "C"), spec(rhs, "O", "I"), spec(out, "N", "C"))


@jax_rule("convolution")
def _convolution(a: od.ConvolutionAttrs, x, w):
    """StableHLO convolution: explicit padding, lhs/rhs dilation, feature and batch group counts,
    dimension numbers from the layout strings (lhs N,C,spatial; rhs O,I,spatial; out N,C,spatial)."""
    return lax.conv_general_dilated(
        x, w, window_strides=a.window_strides, padding=[(_int(lo), _int(hi)) for lo, hi in a.padding],
        lhs_dilation=a.lhs_dilation, rhs_dilation=a.rhs_dilation,
        dimension_numbers=_conv_dimension_numbers(a.lhs_layout, a.rhs_layout, a.out_layout),
        feature_group_count=a.feature_group_count, batch_group_count=a.batch_group_count, precision=PRECISION)


def _reduction(kind: str, dtype: np.dtype) -> tuple[Any, Callable]:
    """Init value (the kind's identity) and computation of a reduction over `dtype`."""
    if dtype == np.bool_:  # StableHLO add/max on i1 is logical or, min is logical and
        return (np.array(True), lax.bitwise_and) if kind == "min" else (np.array(False), lax.bitwise_or)
    if jnp.issubdtype(dtype, jnp.floating):
        init = {"sum": 0, "max": -np.inf, "min": np.inf}[kind]
    else:
        info = np.iinfo(dtype)
        init = {"sum": 0, "max": info.min, "min": info.max}[kind]
    return np.array(init, dtype), {"sum": lax.add, "max": lax.max, "min": lax.min}[kind]


@jax_rule("reduce")
def _reduce(a: od.ReduceAttrs, x):
    """StableHLO reduce over dims with sum (init 0), max (init -inf) or min (init +inf)."""
    init, fn = _reduction(a.kind, x.dtype)
    return lax.reduce(x, init, fn, a.dims)


@jax_rule("reduce_window")
def _reduce_window(a: od.ReduceWindowAttrs, x):
    """StableHLO reduce_window with sum/max/min; padding is filled with the init value (0, -inf, +inf)."""
    init, fn = _reduction(a.kind, x.dtype)
    return lax.reduce_window(x, init, fn, a.window, a.strides, [(_int(lo), _int(hi)) for lo, hi in a.padding])


@jax_rule("take")
def _take(a, table, ids):
    """StableHLO gather of rows: table[V, D] at ids[...] gives [..., D]; an id outside [0, V) is clamped into it."""
    r = ids.ndim
    dnums = lax.GatherDimensionNumbers(offset_dims=(r,), collapsed_slice_dims=(0,), start_index_map=(0,))
    return lax.gather(table, ids[..., None], dnums, (1, table.shape[1]), mode=lax.GatherScatterMode.CLIP)


@jax_rule("scatter_add")
def _scatter_add(a, operand, ids, updates):
    """StableHLO scatter with add: operand[V, D] plus each row of updates[..., D] at row ids[...] (repeats
    accumulate); an id outside [0, V) is dropped."""
    r = ids.ndim
    dnums = lax.ScatterDimensionNumbers(update_window_dims=(r,), inserted_window_dims=(0,),
                                        scatter_dims_to_operand_dims=(0,))
    return lax.scatter_add(operand, ids[..., None], updates, dnums, mode=lax.GatherScatterMode.FILL_OR_DROP)


# ---- layer ops -----------------------------------------------------------------------------

def _conv2d_impl(a: od.ConvAttrs, x, w, groups: int):
    kh, kw = w.shape[2], w.shape[3]
    pads = explicit_pads(a.padding, x.shape[2:], (kh, kw), a.stride, a.dilation)
    return lax.conv_general_dilated(x, w, a.stride, pads, rhs_dilation=a.dilation,
                                    dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups,
                                    precision=PRECISION)


@jax_rule("conv2d")
def _conv2d(a: od.ConvAttrs, x, w):
    """x[N,C,H,W] * w[O,C,kh,kw] -> [N,O,H',W'] (cross-correlation) with stride, rhs dilation and padding 'same' (XLA SAME: total = max((ceil(in/s)-1)*s + (k-1)*d + 1 - in, 0), low = total//2, high = total - low), 'valid' or explicit ((top, bottom), (left, right))."""  # noqa: E501
    return _conv2d_impl(a, x, w, 1)


@jax_rule("depthwise_conv2d")
def _depthwise_conv2d(a: od.ConvAttrs, x, w):
    """x[N,C,H,W] * w[C*m,1,kh,kw] -> [N,C*m,H',W']: convolution with feature_group_count = C (output channel o reads input channel o // m); stride, dilation and padding as conv2d."""  # noqa: E501
    return _conv2d_impl(a, x, w, x.shape[1])


@jax_rule("dense")
def _dense(a, x, w):
    """x[..., I] @ w[I, O] -> [..., O]: a contraction of x's last dim with w's first."""
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=PRECISION)


def _along(v, x, axis: int):
    """A 1-D `v` broadcast to x's shape along `axis`."""
    return lax.broadcast_in_dim(v, x.shape, (axis % x.ndim,))


@jax_rule("bias_add")
def _bias_add(a: od.AxisAttrs, x, b):
    """x + b with the 1-D b broadcast along axis (negative axes count from the end)."""
    return x + _along(b, x, a.axis)


@jax_rule("batch_norm")
def _batch_norm(a: od.BatchNormAttrs, x, gamma, beta, running_mean=None, running_var=None):
    """Per-channel (axis 1 of NCHW or NC) y = gamma*(x-mean)/sqrt(var+eps)+beta; training: mean and biased var over all axes but 1, outputs (y, mean, var); eval: running_mean/running_var inputs, output y."""  # noqa: E501
    axes = tuple(i for i in range(x.ndim) if i != 1)
    if a.training:
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - _along(mean, x, 1)), axis=axes)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("eval-mode batch_norm needs running_mean and running_var inputs")
        mean, var = running_mean, running_var
    scale = gamma * lax.rsqrt(var + jnp.asarray(a.eps, x.dtype))
    y = (x - _along(mean, x, 1)) * _along(scale, x, 1) + _along(beta, x, 1)
    return (y, mean, var) if a.training else y


@jax_rule("random_bits")
def _random_bits(a: od.RandomAttrs, k0, k1):
    """Word 0 of JAX's threefry2x32((k0, k1), (i, salt)) per row-major flat index i, as i32 (= gir's decomposition)."""
    n = math.prod(a.shape)
    key = lax.bitcast_convert_type(jnp.stack([k0, k1]), jnp.uint32)
    counts = jnp.concatenate([jnp.arange(n, dtype=jnp.uint32), jnp.full(n, a.salt, jnp.uint32)])
    return lax.bitcast_convert_type(threefry_2x32(key, counts)[:n], jnp.int32).reshape(a.shape)


@jax_rule("layer_norm")
def _layer_norm(a: od.LayerNormAttrs, x, gamma, beta):
    """Over the last axis: y = (x-mean)/sqrt(var+eps)*gamma+beta with the biased var; gamma, beta along the last axis."""  # noqa: E501
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + jnp.asarray(a.eps, x.dtype)) * _along(gamma, x, -1) + _along(beta, x, -1)


@jax_rule("relu")
def _relu(a, x):
    """max(x, 0)."""
    return lax.max(x, jnp.zeros_like(x))


@jax_rule("relu6")
def _relu6_rule(a, x):
    """clamp(0, x, 6)."""
    return lax.clamp(jnp.asarray(0, x.dtype), x, jnp.asarray(6, x.dtype))


@jax_rule("swish")
def _swish(a, x):
    """x * sigmoid(x) (SiLU)."""
    return x * lax.logistic(x)


@jax_rule("hard_sigmoid")
def _hard_sigmoid(a, x):
    """relu6(x + 3) / 6."""
    return lax.clamp(jnp.asarray(0, x.dtype), x + jnp.asarray(3, x.dtype), jnp.asarray(6, x.dtype)) / \
        jnp.asarray(6, x.dtype)


@jax_rule("hard_swish")
def _hard_swish(a, x):
    """x * hard_sigmoid(x)."""
    return x * _hard_sigmoid(a, x)


@jax_rule("gelu")
def _gelu(a, x):
    """The tanh approximation 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))."""
    c = jnp.asarray(math.sqrt(2.0 / math.pi), x.dtype)
    return jnp.asarray(0.5, x.dtype) * x * (1 + lax.tanh(c * (x + jnp.asarray(0.044715, x.dtype) * x * x * x)))


def _pool_pads(a: od.PoolAttrs, x) -> list[tuple[int, int]]:
    return [(0, 0), (0, 0), *explicit_pads(a.padding, x.shape[2:], a.window, a.stride)]


@jax_rule("max_pool")
def _max_pool(a: od.PoolAttrs, x):
    """Max over window x window patches of NCHW's H, W with stride; padding as conv2d ('same' with dilation 1), padded cells are -inf."""  # noqa: E501
    init = np.array(-np.inf, x.dtype)
    return lax.reduce_window(x, init, lax.max, (1, 1, *a.window), (1, 1, *a.stride), _pool_pads(a, x))


@jax_rule("avg_pool")
def _avg_pool(a: od.PoolAttrs, x):
    """Mean over window x window patches of NCHW's H, W with stride and padding as max_pool; each window's sum is divided by its number of non-padded cells."""  # noqa: E501
    pads = _pool_pads(a, x)
    dims, strides = (1, 1, *a.window), (1, 1, *a.stride)
    zero = np.array(0, x.dtype)
    total = lax.reduce_window(x, zero, lax.add, dims, strides, pads)
    if all(p == (0, 0) for p in pads):
        return total / jnp.asarray(math.prod(a.window), x.dtype)
    ones = jnp.ones((1, 1, *x.shape[2:]), x.dtype)
    count = lax.reduce_window(ones, zero, lax.add, dims, strides, pads)
    return total / lax.broadcast_in_dim(count, total.shape, (0, 1, 2, 3))


@jax_rule("global_avg_pool")
def _global_avg_pool(a, x):
    """Mean over H, W: [N, C, H, W] -> [N, C]."""
    return jnp.mean(x, axis=(2, 3))


def _log_softmax(x, axis: int):
    shifted = x - jnp.max(x, axis=axis, keepdims=True)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


@jax_rule("softmax")
def _softmax(a: od.AxisAttrs, x):
    """exp(x - max) / sum(exp(x - max)) along axis (the max subtracted for stability)."""
    e = jnp.exp(x - jnp.max(x, axis=a.axis, keepdims=True))
    return e / jnp.sum(e, axis=a.axis, keepdims=True)


@jax_rule("softmax_cross_entropy")
def _softmax_cross_entropy(a: od.XentAttrs, logits, labels):
    """Scalar mean over every position of labels ([N], or [N, T] per token) of -sum_k target_k * log_softmax(logits)_k along the last axis, target = (1-ls)*onehot(labels, K) + ls/K."""  # noqa: E501
    k = logits.shape[-1]
    onehot = (labels[..., None] == lax.broadcasted_iota(labels.dtype, (k,), 0)).astype(logits.dtype)
    ls = a.label_smoothing
    target = onehot * jnp.asarray(1.0 - ls, logits.dtype) + jnp.asarray(ls / k, logits.dtype)
    return -jnp.mean(jnp.sum(target * _log_softmax(logits, -1), axis=-1))


@jax_rule("attention")
def _attention(a: od.AttentionAttrs, q, k, v):
    """q, k, v [N,T,D] split into heads [N,T,h,D/h]; per head softmax over keys of q.k^T/sqrt(D/h) (with `causal`, keys after the query's position are -inf: weight 0), times v; heads merged back to [N,T,D]."""  # noqa: E501
    n, t, d = q.shape
    h = a.heads
    dh = d // h
    qh, kh, vh = (z.reshape(n, t, h, dh) for z in (q, k, v))
    scores = jnp.einsum("nqhd,nkhd->nhqk", qh, kh, precision=PRECISION) / jnp.asarray(math.sqrt(dh), q.dtype)
    if a.causal:
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, jnp.asarray(-jnp.inf, scores.dtype))
    w = _softmax(od.AxisAttrs(-1), scores)
    out = jnp.einsum("nhqk,nkhd->nqhd", w, vh, precision=PRECISION)
    return out.reshape(n, t, d)


# ---- graphs ---------------------------------------------------------------------------------

def _symbols_in(v: Any, out: set) -> None:
    if isinstance(v, TensorType):
        out |= v.free_symbols
    elif isinstance(v, sympy.Basic):
        out |= v.free_symbols
    elif isinstance(v, (tuple, list)):
        for x in v:
            _symbols_in(x, out)
    elif attrs.has(type(v)):
        for f in attrs.fields(type(v)):
            _symbols_in(getattr(v, f.name), out)


def check_static(graph: Graph) -> None:
    """Raises ValueError naming the symbols if any shape or attribute of `graph` is symbolic."""
    syms: set = set()
    for v in graph.inputs:
        _symbols_in(v.type, syms)
    for n in graph.nodes:
        _symbols_in(n.attrs, syms)
        for v in n.outputs:
            _symbols_in(v.type, syms)
    if syms:
        names = ", ".join(sorted(map(str, syms)))
        raise ValueError(f"graph {graph.name!r} has symbolic shapes (symbols {names}); bind them with "
                         f"gir.shapes.specialize(graph, binding) before running it with JAX")


def _check_inputs(graph: Graph, inputs: Mapping[str, Any]) -> None:
    want = {v.name: v for v in graph.inputs}
    missing = [name for name in want if name not in inputs]
    extra = sorted(name for name in inputs if name not in want)
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing input" + ("s " if len(missing) > 1 else " ") + ", ".join(map(repr, missing)))
        if extra:
            parts.append("unexpected input" + ("s " if len(extra) > 1 else " ") + ", ".join(map(repr, extra)))
        raise ValueError(f"graph {graph.name!r}: {'; '.join(parts)}")
    for name, v in want.items():
        arr = inputs[name]
        shape = tuple(np.shape(arr))
        expect = tuple(v.type.shape)
        if shape != expect:
            raise ValueError(f"graph {graph.name!r}: input {name!r} has shape {list(shape)}, the graph expects "
                             f"{list(expect)}")
        dtype = np.dtype(arr.dtype) if hasattr(arr, "dtype") else np.asarray(arr).dtype
        if dtype != np_dtype(v.type.dtype):
            raise ValueError(f"graph {graph.name!r}: input {name!r} has dtype {dtype}, the graph expects "
                             f"{np_dtype(v.type.dtype)} ({v.type.dtype})")


def _coerce_scalars(graph: Graph, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Python scalars given for rank-0 inputs become arrays of the input's dtype when their kind fits."""
    out = dict(inputs)
    for v in graph.inputs:
        x = out.get(v.name)
        if isinstance(x, (bool, int, float)) and not v.type.shape:
            kind = np_dtype(v.type.dtype).kind
            fits = {"b": (bool,), "i": (int,), "f": (int, float), "V": (int, float)}.get(kind, ())
            if isinstance(x, fits) and not (kind != "b" and isinstance(x, bool)):
                out[v.name] = np.asarray(x, np_dtype(v.type.dtype))
    return out


_NODE_JIT: dict[str, tuple[Callable, Callable]] = {}


def _per_node_jit(op: str) -> Callable:
    """The op's rule under jax.jit with static attrs: `evaluate` compiles each distinct node (op, attrs,
    input shapes) once instead of every primitive inside its rule separately."""
    rule = JAX_RULES[op]
    hit = _NODE_JIT.get(op)
    if hit is None or hit[0] is not rule:
        hit = _NODE_JIT[op] = (rule, jax.jit(rule, static_argnums=0))
    return hit[1]


def _runner(graph: Graph, node_jit: bool) -> Callable[[Mapping[str, Any]], dict[str, jax.Array]]:
    check_static(graph)
    missing = sorted({n.op for n in graph.nodes} - set(JAX_RULES))
    if missing:
        raise ValueError(f"no JAX rule for op{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    nodes = graph.live_nodes()

    def run(inputs: Mapping[str, Any]) -> dict[str, jax.Array]:
        _check_inputs(graph, inputs)
        env: dict[int, Any] = {v.id: jnp.asarray(inputs[v.name]) for v in graph.inputs}
        for node in nodes:
            rule = _per_node_jit(node.op) if node_jit else JAX_RULES[node.op]
            out = rule(node.attrs, *[env[v.id] for v in node.inputs])
            outs = out if isinstance(out, tuple) else (out,)
            if len(outs) != len(node.outputs):
                raise RuntimeError(f"JAX rule of {node.op} ({node.loc}) gave {len(outs)} outputs, the node has "
                                   f"{len(node.outputs)}")
            for v, x in zip(node.outputs, outs):
                if tuple(x.shape) != tuple(v.type.shape) or np.dtype(x.dtype) != np_dtype(v.type.dtype):
                    raise RuntimeError(f"JAX rule of {node.op} ({node.loc}) gave {x.dtype}{list(x.shape)}, the "
                                       f"node's type is {v.type}")
                env[v.id] = x
        return {name: env[v.id] for name, v in graph.outputs.items()}

    run.__name__ = f"gir_{graph.name}"
    return run


def as_jax_function(graph: Graph) -> Callable[[Mapping[str, Any]], dict[str, jax.Array]]:
    """The graph as a pure, traceable function: input arrays by name -> output arrays by name (every
    graph input is required). It checks input names, shapes and dtypes (at trace time under jit);
    use it with jax.jit, jax.vjp and friends."""
    return _runner(graph, node_jit=False)


def evaluate(graph: Graph, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Runs a static-shape graph node by node (no whole-graph jit); returns every output by name as a
    NumPy array. Each node's rule is compiled on its own (cached per op, attrs and shapes)."""
    fn = _runner(graph, node_jit=True)
    out = fn(_coerce_scalars(graph, inputs))
    return {name: np.asarray(x) for name, x in out.items()}


def compile_jax(graph: Graph) -> Callable[[Mapping[str, Any]], dict[str, np.ndarray]]:
    """`evaluate` under jax.jit: traced and compiled on the first call, reused after.

    The returned callable checks its inputs, then runs the compiled graph; its `jitted` attribute is
    the underlying jitted function, which takes and returns JAX arrays (no copies to the host)."""
    fn = as_jax_function(graph)
    jitted = jax.jit(fn)

    def call(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        inputs = _coerce_scalars(graph, inputs)
        _check_inputs(graph, inputs)
        return {name: np.asarray(x) for name, x in jitted(dict(inputs)).items()}

    call.jitted = jitted  # type: ignore[attr-defined]
    call.__name__ = f"gir_{graph.name}_jit"
    return call
