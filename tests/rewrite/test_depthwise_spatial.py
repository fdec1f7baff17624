"""depthwise_spatial alone: on maps of at most SPATIAL_RATIO * taps positions a depthwise conv, its input gradient
and its weight gradient become dot_generals with a 0/1 spatial matrix (no pad, no slice), with the same values, for
strides, dilations, SAME/VALID pads and both activation layouts; one position more and they are left to conv_forms."""
from __future__ import annotations

import pytest

from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.depthwise_spatial import SPATIAL_RATIO
from tests.rewrite.test_conv_forms import _conv_train_graph


def _depthwise_train_graph(hw: tuple[int, int], k: int, layout: str | None = None, **conv):
    """A depthwise conv on 3 images of 4 channels with the gradients of its input and weight as outputs."""
    return _conv_train_graph((3, 4, *hw), (4, 1, k, k), layout, depthwise=True, **conv)


@pytest.mark.parametrize("hw,k,stride,dilation,padding", [
    ((4, 4), 3, 1, 1, "same"), ((4, 4), 3, 2, 1, "same"), ((3, 3), 3, 1, 2, "same"), ((4, 3), 3, 2, 1, "valid"),
    ((2, 2), 3, 1, 1, "same"), ((1, 1), 3, 1, 1, "same"), ((7, 7), 5, 2, 1, "same"), ((4, 4), 3, 3, 1, "same")])
@pytest.mark.parametrize("layout", [None, "layout_cnhw"])
def test_small_maps_become_spatial_matmuls(hw, k, stride, dilation, padding, layout, preserves):
    g = _depthwise_train_graph(hw, k, layout, stride=stride, dilation=dilation, padding=padding)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "depthwise_spatial", ctx)
    assert sorted(f.rule for f in ctx.trace) == ["depthwise_conv_as_spatial_matmul"] * 2 + [
        "depthwise_weight_grad_as_spatial_matmul"]
    assert not [n for n in out.nodes if n.op in ("convolution", "pad", "slice")]
    preserves(g, out, rtol=1e-5, atol=1e-5)


def test_threshold_both_sides():
    """A 3x3 kernel: 18 input positions (6x3) are taken, 20 (5x4) are left to conv_forms' taps."""
    assert SPATIAL_RATIO * 9 == 18
    taken = run_pass(_depthwise_train_graph((6, 3), 3), "depthwise_spatial")
    assert not [n for n in taken.nodes if n.op == "convolution"]
    left = _depthwise_train_graph((5, 4), 3)
    assert len(run_pass(left, "depthwise_spatial").nodes) == len(left.nodes)


def test_ordinary_convolutions_are_left_alone():
    b = Builder("c")
    x, w = b.input("x", (2, 3, 4, 4), role="param"), b.input("w", (4, 3, 3, 3), role="param")
    g = b.graph
    g.set_output("y", b.conv2d(x, w))
    g = decompose(g)
    assert len(run_pass(g, "depthwise_spatial").nodes) == len(g.nodes)
