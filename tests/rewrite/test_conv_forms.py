"""conv_forms alone: a depthwise conv's weight gradient (a batch-grouped convolution) becomes
per-tap multiply-and-reduce with the same values, for strides, dilations and SAME/VALID pads."""
from __future__ import annotations

import math

import pytest

from gir.autodiff import vjp
from gir.ir import Loc
from gir.lower.decompose import decompose
from gir.nn import Builder
from gir.rewrite import Context, run_pass
from gir.rewrite.conv_forms import (DEPTHWISE_MIN_TAPS, DIRECT_CHUNK_CHANNELS, DIRECT_MAX_KERNEL, DIRECT_MIN_CHANNELS,
                                   DIRECT_MIN_ROWS, ROWS_PER_OUTPUT_FEATURE)
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


@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, "same"), (2, 1, "same"), (1, 2, "valid")])
def test_depthwise_weight_grad_as_batched_dots_for_gpus(stride, dilation, padding, preserves):
    g = _dw_weight_grad(stride, dilation, padding)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "depthwise_weight_grad_dots", ctx)
    assert [f.rule for f in ctx.trace] == ["depthwise_weight_grad_as_dots"]
    assert not [n for n in out.nodes if n.op == "convolution"]
    dots = [n for n in out.nodes if n.op == "dot_general"]
    assert len(dots) == 9 and all(n.attrs.lhs_batch == (1,) and n.outputs[0].type.shape == (4,) for n in dots)
    preserves(g, out, rtol=1e-5, atol=1e-5)


def test_strided_weight_grad_shares_the_forward_phases(preserves):
    """A strided depthwise conv and its weight gradient read their taps from one padded copy of x
    split into phases: after CSE one pad and one transpose serve both."""
    b = Builder("dw")
    x = b.input("x", (2, 4, 9, 9))
    w = b.input("w", (4, 1, 3, 3), role="param")
    y = b.depthwise_conv2d(x, w, stride=2)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    g.set_output("dw", vjp(g, {"y": ct}, [w]).grads[w])
    g = decompose(g)
    out = run_pass(run_pass(g, "conv_forms"), "cse")
    assert not [n for n in out.nodes if n.op == "convolution"]
    assert sum(n.op == "pad" for n in out.nodes) == 1 and sum(n.op == "transpose" for n in out.nodes) == 1
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
                                                       (2, 1, "valid", 3), (2, 1, "same", 5), (3, 1, "same", 3),
                                                       (2, 2, "same", 3), (3, 1, "valid", 2)])
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


def _conv_train_graph(x_shape: tuple[int, ...], w_shape: tuple[int, ...], layout: str | None = None,
                      depthwise: bool = False, **conv):
    """A conv without groups (or a depthwise one) with the gradients of its input and weight as outputs,
    optionally with its activations relaid out first (the layout passes hand the conv passes permuted
    dimension numbers)."""
    b = Builder("conv")
    x = b.input("x", x_shape, role="param")
    w = b.input("w", w_shape, role="param")
    y = (b.depthwise_conv2d if depthwise else b.conv2d)(x, w, **conv)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    back = vjp(g, {"y": ct}, [x, w])
    g.set_output("dx", back.grads[x])
    g.set_output("dw", back.grads[w])
    g = decompose(g)
    return run_pass(g, layout) if layout else g


def _pointwise_train_graph(stride: int = 1):
    """A 1x1 conv with the gradients of its input and weight as outputs."""
    return _conv_train_graph((3, 5, 6, 7), (4, 5, 1, 1), stride=stride)


def test_pointwise_conv_and_gradients_as_matmuls(preserves):
    g = _pointwise_train_graph()
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "pointwise_matmul", ctx)
    assert sorted(f.rule for f in ctx.trace) == ["pointwise_conv_as_matmul"] * 2 + ["pointwise_weight_grad_as_matmul"]
    assert not [n for n in out.nodes if n.op == "convolution"]
    assert not [n for n in out.nodes if n.op == "transpose" and n not in g.nodes]  # NCHW kept: no layout change
    preserves(g, out, rtol=1e-5, atol=1e-5)


def test_strided_pointwise_conv_stays_a_convolution():
    g = _pointwise_train_graph(stride=2)
    ctx = Context(trace=[])
    run_pass(g, "pointwise_matmul", ctx)
    assert "pointwise_conv_as_matmul" not in {f.rule for f in ctx.trace}


