"""Convolution forms IREE runs faster than its lowering of the general convolution.

`conv_forms` (IREE and XLA): depthwise convolutions as one slice of the padded input per kernel
tap. Grouped convolutions lower slowly on the CPU; as taps they are elementwise multiply-adds (and
reductions) that fuse well.
- A depthwise conv (feature_group_count = C), forward or input gradient (lhs dilation becomes
  interior padding): y = sum over taps of slice(xpad) * w[:, 0, i, j]. A strided one first splits
  the padded input into its s*s phases (reshape + one transpose), so every tap reads a
  contiguous window of one phase instead of a strided one.
- A depthwise weight gradient (batch_group_count = C): dw[:, 0, i, j] = sum over batch and space
  of slice(xpad) * cotangent; a strided one reads the forward's phases (the same split, kept once
  by CSE) instead of strided windows of a second padded copy of x.

`pointwise_matmul` (IREE only; XLA:CPU runs it slower): 1x1 convolutions as matmuls in the
activations' own layout, so IREE inserts no NHWC transposes around them.
- Forward or input gradient: in NCHW y[n] = w[:, :, 0, 0] @ x[n] over flattened space (dot_general
  with the weight broadcast over the batch); with channels first (CNHW) or last (NHWC, see
  gir.rewrite.layout) one matmul over batch and space.
- Weight gradient (1x1 output, window = the whole image): in NCHW dw = sum over n of
  ct[n] @ x[n]^T (a batched matmul, then a sum over the batch), or for tiny images one
  dot_general contracting batch and space; with channels first or last one matmul.
`nhwc_conv` (IREE only, before conv_forms) makes large forward convs and input gradients without groups, and 7x7
depthwise ones, IREE's own NHWC/HWIO convolution; `dense_matmul` (IREE only) makes the other convolutions without
groups (small maps, few channels, weight gradients) one matmul over gathered windows.
Every pass reads the operands' layouts from the convolution's dimension numbers.
Measured on MobileNetV2 (docs/performance.md).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

from attrs import evolve as attrs_evolve

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
    return a.batch_group_count > 1 and a.feature_group_count == 1 and all(d == 1 for d in a.lhs_dilation)


def _is_depthwise(a: od.ConvolutionAttrs) -> bool:
    """A depthwise conv or its input gradient, unless nhwc_conv made it IREE's NHWC convolution."""
    return a.feature_group_count > 1 and a.batch_group_count == 1 and a.lhs_layout == a.out_layout \
        and not _is_direct_nhwc(a)


def _is_plain(a: od.ConvolutionAttrs) -> bool:
    """Stride 1, no padding, no dilation, no groups: a pointwise conv is then a matmul."""
    return (a.batch_group_count == 1 and a.feature_group_count == 1 and all(s == 1 for s in a.window_strides)
            and all(d == 1 for d in (*a.lhs_dilation, *a.rhs_dilation))
            and all(p == 0 for pair in a.padding for p in pair))


def _spatial(layout: str, *roles: str) -> tuple[int, ...]:
    """The positions of a 2-D convolution operand's spatial dims (the letters other than `roles`)."""
    return tuple(i for i, ch in enumerate(layout) if ch not in roles)


def _weight_grad_axes(a: od.ConvolutionAttrs) -> tuple[int, int, tuple[int, ...]] | None:
    """(channel dim, image dim, spatial dims) of a weight gradient's operands: in its layouts x's
    channels play the batch ('N') and its images the features ('C'), the cotangent's channels the
    output features ('O'), its images the input features ('I'). None unless both agree."""
    axes = (a.lhs_layout.index("N"), a.lhs_layout.index("C"), _spatial(a.lhs_layout, "N", "C"))
    ct_axes = (a.rhs_layout.index("O"), a.rhs_layout.index("I"), _spatial(a.rhs_layout, "O", "I"))
    return axes if axes == ct_axes else None


def _static(*values: Value) -> bool:
    return all(isinstance(d, int) for v in values for d in v.type.shape)


def _static_pads(a: od.ConvolutionAttrs) -> list[tuple[int, int]] | None:
    """The padding with negative high edges clamped to 0 (those rows are never read); None if a pad
    is symbolic or a low edge negative."""
    if not all(isinstance(p, int) for pair in a.padding for p in pair) or min(lo for lo, _ in a.padding) < 0:
        return None
    return [(lo, max(hi, 0)) for lo, hi in a.padding]


