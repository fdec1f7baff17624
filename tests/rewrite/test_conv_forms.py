"""conv_forms alone: a depthwise conv's weight gradient (a batch-grouped convolution) becomes
per-tap multiply-and-reduce with the same values, for strides, dilations and SAME/VALID pads."""
from __future__ import annotations

import pytest

from gir.autodiff import vjp
from gir.ir import Loc
from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.shapes.emit import Emitter


def _dw_weight_grad(stride: int, dilation: int, padding: str, k: int = 3):
    b = Builder("dw")
    x = b.input("x", (2, 4, 9, 9))
    w = b.input("w", (4, 1, k, k), role="param")
    y = b.depthwise_conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    back = vjp(g, {"y": ct}, [w])
    del g.outputs["y"]
    g.set_output("dw", back.grads[w])
    return decompose(g)


@pytest.mark.parametrize("stride,dilation,padding,k", [(1, 1, "same", 3), (2, 1, "same", 3), (1, 2, "same", 3),
                                                       (2, 1, "valid", 3), (1, 1, "same", 5), (3, 1, "same", 1)])
def test_depthwise_weight_grad_as_taps(stride, dilation, padding, k, preserves):
    g = _dw_weight_grad(stride, dilation, padding, k)
    assert [n for n in g.nodes if n.op == "convolution" and n.attrs.batch_group_count > 1]
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "conv_forms", ctx)
    assert [f.rule for f in ctx.trace] == ["depthwise_weight_grad_as_taps"]
    assert not [n for n in out.nodes if n.op == "convolution"]
    assert sum(n.op == "slice" for n in out.nodes) == k * k
    preserves(g, out, rtol=1e-5, atol=1e-5)


def test_ordinary_convolutions_are_left_alone():
    b = Builder("c")
    x, w = b.input("x", (2, 3, 8, 8)), b.input("w", (4, 3, 3, 3), role="param")
    g = b.graph
    g.set_output("y", b.conv2d(x, w))
    back = vjp(g, {"y": Emitter(g, Loc()).const(1.0, g.outputs["y"])}, [w])
    g.set_output("dw", back.grads[w])
    g = run_pass(decompose(g), "dce")
    assert len(run_pass(g, "conv_forms").nodes) == len(g.nodes)


@pytest.mark.parametrize("stride,dilation,padding,k", [(1, 1, "same", 3), (2, 1, "same", 3), (1, 2, "same", 3),
                                                       (2, 1, "valid", 3), (2, 1, "same", 5)])
def test_depthwise_forward_and_input_grad_as_taps(stride, dilation, padding, k, preserves):
    """The input gradient of a strided depthwise conv has lhs dilation: interior padding in the taps form."""
    b = Builder("dw")
    x = b.input("x", (2, 4, 9, 9), role="param")
    w = b.input("w", (4, 1, k, k))
    y = b.depthwise_conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    back = vjp(g, {"y": ct}, [x])
    g.set_output("dx", back.grads[x])
    g = decompose(g)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "conv_forms", ctx)
    assert [f.rule for f in ctx.trace] == ["depthwise_conv_as_taps"] * 2
    assert not [n for n in out.nodes if n.op == "convolution"]
    preserves(g, out, rtol=1e-5, atol=1e-5)
