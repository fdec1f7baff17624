"""Matmul forms IREE runs faster than the dot_generals autodiff writes.

`weight_grad_matmul` (IREE only): a dense layer's weight gradient, dw = x^T dy, contracts the leading (batch and
token) dims of both operands. IREE's CPU matmul runs that order, and the one it transposes it to ([M, K] by [K, N]),
2-3x slower than [M, K] by [N, K] once the operands outgrow the cache (ViT-Tiny at batch 64: 12,608 tokens by 192
and 768 features, 122 ms against 28 ms), while on small operands the transposes cost more than the order saves
(docs/performance.md). So large ones are rewritten as both operands transposed to [M, K] and [N, K] and one 2-D
matmul, behind optimization barriers, which keep IREE from folding the transposes back.

`large_rhs_matmul` (IREE only): a matmul whose right operand is a large [K, N] matrix contracted on its rows (a dense
layer's forward, x @ w) runs 1.6-3.8x slower on IREE's CPU than the same product with the operand copied to [N, K]
first, copy included, whatever the rows of x (64 to 4,096; ConvNeXt-T's last stage, 768 by 3,072). So such operands
are transposed behind a barrier; the matmul's consumers (bias, GELU) still fuse into it.

`nn_matmul` (IREE on AVX2 CPUs): the [M, K] x [N, K] order the passes above write is the one IREE runs fastest on
AVX-512 CPUs; on AVX2 ones it runs [M, K] x [K, N] about twice as fast, so large products are turned back into it.

`long_contraction_matmul` (IREE only): an [M, K] x [N, K] matmul over a long K (a convolution's weight gradient
contracts every pixel of the batch: 100,352 for mnist_cnn at batch 128) streams both operands from memory, for it
does not block K for the cache. Split into chunks of `CONTRACTION_CHUNK` summed, with the operand of more rows
first, it runs 1.2-2x faster (64x800x100,352: 83-93 GFLOP/s -> 182; docs/performance.md).
"""
from __future__ import annotations

import functools
import math

from gir.ir import opdefs as od
from gir.ir.graph import Value
from gir.ir.dtypes import DType
from gir.rewrite.conv_forms import _slice_dims, _static, _walled_matmul
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter

LARGE_OPERANDS = 2 ** 21
"""Elements of both operands together (8 MiB of float32, twice this CPU's 4 MiB of L2) from which a weight gradient
is rewritten, and of a [K, N] right operand alone from which `large_rhs_matmul` transposes it. Weight gradients
measured per shape (M x N x K, natural order against transposed, ms, bench/dot_orders.py): above it
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


def _contracts_rhs_rows(a: od.DotGeneralAttrs) -> bool:
    """No batch dims, and one contracted dim on each side, the right operand's first: x[..., K] @ w[K, N]."""
    return not a.lhs_batch and len(a.lhs_contract) == 1 and a.rhs_contract == (0,)


def _large_rhs_as_nt(e: Emitter, m: Match) -> Value | None:
    """x[..., K] @ w[K, N] as x @ barrier(w^T)[N, K] contracting w^T's last dim, when w is a large matrix and x
    contracts its last dim. Measured with bench/dot_orders.py's shapes (x rows by N by K, ms, natural / transposed):
    at 2.4 million weight elements 64x768x3072 11.0 / 2.9, 1024x3072x768 68 / 30, 4096x768x3072 316 / 115; at 1.2
    million between 0.5x and 1.9x; at 0.6 million and below the copy costs more (256x384x1536 2.2 / 2.7)."""
    x, w = m["x"], m["w"]
    if not _static(x, w, m.node.outputs[0]) or w.type.rank != 2 or m.node.attrs.lhs_contract != (x.type.rank - 1,):
        return None
    if math.prod(w.type.shape) < LARGE_OPERANDS:
        return None
    rows = e.op("optimization_barrier", e.transpose(w, (1, 0)))
    return e.op("dot_general", x, rows, attrs=od.DotGeneralAttrs((), (), (x.type.rank - 1,), (1,)))


CONTRACTION_CHUNK = 4096
"""Contracted elements per chunk of `long_contraction_matmul` (the last chunk takes the rest); it splits contractions
of twice this or more. Chunks of 2,048 and 4,096 ran alike (64x576x131,072: 164 and 165 GFLOP/s), 8,192 and 16,384
slower (153, 140), the whole 122-139. Chunks start at multiples of it: 64x800x100,352 in 25 chunks of 4,014 ran at
139 GFLOP/s, in chunks of 4,096 at 179."""


def _contracts_last_dims(a: od.DotGeneralAttrs) -> bool:
    """No batch dims, each operand contracted on its dim 1: lhs[M, K] x rhs[N, K] for 2-D operands."""
    return not a.lhs_batch and a.lhs_contract == (1,) and a.rhs_contract == (1,)


