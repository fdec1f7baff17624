"""A small emitter of primitive nodes with shape inference: what decompositions and adjoints write with."""
from __future__ import annotations

from typing import Any, Sequence

import sympy

from gir.ir import opdefs as od
from gir.ir.dtypes import DType
from gir.ir.graph import Graph, Loc, Node, Value
from gir.ir.types import Dim, TensorType
from gir.shapes.dims import Constraints
from gir.shapes.errors import ShapeError
from gir.shapes.rules import infer


class Emitter:
    """Appends nodes to `graph` under one provenance (`loc`, and `adjoint_of` for backward nodes)."""

    def __init__(self, graph: Graph, loc: Loc = Loc(), adjoint_of: Node | None = None,
                 constraints: Constraints = Constraints()):
        self.graph = graph
        self.loc = loc
        self.adjoint_of = adjoint_of
        self.constraints = constraints

    def at(self, loc: Loc, adjoint_of: Node | None) -> "Emitter":
        """An emitter into the same graph under another provenance."""
        return Emitter(self.graph, loc, adjoint_of, self.constraints)

    def node(self, op: str, inputs: Sequence[Value], attrs: Any = None) -> Node:
        try:
            types = infer(op, attrs, tuple(v.type for v in inputs), self.constraints)
        except ShapeError as e:
            raise e.at(op, self.loc) from None
        return self.graph.add_node(op, inputs, attrs, types, self.loc, self.adjoint_of)

    def op(self, op: str, *inputs: Value, attrs: Any = None) -> Value:
        return self.node(op, inputs, attrs).out

    # conveniences ---------------------------------------------------------------------------

    def const(self, value: float | int | bool, like: Value | TensorType, shape: Sequence[Dim] | None = None,
              dtype: DType | None = None) -> Value:
        t = like.type if isinstance(like, Value) else like
        return self.op("constant", attrs=od.ConstantAttrs(value, TensorType(
            t.shape if shape is None else tuple(shape), dtype or t.dtype)))

    def scalar(self, value: float | int | bool, dtype: DType = DType.f32) -> Value:
        return self.const(value, TensorType((), dtype))

    def bcast(self, x: Value, shape: Sequence[Dim], dims: Sequence[int]) -> Value:
        if tuple(x.type.shape) == tuple(shape) and tuple(dims) == tuple(range(len(shape))):
            return x
        return self.op("broadcast_in_dim", x, attrs=od.BroadcastAttrs(tuple(shape), tuple(dims)))

    def reduce(self, x: Value, kind: str, dims: Sequence[int]) -> Value:
        return self.op("reduce", x, attrs=od.ReduceAttrs(kind, tuple(dims)))

    def reshape(self, x: Value, shape: Sequence[Dim]) -> Value:
        return x if tuple(x.type.shape) == tuple(shape) else self.op("reshape", x, attrs=od.ReshapeAttrs(tuple(shape)))

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        return x if tuple(perm) == tuple(range(len(perm))) else self.op(
            "transpose", x, attrs=od.TransposeAttrs(tuple(perm)))

    def add(self, x: Value, y: Value) -> Value:
        return self.op("add", x, y)

    def sub(self, x: Value, y: Value) -> Value:
        return self.op("subtract", x, y)

    def mul(self, x: Value, y: Value) -> Value:
        return self.op("multiply", x, y)

    def div(self, x: Value, y: Value) -> Value:
        return self.op("divide", x, y)

    def neg(self, x: Value) -> Value:
        return self.op("negate", x)

    def zeros(self, like: Value | TensorType) -> Value:
        return self.const(0.0, like)

    def mul_scalar(self, x: Value, s: "float | sympy.Expr") -> Value:
        return self.op("multiply", x, self.const(s, x))

    def compare(self, x: Value, y: Value, direction: str) -> Value:
        return self.op("compare", x, y, attrs=od.CompareAttrs(direction))

    def select(self, p: Value, a: Value, b: Value) -> Value:
        return self.op("select", p, a, b)

    def convert(self, x: Value, dtype: DType) -> Value:
        return x if x.type.dtype == dtype else self.op("convert", x, attrs=od.ConvertAttrs(dtype))
