"""The layer table behind `gir show`: per node its path, op, output shape, params and MACs."""
from __future__ import annotations

import math
from typing import Mapping

import sympy

from gir.ir.graph import Graph
from gir.ir.types import Dim, format_dim
from gir.shapes.macs import node_macs
from gir.shapes.specialize import bind_dim


def summarize(graph: Graph, binding: Mapping[sympy.Symbol, int] | None = None) -> dict:
    """Rows per node plus totals. MACs stay a formula in the graph's symbols; `binding` also
    gives their value (and concrete shapes in the rows)."""
    binding = dict(binding or {})
    param_of = {v: math.prod(v.type.shape) for v in graph.inputs if v.role == "param"}
    rows = []
    total: Dim = 0
    for node in graph.nodes:
        macs = node_macs(node)
        total = total + macs
        shape = node.outputs[0].type.shape
        if binding:
            shape = tuple(bind_dim(d, binding) for d in shape)
        rows.append({
            "path": node.loc.path,
            "op": node.op,
            "shape": "[" + ",".join(format_dim(d) for d in shape) + "]",
            "params": sum(param_of.get(v, 0) for v in node.inputs),
            "macs": format_dim(macs) if not isinstance(macs, int) else str(macs),
            "where": node.loc.where(),
        })
    total_expr = sympy.factor_terms(sympy.sympify(total))
    out = {
        "name": graph.name,
        "params": sum(param_of.values()),
        "state": sum(math.prod(v.type.shape) for v in graph.inputs if v.role == "state"),
        "bn_layers": sum(1 for n in graph.nodes if n.op == "batch_norm"),
        "nodes": len(graph.nodes),
        "macs": format_dim(total_expr),
        "layers": rows,
    }
    if binding:
        out["binding"] = {str(s): v for s, v in binding.items()}
        out["macs_value"] = int(bind_dim(total_expr, binding)) if not isinstance(total_expr, int) else total_expr
    return out