def test_pointwise_weight_grad_on_tiny_images_contracts_batch_and_space(preserves):
    """2x2 images with many channels: one dot_general over (batch, space), no per-image products."""
    b = Builder("pw")
    x = b.input("x", (3, 160, 2, 2))
    w = b.input("w", (320, 160, 1, 1), role="param")
    y = b.conv2d(x, w)
    ct = b.input("ct", tuple(y.type.shape))
    g = b.graph
    g.set_output("y", y)
    g.set_output("dw", vjp(g, {"y": ct}, [w]).grads[w])
    del g.outputs["y"]
    g = decompose(g)
    out = run_pass(g, "pointwise_matmul", Context(check=True))
    dots = [n for n in out.nodes if n.op == "dot_general"]
    assert len(dots) == 1 and dots[0].attrs.lhs_contract == (0, 2) and not dots[0].attrs.lhs_batch
    preserves(g, out, rtol=1e-5, atol=1e-5)


def _dense_train_graph(stride: int, dilation: int, padding: str, k: int, image: int = 9, layout: str | None = None):
    """A KxK conv without groups on 2 images of 3 channels, 4 output features."""
    return _conv_train_graph((2, 3, image, image), (4, 3, k, k), layout, stride=stride, padding=padding,
                             dilation=dilation)


@pytest.mark.parametrize("stride,dilation,padding,k", [(1, 1, "same", 3), (2, 1, "same", 3), (1, 2, "same", 3),
                                                       (2, 1, "valid", 3), (1, 1, "same", 5), (2, 1, "same", 1),
                                                       (3, 1, "valid", 2)])
def test_dense_conv_and_gradients_as_one_matmul_each(stride, dilation, padding, k, preserves):
    g = _dense_train_graph(stride, dilation, padding, k)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "dense_matmul", ctx)
    assert [f.rule for f in ctx.trace] == ["dense_conv_as_matmul"] * 3
    assert not [n for n in out.nodes if n.op == "convolution"]
    assert sum(n.op == "dot_general" for n in out.nodes) == 3
    preserves(g, out, rtol=1e-4, atol=1e-4)


def _dot_forms(out) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return sorted((n.attrs.lhs_contract, n.attrs.rhs_contract) for n in out.nodes if n.op == "dot_general")


def test_dense_matmul_gathers_the_fewer_of_kernel_taps_and_output_positions(preserves):
    """On a 9x9 image the forward and the input gradient gather kernel taps (cols @ w, contracting
    cols' last dim with w's first) and the weight gradient output positions (w @ cols^T, both
    contracting their last dim); on a 2x2 image the roles swap: the forward and the input gradient
    have 4 output positions and 9 taps, the weight gradient 9 positions and a 2x2 cotangent (and
    with 3 x 9 rows for 4 output features its kernel, the cotangent, is stored [o, taps x f])."""
    big = run_pass(_dense_train_graph(1, 1, "same", 3), "dense_matmul")
    assert _dot_forms(big) == [((1,), (0,)), ((1,), (0,)), ((1,), (1,))]
    g = _dense_train_graph(1, 1, "same", 3, image=2)
    small = run_pass(g, "dense_matmul")
    assert _dot_forms(small) == [((1,), (1,))] * 3
    preserves(g, small, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image", [9, 2])
def test_dense_matmul_reverses_the_gathered_side_not_the_input_gradients_kernel(image, preserves):
    """Autodiff writes an input gradient's kernel reversed along its spatial dims; dense_matmul reads the kernel
    before the reverse and reverses the taps on the gathered side: on a 9x9 image by gathering them in reverse order
    (no reverse left), on a 2x2 one (output positions gathered) by reversing the [positions x b, f, kh, kw] windows."""
    g = _dense_train_graph(1, 1, "same", 3, image=image)
    assert [n.inputs[0].type.shape for n in g.nodes if n.op == "reverse"] == [(3, 4, 3, 3)]   # w, in and out swapped
    out = run_pass(run_pass(g, "dense_matmul"), "dce")
    reversed_shapes = [tuple(n.inputs[0].type.shape) for n in out.nodes if n.op == "reverse"]
    assert reversed_shapes == ([] if image == 9 else [(2 * 2 * 2, 4, 3, 3)])
    preserves(g, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["layout_nhwc", "layout_cnhw", "layout_cnhw_small"])
def test_dense_matmul_reads_the_activation_layout(layout, preserves):
    g = _dense_train_graph(2, 1, "same", 3, layout=layout)
    out = run_pass(g, "dense_matmul", Context(check=True))
    assert not [n for n in out.nodes if n.op == "convolution"]
    preserves(g, out, rtol=1e-4, atol=1e-4)


def test_dense_matmul_takes_patch_embeddings_whatever_their_size_as_a_reshape(preserves):
    """8x8 patches of a 64x64 image: 64 taps and 64 positions, past MAX_TAPS, but the windows tile the image, so the
    forward and the weight gradient (dilation 8 = positions) gather them with one transpose and reshape, no slices.
    The input gradient (a transposed convolution, lhs dilation 8) is not a tiling and stays a convolution."""
    g = _conv_train_graph((2, 3, 64, 64), (4, 3, 8, 8), stride=8, padding="valid")
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "dense_matmul", ctx)
    assert [f.rule for f in ctx.trace] == ["dense_conv_as_matmul"] * 2
    assert sum(n.op == "convolution" for n in out.nodes) == 1
    assert not [n for n in out.nodes if n.op in ("slice", "concatenate")]
    preserves(g, out, rtol=1e-4, atol=1e-4)


