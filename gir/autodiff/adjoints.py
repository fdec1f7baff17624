"""Adjoints of the primitive ops. Subgradient conventions at non-differentiable points:
maximum/minimum split a tie evenly between the operands, reduce max/min and reduce_window max/min
split the cotangent evenly among the tied maxima (minima), abs and clamp give 0 at the kinks."""
from __future__ import annotations

import itertools
import math
from typing import Any, Optional

import sympy

from gir.autodiff.registry import AdjointError, adjoint
from gir.ir import opdefs as od
from gir.ir.graph import Node, Value
from gir.ir.types import Dim, normalize_dim
from gir.shapes.emit import Emitter

Ct = Optional[Value]


def _dim(e: Any) -> Dim:
    return normalize_dim(sympy.sympify(e))


def _none_if_no_ct(fn):
    """Most adjoints have one output: skip the rule when it has no cotangent."""
    def wrapped(e: Emitter, node: Node, cts: tuple[Ct, ...]):
        if cts[0] is None:
            return (None,) * len(node.inputs)
        return fn(e, node, cts[0], *node.inputs)
    wrapped.__doc__ = fn.__doc__
    return wrapped


# ---- elementwise -------------------------------------------------------------------------

@adjoint("add")
@_none_if_no_ct
def _add(e: Emitter, node: Node, ct: Value, x: Value, y: Value):
    return ct, ct


@adjoint("subtract")
@_none_if_no_ct
def _subtract(e: Emitter, node: Node, ct: Value, x: Value, y: Value):
    return ct, e.neg(ct)


@adjoint("multiply")
@_none_if_no_ct
def _multiply(e: Emitter, node: Node, ct: Value, x: Value, y: Value):
    return e.mul(ct, y), e.mul(ct, x)


@adjoint("divide")
@_none_if_no_ct
def _divide(e: Emitter, node: Node, ct: Value, x: Value, y: Value):
    gx = e.div(ct, y)
    return gx, e.neg(e.mul(gx, node.out))


@adjoint("maximum", "minimum")
@_none_if_no_ct
def _max_min(e: Emitter, node: Node, ct: Value, x: Value, y: Value):
    """The operand that wins gets the cotangent; a tie gives each half."""
    wins = "GT" if node.op == "maximum" else "LT"
    half = e.mul_scalar(ct, 0.5)
    zero = e.zeros(ct)
    tie = e.compare(x, y, "EQ")
    gx = e.select(e.compare(x, y, wins), ct, e.select(tie, half, zero))
    gy = e.select(e.compare(y, x, wins), ct, e.select(tie, half, zero))
    return gx, gy


@adjoint("negate")
@_none_if_no_ct
def _negate(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.neg(ct),)


@adjoint("exp")
@_none_if_no_ct
def _exp(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.mul(ct, node.out),)


@adjoint("log")
@_none_if_no_ct
def _log(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.div(ct, x),)


@adjoint("tanh")
@_none_if_no_ct
def _tanh(e: Emitter, node: Node, ct: Value, x: Value):
    y = node.out
    return (e.mul(ct, e.sub(e.const(1.0, y), e.mul(y, y))),)


@adjoint("logistic")
@_none_if_no_ct
def _logistic(e: Emitter, node: Node, ct: Value, x: Value):
    y = node.out
    return (e.mul(ct, e.mul(y, e.sub(e.const(1.0, y), y))),)


@adjoint("sqrt")
@_none_if_no_ct
def _sqrt(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.div(e.mul_scalar(ct, 0.5), node.out),)


@adjoint("rsqrt")
@_none_if_no_ct
def _rsqrt(e: Emitter, node: Node, ct: Value, x: Value):
    """d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 rsqrt(x) / x."""
    return (e.div(e.mul(e.mul_scalar(ct, -0.5), node.out), x),)


@adjoint("abs")
@_none_if_no_ct
def _abs(e: Emitter, node: Node, ct: Value, x: Value):
    zero = e.zeros(x)
    return (e.select(e.compare(x, zero, "GT"), ct, e.select(e.compare(x, zero, "LT"), e.neg(ct), zero)),)