def _at(spatial: tuple[int, int], values: tuple[int, int], rest: int | list[int], rank: int = 4) -> list:
    """A per-dim list with `values` at the spatial positions and `rest` (or rest[d]) elsewhere."""
    out = list(rest) if isinstance(rest, list) else [rest] * rank
    for d, v in zip(spatial, values):
        out[d] = v
    return out


def _slice_dims(e: Emitter, v: Value, dims: list[int], ranges: list[tuple[int, int]]) -> Value:
    """v sliced to [start, stop) `ranges` along `dims` (v itself where they are whole)."""
    if all((a, b) == (0, v.type.shape[d]) for d, (a, b) in zip(dims, ranges)):
        return v
    starts, limits = zip(*ranges)
    return e.op("slice", v, attrs=od.SliceAttrs(_at(dims, starts, 0, v.type.rank),
                                                _at(dims, limits, list(v.type.shape)), [1] * v.type.rank))


def _padded(e: Emitter, x: Value, spatial: tuple[int, int], pads: list[tuple[int, int]],
            interior: tuple[int, ...] = (0, 0)) -> Value:
    return e.op("pad", x, e.scalar(0.0, x.type.dtype), attrs=od.PadAttrs(
        _at(spatial, tuple(lo for lo, _ in pads), 0), _at(spatial, tuple(hi for _, hi in pads), 0),
        _at(spatial, interior, 0)))


def _tap(e: Emitter, xp: Value, spatial: tuple[int, int], i: int, j: int, dilation: tuple[int, ...],
         strides: tuple[int, ...], out_hw: tuple[int, ...]) -> Value:
    """The window of xp that kernel tap (i, j) meets at every output position."""
    (dh, dw), (sh, sw) = dilation, strides
    ho, wo = out_hw
    return e.op("slice", xp, attrs=od.SliceAttrs(
        _at(spatial, (i * dh, j * dw), 0),
        _at(spatial, (i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1), list(xp.type.shape)),
        _at(spatial, (sh, sw), 1)))


def _concat(e: Emitter, parts: list[Value], dim: int) -> Value:
    """The parts joined along `dim` (a single part as it is)."""
    return parts[0] if len(parts) == 1 else e.op("concatenate", *parts, attrs=od.ConcatAttrs(dim))


def _weight_tap(e: Emitter, w: Value, spatial: tuple[int, int], i: int, j: int) -> Value:
    """w[:, :, i, j] of a [C, 1, kh, kw] kernel (in its layout) as a [C] vector."""
    c = math.prod(w.type.shape[d] for d in range(4) if d not in spatial)
    return e.reshape(e.op("slice", w, attrs=od.SliceAttrs(
        _at(spatial, (i, j), 0), _at(spatial, (i + 1, j + 1), list(w.type.shape)), (1, 1, 1, 1))), (c,))


