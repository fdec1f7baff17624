"""The op registry: one `OpDef` per op name; every stage keys its own rule table by that name."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import attrs

F = TypeVar("F", bound=Callable)


@attrs.frozen
class OpDef:
    """What an op is, independent of any stage: its name, attribute class and arity.

    `level` is "primitive" (prints 1:1 as a StableHLO op) or "layer" (carries a
    decomposition into primitives). `max_inputs` None means variadic.
    """

    name: str
    attrs_cls: type | None
    min_inputs: int
    max_inputs: int | None
    level: str
    doc: str

    def check_attrs(self, value: Any) -> None:
        if self.attrs_cls is None:
            if value is not None:
                raise TypeError(f"op {self.name!r} takes no attributes, got {value!r}")
        elif not isinstance(value, self.attrs_cls):
            raise TypeError(f"op {self.name!r} wants attributes of type {self.attrs_cls.__name__}, got {value!r}")

    def check_arity(self, n: int) -> None:
        if n < self.min_inputs or (self.max_inputs is not None and n > self.max_inputs):
            want = str(self.min_inputs) if self.min_inputs == self.max_inputs else (
                f"{self.min_inputs}..{self.max_inputs if self.max_inputs is not None else ''}")
            raise TypeError(f"op {self.name!r} takes {want} inputs, got {n}")


OPS: dict[str, OpDef] = {}


def register_op(name: str, attrs_cls: type | None, inputs: int | tuple[int, int | None],
                level: str, doc: str) -> OpDef:
    """Adds an op to the registry; `inputs` is an exact count or a (min, max-or-None) pair."""
    if name in OPS:
        raise ValueError(f"op {name!r} is already registered")
    if level not in ("primitive", "layer"):
        raise ValueError(f"op level must be 'primitive' or 'layer', got {level!r}")
    lo, hi = (inputs, inputs) if isinstance(inputs, int) else inputs
    op = OpDef(name, attrs_cls, lo, hi, level, doc)
    OPS[name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; registered ops: {', '.join(sorted(OPS))}") from None


def missing_rules(table: dict[str, Callable] | set[str], what: str) -> list[str]:
    """Lines naming each registered op without an entry in a stage's rule table (the coverage check)."""
    return [f"op {name!r} has no {what}" for name in sorted(OPS) if name not in table]


def rule_registrar(table: dict[str, Callable], stage: str | None = None) -> Callable[..., Callable[[F], F]]:
    """The decorator a stage files its rules with: `@register("op", ...)` puts the function in
    `table` under each op name and returns it unchanged. With `stage` (a name for messages), an op
    that is not registered in OPS is refused."""
    def register(*ops: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            for op in ops:
                if stage is not None and op not in OPS:
                    raise KeyError(f"{stage} rule for unregistered op {op!r}")
                table[op] = fn
            return fn
        return deco
    return register
