"""Symbolic dims: the default symbols, canonical floor/ceil division, and deciding dim facts
under declared constraints (ranges, divisibility)."""
from __future__ import annotations

import functools
import itertools
import math
from typing import Iterable

import attrs
import sympy

from gir.ir.types import Dim, format_dim, normalize_dim


def sym(name: str) -> sympy.Symbol:
    """A dim symbol: integer and positive, so sympy may use both facts."""
    return sympy.Symbol(name, integer=True, positive=True)


N, H, W, T = sym("N"), sym("H"), sym("W"), sym("T")
"""Batch, image height and width, and sequence length (tokens per example)."""


def _split_round(e: sympy.Expr) -> tuple[int, sympy.Expr | None, str]:
    """e as c + round(p/a): returns (c, p/a, 'ceil'|'floor'), or (0, None, '') if not of that form."""
    c, rest = e.as_coeff_Add()
    if isinstance(rest, (sympy.ceiling, sympy.floor)) and c.is_Integer:
        return int(c), rest.args[0], "ceil" if isinstance(rest, sympy.ceiling) else "floor"
    return 0, None, ""


def _is_int_poly(e: sympy.Expr) -> bool:
    """True for integer-valued polynomials with integer coefficients (no floor/ceil, no fractions)."""
    if not e.is_polynomial(*e.free_symbols):
        return False
    return all(c.is_Integer for c in sympy.Poly(e, *e.free_symbols).coeffs()) if e.free_symbols else e.is_Integer


