"""Convolution forms IREE runs faster. A depthwise conv's weight gradient, written as a convolution
with batch_group_count = C (input features as the batch), becomes one strided slice of the padded
input per kernel tap, multiplied by the cotangent and summed over batch and space: k*k
elementwise-and-reduce dispatches that IREE fuses well, instead of a grouped convolution it lowers
slowly (2-3.5x on MobileNetV2's shapes; docs/performance.md).
"""
from __future__ import annotations

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

MAX_TAPS = 49


def _is_depthwise_weight_grad(a: od.ConvolutionAttrs) -> bool:
    return (a.batch_group_count > 1 and a.feature_group_count == 1 and (a.lhs_layout, a.rhs_layout, a.out_layout)
            == ("CNHW", "IOHW", "CNHW") and all(d == 1 for d in a.lhs_dilation))


def _taps(e: Emitter, m: Match) -> Value | None:
    """out[c, 0, i, j] = sum over n, h, w of xpad[n, c, i*d + h*s, j*d + w*s] * ct[n, c, h, w], where the
    gradient conv's window stride is the forward dilation d and its rhs dilation the forward stride s."""
    x, ct, out = m["x"], m["ct"], m.node.outputs[0]
    a: od.ConvolutionAttrs = m.node.attrs
    n, c, _, _ = x.type.shape
    kh, kw = out.type.shape[2:]
    if not all(isinstance(v, int) for v in (*x.type.shape, *ct.type.shape, kh, kw)) or c != a.batch_group_count \
            or tuple(out.type.shape[:2]) != (c, 1) or kh * kw > MAX_TAPS \
            or not all(isinstance(p, int) for pair in a.padding for p in pair) or min(lo for lo, _ in a.padding) < 0:
        return None
    (plo_h, phi_h), (plo_w, phi_w) = ((lo, max(hi, 0)) for lo, hi in a.padding)  # a negative high pad: unread rows
    xp = e.op("pad", x, e.scalar(0.0, x.type.dtype), attrs=od.PadAttrs((0, 0, plo_h, plo_w), (0, 0, phi_h, phi_w),
                                                                      (0, 0, 0, 0)))
    (dh, dw), (sh, sw) = a.window_strides, a.rhs_dilation
    ho, wo = ct.type.shape[2:]
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = e.op("slice", xp, attrs=od.SliceAttrs((0, 0, i * dh, j * dw),
                                                           (n, c, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1),
                                                           (1, 1, sh, sw)))
            taps.append(e.reshape(e.reduce(e.mul(window, ct), "sum", (0, 2, 3)), (c, 1)))
    stacked = taps[0] if len(taps) == 1 else e.op("concatenate", *taps, attrs=od.ConcatAttrs(1))
    return e.reshape(stacked, out.type.shape)


RULES = (
    Rule("depthwise_weight_grad_as_taps", Op("convolution", (Var("x"), Var("ct")), attrs=_is_depthwise_weight_grad),
         _taps, "convolution with batch_group_count = C (a depthwise weight gradient) -> per-tap multiply + reduce"),
)

CONV_FORMS = register_pass(Pass("conv_forms", "rewrite depthwise weight gradients (batch-grouped convolutions) as "
                                              "per-tap multiply-and-reduce, which IREE runs faster", "primitive", RULES))
