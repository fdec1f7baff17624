"""Fusion of elementwise chains: consecutive per-channel scales (or shifts) of one tensor become one
scale (or shift) computed on the small operands, so the full-size tensor is read once. This is the
form conv -> BN -> activation chains lower best to: one multiply and one add per activation.
"""
from __future__ import annotations

from gir.ir.graph import Value
from gir.rewrite.driver import Pass, Rule, register_pass
from gir.rewrite.pattern import Const, Match, Op, Var
from gir.shapes.emit import Emitter


def _bcast_chain(e: Emitter, m: Match) -> Value | None:
    """op(op(x, bcast(a)), bcast(b)) -> op(x, bcast(op(a, b))) when both broadcasts place alike."""
    ba, bb = m["ba"].producer.attrs, m["bb"].producer.attrs
    if ba != bb or m["a"].type != m["b"].type or m.uses(m["inner"]) != 1:
        return None
    op = m.node.op
    return e.op(op, m["x"], e.bcast(e.op(op, m["a"], m["b"]), ba.shape, ba.dims))


def _const_chain(e: Emitter, m: Match) -> Value | None:
    """op(op(x, c1), c2) -> op(x, op(c1, c2)); constant folding then makes one constant. A constant x
    is left to folding (else the three constants would rotate forever)."""
    if m.uses(m["inner"]) != 1 or m["x"].producer is not None and m["x"].producer.op == "constant":
        return None
    return e.op(m.node.op, m["x"], e.op(m.node.op, m["c1"], m["c2"]))


def _chain(op: str, rule: str, fn, inner_pat, outer_pat, doc: str) -> Rule:
    return Rule(rule, Op(op, (Op(op, (Var("x"), inner_pat), name="inner"), outer_pat)), fn, doc)


RULES = tuple(
    r for op, what in (("multiply", "scale"), ("add", "shift")) for r in (
        _chain(op, f"{what}_chain", _bcast_chain, Op("broadcast_in_dim", (Var("a"),), name="ba"),
               Op("broadcast_in_dim", (Var("b"),), name="bb"), f"two per-channel {what}s -> one"),
        _chain(op, f"constant_{what}_chain", _const_chain, Const("c1"), Const("c2"), f"two constant {what}s -> one"),
    ))

FUSION = register_pass(Pass("fusion", "fuse chains of per-channel or constant scales and shifts into one "
                                      "multiply/add per tensor", "primitive", RULES))
