"""Common-subexpression elimination: one node per (op, inputs, attributes, result types)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gir.ir.graph import Graph, Node, Value
from gir.rewrite.driver import Context, Pass, dead_code_elimination, rebuild, register_pass
from gir.rewrite.pattern import COMMUTATIVE


def node_key(node: Node) -> tuple[Any, ...]:
    """What makes two nodes compute the same thing. Constants key on repr(value), so 0.0 and -0.0
    stay apart; inputs of commutative ops are unordered."""
    ids = [v.id for v in node.inputs]
    if node.op in COMMUTATIVE:
        ids.sort()
    a = node.attrs
    if node.op == "constant":
        a = (repr(a.value), a.type)
    return node.op, tuple(ids), a, tuple(v.type for v in node.outputs)


def common_subexpression_elimination(graph: Graph, ctx: Context) -> Graph:
    seen: dict[tuple[Any, ...], Node] = {}

    def visit(out: Graph, cand: Node, uses: Callable[[Value], int]) -> tuple[Value, ...] | None:
        key = node_key(cand)
        prev = seen.get(key)
        if prev is None:
            seen[key] = cand
            return None
        ctx.record("cse", "duplicate", cand)
        return prev.outputs

    return dead_code_elimination(rebuild(graph, visit)[0])


register_pass(Pass("cse", "merge nodes that apply the same op with the same attributes to the same inputs",
                   "any", transform=common_subexpression_elimination))
