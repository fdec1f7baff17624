"""Helpers the graph fuzzers share (tests/autodiff, tests/lower, tests/rewrite); importable from
any test because pyproject's pytest settings put tests/ on the path."""
from __future__ import annotations

import itertools

from gir.ir.graph import Value


def embeddings(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every broadcast_in_dim `dims` taking shape `src` into shape `dst` (size-1 dims may expand)."""
    return [dims for dims in itertools.combinations(range(len(dst)), len(src))
            if all(s in (1, dst[d]) for s, d in zip(src, dims))]


def static_shape(v: Value) -> tuple[int, ...]:
    """v's shape as ints (the fuzzers build static graphs)."""
    return tuple(int(d) for d in v.type.shape)