def _depthwise_taps(e: Emitter, m: Match, phases: bool = True) -> Value | None:
    """y[n, c] = sum over taps (i, j) of xpad[n, c, i*d + h*s, j*d + w*s] * w[c, 0, i, j]; a strided
    conv reads its taps from the input's phases unless `phases` is off (bench/levers.py)."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    c_ax, sp = a.lhs_layout.index("C"), _spatial(a.lhs_layout, "N", "C")
    w_sp = _spatial(a.rhs_layout, "O", "I")
    c = x.type.shape[c_ax]
    kh, kw = (w.type.shape[d] for d in w_sp)
    pads = _static_pads(a)
    if pads is None or not _static(x, w, out) or a.feature_group_count != c or out.type.shape[c_ax] != c \
            or w.type.shape[a.rhs_layout.index("O")] != c or w.type.shape[a.rhs_layout.index("I")] != 1 \
            or kh * kw > MAX_TAPS:
        return None
    out_hw = tuple(out.type.shape[d] for d in sp)
    window = _tap_windows(e, x, sp, a.window_strides, a.rhs_dilation, a.lhs_dilation, pads, out_hw, phases)
    y = None
    for i in range(kh):
        for j in range(kw):
            t = e.mul(window(i, j), e.bcast(_weight_tap(e, w, w_sp, i, j), out.type.shape, (c_ax,)))
            y = t if y is None else e.add(y, t)
    return y


def _tap_windows(e: Emitter, x: Value, sp: tuple[int, int], strides: tuple[int, ...], dilation: tuple[int, ...],
                 lhs_dilation: tuple[int, ...], pads: list[tuple[int, int]], out_hw: tuple[int, ...],
                 phases: bool = True) -> Callable[[int, int], Value]:
    """window(i, j): what kernel tap (i, j) reads at every output position. Strided taps come from
    the phase split (unless `phases` is off), others from windows of the padded (and, for lhs
    dilation, interior-padded) input."""
    if phases and any(s > 1 for s in strides) and all(d == 1 for d in lhs_dilation):
        return _phase_windows(e, x, sp, strides, dilation, pads, out_hw)
    xp = _padded(e, x, sp, pads, tuple(d - 1 for d in lhs_dilation))
    return lambda i, j: _tap(e, xp, sp, i, j, dilation, strides, out_hw)


def _phase_windows(e: Emitter, x: Value, sp: tuple[int, int], strides: tuple[int, ...], dilation: tuple[int, ...],
                   pads: list[tuple[int, int]], out_hw: tuple[int, ...]) -> Callable[[int, int], Value]:
    """The taps of a strided conv read from the padded input split once into its s*s phases (a
    reshape and one transpose that puts the phases first), each a contiguous window of one phase.
    The forward conv and its weight gradient split the same x the same way, so CSE keeps one split."""
    (sh, sw), (dh, dw) = strides, dilation
    ho, wo = out_hw
    hp, wp = (x.type.shape[d] + lo + hi for d, (lo, hi) in zip(sp, pads))
    hq, wq = -(-hp // sh), -(-wp // sw)
    xp = _padded(e, x, sp, [(pads[0][0], pads[0][1] + hq * sh - hp), (pads[1][0], pads[1][1] + wq * sw - wp)])
    split: list = []
    for d, size in enumerate(xp.type.shape):
        split += [hq, sh] if d == sp[0] else [wq, sw] if d == sp[1] else [size]
    at_h, at_w = sp[0] + 1, sp[1] + 2   # the phase dims in the split shape
    rest = [d for d in range(6) if d not in (at_h, at_w)]
    phases = e.transpose(e.reshape(xp, split), (at_h, at_w, *rest))
    rest_shape = [split[d] for d in rest]
    rsp = (rest.index(at_h - 1), rest.index(at_w - 1))
    out_shape = _at(rsp, (ho, wo), rest_shape)

    def window(i: int, j: int) -> Value:
        """Tap (i, j) reads phase (i*dh mod sh, j*dw mod sw) from row i*dh // sh, column j*dw // sw on."""
        (a0, p), (b0, q) = divmod(i * dh, sh), divmod(j * dw, sw)
        tap = e.op("slice", phases, attrs=od.SliceAttrs(
            (p, q, *_at(rsp, (a0, b0), 0)), (p + 1, q + 1, *_at(rsp, (a0 + ho, b0 + wo), rest_shape)), (1,) * 6))
        return e.reshape(tap, out_shape)

    return window


