"""Convolutions cropped to the kernel taps and output positions that meet the input, not only its padding.

On small maps much of a convolution reads padding: a 3x3 kernel on a 1x1 map meets the input with its centre tap
only (ResNet's last stage at 32x32 images, EfficientNet's and MobileNet's last stages), a 7x7 one on a 2x2 map with
3x3 of its taps (ConvNeXt), and a weight gradient there (a convolution whose output is the kernel) is zero at those
taps. `conv_crop` slices the kernel (or the cotangent a weight gradient slides) down to the taps that meet the input,
computes only the output positions that do, and pads the result back with zeros: the same values, without the
multiplies by padding. A 3x3 convolution on a 1x1 map becomes a 1x1 one, which the later passes make a matmul.
"""
from __future__ import annotations

import attrs

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.conv_forms import _at, _slice_dims, _spatial, _static
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter


@attrs.frozen
class _Crop:
    """One spatial dim's crop: window taps [t0, t1], output positions [o0, o1], input elements [x0, x1), padding."""
    t0: int
    t1: int
    o0: int
    o1: int
    x0: int
    x1: int
    pad: tuple[int, int]


def _crop_dim(size: int, window: int, out: int, pad: tuple[int, int], stride: int, lhs_dil: int,
              rhs_dil: int) -> _Crop | None:
    """The crop of one spatial dim (None where the first and last taps and positions meet the input, or none does)."""
    lo = pad[0]

    def real(p: int) -> bool:
        return p >= lo and (p - lo) % lhs_dil == 0 and (p - lo) // lhs_dil < size

    hits = [[real(o * stride + t * rhs_dil) for t in range(window)] for o in range(out)]
    taps = [t for t in range(window) if any(row[t] for row in hits)]
    positions = [o for o in range(out) if any(hits[o])]
    if not taps:
        return None
    t0, t1, o0, o1 = taps[0], taps[-1], positions[0], positions[-1]
    if (t0, t1, o0, o1) == (0, window - 1, 0, out - 1):   # dead taps inside the range stay
        return None
    first, last = o0 * stride + t0 * rhs_dil - lo, o1 * stride + t1 * rhs_dil - lo   # in the dilated input
    x0, x1 = (max(first, 0), min(last, size - 1) + 1) if lhs_dil == 1 else (0, size)
    new_pad = (x0 - first, last - (x1 - 1) * lhs_dil) if lhs_dil == 1 else (-first, last - (size - 1) * lhs_dil)
    return None if min(new_pad) < 0 else _Crop(t0, t1, o0, o1, x0, x1, new_pad)


def _cropped(e: Emitter, m: Match) -> Value | None:
    x, w, y = m["x"], m["w"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    if not _static(x, w, y) or not all(isinstance(p, int) for pair in a.padding for p in pair):
        return None
    xs, ws, ys = _spatial(a.lhs_layout, "N", "C"), _spatial(a.rhs_layout, "O", "I"), _spatial(a.out_layout, "N", "C")
    crops = [_crop_dim(x.type.shape[xd], w.type.shape[wd], y.type.shape[yd], a.padding[k], a.window_strides[k],
                       a.lhs_dilation[k], a.rhs_dilation[k]) for k, (xd, wd, yd) in enumerate(zip(xs, ws, ys))]
    if not any(crops):
        return None
    keep = [c or _Crop(0, w.type.shape[wd] - 1, 0, y.type.shape[yd] - 1, 0, x.type.shape[xd], a.padding[k])
            for k, (c, xd, wd, yd) in enumerate(zip(crops, xs, ws, ys))]
    x_c = _slice_dims(e, x, xs, [(c.x0, c.x1) for c in keep])
    w_c = _slice_dims(e, w, ws, [(c.t0, c.t1 + 1) for c in keep])
    y_c = e.op("convolution", x_c, w_c, attrs=attrs.evolve(a, padding=tuple(c.pad for c in keep)))
    if all((c.o0, c.o1) == (0, y.type.shape[yd] - 1) for c, yd in zip(keep, ys)):
        return y_c
    low = _at(ys, [c.o0 for c in keep], 0, y.type.rank)
    high = _at(ys, [y.type.shape[yd] - 1 - c.o1 for c, yd in zip(keep, ys)], 0, y.type.rank)
    return e.op("pad", y_c, e.scalar(0.0, y.type.dtype), attrs=od.PadAttrs(low, high, [0] * y.type.rank))


CONV_CROP = register_pass(Pass(
    "conv_crop", "crop convolutions to the kernel taps and output positions that meet the input, not only its "
                 "padding (small maps); the rest of the output is zeros", "primitive",
    (Rule("conv_crop_to_input", Op("convolution", (Var("x"), Var("w"))), _cropped,
          "convolution whose kernel taps or output positions read only padding -> the convolution of the taps "
          "and positions that meet the input, zero-padded back"),)))