@adjoint("sine")
@_none_if_no_ct
def _sine(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.mul(ct, e.op("cosine", x)),)


@adjoint("cosine")
@_none_if_no_ct
def _cosine(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.neg(e.mul(ct, e.op("sine", x))),)


@adjoint("select")
@_none_if_no_ct
def _select(e: Emitter, node: Node, ct: Value, p: Value, a: Value, b: Value):
    zero = e.zeros(ct)
    if p.type.rank == 0:
        p = e.bcast(p, ct.type.shape, ())
    return None, e.select(p, ct, zero), e.select(p, zero, ct)


def _sum_to(e: Emitter, g: Value, like: Value) -> Value:
    """A cotangent of `like`'s shape: a scalar operand broadcast by the op gets the sum."""
    return g if like.type.rank else e.reduce(g, "sum", tuple(range(g.type.rank)))


@adjoint("clamp")
@_none_if_no_ct
def _clamp(e: Emitter, node: Node, ct: Value, lo: Value, x: Value, hi: Value):
    """x gets the cotangent strictly inside (lo, hi); a bound gets it where x is beyond it."""
    lo_b = e.bcast(lo, x.type.shape, ()) if lo.type.rank == 0 else lo
    hi_b = e.bcast(hi, x.type.shape, ()) if hi.type.rank == 0 else hi
    zero = e.zeros(ct)
    gx = e.select(e.compare(x, lo_b, "GT"), e.select(e.compare(x, hi_b, "LT"), ct, zero), zero)
    glo = _sum_to(e, e.select(e.compare(x, lo_b, "LT"), ct, zero), lo)
    ghi = _sum_to(e, e.select(e.compare(x, hi_b, "GT"), ct, zero), hi)
    return glo, gx, ghi


@adjoint("convert")
@_none_if_no_ct
def _convert(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.convert(ct, x.type.dtype) if x.type.dtype.is_float else None,)


# ---- shape ops ---------------------------------------------------------------------------

@adjoint("broadcast_in_dim")
@_none_if_no_ct
def _broadcast(e: Emitter, node: Node, ct: Value, x: Value):
    """Sum over the dims the broadcast created or stretched from size 1."""
    a: od.BroadcastAttrs = node.attrs
    kept = {d for i, d in enumerate(a.dims) if x.type.shape[i] == a.shape[d]}
    summed = tuple(d for d in range(len(a.shape)) if d not in kept)
    g = e.reduce(ct, "sum", summed) if summed else ct
    return (e.reshape(g, x.type.shape),)


@adjoint("reshape")
@_none_if_no_ct
def _reshape(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.reshape(ct, x.type.shape),)


@adjoint("transpose")
@_none_if_no_ct
def _transpose(e: Emitter, node: Node, ct: Value, x: Value):
    perm = node.attrs.perm
    return (e.transpose(ct, tuple(perm.index(i) for i in range(len(perm)))),)


@adjoint("reverse")
@_none_if_no_ct
def _reverse(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.op("reverse", ct, attrs=node.attrs),)


@adjoint("optimization_barrier")
@_none_if_no_ct
def _optimization_barrier(e: Emitter, node: Node, ct: Value, x: Value):
    return (e.op("optimization_barrier", ct),)


@adjoint("slice")
@_none_if_no_ct
def _slice(e: Emitter, node: Node, ct: Value, x: Value):
    """Zeros around (and between, for strides) the sliced elements."""
    a: od.SliceAttrs = node.attrs
    return (_place_strided(e, ct, x.type.shape, a.start, a.strides),)


@adjoint("pad")
@_none_if_no_ct
def _pad(e: Emitter, node: Node, ct: Value, x: Value, v: Value):
    """The operand's elements are a strided slice of the cotangent; the padding value gets the rest."""
    a: od.PadAttrs = node.attrs
    limit = tuple(_dim(lo + (d - 1) * (i + 1) + 1) for lo, d, i in zip(a.low, x.type.shape, a.interior))
    gx = e.op("slice", ct, attrs=od.SliceAttrs(a.low, limit, tuple(i + 1 for i in a.interior)))
    every = tuple(range(ct.type.rank))
    gv = e.sub(e.reduce(ct, "sum", every), e.reduce(gx, "sum", every))
    return gx, gv


