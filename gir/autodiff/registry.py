"""The adjoint (VJP) table: one entry per op, keyed by op name, like the shape and lowering tables.

An adjoint is `fn(e, node, cts) -> input cotangents`: `e` emits backward nodes (they record
`node` as the forward node whose adjoint made them), `cts` holds one cotangent per output of
`node` (None where that output has none), and the result holds one cotangent per input (None for
inputs that get none, e.g. integer labels).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from gir.ir import opdefs as od
from gir.ir.graph import Node, Value
from gir.ir.ops import rule_registrar
from gir.shapes.emit import Emitter

Cotangents = Sequence[Optional[Value]]
Adjoint = Callable[[Emitter, Node, tuple[Optional[Value], ...]], Cotangents]

ADJOINTS: dict[str, Adjoint] = {}
NOT_DIFFERENTIABLE: dict[str, str] = {
    "compare": "its result is boolean",
    **{name: "it works on integer bits" for name in od.ELEMENTWISE_BITWISE},
    "random_bits": "its result is integer bits that depend on no float input",
    "iota": "it has no operands and an integer result",
    "constant": "it has no operands",
}
"""Ops that have no adjoint, and why. The reverse pass never needs one: their results are not
floating point or they have no operands."""


class AdjointError(Exception):
    """An op that cannot be differentiated here, or an adjoint that broke its contract."""


adjoint = rule_registrar(ADJOINTS)
"""`@adjoint("op", ...)` registers the function as the adjoint of each op."""
