"""The bf16 policy: matmul (and with bf16_conv, convolution) operands are cast to bf16, the op runs
in bf16 and its result is cast back to f32. Everything else — parameters, optimizer state, BN
statistics, reductions, the loss — stays f32; the casts survive to the emitted StableHLO.
"""
from __future__ import annotations

from gir.ir.dtypes import DType
from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Match, Op, Var
from gir.shapes.emit import Emitter


def _in_bf16(e: Emitter, m: Match) -> Value:
    lhs, rhs = (e.convert(m[k], DType.bf16) for k in ("lhs", "rhs"))
    return e.convert(e.op(m.node.op, lhs, rhs, attrs=m.node.attrs), DType.f32)


def _rule(op: str) -> Rule:
    return Rule(f"{op}_in_bf16", Op(op, (Var("lhs", DType.f32), Var("rhs", DType.f32))), _in_bf16,
                f"{op} of f32 operands -> convert(f32, {op}(convert(bf16, lhs), convert(bf16, rhs)))")


BF16 = register_pass(Pass("bf16", "run matmuls (dot_general) in bf16; their inputs and outputs stay f32",
                          "primitive", (_rule("dot_general"),)))
BF16_CONV = register_pass(Pass("bf16_conv", "run matmuls and every convolution (forward and gradient) in bf16",
                               "primitive", (_rule("dot_general"), _rule("convolution"))))
