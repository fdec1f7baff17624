"""Padding policies as explicit (lo, hi) pairs per spatial dim, for static or symbolic sizes."""
from __future__ import annotations

import sympy

from gir.ir.types import Dim, normalize_dim
from gir.shapes.dims import ceildiv, floordiv


def same_pads(size: Dim, k: int, stride: int, dilation: int = 1) -> tuple[Dim, Dim]:
    """XLA SAME padding: output ceil(size/stride); total max((out-1)*stride + (k-1)*dilation + 1 - size, 0),
    low = total // 2, the extra row/column going at the end. A symbolic size gives sympy expressions
    (the total depends on size mod stride) that become ints when the size is bound."""
    eff = (k - 1) * dilation + 1
    if isinstance(size, int):
        total = max((-(-size // stride) - 1) * stride + eff - size, 0)
        return total // 2, total - total // 2
    total = normalize_dim(sympy.expand((ceildiv(size, stride) - 1) * stride + eff - size))
    if eff < stride:  # (ceil(size/s)*s - size) - s + eff may be negative: clip it, or it is never positive
        total = 0 if eff <= 1 else normalize_dim(sympy.Max(total, 0))
    lo = floordiv(total, 2) if isinstance(total, int) else normalize_dim(sympy.floor(total / 2))
    return lo, normalize_dim(sympy.sympify(total - lo))


def explicit_pads(padding, sizes, kernel, strides, dilations=(1, 1)) -> tuple[tuple[Dim, Dim], ...]:
    """A policy ('same', 'valid', or explicit ((top, bottom), (left, right))) as (lo, hi) per spatial dim."""
    if padding == "same":
        return tuple(same_pads(s, k, st, d) for s, k, st, d in zip(sizes, kernel, strides, dilations))
    if padding == "valid":
        return ((0, 0),) * len(sizes)
    return tuple((int(lo), int(hi)) for lo, hi in padding)
