"""Depthwise convolutions on small maps as matmuls with a 0/1 spatial matrix (IREE only, before conv_forms).

conv_forms' per-tap form reads each kernel tap as a slice of the padded input. IREE copies every such slice in a
dispatch of its own, and each tap offset is a different executable: on small maps the step is then mostly dispatch
overhead, and compiling EfficientNetV2-S spends a quarter of its executables on these copies and per-tap sums.
Here a tap's whole story is a constant matrix P[t, out position, in position] (1 where tap t of output position o
reads input position i; stride, dilation, padding and the input dilation of a gradient all live in it, so no pad
and no slice remain), built from iotas:
- forward conv or input gradient: y[c, n, o] = sum over i of x[c, n, i] * K[c, o, i], K = w[c, t] @ P;
- weight gradient: dw[c, t] = sum over o, i of (x[c, :, i] . ct[c, :, o]) * P[t, o, i].
Both are dot_generals batched over the channels; the work is in_positions / taps times the per-tap form's, so the
pass takes maps with at most SPATIAL_RATIO * taps positions."""
from __future__ import annotations

import math

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Value
from gir.ir.types import TensorType
from gir.rewrite.conv_forms import _is_depthwise, _is_depthwise_weight_grad, _spatial, _static, _weight_grad_axes
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

SPATIAL_RATIO = 2
"""The largest in positions / taps ratio taken: a 3x3 kernel on maps up to 4x4, 5x5 up to 7x7, 7x7 up to 9x9
(docs/performance.md)."""


def _spatial_matrix(e: Emitter, in_hw: tuple[int, int], out_hw: tuple[int, int], k_hw: tuple[int, int],
                    a: od.ConvolutionAttrs, stride: tuple[int, ...], dilation: tuple[int, ...], dtype: DType) -> Value:
    """P[ki, kj, oh, ow, ih, iw] = 1 where tap (ki, kj) at output (oh, ow) reads input (ih, iw), else 0: the
    padded (and input-dilated) coordinates o * stride + k * dilation and i * lhs_dilation + pad_lo agree."""
    shape = (*k_hw, *out_hw, *in_hw)
    t = TensorType(shape, DType.i32)
    iota = [e.op("iota", attrs=od.IotaAttrs(d, t)) for d in range(6)]
    times = lambda v, k: v if k == 1 else e.mul(v, e.const(k, t))  # noqa: E731
    agree = []
    for axis in (0, 1):
        read = e.add(times(iota[2 + axis], stride[axis]), times(iota[axis], dilation[axis]))
        at = times(iota[4 + axis], a.lhs_dilation[axis])
        at = at if a.padding[axis][0] == 0 else e.add(at, e.const(a.padding[axis][0], t))
        agree.append(e.compare(read, at, "EQ"))
    ft = TensorType(shape, dtype)
    return e.select(agree[0], e.select(agree[1], e.const(1.0, ft), e.const(0.0, ft)), e.const(0.0, ft))


def _small(in_hw: tuple[int, ...], k_hw: tuple[int, ...]) -> bool:
    return math.prod(in_hw) <= SPATIAL_RATIO * math.prod(k_hw)


def _static_ints(a: od.ConvolutionAttrs) -> bool:
    return all(isinstance(p, int) for pair in a.padding for p in pair)


def _depthwise_as_spatial_matmul(e: Emitter, m: Match) -> Value | None:
    """y = x times K over the input positions, batched over channels; K[c, o, i] = sum over t of w[c, t] P[t, o, i]."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    if not _static(x, w, out) or not _static_ints(a):
        return None
    c_ax, n_ax, sp = a.lhs_layout.index("C"), a.lhs_layout.index("N"), _spatial(a.lhs_layout, "N", "C")
    o_ax, w_sp = a.rhs_layout.index("O"), _spatial(a.rhs_layout, "O", "I")
    c = x.type.shape[c_ax]
    in_hw = tuple(x.type.shape[d] for d in sp)
    out_hw = tuple(out.type.shape[d] for d in sp)
    k_hw = tuple(w.type.shape[d] for d in w_sp)
    if a.feature_group_count != c or w.type.shape[o_ax] != c or w.type.shape[a.rhs_layout.index("I")] != 1 \
            or not _small(in_hw, k_hw):
        return None
    kernel = e.reshape(e.transpose(w, (o_ax, a.rhs_layout.index("I"), *w_sp)), (c, *k_hw))
    p = _spatial_matrix(e, in_hw, out_hw, k_hw, a, a.window_strides, a.rhs_dilation, x.type.dtype)
    k = e.op("dot_general", kernel, p, attrs=od.DotGeneralAttrs((), (), (1, 2), (0, 1)))      # [C, oh, ow, ih, iw]
    y = e.op("dot_general", x, k, attrs=od.DotGeneralAttrs((c_ax,), (0,), sp, (3, 4)))          # [C, N, oh, ow]
    order = {c_ax: 0, n_ax: 1, sp[0]: 2, sp[1]: 3}
    return e.transpose(y, tuple(order[d] for d in range(4)))


def _weight_grad_as_spatial_matmul(e: Emitter, m: Match) -> Value | None:
    """dw[c, t] = sum over o, i of G[c, i, o] P[t, o, i], with G[c, i, o] = sum over images of x[c, i] ct[c, o]."""
    x, ct, out = m["x"], m["ct"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    axes = _weight_grad_axes(a)
    if axes is None or not _static(x, ct, out) or not _static_ints(a):
        return None
    c_ax, img_ax, sp = axes
    c = x.type.shape[c_ax]
    in_hw = tuple(x.type.shape[d] for d in sp)
    out_hw = tuple(ct.type.shape[d] for d in sp)
    k_hw = tuple(out.type.shape[d] for d in _spatial(a.out_layout, "N", "C"))
    if c != a.batch_group_count or tuple(out.type.shape) != (c, 1, *k_hw) or not _small(in_hw, k_hw):
        return None
    # the gradient conv's window stride is the forward dilation, its rhs dilation the forward stride
    p = _spatial_matrix(e, in_hw, out_hw, k_hw, a, a.rhs_dilation, a.window_strides, x.type.dtype)
    g = e.op("dot_general", x, ct, attrs=od.DotGeneralAttrs((c_ax,), (c_ax,), (img_ax,), (img_ax,)))  # [C, i, o]
    dw = e.op("dot_general", g, p, attrs=od.DotGeneralAttrs((), (), (1, 2, 3, 4), (4, 5, 2, 3)))  # [C, kh, kw]
    return e.reshape(dw, out.type.shape)


DEPTHWISE_SPATIAL = register_pass(Pass(
    "depthwise_spatial", "rewrite depthwise convolutions and their gradients on small maps as matmuls with a 0/1 "
                         "spatial matrix, which IREE compiles to two dispatches instead of a copy and a sum per tap",
    "primitive", (
        Rule("depthwise_conv_as_spatial_matmul", Op("convolution", (Var("x"), Var("w")), attrs=_is_depthwise),
             _depthwise_as_spatial_matmul,
             "depthwise conv or input gradient, at most SPATIAL_RATIO * taps input positions -> x @ (w @ P)"),
        Rule("depthwise_weight_grad_as_spatial_matmul",
             Op("convolution", (Var("x"), Var("ct")), attrs=_is_depthwise_weight_grad),
             _weight_grad_as_spatial_matmul,
             "depthwise weight gradient, at most SPATIAL_RATIO * taps input positions -> (x . ct) @ P"),
    )))