@adjoint("concatenate")
@_none_if_no_ct
def _concatenate(e: Emitter, node: Node, ct: Value, *xs: Value):
    dim = node.attrs.dim
    out, start = [], 0
    for x in xs:
        stop = _dim(start + x.type.shape[dim])
        begin = tuple(start if i == dim else 0 for i in range(ct.type.rank))
        end = tuple(stop if i == dim else d for i, d in enumerate(ct.type.shape))
        out.append(e.op("slice", ct, attrs=od.SliceAttrs(begin, end, (1,) * ct.type.rank)))
        start = stop
    return tuple(out)


# ---- contractions ------------------------------------------------------------------------

def _free(rank: int, *used: tuple[int, ...]) -> list[int]:
    taken = set(itertools.chain(*used))
    return [d for d in range(rank) if d not in taken]


@adjoint("take")
@_none_if_no_ct
def _take(e: Emitter, node: Node, ct: Value, table: Value, ids: Value):
    """The cotangent rows summed into the rows they were taken from (a scatter-add); integer ids get none."""
    return e.op("scatter_add", e.zeros(table), ids, ct), None


@adjoint("scatter_add")
@_none_if_no_ct
def _scatter_add(e: Emitter, node: Node, ct: Value, operand: Value, ids: Value, updates: Value):
    """The operand's cotangent passes through; each update gets the cotangent row it was added to."""
    return ct, None, e.op("take", ct, ids)


@adjoint("dot_general")
@_none_if_no_ct
def _dot_general(e: Emitter, node: Node, ct: Value, x: Value, y: Value):
    """ct is [batch, x free, y free]; contract it with the other operand over that operand's free
    dims, then permute the result back into the operand's layout. A batched product whose result would need that
    permutation is written the other way round (the other operand first) where that gives the layout itself: IREE
    folds a transpose after a batched matmul into it and ran attention's dV 3x slower (docs/performance.md)."""
    a: od.DotGeneralAttrs = node.attrs
    nb = len(a.lhs_batch)
    xf, yf = _free(x.type.rank, a.lhs_batch, a.lhs_contract), _free(y.type.rank, a.rhs_batch, a.rhs_contract)
    ct_xf = tuple(range(nb, nb + len(xf)))
    ct_yf = tuple(range(nb + len(xf), nb + len(xf) + len(yf)))
    ct_batch = tuple(range(nb))

    def back(other: Value, other_batch, other_free, ct_free, contract_self, contract_other, self_batch, self_free,
             rank: int) -> Value:
        contracted = [contract_self[contract_other.index(c)] for c in sorted(contract_other)]
        # dot(ct, other) is [batch, ct's remaining free dims (= this operand's free), other's contracted dims]
        layout = [*self_batch, *self_free, *contracted]
        if nb and layout != list(range(rank)) and [*self_batch, *contracted, *self_free] == list(range(rank)):
            return e.op("dot_general", other, ct, attrs=od.DotGeneralAttrs(other_batch, ct_batch, other_free, ct_free))
        g = e.op("dot_general", ct, other, attrs=od.DotGeneralAttrs(ct_batch, other_batch, ct_free, other_free))
        return e.transpose(g, tuple(layout.index(d) for d in range(rank)))

    gx = back(y, a.rhs_batch, tuple(yf), ct_yf, a.lhs_contract, a.rhs_contract, a.lhs_batch, xf, x.type.rank)
    gy = back(x, a.lhs_batch, tuple(xf), ct_xf, a.rhs_contract, a.lhs_contract, a.rhs_batch, yf, y.type.rank)
    return gx, gy