def test_dense_matmul_leaves_overlapping_convolutions_with_many_taps_and_positions():
    """The other side: 8x8 windows at stride 4 overlap, and 64 taps and 225 positions are both past MAX_TAPS."""
    g = _conv_train_graph((2, 3, 64, 64), (4, 3, 8, 8), stride=4, padding="valid")
    assert len(run_pass(g, "dense_matmul").nodes) == len(g.nodes)


@pytest.mark.parametrize("image,out_features,kernel_form", [(9, 4, (0,)), (2, 64, (1,))])
def test_dense_matmul_stores_the_kernel_by_rows_per_output_feature(image, out_features, kernel_form, preserves):
    """A forward conv with at least ROWS_PER_OUTPUT_FEATURE rows (2 x 9 x 9 pixels) per output
    feature (4) multiplies the kernel as [taps x f, o]; one with 2 x 2 x 2 rows for 64 features as
    [o, taps x f], contracted on its last dim."""
    b = Builder("dense")
    x, w = b.input("x", (2, 3, image, image)), b.input("w", (out_features, 3, 1, 1), role="param")
    g = b.graph
    g.set_output("y", b.conv2d(x, w, stride=1, padding="same") if image == 9 else b.conv2d(x, w, stride=2))
    g = decompose(g)
    out = run_pass(g, "dense_matmul")
    rows = 2 * math.prod(g.outputs["y"].type.shape[2:])
    assert (rows >= ROWS_PER_OUTPUT_FEATURE * out_features) == (kernel_form == (0,))
    assert [n.attrs.rhs_contract for n in out.nodes if n.op == "dot_general"] == [kernel_form]
    preserves(g, out, rtol=1e-4, atol=1e-4)


def _nhwc_convs(out) -> list:
    return [n for n in out.nodes if n.op == "convolution" and n.attrs.lhs_layout == "NHWC"]


@pytest.mark.parametrize("image,stride,dilation,padding,k", [(16, 1, 1, "same", 3), (32, 2, 1, "same", 3),
                                                             (16, 1, 2, "same", 3), (20, 1, 1, "valid", 5)])