def _div(e: Dim, k: int, ceil: bool) -> Dim:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"divisor must be a positive int, got {k!r}")
    if isinstance(e, int):
        return -(-e // k) if ceil else e // k
    if k == 1:
        return e
    c, inner, kind = _split_round(e)
    if inner is not None:
        p, a = inner.as_numer_denom()
        if a.is_Integer and a > 0 and _is_int_poly(p):
            a = int(a)
            # floor(p/a) == ceil((p-a+1)/a) and ceil(p/a) == floor((p+a-1)/a) for integer p,
            # so both kinds fold: round((round'(p/a) + c)/k) == round((p' + c*a)/(a*k)).
            if kind == "floor" and ceil:
                p = p - a + 1
            elif kind == "ceil" and not ceil:
                p = p + a - 1
            q = (p + c * a) / (a * k)
            return normalize_dim(sympy.ceiling(q) if ceil else sympy.floor(q))
    q = e / k
    return normalize_dim(sympy.ceiling(q) if ceil else sympy.floor(q))


def ceildiv(e: Dim, k: int) -> Dim:
    """ceil(e / k), folding nested divisions: ceildiv(ceildiv(H, 2), 2) is ceil(H/4)."""
    return _div(e, k, ceil=True)


def floordiv(e: Dim, k: int) -> Dim:
    """floor(e / k), folding nested divisions like `ceildiv`."""
    return _div(e, k, ceil=False)


class Undecidable(Exception):
    """A dim fact that the declared constraints cannot decide; the message names one that would."""


@attrs.frozen
class Constraints:
    """What the net declares about its symbols: inclusive ranges and divisors. Hashable, so shape
    rules can cache on it."""

    ranges: tuple[tuple[sympy.Symbol, int, int | None], ...] = ()
    divisors: tuple[tuple[sympy.Symbol, int], ...] = ()

    def at_least(self, s: sympy.Symbol, lo: int) -> "Constraints":
        _, hi = self.range(s)
        return self._with_range(s, lo, hi)

    def at_most(self, s: sympy.Symbol, hi: int) -> "Constraints":
        lo, _ = self.range(s)
        return self._with_range(s, lo, hi)

    def divisible_by(self, s: sympy.Symbol, k: int) -> "Constraints":
        k = math.lcm(k, self.divisor(s))
        return attrs.evolve(self, divisors=tuple((x, d) for x, d in self.divisors if x != s) + ((s, k),))

    def _with_range(self, s: sympy.Symbol, lo: int, hi: int | None) -> "Constraints":
        if lo < 1 or (hi is not None and hi < lo):
            raise ValueError(f"empty or non-positive range for {s}: [{lo}, {hi}]")
        return attrs.evolve(self, ranges=tuple(r for r in self.ranges if r[0] != s) + ((s, lo, hi),))

    def range(self, s: sympy.Symbol) -> tuple[int, int | None]:
        for x, lo, hi in self.ranges:
            if x == s:
                return lo, hi
        return 1, None

    def divisor(self, s: sympy.Symbol) -> int:
        for x, d in self.divisors:
            if x == s:
                return d
        return 1

    def smallest(self, s: sympy.Symbol) -> int:
        """The smallest value `s` may take: its lower bound rounded up to its divisor."""
        lo, _ = self.range(s)
        d = self.divisor(s)
        return -(-lo // d) * d

    def samples(self, s: sympy.Symbol, count: int) -> list[int]:
        """`count` consecutive valid values of `s`, from its smallest (fewer if its range is shorter)."""
        lo, hi = self.range(s)
        d = self.divisor(s)
        start = self.smallest(s)
        vals = [start + i * d for i in range(count)]
        return [v for v in vals if hi is None or v <= hi]

    def describe(self) -> str:
        parts = []
        for s, lo, hi in self.ranges:
            parts.append(f"{lo} <= {s}" + (f" <= {hi}" if hi is not None else ""))
        parts += [f"{s} % {d} == 0" for s, d in self.divisors]
        return ", ".join(parts) or "none"


def _denominators(e: sympy.Expr, s: sympy.Symbol) -> int:
    """The lcm of the denominators of `s` inside floor/ceil terms: the period of e in s."""
    period = 1
    for atom in e.atoms(sympy.floor, sympy.ceiling):
        _, den = atom.args[0].as_numer_denom()
        if den.is_Integer and s in atom.free_symbols:
            period = math.lcm(period, int(den))
    return period


def _values(e: Dim, binding: dict) -> int:
    return int(e) if isinstance(e, int) else int(e.subs(binding))


def _sample_points(e: sympy.Expr, c: Constraints, per_symbol: int = 24) -> Iterable[dict]:
    syms = sorted(e.free_symbols, key=str)
    grids = [c.samples(s, per_symbol) for s in syms]
    if len(syms) > 2:  # keep the grid small: vary one symbol at a time around the smallest point
        base = {s: g[0] for s, g in zip(syms, grids)}
        for s, g in zip(syms, grids):
            for v in g:
                yield {**base, s: v}
        return
    for combo in itertools.product(*grids):
        yield dict(zip(syms, combo))


@functools.lru_cache(maxsize=4096)
def dims_equal(a: Dim, b: Dim, c: Constraints = Constraints(), suggest: bool = True) -> bool:
    """Whether a == b for every value the constraints allow.

    Returns True (provably equal) or False (different for some allowed value, and no
    divisibility constraint would make them equal). Raises `Undecidable` naming the
    divisibility constraint that would decide it when one would.
    """
    d = normalize_dim(sympy.expand(sympy.sympify(a) - sympy.sympify(b)))
    if isinstance(d, int):
        return d == 0
    # Bind each symbol to a multiple of its declared divisor so floor/ceil can simplify.
    fresh = {s: c.divisor(s) * sym(f"{s}_") for s in d.free_symbols if c.divisor(s) > 1}
    dd = normalize_dim(sympy.expand(d.subs(fresh))) if fresh else d
    if isinstance(dd, int):
        return dd == 0
    results = [_values(d, p) == 0 for p in _sample_points(d, c)]
    if all(results):
        if _exhaustive(d, c) or _periodic_zero(d, c):
            return True
        raise Undecidable(f"cannot prove {format_dim(a)} == {format_dim(b)} (constraints now: {c.describe()}); "
                          f"declare a divisibility constraint on {', '.join(sorted(map(str, d.free_symbols)))} "
                          f"that makes it exact")
    hint = _suggest_divisor(d, c) if suggest else ""
    if hint:
        raise Undecidable(f"cannot decide whether {format_dim(a)} == {format_dim(b)}: equal for some values "
                          f"of {', '.join(sorted(map(str, d.free_symbols)))} and not others (constraints now: "
                          f"{c.describe()}); declaring {hint} would decide it")
    return False


def differ_at(a: Dim, b: Dim, c: Constraints = Constraints()) -> dict | None:
    """The first sampled binding at which a != b, as a witness for error messages."""
    d = normalize_dim(sympy.expand(sympy.sympify(a) - sympy.sympify(b)))
    if isinstance(d, int):
        return None if d == 0 else {}
    return next((p for p in _sample_points(d, c) if _values(d, p) != 0), None)


def _exhaustive(d: sympy.Expr, c: Constraints, per_symbol: int = 24) -> bool:
    """Whether the sample grid covered every allowed value (bounded ranges, at most two symbols)."""
    syms = d.free_symbols
    if len(syms) > 2:
        return False
    for s in syms:
        lo, hi = c.range(s)
        if hi is None or (hi - c.smallest(s)) // c.divisor(s) + 1 > per_symbol:
            return False
    return True


def _periodic_zero(d: sympy.Expr, c: Constraints) -> bool:
    """Proves d == 0 for all valid values of a single symbol: d is zero over one full period
    of its floor/ceil terms and shifting by that period changes d by zero."""
    if len(d.free_symbols) != 1:
        return False
    (s,) = d.free_symbols
    period = _denominators(d, s)
    step = c.divisor(s)
    period = math.lcm(period, step)
    atoms = sorted(d.atoms(sympy.floor, sympy.ceiling), key=str)
    us = [sympy.Dummy(f"u{i}") for i in range(len(atoms))]
    flat = d.xreplace(dict(zip(atoms, us)))
    bumps = {}
    for atom, u in zip(atoms, us):
        m = sympy.expand(atom.args[0].subs(s, s + period) - atom.args[0])
        if not m.is_Integer:  # round(x + m) == round(x) + m only for integer m
            return False
        bumps[u] = u + m
    if sympy.expand(flat.subs(s, s + period).xreplace(bumps) - flat) != 0:
        return False
    return all(_values(d, {s: v}) == 0 for v in c.samples(s, period // step + 1))


def _suggest_divisor(d: sympy.Expr, c: Constraints) -> str:
    """A constraint 'S divisible by k' under which d is provably zero, or '' if none is found."""
    for s in sorted(d.free_symbols, key=str):
        k = _denominators(d, s)
        if k > 1:
            c2 = c.divisible_by(s, k)
            try:
                if dims_equal(d, 0, c2, suggest=False):
                    return f"{s} divisible by {math.lcm(k, c.divisor(s))}"
            except Undecidable:
                continue
    return ""


def min_value(e: Dim, c: Constraints = Constraints()) -> int:
    """The smallest value of a dim: dims are non-decreasing in their symbols, so it is the value
    at each symbol's smallest allowed value."""
    if isinstance(e, int):
        return e
    return _values(e, {s: c.smallest(s) for s in e.free_symbols})


def max_value(e: Dim, c: Constraints = Constraints()) -> int | None:
    """The largest value of a dim (dims are non-decreasing in their symbols): its value at each symbol's upper
    bound, or None when a symbol has none."""
    if isinstance(e, int):
        return e
    highs = {s: c.range(s)[1] for s in e.free_symbols}
    return None if None in highs.values() else _values(e, highs)


def smallest_fitting(e: Dim, need: int, c: Constraints, limit: int = 1 << 16) -> dict | None:
    """The smallest binding (each symbol raised alike) at which e >= need, or None within `limit`."""
    if isinstance(e, int):
        return None if e < need else {}
    syms = sorted(e.free_symbols, key=str)
    for step in range(limit):
        binding = {s: c.smallest(s) + step * c.divisor(s) for s in syms}
        if _values(e, binding) >= need:
            return binding
    return None
