"""Values, nodes and graphs: the dataflow IR every stage reads and writes."""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import attrs

from gir.ir.ops import get_op
from gir.ir.types import TensorType

ROLES = ("param", "state", "data", "hyper")
"""Graph-input roles: trainable parameters, non-trainable state (BN running stats),
data (images, labels) and hyper-parameters (learning rate, step)."""


@attrs.frozen
class Loc:
    """Where a node came from: its layer path and the user's source line that created it."""

    path: str = ""
    file: str = ""
    line: int = 0
    col: int = 0

    def where(self) -> str:
        """`file:line`, or '' when unknown."""
        return f"{self.file}:{self.line}" if self.file else ""

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.where()) if p]
        return " at ".join(parts) if parts else "<unknown>"


@attrs.frozen
class Init:
    """How a parameter or state input is initialized: a named scheme and its arguments."""

    kind: str  # "zeros" | "ones" | "constant" (every entry `scale`) | "normal" | "he_normal" | "uniform" | "trunc_normal"
    scale: float = 1.0
    fan_in: int = 1
    fan_out: int = 1


_ids = itertools.count()


class Value:
    """An SSA value: a graph input (producer None) or the `index`-th output of a node."""

    __slots__ = ("id", "type", "producer", "index", "name", "role", "init")

    def __init__(self, type: TensorType, producer: "Node | None" = None, index: int = 0,
                 name: str = "", role: str | None = None, init: Init | None = None):
        self.id = next(_ids)
        self.type = type
        self.producer = producer
        self.index = index
        self.name = name
        self.role = role
        self.init = init

    @property
    def is_input(self) -> bool:
        return self.producer is None

    def __repr__(self) -> str:
        label = self.name or f"%{self.id}"
        return f"<Value {label}: {self.type}>"


class Node:
    """One op application. `adjoint_of` names the forward node whose adjoint emitted it."""

    __slots__ = ("id", "op", "inputs", "attrs", "outputs", "loc", "adjoint_of")

    def __init__(self, op: str, inputs: tuple[Value, ...], attrs: Any, out_types: Iterable[TensorType],
                 loc: Loc, adjoint_of: "Node | None" = None):
        self.id = next(_ids)
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = attrs
        self.outputs = tuple(Value(t, self, i) for i, t in enumerate(out_types))
        self.loc = loc
        self.adjoint_of = adjoint_of

    @property
    def out(self) -> Value:
        """The single output; an error for multi-output nodes."""
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.op} has {len(self.outputs)} outputs; use .outputs")
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"<Node {self.op} #{self.id} {self.loc}>"


class Graph:
    """Inputs (with roles), nodes in a topological order, and named outputs."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: dict[str, Value] = {}

    def add_input(self, name: str, type: TensorType, role: str, init: Init | None = None) -> Value:
        if role not in ROLES:
            raise ValueError(f"input role must be one of {ROLES}, got {role!r}")
        if any(v.name == name for v in self.inputs):
            raise ValueError(f"graph {self.name!r} already has an input named {name!r}")
        v = Value(type, None, 0, name, role, init)
        self.inputs.append(v)
        return v

    def add_node(self, op: str, inputs: Iterable[Value], attrs: Any, out_types: Iterable[TensorType],
                 loc: Loc = Loc(), adjoint_of: Node | None = None) -> Node:
        """Appends a node; inputs must already be defined, so node order stays topological."""
        inputs = tuple(inputs)
        opdef = get_op(op)
        opdef.check_arity(len(inputs))
        opdef.check_attrs(attrs)
        node = Node(op, inputs, attrs, out_types, loc, adjoint_of)
        self.nodes.append(node)
        return node

    def set_output(self, name: str, value: Value) -> None:
        self.outputs[name] = value

    def inputs_by_role(self, role: str) -> list[Value]:
        return [v for v in self.inputs if v.role == role]

    @property
    def params(self) -> list[Value]:
        return self.inputs_by_role("param")

    def input(self, name: str) -> Value:
        for v in self.inputs:
            if v.name == name:
                return v
        raise KeyError(f"graph {self.name!r} has no input named {name!r}")

    def users(self) -> dict[Value, list[Node]]:
        """Each value's consuming nodes, in node order."""
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def live_nodes(self) -> list[Node]:
        """The nodes the outputs depend on, in graph order (what dead-code elimination keeps)."""
        need: set[Node] = set()
        stack = [v.producer for v in self.outputs.values() if v.producer is not None]
        while stack:
            n = stack.pop()
            if n not in need:
                need.add(n)
                stack.extend(v.producer for v in n.inputs if v.producer is not None)
        return [n for n in self.nodes if n in need]

    def ops(self, op: str | None = None) -> Iterator[Node]:
        return (n for n in self.nodes if op is None or n.op == op)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"
