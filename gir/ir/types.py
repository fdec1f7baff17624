"""Tensor types: a shape of dims (ints or sympy expressions) and a dtype."""
from __future__ import annotations

from typing import Union

import attrs
import sympy
from sympy.printing.str import StrPrinter

from gir.ir.dtypes import DType

Dim = Union[int, sympy.Expr]


class _DimPrinter(StrPrinter):
    """Prints `ceiling` as `ceil` and drops sympy's `Integer` noise."""

    def _print_ceiling(self, expr: sympy.Expr) -> str:
        return f"ceil({self._ratio(expr.args[0])})"

    def _print_floor(self, expr: sympy.Expr) -> str:
        return f"floor({self._ratio(expr.args[0])})"

    def _ratio(self, arg: sympy.Expr) -> str:
        """`(H - 3)/4` rather than sympy's `H/4 - 3/4`."""
        num, den = arg.as_numer_denom()
        if den == 1:
            return self._print(arg)
        n = self._print(num)
        return f"{n if num.is_Atom else '(' + n + ')'}/{self._print(den)}"


_PRINTER = _DimPrinter()


def normalize_dim(d: Dim) -> Dim:
    """A dim as a plain int when it is a number, else the sympy expression."""
    if isinstance(d, bool):
        raise TypeError(f"a dim cannot be a bool: {d!r}")
    if isinstance(d, int):
        return d
    if isinstance(d, sympy.Basic):
        if d.is_Integer:
            return int(d)
        if d.is_number:
            raise TypeError(f"a dim must be an integer, got {d}")
        return d
    raise TypeError(f"a dim must be an int or a sympy expression, got {type(d).__name__}: {d!r}")


def format_dim(d: Dim) -> str:
    return str(d) if isinstance(d, int) else _PRINTER.doprint(d)


def _shape_converter(shape) -> tuple[Dim, ...]:
    return tuple(normalize_dim(d) for d in shape)


@attrs.frozen(repr=False)
class TensorType:
    """The type of a value: shape (tuple of dims) and element dtype."""

    shape: tuple[Dim, ...] = attrs.field(converter=_shape_converter)
    dtype: DType = DType.f32

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def free_symbols(self) -> frozenset[sympy.Symbol]:
        out: set[sympy.Symbol] = set()
        for d in self.shape:
            if not isinstance(d, int):
                out |= d.free_symbols
        return frozenset(out)

    def num_elements(self) -> Dim:
        n: Dim = 1
        for d in self.shape:
            n = n * d
        return normalize_dim(n) if not isinstance(n, int) else n

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def with_shape(self, shape) -> "TensorType":
        return TensorType(shape, self.dtype)

    def __str__(self) -> str:
        return f"tensor<{'x'.join(format_dim(d) for d in self.shape)}{'x' if self.shape else ''}{self.dtype}>"

    def short(self) -> str:
        """`[N,32,ceil(H/2),ceil(W/2)]` plus dtype when it is not f32: for tables and DOT labels."""
        s = "[" + ",".join(format_dim(d) for d in self.shape) + "]"
        return s if self.dtype == DType.f32 else f"{s} {self.dtype}"

    __repr__ = __str__
