"""Convolution forms IREE runs faster than its lowering of the general convolution.

`conv_forms` (IREE and XLA): depthwise convolutions as one slice of the padded input per kernel
tap. Grouped convolutions lower slowly on the CPU; as taps they are elementwise multiply-adds (and
reductions) that fuse well.
- A depthwise conv (feature_group_count = C), forward or input gradient (lhs dilation becomes
  interior padding): y = sum over taps of slice(xpad) * w[:, 0, i, j]. A strided one first splits
  the padded input into its s*s phases (reshape + one transpose), so every tap reads a
  contiguous window of one phase instead of a strided one.
- A depthwise weight gradient (batch_group_count = C): dw[:, 0, i, j] = sum over batch and space
  of slice(xpad) * cotangent.

`pointwise_matmul` (IREE only; XLA:CPU runs it slower): 1x1 convolutions as batched matmuls in
NCHW, so IREE inserts no NHWC transposes around them.
- Forward or input gradient: y[n] = w[:, :, 0, 0] @ x[n] over flattened space (dot_general with
  the weight broadcast over the batch).
- Weight gradient (1x1 output, window = the whole image): dw = sum over n of ct[n] @ x[n]^T (a
  batched matmul, then a sum over the batch), or for tiny images one dot_general contracting
  batch and space.
Measured on MobileNetV2 (docs/performance.md).
"""
from __future__ import annotations

from collections.abc import Callable

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

MAX_TAPS = 49
PER_IMAGE_GROWTH = 16
"""A pointwise weight gradient is summed from per-image matmuls unless their O x C products would
be this many times larger than the operands (2x2 images at 320 -> 1280 channels: 64x; there one
dot_general contracting batch and space is 2-7x faster; at 16x16 and larger the per-image form is
1.5-4x faster)."""


def _is_depthwise_weight_grad(a: od.ConvolutionAttrs) -> bool:
    return (a.batch_group_count > 1 and a.feature_group_count == 1 and (a.lhs_layout, a.rhs_layout, a.out_layout)
            == ("CNHW", "IOHW", "CNHW") and all(d == 1 for d in a.lhs_dilation))


def _is_depthwise(a: od.ConvolutionAttrs) -> bool:
    return (a.feature_group_count > 1 and a.batch_group_count == 1 and (a.lhs_layout, a.rhs_layout, a.out_layout)
            == ("NCHW", "OIHW", "NCHW"))


def _weight_tap(e: Emitter, w: Value, i: int, j: int) -> Value:
    c = w.type.shape[0]
    return e.reshape(e.op("slice", w, attrs=od.SliceAttrs((0, 0, i, j), (c, 1, i + 1, j + 1), (1, 1, 1, 1))), (c,))


def _is_plain(a: od.ConvolutionAttrs) -> bool:
    """Stride 1, no padding, no dilation, no groups: a pointwise conv is then a matmul."""
    return (a.batch_group_count == 1 and a.feature_group_count == 1 and all(s == 1 for s in a.window_strides)
            and all(d == 1 for d in (*a.lhs_dilation, *a.rhs_dilation))
            and all(p == 0 for pair in a.padding for p in pair))


def _is_pointwise_candidate(a: od.ConvolutionAttrs) -> bool:
    return _is_plain(a) and (a.lhs_layout, a.rhs_layout, a.out_layout) == ("NCHW", "OIHW", "NCHW")


def _is_pointwise_weight_grad_candidate(a: od.ConvolutionAttrs) -> bool:
    return _is_plain(a) and (a.lhs_layout, a.rhs_layout, a.out_layout) == ("CNHW", "IOHW", "CNHW")


def _static(*values: Value) -> bool:
    return all(isinstance(d, int) for v in values for d in v.type.shape)


def _static_pads(a: od.ConvolutionAttrs) -> list[tuple[int, int]] | None:
    """The padding with negative high edges clamped to 0 (those rows are never read); None if a pad
    is symbolic or a low edge negative."""
    if not all(isinstance(p, int) for pair in a.padding for p in pair) or min(lo for lo, _ in a.padding) < 0:
        return None
    return [(lo, max(hi, 0)) for lo, hi in a.padding]


def _padded(e: Emitter, x: Value, pads: list[tuple[int, int]], interior: tuple[int, ...] = (0, 0)) -> Value:
    return e.op("pad", x, e.scalar(0.0, x.type.dtype), attrs=od.PadAttrs(
        (0, 0, *(lo for lo, _ in pads)), (0, 0, *(hi for _, hi in pads)), (0, 0, *interior)))


