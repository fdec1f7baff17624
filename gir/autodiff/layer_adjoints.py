"""Adjoints of the layer ops: closed forms where the reference system has one (conv, depthwise,
three-term BN, max-pool by compare/select, ReLU/ReLU6 by compare/select), otherwise the adjoint of
the op's decomposition into primitives. ReLU and ReLU6 have derivative 0 at their kinks."""
from __future__ import annotations

import math

from gir.autodiff.adjoints import Ct, _bcast_back, _none_if_no_ct, conv_input_grad, conv_weight_grad, \
    window_select_grad
from gir.autodiff.registry import adjoint
from gir.autodiff.reverse import backprop
from gir.ir import opdefs as od
from gir.ir.graph import Node, Value
from gir.lower.decompose import DECOMPOSITIONS, convolution_attrs, pool_pads, reciprocal
from gir.shapes.emit import Emitter


@adjoint("conv2d")
@_none_if_no_ct
def _conv2d(e: Emitter, node: Node, ct: Value, x: Value, w: Value):
    conv = convolution_attrs(node.attrs, x, w, 1)
    return conv_input_grad(e, ct, x, w, conv), conv_weight_grad(e, ct, x, w, conv)


@adjoint("depthwise_conv2d")
@_none_if_no_ct
def _depthwise(e: Emitter, node: Node, ct: Value, x: Value, w: Value):
    conv = convolution_attrs(node.attrs, x, w, x.type.shape[1])
    return conv_input_grad(e, ct, x, w, conv), conv_weight_grad(e, ct, x, w, conv)


@adjoint("dense")
@_none_if_no_ct
def _dense(e: Emitter, node: Node, ct: Value, x: Value, w: Value):
    """dx = ct @ w^T, dw = x^T @ ct summed over every leading dim; no transposes."""
    r = x.type.rank
    gx = e.op("dot_general", ct, w, attrs=od.DotGeneralAttrs(lhs_contract=(r - 1,), rhs_contract=(1,)))
    lead = tuple(range(r - 1))
    gw = e.op("dot_general", x, ct, attrs=od.DotGeneralAttrs(lhs_contract=lead, rhs_contract=lead))
    return gx, gw


@adjoint("bias_add")
@_none_if_no_ct
def _bias_add(e: Emitter, node: Node, ct: Value, x: Value, b: Value):
    axis = node.attrs.axis % x.type.rank
    return ct, e.reduce(ct, "sum", tuple(d for d in range(x.type.rank) if d != axis))


@adjoint("relu")
@_none_if_no_ct
def _relu(e: Emitter, node: Node, ct: Value, x: Value):
    """The mask from the output (y > 0 exactly where x > 0), so the input need not be kept."""
    y = node.out
    zero = e.zeros(y)
    return (e.select(e.compare(y, zero, "GT"), ct, zero),)


@adjoint("relu6")
@_none_if_no_ct
def _relu6(e: Emitter, node: Node, ct: Value, x: Value):
    """The mask from the output (0 < y < 6 exactly where 0 < x < 6): the pre-activation (a BN's
    output in MobileNetV2) is then never stored for the backward pass."""
    y = node.out
    zero = e.zeros(y)
    inside = e.select(e.compare(y, e.const(6.0, y), "LT"), ct, zero)
    return (e.select(e.compare(y, zero, "GT"), inside, zero),)


@adjoint("global_avg_pool")
@_none_if_no_ct
def _global_avg_pool(e: Emitter, node: Node, ct: Value, x: Value):
    n, c, h, w = x.type.shape
    return (e.bcast(e.mul_scalar(ct, reciprocal(h * w)), x.type.shape, (0, 1)),)


@adjoint("max_pool")
@_none_if_no_ct
def _max_pool(e: Emitter, node: Node, ct: Value, x: Value):
    a: od.PoolAttrs = node.attrs
    return (window_select_grad(e, ct, x, node.out, "max", (1, 1) + a.window, (1, 1) + a.stride, pool_pads(a, x)),)


@adjoint("softmax")
@_none_if_no_ct
def _softmax(e: Emitter, node: Node, ct: Value, x: Value):
    """y * (ct - sum(ct * y)) along the axis."""
    y, axis = node.out, node.attrs.axis % x.type.rank
    s = _bcast_back(e, e.reduce(e.mul(ct, y), "sum", (axis,)), y, (axis,))
    return (e.mul(y, e.sub(ct, s)),)


@adjoint("batch_norm")
def _batch_norm(e: Emitter, node: Node, cts: tuple[Ct, ...]):
    a: od.BatchNormAttrs = node.attrs
    return (_batch_norm_train if a.training else _batch_norm_eval)(e, node, cts)


