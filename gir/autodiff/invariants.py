"""Structural invariants of a built backward pass, checked on what the adjoints emitted rather than
assumed. Each check returns a Finding; a failed one names the op and layer at fault."""
from __future__ import annotations

import attrs

from gir.autodiff.reverse import Backward
from gir.ir.graph import Graph, Node, Value

OP_COUNT_BOUND = 5.0
"""The backward pass may have at most this many primitive ops per forward primitive op."""


@attrs.frozen
class Finding:
    """One invariant's verdict: a one-line summary and, when it failed, one line per violation."""
    name: str
    summary: str
    violations: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.violations


def cotangent_types(back: Backward) -> Finding:
    """Every cotangent (each adjoint's contribution and each summed cotangent) has exactly its
    primal's symbolic type."""
    bad, count = [], 0
    for node, cts in back.contributions.items():
        for i, (v, ct) in enumerate(zip(node.inputs, cts)):
            if ct is not None:
                count += 1
                if ct.type != v.type:
                    bad.append(f"adjoint of {node.op} at {node.loc}: cotangent of input {i} is {ct.type}, "
                               f"its primal is {v.type}")
    for v, ct in back.cotangents.items():
        if ct.type != v.type:
            bad.append(f"summed cotangent of {v.name or 'a value'} is {ct.type}, its primal is {v.type}")
    return Finding("cotangent types", f"{count} cotangents have exactly their primal's symbolic type", tuple(bad))


def completeness(back: Backward) -> Finding:
    """Every active (floating-point, dependent on a differentiated input) operand of a differentiated
    node receives a cotangent from that node's adjoint (a value in several operand positions may get
    its whole cotangent in one of them)."""
    bad = [f"adjoint of {node.op} at {node.loc} gave no cotangent for its active input {i}"
           for node, cts in back.contributions.items()
           for i, (v, ct) in enumerate(zip(node.inputs, cts))
           if v in back.active and all(c is None for u, c in zip(node.inputs, cts) if u is v)]
    return Finding("adjoint completeness", f"{len(back.contributions)} adjoints gave a cotangent to every "
                   "active input", tuple(bad))




def fan_in(back: Backward) -> Finding:
    """A value used several times gets the sum of all its uses' cotangents: each contribution must
    reach the summed cotangent through additions alone."""
    bad, shared = [], 0
    for v, parts in back.parts.items():
        total = back.cotangents.get(v, back.grads.get(v))
        if len(parts) < 2 or total is None:
            continue
        shared += 1
        reached = set()
        stack = [total]
        while stack:
            x = stack.pop()
            reached.add(x)
            if x.producer is not None and x.producer.op == "add" and x not in parts:
                stack.extend(x.producer.inputs)
        missing = [p for p in parts if p not in reached]
        if missing:
            maker = missing[0].producer.adjoint_of if missing[0].producer else None
            where = f"the adjoint of {maker.op} at {maker.loc}" if maker else "a use"
            what = f"{v.producer.op} at {v.producer.loc}" if v.producer else "input"
            bad.append(f"{v.name or 'a value'} ({what}) is used {len(parts)} times but its cotangent drops the "
                       f"contribution of {where}")
    return Finding("fan-in sums", f"{shared} values used more than once sum every use's cotangent", tuple(bad))


def _adjoint_ancestors(v: Value, owner: Node) -> list[Node]:
    """The nodes of `owner`'s adjoint that `v` was computed from."""
    seen: dict[int, Node] = {}
    stack = [v]
    while stack:
        x = stack.pop()
        n = x.producer
        if n is None or n.adjoint_of is not owner or n.id in seen:
            continue
        seen[n.id] = n
        stack.extend(n.inputs)
    return list(seen.values())


def _channel_transposes(nodes: list[Node]) -> int:
    """Transposes that move either of the two leading (batch/feature or out/in feature) axes."""
    return sum(1 for n in nodes if n.op == "transpose" and tuple(n.attrs.perm[:2]) != (0, 1))


EXPECTED_CHANNEL_TRANSPOSES = {"conv2d": 1, "depthwise_conv2d": 0}
"""Channel transposes allowed in the input gradient: a full conv swaps the kernel's in/out features
once; a depthwise kernel [C,1,k,k] is already in place (feature_group_count = C)."""


def conv_transposes(back: Backward) -> Finding:
    bad, counts = [], {op: 0 for op in EXPECTED_CHANNEL_TRANSPOSES}
    for node, cts in back.contributions.items():
        want = EXPECTED_CHANNEL_TRANSPOSES.get(node.op)
        if want is None or cts[0] is None:
            continue
        counts[node.op] += 1
        got = _channel_transposes(_adjoint_ancestors(cts[0], node))
        if got != want:
            bad.append(f"input gradient of {node.op} at {node.loc} has {got} channel transpose(s); "
                       f"expected {want}")
    return Finding("conv transposes", f"{counts['conv2d']} conv2d input gradients with exactly one channel "
                   f"transpose, {counts['depthwise_conv2d']} depthwise with none", tuple(bad))


def op_count(primitive: Graph, bound: float = OP_COUNT_BOUND) -> Finding:
    """Backward primitive ops per forward primitive op, counted on the decomposed graph."""
    fwd = sum(1 for n in primitive.nodes if n.adjoint_of is None)
    bwd = len(primitive.nodes) - fwd
    ratio = bwd / max(fwd, 1)
    bad = () if ratio <= bound else (f"backward has {bwd} primitive ops for {fwd} forward ops "
                                     f"({ratio:.2f}x > {bound}x)",)
    return Finding("op count", f"backward/forward = {bwd}/{fwd} = {ratio:.2f}x (bound {bound}x)", bad)


def structural(back: Backward) -> list[Finding]:
    """The checks that need no shapes bound: types, completeness, fan-in, conv transposes."""
    return [cotangent_types(back), completeness(back), fan_in(back), conv_transposes(back)]
