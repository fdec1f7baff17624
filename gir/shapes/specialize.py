"""Specialization: bind dim symbols to ints, giving a graph with static shapes for lowering."""
from __future__ import annotations

from typing import Any, Mapping

import attrs
import sympy

from gir.ir.graph import Graph, Value
from gir.ir.types import Dim, TensorType, format_dim
from gir.shapes.dims import Constraints


class BindingError(ValueError):
    """A symbol binding that is missing or breaks a declared constraint."""


def check_binding(binding: Mapping[sympy.Symbol, int], c: Constraints) -> None:
    for s, v in binding.items():
        if not isinstance(v, int) or isinstance(v, bool):
            raise BindingError(f"{s} must be bound to an int, got {v!r}")
        lo, hi = c.range(s)
        if v < lo or (hi is not None and v > hi):
            raise BindingError(f"{s}={v} is outside its declared range [{lo}, {'' if hi is None else hi}]")
        d = c.divisor(s)
        if v % d:
            raise BindingError(f"{s}={v} must be divisible by {d}")


def bind_dim(d: Dim, binding: Mapping[sympy.Symbol, int]) -> Dim:
    if isinstance(d, int):
        return d
    out = d.xreplace({s: sympy.Integer(v) for s, v in binding.items()})
    return int(out) if out.is_Integer else out


def _bind_any(v: Any, binding: Mapping[sympy.Symbol, int]) -> Any:
    if isinstance(v, TensorType):
        return TensorType(tuple(bind_dim(d, binding) for d in v.shape), v.dtype)
    if isinstance(v, sympy.Basic):
        return bind_dim(v, binding)
    if isinstance(v, tuple):
        return tuple(_bind_any(x, binding) for x in v)
    if attrs.has(type(v)):
        return attrs.evolve(v, **{f.name: _bind_any(getattr(v, f.name), binding) for f in attrs.fields(type(v))
                                  if f.init})
    return v


def _free_in(v: Any) -> set:
    if isinstance(v, TensorType):
        return set(v.free_symbols)
    if isinstance(v, sympy.Basic):
        return set(v.free_symbols)
    if isinstance(v, tuple):
        return set().union(*(_free_in(x) for x in v)) if v else set()
    if attrs.has(type(v)):
        return set().union(*(_free_in(getattr(v, f.name)) for f in attrs.fields(type(v))))
    return set()


def specialize(graph: Graph, binding: Mapping[sympy.Symbol, int], constraints: Constraints = Constraints()) -> Graph:
    """A copy of `graph` with every symbol bound; raises BindingError if a dim stays symbolic."""
    check_binding(binding, constraints)
    out = Graph(graph.name)
    vmap: dict[Value, Value] = {}
    for v in graph.inputs:
        vmap[v] = out.add_input(v.name, _bind_any(v.type, binding), v.role, v.init)
    nmap = {}
    for n in graph.nodes:
        new = out.add_node(n.op, [vmap[v] for v in n.inputs], _bind_any(n.attrs, binding),
                           [_bind_any(v.type, binding) for v in n.outputs], n.loc, nmap.get(n.adjoint_of))
        nmap[n] = new
        vmap.update(zip(n.outputs, new.outputs))
    for name, v in graph.outputs.items():
        out.set_output(name, vmap[v])
    for n in out.nodes:
        free = _free_in(n.attrs)
        if free:
            raise BindingError(f"{', '.join(sorted(map(str, free)))} left unbound in the attributes of {n.op} at "
                               f"{n.loc}")
    for v in out.inputs + [o for n in out.nodes for o in n.outputs]:
        if not v.type.is_static:
            free = ", ".join(sorted(str(s) for s in v.type.free_symbols))
            raise BindingError(f"{free} left unbound: {v.name or 'a value'} has shape "
                               f"[{', '.join(format_dim(d) for d in v.type.shape)}]")
    return out
