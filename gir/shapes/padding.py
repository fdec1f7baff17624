"""Padding policies as explicit (lo, hi) pairs per spatial dim, once shapes are static."""
from __future__ import annotations


def same_pads(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """XLA SAME padding: output ceil(size/stride); total max((out-1)*stride + (k-1)*dilation + 1 - size, 0),
    low = total // 2, the extra row/column going at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def explicit_pads(padding, sizes, kernel, strides, dilations=(1, 1)) -> tuple[tuple[int, int], ...]:
    """A policy ('same', 'valid', or explicit ((top, bottom), (left, right))) as (lo, hi) per spatial dim."""
    if padding == "same":
        return tuple(same_pads(s, k, st, d) for s, k, st, d in zip(sizes, kernel, strides, dilations))
    if padding == "valid":
        return ((0, 0),) * len(sizes)
    return tuple((int(lo), int(hi)) for lo, hi in padding)