def _transposed_pads(sizes, outs, extents, strides, padding) -> tuple[tuple[Dim, Dim], ...]:
    """Edge pads that make a stride-1 window of `extent` slid over the stride-dilated output give back
    the input size: (extent - 1 - lo, size - (out - 1) * stride - 1 + lo) per dim."""
    return tuple((_dim(k - 1 - lo), _dim(size - (out - 1) * s - 1 + lo))
                 for size, out, k, s, (lo, _) in zip(sizes, outs, extents, strides, padding))


def _place_strided(e: Emitter, v: Value, shape, start, strides) -> Value:
    """Zeros of `shape` with v's elements at start, start + stride, ...: the adjoint of a strided slice."""
    high = tuple(_dim(d - (lo + (n - 1) * s + 1)) for d, lo, n, s in zip(shape, start, v.type.shape, strides))
    return e.op("pad", v, e.scalar(0.0, v.type.dtype), attrs=od.PadAttrs(start, high, tuple(s - 1 for s in strides)))


def conv_input_grad(e: Emitter, ct: Value, x: Value, w: Value, a: od.ConvolutionAttrs) -> Value:
    """The reversed kernel, with in/out features swapped, slid over the stride-dilated cotangent.
    A full conv swaps features with one transpose; a depthwise kernel [C,1,k,k] needs none."""
    o, i = w.type.shape[:2]
    groups = a.feature_group_count
    if groups == 1:
        wt = e.transpose(w, (1, 0, 2, 3))
    elif i == 1 and o == groups:
        wt = w
    else:  # [O, I/G, k..] -> [G, O/G, I/G, k..] -> [G, I/G, O/G, k..] -> [I, O/G, k..]
        k = tuple(w.type.shape[2:])
        wt = e.reshape(w, (groups, o // groups, i) + k)
        wt = e.reshape(e.transpose(wt, (0, 2, 1, 3, 4)), (groups * i, o // groups) + k)
    wr = e.op("reverse", wt, attrs=od.ReverseAttrs((2, 3)))
    extents = [(k - 1) * d + 1 for k, d in zip(w.type.shape[2:], a.rhs_dilation)]
    pads = _transposed_pads(x.type.shape[2:], ct.type.shape[2:], extents, a.window_strides, a.padding)
    return e.op("convolution", ct, wr, attrs=od.ConvolutionAttrs(
        window_strides=(1, 1), padding=pads, lhs_dilation=a.window_strides, rhs_dilation=a.rhs_dilation,
        feature_group_count=groups))


def conv_weight_grad(e: Emitter, ct: Value, x: Value, w: Value, a: od.ConvolutionAttrs) -> Value:
    """Correlate the input with the cotangent over the batch, by dimension numbers (no transposes):
    input features act as the batch, the batch as features; groups become batch groups."""
    pads = []
    for size, out, k, s, d, (lo, _) in zip(x.type.shape[2:], ct.type.shape[2:], w.type.shape[2:],
                                          a.window_strides, a.rhs_dilation, a.padding):
        eff = (k - 1) * d + 1
        pads.append((lo, _dim(eff + (out - 1) * s - size - lo)))
    return e.op("convolution", x, ct, attrs=od.ConvolutionAttrs(
        window_strides=a.rhs_dilation, padding=tuple(pads), rhs_dilation=a.window_strides,
        batch_group_count=a.feature_group_count, lhs_layout="CNHW", rhs_layout="IOHW", out_layout="CNHW"))


@adjoint("convolution")
@_none_if_no_ct
def _convolution(e: Emitter, node: Node, ct: Value, x: Value, w: Value):
    a: od.ConvolutionAttrs = node.attrs
    if (a.lhs_layout, a.rhs_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW") or a.batch_group_count != 1 \
            or any(d != 1 for d in a.lhs_dilation):
        raise AdjointError("the adjoint of convolution supports NCHW/OIHW layouts without lhs dilation or "
                           "batch groups (the forms conv2d and depthwise_conv2d produce)")
    for k, d, (lo, hi) in zip(w.type.shape[2:], a.rhs_dilation, a.padding):
        if isinstance(lo, int) and isinstance(hi, int) and max(lo, hi) > (k - 1) * d:
            raise AdjointError(f"the adjoint of convolution needs padding at most the kernel extent - 1 "
                               f"({(k - 1) * d}), got {(lo, hi)}")
    return conv_input_grad(e, ct, x, w, a), conv_weight_grad(e, ct, x, w, a)


# ---- reductions --------------------------------------------------------------------------

def _bcast_back(e: Emitter, r: Value, like: Value, dims: tuple[int, ...]) -> Value:
    """A reduction's result broadcast back over the reduced dims."""
    kept = tuple(d for d in range(like.type.rank) if d not in dims)
    return e.bcast(r, like.type.shape, kept)


@adjoint("reduce")
@_none_if_no_ct
def _reduce(e: Emitter, node: Node, ct: Value, x: Value):
    a: od.ReduceAttrs = node.attrs
    g = _bcast_back(e, ct, x, a.dims)
    if a.kind == "sum":
        return (g,)
    hit = e.compare(x, _bcast_back(e, node.out, x, a.dims), "EQ")
    ones = e.select(hit, e.const(1.0, x), e.zeros(x))
    count = _bcast_back(e, e.reduce(ones, "sum", a.dims), x, a.dims)
    return (e.div(e.mul(g, ones), count),)


def window_sum_grad(e: Emitter, ct: Value, x: Value, window, strides, padding) -> Value:
    """Adjoint of a windowed sum: every input element collects the cotangents of the windows that
    hold it: the stride-dilated, edge-padded cotangent summed over windows."""
    pads = _transposed_pads(x.type.shape, ct.type.shape, window, strides, padding)
    spread = e.op("pad", ct, e.scalar(0.0, ct.type.dtype), attrs=od.PadAttrs(
        tuple(lo for lo, _ in pads), tuple(hi for _, hi in pads), tuple(s - 1 for s in strides)))
    return e.op("reduce_window", spread, attrs=od.ReduceWindowAttrs(
        "sum", tuple(window), (1,) * len(window), ((0, 0),) * len(window)))


def window_select_grad(e: Emitter, ct: Value, x: Value, y: Value, kind: str, window, strides, padding) -> Value:
    """Adjoint of a windowed max (min) by compare/select, never select_and_scatter: for each offset
    in the window, the strided slice of the padded input that sits at that offset is compared with
    the result; each window's cotangent is split evenly among its tied maxima, and the shares are
    put back in place by interior padding."""
    extreme = -math.inf if kind == "max" else math.inf
    xp = e.op("pad", x, e.scalar(extreme, x.type.dtype), attrs=od.PadAttrs(
        tuple(lo for lo, _ in padding), tuple(hi for _, hi in padding), (0,) * x.type.rank))
    offsets = list(itertools.product(*(range(k) for k in window)))
    limits = [tuple(_dim(o + (n - 1) * s + 1) for o, n, s in zip(off, y.type.shape, strides)) for off in offsets]
    one, zero = e.const(1.0, y), e.zeros(y)
    hits = [e.compare(e.op("slice", xp, attrs=od.SliceAttrs(off, lim, tuple(strides))), y, "EQ")
            for off, lim in zip(offsets, limits)]
    count = None
    for h in hits:
        c = e.select(h, one, zero)
        count = c if count is None else e.add(count, c)
    share = e.div(ct, count)
    total = None
    for off, h in zip(offsets, hits):
        placed = _place_strided(e, e.select(h, share, zero), xp.type.shape, off, strides)
        total = placed if total is None else e.add(total, placed)
    start = tuple(lo for lo, _ in padding)
    stop = tuple(_dim(lo + d) for (lo, _), d in zip(padding, x.type.shape))
    return e.op("slice", total, attrs=od.SliceAttrs(start, stop, (1,) * x.type.rank))


@adjoint("reduce_window")
@_none_if_no_ct
def _reduce_window(e: Emitter, node: Node, ct: Value, x: Value):
    a: od.ReduceWindowAttrs = node.attrs
    if a.kind == "sum":
        return (window_sum_grad(e, ct, x, a.window, a.strides, a.padding),)
    return (window_select_grad(e, ct, x, node.out, a.kind, a.window, a.strides, a.padding),)
