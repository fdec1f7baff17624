"""Patterns over nodes: an op (or ops), input patterns, attribute and type conditions, named captures.

A pattern matches a Value. `Op` matches a value produced by a node with that op; `Var` matches
any value; `Const` matches a splat constant. A name captures the matched value; using one name
twice requires both places to hold the same value. Inputs of commutative ops match in either order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

import attrs

from gir.ir.dtypes import DType
from gir.ir.graph import Node, Value

COMMUTATIVE = frozenset({"add", "multiply", "maximum", "minimum"})

Pattern = Union["Op", "Var", "Const"]
AttrCondition = Mapping[str, Any] | Callable[[Any], bool] | None


class Match(dict):
    """Captured values by name, the matched root node, and `uses(value)`: how many uses a value
    has in the graph being rewritten (the driver fills it in; unknown counts as many)."""

    def __init__(self, node: Node, captures: Mapping[str, Value]):
        super().__init__(captures)
        self.node = node
        self.uses: Callable[[Value], int] = lambda v: 1 << 30


def _type_ok(v: Value, dtype: DType | None, where: Callable[[Value], bool] | None) -> bool:
    return (dtype is None or v.type.dtype == dtype) and (where is None or bool(where(v)))


def _bind(name: str | None, v: Value, caps: dict[str, Value]) -> dict[str, Value] | None:
    if name is None:
        return caps
    if name in caps:
        return caps if caps[name] is v else None
    return {**caps, name: v}


@attrs.frozen
class Var:
    """Any value, optionally of one dtype or passing `where(value)`."""

    name: str | None = None
    dtype: DType | None = None
    where: Callable[[Value], bool] | None = None

    def matches(self, v: Value, caps: dict[str, Value]) -> Iterator[dict[str, Value]]:
        if _type_ok(v, self.dtype, self.where):
            bound = _bind(self.name, v, caps)
            if bound is not None:
                yield bound


@attrs.frozen
class Const:
    """A splat constant; with `value`, only one holding exactly that number."""

    name: str | None = None
    value: float | int | bool | None = None
    dtype: DType | None = None

    def matches(self, v: Value, caps: dict[str, Value]) -> Iterator[dict[str, Value]]:
        n = v.producer
        if n is None or n.op != "constant" or not _type_ok(v, self.dtype, None):
            return
        if self.value is not None and not (isinstance(n.attrs.value, (int, float)) and n.attrs.value == self.value):
            return
        bound = _bind(self.name, v, caps)
        if bound is not None:
            yield bound


@attrs.frozen
class Op:
    """A value made by a node whose op is `op` (or one of a tuple of ops).

    `inputs` None accepts any inputs; `attrs` is a mapping of attribute fields to required values
    or a predicate on the attrs object; `dtype`/`where` constrain the matched value's type.
    """

    op: str | tuple[str, ...]
    inputs: tuple[Pattern, ...] | None = None
    attrs: AttrCondition = None
    name: str | None = None
    dtype: DType | None = None
    where: Callable[[Value], bool] | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        return (self.op,) if isinstance(self.op, str) else self.op

    def _attrs_ok(self, a: Any) -> bool:
        if self.attrs is None:
            return True
        if callable(self.attrs):
            return bool(self.attrs(a))
        return all(getattr(a, k, _MISSING) == want for k, want in self.attrs.items())

    def matches(self, v: Value, caps: dict[str, Value]) -> Iterator[dict[str, Value]]:
        n = v.producer
        if n is None or n.op not in self.ops or not _type_ok(v, self.dtype, self.where) or not self._attrs_ok(n.attrs):
            return
        bound = _bind(self.name, v, caps)
        if bound is None:
            return
        if self.inputs is None:
            yield bound
            return
        if len(self.inputs) != len(n.inputs):
            return
        orders = [n.inputs]
        if n.op in COMMUTATIVE and len(n.inputs) == 2:
            orders.append(n.inputs[::-1])
        for ins in orders:
            yield from _match_all(self.inputs, ins, bound)


_MISSING = object()


def _match_all(pats: tuple[Pattern, ...], vals: tuple[Value, ...], caps: dict[str, Value]) -> Iterator[dict[str, Value]]:
    if not pats:
        yield caps
        return
    for c in pats[0].matches(vals[0], caps):
        yield from _match_all(pats[1:], vals[1:], c)


def match(pattern: Op, node: Node) -> Match | None:
    """The first way `pattern` matches `node`'s (first) output, or None."""
    for caps in pattern.matches(node.outputs[0], {}):
        return Match(node, caps)
    return None
