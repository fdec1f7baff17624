"""Shared checks for rewrite tests: a pass must keep every output's type and, on random inputs,
its values (compared through the JAX backend, an independent evaluator of both graphs)."""
from __future__ import annotations

import numpy as np
import pytest

from gir.ir.graph import Graph
from gir.ir.verify import verify
from gir.lower.jax_backend import evaluate
from gir.shapes.rules import infer_node


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Normal floats (positive for inputs named like variances), ints in [0, 10), random bools."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.inputs:
        shape, dt = tuple(int(d) for d in v.type.shape), v.type.dtype
        if dt.is_float:
            a = rng.standard_normal(shape)
            if "var" in v.name:
                a = np.abs(a) + 0.5
            feeds[v.name] = a.astype(dt.numpy)
        elif dt.value == "i1":
            feeds[v.name] = rng.random(shape) < 0.5
        else:
            feeds[v.name] = rng.integers(0, 10, shape).astype(np.int32)
    return feeds


def assert_same_interface(before: Graph, after: Graph) -> None:
    """`after` verifies and has the same inputs and the same output names and types."""
    verify(after, "rewrite", type_rule=infer_node)
    assert [(v.name, v.type) for v in after.inputs] == [(v.name, v.type) for v in before.inputs]
    assert {k: v.type for k, v in after.outputs.items()} == {k: v.type for k, v in before.outputs.items()}


def assert_preserves(before: Graph, after: Graph, rtol: float = 1e-5, atol: float = 1e-6, seeds=(0, 1)) -> None:
    """The same interface and the same values within tolerance."""
    assert_same_interface(before, after)
    for seed in seeds:
        feeds = random_inputs(before, seed)
        want, got = evaluate(before, feeds), evaluate(after, feeds)
        for k in want:
            np.testing.assert_allclose(np.asarray(got[k], np.float64), np.asarray(want[k], np.float64),
                                       rtol=rtol, atol=atol, err_msg=f"output {k!r}")


@pytest.fixture
def preserves():
    return assert_preserves


@pytest.fixture
def same_interface():
    return assert_same_interface


@pytest.fixture
def inputs_for():
    return random_inputs
