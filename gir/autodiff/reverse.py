"""The reverse-mode pass: walk nodes in reverse topological order, let each node's adjoint emit
backward nodes into the same graph, and sum the cotangents of values used more than once."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import attrs

from gir.autodiff.registry import ADJOINTS, NOT_DIFFERENTIABLE, AdjointError
from gir.ir.graph import Graph, Loc, Node, Value
from gir.shapes.emit import Emitter
from gir.shapes.dims import Constraints
from gir.shapes.errors import ShapeError


@attrs.define
class Backward:
    """What a reverse pass built: the gradient of each requested input (None when nothing reached
    it), each forward node's input cotangents as its adjoint returned them, and each value's
    summed cotangent (the fan-in of all its uses)."""

    grads: dict[Value, Optional[Value]]
    contributions: dict[Node, tuple[Optional[Value], ...]] = attrs.field(factory=dict)
    cotangents: dict[Value, Value] = attrs.field(factory=dict)
    parts: dict[Value, list[Value]] = attrs.field(factory=dict)
    active: set[Value] = attrs.field(factory=set)
    forward_nodes: list[Node] = attrs.field(factory=list)


def _active(nodes: Sequence[Node], wrt: Sequence[Value]) -> set[Value]:
    """Floating-point values that depend on `wrt`: the only ones that carry cotangents."""
    active = {v for v in wrt if v.type.dtype.is_float}
    for n in nodes:
        if any(v in active for v in n.inputs):
            active.update(o for o in n.outputs if o.type.dtype.is_float)
    return active


def backprop(graph: Graph, nodes: Sequence[Node], seeds: Mapping[Value, Value], wrt: Sequence[Value],
             owner: Node | None = None, constraints: Constraints = Constraints()) -> Backward:
    """Emits the backward pass of `nodes` (a topologically ordered part of `graph`) for the given
    output cotangents and returns the cotangents of `wrt`. Backward nodes record the forward node
    whose adjoint made them, or `owner` when one layer op is differentiated through its decomposition."""
    active = _active(nodes, wrt)
    parts: dict[Value, list[Value]] = {}
    for v, ct in seeds.items():
        if ct.type != v.type:
            raise AdjointError(f"the seed cotangent of {v.name or 'an output'} has type {ct.type}, not {v.type}")
        parts.setdefault(v, []).append(ct)
    out = Backward({}, parts=parts, active=active, forward_nodes=list(nodes))

    def total(v: Value, e: Emitter) -> Optional[Value]:
        """The summed cotangent of v (emitted once, when its producer is reached)."""
        if v in out.cotangents:
            return out.cotangents[v]
        got = parts.get(v)
        if not got:
            return None
        acc = got[0]
        for ct in got[1:]:
            acc = e.add(acc, ct)
        out.cotangents[v] = acc
        return acc

    for node in reversed(nodes):
        if not any(o in active for o in node.outputs):
            continue
        e = Emitter(graph, node.loc, owner or node, constraints)
        cts = tuple(total(o, e) if o in active else None for o in node.outputs)
        if all(ct is None for ct in cts):
            continue
        if node.op in NOT_DIFFERENTIABLE:
            raise AdjointError(f"{node.op} at {node.loc} is not differentiable: {NOT_DIFFERENTIABLE[node.op]}")
        rule = ADJOINTS.get(node.op)
        if rule is None:
            raise AdjointError(f"no adjoint registered for {node.op} (at {node.loc})")
        try:
            got = tuple(rule(e, node, cts))
        except ShapeError as err:
            raise AdjointError(f"the adjoint of {node.op} at {node.loc} built an ill-typed node: {err}") from None
        if len(got) != len(node.inputs):
            raise AdjointError(f"the adjoint of {node.op} at {node.loc} returned {len(got)} cotangents for "
                               f"{len(node.inputs)} inputs")
        out.contributions[node] = got
        for v, ct in zip(node.inputs, got):
            if ct is not None and v in active:
                parts.setdefault(v, []).append(ct)
    for v in wrt:
        e = Emitter(graph, Loc(path=v.name), owner, constraints)
        out.grads[v] = total(v, e)
    return out


def vjp(graph: Graph, seeds: Mapping[str, Value], wrt: Sequence[Value],
        constraints: Constraints = Constraints()) -> Backward:
    """Appends to `graph` the vector-Jacobian product of its named outputs (cotangents `seeds`)
    with respect to `wrt`. Output names that share a value have their cotangents summed."""
    by_value: dict[Value, Value] = {}
    for name, ct in seeds.items():
        v = graph.outputs[name]
        prev = by_value.get(v)
        by_value[v] = ct if prev is None else Emitter(graph, Loc(path=name), None, constraints).add(prev, ct)
    return backprop(graph, list(graph.nodes), by_value, wrt, constraints=constraints)


def grad(graph: Graph, loss: str = "loss", wrt: Sequence[Value] | None = None,
         constraints: Constraints = Constraints()) -> Backward:
    """Appends the gradient of the scalar output `loss` w.r.t. `wrt` (default: the parameters) and
    names each gradient `grad:<input name>` among the graph's outputs. An input the loss does not
    depend on gets a zero gradient."""
    y = graph.outputs[loss]
    if y.type.rank != 0 or not y.type.dtype.is_float:
        raise AdjointError(f"grad needs a float scalar output; {loss!r} is {y.type}")
    wrt = list(graph.params if wrt is None else wrt)
    seed = Emitter(graph, Loc(path=loss), None, constraints).const(1.0, y)
    back = vjp(graph, {loss: seed}, wrt, constraints)
    for v in wrt:
        g = back.grads[v]
        if g is None:
            g = back.grads[v] = Emitter(graph, Loc(path=v.name), None, constraints).zeros(v)
        graph.set_output(f"grad:{v.name}", g)
    return back