def test_nhwc_conv_takes_the_forward_and_input_gradient_and_dense_matmul_the_rest(image, stride, dilation, padding,
                                                                                   k, preserves):
    """2 images of 16 channels, 16 output features: the forward conv and the input gradient (lhs-dilated where the
    forward is strided) become NHWC/HWIO convolutions; the weight gradient, whose output is the kernel, is left to
    dense_matmul, which leaves the NHWC ones alone."""
    g = _conv_train_graph((2, 16, image, image), (16, 16, k, k), stride=stride, padding=padding, dilation=dilation)
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "nhwc_conv", ctx)
    assert [f.rule for f in ctx.trace] == ["dense_conv_as_nhwc"] * 2
    assert all(n.attrs.rhs_layout == "HWIO" and n.attrs.out_layout == "NHWC" for n in _nhwc_convs(out))
    preserves(g, out, rtol=1e-4, atol=1e-4)
    both = run_pass(out, "dense_matmul", Context(check=True))
    assert len(_nhwc_convs(both)) == 2 and sum(n.op == "convolution" for n in both.nodes) == 2
    assert sum(n.op == "dot_general" for n in both.nodes) == 1
    preserves(g, both, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("image,channels", [(16, DIRECT_MIN_CHANNELS), (15, DIRECT_MIN_CHANNELS),
                                            (16, DIRECT_MIN_CHANNELS - 1)])
def test_nhwc_conv_needs_enough_rows_and_input_channels(image, channels):
    """2 images of 16x16 are DIRECT_MIN_ROWS rows (512) and are taken with 16 input channels; 15x15 images (450 rows)
    or 15 channels are not (IREE's NHWC convolution is slower than the gathered matmul there)."""
    assert 2 * 16 * 16 == DIRECT_MIN_ROWS
    b = Builder("conv")
    x, w = b.input("x", (2, channels, image, image)), b.input("w", (8, channels, 3, 3), role="param")
    g = b.graph
    g.set_output("y", b.conv2d(x, w, padding="same"))
    out = run_pass(decompose(g), "nhwc_conv")
    assert len(_nhwc_convs(out)) == (2 * image * image >= DIRECT_MIN_ROWS and channels >= DIRECT_MIN_CHANNELS)


@pytest.mark.parametrize("features,stride,chunks", [(455, 1, (1, 1)), (456, 1, (2, 8)), (456, 2, (2, 8))])
def test_nhwc_conv_sums_partial_convolutions_over_input_channel_chunks_of_large_kernels(features, stride, chunks,
                                                                                         preserves):
    """128 input channels, 3x3: with 456 output features the kernel has more than DIRECT_MAX_KERNEL elements, so the
    forward conv becomes one NHWC convolution per chunk of at most DIRECT_CHUNK_CHANNELS input channels (2 of 64),
    added, and so does its input gradient (456 input channels: 8 of 57; lhs-dilated where the forward is strided);
    with 455 the kernel is just small enough and both stay one convolution."""
    assert (9 * 128 * features > DIRECT_MAX_KERNEL) == (chunks != (1, 1))
    g = _conv_train_graph((2, 128, 16 * stride, 16 * stride), (features, 128, 3, 3), stride=stride, padding="same")
    out = run_pass(g, "nhwc_conv", Context(check=True))
    convs = _nhwc_convs(out)
    assert len(convs) == sum(chunks)
    widths = [n.inputs[0].type.shape[3] for n in convs]
    assert sum(widths) == 128 + features
    assert max(widths) <= (DIRECT_CHUNK_CHANNELS if chunks != (1, 1) else features)
    assert sum(n.op == "add" for n in out.nodes) == sum(chunks) - 2
    # the input gradient sums 456 x 9 = 4,104 float32 products in another order: on a Zen 3 (AVX2) XLA's results
    # differed by up to 2.5e-4 (7 of 65,536 outputs over 1e-4)
    preserves(g, out, rtol=1e-4, atol=5e-4)


@pytest.mark.parametrize("layout", ["layout_nhwc", "layout_cnhw"])
def test_nhwc_conv_reads_the_activation_layout(layout, preserves):
    g = _conv_train_graph((2, 16, 16, 16), (16, 16, 3, 3), layout, padding="same")
    out = run_pass(g, "nhwc_conv", Context(check=True))
    assert len(_nhwc_convs(out)) == 2
    preserves(g, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [7, 5])
def test_nhwc_conv_takes_7x7_depthwise_convs_and_leaves_smaller_ones_to_conv_forms(k, preserves):
    """A 7x7 depthwise conv (DEPTHWISE_MIN_TAPS = 49) and its input gradient become NHWC/HWIO grouped convolutions,
    its weight gradient stays for conv_forms' taps; a 5x5 one is left to conv_forms whole."""
    g = _conv_train_graph((2, 8, 10, 10), (8, 1, k, k), depthwise=True, stride=1, padding="same")
    ctx = Context(trace=[], check=True)
    out = run_pass(g, "nhwc_conv", ctx)
    assert [f.rule for f in ctx.trace] == ["depthwise_conv_as_nhwc"] * 2 * (k * k >= DEPTHWISE_MIN_TAPS)
    assert all(n.attrs.feature_group_count == 8 for n in _nhwc_convs(out))
    preserves(g, out, rtol=1e-4, atol=1e-4)
    taps = run_pass(out, "conv_forms", Context(check=True))
    assert len(_nhwc_convs(taps)) == 2 * (k * k >= DEPTHWISE_MIN_TAPS)
    assert sum(n.op == "convolution" for n in taps.nodes) == len(_nhwc_convs(taps))
    preserves(g, taps, rtol=1e-4, atol=1e-4)


def test_nhwc_conv_leaves_stride_1_pointwise_convs_to_pointwise_matmul():
    g = _conv_train_graph((2, 16, 16, 16), (16, 16, 1, 1))
    assert not _nhwc_convs(run_pass(g, "nhwc_conv"))