def _tap(e: Emitter, xp: Value, i: int, j: int, dilation: tuple[int, ...], strides: tuple[int, ...],
         out_hw: tuple[int, ...]) -> Value:
    """The window of xp that kernel tap (i, j) meets at every output position."""
    (dh, dw), (sh, sw) = dilation, strides
    n, c = xp.type.shape[:2]
    ho, wo = out_hw
    return e.op("slice", xp, attrs=od.SliceAttrs((0, 0, i * dh, j * dw),
                                                 (n, c, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1),
                                                 (1, 1, sh, sw)))


def _depthwise_taps(e: Emitter, m: Match, phases: bool = True) -> Value | None:
    """y[n, c] = sum over taps (i, j) of xpad[n, c, i*d + h*s, j*d + w*s] * w[c, 0, i, j]; a strided
    conv reads its taps from the input's phases unless `phases` is off (bench/levers.py)."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    _, c, _, _ = x.type.shape
    kh, kw = w.type.shape[2:]
    pads = _static_pads(a)
    if pads is None or not _static(x, w, out) or a.feature_group_count != c or tuple(w.type.shape[:2]) != (c, 1) \
            or out.type.shape[1] != c or kh * kw > MAX_TAPS:
        return None
    if phases and any(s > 1 for s in a.window_strides) and all(d == 1 for d in a.lhs_dilation):
        return _strided_depthwise_phases(e, x, w, a, pads, out)
    xp = _padded(e, x, pads, tuple(d - 1 for d in a.lhs_dilation))
    return _sum_of_taps(e, w, out.type.shape,
                        lambda i, j: _tap(e, xp, i, j, a.rhs_dilation, a.window_strides, tuple(out.type.shape[2:])))


def _sum_of_taps(e: Emitter, w: Value, shape: tuple, window: Callable[[int, int], Value]) -> Value:
    """sum over kernel taps (i, j) of window(i, j) * w[:, 0, i, j] (per channel)."""
    kh, kw = w.type.shape[2:]
    y = None
    for i in range(kh):
        for j in range(kw):
            t = e.mul(window(i, j), e.bcast(_weight_tap(e, w, i, j), shape, (1,)))
            y = t if y is None else e.add(y, t)
    return y


def _strided_depthwise_phases(e: Emitter, x: Value, w: Value, a: od.ConvolutionAttrs,
                              pads: list[tuple[int, int]], out: Value) -> Value:
    """A strided depthwise conv with the padded input split once into its s*s phases (a reshape and
    one transpose), so that every tap reads a contiguous window of one phase."""
    n, c, hx, wx = x.type.shape
    (sh, sw), (dh, dw) = a.window_strides, a.rhs_dilation
    ho, wo = out.type.shape[2:]
    hp, wp = hx + pads[0][0] + pads[0][1], wx + pads[1][0] + pads[1][1]
    hq, wq = -(-hp // sh), -(-wp // sw)
    xp = _padded(e, x, [(pads[0][0], pads[0][1] + hq * sh - hp), (pads[1][0], pads[1][1] + wq * sw - wp)])
    phases = e.transpose(e.reshape(xp, (n, c, hq, sh, wq, sw)), (0, 1, 3, 5, 2, 4))

    def window(i: int, j: int) -> Value:
        """Tap (i, j) reads phase (i*dh mod sh, j*dw mod sw) from row i*dh // sh, column j*dw // sw on."""
        (a0, p), (b0, q) = divmod(i * dh, sh), divmod(j * dw, sw)
        return e.reshape(e.op("slice", phases, attrs=od.SliceAttrs(
            (0, 0, p, q, a0, b0), (n, c, p + 1, q + 1, a0 + ho, b0 + wo), (1, 1, 1, 1, 1, 1))), (n, c, ho, wo))

    return _sum_of_taps(e, w, out.type.shape, window)