def _batch_norm_train(e: Emitter, node: Node, cts: tuple[Ct, ...]):
    """The three-term backward, per channel over the M = N*H*W values:
    dx = gamma * istd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)), plus the terms of
    cotangents of the returned batch mean and (biased) variance."""
    x, gamma, beta = node.inputs
    y, mean, var = node.outputs
    dy, dmean, dvar = cts
    stats = tuple(d for d in range(x.type.rank) if d != 1)
    m = math.prod(x.type.shape[d] for d in stats)
    inv_m = reciprocal(m)

    def per_channel(v: Value) -> Value:
        return e.bcast(v, x.type.shape, (1,))

    xc = e.sub(x, per_channel(mean))
    gx = gg = gb = None
    if dy is not None:
        # xhat = xc * istd appears only through per-channel factors: no full-size xhat is formed
        istd = e.op("rsqrt", e.add(var, e.const(node.attrs.eps, var)))
        gb = e.reduce(dy, "sum", stats)
        gg = e.mul(e.reduce(e.mul(dy, xc), "sum", stats), istd)
        inner = e.sub(e.sub(dy, e.mul_scalar(per_channel(gb), inv_m)),
                      e.mul(xc, per_channel(e.mul_scalar(e.mul(gg, istd), inv_m))))
        gx = e.mul(inner, per_channel(e.mul(gamma, istd)))
    if dmean is not None:
        t = per_channel(e.mul_scalar(dmean, inv_m))
        gx = t if gx is None else e.add(gx, t)
    if dvar is not None:
        t = e.mul(xc, per_channel(e.mul_scalar(dvar, 2 * inv_m)))
        gx = t if gx is None else e.add(gx, t)
    return gx, gg, gb


def _batch_norm_eval(e: Emitter, node: Node, cts: tuple[Ct, ...]):
    """y = x * scale + shift with scale = gamma * r, r = rsqrt(var + eps), shift = beta - mean * scale."""
    (dy,) = cts
    if dy is None:
        return (None,) * 5
    x, gamma, beta, mean, var = node.inputs
    stats = tuple(d for d in range(x.type.rank) if d != 1)
    r = e.op("rsqrt", e.add(var, e.const(node.attrs.eps, var)))
    scale = e.mul(gamma, r)
    gb = e.reduce(dy, "sum", stats)
    dxc = e.reduce(e.mul(dy, e.sub(x, e.bcast(mean, x.type.shape, (1,)))), "sum", stats)
    gx = e.mul(dy, e.bcast(scale, x.type.shape, (1,)))
    gvar = e.mul(e.mul_scalar(e.mul(dxc, gamma), -0.5), e.mul(r, e.mul(r, r)))
    return gx, e.mul(dxc, r), gb, e.neg(e.mul(gb, scale)), gvar


RECOMPUTED = frozenset({"gelu"})
"""Layers whose backward recomputes their intermediates from the input, read through an optimization barrier. Merged
with the forward's (by gir's CSE, or IREE's), the five values GELU's tanh form makes were each written out by the
forward's matmul dispatch and read back (7 outputs instead of 2): ViT-Tiny's step 4.5% and char_gpt's 8% faster
this way. Swish and hard swish, which keep one or two such values, made EfficientNet-B0 and MobileNetV3 a third slower
(docs/performance.md)."""


def _through_decomposition(e: Emitter, node: Node, cts: tuple[Ct, ...]):
    """Recompute the op as primitives (marked as this node's adjoint) and run the reverse pass over them."""
    ins = tuple(e.op("optimization_barrier", v) for v in node.inputs) if node.op in RECOMPUTED else node.inputs
    start = len(e.graph.nodes)
    res = DECOMPOSITIONS[node.op](e, node.attrs, *ins)
    outs = res if isinstance(res, tuple) else (res,)
    seeds = {o: ct for o, ct in zip(outs, cts) if ct is not None}
    back = backprop(e.graph, e.graph.nodes[start:], seeds, ins, owner=node, constraints=e.constraints)
    # a value passed in several positions (attention(x, x, x)) has one total gradient: give it once
    return tuple(back.grads.get(w) if node.inputs.index(v) == i else None
                 for i, (v, w) in enumerate(zip(node.inputs, ins)))


for _op in ("layer_norm", "swish", "hard_swish", "hard_sigmoid", "gelu", "avg_pool", "softmax_cross_entropy", "attention"):
    adjoint(_op)(_through_decomposition)