def _long_contraction_in_chunks(e: Emitter, m: Match) -> Value | None:
    """lhs[M, K] x rhs[N, K] as the sum of the products of K's chunks, the operand with more rows first (its product
    transposed back behind a barrier): IREE then reads each chunk of the smaller operand from the cache."""
    lhs, rhs, out = m["lhs"], m["rhs"], m.node.outputs[0]
    if not _static(lhs, rhs, out) or lhs.type.rank != 2 or rhs.type.rank != 2:
        return None
    k = lhs.type.shape[1]
    if k < 2 * CONTRACTION_CHUNK:
        return None
    swap = rhs.type.shape[0] > lhs.type.shape[0]
    first, second = (rhs, lhs) if swap else (lhs, rhs)
    bounds = [(i, min(i + CONTRACTION_CHUNK, k)) for i in range(0, k, CONTRACTION_CHUNK)]
    attrs = od.DotGeneralAttrs((), (), (1,), (1,))
    parts = [e.op("dot_general", _slice_dims(e, first, [1], [b]), _slice_dims(e, second, [1], [b]), attrs=attrs)
             for b in bounds]
    total = functools.reduce(e.add, parts)
    return e.transpose(e.op("optimization_barrier", total), (1, 0)) if swap else total


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

LARGE_RHS_RULES = (
    Rule("large_rhs_as_nt_matmul", Op("dot_general", (Var("x"), Var("w")), attrs=_contracts_rhs_rows), _large_rhs_as_nt,
         "x[..., K] @ w[K, N] with w of 2^21 elements or more -> x @ w^T[N, K] contracting its last dim, the "
         "transpose behind a barrier"),
)

LARGE_RHS_MATMUL = register_pass(Pass(
    "large_rhs_matmul", "copy a large [K, N] right matmul operand (a dense layer's weight in its forward) to [N, K] "
                        "first, the order IREE's CPU matmul runs 1.6-3.8x faster at that size", "primitive",
    LARGE_RHS_RULES))

LONG_CONTRACTION_RULES = (
    Rule("long_contraction_in_chunks", Op("dot_general", (Var("lhs", DType.f32), Var("rhs", DType.f32)),
                                          attrs=_contracts_last_dims), _long_contraction_in_chunks,
         f"f32 lhs[M, K] x rhs[N, K] with K >= {2 * CONTRACTION_CHUNK} -> the products of K's chunks of "
         f"{CONTRACTION_CHUNK} (the last the rest) summed, the operand of more rows first (transposed back behind a "
         "barrier)"),
)

LONG_CONTRACTION_MATMUL = register_pass(Pass(
    "long_contraction_matmul", "split [M, K] x [N, K] matmuls over a long K (convolution weight gradients) into "
                               "chunks of K summed, which IREE's CPU matmul runs from the cache", "primitive",
    LONG_CONTRACTION_RULES))


NN_MIN_FLOPS = 2 ** 27
"""`nn_matmul` takes products of at least this many FLOPs (2 M N K): on a Zen 3 pair (AVX2) IREE's CPU matmul ran
[M, K] x [K, N] 2.1x faster than [M, K] x [N, K] (mnist_cnn's weight-gradient chunks, 800x64x4096: 6.7 against
14.2 ms; cifar_cnn's 2304x256x2048 in that order 33 against 64-69 ms as 256x2304x2048), while a smaller product
(a stem convolution's weight gradient) saves less than its extra transpose and barrier dispatches cost."""


def _nt_as_nn(e: Emitter, m: Match) -> Value | None:
    """lhs[M, K] x rhs[N, K] as lhs @ rhs^T[K, N] (the operand of fewer rows transposed, behind a barrier; where that
    is lhs, the product is taken the other way round and transposed back), for products of NN_MIN_FLOPS or more."""
    lhs, rhs, out = m["lhs"], m["rhs"], m.node.outputs[0]
    if not _static(lhs, rhs, out) or lhs.type.rank != 2 or rhs.type.rank != 2:
        return None
    (rows, k), cols = lhs.type.shape, rhs.type.shape[0]
    if 2 * rows * cols * k < NN_MIN_FLOPS:
        return None
    if cols <= rows:
        return _walled_matmul(e, lhs, e.transpose(rhs, (1, 0)), 0)
    return e.transpose(_walled_matmul(e, rhs, e.transpose(lhs, (1, 0)), 0), (1, 0))


NN_RULES = (
    Rule("nt_as_nn_matmul", Op("dot_general", (Var("lhs", DType.f32), Var("rhs", DType.f32)),
                               attrs=_contracts_last_dims), _nt_as_nn,
         f"f32 lhs[M, K] x rhs[N, K] of 2^{NN_MIN_FLOPS.bit_length() - 1} FLOPs or more -> lhs @ rhs^T[K, N], the "
         "operand of fewer rows transposed behind a barrier"),
)

NN_MATMUL = register_pass(Pass(
    "nn_matmul", "rewrite large [M, K] x [N, K] matmuls as [M, K] x [K, N], the order IREE's CPU matmul runs 2x "
                 "faster on AVX2 CPUs (the default pipeline there: default_avx2)", "primitive", NN_RULES))