def _weight_grad_taps(e: Emitter, m: Match) -> Value | None:
    """out[c, 0, i, j] = sum over n, h, w of xpad[n, c, i*d + h*s, j*d + w*s] * ct[n, c, h, w]."""
    x, ct, out = m["x"], m["ct"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    _, c, _, _ = x.type.shape
    kh, kw = out.type.shape[2:]
    pads = _static_pads(a)
    if pads is None or not _static(x, ct, out) or c != a.batch_group_count or tuple(out.type.shape[:2]) != (c, 1) \
            or kh * kw > MAX_TAPS:
        return None
    xp = _padded(e, x, pads)
    # the gradient conv's window stride is the forward dilation, its rhs dilation the forward stride
    taps = [e.reshape(e.reduce(e.mul(_tap(e, xp, i, j, a.window_strides, a.rhs_dilation, tuple(ct.type.shape[2:])),
                                     ct), "sum", (0, 2, 3)), (c, 1))
            for i in range(kh) for j in range(kw)]
    stacked = taps[0] if len(taps) == 1 else e.op("concatenate", *taps, attrs=od.ConcatAttrs(1))
    return e.reshape(stacked, out.type.shape)


def _pointwise_as_matmul(e: Emitter, m: Match) -> Value | None:
    """y[n, o, :] = sum over c of w[o, c] * x[n, c, :] as a batched dot_general (batch n)."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    if not _static(x, w, out) or tuple(w.type.shape[2:]) != (1, 1):
        return None
    n, c, h, wd = x.type.shape
    o = w.type.shape[0]
    wb = e.bcast(e.reshape(w, (o, c)), (n, o, c), (1, 2))
    y = e.op("dot_general", wb, e.reshape(x, (n, c, h * wd)), attrs=od.DotGeneralAttrs((0,), (0,), (2,), (1,)))
    return e.reshape(y, out.type.shape)


def _pointwise_weight_grad_as_matmul(e: Emitter, m: Match) -> Value | None:
    """dw[o, c] = sum over n, h, w of ct[n, o, h, w] * x[n, c, h, w]: per-image matmuls summed over n."""
    x, ct, out = m["x"], m["ct"], m.node.outputs[0]
    if not _static(x, ct, out) or tuple(out.type.shape[2:]) != (1, 1) \
            or tuple(x.type.shape[2:]) != tuple(ct.type.shape[2:]):
        return None
    n, c, h, wd = x.type.shape
    o = ct.type.shape[1]
    ct3, x3 = e.reshape(ct, (n, o, h * wd)), e.reshape(x, (n, c, h * wd))
    if o * c > PER_IMAGE_GROWTH * h * wd * (o + c):
        # tiny images: n per-image products would dwarf the operands; contract batch and space at once
        return e.reshape(e.op("dot_general", ct3, x3, attrs=od.DotGeneralAttrs((), (), (0, 2), (0, 2))),
                         out.type.shape)
    per_image = e.op("dot_general", ct3, x3, attrs=od.DotGeneralAttrs((0,), (0,), (2,), (2,)))
    return e.reshape(e.reduce(per_image, "sum", (0,)), out.type.shape)


RULES = (
    Rule("depthwise_conv_as_taps", Op("convolution", (Var("x"), Var("w")), attrs=_is_depthwise), _depthwise_taps,
         "depthwise convolution (feature_group_count = C) -> per-tap slice * weight, summed"),
    Rule("depthwise_weight_grad_as_taps", Op("convolution", (Var("x"), Var("ct")), attrs=_is_depthwise_weight_grad),
         _weight_grad_taps, "convolution with batch_group_count = C (a depthwise weight gradient) -> per-tap multiply + reduce"),
)
POINTWISE_RULES = (
    Rule("pointwise_conv_as_matmul", Op("convolution", (Var("x"), Var("w")), attrs=_is_pointwise_candidate),
         _pointwise_as_matmul, "1x1 convolution, stride 1, NCHW -> dot_general batched over images (no layout change)"),
    Rule("pointwise_weight_grad_as_matmul",
         Op("convolution", (Var("x"), Var("ct")), attrs=_is_pointwise_weight_grad_candidate),
         _pointwise_weight_grad_as_matmul, "1x1 weight gradient (CNHW x IOHW) -> per-image dot_general, summed over images"),
)

CONV_FORMS = register_pass(Pass("conv_forms", "rewrite depthwise convolutions as per-tap multiply-adds, which IREE "
                                              "and XLA run faster than grouped convolutions", "primitive", RULES))
POINTWISE_MATMUL = register_pass(Pass(
    "pointwise_matmul", "rewrite 1x1 convolutions and their gradients as NCHW batched matmuls, which IREE runs "
                        "faster (XLA:CPU slower: the JAX backend's default pipeline leaves it out)", "primitive",
    POINTWISE_RULES))
