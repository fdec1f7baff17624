"""A readable text form of a graph: one line per node with its type, layer path and source line."""
from __future__ import annotations

from typing import Any

import attrs
import sympy

from gir.ir.graph import Graph, Value
from gir.ir.types import TensorType, format_dim


def format_attr(v: Any) -> str:
    if isinstance(v, TensorType):
        return str(v)
    if isinstance(v, sympy.Basic):
        return format_dim(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(format_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if hasattr(v, "value") and hasattr(v, "name") and not isinstance(v, (int, float, str)):  # enums
        return str(v.value)
    return repr(v)


def format_attrs(a: Any) -> str:
    """`{stride=(2, 2), padding='same'}`, or '' for ops without attributes."""
    if a is None:
        return ""
    fields = attrs.fields(type(a))
    return "{" + ", ".join(f"{f.name}={format_attr(getattr(a, f.name))}" for f in fields) + "}"


class ValueNames:
    """Stable printable names: inputs by their name, node outputs numbered in node order."""

    def __init__(self, graph: Graph):
        self.names: dict[Value, str] = {v: f"%{v.name}" for v in graph.inputs}
        for k, node in enumerate(graph.nodes):
            for i, v in enumerate(node.outputs):
                self.names[v] = f"%{k}" if len(node.outputs) == 1 else f"%{k}#{i}"

    def __getitem__(self, v: Value) -> str:
        return self.names.get(v, f"%?{v.id}")


def print_graph(graph: Graph) -> str:
    names = ValueNames(graph)
    node_index = {n: k for k, n in enumerate(graph.nodes)}
    lines = [f"graph {graph.name}("]
    for v in graph.inputs:
        lines.append(f"    {names[v]}: {v.type}  [{v.role}]")
    lines.append(") {")
    for node in graph.nodes:
        outs = ", ".join(names[v] for v in node.outputs)
        args = ", ".join(names[v] for v in node.inputs)
        types = ", ".join(str(v.type) for v in node.outputs)
        attr_s = format_attrs(node.attrs)
        note = [p for p in (node.loc.path, node.loc.where()) if p]
        if node.adjoint_of is not None:
            src = node.adjoint_of
            note.insert(0, f"adjoint of {src.op} %{node_index.get(src, '?')}")
        comment = f"  # {'  '.join(note)}" if note else ""
        lhs = f"{outs} = " if outs else ""
        lines.append(f"  {lhs}{node.op}({args}){(' ' + attr_s) if attr_s else ''} : {types}{comment}")
    lines.append("  return {")
    lines += [f"    {k}: {names[v]}" for k, v in graph.outputs.items()]
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines)
