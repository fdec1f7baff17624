"""Matmul forms IREE runs faster than the dot_generals autodiff writes.

`weight_grad_matmul` (IREE only): a dense layer's weight gradient, dw = x^T dy, contracts the leading (batch and
token) dims of both operands. IREE's CPU matmul runs that order, and the one it transposes it to ([M, K] by [K, N]),
2-3x slower than [M, K] by [N, K] once the operands outgrow the cache (ViT-Tiny at batch 64: 12,608 tokens by 192
and 768 features, 122 ms against 28 ms), while on small operands the transposes cost more than the order saves
(docs/performance.md). So large ones are rewritten as both operands transposed to [M, K] and [N, K] and one 2-D
matmul, behind optimization barriers, which keep IREE from folding the transposes back.
"""
from __future__ import annotations

import math

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.rewrite.conv_forms import _static, _walled_matmul
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

LARGE_OPERANDS = 2 ** 21
"""Elements of both operands together (8 MiB of float32, twice this CPU's 4 MiB of L2) from which a weight gradient
is rewritten. Measured per shape (M x N x K, natural order against transposed, ms, bench/dot_orders.py): above it
192x768x12608 114 / 33, 192x768x3152 20 / 7.2; just under it (1.97 million elements) 768x192x2048 and 96x384x4096
between 0.87x and 1.76x across runs; below it 192x576x1576 4.0 / 7.9, 192x768x1576 4.2 / 8.0."""


def _contracts_leading_dims(a: od.DotGeneralAttrs) -> bool:
    """No batch dims, and both operands contract the same number of leading dims, in order: dw = x^T dy."""
    lead = tuple(range(len(a.lhs_contract)))
    return not a.lhs_batch and bool(lead) and a.lhs_contract == lead and a.rhs_contract == lead


def _rows_by_contraction(e: Emitter, x: Value, k: int) -> Value:
    """x[k leading contracted dims..., free dims...] as a [free, contracted] matrix."""
    shape = x.type.shape
    moved = e.transpose(x, (*range(k, len(shape)), *range(k)))
    return e.reshape(moved, (math.prod(shape[k:]), math.prod(shape[:k])))


def _weight_grad_as_nt_matmul(e: Emitter, m: Match) -> Value | None:
    """dw[M, N] = sum over K of x[K, M] dy[K, N] as x^T [M, K] times dy^T [N, K], when the operands are large."""
    x, dy, out = m["x"], m["dy"], m.node.outputs[0]
    if not _static(x, dy, out):
        return None
    k = len(m.node.attrs.lhs_contract)
    if math.prod(x.type.shape) + math.prod(dy.type.shape) < LARGE_OPERANDS:
        return None
    y = _walled_matmul(e, _rows_by_contraction(e, x, k), _rows_by_contraction(e, dy, k), 1)
    return e.reshape(y, out.type.shape)


RULES = (
    Rule("weight_grad_as_nt_matmul", Op("dot_general", (Var("x"), Var("dy")), attrs=_contracts_leading_dims),
         _weight_grad_as_nt_matmul,
         "dot_general contracting the leading dims of both operands (a weight gradient), operands of 2^21 elements "
         "or more -> both transposed to [M, K] and [N, K], one 2-D matmul behind barriers"),
)

WEIGHT_GRAD_MATMUL = register_pass(Pass(
    "weight_grad_matmul", "rewrite large dense weight gradients (dot_generals contracting the leading dims of both "
                          "operands) as [M, K] x [N, K] matmuls, the order IREE's CPU matmul runs fastest there "
                          "(XLA:CPU has its own)", "primitive", RULES))
