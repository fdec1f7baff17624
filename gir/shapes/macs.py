"""Multiply-accumulate counts per op, as formulas in the graph's symbols (a cost-model table)."""
from __future__ import annotations

from typing import Any, Callable

from gir.ir.graph import Node
from gir.ir.types import Dim, TensorType


def _prod(ds) -> Dim:
    out: Dim = 1
    for d in ds:
        out = out * d
    return out


def _conv(node: Node) -> Dim:
    w: TensorType = node.inputs[1].type
    return _prod(node.outputs[0].type.shape) * _prod(w.shape[1:])


def _dense(node: Node) -> Dim:
    return _prod(node.outputs[0].type.shape) * node.inputs[1].type.shape[0]


def _attention(node: Node) -> Dim:
    n, t, d = node.inputs[0].type.shape
    return 2 * n * t * t * d  # scores q.k^T and the weighted sum of v


def _dot_general(node: Node) -> Dim:
    x: TensorType = node.inputs[0].type
    a: Any = node.attrs
    return _prod(node.outputs[0].type.shape) * _prod(x.shape[i] for i in a.lhs_contract)


def _convolution(node: Node) -> Dim:
    w: TensorType = node.inputs[1].type
    a: Any = node.attrs
    o_axis = a.rhs_layout.index("O")
    return _prod(node.outputs[0].type.shape) * _prod(d for i, d in enumerate(w.shape) if i != o_axis)


MACS_RULES: dict[str, Callable[[Node], Dim]] = {
    "conv2d": _conv,
    "depthwise_conv2d": _conv,   # weight [C, 1, kh, kw]: one input channel per output channel
    "dense": _dense,
    "attention": _attention,
    "dot_general": _dot_general,
    "convolution": _convolution,
}


def node_macs(node: Node) -> Dim:
    """MACs of one node (0 for ops that do no multiply-accumulate work)."""
    rule = MACS_RULES.get(node.op)
    if rule is None:
        return 0
    return rule(node)
