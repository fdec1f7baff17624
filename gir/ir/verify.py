"""Structural verifier: the checks any stage's output must pass, naming the stage that broke one."""
from __future__ import annotations

from typing import Callable

from gir.ir.graph import Graph, Node
from gir.ir.ops import get_op
from gir.ir.types import TensorType


class VerifyError(Exception):
    """A graph broke an IR invariant; the message names the stage, node and layer."""


def verify(graph: Graph, stage: str = "", type_rule: Callable[[Node], list[TensorType]] | None = None) -> None:
    """Checks definition before use, arity, attribute types, unique inputs and defined outputs.

    With `type_rule` (the shape stage's inference), also checks each node's output
    types equal what the rule derives from its inputs.
    """
    where = f" after {stage}" if stage else ""
    defined = set()
    names = set()
    for v in graph.inputs:
        if v.name in names:
            raise VerifyError(f"graph {graph.name!r}{where}: duplicate input name {v.name!r}")
        names.add(v.name)
        defined.add(v)
    for node in graph.nodes:
        ctx = f"graph {graph.name!r}{where}: node {node.op} #{node.id} ({node.loc})"
        try:
            opdef = get_op(node.op)
            opdef.check_arity(len(node.inputs))
            opdef.check_attrs(node.attrs)
        except (KeyError, TypeError) as e:
            raise VerifyError(f"{ctx}: {e}") from None
        for i, v in enumerate(node.inputs):
            if v not in defined:
                raise VerifyError(f"{ctx}: input {i} ({v!r}) is used before it is defined or is not in the graph")
        for i, v in enumerate(node.outputs):
            if v.producer is not node or v.index != i:
                raise VerifyError(f"{ctx}: output {i} does not point back at its node")
            defined.add(v)
        if type_rule is not None:
            try:
                want = list(type_rule(node))
            except Exception as e:  # the rule's own error type lives in a higher layer
                raise VerifyError(f"{ctx}: the shape rule rejects this node: {e}") from e
            got = [v.type for v in node.outputs]
            if want != got:
                raise VerifyError(f"{ctx}: output types {[str(t) for t in got]} differ from the shape rule's "
                                  f"{[str(t) for t in want]}")
    for name, v in graph.outputs.items():
        if v not in defined:
            raise VerifyError(f"graph {graph.name!r}{where}: output {name!r} is not defined in the graph")