def _weight_grad_taps(e: Emitter, m: Match, as_dots: bool = False) -> Value | None:
    """out[c, 0, i, j] = sum over n, h, w of xpad[n, c, i*d + h*s, j*d + w*s] * ct[n, c, h, w]: per tap a multiply
    and a reduction, or with `as_dots` one dot_general batched over the channels (the form IREE's GPU codegen takes;
    it computes the batch-grouped convolution wrongly on Vulkan and crashes on the multiply-reduce of wide ones)."""
    x, ct, out = m["x"], m["ct"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    axes, pads = _weight_grad_axes(a), _static_pads(a)
    if axes is None or pads is None or not _static(x, ct, out):
        return None
    c_ax, _, sp = axes
    c = x.type.shape[c_ax]
    kh, kw = (out.type.shape[d] for d in _spatial(a.out_layout, "N", "C"))
    if c != a.batch_group_count or kh * kw > MAX_TAPS or tuple(out.type.shape) != (c, 1, kh, kw):
        return None
    others = tuple(d for d in range(4) if d != c_ax)
    ct_hw = tuple(ct.type.shape[d] for d in sp)
    # the gradient conv's window stride is the forward dilation, its rhs dilation the forward stride;
    # a strided one reads the forward's phase split
    window = _tap_windows(e, x, sp, a.rhs_dilation, a.window_strides, a.lhs_dilation, pads, ct_hw)
    def tap(win: Value) -> Value:
        if as_dots:
            return e.op("dot_general", win, ct, attrs=od.DotGeneralAttrs((c_ax,), (c_ax,), others, others))
        return e.reduce(e.mul(win, ct), "sum", others)
    taps = [e.reshape(tap(window(i, j)), (c, 1)) for i in range(kh) for j in range(kw)]
    return e.reshape(_concat(e, taps, 1), out.type.shape)


def _matrix(e: Emitter, w: Value, layout: str, rows: str, cols: str) -> Value:
    """A 1x1 kernel as a [rows, cols] matrix (its two feature roles in that order)."""
    i, j = layout.index(rows), layout.index(cols)
    wt = e.transpose(w, (i, j, *_spatial(layout, rows, cols)))
    return e.reshape(wt, (w.type.shape[i], w.type.shape[j]))


def _flat(e: Emitter, x: Value, keep: int) -> Value:
    """x as a matrix: dim `keep` (first or last) by everything else."""
    size = x.type.shape[keep]
    rest = math.prod(d for k, d in enumerate(x.type.shape) if k != keep)
    return e.reshape(x, (size, rest) if keep == 0 else (rest, size))


def _pointwise_as_matmul(e: Emitter, m: Match) -> Value | None:
    """y[n, o, :] = sum over c of w[o, c] * x[n, c, :]: one matmul when the channels are the first
    or last dim in memory, else (NCHW) a dot_general batched over images."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    if not _static(x, w, out) or a.out_layout != a.lhs_layout or not _is_pointwise(w, a):
        return None
    c_ax, n_ax = a.lhs_layout.index("C"), a.lhs_layout.index("N")
    wm = _matrix(e, w, a.rhs_layout, "O", "I")
    o, c = wm.type.shape
    if c_ax == 0:
        y = e.op("dot_general", wm, _flat(e, x, 0), attrs=od.DotGeneralAttrs((), (), (1,), (0,)))
    elif c_ax == 3:
        y = e.op("dot_general", _flat(e, x, 3), wm, attrs=od.DotGeneralAttrs((), (), (1,), (1,)))
    elif (n_ax, c_ax) == (0, 1):
        n, _, h, wd = x.type.shape
        wb = e.bcast(wm, (n, o, c), (1, 2))
        y = e.op("dot_general", wb, e.reshape(x, (n, c, h * wd)), attrs=od.DotGeneralAttrs((0,), (0,), (2,), (1,)))
    else:
        return None
    return e.reshape(y, out.type.shape)


def _pointwise_weight_grad_as_matmul(e: Emitter, m: Match) -> Value | None:
    """dw[o, c] = sum over n, h, w of ct[n, o, h, w] * x[n, c, h, w]: one matmul when the channels
    are the first or last dim in memory, else (NCHW) per-image matmuls summed over n."""
    x, ct, out = m["x"], m["ct"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    axes = _weight_grad_axes(a)
    if axes is None or not _static(x, ct, out):
        return None
    c_ax, n_ax, sp = axes
    if any(out.type.shape[d] != 1 for d in _spatial(a.out_layout, "N", "C")) \
            or tuple(x.type.shape[d] for d in sp) != tuple(ct.type.shape[d] for d in sp) \
            or a.out_layout.index("C") > a.out_layout.index("N"):
        return None
    c, o = x.type.shape[c_ax], ct.type.shape[c_ax]
    if c_ax == 0:
        return e.reshape(e.op("dot_general", _flat(e, ct, 0), _flat(e, x, 0),
                              attrs=od.DotGeneralAttrs((), (), (1,), (1,))), out.type.shape)
    if c_ax == 3:
        return e.reshape(e.op("dot_general", _flat(e, ct, 3), _flat(e, x, 3),
                              attrs=od.DotGeneralAttrs((), (), (0,), (0,))), out.type.shape)
    if (n_ax, c_ax) != (0, 1):
        return None
    n, _, h, wd = x.type.shape
    ct3, x3 = e.reshape(ct, (n, o, h * wd)), e.reshape(x, (n, c, h * wd))
    if o * c > PER_IMAGE_GROWTH * h * wd * (o + c):
        # tiny images: n per-image products would dwarf the operands; contract batch and space at once
        return e.reshape(e.op("dot_general", ct3, x3, attrs=od.DotGeneralAttrs((), (), (0, 2), (0, 2))),
                         out.type.shape)
    per_image = e.op("dot_general", ct3, x3, attrs=od.DotGeneralAttrs((0,), (0,), (2,), (2,)))
    return e.reshape(e.reduce(per_image, "sum", (0,)), out.type.shape)


ROWS_PER_OUTPUT_FEATURE = 16
"""A gathered forward conv multiplies its kernel as [taps * f, o] when its rows (pixels of all
images) are at least this many times its output features, else as [o, taps * f]: IREE's CPU
matmul runs the first 1.3-1.8x faster for 2048-32768 rows by 64-256 outputs (ratio 16-128), the
second 1.5-2.1x faster for 128-2048 rows by 256-512 (ratio 0.25-8; docs/performance.md)."""


def _is_dense(a: od.ConvolutionAttrs) -> bool:
    """No groups: every input feature meets every output feature (a forward conv, its input
    gradient or its weight gradient)."""
    return a.batch_group_count == 1 and a.feature_group_count == 1


def _roles(layout: str, *roles: str) -> tuple[int, ...]:
    """The positions of `roles`, then of the spatial dims, in a convolution operand's layout."""
    return (*(layout.index(r) for r in roles), *_spatial(layout, *roles))


def _operand_roles(a: od.ConvolutionAttrs) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """_roles of the input (batch, features), the kernel (out, in) and the output (batch, features)."""
    return _roles(a.lhs_layout, "N", "C"), _roles(a.rhs_layout, "O", "I"), _roles(a.out_layout, "N", "C")


def _dense_as_matmul(e: Emitter, m: Match) -> Value | None:
    """out[b, o, p] = sum over f, k of xpad[b, f, p*s + k*d] * w[o, f, k] as one matmul over
    gathered windows, on whichever of kernel taps k or output positions p are fewer:
    - kernel taps (a forward conv, an input gradient): cols[(b, p), (k, f)] @ w[(k, f), o], or
      @ w[o, (k, f)]^T for few rows per output feature;
    - output positions (a weight gradient, whose output is the kernel):
      w[o, (f, k)] @ cols[(p, b), (f, k)]^T, both operands contiguous along the long contraction.
    These are the operand orders IREE's CPU matmuls run fastest (docs/performance.md)."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    pads = _static_pads(a)
    if pads is None or not _static(x, w, out):
        return None
    xr, wr, yr = _operand_roles(a)
    b, f = (x.type.shape[d] for d in xr[:2])
    o = w.type.shape[wr[0]]
    k_hw = tuple(w.type.shape[d] for d in wr[2:])
    p_hw = tuple(out.type.shape[d] for d in yr[2:])
    taps, positions = math.prod(k_hw), math.prod(p_hw)
    tiled = _tiled(e, x, xr, a, pads, k_hw, p_hw)   # [b, f, then (p, k) or (k, p) per spatial dim]
    if tiled is None and min(taps, positions) > MAX_TAPS:
        return None
    flipped = tiled is None and _flipped_kernel(w, wr)
    if flipped:
        w = w.producer.inputs[0]   # the taps reversed on the gathered side instead (an input gradient's kernel)
    if taps <= positions:
        if tiled is None:
            # x once as [b, h, w, f]: each window is then a [b, p..., f] block, rows of cols
            xt = e.transpose(x, (xr[0], *xr[2:], xr[1]))
            window = _tap_windows(e, xt, (1, 2), a.window_strides, a.rhs_dilation, a.lhs_dilation, pads, p_hw)
            order = [(i, j) for i in range(k_hw[0]) for j in range(k_hw[1])]
            cols = _concat(e, [e.reshape(window(i, j), (b * positions, f))
                               for i, j in (order[::-1] if flipped else order)], 1)
        else:
            view, (ph, kh), (pw, kw) = tiled
            cols = e.reshape(e.transpose(view, (0, ph, pw, kh, kw, 1)), (b * positions, taps * f))
        wide = b * positions < ROWS_PER_OUTPUT_FEATURE * o   # the kernel as [o, taps * f], else [taps * f, o]
        wm = e.transpose(w, (wr[0], *wr[2:], wr[1]) if wide else (*wr[2:], wr[1], wr[0]))
        wm = e.reshape(wm, (o, taps * f) if wide else (taps * f, o))
        y = _walled_matmul(e, cols, wm, 1 if wide else 0)
        y, order = e.reshape(y, (b, *p_hw, o)), (0, 3, 1, 2)   # [b, o, p...] from [b, p..., o]
    else:
        if tiled is None:
            # x once as [b, f, h, w]: each window is then a [b, f, k...] block, rows of cols
            xt = e.transpose(x, xr)
            window = _tap_windows(e, xt, (2, 3), a.rhs_dilation, a.window_strides, a.lhs_dilation, pads, k_hw)
            cols = _concat(e, [e.reshape(window(i, j), (b, f * taps))
                               for i in range(p_hw[0]) for j in range(p_hw[1])], 0)
            if flipped:
                cols = e.reshape(e.op("reverse", e.reshape(cols, (positions * b, f, *k_hw)),
                                      attrs=od.ReverseAttrs((2, 3))), (positions * b, f * taps))
        else:
            view, (ph, kh), (pw, kw) = tiled
            cols = e.reshape(e.transpose(view, (ph, pw, 0, 1, kh, kw)), (positions * b, f * taps))
        wm = e.reshape(e.transpose(w, wr), (o, f * taps))
        y = _walled_matmul(e, wm, cols, 1)
        y, order = e.reshape(y, (o, *p_hw, b)), (3, 0, 1, 2)
    return e.transpose(y, tuple(order[yr.index(d)] for d in range(4)))   # into the output's layout


def _flipped_kernel(w: Value, wr: tuple[int, ...]) -> bool:
    """w is another kernel reversed along both spatial dims (as autodiff writes an input gradient's): IREE runs that
    reverse of a large kernel at a third of a transpose's speed, while the gathered windows can take the taps in
    reverse order for free, or be reversed where they are the smaller operand."""
    node = w.producer
    return node is not None and node.op == "reverse" and sorted(node.attrs.dims) == sorted(wr[2:])


def _tiled(e: Emitter, x: Value, xr: tuple[int, ...], a: od.ConvolutionAttrs, pads: list[tuple[int, int]],
           k_hw: tuple[int, ...], p_hw: tuple[int, ...]) -> tuple[Value, tuple[int, int], tuple[int, int]] | None:
    """x as [b, f, h1, h2, w1, w2] and the axes of (output position, kernel tap) of each spatial dim, when the windows
    tile the input exactly, so that gathering them is this transpose and reshape: a patch embedding (stride = kernel:
    input row p*k + i) or its weight gradient (dilation = positions: row i*p + q). None otherwise."""
    if any(d != 1 for d in a.lhs_dilation) or any(p != 0 for pair in pads for p in pair):
        return None
    split, axes = [x.type.shape[d] for d in xr[:2]], []
    for dim, k, p, s, d in zip(xr[2:], k_hw, p_hw, a.window_strides, a.rhs_dilation):
        if x.type.shape[dim] != p * k or k == 1 or p == 1:
            return None
        if d == 1 and s == k:
            split += [p, k]
            axes.append((len(split) - 2, len(split) - 1))
        elif s == 1 and d == p:
            split += [k, p]
            axes.append((len(split) - 1, len(split) - 2))
        else:
            return None
    return e.reshape(e.transpose(x, xr), split), axes[0], axes[1]


def _walled_matmul(e: Emitter, lhs: Value, rhs: Value, rhs_contract: int) -> Value:
    """lhs[m, k] times rhs ([k, n] or [n, k]) as a plain 2-D matmul behind optimization barriers:
    IREE would otherwise fold the transposes around it into its operands and result and run it as
    a 4-D contraction, 2-5x slower (docs/performance.md)."""
    wall = lambda v: e.op("optimization_barrier", v)  # noqa: E731
    y = e.op("dot_general", wall(lhs), wall(rhs), attrs=od.DotGeneralAttrs((), (), (1,), (rhs_contract,)))
    return wall(y)


RULES = (
    Rule("depthwise_conv_as_taps", Op("convolution", (Var("x"), Var("w")), attrs=_is_depthwise), _depthwise_taps,
         "depthwise convolution (feature_group_count = C) -> per-tap slice * weight, summed"),
    Rule("depthwise_weight_grad_as_taps", Op("convolution", (Var("x"), Var("ct")), attrs=_is_depthwise_weight_grad),
         _weight_grad_taps,
         "convolution with batch_group_count = C (a depthwise weight gradient) -> per-tap multiply + reduce"),
)
POINTWISE_RULES = (
    Rule("pointwise_conv_as_matmul", Op("convolution", (Var("x"), Var("w")), attrs=_is_plain),
         _pointwise_as_matmul,
         "1x1 convolution, stride 1 -> one dot_general (channels first or last) or batched over images (NCHW)"),
    Rule("pointwise_weight_grad_as_matmul",
         Op("convolution", (Var("x"), Var("ct")), attrs=_is_plain),
         _pointwise_weight_grad_as_matmul,
         "1x1 weight gradient -> one dot_general (channels first or last) or per-image ones summed (NCHW)"),
)

NHWC, HWIO = "NHWC", "HWIO"
DIRECT_MIN_CHANNELS = 16
DIRECT_MIN_ROWS = 512
"""`nhwc_conv` takes a forward conv or input gradient with at least this many input channels and rows (images x
output positions). IREE's NHWC/HWIO convolution runs at 260-340 GFLOP/s on this CPU from 512 rows and 32 channels
(137-146 at 8x8 and 16x16 images), against 33-40 at 2x2 images (128 rows), where dense_matmul's gathered matmul
wins; with one input channel it runs at 8 GFLOP/s against im2col's 35 (docs/performance.md)."""


DIRECT_MAX_KERNEL = 2**19
DIRECT_CHUNK_CHANNELS = 64
"""IREE's NHWC convolution slows down once its kernel has more than this many elements (2 MiB of float32, this CPU's
L2 per core), whatever the map size (3x3, 8 to 64 images of 4x4 to 16x16: 57-123 GFLOP/s for 128 -> 512, 256 -> 256
and 512 -> 512 channels, against 175-236 for 128 -> 256 and 256 -> 128), so nhwc_conv splits such a convolution
into chunks of at most 64 input channels and adds their partial sums: 120-205 GFLOP/s, the slices and adds included.
Smaller kernels run slower so split (224-236 -> 151-156 GFLOP/s at 256 -> 128; docs/performance.md)."""


DEPTHWISE_MIN_TAPS = 49
"""nhwc_conv takes depthwise convolutions with 7x7 kernels (ConvNeXt): as taps each is 49 slices, multiplies and adds
forward and again in the input gradient; as the grouped NHWC convolution ConvNeXt-T's step compiles a quarter to a
third faster (b64@32: 99 -> 66-78 s; b8@64: 65 -> 51 s) and runs as fast. At 5x5 (EfficientNet-B0) the NHWC
convolution made the step 1.4x slower (docs/performance.md)."""


def _is_direct_nhwc(a: od.ConvolutionAttrs) -> bool:
    return (a.lhs_layout, a.rhs_layout, a.out_layout) == (NHWC, HWIO, NHWC)


def _is_dense_elsewhere(a: od.ConvolutionAttrs) -> bool:
    """Without groups, and not already the NHWC convolution nhwc_conv made."""
    return _is_dense(a) and not _is_direct_nhwc(a)


def _channel_chunks(kernel: tuple[int, ...]) -> list[tuple[int, int]]:
    """[start, stop) of the input-channel chunks a convolution without groups and with an HWIO `kernel` is split
    into: one chunk up to DIRECT_MAX_KERNEL elements, else chunks of at most DIRECT_CHUNK_CHANNELS, as even as
    possible."""
    c = kernel[2]
    if math.prod(kernel) <= DIRECT_MAX_KERNEL:
        return [(0, c)]
    n = -(-c // DIRECT_CHUNK_CHANNELS)
    bounds = [c * i // n for i in range(n + 1)]
    return list(zip(bounds, bounds[1:]))


def _nhwc_conv(e: Emitter, xt: Value, wt: Value, a: od.ConvolutionAttrs) -> Value:
    """The NHWC/HWIO convolution of xt and wt, summed over input-channel chunks (_channel_chunks) where it has no
    groups and a large kernel: every output element is a sum over the input channels, so each chunk's convolution
    gives a partial sum."""
    a = attrs_evolve(a, lhs_layout=NHWC, rhs_layout=HWIO, out_layout=NHWC)
    if not _is_dense(a) or len(chunks := _channel_chunks(wt.type.shape)) == 1:
        return e.op("convolution", xt, wt, attrs=a)
    parts = [e.op("convolution", _slice_dims(e, xt, [3], [(lo, hi)]), _slice_dims(e, wt, [2], [(lo, hi)]), attrs=a)
             for lo, hi in chunks]
    return functools.reduce(e.add, parts)


def _as_nhwc(e: Emitter, x: Value, w: Value, a: od.ConvolutionAttrs) -> Value:
    """The convolution in NHWC/HWIO (groups kept), transposed in and out behind optimization barriers: IREE would
    otherwise fold the transposes into a generic convolution it runs 20-50x slower."""
    xr, wr, yr = _operand_roles(a)
    wall = lambda v: e.op("optimization_barrier", v)  # noqa: E731
    xt, wt = e.transpose(x, (xr[0], *xr[2:], xr[1])), e.transpose(w, (*wr[2:], wr[1], wr[0]))
    y = wall(_nhwc_conv(e, wall(xt), wall(wt), a))
    order = (0, 3, 1, 2)   # [b, o, p...] from [b, p..., o]
    return e.transpose(y, tuple(order[yr.index(d)] for d in range(4)))


def _dense_as_nhwc_conv(e: Emitter, m: Match) -> Value | None:
    """A forward conv or input gradient (fewer kernel taps than output positions, not a stride-1 1x1 conv, which
    pointwise_matmul takes) with enough rows and input channels, as IREE's NHWC convolution."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    if not _static(x, w, out) or _static_pads(a) is None or _is_plain(a) and _is_pointwise(w, a):
        return None
    xr, wr, yr = _operand_roles(a)
    taps = math.prod(w.type.shape[d] for d in wr[2:])
    positions = math.prod(out.type.shape[d] for d in yr[2:])
    rows = x.type.shape[xr[0]] * positions
    if taps > positions or rows < DIRECT_MIN_ROWS or x.type.shape[xr[1]] < DIRECT_MIN_CHANNELS:
        return None
    return _as_nhwc(e, x, w, a)


def _is_pointwise(w: Value, a: od.ConvolutionAttrs) -> bool:
    return all(w.type.shape[d] == 1 for d in _spatial(a.rhs_layout, "O", "I"))


def _depthwise_as_nhwc_conv(e: Emitter, m: Match) -> Value | None:
    """A depthwise conv or its input gradient with DEPTHWISE_MIN_TAPS or more kernel taps as IREE's NHWC
    (feature-grouped) convolution instead of conv_forms' taps."""
    x, w, out = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    c = x.type.shape[a.lhs_layout.index("C")]
    if not _static(x, w, out) or _static_pads(a) is None or a.feature_group_count != c \
            or math.prod(w.type.shape[d] for d in _spatial(a.rhs_layout, "O", "I")) < DEPTHWISE_MIN_TAPS:
        return None
    return _as_nhwc(e, x, w, a)


DENSE_RULES = (
    Rule("dense_conv_as_matmul", Op("convolution", (Var("x"), Var("w")), attrs=_is_dense_elsewhere), _dense_as_matmul,
         "convolution without groups (KxK, strided, or a gradient) -> gathered windows, one dot_general"),
)

NHWC_RULES = (
    Rule("depthwise_conv_as_nhwc", Op("convolution", (Var("x"), Var("w")), attrs=_is_depthwise),
         _depthwise_as_nhwc_conv,
         "depthwise conv or input gradient with a 7x7 or larger kernel -> NHWC/HWIO grouped convolution"),
    Rule("dense_conv_as_nhwc", Op("convolution", (Var("x"), Var("w")), attrs=_is_dense_elsewhere), _dense_as_nhwc_conv,
         "forward conv or input gradient, 512 or more rows and 16 or more input channels -> NHWC/HWIO convolution "
         "(summed over chunks of at most 64 input channels where the kernel is large)"),
)

CONV_FORMS = register_pass(Pass("conv_forms", "rewrite depthwise convolutions as per-tap multiply-adds, which IREE "
                                              "and XLA run faster than grouped convolutions", "primitive", RULES))
POINTWISE_MATMUL = register_pass(Pass(
    "pointwise_matmul", "rewrite 1x1 convolutions and their gradients as NCHW batched matmuls, which IREE runs "
                        "faster (XLA:CPU slower: the JAX backend's default pipeline leaves it out)", "primitive",
    POINTWISE_RULES))
NHWC_CONV = register_pass(Pass(
    "nhwc_conv", "rewrite large forward convolutions and input gradients without groups, and 7x7 depthwise ones, as "
                 "NHWC/HWIO convolutions, which IREE runs near peak (before conv_forms, pointwise_matmul and "
                 "dense_matmul, which take the rest)", "primitive", NHWC_RULES))
DENSE_MATMUL = register_pass(Pass(
    "dense_matmul", "rewrite the remaining convolutions without groups (KxK or strided, forward and gradients) as "
                    "one matmul over gathered windows, which IREE runs faster (XLA:CPU has its own)", "primitive",
    DENSE_RULES))
DEPTHWISE_WEIGHT_GRAD_DOTS = register_pass(Pass(
    "depthwise_weight_grad_dots", "rewrite depthwise weight gradients (batch-grouped convolutions) as one "
                                  "dot_general per kernel tap, batched over the channels (IREE's GPU targets)",
    "primitive", (Rule("depthwise_weight_grad_as_dots",
                       Op("convolution", (Var("x"), Var("ct")), attrs=_is_depthwise_weight_grad),
                       functools.partial(_weight_grad_taps, as_dots=True),
                       "convolution with batch_group_count = C (a depthwise weight gradient) -> per-tap dot_general "
                       "batched over C"),)))
