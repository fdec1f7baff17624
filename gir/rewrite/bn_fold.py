"""BN folding for eval modules: conv (or dense) followed by batch norm with running statistics
becomes the conv with scaled weights plus a per-channel bias.

y = gamma (conv(x, w) - mean) / sqrt(var + eps) + beta = conv(x, w * s) + (beta - mean s) with
s = gamma / sqrt(var + eps). The scale is applied to the (small) weights in the graph, so the
module still takes the same parameters and state and the full-size activation is touched once.
"""
from __future__ import annotations

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

OUT_AXIS = {"conv2d": 0, "depthwise_conv2d": 0, "dense": 1}
"""The weight axis that indexes output channels."""


def _fold(e: Emitter, m: Match) -> Value | None:
    lin = m["lin"].producer
    if m.uses(m["lin"]) != 1 or m["lin"].type.rank not in (2, 4):
        return None
    x, w = lin.inputs
    bn = m.node.attrs
    scale = e.mul(m["gamma"], e.op("rsqrt", e.add(m["var"], e.const(bn.eps, m["var"]))))
    shift = e.sub(m["beta"], e.mul(m["mean"], scale))
    w_scaled = e.mul(w, e.bcast(scale, w.type.shape, (OUT_AXIS[lin.op],)))
    y = e.at(lin.loc, lin.adjoint_of).op(lin.op, x, w_scaled, attrs=lin.attrs)
    return e.op("bias_add", y, shift, attrs=od.AxisAttrs(1))


RULES = (
    Rule("fold_bn_into_conv",
         Op("batch_norm", (Op(tuple(OUT_AXIS), name="lin"), Var("gamma"), Var("beta"), Var("mean"), Var("var")),
            attrs={"training": False}),
         _fold, "batch_norm(conv(x, w)) with running stats -> bias_add(conv(x, w * s), beta - mean * s)"),
)

BN_FOLD = register_pass(Pass("bn_fold", "fold eval-mode batch norm into the preceding conv, depthwise conv or "
                                        "dense layer (scaled weights + bias)", "layer", RULES))
