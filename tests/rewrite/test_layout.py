"""layout_nhwc / layout_cnhw alone and followed by conv_forms and pointwise_matmul: the same
values, the activations stored in the new order between the first convolution and the outputs,
and the convolution forms rewritten for that order; with a pixel limit (layout_cnhw_small), only
the small activations moved."""
from __future__ import annotations

import pytest

from gir.autodiff import vjp
from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.layout import permute_layout, relayout

LAYOUTS = {"layout_nhwc": "NHWC", "layout_cnhw": "CNHW"}


def _train_graph(body, x_shape=(2, 4, 6, 6)):
    """body(builder, x) -> (y, params); the graph outputs y and the gradients of x and params."""
    b = Builder("lay")
    x = b.input("x", x_shape, role="param")
    y, params = body(b, x)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    back = vjp(g, {"y": ct}, [x, *params])
    for i, p in enumerate([x, *params]):
        g.set_output(f"d{i}", back.grads[p])
    return decompose(g)


def _pointwise(b, x, out=4):
    w = b.input(f"w{len(b.graph.inputs)}", (out, x.type.shape[1], 1, 1), role="param")
    return b.conv2d(x, w), [w]


def _block(b, x):
    """1x1 conv, batch norm, ReLU6, strided depthwise, 1x1 conv, global pool: a MobileNetV2 block."""
    y, ps = _pointwise(b, x, 6)
    gamma, beta = b.input("gamma", (6,), role="param"), b.input("beta", (6,), role="param")
    y = b.unary("relu6", b.batch_norm(y, gamma, beta, b.input("rm", (6,)), b.input("rv", (6,))))
    wd = b.input("wd", (6, 1, 3, 3), role="param")
    y, ps2 = _pointwise(b, b.depthwise_conv2d(y, wd, stride=2), 5)
    return b.global_avg_pool(y), [*ps, gamma, beta, wd, *ps2]


def _conv_pool_conv(b, x):
    """3x3 conv, ReLU, 2x2 max pool, 3x3 conv: the VGG pattern, its pool's gradient scattered from
    the smaller image back to the larger one (with a pixel limit between them)."""
    w1, w2 = b.input("w1", (5, 4, 3, 3), role="param"), b.input("w2", (3, 5, 3, 3), role="param")
    y = b.max_pool(b.unary("relu", b.conv2d(x, w1)), 2, 2)
    return b.conv2d(y, w2), [w1, w2]


def _conv_flatten_dense(b, x):
    """3x3 conv, ReLU, flatten, dense: a small CNN's head, its gradient reshaped back to the 4-D activations."""
    w = b.input("w", (5, 4, 3, 3), role="param")
    y = b.flatten(b.unary("relu", b.conv2d(x, w)))
    wd = b.input("wd", (y.type.shape[1], 3), role="param")
    return b.dense(y, wd), [w, wd]


BODIES = {
    "strided conv": lambda b, x: (b.conv2d(x, w := b.input("w", (5, 4, 3, 3), role="param"), stride=2), [w]),
    "depthwise": lambda b, x: (b.depthwise_conv2d(x, w := b.input("w", (4, 1, 3, 3), role="param")), [w]),
    "max pool": lambda b, x: (lambda y, ps: (b.max_pool(y, 3, 2, "same"), ps))(*_pointwise(b, x)),
    "block": _block,
    "conv pool conv": _conv_pool_conv,
    "conv flatten dense": _conv_flatten_dense,
}


