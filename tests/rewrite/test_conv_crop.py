"""conv_crop: convolutions cropped to the taps and output positions that meet the input, checked on small graphs
against the uncropped ones (through the JAX backend)."""
from __future__ import annotations

import random

import pytest

from gir.autodiff import vjp
from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass


def _train_graph(image: tuple[int, int], k: int, stride: int = 1, padding="same", dilation: int = 1,
                 depthwise: bool = False, channels: int = 3):
    """A conv's output, input gradient and weight gradient, at the primitive level."""
    b = Builder("c")
    x = b.input("x", (2, channels, *image), role="param")
    w = b.input("w", (channels if depthwise else 4, 1 if depthwise else channels, k, k), role="param")
    conv = b.depthwise_conv2d if depthwise else b.conv2d
    y = conv(x, w, stride=stride, padding=padding, dilation=dilation)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    grads = vjp(g, {"y": ct}, [x, w]).grads
    g.set_output("dx", grads[x])
    g.set_output("dw", grads[w])
    return decompose(g)


def _kernels(g) -> list[tuple[int, ...]]:
    return sorted(tuple(n.inputs[1].type.shape) for n in g.nodes if n.op == "convolution")


def test_3x3_conv_on_a_1x1_map_becomes_a_1x1_conv(preserves):
    """Forward and input gradient keep the centre tap; the weight gradient computes the centre and pads the rest."""
    g = _train_graph((1, 1), 3)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "conv_crop", ctx)
    assert [f.rule for f in ctx.trace] == ["conv_crop_to_input"] * 3
    assert [s[2:] for s in _kernels(out)] == [(1, 1)] * 3   # the weight gradient slides ct, 1x1 already
    pads = [n for n in out.nodes if n.op == "pad"]
    assert [tuple(n.outputs[0].type.shape) for n in pads] == [(4, 3, 3, 3)]
    assert all(p.attrs.low[2:] == (1, 1) and p.attrs.high[2:] == (1, 1) for p in pads)
    preserves(g, out)


def test_7x7_depthwise_on_a_2x2_map_keeps_3x3_taps(preserves):
    g = _train_graph((2, 2), 7, depthwise=True)
    out = run_pass(g, "conv_crop")
    assert (3, 1, 3, 3) in _kernels(out)
    assert not [s for s in _kernels(out) if s[2:] == (7, 7)]
    preserves(g, out)


@pytest.mark.parametrize("image,k", [((9, 9), 3), ((4, 4), 3), ((2, 2), 3), ((4, 4), 7)])
def test_convolutions_whose_taps_all_meet_the_input_are_left_alone(image, k):
    """Every tap of a 3x3 kernel meets a 2x2 or larger map with 'same' padding, and of a 7x7 one a 4x4 map."""
    g = _train_graph(image, k)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "conv_crop", ctx)
    assert ctx.trace == [] and len(out.nodes) == len(g.nodes)


def test_the_input_is_sliced_where_its_edge_is_never_read(preserves):
    """Stride 3, a 1x1 kernel and padding 2 on a 5-wide map: output positions 0, 1, 2 read padded columns 0, 3, 6,
    so the first position reads padding only and column 0 of x is never read: x[..., 1:, 1:] is convolved without
    padding and the output padded back by one at the start."""
    g = _train_graph((5, 5), 1, stride=3, padding=((2, 2), (2, 2)))
    out = run_pass(g, "conv_crop")
    sliced = [n for n in out.nodes if n.op == "slice" and n.inputs[0].name == "x"]
    assert {(n.attrs.start, n.attrs.limit) for n in sliced} == {((0, 0, 1, 1), (2, 3, 5, 5))}   # forward, dw
    forward = next(n for n in out.nodes if n.op == "convolution" and n.inputs[0] is sliced[0].outputs[0])
    assert forward.attrs.padding == ((0, 0), (0, 0))
    preserves(g, out)


def _geometries(count: int, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        image = (rng.randint(1, 5), rng.randint(1, 5))
        k, stride, dilation = rng.choice([1, 2, 3, 5, 7]), rng.randint(1, 3), rng.randint(1, 2)
        padding = rng.choice(["same", "valid", ((rng.randint(0, 4), rng.randint(0, 4)),
                                                (rng.randint(0, 4), rng.randint(0, 4)))])
        pad_h = sum(padding[0]) if isinstance(padding, tuple) else (k - 1) * dilation if padding == "same" else 0
        pad_w = sum(padding[1]) if isinstance(padding, tuple) else (k - 1) * dilation if padding == "same" else 0
        if min(image[0] + pad_h, image[1] + pad_w) < (k - 1) * dilation + 1:
            continue   # the kernel would not fit
        cases.append((image, k, stride, padding, dilation, rng.random() < 0.3))
    return cases


@pytest.mark.parametrize("image,k,stride,padding,dilation,depthwise", _geometries(24))
def test_cropping_keeps_every_value(image, k, stride, padding, dilation, depthwise, preserves):
    """Random small maps, kernels, strides, dilations and paddings: forward, input gradient (lhs-dilated where
    strided) and weight gradient compute the same values cropped."""
    g = _train_graph(image, k, stride, padding, dilation, depthwise)
    preserves(g, run_pass(g, "conv_crop"), rtol=1e-5, atol=1e-5)
