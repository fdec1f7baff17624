"""Dense layers' matmuls in the operand orders IREE's CPU matmuls run fastest.

`dot_matmul` (IREE only): a dot_general without batch dims (a dense layer's forward pass, its input gradient or its
weight gradient) becomes one 2-D matmul lhs[M, K] @ rhs behind optimization barriers when its operands are not
already in the order IREE runs fastest: rhs as [K, N] where there are at least ROWS_PER_OUTPUT_FEATURE rows per output
feature, else as [N, K]. The weight gradient is the main case: it contracts the leading (batch, token, pixel) dims
of both operands, which IREE ran as A[KM]B[KN], about half as fast as A[MK]B[NK] (docs/performance.md). A dot_general
already in the fast order is left alone, so nothing walls off the bias and activation that fuse into it.
"""
from __future__ import annotations

import math

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.conv_forms import ROWS_PER_OUTPUT_FEATURE, static, walled_matmul
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter


def _unbatched(a: od.DotGeneralAttrs) -> bool:
    return not a.lhs_batch


def _walled(v: Value) -> bool:
    return v.producer is not None and v.producer.op == "optimization_barrier"


def _dot_as_matmul(e: Emitter, m: Match) -> Value | None:
    """lhs[free..., contract...] as [M, K]; rhs as [K, N] for many rows per output feature, else [N, K]; one
    walled 2-D dot_general, reshaped to the output (lhs's free dims, then rhs's)."""
    a: od.DotGeneralAttrs = m.node.attrs
    lhs, rhs, out = m["lhs"], m["rhs"], m.node.outputs[0]
    if _walled(lhs) or _walled(rhs) or not static(lhs, rhs, out):
        return None
    lfree = tuple(d for d in range(lhs.type.rank) if d not in a.lhs_contract)
    rfree = tuple(d for d in range(rhs.type.rank) if d not in a.rhs_contract)
    rows, depth, cols = (math.prod(v.type.shape[d] for d in dims)
                         for v, dims in ((lhs, lfree), (lhs, a.lhs_contract), (rhs, rfree)))
    wide = rows < ROWS_PER_OUTPUT_FEATURE * cols
    lperm = (*lfree, *a.lhs_contract)
    rperm = (*rfree, *a.rhs_contract) if wide else (*a.rhs_contract, *rfree)
    if lperm == tuple(range(lhs.type.rank)) and rperm == tuple(range(rhs.type.rank)):
        return None   # already lhs[M, K] and rhs in the order wanted
    lm = e.reshape(e.transpose(lhs, lperm), (rows, depth))
    rm = e.reshape(e.transpose(rhs, rperm), (cols, depth) if wide else (depth, cols))
    return e.reshape(walled_matmul(e, lm, rm, 1 if wide else 0), out.type.shape)


RULES = (
    Rule("dot_as_fast_matmul", Op("dot_general", (Var("lhs"), Var("rhs")), attrs=_unbatched), _dot_as_matmul,
         "dot_general without batch dims, operands in a slow order -> one walled 2-D matmul, lhs [M, K], "
         "rhs [K, N] or [N, K]"),
)

DOT_MATMUL = register_pass(Pass(
    "dot_matmul", "rewrite dense layers' dot_generals (forward, input and weight gradients) whose operands IREE reads "
                  "in a slow order as one 2-D matmul in a fast order (IREE only)", "primitive", RULES))