@pytest.mark.parametrize("body", BODIES, ids=str)
@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_keeps_values(name, body, preserves):
    g = _train_graph(BODIES[body])
    preserves(g, run_pass(g, name, Context(check=True)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LAYOUTS)
def test_activations_stay_in_the_new_order(name):
    """Between the block's input and its outputs no activation goes back to NCHW: the only
    transposes are the input's way in and the outputs' way out (and the small pooled features)."""
    g = run_pass(_train_graph(_block), name, Context(check=True))
    order = LAYOUTS[name]
    wgrad_x = permute_layout("CNHW", tuple("NCHW".index(ch) for ch in order))
    convs = [n for n in g.nodes if n.op == "convolution"]
    # x itself is read where it is (NCHW): a convolution may take any operand layout
    assert {n.attrs.lhs_layout for n in convs if n.inputs[0].producer is not None} == {order, wgrad_x}
    assert {n.attrs.out_layout for n in convs} == {order, "CNHW"}   # weight gradients keep theirs
    big = [n for n in g.nodes if n.op == "transpose" and n.outputs[0].type.rank == 4
           and n.inputs[0].producer is not None]
    # the gradient of x leaves the new order once; weights (out_layout CNHW) never entered it
    assert len(big) == 1 and big[0].outputs[0] is g.outputs["d0"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_conv_forms_after_layout(name, preserves):
    """conv_forms and pointwise_matmul read the new layouts: no convolution is left, 1x1
    convolutions and their weight gradients are single (unbatched) matmuls."""
    g = _train_graph(_block)
    moved = run_pass(g, name, Context(check=True))
    ctx = Context(trace=[], check=True)
    out = run_pass(run_pass(moved, "conv_forms", ctx), "pointwise_matmul", ctx)
    assert not [n for n in out.nodes if n.op == "convolution"]
    dots = [n for n in out.nodes if n.op == "dot_general"]
    assert len(dots) == 6 and not any(n.attrs.lhs_batch for n in dots)
    assert {f.rule for f in ctx.trace} == {"depthwise_conv_as_taps", "depthwise_weight_grad_as_taps",
                                           "pointwise_conv_as_matmul", "pointwise_weight_grad_as_matmul"}
    preserves(g, out, rtol=1e-5, atol=1e-6)


def _small_only(g):
    """CNHW for activations of at most 9 pixels: the block's 6x6 layers stay NCHW, its 3x3 ones move."""
    return relayout(g, (1, 0, 2, 3), max_pixels=9)


@pytest.mark.parametrize("body", BODIES, ids=str)
def test_small_layout_keeps_values(body, preserves):
    g = _train_graph(BODIES[body])
    preserves(g, _small_only(g), rtol=1e-5, atol=1e-6)


def test_small_layout_moves_only_small_activations(preserves):
    """Every 4-D value computed at 6x6 stays NCHW and every one at 3x3 is CNHW, forward and back;
    the strided depthwise convolution between them reads its input transposed and its input
    gradient leaves CNHW, and conv_forms still rewrites every convolution."""
    g = _train_graph(_block)
    moved = _small_only(g)
    for n in moved.nodes:
        for v in n.outputs:
            shape = tuple(v.type.shape)
            if n.op not in ("transpose", "convolution") and v.type.rank == 4 and 2 in shape[:2]:
                if shape[2:] == (6, 6):
                    assert shape[0] == 2, (n, v.type)   # NCHW
                elif shape[2:] == (3, 3):
                    assert shape[1] == 2, (n, v.type)   # CNHW
    # activations change order only at the strided depthwise convolution: its 6x6 input in, its
    # input gradient out, and its 3x3 cotangent out for the (NCHW, 6x6) weight gradient
    crossings = sorted((tuple(n.inputs[0].type.shape), tuple(n.outputs[0].type.shape)) for n in moved.nodes
                       if n.op == "transpose" and n.inputs[0].producer is not None and n.outputs[0].type.rank == 4)
    assert crossings == [((2, 6, 6, 6), (6, 2, 6, 6)), ((6, 2, 3, 3), (2, 6, 3, 3)), ((6, 2, 6, 6), (2, 6, 6, 6))]
    ctx = Context(check=True)
    out = run_pass(run_pass(moved, "conv_forms", ctx), "pointwise_matmul", ctx)
    assert not [n for n in out.nodes if n.op == "convolution"]
    preserves(g, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_flattened_gradient_enters_the_new_order_behind_a_barrier(name):
    """The dense head's input gradient, reshaped back to 4-D, is transposed into the new order only behind an
    optimization barrier, so that IREE does not fold that transpose into the matmul producing it (mnist_cnn at
    batch 128: a 17 GFLOP/s matmul of 24 ms, against 3.6 ms for the transpose alone)."""
    g = run_pass(_train_graph(_conv_flatten_dense), name, Context(check=True))
    moved = tuple((2, 5, 6, 6)["NCHW".index(ch)] for ch in LAYOUTS[name])   # the conv's output in the new order
    entering = [n for n in g.nodes if n.op == "transpose" and tuple(n.outputs[0].type.shape) == moved]
    assert len(entering) == 1
    wall = entering[0].inputs[0].producer
    assert wall.op == "optimization_barrier" and wall.inputs[0].producer.op == "reshape"


def test_permute_layout():
    assert permute_layout("NCHW", (0, 2, 3, 1)) == "NHWC"
    assert permute_layout("CNHW", (0, 2, 3, 1)) == "CHWN"   # a weight gradient's x, channels last
    assert permute_layout("IOHW", (1, 0, 2, 3)) == "OIHW"
